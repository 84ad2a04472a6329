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

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::{
    sync::{mpsc, oneshot},
    time::timeout,
};
use tokio_tungstenite::tungstenite::{
    Message, Utf8Bytes,
    protocol::{CloseFrame, frame::coding::CloseCode},
};

use super::{
    Ws,
    acks::Acks,
    engine::{self, Data, Frame, Incoming},
    events,
    packet::{DEFAULT_NSP, Event, Packet, Parser},
    recovery::Recovery,
    session::{Session, SessionEnds},
};
use crate::{
    core::{
        Delivery, DirectWrite, DisconnectReason, Ended, Inbound, Reply, Request, Transport, Welcome,
    },
    protocol::{ChannelName, ErrorCode},
};

/// How long closing may take before the connection is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Bytes a polling client may have waiting for its next long-poll before
/// writes wait for it: what a socket's send buffer would hold. Small
/// replies never wait; bursts of deliveries do.
const POLL_WINDOW: usize = 64 * 1024;

/// Where the connection's packets travel.
enum Link {
    /// HTTP long-polling, through the session.
    Polling {
        session: Arc<Session>,
        inbound: mpsc::Receiver<Incoming>,
        /// The WebSocket of an upgrade, while one may still come.
        upgrade: Option<oneshot::Receiver<Box<Ws>>>,
    },
    /// A WebSocket, from the start or after an upgrade.
    WebSocket(Box<Ws>),
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
    acks: Acks,
    /// Connection state recovery, where `[socketio]` turns it on.
    recovery: Option<Recovery>,
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
            acks: Acks::new(max_batch),
            recovery: None,
        }
    }

    /// Turns connection state recovery on: at most `max_channels` channels
    /// are recovered, and at most `max_held` bytes held while they are.
    pub(crate) fn with_recovery(mut self, max_channels: usize, max_held: usize) -> Self {
        self.recovery = Some(Recovery::new(max_channels, max_held));
        self
    }

    /// Notes a client's request for the recovery snapshot.
    fn track(&mut self, inbound: Inbound) -> Inbound {
        if let Some(recovery) = &mut self.recovery {
            recovery.track(&inbound);
        }
        inbound
    }

    /// A client that polls through `session` (and may upgrade).
    pub(crate) fn polling(session: Arc<Session>, ends: SessionEnds, max_batch: usize) -> Self {
        let parser = session.parser();
        let link = Link::Polling {
            session,
            inbound: ends.inbound,
            upgrade: Some(ends.upgrade),
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
                    inbound,
                    upgrade,
                } => tokio::select! {
                    packet = inbound.recv() => return packet.ok_or(Ended::Gone),
                    reason = session.ended() => return Err(Ended::Closed(reason)),
                    ws = upgraded(upgrade) => ws,
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
            session,
            mut inbound,
            ..
        } = std::mem::replace(&mut self.link, Link::WebSocket(ws))
        {
            while let Ok(packet) = inbound.try_recv() {
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
            Some(Err(err)) => return Err(crate::net::websocket::ended_by(err)),
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
        if let Link::Polling {
            session, upgrade, ..
        } = &mut self.link
        {
            // Backpressure, as a socket's send buffer gives it: past
            // `POLL_WINDOW` queued bytes, wait for the client to poll (under
            // the core's write timeout, so a client that stops polling is a
            // slow consumer). Meanwhile deliveries stay in the outbox, where
            // latest-value channels conflate. A client that paused polling
            // to upgrade is written to on its WebSocket instead.
            let session = Arc::clone(session);
            tokio::select! {
                () = session.room(POLL_WINDOW) => {
                    return session.push(frames).map_err(Ended::Closed);
                }
                ws = upgraded(upgrade) => self.switch(ws),
            }
        }
        self.flush_carry().await?;
        match &mut self.link {
            Link::Polling { .. } => Err(Ended::Gone),
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
            Packet::Connect { nsp, token, resume } if nsp == DEFAULT_NSP => {
                if let Some(recovery) = &mut self.recovery {
                    recovery.connecting(resume);
                }
                Some(Inbound::Request {
                    id: None,
                    request: Request::Auth { token },
                })
            }
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
            Event::Subscribe(channels) => return self.acks.start(ack, channels, false),
            Event::Unsubscribe(channels) => return self.acks.start(ack, channels, true),
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

    /// The frame answering a request, if any (see [`Acks::answer`]).
    fn answer(
        &mut self,
        id: Option<u64>,
        failure: Option<(ErrorCode, &str)>,
    ) -> Result<Option<Frame>, Ended> {
        match self.acks.answer(id, failure) {
            Some(answer) => answer.frame(self.parser).map_err(internal),
            None => Ok(None),
        }
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
        let event = self
            .parser
            .event(&("herald:welcome", info))
            .map_err(internal)?;
        if let Some(recovery) = &mut self.recovery {
            return Ok(recovery.welcome(self.parser, welcome.conn_id.clone(), event));
        }
        Ok(vec![
            self.parser
                .connect(&welcome.conn_id, None)
                .map_err(internal)?,
            event,
        ])
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
            // A recovery's requests come first: the client is not connected
            // (it has no `CONNECT` reply) until they are answered.
            if let Some(inbound) = self.recovery.as_mut().and_then(Recovery::next_request) {
                return Ok(inbound);
            }
            if let Some(inbound) = self.acks.next() {
                return Ok(self.track(inbound));
            }
            let incoming = self.read().await?;
            if let Some(inbound) = self.inbound(incoming)? {
                return Ok(self.track(inbound));
            }
        }
    }

    async fn reply(&mut self, reply: Reply<'_>) -> Result<(), Ended> {
        if let Some(recovery) = &mut self.recovery {
            if recovery.restoring() {
                let frames = recovery.restore_reply(self.parser, &reply);
                if frames.is_empty() {
                    return Ok(());
                }
                return self.write(frames).await;
            }
            recovery.reply(&reply);
        }
        let mut frames = match reply {
            Reply::Welcome(welcome) => self.welcome(welcome)?,
            Reply::Pong { .. } => vec![Frame::pong()],
            // A history channel's subscription is a success like any other:
            // Socket.IO clients subscribe without a position (see SOCKETIO.md).
            Reply::Ok { id } | Reply::Subscribed { id, .. } => {
                self.answer(id, None)?.into_iter().collect()
            }
            // Socket.IO has no history request; answered as refused should
            // one ever reach here.
            Reply::History { id, .. } => self
                .answer(
                    id,
                    Some((
                        ErrorCode::BadRequest,
                        "history is not offered over Socket.IO",
                    )),
                )?
                .into_iter()
                .collect(),
            Reply::Error { id, code, reason } => match self.bad_nsp.take() {
                Some(nsp) => vec![
                    self.parser
                        .connect_error(&nsp, "Invalid namespace", None)
                        .map_err(internal)?,
                ],
                None => self.answer(id, Some((code, reason)))?.into_iter().collect(),
            },
        };
        // The client's offset follows its subscriptions once a request
        // (or a list) is answered.
        if let Some(recovery) = &mut self.recovery
            && !self.acks.in_batch()
            && let Some(offset) = recovery.offset_event(self.parser)
        {
            frames.insert(0, offset);
        }
        if frames.is_empty() {
            return Ok(());
        }
        self.write(frames).await
    }

    async fn deliver(&mut self, batch: &[Arc<Delivery>], ping: bool) -> Result<(), Ended> {
        let mut frames = Vec::with_capacity(batch.len() + 1);
        for delivery in batch {
            let delivered = match &mut self.recovery {
                Some(recovery) => recovery.encode(self.parser, delivery, &mut frames),
                None => events::delivery(self.parser, delivery, &mut frames),
            };
            if !delivered {
                metrics::counter!(crate::metrics::MESSAGES_DROPPED, "reason" => events::drop_reason(delivery))
                    .increment(1);
            }
        }
        if let Some(recovery) = &mut self.recovery {
            frames = recovery.hold(self.parser, frames);
        }
        if ping {
            frames.push(Frame::ping());
        }
        self.write(frames).await
    }

    /// Direct writes on a socket that speaks WebSocket from its first packet,
    /// without connection state recovery (whose offsets are per socket).
    /// A polling session, even one that upgrades later, keeps the task's path.
    fn direct(&self) -> Option<Arc<dyn DirectWrite>> {
        match &self.link {
            Link::WebSocket(ws) if self.recovery.is_none() && self.carry.is_empty() => {
                Some(Arc::clone(&ws.get_ref().0) as Arc<dyn DirectWrite>)
            }
            _ => None,
        }
    }

    /// Tells the client (see [`Self::farewell`]), then closes the Engine.IO
    /// transport: a `close` packet taken by the next long-poll, or a
    /// WebSocket close frame carrying the code; within `CLOSE_TIMEOUT`.
    async fn close(&mut self, reason: &DisconnectReason) {
        let frames = self.farewell(reason);
        let frames = match self.close_polling(frames, reason).await {
            Closing::Done => return,
            Closing::Upgraded(ws) => {
                // What the polling buffer still held is carried over.
                self.switch(ws);
                Vec::new()
            }
            Closing::NotPolling(frames) => frames,
        };
        let _ = timeout(CLOSE_TIMEOUT, self.flush_carry()).await;
        let Link::WebSocket(ws) = &mut self.link else {
            return;
        };
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

/// How a polling close went.
enum Closing {
    /// The client was told and the session ended.
    Done,
    /// An upgrade completed meanwhile: finish on its WebSocket.
    Upgraded(Box<Ws>),
    /// Not a polling connection: the frames are still to send.
    NotPolling(Vec<Frame>),
}

impl SocketIoTransport {
    /// The polling close: the notices, then the close packet in a body of
    /// its own (socket.io-client handles a Socket.IO packet on the next
    /// tick, and a close in the same body would tear the client down before
    /// it), each waiting up to `CLOSE_TIMEOUT` for a long-poll. A client
    /// that paused polling to upgrade gets them on its WebSocket instead.
    async fn close_polling(&mut self, frames: Vec<Frame>, reason: &DisconnectReason) -> Closing {
        let Link::Polling {
            session, upgrade, ..
        } = &mut self.link
        else {
            return Closing::NotPolling(frames);
        };
        let session = Arc::clone(session);
        let mut polling = true;
        for batch in [frames, vec![Frame::close()]] {
            if batch.is_empty() {
                continue;
            }
            session.replace(batch);
            // A client that did not poll for the notices is not polling.
            if !polling {
                continue;
            }
            tokio::select! {
                taken = session.drained(CLOSE_TIMEOUT) => polling = taken,
                ws = upgraded(upgrade) => return Closing::Upgraded(ws),
            }
        }
        session.end(reason.clone());
        Closing::Done
    }
}

/// The WebSocket of a completed upgrade; never resolves when none can come.
///
/// # Cancel safety
/// Cancel safe: the receiver stays until it resolves.
async fn upgraded(upgrade: &mut Option<oneshot::Receiver<Box<Ws>>>) -> Box<Ws> {
    let Some(receiver) = upgrade.as_mut() else {
        return std::future::pending().await;
    };
    let ws = receiver.await;
    // Resolved either way: the upgrade happened, or its attempt was given up.
    *upgrade = None;
    match ws {
        Ok(ws) => ws,
        Err(_) => std::future::pending().await,
    }
}

pub(super) fn message(frame: Frame) -> Message {
    match frame {
        Frame::Text(text) => Message::Text(text),
        Frame::Binary(bytes) => Message::Binary(bytes),
    }
}

pub(super) fn invalid(id: Option<u64>, code: ErrorCode, reason: &str) -> Inbound {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Payload;

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
    async fn polling_writes_wait_for_the_client_past_the_window() {
        let (session, mut transport) = polling();
        let channel = ChannelName::parse(&"c".repeat(128), 128).unwrap();
        // About 160 bytes each: well past the window together.
        let batch: Vec<_> = std::iter::repeat_with(|| {
            Arc::new(Delivery::new(Payload::Gap {
                channel: channel.clone(),
                missed: None,
            }))
        })
        .take(POLL_WINDOW / 100)
        .collect();
        transport.deliver(&[], true).await.unwrap();
        transport.deliver(&[], true).await.unwrap();
        assert_eq!(
            polled(&session).await,
            "2\u{1e}2",
            "small writes do not wait"
        );
        transport.deliver(&batch, false).await.unwrap();
        let next = timeout(Duration::from_secs(5), transport.deliver(&[], true)).await;
        assert!(next.is_err(), "past the window, a write waits for a poll");
        assert!(polled(&session).await.starts_with(r#"42["herald:gap""#));
        transport.deliver(&[], true).await.unwrap();
        assert_eq!(polled(&session).await, "2");
    }

    #[tokio::test(start_paused = true)]
    async fn a_list_is_one_request_per_channel_and_one_ack() {
        let (session, mut transport) = polling();
        post(&session, r#"425["subscribe",["a","b","c"]]"#).await;
        for (expected, failure) in [("a", None), ("b", Some("bad b")), ("c", Some("bad c"))] {
            let Inbound::Request {
                id,
                request: Request::Subscribe { channel, .. },
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
