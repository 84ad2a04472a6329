//! One task per connection: authenticate, then serve requests and write
//! queued pushes until either side closes.
//!
//! The task alone owns the socket. The fan-out never touches it: it fills
//! the session's outbox, and this task drains the whole outbox, writes every
//! frame and flushes once.

use std::{sync::Arc, time::Duration};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::SinkExt;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite;
use tracing::Instrument;

use crate::{
    auth::{AuthError, Verified},
    core::{ChannelPattern, DisconnectReason, HubError, Identity, Session, Subscriptions, Verdict},
    http::AppState,
    protocol::{
        ChannelName, ClientMessage, DecodeError, ErrorCode, EventName, Format, JsonData,
        PROTOCOL_VERSION, Publication, ServerMessage, SharedMessage, UserId, decode, encode,
        unix_ms,
    },
};

/// How long a closing handshake may take before the socket is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// How a connection ended.
enum End {
    /// Herald closes it with this reason.
    Close(DisconnectReason),
    /// The client closed or vanished; nothing left to send.
    Gone,
}

impl From<DisconnectReason> for End {
    fn from(reason: DisconnectReason) -> Self {
        Self::Close(reason)
    }
}

struct Connection {
    ws: WebSocket,
    format: Format,
    state: Arc<AppState>,
    write_timeout: Duration,
}

/// Serves one upgraded socket until it closes; `slot` is released at the end.
///
/// Not an `async fn`: the connection is built before the future, so the
/// future stores the socket once (an async fn would keep its arguments as
/// well as the values moved out of them, and there is one task per socket).
pub(super) fn run<S: Send + 'static>(
    ws: WebSocket,
    state: Arc<AppState>,
    format: Format,
    token: Option<String>,
    slot: S,
) -> impl Future<Output = ()> + Send {
    let write_timeout = Duration::from_millis(state.config.websocket.write_timeout_ms);
    let conn = Connection {
        ws,
        format,
        state,
        write_timeout,
    };
    conn.run(token, slot)
}

/// A registered, welcomed connection.
struct Live {
    session: Arc<Session>,
    subs: Subscriptions,
    span: tracing::Span,
}

impl Connection {
    async fn run<S>(mut self, token: Option<String>, slot: S) {
        // Every phase but the session loop is boxed: the task of an idle
        // connection then holds only the loop's state, not the larger state
        // of authentication, setup, request handling or closing.
        let end = match Box::pin(self.open(token)).await {
            Ok(mut live) => {
                let span = live.span.clone();
                let result = self
                    .pump(&live.session, &mut live.subs)
                    .instrument(span)
                    .await;
                let end = result.err().unwrap_or(End::Gone);
                self.finish(live, &end);
                end
            }
            Err(end) => end,
        };
        if let End::Close(reason) = end {
            self.state.hub.record_close(reason.close_code());
            Box::pin(self.close(&reason)).await;
        }
        drop(slot);
    }

    /// Authenticates from the upgrade token, or from the first message.
    async fn authenticate(
        &mut self,
        token: Option<String>,
    ) -> Result<(Option<Verified>, Option<u64>), End> {
        if let Some(token) = token {
            return self.verify(&token).map(|user| (Some(user), None));
        }
        let wait = Duration::from_millis(self.state.config.auth.timeout_ms);
        match timeout(wait, self.await_auth()).await {
            Ok(result) => result,
            Err(_) => Err(DisconnectReason::AuthTimeout.into()),
        }
    }

    async fn await_auth(&mut self) -> Result<(Option<Verified>, Option<u64>), End> {
        loop {
            let message = match self.next_request().await? {
                Some(Ok(message)) => message,
                Some(Err(err)) => {
                    self.reply_decode_error(err).await?;
                    continue;
                }
                None => continue,
            };
            match message {
                ClientMessage::Auth {
                    id,
                    token: Some(token),
                } => {
                    return self.verify(&token).map(|user| (Some(user), id));
                }
                ClientMessage::Auth { id, token: None }
                    if self.state.config.auth.allow_anonymous =>
                {
                    return Ok((None, id));
                }
                ClientMessage::Auth { .. } => return Err(DisconnectReason::Forbidden.into()),
                ClientMessage::Ping { id } => self.send(&ServerMessage::Pong { id }).await?,
                other => {
                    let reason = "send an `auth` message first".to_owned();
                    self.reply_error(request_id(&other), ErrorCode::NotAuthenticated, reason)
                        .await?;
                }
            }
        }
    }

    fn verify(&self, token: &str) -> Result<Verified, End> {
        match self.state.verifier.verify(token) {
            Ok(verified) => Ok(verified),
            Err(AuthError::Expired) => Err(DisconnectReason::TokenExpired.into()),
            Err(err) => {
                tracing::debug!(error = %err, "token refused");
                Err(DisconnectReason::InvalidToken(err.to_string()).into())
            }
        }
    }

    /// Authenticates, registers with the hub, joins the automatic channels
    /// and sends `welcome`.
    async fn open(&mut self, token: Option<String>) -> Result<Live, End> {
        let (token, auth_id) = self.authenticate(token).await?;
        let identity = match token {
            Some(token) => admit(&self.state, token).await?,
            None => Identity::default(),
        };
        if let Some(user) = &identity.user
            && !self.state.limits.acquire_user(user.as_str())
        {
            return Err(DisconnectReason::UserConnectionLimit.into());
        }
        let user = identity.user.clone();
        let session = match self.state.hub.connect(identity) {
            Ok(session) => session,
            Err(reason) => {
                self.release_user(user.as_ref());
                return Err(reason.into());
            }
        };
        let span = tracing::info_span!(
            "conn",
            conn_id = session.id(),
            user_id = session.user().map(UserId::as_str)
        );
        let mut live = Live {
            session,
            subs: Subscriptions::default(),
            span,
        };
        match self
            .welcome(&live.session, &mut live.subs, auth_id)
            .instrument(live.span.clone())
            .await
        {
            Ok(()) => Ok(live),
            Err(end) => {
                self.finish(live, &end);
                Err(end)
            }
        }
    }

    async fn welcome(
        &mut self,
        session: &Arc<Session>,
        subs: &mut Subscriptions,
        auth_id: Option<u64>,
    ) -> Result<(), End> {
        let hub = Arc::clone(&self.state.hub);
        let channels = hub.join_automatic(session, subs).await.map_err(|err| {
            tracing::warn!(error = %err, "joining automatic channels failed");
            End::Close(DisconnectReason::Internal)
        })?;
        let welcome = ServerMessage::Welcome {
            id: auth_id,
            conn_id: format!("{}-{}", hub.node_id(), session.id()),
            user_id: session.user().cloned(),
            node_id: hub.node_id().to_owned(),
            heartbeat_ms: hub.config().heartbeat_interval.as_millis() as u64,
            protocol: PROTOCOL_VERSION,
            channels,
        };
        self.send(&welcome).await?;
        tracing::debug!("connected");
        Ok(())
    }

    /// Unregisters from the hub and returns the per-user slot.
    fn finish(&self, mut live: Live, end: &End) {
        self.state.hub.disconnect(&live.session, &mut live.subs);
        self.release_user(live.session.user());
        live.span.in_scope(|| match end {
            End::Close(reason) => tracing::debug!(code = reason.close_code().as_u16(), "closing"),
            End::Gone => tracing::debug!("client gone"),
        });
    }

    fn release_user(&self, user: Option<&UserId>) {
        if let Some(user) = user {
            self.state.limits.release_user(user.as_str());
        }
    }

    /// The session loop: outbound queue and inbound requests.
    async fn pump(&mut self, session: &Arc<Session>, subs: &mut Subscriptions) -> Result<(), End> {
        let mut batch = Vec::new();
        let mut limiter = self.state.limits.message_limiter();
        loop {
            tokio::select! {
                // Outbound first: a client that floods requests must not
                // starve its own pushes (or its close signal).
                biased;
                () = session.outbox().ready() => {
                    let signals = session.outbox().take(&mut batch);
                    self.write_batch(&batch, signals.ping).await?;
                    batch.clear();
                    if let Some(reason) = signals.close {
                        return Err(reason.into());
                    }
                }
                request = self.next_request() => {
                    self.state.hub.touch(session);
                    let Some(request) = request? else { continue };
                    match limiter.check() {
                        Verdict::Allow => {}
                        Verdict::Refuse => {
                            let id = request.as_ref().map_or_else(|e| e.id, request_id);
                            let reason = "rate limit exceeded; slow down".to_owned();
                            self.reply_error(id, ErrorCode::RateLimited, reason).await?;
                            continue;
                        }
                        Verdict::Close => return Err(DisconnectReason::RateLimited.into()),
                    }
                    match request {
                        Ok(message) => Box::pin(self.handle(session, subs, message)).await?,
                        Err(err) => Box::pin(self.reply_decode_error(err)).await?,
                    }
                }
            }
        }
    }

    /// Reads the next frame. `Ok(None)` for control frames, `Err` when the connection ends.
    ///
    /// # Cancel safety
    /// Cancel safe: the WebSocket keeps partial frames in its own buffer.
    async fn next_request(&mut self) -> Result<Option<Result<ClientMessage, DecodeError>>, End> {
        let frame = match self.ws.recv().await {
            None => return Err(End::Gone),
            Some(Err(err)) => return Err(classify(err)),
            Some(Ok(frame)) => frame,
        };
        Ok(match frame {
            Message::Text(text) => Some(decode(text.as_bytes(), Format::Json)),
            Message::Binary(bytes) => Some(decode(&bytes, Format::MsgPack)),
            // Pings are answered by the WebSocket layer; any frame proves liveness.
            Message::Ping(_) | Message::Pong(_) => None,
            Message::Close(_) => {
                // The WebSocket layer queued the answering close frame; send it,
                // so the client sees a clean close instead of 1006.
                let _ = timeout(CLOSE_TIMEOUT, self.ws.flush()).await;
                return Err(End::Gone);
            }
        })
    }

    async fn handle(
        &mut self,
        session: &Arc<Session>,
        subs: &mut Subscriptions,
        message: ClientMessage,
    ) -> Result<(), End> {
        let hub = Arc::clone(&self.state.hub);
        let max_len = self.state.config.limits.max_channel_length;
        let (id, result) = match message {
            ClientMessage::Ping { id } => return self.send(&ServerMessage::Pong { id }).await,
            ClientMessage::Auth { id, .. } => (
                id,
                Err(Refusal::code(
                    ErrorCode::AlreadyAuthenticated,
                    "already authenticated; use `refresh` to replace the token",
                )),
            ),
            ClientMessage::Refresh { id, token } => {
                (id, refresh(&self.state, session, &token).await)
            }
            ClientMessage::Subscribe { id, channel } => {
                let result = match channel_name(&channel, max_len) {
                    Ok(channel) => hub
                        .subscribe(session, subs, channel)
                        .await
                        .map_err(Refusal::from),
                    Err(refusal) => Err(refusal),
                };
                (id, result)
            }
            ClientMessage::Unsubscribe { id, channel } => {
                let result = channel_name(&channel, max_len).and_then(|channel| {
                    hub.unsubscribe(session, subs, channel)
                        .map_err(Refusal::from)
                });
                (id, result)
            }
            ClientMessage::Publish {
                id,
                channel,
                event,
                data,
            } => {
                let result = match self.publication(&channel, &event, data) {
                    Ok(publication) => hub
                        .client_publish(session, publication)
                        .await
                        .map_err(Refusal::from),
                    Err(refusal) => Err(refusal),
                };
                (id, result)
            }
        };
        match result {
            Ok(()) => self.send(&ServerMessage::Ok { id }).await,
            Err(refusal) => self.reply_error(id, refusal.code, refusal.reason).await,
        }
    }

    fn publication(
        &self,
        channel: &str,
        event: &str,
        data: JsonData,
    ) -> Result<Publication, Refusal> {
        let limits = &self.state.config.limits;
        let channel = channel_name(channel, limits.max_channel_length)?;
        let event = EventName::parse(event).map_err(|e| {
            Refusal::code(ErrorCode::InvalidEvent, format!("invalid event name: {e}"))
        })?;
        if data.len() > limits.max_data_size {
            return Err(Refusal::code(
                ErrorCode::PayloadTooLarge,
                format!(
                    "data is {} bytes; the limit is {}",
                    data.len(),
                    limits.max_data_size
                ),
            ));
        }
        Ok(Publication {
            channel,
            event,
            data,
            ts: Some(unix_ms()),
        })
    }

    async fn reply_decode_error(&mut self, err: DecodeError) -> Result<(), End> {
        self.reply_error(err.id, err.code, err.reason).await
    }

    async fn reply_error(
        &mut self,
        id: Option<u64>,
        code: ErrorCode,
        reason: String,
    ) -> Result<(), End> {
        let message = ServerMessage::Error {
            id,
            code: code.as_u16(),
            reason,
        };
        self.send(&message).await
    }

    /// Encodes and sends one reply, flushing it.
    async fn send(&mut self, message: &ServerMessage) -> Result<(), End> {
        let bytes = encode(message, self.format).map_err(|err| {
            tracing::error!(%err, "encoding a reply failed");
            End::Close(DisconnectReason::Internal)
        })?;
        let frame =
            frame(bytes, self.format).map_err(|()| End::Close(DisconnectReason::Internal))?;
        within(self.write_timeout, self.ws.send(frame)).await
    }

    /// Writes every message of a batch (and a ping if due), then flushes once.
    ///
    /// The fan-out path: no allocation here, the frames share the bytes every
    /// recipient shares, and one flush sends them all.
    async fn write_batch(&mut self, batch: &[Arc<SharedMessage>], ping: bool) -> Result<(), End> {
        let format = self.format;
        let ws = &mut self.ws;
        let write = async move {
            for message in batch {
                let Some(frame) = message
                    .encoded(format)
                    .and_then(|b| frame(b.clone(), format).ok())
                else {
                    metrics::counter!(crate::metrics::MESSAGES_DROPPED, "reason" => crate::metrics::DROP_ENCODE_ERROR).increment(1);
                    continue;
                };
                ws.feed(frame).await?;
            }
            if ping {
                ws.feed(Message::Ping(bytes::Bytes::new())).await?;
            }
            ws.flush().await
        };
        within(self.write_timeout, write).await
    }

    /// Sends a close frame and waits (at most [`CLOSE_TIMEOUT`]) for the
    /// client's answering close frame before the socket is dropped.
    ///
    /// Dropping right away would make the kernel answer the client's next
    /// write (a pong, say) with a reset, and a reset discards what the client
    /// has not read yet, the close frame with its code included.
    async fn close(&mut self, reason: &DisconnectReason) {
        let frame = CloseFrame {
            code: reason.close_code().as_u16(),
            reason: Utf8Bytes::from(reason.reason().into_owned()),
        };
        let handshake = async {
            if self.ws.send(Message::Close(Some(frame))).await.is_err() {
                return;
            }
            while let Some(Ok(frame)) = self.ws.recv().await {
                if matches!(frame, Message::Close(_)) {
                    break;
                }
            }
        };
        let _ = timeout(CLOSE_TIMEOUT, handshake).await;
    }
}

/// Checks what the signature alone cannot: a revoked session, malformed grants.
async fn admit(state: &AppState, token: Verified) -> Result<Identity, End> {
    if let Some(session) = &token.session {
        match state.sessions.is_revoked(session).await {
            Ok(false) => {}
            Ok(true) => return Err(DisconnectReason::SessionRevoked.into()),
            Err(err) => {
                tracing::warn!(error = %err, "checking session revocation failed");
                return Err(DisconnectReason::Internal.into());
            }
        }
    }
    identity(token)
}

/// Replaces a connection's token with a fresh one for the same user and session.
async fn refresh(state: &AppState, session: &Session, token: &str) -> Result<(), Refusal> {
    let reject =
        |why: &str| Refusal::code(ErrorCode::TokenRejected, format!("token rejected: {why}"));
    let verified = state
        .verifier
        .verify(token)
        .map_err(|e| reject(&e.to_string()))?;
    if Some(&verified.user) != session.user() {
        return Err(reject("it belongs to another user"));
    }
    // The connection stays in its session: a token of another (or no)
    // session must not extend it, nor a token of a revoked one.
    if verified.session.as_deref() != session.session() {
        return Err(reject("it belongs to another session"));
    }
    if let Some(sid) = &verified.session {
        match state.sessions.is_revoked(sid).await {
            Ok(false) => {}
            Ok(true) => return Err(reject("the session is revoked")),
            // An outage is not an answer about the session.
            Err(err) => {
                tracing::warn!(error = %err, "checking session revocation failed");
                return Err(Refusal::code(
                    ErrorCode::SessionStoreUnavailable,
                    "the session store is unavailable; retry later",
                ));
            }
        }
    }
    session.set_expiry(verified.expires_at.saturating_mul(1000));
    Ok(())
}

/// The hub's view of a verified token; refuses malformed grants.
fn identity(token: Verified) -> Result<Identity, End> {
    let grants = token
        .grants
        .iter()
        .map(|g| ChannelPattern::parse(g))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| {
            End::Close(DisconnectReason::InvalidToken(
                "invalid claim: channels".into(),
            ))
        })?;
    Ok(Identity {
        user: Some(token.user),
        session: token.session,
        grants,
        expires_at_ms: token.expires_at.saturating_mul(1000),
    })
}

/// An error reply in the making.
struct Refusal {
    code: ErrorCode,
    reason: String,
}

impl Refusal {
    fn code(code: ErrorCode, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }
}

impl From<HubError> for Refusal {
    fn from(err: HubError) -> Self {
        let reason = match &err {
            // The engine's text is its backend's (a Redis error, say): log
            // it, and tell the client only what the code means.
            HubError::Engine(cause) => {
                tracing::warn!(error = %cause, "engine failed a client request");
                "engine unavailable; retry later".to_owned()
            }
            _ => err.to_string(),
        };
        Self {
            code: err.code(),
            reason,
        }
    }
}

fn channel_name(name: &str, max_len: usize) -> Result<ChannelName, Refusal> {
    ChannelName::parse(name, max_len).map_err(|e| {
        Refusal::code(
            ErrorCode::InvalidChannel,
            format!("invalid channel name: {e}"),
        )
    })
}

fn request_id(message: &ClientMessage) -> Option<u64> {
    match message {
        ClientMessage::Auth { id, .. }
        | ClientMessage::Subscribe { id, .. }
        | ClientMessage::Unsubscribe { id, .. }
        | ClientMessage::Publish { id, .. }
        | ClientMessage::Refresh { id, .. }
        | ClientMessage::Ping { id } => *id,
    }
}

/// Wraps encoded bytes in the frame type of `format`; `Err` only if JSON bytes are not UTF-8.
fn frame(bytes: bytes::Bytes, format: Format) -> Result<Message, ()> {
    match format {
        Format::MsgPack => Ok(Message::Binary(bytes)),
        // JSON encoders emit UTF-8; the check is linear and cheap but cannot be skipped safely.
        Format::Json => Utf8Bytes::try_from(bytes).map(Message::Text).map_err(drop),
    }
}

/// Runs a write under the write timeout; a client that does not take its
/// bytes in time is a slow consumer.
async fn within(
    limit: Duration,
    write: impl Future<Output = Result<(), axum::Error>>,
) -> Result<(), End> {
    match timeout(limit, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(End::Gone),
        Err(_) => Err(DisconnectReason::SlowConsumer.into()),
    }
}

/// Maps a read error to how the connection ends.
fn classify(err: axum::Error) -> End {
    match err.into_inner().downcast::<tungstenite::Error>() {
        Ok(err) => match *err {
            tungstenite::Error::Capacity(_) => DisconnectReason::MessageTooLarge.into(),
            // A client that drops TCP without a close frame is ordinary
            // network churn, not a protocol violation.
            tungstenite::Error::Protocol(
                tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
            ) => End::Gone,
            tungstenite::Error::Protocol(e) => {
                DisconnectReason::ProtocolViolation(e.to_string()).into()
            }
            tungstenite::Error::Utf8(_) => {
                DisconnectReason::ProtocolViolation("text frame is not UTF-8".into()).into()
            }
            _ => End::Gone,
        },
        Err(_) => End::Gone,
    }
}
