//! Socket.IO v5 packets in the two parsers herald speaks: the default one
//! (JSON text after a type digit, namespace and ack id) and
//! `socket.io-msgpack-parser` (one MessagePack map per packet).
//!
//! Reading turns a packet into what herald understands: a `CONNECT` with its
//! token, a `DISCONNECT`, or an event it handles (`subscribe`,
//! `unsubscribe`, `publish`, `refresh`), parsed straight from the input so
//! publication data is checked once, as every transport checks it.

use std::fmt;

use bytes::Bytes;
use serde::{
    Deserialize, Deserializer, Serialize,
    de::{Error as _, IgnoredAny, SeqAccess, Visitor},
};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::engine::Frame;
use crate::protocol::{CheckedData, DataError, EncodeError, JsonData};

/// The default namespace, the only one herald serves.
pub(crate) const DEFAULT_NSP: &str = "/";

/// Packet types.
const CONNECT: u8 = 0;
const DISCONNECT: u8 = 1;
const EVENT: u8 = 2;
const ACK: u8 = 3;
const CONNECT_ERROR: u8 = 4;
const BINARY_EVENT: u8 = 5;
const BINARY_ACK: u8 = 6;

/// Which Socket.IO parser a client uses; one per endpoint path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Parser {
    /// The default parser: text packets.
    Json,
    /// `socket.io-msgpack-parser`: binary packets.
    MsgPack,
}

/// A packet from a client.
#[derive(Debug, PartialEq)]
pub(crate) enum Packet {
    /// Join a namespace; the auth payload's `token`, if any.
    Connect {
        /// Namespace.
        nsp: String,
        /// `auth.token`; an unreadable auth payload gives an empty token,
        /// which the core refuses as invalid.
        token: Option<String>,
        /// `auth.pid` and `auth.offset` of a client resuming its session.
        resume: Option<Resume>,
    },
    /// Leave a namespace.
    Disconnect {
        /// Namespace.
        nsp: String,
    },
    /// An event.
    Event {
        /// Namespace.
        nsp: String,
        /// The id the client waits for an ack under.
        ack: Option<u64>,
        /// What the event asks.
        event: Event,
    },
    /// An ack from the client (herald never asks for one): ignored.
    Ack,
    /// A packet with binary attachments (default parser): refused.
    Attachments {
        /// The id the client waits for an ack under.
        ack: Option<u64>,
    },
}

/// What a reconnecting socket.io-client sends to recover its session
/// (connection state recovery): the `pid` herald gave it and the last
/// event's `offset`. Both are only read as strings; anything else is no
/// resume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resume {
    /// The private session id of the previous connection.
    pub(crate) pid: String,
    /// The offset of the last event the client handled.
    pub(crate) offset: String,
}

/// The events herald handles.
#[derive(Debug, PartialEq)]
pub(crate) enum Event {
    /// `subscribe`, one channel or a list.
    Subscribe(Channels),
    /// `unsubscribe`, one channel or a list.
    Unsubscribe(Channels),
    /// `publish`, `{channel, event, data}`.
    Publish {
        /// Target channel.
        channel: String,
        /// Event name.
        event: String,
        /// Checked data (absent data is `null`).
        data: Result<JsonData, DataError>,
    },
    /// `refresh`, a new access token.
    Refresh(String),
    /// Any other event name.
    Unknown(String),
}

/// A `subscribe` or `unsubscribe` argument.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Channels {
    /// One channel name.
    One(String),
    /// A list of channel names.
    Many(Vec<String>),
}

/// A packet that could not be read; the ack id, if it was readable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid Socket.IO packet: {reason}")]
pub(crate) struct PacketError {
    /// The ack id the client waits under, if known.
    pub(crate) ack: Option<u64>,
    /// What is wrong.
    pub(crate) reason: String,
}

impl PacketError {
    fn new(ack: Option<u64>, reason: impl fmt::Display) -> Self {
        Self {
            ack,
            reason: reason.to_string(),
        }
    }
}

impl Parser {
    /// Reads a JSON-parser packet (a text message, its Engine.IO `4` removed).
    ///
    /// # Errors
    /// [`PacketError`] saying what is wrong.
    pub(crate) fn decode_text(text: &str) -> Result<Packet, PacketError> {
        let bytes = text.as_bytes();
        let kind = match bytes.first() {
            Some(digit @ b'0'..=b'9') => digit - b'0',
            _ => return Err(PacketError::new(None, "missing packet type")),
        };
        let mut rest = &text[1..];
        if kind == BINARY_EVENT || kind == BINARY_ACK {
            let ack = rest
                .split_once('-')
                .map(|(_, after)| skip_namespace(after).1)
                .and_then(|after| leading_number(after).ok().flatten().map(|(id, _)| id));
            return Ok(Packet::Attachments { ack });
        }
        let nsp;
        (nsp, rest) = skip_namespace(rest);
        let (ack, payload) = match leading_number(rest) {
            Ok(Some((id, payload))) => (Some(id), payload),
            Ok(None) => (None, rest),
            Err(()) => return Err(PacketError::new(None, "ack id out of range")),
        };
        let nsp = nsp.to_owned();
        match kind {
            CONNECT => {
                let (token, resume) = if payload.is_empty() {
                    (None, None)
                } else {
                    connect_auth(serde_json::from_str(payload))
                };
                Ok(Packet::Connect { nsp, token, resume })
            }
            DISCONNECT => Ok(Packet::Disconnect { nsp }),
            EVENT => serde_json::from_str(payload)
                .map(|event| Packet::Event { nsp, ack, event })
                .map_err(|e| PacketError::new(ack, e)),
            ACK => Ok(Packet::Ack),
            _ => Err(PacketError::new(
                ack,
                "clients do not send this packet type",
            )),
        }
    }

    /// Reads a msgpack-parser packet (a binary message).
    ///
    /// # Errors
    /// [`PacketError`] saying what is wrong.
    pub(crate) fn decode_binary(bytes: &[u8]) -> Result<Packet, PacketError> {
        // Two passes: the ack id may follow the data in the map, and an
        // error about the data must still reach the right ack.
        let head: Head = rmp_serde::from_slice(bytes).map_err(|e| PacketError::new(None, e))?;
        let nsp = head.nsp;
        let ack = head.id;
        match head.kind {
            CONNECT => {
                let (token, resume) = match rmp_serde::from_slice::<ConnectBody>(bytes) {
                    Ok(body) => match body.data.0 {
                        Some(auth) => connect_auth(Ok::<_, serde_json::Error>(auth)),
                        None => (None, None),
                    },
                    Err(_) => (Some(String::new()), None),
                };
                Ok(Packet::Connect { nsp, token, resume })
            }
            DISCONNECT => Ok(Packet::Disconnect { nsp }),
            EVENT => rmp_serde::from_slice::<EventBody>(bytes)
                .map(|body| Packet::Event {
                    nsp,
                    ack,
                    event: body.data,
                })
                .map_err(|e| PacketError::new(ack, e)),
            ACK => Ok(Packet::Ack),
            _ => Err(PacketError::new(
                ack,
                "clients do not send this packet type",
            )),
        }
    }

    /// Encodes a packet on the default namespace.
    ///
    /// # Errors
    /// If `data` has no form in this parser (it always has for herald's values).
    fn encode<T: Serialize + ?Sized>(
        self,
        kind: u8,
        nsp: &str,
        id: Option<u64>,
        data: Option<&T>,
    ) -> Result<Frame, EncodeError> {
        match self {
            Self::Json => {
                let mut text = String::with_capacity(64);
                text.push('4');
                text.push(char::from(b'0' + kind));
                if nsp != DEFAULT_NSP {
                    text.push_str(nsp);
                    text.push(',');
                }
                if let Some(id) = id {
                    text.push_str(&id.to_string());
                }
                if let Some(data) = data {
                    text.push_str(&serde_json::to_string(data)?);
                }
                Ok(Frame::Text(Utf8Bytes::from(text)))
            }
            Self::MsgPack => {
                let packet = Packed {
                    kind,
                    nsp,
                    data,
                    id,
                };
                Ok(Frame::Binary(Bytes::from(rmp_serde::to_vec_named(
                    &packet,
                )?)))
            }
        }
    }

    /// `CONNECT {sid, pid?}`: the namespace is joined; `pid` (connection
    /// state recovery) is the session id the client resumes with later, and
    /// socket.io-client sets `socket.recovered` when it equals its own.
    pub(crate) fn connect(self, sid: &str, pid: Option<&str>) -> Result<Frame, EncodeError> {
        #[derive(Serialize)]
        struct Sid<'a> {
            sid: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            pid: Option<&'a str>,
        }
        self.encode(CONNECT, DEFAULT_NSP, None, Some(&Sid { sid, pid }))
    }

    /// `CONNECT_ERROR {message, data: {code}}`.
    pub(crate) fn connect_error(
        self,
        nsp: &str,
        message: &str,
        code: Option<u16>,
    ) -> Result<Frame, EncodeError> {
        #[derive(Serialize)]
        struct Code {
            code: u16,
        }
        #[derive(Serialize)]
        struct Refusal<'a> {
            message: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            data: Option<Code>,
        }
        let refusal = Refusal {
            message,
            data: code.map(|code| Code { code }),
        };
        self.encode(CONNECT_ERROR, nsp, None, Some(&refusal))
    }

    /// `DISCONNECT`: the server leaves the client (it will not reconnect).
    pub(crate) fn disconnect(self) -> Result<Frame, EncodeError> {
        self.encode::<()>(DISCONNECT, DEFAULT_NSP, None, None)
    }

    /// `ACK` of `id` with one argument.
    pub(crate) fn ack<T: Serialize>(self, id: u64, arg: &T) -> Result<Frame, EncodeError> {
        self.encode(ACK, DEFAULT_NSP, Some(id), Some(&[arg]))
    }

    /// A default-parser `BINARY_EVENT` with one attachment: `args` holds its
    /// placeholder; the attachment is sent as the next (binary) message.
    pub(crate) fn binary_event<T: Serialize + ?Sized>(args: &T) -> Result<Utf8Bytes, EncodeError> {
        let json = serde_json::to_string(args)?;
        Ok(Utf8Bytes::from(format!("4{BINARY_EVENT}1-{json}")))
    }

    /// `EVENT [name, ...args]`: `args` is a tuple or array starting with the name.
    pub(crate) fn event<T: Serialize + ?Sized>(self, args: &T) -> Result<Frame, EncodeError> {
        self.encode(EVENT, DEFAULT_NSP, None, Some(args))
    }
}

/// An outgoing msgpack-parser packet. Absent fields are left out, not nil:
/// the parser refuses a `null` id or `DISCONNECT` data.
#[derive(Serialize)]
struct Packed<'a, T: ?Sized> {
    #[serde(rename = "type")]
    kind: u8,
    nsp: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<u64>,
}

/// The fields of a msgpack-parser packet read first.
#[derive(Deserialize)]
struct Head {
    #[serde(rename = "type")]
    kind: u8,
    nsp: String,
    #[serde(default)]
    id: Option<u64>,
}

#[derive(Deserialize)]
struct ConnectBody {
    #[serde(default)]
    data: PackedAuth,
}

/// A msgpack-parser `CONNECT`'s auth: a map, or nothing. socket.io-client
/// without `auth` sends `data: undefined`, which its MessagePack encoder
/// (notepack.io) writes as an extension value: that too is no token.
#[derive(Default)]
struct PackedAuth(Option<Auth>);

impl<'de> Deserialize<'de> for PackedAuth {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(PackedAuthVisitor)
    }
}

struct PackedAuthVisitor;

impl<'de> Visitor<'de> for PackedAuthVisitor {
    type Value = PackedAuth;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an auth map, or nothing")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<PackedAuth, A::Error> {
        let auth = Auth::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
        Ok(PackedAuth(Some(auth)))
    }

    fn visit_unit<E>(self) -> Result<PackedAuth, E> {
        Ok(PackedAuth(None))
    }

    fn visit_none<E>(self) -> Result<PackedAuth, E> {
        Ok(PackedAuth(None))
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, ext: D) -> Result<PackedAuth, D::Error> {
        IgnoredAny::deserialize(ext)?;
        Ok(PackedAuth(None))
    }
}

#[derive(Deserialize)]
struct EventBody {
    data: Event,
}

/// The `auth` payload of a `CONNECT`: `token`, and `pid` and `offset`
/// (connection state recovery), which are read only when they are strings.
#[derive(Deserialize)]
struct Auth {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    pid: Option<Loose>,
    #[serde(default)]
    offset: Option<Loose>,
}

/// A value that is used only when it is a string (`offset: undefined`
/// arrives as `null`, or as an extension value from msgpack).
#[derive(Deserialize)]
#[serde(untagged)]
enum Loose {
    Text(String),
    Other(IgnoredAny),
}

impl Loose {
    fn text(value: Option<Self>) -> Option<String> {
        match value {
            Some(Self::Text(text)) => Some(text),
            Some(Self::Other(_)) | None => None,
        }
    }
}

/// The token and the resume of a parsed auth payload; unreadable auth is
/// an empty token.
fn connect_auth(auth: Result<Auth, serde_json::Error>) -> (Option<String>, Option<Resume>) {
    match auth {
        Ok(auth) => {
            let resume = Loose::text(auth.pid)
                .zip(Loose::text(auth.offset))
                .map(|(pid, offset)| Resume { pid, offset });
            (auth.token, resume)
        }
        Err(_) => (Some(String::new()), None),
    }
}

/// Splits `/nsp,` off the front; the default namespace when there is none.
fn skip_namespace(text: &str) -> (&str, &str) {
    if !text.starts_with('/') {
        return (DEFAULT_NSP, text);
    }
    match text.split_once(',') {
        Some((nsp, rest)) => (nsp, rest),
        None => (text, ""),
    }
}

/// A leading decimal number and what follows it; `Err` if it overflows.
fn leading_number(text: &str) -> Result<Option<(u64, &str)>, ()> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Ok(None);
    }
    let id = text[..digits].parse().map_err(|_| ())?;
    Ok(Some((id, &text[digits..])))
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(EventVisitor)
    }
}

struct EventVisitor;

impl<'de> Visitor<'de> for EventVisitor {
    type Value = Event;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array: the event name, then its arguments")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Event, A::Error> {
        let name: String = seq
            .next_element()?
            .ok_or_else(|| A::Error::custom("an event needs a name"))?;
        let missing = |what: &str| A::Error::custom(format!("`{name}` needs {what}"));
        let event = match name.as_str() {
            "subscribe" => Event::Subscribe(
                seq.next_element()?
                    .ok_or_else(|| missing("a channel or a list of channels"))?,
            ),
            "unsubscribe" => Event::Unsubscribe(
                seq.next_element()?
                    .ok_or_else(|| missing("a channel or a list of channels"))?,
            ),
            "publish" => {
                let arg: PublishArg = seq
                    .next_element()?
                    .ok_or_else(|| missing("{channel, event, data}"))?;
                Event::Publish {
                    channel: arg.channel,
                    event: arg.event,
                    data: arg
                        .data
                        .map_or_else(|| JsonData::from_json("null"), |d| d.0),
                }
            }
            "refresh" => Event::Refresh(seq.next_element()?.ok_or_else(|| missing("a token"))?),
            _ => Event::Unknown(name),
        };
        // The ack callback is not in the array; anything else extra is ignored.
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(event)
    }
}

#[derive(Deserialize)]
struct PublishArg {
    channel: String,
    event: String,
    #[serde(default)]
    data: Option<CheckedData>,
}

impl<'de> Deserialize<'de> for Channels {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ChannelsVisitor)
    }
}

struct ChannelsVisitor;

impl<'de> Visitor<'de> for ChannelsVisitor {
    type Value = Channels;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a channel name or an array of channel names")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Channels, E> {
        Ok(Channels::One(v.to_owned()))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Channels, E> {
        Ok(Channels::One(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Channels, A::Error> {
        // The length is the sender's claim: allocate for it only up to a bound.
        let mut names = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(name) = seq.next_element()? {
            names.push(name);
        }
        Ok(Channels::Many(names))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(frame: Frame) -> String {
        match frame {
            Frame::Text(t) => t.as_str().to_owned(),
            Frame::Binary(_) => panic!("binary frame"),
        }
    }

    fn binary(frame: Frame) -> Vec<u8> {
        match frame {
            Frame::Binary(b) => b.to_vec(),
            Frame::Text(_) => panic!("text frame"),
        }
    }

    #[test]
    fn json_connect_reads_the_token_and_namespace() {
        assert_eq!(
            Parser::decode_text(r#"0{"token":"abc"}"#).unwrap(),
            Packet::Connect {
                nsp: "/".into(),
                token: Some("abc".into()),
                resume: None,
            }
        );
        assert_eq!(
            Parser::decode_text("0").unwrap(),
            Packet::Connect {
                nsp: "/".into(),
                token: None,
                resume: None,
            }
        );
        assert_eq!(
            Parser::decode_text(r#"0/admin,{"token":"x"}"#).unwrap(),
            Packet::Connect {
                nsp: "/admin".into(),
                token: Some("x".into()),
                resume: None,
            }
        );
        assert_eq!(
            Parser::decode_text(r#"0{"token":5}"#).unwrap(),
            Packet::Connect {
                nsp: "/".into(),
                token: Some(String::new()),
                resume: None,
            }
        );
    }

    #[test]
    fn connect_reads_a_resume_only_from_string_pid_and_offset() {
        let resume = |text: &str| match Parser::decode_text(text).unwrap() {
            Packet::Connect { resume, .. } => resume,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            resume(r#"0{"token":"t","pid":"p1","offset":"1~a*e*3"}"#),
            Some(Resume {
                pid: "p1".into(),
                offset: "1~a*e*3".into()
            })
        );
        assert_eq!(resume(r#"0{"token":"t","pid":"p1"}"#), None);
        assert_eq!(resume(r#"0{"pid":{"x":1},"offset":"o"}"#), None);
        assert_eq!(resume(r#"0{"pid":"p","offset":null}"#), None);
        let packed = rmp_serde::to_vec_named(&serde_json::json!({
            "type": 0, "nsp": "/", "data": {"token": "t", "pid": "p", "offset": "o"}
        }))
        .unwrap();
        assert!(matches!(
            Parser::decode_binary(&packed).unwrap(),
            Packet::Connect { resume: Some(Resume { pid, offset }), .. } if pid == "p" && offset == "o"
        ));
    }

    #[test]
    fn json_events_read_channels_ack_ids_and_data() {
        assert_eq!(
            Parser::decode_text(r#"212["subscribe",["a","b"]]"#).unwrap(),
            Packet::Event {
                nsp: "/".into(),
                ack: Some(12),
                event: Event::Subscribe(Channels::Many(vec!["a".into(), "b".into()]))
            }
        );
        assert_eq!(
            Parser::decode_text(r#"2["unsubscribe","a"]"#).unwrap(),
            Packet::Event {
                nsp: "/".into(),
                ack: None,
                event: Event::Unsubscribe(Channels::One("a".into()))
            }
        );
        let Packet::Event {
            event: Event::Publish { data, .. },
            ..
        } = Parser::decode_text(r#"23["publish",{"channel":"c","event":"e","data":{"x":[1,2]}}]"#)
            .unwrap()
        else {
            panic!("not a publish");
        };
        assert_eq!(data.unwrap().as_json(), Some(r#"{"x":[1,2]}"#));
        let err = Parser::decode_text(r#"27["subscribe",5]"#).unwrap_err();
        assert_eq!(err.ack, Some(7));
        assert!(matches!(
            Parser::decode_text(r#"2["hello",1,2]"#).unwrap(),
            Packet::Event { event: Event::Unknown(name), .. } if name == "hello"
        ));
        assert_eq!(
            Parser::decode_text(r#"51-4["publish",{"_placeholder":true,"num":0}]"#).unwrap(),
            Packet::Attachments { ack: Some(4) }
        );
        assert!(Parser::decode_text("299999999999999999999999[]").is_err());
        assert!(Parser::decode_text("x").is_err());
        assert!(Parser::decode_text("2[").is_err());
    }

    #[test]
    fn json_encodings_match_the_socket_io_wire() {
        let p = Parser::Json;
        assert_eq!(text(p.connect("s1", None).unwrap()), r#"40{"sid":"s1"}"#);
        assert_eq!(
            text(p.connect("s1", Some("p1")).unwrap()),
            r#"40{"sid":"s1","pid":"p1"}"#
        );
        assert_eq!(
            text(p.connect_error("/", "invalid token", Some(4500)).unwrap()),
            r#"44{"message":"invalid token","data":{"code":4500}}"#
        );
        assert_eq!(
            text(
                p.connect_error("/admin", "Invalid namespace", None)
                    .unwrap()
            ),
            r#"44/admin,{"message":"Invalid namespace"}"#
        );
        assert_eq!(text(p.disconnect().unwrap()), "41");
        assert_eq!(
            text(p.ack(3, &serde_json::json!({"ok": true})).unwrap()),
            r#"433[{"ok":true}]"#
        );
        assert_eq!(
            text(p.event(&("price", 1, "x")).unwrap()),
            r#"42["price",1,"x"]"#
        );
    }

    #[test]
    fn msgpack_packets_round_trip() {
        #[derive(Serialize)]
        struct ClientPacket<'a, T> {
            #[serde(rename = "type")]
            kind: u8,
            data: T,
            options: serde_json::Value,
            id: u64,
            nsp: &'a str,
        }
        let packet = ClientPacket {
            kind: EVENT,
            data: ("subscribe", ["a", "b"]),
            options: serde_json::json!({"compress": true}),
            id: 9,
            nsp: "/",
        };
        let bytes = rmp_serde::to_vec_named(&packet).unwrap();
        assert_eq!(
            Parser::decode_binary(&bytes).unwrap(),
            Packet::Event {
                nsp: "/".into(),
                ack: Some(9),
                event: Event::Subscribe(Channels::Many(vec!["a".into(), "b".into()]))
            }
        );
        let bad = ClientPacket {
            kind: EVENT,
            data: ("subscribe", 5),
            options: serde_json::Value::Null,
            id: 4,
            nsp: "/",
        };
        let err = Parser::decode_binary(&rmp_serde::to_vec_named(&bad).unwrap()).unwrap_err();
        assert_eq!(err.ack, Some(4));
        let connect = rmp_serde::to_vec_named(&serde_json::json!({
            "type": 0, "nsp": "/", "data": {"token": "t"}
        }))
        .unwrap();
        assert_eq!(
            Parser::decode_binary(&connect).unwrap(),
            Packet::Connect {
                nsp: "/".into(),
                token: Some("t".into()),
                resume: None,
            }
        );
        // {"type":0,"nsp":"/","data":undefined} as notepack.io writes it.
        let mut undefined = vec![0x83, 0xa4];
        undefined.extend_from_slice(b"type");
        undefined.extend_from_slice(&[0x00, 0xa3]);
        undefined.extend_from_slice(b"nsp");
        undefined.extend_from_slice(&[0xa1, b'/', 0xa4]);
        undefined.extend_from_slice(b"data");
        undefined.extend_from_slice(&[0xd4, 0x00, 0x00]);
        assert_eq!(
            Parser::decode_binary(&undefined).unwrap(),
            Packet::Connect {
                nsp: "/".into(),
                token: None,
                resume: None,
            }
        );
        let disconnect = binary(Parser::MsgPack.disconnect().unwrap());
        let value: serde_json::Value = rmp_serde::from_slice(&disconnect).unwrap();
        assert_eq!(value, serde_json::json!({"type": 1, "nsp": "/"}));
        let ack = binary(
            Parser::MsgPack
                .ack(2, &serde_json::json!({"ok": true}))
                .unwrap(),
        );
        let value: serde_json::Value = rmp_serde::from_slice(&ack).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"type": 3, "nsp": "/", "data": [{"ok": true}], "id": 2})
        );
    }
}
