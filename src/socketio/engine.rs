//! Engine.IO v4 packets: the framing under Socket.IO.
//!
//! A packet is a type digit and its data. Over WebSocket each frame holds one
//! packet (a binary frame is a binary `message`); over HTTP long-polling a
//! body holds packets separated by `\x1e`, binary ones as `b` + base64.

use base64::{Engine as _, engine::general_purpose::STANDARD};
use bytes::Bytes;
use serde::Serialize;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// The Engine.IO protocol version this module speaks (`EIO=4`).
pub(crate) const PROTOCOL: &str = "4";
/// Separates packets in a long-polling body.
const SEPARATOR: u8 = 0x1e;

/// A packet read from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Incoming {
    /// `1`: the client closes the session.
    Close,
    /// `2`: a ping (with `probe` during an upgrade).
    Ping(String),
    /// `3`: the answer to the server's ping.
    Pong,
    /// `4`: a message, text or binary.
    Message(Data),
    /// `5`: the client switches to the probed WebSocket.
    Upgrade,
    /// `6`: nothing.
    Noop,
}

/// A message's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Data {
    /// A text message (its `4` prefix removed).
    Text(String),
    /// A binary message.
    Binary(Bytes),
}

/// One outgoing packet, already encoded, cheap to clone: the unit both
/// links write (a WebSocket frame, or one record of a polling body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame {
    /// A text packet, type digit included (`42[...]`, `2`, `3probe`).
    Text(Utf8Bytes),
    /// A binary message.
    Binary(Bytes),
}

impl Frame {
    /// The ping packet.
    pub(crate) fn ping() -> Self {
        Self::Text(Utf8Bytes::from_static("2"))
    }

    /// The pong packet.
    pub(crate) fn pong() -> Self {
        Self::Text(Utf8Bytes::from_static("3"))
    }

    /// The close packet.
    pub(crate) fn close() -> Self {
        Self::Text(Utf8Bytes::from_static("1"))
    }

    /// The noop packet: ends a long-poll with nothing to say.
    pub(crate) fn noop() -> Self {
        Self::Text(Utf8Bytes::from_static("6"))
    }

    /// Bytes this frame takes in a buffer, for the byte cap.
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Text(text) => text.len(),
            Self::Binary(bytes) => bytes.len(),
        }
    }
}

/// The handshake, sent as the `open` packet.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Open<'a> {
    /// The session id.
    pub(crate) sid: &'a str,
    /// Transports the client may upgrade to.
    pub(crate) upgrades: &'a [&'a str],
    /// Milliseconds between server pings.
    pub(crate) ping_interval: u64,
    /// Milliseconds the client waits past the interval for a ping.
    pub(crate) ping_timeout: u64,
    /// Largest body or frame the server reads, bytes.
    pub(crate) max_payload: usize,
}

impl Open<'_> {
    /// The `open` packet: `0{...}`.
    pub(crate) fn frame(&self) -> Frame {
        // Serializing a struct of numbers and strings cannot fail.
        let json = serde_json::to_string(self).unwrap_or_default();
        Frame::Text(Utf8Bytes::from(format!("0{json}")))
    }
}

/// Why a packet or body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum EngineError {
    /// Not a packet of Engine.IO v4.
    #[error("invalid Engine.IO packet: {0}")]
    Packet(&'static str),
}

/// Reads one text packet (a WebSocket text frame or a polling record).
///
/// # Errors
/// [`EngineError`] for an empty packet or an unknown type.
pub(crate) fn decode_text(text: &str) -> Result<Incoming, EngineError> {
    let mut chars = text.chars();
    let kind = chars.next().ok_or(EngineError::Packet("empty packet"))?;
    let rest = chars.as_str();
    Ok(match kind {
        '1' => Incoming::Close,
        '2' => Incoming::Ping(rest.to_owned()),
        '3' => Incoming::Pong,
        '4' => Incoming::Message(Data::Text(rest.to_owned())),
        '5' => Incoming::Upgrade,
        '6' => Incoming::Noop,
        '0' => return Err(EngineError::Packet("clients do not send `open`")),
        _ => return Err(EngineError::Packet("unknown packet type")),
    })
}

/// Reads a long-polling request body: packets separated by `\x1e`.
///
/// # Errors
/// [`EngineError`] for a record that is not UTF-8, bad base64 or a bad packet.
pub(crate) fn decode_payload(body: &[u8]) -> Result<Vec<Incoming>, EngineError> {
    body.split(|b| *b == SEPARATOR)
        .map(|record| match record.split_first() {
            Some((b'b', base64)) => STANDARD
                .decode(base64)
                .map(|bytes| Incoming::Message(Data::Binary(Bytes::from(bytes))))
                .map_err(|_| EngineError::Packet("binary record is not base64")),
            _ => std::str::from_utf8(record)
                .map_err(|_| EngineError::Packet("text record is not UTF-8"))
                .and_then(decode_text),
        })
        .collect()
}

/// Writes frames as one long-polling response body.
pub(crate) fn encode_payload<'a>(frames: impl IntoIterator<Item = &'a Frame>) -> Vec<u8> {
    let mut body = Vec::new();
    for (i, frame) in frames.into_iter().enumerate() {
        if i > 0 {
            body.push(SEPARATOR);
        }
        match frame {
            Frame::Text(text) => body.extend_from_slice(text.as_bytes()),
            Frame::Binary(bytes) => {
                body.push(b'b');
                body.extend_from_slice(STANDARD.encode(bytes).as_bytes());
            }
        }
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_packets_decode_by_type() {
        assert_eq!(
            decode_text("2probe").unwrap(),
            Incoming::Ping("probe".into())
        );
        assert_eq!(decode_text("3").unwrap(), Incoming::Pong);
        assert_eq!(decode_text("5").unwrap(), Incoming::Upgrade);
        assert_eq!(
            decode_text("42[\"a\"]").unwrap(),
            Incoming::Message(Data::Text("2[\"a\"]".into()))
        );
        assert!(decode_text("").is_err());
        assert!(decode_text("0{}").is_err());
        assert!(decode_text("9").is_err());
    }

    #[test]
    fn payloads_round_trip_text_and_binary() {
        let frames = [
            Frame::Text(Utf8Bytes::from_static("4hello")),
            Frame::Binary(Bytes::from_static(&[1, 2, 3, 4])),
            Frame::ping(),
        ];
        let body = encode_payload(&frames);
        assert_eq!(body, b"4hello\x1ebAQIDBA==\x1e2");
        assert_eq!(
            decode_payload(&body).unwrap(),
            vec![
                Incoming::Message(Data::Text("hello".into())),
                Incoming::Message(Data::Binary(Bytes::from_static(&[1, 2, 3, 4]))),
                Incoming::Ping(String::new()),
            ]
        );
        assert!(decode_payload(b"b!!!").is_err());
        assert!(decode_payload(b"4\xff").is_err());
        assert!(decode_payload(b"").is_err());
    }

    #[test]
    fn open_packet_carries_the_handshake() {
        let open = Open {
            sid: "abc",
            upgrades: &["websocket"],
            ping_interval: 25000,
            ping_timeout: 20000,
            max_payload: 65536,
        };
        assert_eq!(
            open.frame(),
            Frame::Text(Utf8Bytes::from(
                r#"0{"sid":"abc","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":65536}"#
            ))
        );
    }
}
