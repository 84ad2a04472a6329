//! Publications and the shared, encode-once form they take during fan-out.

use std::{
    sync::OnceLock,
    time::{SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;

use super::{ChannelName, EventName, Format, JsonData, ServerMessage, encode};

/// Milliseconds since the Unix epoch, the unit of [`Publication::ts`].
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One message for one channel, as a publisher made it.
#[derive(Debug, Clone, PartialEq)]
pub struct Publication {
    /// Target channel.
    pub channel: ChannelName,
    /// Event name the subscribers see.
    pub event: EventName,
    /// Application payload.
    pub data: JsonData,
    /// Publish time in milliseconds since the Unix epoch, if the publisher set it.
    pub ts: Option<u64>,
}

/// A server message sent to many connections: encoded at most once per wire
/// format, lazily, and the bytes shared by every recipient.
///
/// The fan-out hands one `Arc<SharedMessage>` to every recipient; each
/// connection's writer asks for the bytes of its own format, and only the
/// first writer of each format pays for the encoding.
#[derive(Debug)]
pub struct SharedMessage {
    message: ServerMessage,
    json: OnceLock<Option<Bytes>>,
    msgpack: OnceLock<Option<Bytes>>,
}

impl SharedMessage {
    /// Wraps a publication as a `push` message.
    pub fn push(publication: Publication) -> Self {
        Self::new(ServerMessage::Push {
            channel: publication.channel,
            event: publication.event,
            data: publication.data,
            ts: publication.ts,
        })
    }

    /// Wraps any server message.
    pub fn new(message: ServerMessage) -> Self {
        Self {
            message,
            json: OnceLock::new(),
            msgpack: OnceLock::new(),
        }
    }

    /// The channel a push belongs to, used as the conflation key.
    pub fn channel(&self) -> Option<&ChannelName> {
        match &self.message {
            ServerMessage::Push { channel, .. } => Some(channel),
            _ => None,
        }
    }

    /// An estimate of the encoded size, for queue byte limits; cheap and format-independent.
    pub fn size_hint(&self) -> usize {
        match &self.message {
            ServerMessage::Push {
                channel,
                event,
                data,
                ..
            } => 64 + channel.as_str().len() + event.as_str().len() + data.len(),
            _ => 128,
        }
    }

    /// The encoded bytes for `format`, encoding on first use.
    ///
    /// Returns `None` if the message cannot be encoded in that format; the
    /// failure is remembered so it is not retried per recipient.
    pub fn encoded(&self, format: Format) -> Option<&Bytes> {
        let cell = match format {
            Format::Json => &self.json,
            Format::MsgPack => &self.msgpack,
        };
        cell.get_or_init(|| encode(&self.message, format).ok())
            .as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_each_format_once_and_lazily() {
        let shared = SharedMessage::push(Publication {
            channel: ChannelName::parse("c", 128).unwrap(),
            event: EventName::parse("e").unwrap(),
            data: JsonData::from_json("[1,2]").unwrap(),
            ts: Some(5),
        });
        assert!(shared.msgpack.get().is_none());
        let first = shared.encoded(Format::Json).unwrap().clone();
        let second = shared.encoded(Format::Json).unwrap();
        // Same allocation: the second recipient shares the first one's bytes.
        assert_eq!(first.as_ptr(), second.as_ptr());
        assert!(
            shared.msgpack.get().is_none(),
            "msgpack encoded without a msgpack reader"
        );
    }
}
