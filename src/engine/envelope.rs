//! The JSON envelope publications travel in between nodes (and from outside
//! publishers): `{"event": "...", "data": <any JSON>, "ts": <ms>}`.
//!
//! A payload that is not an envelope is delivered whole, as the `data` of
//! the configured default event, so that a plain `PUBLISH herald:prices.btc 42`
//! works: JSON as itself, other UTF-8 text as a JSON string, bytes that are
//! not UTF-8 as binary data. `{"control": "disconnect"}` closes the channel's
//! subscribers. Data that not every wire format can carry is refused, as the
//! HTTP API refuses it (docs/REDIS.md).
//!
//! A publication on a channel with history also carries its stream position:
//! `"offset": <u64>, "epoch": "<text>"`, which the Redis engine's publish
//! script appends (see [`encode_open`]).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::Kick;
use crate::protocol::{
    ChannelName, CheckedData, DataError, EventName, JsonData, Publication, StreamPosition,
};

#[derive(Serialize)]
struct Outgoing<'a> {
    event: &'a EventName,
    data: &'a JsonData,
    #[serde(skip_serializing_if = "Option::is_none")]
    ts: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    epoch: Option<&'a str>,
}

#[derive(Deserialize)]
struct Incoming {
    event: Option<String>,
    data: Option<CheckedData>,
    ts: Option<u64>,
    control: Option<String>,
    offset: Option<u64>,
    epoch: Option<String>,
}

/// What a payload asks the node to do.
#[derive(Debug, PartialEq)]
pub enum Decoded {
    /// Deliver a publication.
    Publish(Publication),
    /// Close the channel's local subscribers.
    Disconnect(Kick),
    /// Drop a publication whose data not every wire format can carry.
    Refused(DataError),
}

/// The envelope for `publication` (JSON text; channel travels separately).
///
/// Binary data (which only outside publishers make, and herald never
/// republishes) would travel as its JSON form, `{"$binary": "<base64>"}`.
pub fn encode(publication: &Publication) -> Vec<u8> {
    let outgoing = Outgoing {
        event: &publication.event,
        data: &publication.data,
        ts: publication.ts,
        offset: publication.position.as_ref().map(|p| p.offset),
        epoch: publication.position.as_ref().map(|p| p.epoch.as_str()),
    };
    // Serializing names and already-valid JSON into a Vec cannot fail.
    serde_json::to_vec(&outgoing).unwrap_or_default()
}

/// The envelope for `publication` without its closing `}`: the Redis
/// publish script completes it with `,"offset":<n>,"epoch":"<e>"}` once it
/// knows the offset (epochs are alphanumeric, so need no escaping).
pub fn encode_open(publication: &Publication) -> Vec<u8> {
    let mut open = encode(publication);
    // An object always ends in `}`.
    open.pop();
    open
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
    let Ok(text) = std::str::from_utf8(payload) else {
        // Not text, so neither an envelope nor JSON: deliver the bytes as they are.
        let data = JsonData::binary(Bytes::copy_from_slice(payload));
        return publish(channel, default_event.clone(), data, None);
    };
    if let Ok(envelope) = serde_json::from_str::<Incoming>(text) {
        match envelope.control.as_deref() {
            Some("disconnect") => return Decoded::Disconnect(Kick::User),
            Some("revoke") => return Decoded::Disconnect(Kick::Revoked),
            _ => {}
        }
        if let (Some(event), Some(CheckedData(data))) = (envelope.event, envelope.data)
            && let Ok(event) = EventName::parse(&event)
        {
            let position = match (envelope.offset, envelope.epoch) {
                (Some(offset), Some(epoch)) => Some(StreamPosition { offset, epoch }),
                _ => None,
            };
            return match data {
                Ok(data) => Decoded::Publish(Publication {
                    channel,
                    event,
                    data,
                    ts: envelope.ts,
                    position,
                    history: None,
                }),
                Err(err) => Decoded::Refused(err),
            };
        }
    }
    match raw_data(text) {
        Ok(data) => publish(channel, default_event.clone(), data, None),
        Err(err) => Decoded::Refused(err),
    }
}

fn publish(channel: ChannelName, event: EventName, data: JsonData, ts: Option<u64>) -> Decoded {
    Decoded::Publish(Publication {
        channel,
        event,
        data,
        ts,
        position: None,
        history: None,
    })
}

/// A raw text payload as data: itself if it is JSON, else a JSON string of it.
fn raw_data(text: &str) -> Result<JsonData, DataError> {
    match JsonData::from_json(text.trim()) {
        Err(DataError::Syntax(_)) => Ok(JsonData::string(text)),
        other => other,
    }
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
            other => panic!("expected a publication, got {other:?}"),
        }
    }

    #[test]
    fn envelopes_round_trip() {
        let original = Publication {
            channel: ch(),
            event: EventName::parse("price_update").unwrap(),
            data: JsonData::from_json(r#"{"p":1}"#).unwrap(),
            ts: Some(7),
            position: None,
            history: None,
        };
        assert_eq!(
            publication(decode(ch(), &encode(&original), &message())),
            original
        );
    }

    #[test]
    fn positions_travel_and_the_open_envelope_completes() {
        let mut original = Publication {
            channel: ch(),
            event: EventName::parse("e").unwrap(),
            data: JsonData::from_json("1").unwrap(),
            ts: None,
            position: Some(StreamPosition {
                offset: 9,
                epoch: "abc".into(),
            }),
            history: None,
        };
        assert_eq!(
            publication(decode(ch(), &encode(&original), &message())),
            original
        );
        let position = original.position.take().unwrap();
        let mut completed = encode_open(&original);
        completed.extend_from_slice(br#","offset":9,"epoch":"abc"}"#);
        let decoded = publication(decode(ch(), &completed, &message()));
        assert_eq!(decoded.position, Some(position));
    }

    #[test]
    fn raw_payloads_become_data_of_the_default_event() {
        let p = publication(decode(ch(), b"64000.5", &message()));
        assert_eq!(
            (p.event.as_str(), p.data.as_json()),
            ("message", Some("64000.5"))
        );
        let p = publication(decode(ch(), br#"{"price": 1}"#, &message()));
        assert_eq!(p.data.as_json(), Some(r#"{"price": 1}"#));
        let p = publication(decode(ch(), b"not json", &message()));
        assert_eq!(p.data.as_json(), Some(r#""not json""#));
        assert_eq!(
            decode(ch(), control(Kick::User), &message()),
            Decoded::Disconnect(Kick::User)
        );
        assert_eq!(
            decode(ch(), control(Kick::Revoked), &message()),
            Decoded::Disconnect(Kick::Revoked)
        );
    }

    #[test]
    fn bytes_that_are_not_utf8_are_delivered_as_binary() {
        let payload = [0xff, 0xfe, 0x00, 0x41];
        let p = publication(decode(ch(), &payload, &message()));
        assert_eq!(p.event.as_str(), "message");
        assert_eq!(p.data.as_binary().map(|b| &b[..]), Some(&payload[..]));
    }

    #[test]
    fn data_that_not_every_format_carries_is_refused() {
        let deep = format!("{}1{}", "[".repeat(65), "]".repeat(65));
        let envelope = format!(r#"{{"event":"e","data":{deep}}}"#);
        for payload in [
            deep.as_str(),
            &envelope,
            "1e400",
            r#"{"event":"e","data":-1e400}"#,
        ] {
            assert!(
                matches!(
                    decode(ch(), payload.as_bytes(), &message()),
                    Decoded::Refused(_)
                ),
                "{payload}"
            );
        }
    }
}
