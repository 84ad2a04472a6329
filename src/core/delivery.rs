//! What the core hands to connections: deliveries as domain values, with an
//! encode-once cache that each transport fills for its own wire formats.
//!
//! The fan-out wraps a publication (or a notice) in one `Arc<Delivery>` and
//! pushes a reference into every recipient's outbox. A transport's writer
//! asks [`Delivery::encoded`] for the frame payload of its wire format: the
//! first writer of that format encodes, every other recipient of that format
//! clones the result (a reference count). The core never encodes anything
//! and does not know which formats exist, only how many slots to keep.

use std::{any::Any, fmt, sync::OnceLock};

use crate::protocol::{ChannelName, Publication};

/// How many wire formats can cache an encoding of one delivery.
///
/// Slots are assigned in [`slots`]; raise this when a transport adds one.
pub const WIRE_SLOTS: usize = 4;

/// The slot of each wire format that caches encodings. One list, so that two
/// transports can never share a slot by accident (a unit test checks it).
pub mod slots {
    /// Native protocol, JSON text frames.
    pub const NATIVE_JSON: usize = 0;
    /// Native protocol, MessagePack binary frames.
    pub const NATIVE_MSGPACK: usize = 1;
    /// Reserved for the Socket.IO default (JSON) parser.
    pub const SOCKETIO_JSON: usize = 2;
    /// Reserved for the Socket.IO MessagePack parser.
    pub const SOCKETIO_MSGPACK: usize = 3;

    /// Every assigned slot.
    pub const ALL: [usize; 4] = [NATIVE_JSON, NATIVE_MSGPACK, SOCKETIO_JSON, SOCKETIO_MSGPACK];
}

/// What a connection is told.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// A publication on a channel the connection is subscribed to.
    Publication(Publication),
    /// Publications on `channel` may have been missed (the engine lost and
    /// regained its backend); the client should refetch that channel's state.
    Gap {
        /// The affected channel.
        channel: ChannelName,
        /// On a history channel: which offsets were missed.
        missed: Option<Missed>,
    },
    /// The access token expires soon: the client should refresh it.
    TokenExpiring {
        /// Milliseconds until the connection is closed unless refreshed.
        expires_in_ms: u64,
    },
}

/// The offsets a history channel's subscribers missed, when the node saw a
/// jump in the channel's stream it could not fill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missed {
    /// The first missed offset.
    pub from: u64,
    /// The last missed offset.
    pub to: u64,
    /// The stream's epoch.
    pub epoch: String,
}

/// A wire format whose encodings of a delivery are cached and shared.
///
/// `T` is what the transport writes (a frame payload, already validated as
/// whatever the frame type needs, such as UTF-8 for text frames), so that
/// recipients after the first do no work beyond a reference-count increment.
pub struct WireFormat<T> {
    slot: usize,
    encode: fn(&Payload) -> Option<T>,
}

impl<T> WireFormat<T> {
    /// A format caching in `slot` (one of [`slots`]), encoding with `encode`.
    /// `encode` returns `None` when the payload cannot take this format.
    pub const fn new(slot: usize, encode: fn(&Payload) -> Option<T>) -> Self {
        Self { slot, encode }
    }
}

impl<T> fmt::Debug for WireFormat<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WireFormat")
            .field("slot", &self.slot)
            .finish_non_exhaustive()
    }
}

type Cached = Option<Box<dyn Any + Send + Sync>>;

/// One payload on its way to many connections.
pub struct Delivery {
    payload: Payload,
    encoded: [OnceLock<Cached>; WIRE_SLOTS],
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("payload", &self.payload)
            .finish_non_exhaustive()
    }
}

impl Delivery {
    /// Wraps `payload`; nothing is encoded until a writer asks.
    pub fn new(payload: Payload) -> Self {
        Self {
            payload,
            encoded: Default::default(),
        }
    }

    /// A publication.
    pub fn publication(publication: Publication) -> Self {
        Self::new(Payload::Publication(publication))
    }

    /// What is delivered.
    pub fn payload(&self) -> &Payload {
        &self.payload
    }

    /// The channel of a publication: the conflation key.
    pub fn channel(&self) -> Option<&ChannelName> {
        match &self.payload {
            Payload::Publication(p) => Some(&p.channel),
            Payload::Gap { .. } | Payload::TokenExpiring { .. } => None,
        }
    }

    /// An estimate of the encoded size, for the outbox byte cap; cheap and
    /// the same for every format.
    pub fn size_hint(&self) -> usize {
        match &self.payload {
            Payload::Publication(p) => {
                64 + p.channel.as_str().len() + p.event.as_str().len() + p.data.len()
            }
            Payload::Gap { .. } | Payload::TokenExpiring { .. } => 128,
        }
    }

    /// The encoding for `format`, made by the first caller of that format and
    /// shared by every later one. `None` if the payload cannot take the
    /// format; the failure is remembered, not retried per recipient.
    pub fn encoded<T: Any + Send + Sync>(&self, format: &WireFormat<T>) -> Option<&T> {
        let cell = self.encoded.get(format.slot)?;
        cell.get_or_init(|| {
            (format.encode)(&self.payload).map(|t| Box::new(t) as Box<dyn Any + Send + Sync>)
        })
        .as_ref()?
        .downcast_ref::<T>()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::protocol::{EventName, JsonData};

    static ENCODED: AtomicUsize = AtomicUsize::new(0);

    fn encode_len(payload: &Payload) -> Option<String> {
        ENCODED.fetch_add(1, Ordering::SeqCst);
        match payload {
            Payload::Publication(p) => p.data.as_json().map(str::to_owned),
            _ => None,
        }
    }

    static TEXT: WireFormat<String> = WireFormat::new(slots::SOCKETIO_JSON, encode_len);

    #[test]
    fn each_format_is_encoded_once_and_shared() {
        let delivery = Delivery::publication(Publication {
            channel: ChannelName::parse("c", 128).unwrap(),
            event: EventName::parse("e").unwrap(),
            data: JsonData::from_json("[1,2]").unwrap(),
            ts: Some(5),
            position: None,
            history: None,
        });
        let before = ENCODED.load(Ordering::SeqCst);
        let first: *const String = delivery.encoded(&TEXT).unwrap();
        let second: *const String = delivery.encoded(&TEXT).unwrap();
        assert_eq!(
            first, second,
            "the second recipient shares the first one's encoding"
        );
        assert_eq!(ENCODED.load(Ordering::SeqCst) - before, 1);
        let gap = Delivery::new(Payload::Gap {
            channel: ChannelName::parse("c", 128).unwrap(),
            missed: None,
        });
        assert!(gap.encoded(&TEXT).is_none());
        assert!(gap.encoded(&TEXT).is_none());
    }

    #[test]
    fn slots_are_distinct_and_in_range() {
        let mut seen = [false; WIRE_SLOTS];
        for slot in slots::ALL {
            assert!(slot < WIRE_SLOTS);
            assert!(!seen[slot], "slot {slot} assigned twice");
            seen[slot] = true;
        }
    }
}
