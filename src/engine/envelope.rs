//! The JSON envelope publications travel in between nodes (and from outside
//! publishers): `{"event": "...", "data": <any JSON>, "ts": <ms>}`.
//!
//! A payload that is not an envelope is delivered whole, as the `data` of
//! the configured default event, so that a plain `PUBLISH herald:prices.btc 42`
//! works. `{"control": "disconnect"}` closes the channel's subscribers.

use serde::{Deserialize, Serialize};

use super::Kick;
use crate::protocol::{ChannelName, EventName, JsonData, Publication};

#[derive(Serialize)]
struct Outgoing<'a> {
    event: &'a EventName,
    data: &'a JsonData,
    #[serde(skip_serializing_if = "Option::is_none")]
    ts: Option<u64>,
}

#[derive(Deserialize)]
struct Incoming {
    event: Option<String>,
    data: Option<JsonData>,
    ts: Option<u64>,
    control: Option<String>,
}

/// What a payload asks the node to do.
#[derive(Debug, PartialEq)]
pub enum Decoded {
    /// Deliver a publication.
    Publish(Publication),
    /// Close the channel's local subscribers.
    Disconnect(Kick),
}

/// The envelope for `publication` (JSON text; channel travels separately).
pub fn encode(publication: &Publication) -> Vec<u8> {
    let outgoing = Outgoing {
        event: &publication.event,
        data: &publication.data,
        ts: publication.ts,
    };
    // Serializing names and already-valid JSON into a Vec cannot fail.
    serde_json::to_vec(&outgoing).unwrap_or_default()
}

/// The control payload that closes a channel's subscribers on every node.
pub fn control(kick: Kick) -> &'static [u8] {
    match kick {
        Kick::User => br#"{"control":"disconnect"}"#,
        Kick::Revoked => br#"{"control":"revoke"}"#,
    }
}

/// Reads a payload received on `channel`.
pub fn decode(channel: ChannelName, payload: &[u8], default_event: &EventName) -> Decoded {
    if let Ok(envelope) = serde_json::from_slice::<Incoming>(payload) {
        match envelope.control.as_deref() {
            Some("disconnect") => return Decoded::Disconnect(Kick::User),
            Some("revoke") => return Decoded::Disconnect(Kick::Revoked),
            _ => {}
        }
        if let (Some(event), Some(data)) = (envelope.event, envelope.data)
            && let Ok(event) = EventName::parse(&event)
        {
            return Decoded::Publish(Publication {
                channel,
                event,
                data,
                ts: envelope.ts,
            });
        }
    }
    Decoded::Publish(Publication {
        channel,
        event: default_event.clone(),
        data: raw_data(payload),
        ts: None,
    })
}

/// A raw payload as data: itself if it is JSON, else a JSON string of its text.
fn raw_data(payload: &[u8]) -> JsonData {
    std::str::from_utf8(payload)
        .ok()
        .and_then(|text| JsonData::from_json(text.trim()).ok())
        .unwrap_or_else(|| JsonData::string(&String::from_utf8_lossy(payload)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch() -> ChannelName {
        ChannelName::parse("prices.btc", 128).unwrap()
    }

    fn message() -> EventName {
        EventName::parse("message").unwrap()
    }

    fn publication(decoded: Decoded) -> Publication {
        match decoded {
            Decoded::Publish(p) => p,
            Decoded::Disconnect(_) => panic!("expected a publication"),
        }
    }

    #[test]
    fn envelopes_round_trip() {
        let original = Publication {
            channel: ch(),
            event: EventName::parse("price_update").unwrap(),
            data: JsonData::from_json(r#"{"p":1}"#).unwrap(),
            ts: Some(7),
        };
        assert_eq!(
            publication(decode(ch(), &encode(&original), &message())),
            original
        );
    }

    #[test]
    fn raw_payloads_become_data_of_the_default_event() {
        let p = publication(decode(ch(), b"64000.5", &message()));
        assert_eq!((p.event.as_str(), p.data.as_json()), ("message", "64000.5"));
        let p = publication(decode(ch(), br#"{"price": 1}"#, &message()));
        assert_eq!(p.data.as_json(), r#"{"price": 1}"#);
        let p = publication(decode(ch(), b"not json", &message()));
        assert_eq!(p.data.as_json(), r#""not json""#);
        let p = publication(decode(ch(), &[0xff, 0x41], &message()));
        assert_eq!(p.data.as_json(), "\"\u{fffd}A\"");
        assert_eq!(
            decode(ch(), control(Kick::User), &message()),
            Decoded::Disconnect(Kick::User)
        );
        assert_eq!(
            decode(ch(), control(Kick::Revoked), &message()),
            Decoded::Disconnect(Kick::Revoked)
        );
    }
}
