//! What herald emits to Socket.IO clients: deliveries as events, encoded
//! once per parser for every recipient through the core's [`WireFormat`]
//! cache.

use bytes::Bytes;
use serde::Serialize;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::{engine::Frame, packet::Parser};
use crate::{
    core::{Delivery, Payload, WireFormat, slots},
    protocol::ChannelName,
};

/// Default-parser deliveries: the whole `42[...]` text, validated once.
static JSON: WireFormat<Utf8Bytes> = WireFormat::new(slots::SOCKETIO_JSON, |payload| {
    match encode_delivery(Parser::Json, payload)? {
        Frame::Text(text) => Some(text),
        Frame::Binary(_) => None,
    }
});

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
        Payload::Publication(p) => parser.event(&(
            &p.event,
            &p.data,
            Meta {
                channel: &p.channel,
                ts: p.ts,
            },
        )),
        Payload::Gap { channel } => parser.event(&("herald:gap", Gap { channel })),
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

/// The frame of `delivery` for `parser`, shared with every other recipient
/// of that parser; `None` when it is not delivered to Socket.IO clients.
pub(super) fn delivery(parser: Parser, delivery: &Delivery) -> Option<Frame> {
    match parser {
        Parser::Json => delivery.encoded(&JSON).cloned().map(Frame::Text),
        Parser::MsgPack => delivery.encoded(&MSGPACK).cloned().map(Frame::Binary),
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
        })
    }

    #[test]
    fn a_publication_is_one_event_encoded_once_per_parser() {
        let delivery = publication("price_update");
        let first: *const Utf8Bytes = delivery.encoded(&JSON).unwrap();
        let second: *const Utf8Bytes = delivery.encoded(&JSON).unwrap();
        assert_eq!(first, second, "every recipient shares the first encoding");
        assert_eq!(
            delivery.encoded(&JSON).unwrap().as_str(),
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
    fn notices_are_herald_events_and_reserved_names_are_not_delivered() {
        let gap = Delivery::new(Payload::Gap {
            channel: ChannelName::parse("prices", 128).unwrap(),
        });
        assert_eq!(
            gap.encoded(&JSON).unwrap().as_str(),
            r#"42["herald:gap",{"channel":"prices"}]"#
        );
        let expiring = Delivery::new(Payload::TokenExpiring { expires_in_ms: 900 });
        assert_eq!(
            expiring.encoded(&JSON).unwrap().as_str(),
            r#"42["herald:token_expiring",{"expires_in_ms":900}]"#
        );
        for event in ["connect", "disconnect", "herald:disconnect"] {
            assert!(publication(event).encoded(&JSON).is_none(), "{event}");
        }
    }
}
