//! The Socket.IO [`Transport`]: Engine.IO packets over long-polling or a
//! WebSocket, Socket.IO packets inside them, turned into the core's requests
//! and back.
//!
//! The mapping (docs/SOCKETIO.md has the table): `CONNECT` is `auth`, the
//! welcome is the `CONNECT` reply, events are requests whose replies become
//! acks, deliveries are events, and a close is a `CONNECT_ERROR` (before the
//! welcome), or a `herald:disconnect` event plus, for codes that must not
//! reconnect, a `DISCONNECT`.

use std::{collections::VecDeque, sync::Arc, time::Duration};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::{
    self, Message, Utf8Bytes,
    protocol::{CloseFrame, frame::coding::CloseCode},
};

use super::{
    Ws,
    engine::{self, Data, Frame, Incoming},
    packet::{Channels, DEFAULT_NSP, Event, Packet, Parser},
    session::{Session, SessionEnds},
};
use crate::{
    core::{
        Delivery, DisconnectReason, Ended, Inbound, Payload, Reply, Request, Transport, Welcome,
        WireFormat, slots,
    },
    protocol::{ChannelName, ErrorCode},
};

/// How long closing may take before the connection is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

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
fn reserved(event: &str) -> bool {
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

/// Where the connection's packets travel.
enum Link {
    /// HTTP long-polling, through the session.
    Polling {
        session: Arc<Session>,
        ends: SessionEnds,
        /// Whether an upgrade may still arrive.
        upgradable: bool,
    },
    /// A WebSocket, from the start or after an upgrade.
    WebSocket(Box<Ws>),
}

/// A `subscribe` or `unsubscribe` of a list: one core request per channel,
/// one merged ack.
struct Batch {
    ack: Option<u64>,
    channels: Vec<String>,
    unsubscribe: bool,
    sent: usize,
    answered: usize,
    failure: Option<(ErrorCode, String, usize)>,
}

/// An ack's argument: `{ok: true}` or `{ok: false, code, reason, channel?}`.
#[derive(Serialize)]
struct AckBody<'a> {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
}

/// One Socket.IO client on the default namespace.
pub(crate) struct SocketIoTransport {
    link: Link,
    parser: Parser,
    /// Frames to write before any other (a polling buffer at an upgrade).
    carry: VecDeque<Frame>,
    /// Packets posted before an upgrade, read before the WebSocket's.
    leftover: VecDeque<Incoming>,
    welcomed: bool,
    /// A `CONNECT` to another namespace, answered by the next error reply.
    bad_nsp: Option<String>,
    batch: Option<Batch>,
    max_batch: usize,
}

impl std::fmt::Debug for SocketIoTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketIoTransport")
            .field("parser", &self.parser)
            .field("welcomed", &self.welcomed)
            .finish_non_exhaustive()
    }
}

impl SocketIoTransport {
    fn new(link: Link, parser: Parser, max_batch: usize) -> Self {
        Self {
            link,
            parser,
            carry: VecDeque::new(),
            leftover: VecDeque::new(),
            welcomed: false,
            bad_nsp: None,
            batch: None,
            max_batch,
        }
    }

    /// A client that polls through `session` (and may upgrade).
    pub(crate) fn polling(session: Arc<Session>, ends: SessionEnds, max_batch: usize) -> Self {
        let parser = session.parser();
        let link = Link::Polling {
            session,
            ends,
            upgradable: true,
        };
        Self::new(link, parser, max_batch)
    }

    /// A client on a WebSocket from the start.
    pub(crate) fn websocket(ws: Box<Ws>, parser: Parser, max_batch: usize) -> Self {
        Self::new(Link::WebSocket(ws), parser, max_batch)
    }

    /// The next Engine.IO packet, from the posts or the WebSocket.
    ///
    /// # Cancel safety
    /// Cancel safe: each await either completes with a packet or loses nothing.
    async fn read(&mut self) -> Result<Incoming, Ended> {
        loop {
            if let Some(packet) = self.leftover.pop_front() {
                return Ok(packet);
            }
            let upgraded = match &mut self.link {
                Link::Polling {
                    session,
                    ends,
                    upgradable,
                } => tokio::select! {
                    packet = ends.inbound.recv() => return packet.ok_or(Ended::Gone),
                    reason = session.ended() => return Err(Ended::Closed(reason)),
                    ws = &mut ends.upgrade, if *upgradable => match ws {
                        Ok(ws) => ws,
                        Err(_) => {
                            *upgradable = false;
                            continue;
                        }
                    },
                },
                Link::WebSocket(_) => {
                    self.flush_carry().await?;
                    return self.read_ws().await;
                }
            };
            self.switch(upgraded);
        }
    }

    /// Moves the connection to the upgraded WebSocket: what was posted is
    /// read first, what was queued for polling is written first.
    fn switch(&mut self, ws: Box<Ws>) {
        if let Link::Polling {
            session, mut ends, ..
        } = std::mem::replace(&mut self.link, Link::WebSocket(ws))
        {
            while let Ok(packet) = ends.inbound.try_recv() {
                self.leftover.push_back(packet);
            }
            self.carry.extend(session.take());
            tracing::debug!("upgraded to WebSocket");
        }
    }

    async fn read_ws(&mut self) -> Result<Incoming, Ended> {
        let Link::WebSocket(ws) = &mut self.link else {
            return Err(Ended::Gone);
        };
        let frame = match ws.next().await {
            None => return Err(Ended::Gone),
            Some(Err(err)) => return Err(classify(err)),
            Some(Ok(frame)) => frame,
        };
        match frame {
            Message::Text(text) => engine::decode_text(&text)
                .map_err(|err| DisconnectReason::ProtocolViolation(err.to_string()).into()),
            Message::Binary(bytes) => Ok(Incoming::Message(Data::Binary(bytes))),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => Ok(Incoming::Noop),
            Message::Close(_) => {
                let _ = timeout(CLOSE_TIMEOUT, ws.flush()).await;
                Err(Ended::Gone)
            }
        }
    }

    /// Writes the frames carried over an upgrade, front first.
    ///
    /// # Cancel safety
    /// A frame leaves `carry` only once the socket took it.
    async fn flush_carry(&mut self) -> Result<(), Ended> {
        let Link::WebSocket(ws) = &mut self.link else {
            return Ok(());
        };
        if self.carry.is_empty() {
            return Ok(());
        }
        while let Some(frame) = self.carry.front() {
            ws.feed(message(frame.clone()))
                .await
                .map_err(|_| Ended::Gone)?;
            self.carry.pop_front();
        }
        ws.flush().await.map_err(|_| Ended::Gone)
    }

    /// Writes frames and flushes once.
    async fn write(&mut self, frames: Vec<Frame>) -> Result<(), Ended> {
        self.flush_carry().await?;
        match &mut self.link {
            Link::Polling { session, .. } => session.push(frames).map_err(Ended::Closed),
            Link::WebSocket(ws) => {
                for frame in frames {
                    ws.feed(message(frame)).await.map_err(|_| Ended::Gone)?;
                }
                ws.flush().await.map_err(|_| Ended::Gone)
            }
        }
    }

    /// The core's view of one Engine.IO packet; `None` reads on.
    fn inbound(&mut self, incoming: Incoming) -> Result<Option<Inbound>, Ended> {
        let decoded = match incoming {
            Incoming::Close => return Err(Ended::Gone),
            Incoming::Ping(_) => {
                return Ok(Some(Inbound::Request {
                    id: None,
                    request: Request::Ping,
                }));
            }
            Incoming::Pong | Incoming::Noop | Incoming::Upgrade => {
                return Ok(Some(Inbound::Control));
            }
            Incoming::Message(data) => match (self.parser, data) {
                (Parser::Json, Data::Text(text)) => Parser::decode_text(&text),
                (Parser::MsgPack, Data::Binary(bytes)) => Parser::decode_binary(&bytes),
                // The attachments of a packet already refused.
                (Parser::Json, Data::Binary(_)) => return Ok(None),
                (Parser::MsgPack, Data::Text(_)) => {
                    return Ok(Some(invalid(
                        None,
                        ErrorCode::BadRequest,
                        "this endpoint speaks socket.io-msgpack-parser: text messages are refused",
                    )));
                }
            },
        };
        let packet = match decoded {
            Ok(packet) => packet,
            Err(err) => {
                return Ok(Some(invalid(
                    err.ack,
                    ErrorCode::BadRequest,
                    &err.to_string(),
                )));
            }
        };
        Ok(match packet {
            Packet::Connect { nsp, token } if nsp == DEFAULT_NSP => Some(Inbound::Request {
                id: None,
                request: Request::Auth { token },
            }),
            Packet::Connect { nsp, .. } => {
                self.bad_nsp = Some(nsp);
                Some(invalid(None, ErrorCode::BadRequest, "Invalid namespace"))
            }
            Packet::Disconnect { nsp } if nsp == DEFAULT_NSP => return Err(Ended::Gone),
            Packet::Disconnect { .. } | Packet::Ack => None,
            Packet::Event { nsp, .. } if nsp != DEFAULT_NSP => None,
            Packet::Attachments { ack } => Some(invalid(
                ack,
                ErrorCode::BadRequest,
                "binary attachments are not supported on this endpoint: send JSON data, \
                 or connect with socket.io-msgpack-parser",
            )),
            Packet::Event { ack, event, .. } => Some(self.event(ack, event)),
        })
    }

    fn event(&mut self, ack: Option<u64>, event: Event) -> Inbound {
        let request = match event {
            Event::Subscribe(channels) => return self.start(ack, channels, false),
            Event::Unsubscribe(channels) => return self.start(ack, channels, true),
            Event::Publish {
                channel,
                event,
                data: Ok(data),
            } => Request::Publish {
                channel,
                event,
                data,
            },
            Event::Publish { data: Err(err), .. } => {
                return invalid(ack, ErrorCode::InvalidData, &err.to_string());
            }
            Event::Refresh(token) => Request::Refresh { token },
            Event::Unknown(name) => {
                let reason = format!(
                    "unknown event `{name}`: herald handles subscribe, unsubscribe, publish and refresh"
                );
                return invalid(ack, ErrorCode::UnknownType, &reason);
            }
        };
        Inbound::Request { id: ack, request }
    }

    /// A (un)subscribe of one channel, or the first of a list's.
    fn start(&mut self, ack: Option<u64>, channels: Channels, unsubscribe: bool) -> Inbound {
        let channels = match channels {
            Channels::One(channel) => {
                let request = if unsubscribe {
                    Request::Unsubscribe { channel }
                } else {
                    Request::Subscribe { channel }
                };
                return Inbound::Request { id: ack, request };
            }
            Channels::Many(list) if list.is_empty() || list.len() > self.max_batch => {
                let reason = format!("a channel list holds 1 to {} names", self.max_batch);
                return invalid(ack, ErrorCode::BadRequest, &reason);
            }
            Channels::Many(list) => list,
        };
        self.batch = Some(Batch {
            ack,
            channels,
            unsubscribe,
            sent: 0,
            answered: 0,
            failure: None,
        });
        self.next_in_batch().unwrap_or(Inbound::Control)
    }

    fn next_in_batch(&mut self) -> Option<Inbound> {
        let batch = self.batch.as_mut()?;
        let channel = batch.channels.get(batch.sent)?.clone();
        batch.sent += 1;
        let request = if batch.unsubscribe {
            Request::Unsubscribe { channel }
        } else {
            Request::Subscribe { channel }
        };
        Some(Inbound::Request {
            id: batch.ack,
            request,
        })
    }

    /// The frame answering a request: its ack, a list's merged ack once
    /// every channel is answered, or a `herald:error` event for a failed
    /// request without an ack.
    fn answer(
        &mut self,
        id: Option<u64>,
        failure: Option<(ErrorCode, &str)>,
    ) -> Result<Option<Frame>, Ended> {
        if let Some(batch) = &mut self.batch {
            if let (Some((code, reason)), None) = (failure, &batch.failure) {
                batch.failure = Some((code, reason.to_owned(), batch.answered));
            }
            batch.answered += 1;
            if batch.answered < batch.channels.len() {
                return Ok(None);
            }
            let Some(batch) = self.batch.take() else {
                return Ok(None);
            };
            let failure = batch.failure.as_ref().map(|(code, reason, index)| {
                (
                    *code,
                    reason.as_str(),
                    batch.channels.get(*index).map(String::as_str),
                )
            });
            return self.ack_or_error(batch.ack, failure);
        }
        self.ack_or_error(id, failure.map(|(code, reason)| (code, reason, None)))
    }

    fn ack_or_error(
        &self,
        ack: Option<u64>,
        failure: Option<(ErrorCode, &str, Option<&str>)>,
    ) -> Result<Option<Frame>, Ended> {
        let body = match failure {
            None => AckBody {
                ok: true,
                code: None,
                reason: None,
                channel: None,
            },
            Some((code, reason, channel)) => AckBody {
                ok: false,
                code: Some(code.as_u16()),
                reason: Some(reason),
                channel,
            },
        };
        let frame = match (ack, body.ok) {
            (Some(ack), _) => self.parser.ack(ack, &body),
            (None, false) => self.parser.event(&("herald:error", &body)),
            (None, true) => return Ok(None),
        };
        frame.map(Some).map_err(internal)
    }

    fn welcome(&mut self, welcome: &Welcome) -> Result<Vec<Frame>, Ended> {
        #[derive(Serialize)]
        struct Info<'a> {
            conn_id: &'a str,
            user_id: Option<&'a str>,
            node_id: &'a str,
            channels: &'a [ChannelName],
        }
        self.welcomed = true;
        let info = Info {
            conn_id: &welcome.conn_id,
            user_id: welcome.user_id.as_ref().map(|u| u.as_str()),
            node_id: &welcome.node_id,
            channels: &welcome.channels,
        };
        Ok(vec![
            self.parser.connect(&welcome.conn_id).map_err(internal)?,
            self.parser
                .event(&("herald:welcome", info))
                .map_err(internal)?,
        ])
    }

    fn delivery(&self, delivery: &Delivery) -> Option<Frame> {
        match self.parser {
            Parser::Json => delivery.encoded(&JSON).cloned().map(Frame::Text),
            Parser::MsgPack => delivery.encoded(&MSGPACK).cloned().map(Frame::Binary),
        }
    }

    /// What a closing connection is told before its transport closes.
    fn farewell(&self, reason: &DisconnectReason) -> Vec<Frame> {
        #[derive(Serialize)]
        struct Closing<'a> {
            code: u16,
            reason: &'a str,
        }
        let code = reason.close_code();
        let text = reason.reason();
        let frames = if self.welcomed {
            let notice = Closing {
                code: code.as_u16(),
                reason: &text,
            };
            let mut frames = vec![self.parser.event(&("herald:disconnect", notice))];
            // socket.io-client reconnects after a transport close, and
            // stays away after a DISCONNECT ("io server disconnect").
            if !code.should_reconnect() {
                frames.push(self.parser.disconnect());
            }
            frames
        } else {
            vec![
                self.parser
                    .connect_error(DEFAULT_NSP, &text, Some(code.as_u16())),
            ]
        };
        frames.into_iter().filter_map(Result::ok).collect()
    }
}

impl Transport for SocketIoTransport {
    /// # Cancel safety
    /// Cancel safe: list requests are handed out from a local queue, packets
    /// from channels and the WebSocket's own buffer.
    async fn recv(&mut self) -> Result<Inbound, Ended> {
        loop {
            if let Some(inbound) = self.next_in_batch() {
                return Ok(inbound);
            }
            let incoming = self.read().await?;
            if let Some(inbound) = self.inbound(incoming)? {
                return Ok(inbound);
            }
        }
    }

    async fn reply(&mut self, reply: Reply<'_>) -> Result<(), Ended> {
        let frames = match reply {
            Reply::Welcome(welcome) => self.welcome(welcome)?,
            Reply::Pong { .. } => vec![Frame::pong()],
            Reply::Ok { id } => self.answer(id, None)?.into_iter().collect(),
            Reply::Error { id, code, reason } => match self.bad_nsp.take() {
                Some(nsp) => vec![
                    self.parser
                        .connect_error(&nsp, "Invalid namespace", None)
                        .map_err(internal)?,
                ],
                None => self.answer(id, Some((code, reason)))?.into_iter().collect(),
            },
        };
        if frames.is_empty() {
            return Ok(());
        }
        self.write(frames).await
    }

    async fn deliver(&mut self, batch: &[Arc<Delivery>], ping: bool) -> Result<(), Ended> {
        let mut frames = Vec::with_capacity(batch.len() + 1);
        for delivery in batch {
            match self.delivery(delivery) {
                Some(frame) => frames.push(frame),
                None => {
                    metrics::counter!(crate::metrics::MESSAGES_DROPPED, "reason" => crate::metrics::DROP_ENCODE_ERROR).increment(1);
                }
            }
        }
        if ping {
            frames.push(Frame::ping());
        }
        self.write(frames).await
    }

    /// Tells the client (see [`Self::farewell`]), then closes the Engine.IO
    /// transport: a `close` packet taken by the next long-poll, or a
    /// WebSocket close frame carrying the code; within `CLOSE_TIMEOUT`.
    async fn close(&mut self, reason: &DisconnectReason) {
        let frames = self.farewell(reason);
        let _ = timeout(CLOSE_TIMEOUT, self.flush_carry()).await;
        match &mut self.link {
            Link::Polling { session, .. } => {
                // The close packet goes in a body of its own: socket.io-client
                // handles a Socket.IO packet on the next tick, and a close in
                // the same body would tear the client down before it.
                if !frames.is_empty() {
                    session.replace(frames);
                    session.drained(CLOSE_TIMEOUT).await;
                }
                session.replace(vec![Frame::close()]);
                session.drained(CLOSE_TIMEOUT).await;
                session.end(reason.clone());
            }
            Link::WebSocket(ws) => {
                let close = CloseFrame {
                    code: CloseCode::from(reason.close_code().as_u16()),
                    reason: Utf8Bytes::from(reason.reason().into_owned()),
                };
                let handshake = async {
                    for frame in frames {
                        if ws.feed(message(frame)).await.is_err() {
                            return;
                        }
                    }
                    if ws.send(Message::Close(Some(close))).await.is_err() {
                        return;
                    }
                    while let Some(Ok(frame)) = ws.next().await {
                        if matches!(frame, Message::Close(_)) {
                            break;
                        }
                    }
                };
                let _ = timeout(CLOSE_TIMEOUT, handshake).await;
            }
        }
    }
}

fn message(frame: Frame) -> Message {
    match frame {
        Frame::Text(text) => Message::Text(text),
        Frame::Binary(bytes) => Message::Binary(bytes),
    }
}

fn invalid(id: Option<u64>, code: ErrorCode, reason: &str) -> Inbound {
    Inbound::Invalid {
        id,
        code,
        reason: reason.to_owned(),
    }
}

fn internal(err: crate::protocol::EncodeError) -> Ended {
    tracing::error!(%err, "encoding a Socket.IO packet failed");
    Ended::Closed(DisconnectReason::Internal)
}

/// Maps a WebSocket read error to how the connection ends.
fn classify(err: tungstenite::Error) -> Ended {
    match err {
        tungstenite::Error::Capacity(_) => DisconnectReason::MessageTooLarge.into(),
        tungstenite::Error::Protocol(
            tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
        ) => Ended::Gone,
        tungstenite::Error::Protocol(e) => {
            DisconnectReason::ProtocolViolation(e.to_string()).into()
        }
        tungstenite::Error::Utf8(_) => {
            DisconnectReason::ProtocolViolation("text frame is not UTF-8".into()).into()
        }
        _ => Ended::Gone,
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

    fn polling() -> (Arc<Session>, SocketIoTransport) {
        let (session, ends) =
            Session::new("s".into(), Parser::Json, 1 << 20, Duration::from_secs(60));
        let transport = SocketIoTransport::polling(Arc::clone(&session), ends, 8);
        (session, transport)
    }

    async fn post(session: &Session, text: &str) {
        let packets = engine::decode_payload(text.as_bytes()).unwrap();
        session.post(packets, Duration::from_secs(1)).await.unwrap();
    }

    async fn polled(session: &Session) -> String {
        String::from_utf8(session.poll(Duration::from_secs(1)).await.unwrap()).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn connect_is_auth_and_the_welcome_is_the_connect_reply() {
        let (session, mut transport) = polling();
        post(&session, r#"40{"token":"t"}"#).await;
        assert!(matches!(
            transport.recv().await.unwrap(),
            Inbound::Request { id: None, request: Request::Auth { token: Some(t) } } if t == "t"
        ));
        let welcome = Welcome {
            id: None,
            conn_id: "n-1".into(),
            user_id: None,
            node_id: "n".into(),
            heartbeat_ms: 25000,
            channels: Vec::new(),
        };
        transport.reply(Reply::Welcome(&welcome)).await.unwrap();
        assert_eq!(
            polled(&session).await,
            "40{\"sid\":\"n-1\"}\u{1e}42[\"herald:welcome\",{\"conn_id\":\"n-1\",\"user_id\":null,\"node_id\":\"n\",\"channels\":[]}]"
        );
        post(&session, "2\u{1e}3").await;
        assert!(matches!(
            transport.recv().await.unwrap(),
            Inbound::Request {
                request: Request::Ping,
                ..
            }
        ));
        assert!(matches!(transport.recv().await.unwrap(), Inbound::Control));
        transport.close(&DisconnectReason::Kicked).await;
        assert_eq!(
            polled(&session).await,
            "42[\"herald:disconnect\",{\"code\":4504,\"reason\":\"disconnected by the server\"}]\u{1e}41\u{1e}1"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_before_the_welcome_is_connect_error_with_the_code() {
        let (session, mut transport) = polling();
        post(&session, r#"40/admin,{}"#).await;
        let Inbound::Invalid { id, code, reason } = transport.recv().await.unwrap() else {
            panic!("not refused");
        };
        transport
            .reply(Reply::Error {
                id,
                code,
                reason: &reason,
            })
            .await
            .unwrap();
        assert_eq!(
            polled(&session).await,
            r#"44/admin,{"message":"Invalid namespace"}"#
        );
        transport
            .close(&DisconnectReason::InvalidToken("bad signature".into()))
            .await;
        assert_eq!(
            polled(&session).await,
            "44{\"message\":\"invalid token: bad signature\",\"data\":{\"code\":4500}}\u{1e}1"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_list_is_one_request_per_channel_and_one_ack() {
        let (session, mut transport) = polling();
        post(&session, r#"425["subscribe",["a","b","c"]]"#).await;
        for (expected, failure) in [("a", None), ("b", Some("bad b")), ("c", Some("bad c"))] {
            let Inbound::Request {
                id,
                request: Request::Subscribe { channel },
            } = transport.recv().await.unwrap()
            else {
                panic!("not a subscribe");
            };
            assert_eq!((id, channel.as_str()), (Some(5), expected));
            let reply = match failure {
                None => Reply::Ok { id },
                Some(reason) => Reply::Error {
                    id,
                    code: ErrorCode::InvalidChannel,
                    reason,
                },
            };
            transport.reply(reply).await.unwrap();
        }
        assert_eq!(
            polled(&session).await,
            r#"435[{"ok":false,"code":103,"reason":"bad b","channel":"b"}]"#
        );
        post(&session, r#"426["unsubscribe","a"]"#).await;
        let Inbound::Request { id, .. } = transport.recv().await.unwrap() else {
            panic!("not a request");
        };
        transport.reply(Reply::Ok { id }).await.unwrap();
        assert_eq!(polled(&session).await, r#"436[{"ok":true}]"#);
        post(&session, r#"42["subscribe",[]]"#).await;
        assert!(matches!(
            transport.recv().await.unwrap(),
            Inbound::Invalid {
                id: None,
                code: ErrorCode::BadRequest,
                ..
            }
        ));
        transport
            .reply(Reply::Error {
                id: None,
                code: ErrorCode::BadRequest,
                reason: "empty",
            })
            .await
            .unwrap();
        assert_eq!(
            polled(&session).await,
            r#"42["herald:error",{"ok":false,"code":101,"reason":"empty"}]"#
        );
    }
}
