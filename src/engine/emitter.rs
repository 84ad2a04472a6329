//! Publications made by `@socket.io/redis-emitter` (and by socket.io's Redis
//! adapter): what a Socket.IO backend's `io.to("room").emit("event", data)`
//! publishes on Redis, read as herald publications.
//!
//! The emitter publishes a MessagePack array `[uid, packet, opts]` on
//! `<key>#<nsp>#` (or `<key>#<nsp>#<room>#` for a single room), where
//! `packet` is `{type: 2, data: [event, ...args], nsp}` and `opts` is
//! `{rooms, except, flags}`. A room is a herald channel of the same name
//! (`user:<id>` is a user's personal channel); no room means every
//! connection (herald's `broadcast` channel). Everything else is refused,
//! with a reason counted by the caller: another packet type or namespace,
//! `except` (herald cannot leave a channel's members out), flags other than
//! `compress` and `volatile`, more than one argument, invalid names, data
//! that is too large or that not every wire format can carry.

use std::{collections::BTreeMap, fmt};

use serde::{
    Deserialize, Deserializer,
    de::{IgnoredAny, SeqAccess, Visitor},
};

use crate::protocol::{ChannelName, CheckedData, EventName, JsonData, Publication, unix_ms};

/// Socket.IO's `EVENT` packet type, the only one the emitter broadcasts.
const EVENT: u8 = 2;
/// The only namespace herald serves.
const NAMESPACE: &str = "/";
/// Bytes of a message beyond its data: names, rooms, framing.
const OVERHEAD: usize = 16 * 1024;

/// What an emitter message may hold.
#[derive(Debug, Clone, Copy)]
pub struct EmitterLimits {
    /// Longest channel (room) name.
    pub max_channel_length: usize,
    /// Largest publication data, bytes (as JSON).
    pub max_data_size: usize,
    /// Most rooms one message may name.
    pub max_rooms: usize,
}

/// Why an emitter message was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not a MessagePack `[uid, packet, opts]`, or larger than allowed.
    Malformed,
    /// A packet type other than `EVENT`.
    PacketType,
    /// A namespace other than `/`.
    Namespace,
    /// `except` rooms, or a flag other than `compress` / `volatile`.
    Unsupported,
    /// No event name, or more than one argument after it.
    Arguments,
    /// An invalid event or room name, or too many rooms.
    Name,
    /// Data too large, or that not every wire format can carry.
    Data,
}

impl Refusal {
    /// The metrics label of this reason.
    pub fn label(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::PacketType => "packet_type",
            Self::Namespace => "namespace",
            Self::Unsupported => "unsupported",
            Self::Arguments => "arguments",
            Self::Name => "name",
            Self::Data => "data",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

#[derive(Deserialize)]
struct Head {
    #[serde(rename = "type")]
    kind: u8,
    #[serde(default)]
    nsp: Option<String>,
}

#[derive(Deserialize)]
struct Body {
    data: Args,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Opts {
    rooms: Vec<String>,
    except: Vec<String>,
    flags: Option<BTreeMap<String, IgnoredAny>>,
}

/// `[event, arg?]`; more arguments are noted, not read.
struct Args {
    event: Option<String>,
    data: Option<CheckedData>,
    extra: bool,
}

impl<'de> Deserialize<'de> for Args {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(ArgsVisitor)
    }
}

struct ArgsVisitor;

impl<'de> Visitor<'de> for ArgsVisitor {
    type Value = Args;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[event, ...args]")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Args, A::Error> {
        let event = seq.next_element::<String>()?;
        let data = seq.next_element::<CheckedData>()?;
        let extra = seq.next_element::<IgnoredAny>()?.is_some();
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Args { event, data, extra })
    }
}

/// The publications an emitter message stands for, one per room (or one
/// on the broadcast channel).
///
/// # Errors
/// [`Refusal`] saying why the message is not delivered.
pub fn decode(payload: &[u8], limits: &EmitterLimits) -> Result<Vec<Publication>, Refusal> {
    if payload.len() > limits.max_data_size.saturating_add(OVERHEAD) {
        return Err(Refusal::Malformed);
    }
    // Two passes: the head and the options are checked before the data is read.
    let (_, head, opts): (IgnoredAny, Head, Opts) =
        rmp_serde::from_slice(payload).map_err(|_| Refusal::Malformed)?;
    if head.kind != EVENT {
        return Err(Refusal::PacketType);
    }
    if head.nsp.as_deref().unwrap_or(NAMESPACE) != NAMESPACE {
        return Err(Refusal::Namespace);
    }
    let flags_ok = opts
        .flags
        .iter()
        .flatten()
        .all(|(flag, _)| matches!(flag.as_str(), "compress" | "volatile"));
    if !opts.except.is_empty() || !flags_ok {
        return Err(Refusal::Unsupported);
    }
    if opts.rooms.len() > limits.max_rooms {
        return Err(Refusal::Name);
    }
    let channels = if opts.rooms.is_empty() {
        vec![ChannelName::broadcast()]
    } else {
        opts.rooms
            .iter()
            .map(|room| ChannelName::parse(room, limits.max_channel_length))
            .collect::<Result<_, _>>()
            .map_err(|_| Refusal::Name)?
    };
    let (_, body, _): (IgnoredAny, Body, IgnoredAny) =
        rmp_serde::from_slice(payload).map_err(|_| Refusal::Malformed)?;
    let Args { event, data, extra } = body.data;
    if extra {
        return Err(Refusal::Arguments);
    }
    let event = event.ok_or(Refusal::Arguments)?;
    let event = EventName::parse(&event).map_err(|_| Refusal::Name)?;
    let data = match data {
        None => JsonData::from_json("null").map_err(|_| Refusal::Data)?,
        Some(CheckedData(Ok(data))) => data,
        Some(CheckedData(Err(_))) => return Err(Refusal::Data),
    };
    if data.len() > limits.max_data_size {
        return Err(Refusal::Data);
    }
    let ts = Some(unix_ms());
    Ok(channels
        .into_iter()
        .map(|channel| Publication {
            channel,
            event: event.clone(),
            data: data.clone(),
            ts,
            position: None,
            history: None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    const LIMITS: EmitterLimits = EmitterLimits {
        max_channel_length: 32,
        max_data_size: 1024,
        max_rooms: 4,
    };

    fn message(packet: Value, opts: Value) -> Vec<u8> {
        rmp_serde::to_vec_named(&json!(["uid", packet, opts])).unwrap()
    }

    fn event(data: Value) -> Value {
        json!({"type": 2, "data": data, "nsp": "/"})
    }

    #[test]
    fn rooms_are_channels_and_no_room_is_broadcast() {
        let bytes = message(
            event(json!(["price_update", {"p": 1}])),
            json!({"rooms": ["prices", "user:42"], "except": [], "flags": {"compress": true}}),
        );
        let publications = decode(&bytes, &LIMITS).unwrap();
        let channels: Vec<_> = publications.iter().map(|p| p.channel.as_str()).collect();
        assert_eq!(channels, ["prices", "user:42"]);
        assert_eq!(publications[0].event.as_str(), "price_update");
        assert_eq!(publications[0].data.as_json(), Some(r#"{"p":1}"#));
        let everyone = decode(
            &message(event(json!(["hello"])), json!({"rooms": []})),
            &LIMITS,
        )
        .unwrap();
        assert_eq!(everyone[0].channel, ChannelName::broadcast());
        assert_eq!(everyone[0].data.as_json(), Some("null"));
    }

    #[test]
    fn what_herald_cannot_deliver_is_refused_with_a_reason() {
        let rooms = |r: Value| json!({"rooms": r});
        for (bytes, refusal) in [
            (b"\xc1not msgpack".to_vec(), Refusal::Malformed),
            (
                rmp_serde::to_vec(&json!({"a": 1})).unwrap(),
                Refusal::Malformed,
            ),
            (
                message(
                    json!({"type": 3, "data": ["e"], "nsp": "/"}),
                    rooms(json!([])),
                ),
                Refusal::PacketType,
            ),
            (
                message(
                    json!({"type": 2, "data": ["e"], "nsp": "/admin"}),
                    rooms(json!([])),
                ),
                Refusal::Namespace,
            ),
            (
                message(event(json!(["e"])), json!({"except": ["a"]})),
                Refusal::Unsupported,
            ),
            (
                message(event(json!(["e"])), json!({"flags": {"timeout": 5}})),
                Refusal::Unsupported,
            ),
            (
                message(event(json!(["e", 1, 2])), rooms(json!([]))),
                Refusal::Arguments,
            ),
            (
                message(event(json!([])), rooms(json!([]))),
                Refusal::Arguments,
            ),
            (
                message(event(json!(["bad event!"])), rooms(json!([]))),
                Refusal::Name,
            ),
            (
                message(event(json!(["e"])), rooms(json!(["no spaces"]))),
                Refusal::Name,
            ),
            (
                message(event(json!(["e"])), rooms(json!(["a", "b", "c", "d", "e"]))),
                Refusal::Name,
            ),
            (
                message(event(json!(["e", "x".repeat(2000)])), rooms(json!([]))),
                Refusal::Data,
            ),
            (
                message(event(json!(["e"])), rooms(json!(["a".repeat(33)]))),
                Refusal::Name,
            ),
        ] {
            assert_eq!(
                decode(&bytes, &LIMITS).map(|_| ()),
                Err(refusal),
                "{bytes:?}"
            );
        }
        let huge = vec![0x90; 64 * 1024];
        assert_eq!(decode(&huge, &LIMITS).map(|_| ()), Err(Refusal::Malformed));
        // ["uid", {type: 2, nsp: "/", data: ["e", <bin 00 ff>]}, {}]: binary
        // data is not JSON, so the message does not read (as from any client).
        let mut bin = vec![0x93, 0xa3, b'u', b'i', b'd', 0x83, 0xa4];
        bin.extend(b"type\x02\xa3nsp\xa1/\xa4data\x92\xa1e\xc4\x02\x00\xff\x80");
        assert_eq!(decode(&bin, &LIMITS).map(|_| ()), Err(Refusal::Malformed));
    }
}
