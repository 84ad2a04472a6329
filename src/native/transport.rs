//! The native protocol's [`Transport`]: WebSocket frames carrying protocol v1
//! messages, JSON in text frames or MessagePack in binary frames.
//!
//! Generic over the byte stream, so the whole connection lifecycle runs over
//! an in-memory pipe in tests, with paused time, exactly as over TCP.

use std::{sync::Arc, time::Duration};

use crate::net::wire::{Framed, Wire, WireIo};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    time::timeout,
};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        Message, Utf8Bytes,
        protocol::{CloseFrame, frame::coding::CloseCode},
    },
};

use crate::{
    core::{
        Delivery, DirectWrite, DisconnectReason, Ended, Inbound, Payload, Reply, Request,
        Transport, WireFormat, slots,
    },
    protocol::{
        ClientMessage, DecodeError, Format, HistoryEntry, HistoryQuery, PROTOCOL_VERSION, PushRef,
        ServerMessage, decode, encode,
    },
};

/// How long a closing handshake may take before the socket is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// A JSON delivery's encoding: validated UTF-8 once per delivery, kept both
/// as a text frame's payload and as the raw bytes direct writes send.
#[derive(Debug)]
struct JsonFrame {
    text: Utf8Bytes,
    raw: Bytes,
}

/// JSON text frames.
static JSON: WireFormat<JsonFrame> = WireFormat::new(slots::NATIVE_JSON, |payload| {
    let raw = encode_payload(payload, Format::Json)?;
    let text = Utf8Bytes::try_from(raw.clone()).ok()?;
    Some(JsonFrame { text, raw })
});

/// MessagePack binary frames.
static MSGPACK: WireFormat<Bytes> = WireFormat::new(slots::NATIVE_MSGPACK, |payload| {
    encode_payload(payload, Format::MsgPack)
});

/// The WebSocket opcodes of JSON (text) and MessagePack (binary) frames.
const OPCODE_TEXT: u8 = 0x1;
const OPCODE_BINARY: u8 = 0x2;

/// Direct writes' framing of JSON deliveries: text frames.
pub(super) fn json_frame(delivery: &Delivery) -> Framed<'_> {
    framed(OPCODE_TEXT, delivery.encoded(&JSON).map(|frame| &frame.raw))
}

/// Direct writes' framing of MessagePack deliveries: binary frames.
pub(super) fn msgpack_frame(delivery: &Delivery) -> Framed<'_> {
    framed(OPCODE_BINARY, delivery.encoded(&MSGPACK))
}

/// A delivery encoded once for all its recipients, or skipped (counted as
/// dropped) if it cannot be encoded.
fn framed(opcode: u8, bytes: Option<&Bytes>) -> Framed<'_> {
    match bytes {
        Some(bytes) => Framed::Frame(opcode, bytes),
        None => {
            metrics::counter!(crate::metrics::MESSAGES_DROPPED, "reason" => crate::metrics::DROP_ENCODE_ERROR).increment(1);
            Framed::Skip
        }
    }
}

fn encode_payload(payload: &Payload, format: Format) -> Option<Bytes> {
    let encoded = match payload {
        Payload::Publication(p) => encode(&PushRef::from(p), format),
        Payload::Gap { channel, missed } => encode(
            &ServerMessage::Gap {
                channel: channel.clone(),
                from: missed.as_ref().map(|m| m.from),
                to: missed.as_ref().map(|m| m.to),
                epoch: missed.as_ref().map(|m| m.epoch.clone()),
            },
            format,
        ),
        Payload::TokenExpiring { expires_in_ms } => encode(
            &ServerMessage::TokenExpiring {
                expires_in_ms: *expires_in_ms,
            },
            format,
        ),
    };
    match encoded {
        Ok(bytes) => Some(bytes),
        Err(err) => {
            tracing::error!(%err, ?format, "encoding a delivery failed");
            None
        }
    }
}

/// One WebSocket speaking protocol v1 in one format.
#[derive(Debug)]
pub struct NativeTransport<S> {
    ws: WebSocketStream<S>,
    format: Format,
    /// The socket itself, for direct writes (over TCP only).
    direct: Option<Arc<Wire>>,
}

impl<S> NativeTransport<S> {
    /// Wraps an upgraded WebSocket whose frames use `format`.
    pub fn new(ws: WebSocketStream<S>, format: Format) -> Self {
        Self {
            ws,
            format,
            direct: None,
        }
    }
}

impl NativeTransport<WireIo> {
    /// Wraps a WebSocket over a TCP socket that deliveries may also be
    /// written to directly (see [`Wire`]).
    pub(crate) fn over_wire(ws: WebSocketStream<WireIo>, format: Format, wire: Arc<Wire>) -> Self {
        Self {
            ws,
            format,
            direct: Some(wire),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> NativeTransport<S> {
    fn frame(&self, bytes: Bytes) -> Result<Message, Ended> {
        match self.format {
            Format::MsgPack => Ok(Message::Binary(bytes)),
            // Replies are rare and small: checking their UTF-8 costs nothing
            // worth avoiding. Deliveries never get here (see `deliver`).
            Format::Json => Utf8Bytes::try_from(bytes)
                .map(Message::Text)
                .map_err(|_| Ended::Closed(DisconnectReason::Internal)),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Transport for NativeTransport<S> {
    /// # Cancel safety
    /// Cancel safe: the WebSocket keeps partial frames in its own buffer.
    async fn recv(&mut self) -> Result<Inbound, Ended> {
        let frame = match self.ws.next().await {
            None => return Err(Ended::Gone),
            Some(Err(err)) => return Err(crate::net::websocket::ended_by(err)),
            Some(Ok(frame)) => frame,
        };
        Ok(match frame {
            Message::Text(text) => inbound(decode(text.as_bytes(), Format::Json)),
            Message::Binary(bytes) => inbound(decode(&bytes, Format::MsgPack)),
            // Pings are answered by the WebSocket layer; any frame proves liveness.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => Inbound::Control,
            Message::Close(_) => {
                // The WebSocket layer queued the answering close frame; send it,
                // so the client sees a clean close instead of 1006.
                // Boxed: rare, and a timer inline would cost every idle
                // connection's future its size.
                let _ = Box::pin(timeout(CLOSE_TIMEOUT, self.ws.flush())).await;
                return Err(Ended::Gone);
            }
        })
    }

    async fn reply(&mut self, reply: Reply<'_>) -> Result<(), Ended> {
        let encoded = match reply {
            Reply::Welcome(w) => encode(
                &ServerMessage::Welcome {
                    id: w.id,
                    conn_id: w.conn_id.clone(),
                    user_id: w.user_id.clone(),
                    node_id: w.node_id.clone(),
                    heartbeat_ms: w.heartbeat_ms,
                    protocol: PROTOCOL_VERSION,
                    channels: w.channels.clone(),
                },
                self.format,
            ),
            Reply::Ok { id } => encode(&ServerMessage::Ok { id }, self.format),
            Reply::Subscribed {
                id,
                position,
                recovered,
            } => encode(
                &ServerMessage::Subscribed {
                    id,
                    position: position.clone(),
                    recovered,
                },
                self.format,
            ),
            Reply::History {
                id,
                publications,
                position,
            } => encode(
                &ServerMessage::History {
                    id,
                    publications: publications.iter().map(HistoryEntry::from).collect(),
                    position: position.clone(),
                },
                self.format,
            ),
            Reply::Pong { id } => encode(&ServerMessage::Pong { id }, self.format),
            Reply::Error { id, code, reason } => encode(
                &ServerMessage::Error {
                    id,
                    code: code.as_u16(),
                    reason: reason.to_owned(),
                },
                self.format,
            ),
        };
        let bytes = encoded.map_err(|err| {
            tracing::error!(%err, "encoding a reply failed");
            Ended::Closed(DisconnectReason::Internal)
        })?;
        if let Some(wire) = &self.direct {
            // Past tungstenite's buffer (see `Wire::write_frame`), after
            // whatever it still holds (a pong it queued, say).
            self.ws.flush().await.map_err(|_| Ended::Gone)?;
            let opcode = match self.format {
                Format::Json => OPCODE_TEXT,
                Format::MsgPack => OPCODE_BINARY,
            };
            return wire
                .write_frame(opcode, bytes)
                .await
                .map_err(|_| Ended::Gone);
        }
        let frame = self.frame(bytes)?;
        self.ws.send(frame).await.map_err(|_| Ended::Gone)
    }

    /// The fan-out path: no allocation and no per-recipient check here; the
    /// frames share the bytes every recipient of the format shares, and one
    /// flush sends them all.
    async fn deliver(&mut self, batch: &[Arc<Delivery>], ping: bool) -> Result<(), Ended> {
        for delivery in batch {
            let frame = match self.format {
                Format::Json => delivery
                    .encoded(&JSON)
                    .map(|frame| Message::Text(frame.text.clone())),
                Format::MsgPack => delivery.encoded(&MSGPACK).cloned().map(Message::Binary),
            };
            let Some(frame) = frame else {
                metrics::counter!(crate::metrics::MESSAGES_DROPPED, "reason" => crate::metrics::DROP_ENCODE_ERROR).increment(1);
                continue;
            };
            self.ws.feed(frame).await.map_err(|_| Ended::Gone)?;
        }
        if ping {
            self.ws
                .feed(Message::Ping(Bytes::new()))
                .await
                .map_err(|_| Ended::Gone)?;
        }
        self.ws.flush().await.map_err(|_| Ended::Gone)
    }

    /// Sends a close frame and waits (at most `CLOSE_TIMEOUT`) for the
    /// client's answering close frame before the socket is dropped.
    ///
    /// Dropping right away would make the kernel answer the client's next
    /// write (a pong, say) with a reset, and a reset discards what the client
    /// has not read yet, the close frame with its code included.
    async fn close(&mut self, reason: &DisconnectReason) {
        let frame = CloseFrame {
            code: CloseCode::from(reason.close_code().as_u16()),
            reason: Utf8Bytes::from(reason.reason().into_owned()),
        };
        let handshake = async {
            if self.ws.send(Message::Close(Some(frame))).await.is_err() {
                return;
            }
            while let Some(Ok(frame)) = self.ws.next().await {
                if matches!(frame, Message::Close(_)) {
                    break;
                }
            }
        };
        let _ = timeout(CLOSE_TIMEOUT, handshake).await;
    }

    fn direct(&self) -> Option<Arc<dyn DirectWrite>> {
        self.direct
            .as_ref()
            .map(|wire| Arc::clone(wire) as Arc<dyn DirectWrite>)
    }
}

/// A decoded protocol v1 message as the core's request.
fn inbound(decoded: Result<ClientMessage, DecodeError>) -> Inbound {
    let (id, request) = match decoded {
        Err(err) => {
            return Inbound::Invalid {
                id: err.id,
                code: err.code,
                reason: err.reason,
            };
        }
        Ok(ClientMessage::Auth { id, token }) => (id, Request::Auth { token }),
        Ok(ClientMessage::Subscribe {
            id,
            channel,
            since,
            latest,
        }) => (
            id,
            Request::Subscribe {
                channel,
                since,
                latest,
            },
        ),
        Ok(ClientMessage::History {
            id,
            channel,
            since,
            limit,
            reverse,
        }) => (
            id,
            Request::History {
                channel,
                query: HistoryQuery {
                    since,
                    limit,
                    reverse,
                },
            },
        ),
        Ok(ClientMessage::Unsubscribe { id, channel }) => (id, Request::Unsubscribe { channel }),
        Ok(ClientMessage::Publish {
            id,
            channel,
            event,
            data,
        }) => (
            id,
            Request::Publish {
                channel,
                event,
                data,
            },
        ),
        Ok(ClientMessage::Refresh { id, token }) => (id, Request::Refresh { token }),
        Ok(ClientMessage::Ping { id }) => (id, Request::Ping),
    };
    Inbound::Request { id, request }
}
