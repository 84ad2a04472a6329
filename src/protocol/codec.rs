//! The two wire formats and the one place that turns bytes into messages.

use std::borrow::Cow;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{CheckedData, ClientMessage, ErrorCode, StreamPosition};

/// A wire format. JSON travels in text frames, MessagePack in binary frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// UTF-8 JSON in text frames (the default).
    Json,
    /// MessagePack maps with named fields in binary frames.
    MsgPack,
}

/// A client message that could not be turned into a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct DecodeError {
    /// The request id, when it could be read despite the error.
    pub id: Option<u64>,
    /// [`ErrorCode::BadRequest`], [`ErrorCode::UnknownType`] or, for `publish`
    /// data that not every format can carry, [`ErrorCode::InvalidData`].
    pub code: ErrorCode,
    /// What is wrong, for the error reply.
    pub reason: String,
}

/// The fields every request has; read first so that errors can carry the id.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    id: Option<u64>,
}

// One body struct per message type, deserialized straight from the input
// (not through serde's tagged-enum buffering, which would hide the format
// from `JsonData` and copy every payload).

#[derive(Deserialize)]
struct AuthBody {
    id: Option<u64>,
    token: Option<String>,
}

#[derive(Deserialize)]
struct ChannelBody {
    id: Option<u64>,
    channel: String,
}

#[derive(Deserialize)]
struct SubscribeBody {
    id: Option<u64>,
    channel: String,
    #[serde(default)]
    since: Option<StreamPosition>,
    #[serde(default)]
    latest: bool,
}

#[derive(Deserialize)]
struct HistoryBody {
    id: Option<u64>,
    channel: String,
    #[serde(default)]
    since: Option<u64>,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    reverse: bool,
}

#[derive(Deserialize)]
struct PublishBody {
    id: Option<u64>,
    channel: String,
    event: String,
    data: CheckedData,
}

#[derive(Deserialize)]
struct RefreshBody {
    id: Option<u64>,
    token: String,
}

#[derive(Deserialize)]
struct PingBody {
    id: Option<u64>,
}

/// Decodes one client message.
///
/// # Errors
/// [`DecodeError`] with the request id when the message had a readable one.
pub fn decode(bytes: &[u8], format: Format) -> Result<ClientMessage, DecodeError> {
    let head: Head<'_> = parse(bytes, format).map_err(|reason| DecodeError {
        id: None,
        code: ErrorCode::BadRequest,
        reason: format!("message must be a map with a string `type` field: {reason}"),
    })?;
    let invalid = |reason: ParseError| DecodeError {
        id: head.id,
        code: ErrorCode::BadRequest,
        reason: format!("invalid `{}` message: {reason}", head.kind),
    };
    let message = match &*head.kind {
        "auth" => parse(bytes, format).map(|b: AuthBody| ClientMessage::Auth {
            id: b.id,
            token: b.token,
        }),
        "subscribe" => parse(bytes, format).map(|b: SubscribeBody| ClientMessage::Subscribe {
            id: b.id,
            channel: b.channel,
            since: b.since,
            latest: b.latest,
        }),
        "history" => parse(bytes, format).map(|b: HistoryBody| ClientMessage::History {
            id: b.id,
            channel: b.channel,
            since: b.since,
            limit: b.limit,
            reverse: b.reverse,
        }),
        "unsubscribe" => parse(bytes, format).map(|b: ChannelBody| ClientMessage::Unsubscribe {
            id: b.id,
            channel: b.channel,
        }),
        "publish" => match parse(bytes, format) {
            Ok(PublishBody {
                data: CheckedData(Err(err)),
                id,
                ..
            }) => {
                return Err(DecodeError {
                    id,
                    code: ErrorCode::InvalidData,
                    reason: err.to_string(),
                });
            }
            Ok(PublishBody {
                id,
                channel,
                event,
                data: CheckedData(Ok(data)),
            }) => Ok(ClientMessage::Publish {
                id,
                channel,
                event,
                data,
            }),
            Err(err) => Err(err),
        },
        "refresh" => parse(bytes, format).map(|b: RefreshBody| ClientMessage::Refresh {
            id: b.id,
            token: b.token,
        }),
        "ping" => parse(bytes, format).map(|b: PingBody| ClientMessage::Ping { id: b.id }),
        other => {
            return Err(DecodeError {
                id: head.id,
                code: ErrorCode::UnknownType,
                reason: format!("unknown message type {other:?}"),
            });
        }
    };
    message.map_err(invalid)
}

/// Why a client message did not parse; its text becomes `DecodeError::reason`.
#[derive(Debug, thiserror::Error)]
enum ParseError {
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    MsgPack(#[from] rmp_serde::decode::Error),
}

fn parse<'a, T: Deserialize<'a>>(bytes: &'a [u8], format: Format) -> Result<T, ParseError> {
    Ok(match format {
        Format::Json => serde_json::from_slice(bytes)?,
        Format::MsgPack => rmp_serde::from_slice(bytes)?,
    })
}

/// Why a server message could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// JSON encoding failed.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// MessagePack encoding failed.
    #[error("MessagePack: {0}")]
    MsgPack(#[from] rmp_serde::encode::Error),
}

/// Encodes one server message ([`super::ServerMessage`] or [`super::PushRef`]).
///
/// # Errors
/// Only if the message data cannot be represented in the format, which a
/// [`super::JsonData`] always can (it is checked when made).
pub fn encode<T: Serialize + ?Sized>(message: &T, format: Format) -> Result<Bytes, EncodeError> {
    Ok(Bytes::from(match format {
        Format::Json => serde_json::to_vec(message)?,
        Format::MsgPack => rmp_serde::to_vec_named(message)?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ChannelName, EventName, JsonData, Publication, PushRef, ServerMessage};

    #[test]
    fn decodes_every_client_message_in_both_formats() {
        let cases = [
            r#"{"type":"auth","id":1,"token":"t"}"#,
            r#"{"type":"subscribe","id":2,"channel":"prices.btc"}"#,
            r#"{"type":"unsubscribe","channel":"prices.btc"}"#,
            r#"{"type":"publish","id":4,"channel":"c","event":"e","data":{"p":[1,2.5,"x",null]}}"#,
            r#"{"type":"ping","id":5}"#,
            r#"{"type":"refresh","id":6,"token":"t"}"#,
        ];
        for json in cases {
            let from_json = decode(json.as_bytes(), Format::Json).unwrap();
            let value: serde_json::Value = serde_json::from_str(json).unwrap();
            let packed = rmp_serde::to_vec_named(&value).unwrap();
            let from_msgpack = decode(&packed, Format::MsgPack).unwrap();
            assert_eq!(from_json, from_msgpack, "{json}");
        }
    }

    #[test]
    fn errors_keep_the_request_id() {
        let err = decode(br#"{"type":"dance","id":7}"#, Format::Json).unwrap_err();
        assert_eq!((err.id, err.code), (Some(7), ErrorCode::UnknownType));
        let err = decode(br#"{"type":"subscribe","id":8}"#, Format::Json).unwrap_err();
        assert_eq!((err.id, err.code), (Some(8), ErrorCode::BadRequest));
        let err = decode(b"{not json", Format::Json).unwrap_err();
        assert_eq!((err.id, err.code), (None, ErrorCode::BadRequest));
        let err = decode(&[0xc1, 0x00], Format::MsgPack).unwrap_err();
        assert_eq!(err.code, ErrorCode::BadRequest);
        let deep = format!(
            r#"{{"type":"publish","id":9,"channel":"c","event":"e","data":{}1{}}}"#,
            "[".repeat(65),
            "]".repeat(65)
        );
        let err = decode(deep.as_bytes(), Format::Json).unwrap_err();
        assert_eq!((err.id, err.code), (Some(9), ErrorCode::InvalidData));
    }

    #[test]
    fn push_data_is_native_in_msgpack_and_verbatim_in_json() {
        let push = ServerMessage::Push {
            channel: ChannelName::parse("prices.btc", 128).unwrap(),
            event: EventName::parse("price_update").unwrap(),
            data: JsonData::from_json(r#"{"price":64000.5,"sym":"BTC"}"#).unwrap(),
            ts: None,
            offset: None,
        };
        let json = encode(&push, Format::Json).unwrap();
        assert_eq!(
            &json[..],
            br#"{"type":"push","channel":"prices.btc","event":"price_update","data":{"price":64000.5,"sym":"BTC"}}"#
        );
        let packed = encode(&push, Format::MsgPack).unwrap();
        let value: serde_json::Value = rmp_serde::from_slice(&packed).unwrap();
        assert_eq!(value["data"]["price"], 64000.5);
        assert_eq!(value["type"], "push");
        // The borrowed form the fan-out encodes is byte for byte the same.
        let ServerMessage::Push {
            channel,
            event,
            data,
            ..
        } = push
        else {
            unreachable!()
        };
        let publication = Publication {
            channel,
            event,
            data,
            ts: Some(7),
            position: None,
            history: None,
        };
        let owned = ServerMessage::Push {
            channel: publication.channel.clone(),
            event: publication.event.clone(),
            data: publication.data.clone(),
            ts: publication.ts,
            offset: None,
        };
        for format in [Format::Json, Format::MsgPack] {
            assert_eq!(
                encode(&PushRef::from(&publication), format).unwrap(),
                encode(&owned, format).unwrap()
            );
        }
    }

    /// The history examples of docs/PROTOCOL.md, byte for byte.
    #[test]
    fn history_messages_match_the_documented_bytes() {
        let hex = |bytes: &[u8]| -> String { bytes.iter().map(|b| format!("{b:02x}")).collect() };
        let position = crate::protocol::StreamPosition {
            offset: 44,
            epoch: "1a2b3c4d".into(),
        };
        let subscribed = ServerMessage::Subscribed {
            id: Some(2),
            position,
            recovered: Some(true),
        };
        assert_eq!(
            &encode(&subscribed, Format::Json).unwrap()[..],
            br#"{"type":"subscribed","id":2,"position":{"offset":44,"epoch":"1a2b3c4d"},"recovered":true}"#
        );
        assert_eq!(
            hex(&encode(&subscribed, Format::MsgPack).unwrap()),
            "84a474797065aa73756273637269626564a2696402a8706f736974696f6e82a66f66667365742c\
             a565706f6368a83161326233633464a97265636f7665726564c3"
        );
        let push = ServerMessage::Push {
            channel: ChannelName::parse("news.live", 128).unwrap(),
            event: EventName::parse("story").unwrap(),
            data: JsonData::from_json(r#"{"id":42}"#).unwrap(),
            ts: Some(1_732_252_800_000),
            offset: Some(42),
        };
        assert_eq!(
            &encode(&push, Format::Json).unwrap()[..],
            br#"{"type":"push","channel":"news.live","event":"story","data":{"id":42},"ts":1732252800000,"offset":42}"#
        );
        assert_eq!(
            hex(&encode(&push, Format::MsgPack).unwrap()),
            "86a474797065a470757368a76368616e6e656ca96e6577732e6c697665a56576656e74a573746f72\
             79a46461746181a269642aa27473cf0000019352501400a66f66667365742a"
        );
        let gap = ServerMessage::Gap {
            channel: ChannelName::parse("news.live", 128).unwrap(),
            from: Some(45),
            to: Some(46),
            epoch: Some("1a2b3c4d".into()),
        };
        assert_eq!(
            hex(&encode(&gap, Format::MsgPack).unwrap()),
            "85a474797065a3676170a76368616e6e656ca96e6577732e6c697665a466726f6d2da2746f2e\
             a565706f6368a83161326233633464"
        );
    }
}
