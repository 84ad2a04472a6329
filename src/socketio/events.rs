//! What herald emits to Socket.IO clients: deliveries as events, encoded
//! once per parser for every recipient through the core's [`WireFormat`]
//! cache.

use bytes::Bytes;
use serde::Serialize;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::{engine::Frame, packet::Parser};
use crate::{
    core::{Delivery, Payload, WireFormat, slots},
    net::wire::Framed,
    protocol::{ChannelName, Publication},
};

/// Default-parser deliveries: the whole `42[...]` text, validated once, and
/// for binary data the attachment its placeholder stands for.
static JSON: WireFormat<JsonEvent> = WireFormat::new(slots::SOCKETIO_JSON, |payload| {
    if let Payload::Publication(p) = payload
        && let Some(bytes) = p.data.as_binary()
        && !reserved(p.event.as_str())
    {
        return with_attachment(p, bytes);
    }
    match encode_delivery(Parser::Json, payload)? {
        Frame::Text(text) => Some(JsonEvent {
            raw: Bytes::from(text.clone()),
            text,
            attachment: None,
        }),
        Frame::Binary(_) => None,
    }
});

/// A default-parser event: its text packet, and the binary attachment that
/// follows it when the data is bytes (socket.io-client hands the app a
/// `Buffer` or `ArrayBuffer`, as the msgpack parser's `bin` does).
#[derive(Debug)]
pub(super) struct JsonEvent {
    text: Utf8Bytes,
    /// `text`'s bytes (the same buffer), for direct writes.
    raw: Bytes,
    attachment: Option<Bytes>,
}

fn with_attachment(p: &Publication, bytes: &Bytes) -> Option<JsonEvent> {
    #[derive(Serialize)]
    struct Placeholder {
        _placeholder: bool,
        num: u8,
    }
    let args = (
        &p.event,
        Placeholder {
            _placeholder: true,
            num: 0,
        },
        meta(p),
    );
    match Parser::binary_event(&args) {
        Ok(text) => Some(JsonEvent {
            raw: Bytes::from(text.clone()),
            text,
            attachment: Some(bytes.clone()),
        }),
        Err(err) => {
            tracing::error!(%err, "encoding a Socket.IO delivery failed");
            None
        }
    }
}

/// Msgpack-parser deliveries: one packet map each.
static MSGPACK: WireFormat<Bytes> = WireFormat::new(slots::SOCKETIO_MSGPACK, |payload| {
    match encode_delivery(Parser::MsgPack, payload)? {
        Frame::Binary(bytes) => Some(bytes),
        Frame::Text(_) => None,
    }
});

/// The second argument of every publication event.
#[derive(Serialize)]
struct Meta<'a> {
    channel: &'a ChannelName,
    #[serde(skip_serializing_if = "Option::is_none")]
    ts: Option<u64>,
    /// The publication's offset in its channel's stream (history channels only).
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
}

fn encode_delivery(parser: Parser, payload: &Payload) -> Option<Frame> {
    #[derive(Serialize)]
    struct Gap<'a> {
        channel: &'a ChannelName,
    }
    #[derive(Serialize)]
    struct Expiring {
        expires_in_ms: u64,
    }
    let encoded = match payload {
        Payload::Publication(p) if reserved(p.event.as_str()) => {
            tracing::debug!(
                event = p.event.as_str(),
                "event name reserved by Socket.IO; not delivered to Socket.IO clients"
            );
            return None;
        }
        Payload::Publication(p) => parser.event(&(&p.event, &p.data, meta(p))),
        Payload::Gap { channel, .. } => parser.event(&("herald:gap", Gap { channel })),
        Payload::TokenExpiring { expires_in_ms } => parser.event(&(
            "herald:token_expiring",
            Expiring {
                expires_in_ms: *expires_in_ms,
            },
        )),
    };
    encoded
        .map_err(|err| tracing::error!(%err, ?parser, "encoding a Socket.IO delivery failed"))
        .ok()
}

/// Event names socket.io-client keeps for itself, and herald's notices: a
/// publication under one of them would run the application's handlers for
/// those (a client publish could fake a `disconnect`), so it is not delivered
/// to Socket.IO clients.
pub(super) fn reserved(event: &str) -> bool {
    matches!(
        event,
        "connect"
            | "connect_error"
            | "disconnect"
            | "disconnecting"
            | "newListener"
            | "removeListener"
    ) || event.starts_with("herald:")
}

/// Appends the frames of `delivery` for `parser` to `out`, sharing them
/// with every other recipient of that parser; `false` when it is not
/// delivered to Socket.IO clients.
pub(super) fn delivery(parser: Parser, delivery: &Delivery, out: &mut Vec<Frame>) -> bool {
    match parser {
        Parser::Json => {
            let Some(event) = delivery.encoded(&JSON) else {
                return false;
            };
            out.push(Frame::Text(event.text.clone()));
            out.extend(event.attachment.clone().map(Frame::Binary));
        }
        Parser::MsgPack => {
            let Some(bytes) = delivery.encoded(&MSGPACK) else {
                return false;
            };
            out.push(Frame::Binary(bytes.clone()));
        }
    }
    true
}

/// Direct writes' framing of default-parser deliveries: one text frame; an
/// event with a binary attachment (two frames) is left for the task.
pub(super) fn json_frame(delivery: &Delivery) -> Framed<'_> {
    match delivery.encoded(&JSON) {
        Some(event) if event.attachment.is_some() => Framed::Task,
        Some(event) => Framed::Frame(0x1, &event.raw),
        None => skipped(delivery),
    }
}

/// Direct writes' framing of MessagePack-parser deliveries: binary frames.
pub(super) fn msgpack_frame(delivery: &Delivery) -> Framed<'_> {
    match delivery.encoded(&MSGPACK) {
        Some(bytes) => Framed::Frame(0x2, bytes),
        None => skipped(delivery),
    }
}

/// Counts a delivery that cannot be sent, as the task's path does.
fn skipped(delivery: &Delivery) -> Framed<'_> {
    metrics::counter!(crate::metrics::MESSAGES_DROPPED, "reason" => drop_reason(delivery))
        .increment(1);
    Framed::Skip
}

/// Why a delivery that could not be encoded was dropped.
pub(super) fn drop_reason(delivery: &Delivery) -> &'static str {
    match delivery.payload() {
        Payload::Publication(p) if reserved(p.event.as_str()) => {
            crate::metrics::DROP_RESERVED_EVENT
        }
        _ => crate::metrics::DROP_ENCODE_ERROR,
    }
}

/// As [`delivery`], for a socket with connection state recovery: a
/// publication gets `offset` as its last argument (socket.io-client keeps
/// the last argument of each event that is a string). The shared encoding
/// is spliced for the default parser; msgpack packets are encoded again.
pub(super) fn delivery_with_offset(
    parser: Parser,
    delivery: &Delivery,
    offset: &str,
    out: &mut Vec<Frame>,
) -> bool {
    let Payload::Publication(p) = delivery.payload() else {
        return self::delivery(parser, delivery, out);
    };
    match parser {
        Parser::Json => {
            let Some(event) = delivery.encoded(&JSON) else {
                return false;
            };
            let Some(open) = event.text.as_str().strip_suffix(']') else {
                return false;
            };
            // The offset is made of characters JSON needs no escape for.
            let text = format!("{open},\"{offset}\"]");
            out.push(Frame::Text(Utf8Bytes::from(text)));
            out.extend(event.attachment.clone().map(Frame::Binary));
            true
        }
        Parser::MsgPack => {
            if reserved(p.event.as_str()) {
                return false;
            }
            let args = (&p.event, &p.data, meta(p), offset);
            match parser.event(&args) {
                Ok(frame) => {
                    out.push(frame);
                    true
                }
                Err(err) => {
                    tracing::error!(%err, "encoding a Socket.IO delivery failed");
                    false
                }
            }
        }
    }
}

/// The `herald:offset` event: no data, only the offset, so that the
/// client's offset follows a change of subscriptions (a subscribe is
/// answered by an ack, whose arguments socket.io-client does not keep).
pub(super) fn offset_event(parser: Parser, offset: &str) -> Option<Frame> {
    parser
        .event(&("herald:offset", offset))
        .map_err(|err| tracing::error!(%err, "encoding a Socket.IO event failed"))
        .ok()
}

fn meta(p: &Publication) -> Meta<'_> {
    Meta {
        channel: &p.channel,
        ts: p.ts,
        offset: p.position.as_ref().map(|position| position.offset),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{EventName, JsonData, Publication};

    fn publication(event: &str) -> Delivery {
        Delivery::publication(Publication {
            channel: ChannelName::parse("prices", 128).unwrap(),
            event: EventName::parse(event).unwrap(),
            data: JsonData::from_json(r#"{"p":1}"#).unwrap(),
            ts: Some(5),
            position: None,
            history: None,
        })
    }

    #[test]
    fn a_publication_is_one_event_encoded_once_per_parser() {
        let delivery = publication("price_update");
        let first: *const JsonEvent = delivery.encoded(&JSON).unwrap();
        let second: *const JsonEvent = delivery.encoded(&JSON).unwrap();
        assert_eq!(first, second, "every recipient shares the first encoding");
        assert_eq!(
            delivery.encoded(&JSON).unwrap().text.as_str(),
            r#"42["price_update",{"p":1},{"channel":"prices","ts":5}]"#
        );
        let packed = delivery.encoded(&MSGPACK).unwrap();
        let value: serde_json::Value = rmp_serde::from_slice(packed).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"type": 2, "nsp": "/", "data": ["price_update", {"p": 1}, {"channel": "prices", "ts": 5}]})
        );
    }

    #[test]
    fn a_history_channel_publication_carries_its_offset_in_meta() {
        let mut p = match publication("price_update").payload() {
            Payload::Publication(p) => p.clone(),
            other => panic!("{other:?}"),
        };
        p.position = Some(crate::protocol::StreamPosition {
            offset: 42,
            epoch: "e1".into(),
        });
        let delivery = Delivery::publication(p);
        assert_eq!(
            delivery.encoded(&JSON).unwrap().text.as_str(),
            r#"42["price_update",{"p":1},{"channel":"prices","ts":5,"offset":42}]"#
        );
    }

    #[test]
    fn with_recovery_the_offset_is_the_last_argument() {
        let delivery = publication("price_update");
        let mut frames = Vec::new();
        assert!(delivery_with_offset(
            Parser::Json,
            &delivery,
            "1~prices*e*5",
            &mut frames
        ));
        assert_eq!(
            frames,
            vec![Frame::Text(Utf8Bytes::from_static(
                r#"42["price_update",{"p":1},{"channel":"prices","ts":5},"1~prices*e*5"]"#
            ))]
        );
        frames.clear();
        assert!(delivery_with_offset(
            Parser::MsgPack,
            &delivery,
            "1",
            &mut frames
        ));
        let [Frame::Binary(packed)] = &frames[..] else {
            panic!("one binary frame");
        };
        let value: serde_json::Value = rmp_serde::from_slice(packed).unwrap();
        assert_eq!(value["data"][3], "1");
        assert!(!delivery_with_offset(
            Parser::MsgPack,
            &publication("connect"),
            "1",
            &mut frames
        ));
    }

    #[test]
    fn notices_are_herald_events_and_reserved_names_are_not_delivered() {
        let gap = Delivery::new(Payload::Gap {
            channel: ChannelName::parse("prices", 128).unwrap(),
            missed: None,
        });
        assert_eq!(
            gap.encoded(&JSON).unwrap().text.as_str(),
            r#"42["herald:gap",{"channel":"prices"}]"#
        );
        let expiring = Delivery::new(Payload::TokenExpiring { expires_in_ms: 900 });
        assert_eq!(
            expiring.encoded(&JSON).unwrap().text.as_str(),
            r#"42["herald:token_expiring",{"expires_in_ms":900}]"#
        );
        for event in ["connect", "disconnect", "herald:disconnect"] {
            assert!(publication(event).encoded(&JSON).is_none(), "{event}");
        }
    }

    #[test]
    fn binary_data_is_an_attachment_for_the_default_parser_and_bin_for_msgpack() {
        let delivery = Delivery::publication(Publication {
            channel: ChannelName::parse("files", 128).unwrap(),
            event: EventName::parse("blob").unwrap(),
            data: JsonData::binary(Bytes::from_static(&[0, 255, 1])),
            ts: None,
            position: None,
            history: None,
        });
        let mut frames = Vec::new();
        assert!(super::delivery(Parser::Json, &delivery, &mut frames));
        assert_eq!(
            frames,
            vec![
                Frame::Text(Utf8Bytes::from_static(
                    r#"451-["blob",{"_placeholder":true,"num":0},{"channel":"files"}]"#
                )),
                Frame::Binary(Bytes::from_static(&[0, 255, 1])),
            ]
        );
        frames.clear();
        assert!(super::delivery(Parser::MsgPack, &delivery, &mut frames));
        let [Frame::Binary(packed)] = &frames[..] else {
            panic!("one binary frame");
        };
        // The data is a MessagePack bin (0xc4, length 3).
        assert!(packed.windows(5).any(|w| w == [0xc4, 3, 0, 255, 1]));
    }
}
