//! One connection's whole life, whatever transport carries it.
//!
//! A transport (the native WebSocket protocol, Socket.IO) accepts a socket,
//! then hands it to [`ClientContext::serve`] as a [`Transport`]: something
//! that reads [`Inbound`] requests, writes [`Reply`]s and [`Delivery`]
//! batches, and closes. Everything else happens here, in domain terms:
//!
//! 1. **authenticate**: a token from the upgrade, or the first request, within
//!    `auth.timeout_ms`; anonymous where allowed;
//! 2. **admit**: a revoked login session, the per-user and per-node limits;
//! 3. **welcome**: join the personal, login-session and broadcast channels;
//! 4. **serve**: drain the outbox (deliveries, pings, close requests) before
//!    reading requests, rate-limit requests, answer subscribe / unsubscribe /
//!    publish / refresh / ping with their permission checks;
//! 5. **close** with a [`DisconnectReason`], release every slot.
//!
//! Every write runs under `websocket.write_timeout_ms`: a client that does
//! not take its bytes in time is a slow consumer, whatever the transport.

use std::{fmt, future::Future, sync::Arc, time::Duration};

use futures_util::{FutureExt, future::BoxFuture};
use tokio::time::timeout;
use tracing::Instrument;

use super::{
    ChannelPattern, Conn, Delivery, DirectWrite, DisconnectReason, Hub, HubError, Identity,
    PublicationLimits, RateLimits, Recovery, Subscribed, Subscriptions, Verdict,
};
use crate::{
    engine::{EngineError, HistoryPage},
    protocol::{
        ChannelName, ErrorCode, HistoryQuery, JsonData, Publication, StreamPosition, UserId,
    },
};

/// A client request, decoded by its transport.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// Authenticate; no token means anonymous.
    Auth {
        /// The access token.
        token: Option<String>,
    },
    /// Join a channel (the name is checked here, so errors name it).
    Subscribe {
        /// The channel.
        channel: String,
        /// On a channel with history: recover what was published after this.
        since: Option<StreamPosition>,
        /// On a channel with history: deliver the latest publication at once.
        latest: bool,
    },
    /// Read a channel's history, where its namespace allows clients to.
    History {
        /// The channel.
        channel: String,
        /// Which part of the stream.
        query: HistoryQuery,
    },
    /// Leave a channel.
    Unsubscribe {
        /// The channel.
        channel: String,
    },
    /// Publish, where the channel rules allow clients to.
    Publish {
        /// Target channel.
        channel: String,
        /// Event name.
        event: String,
        /// Application payload.
        data: JsonData,
    },
    /// Replace the connection's access token.
    Refresh {
        /// The new token.
        token: String,
    },
    /// An application-level ping.
    Ping,
}

/// What a transport read from its peer.
#[derive(Debug)]
pub enum Inbound {
    /// A request, with the id its reply must carry.
    Request {
        /// Request id, echoed in the reply.
        id: Option<u64>,
        /// The request.
        request: Request,
    },
    /// A message that is not a valid request: answered with an error; the
    /// connection stays open.
    Invalid {
        /// The request id, if it could be read.
        id: Option<u64>,
        /// What is wrong, as a protocol code.
        code: ErrorCode,
        /// What is wrong, for the client.
        reason: String,
    },
    /// Something that carries no request (a WebSocket ping or pong): it only
    /// proves the client is alive.
    Control,
}

/// What was decided about a connection after authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// The request id of the `auth` request, if any.
    pub id: Option<u64>,
    /// The connection's id, unique across the cluster.
    pub conn_id: String,
    /// The authenticated user; `None` for anonymous connections.
    pub user_id: Option<UserId>,
    /// The node that holds the connection.
    pub node_id: String,
    /// How often the node pings, in milliseconds.
    pub heartbeat_ms: u64,
    /// The channels joined automatically.
    pub channels: Vec<ChannelName>,
}

/// An answer to a client.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reply<'a> {
    /// Authentication succeeded.
    Welcome(&'a Welcome),
    /// A request succeeded.
    Ok {
        /// Request id.
        id: Option<u64>,
    },
    /// A subscription to a channel with history succeeded (a channel without
    /// history is answered with [`Reply::Ok`], as before history existed).
    Subscribed {
        /// Request id.
        id: Option<u64>,
        /// The stream position live publications continue from.
        position: &'a StreamPosition,
        /// Whether what was missed since the requested position follows;
        /// `None` when the request had no `since`.
        recovered: Option<bool>,
    },
    /// A channel's history, answering a client's request.
    History {
        /// Request id.
        id: Option<u64>,
        /// The publications, each with its offset.
        publications: &'a [Publication],
        /// The stream's position.
        position: &'a StreamPosition,
    },
    /// Answer to a ping.
    Pong {
        /// Request id.
        id: Option<u64>,
    },
    /// A request failed; the connection stays open.
    Error {
        /// Request id.
        id: Option<u64>,
        /// Stable code.
        code: ErrorCode,
        /// Why, for the client.
        reason: &'a str,
    },
}

/// How a connection ended on the transport's side.
#[derive(Debug)]
pub enum Ended {
    /// The client closed or vanished; nothing is left to send.
    Gone,
    /// The client broke the transport's rules; close with this reason.
    Closed(DisconnectReason),
}

/// What a transport does for a client: it moves frames, nothing more.
///
/// All methods are awaited by one task, never concurrently. The core puts
/// every call under the connection's write timeout except `recv`.
pub trait Transport: Send {
    /// Reads the next message.
    ///
    /// # Cancel safety
    /// Must be cancel safe: the client waits on it and on its outbox at once.
    fn recv(&mut self) -> impl Future<Output = Result<Inbound, Ended>> + Send;

    /// Encodes and sends one reply, flushing it.
    fn reply(&mut self, reply: Reply<'_>) -> impl Future<Output = Result<(), Ended>> + Send;

    /// Writes every delivery of `batch` (sharing each one's encoding with its
    /// other recipients), then a ping if `ping`, then flushes once.
    fn deliver(
        &mut self,
        batch: &[Arc<Delivery>],
        ping: bool,
    ) -> impl Future<Output = Result<(), Ended>> + Send;

    /// Sends the close (with `reason`'s code) and lets the peer answer, within
    /// a short bound of its own.
    fn close(&mut self, reason: &DisconnectReason) -> impl Future<Output = ()> + Send;

    /// A way to write deliveries into the socket from the publishing thread
    /// while this connection's task is idle (see [`super::DirectWrite`]);
    /// `None` (the default) when the transport cannot.
    fn direct(&self) -> Option<Arc<dyn DirectWrite>> {
        None
    }
}

/// A token, as the authenticator vouches for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user.
    pub user: UserId,
    /// The login session the token belongs to, if any.
    pub login_session: Option<String>,
    /// Granted channel patterns, unparsed.
    pub grants: Vec<String>,
    /// Expiry, seconds since the Unix epoch.
    pub expires_at: u64,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefused {
    /// It expired.
    #[error("token expired")]
    Expired,
    /// It is invalid; the text says why.
    #[error("{0}")]
    Invalid(String),
}

/// The login-session store could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the session store is unavailable: {0}")]
pub struct StoreUnavailable(pub String);

/// Verifies tokens and knows which login sessions are revoked; the core's
/// only view of authentication (implemented in `auth`).
pub trait Authenticator: Send + Sync + fmt::Debug + 'static {
    /// Checks a token's signature and claims.
    ///
    /// # Errors
    /// [`TokenRefused`] says why.
    fn verify(&self, token: &str) -> Result<Credentials, TokenRefused>;

    /// Whether `login_session` was revoked (logout, refresh-token reuse).
    fn is_revoked<'a>(
        &'a self,
        login_session: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreUnavailable>>;
}

/// Per-connection settings, the same for every connection of a node.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// How long a client may take to authenticate.
    pub auth_timeout: Duration,
    /// Whether `auth` without a token is accepted.
    pub allow_anonymous: bool,
    /// Longest a write may take before the client counts as a slow consumer.
    pub write_timeout: Duration,
    /// Names and sizes of client publications.
    pub publications: PublicationLimits,
}

/// What every connection of a node shares: the hub, the authenticator, the
/// limits and the settings. Transports call [`Self::serve`] per socket.
#[derive(Debug)]
pub struct ClientContext {
    hub: Arc<Hub>,
    auth: Arc<dyn Authenticator>,
    limits: Arc<RateLimits>,
    settings: ClientSettings,
}

/// A registered, welcomed connection.
struct Live {
    conn: Arc<Conn>,
    subs: Subscriptions,
    span: tracing::Span,
}

/// An error reply in the making.
struct Refusal {
    code: ErrorCode,
    reason: String,
}

impl Refusal {
    fn new(code: ErrorCode, reason: impl Into<String>) -> Self {
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
            HubError::Engine(EngineError::OutcomeUnknown) => {
                tracing::warn!("the engine did not answer a client request in time");
                "the outcome is unknown: the engine did not answer in time".to_owned()
            }
            HubError::Engine(cause) => {
                tracing::warn!(error = %cause, "engine failed a client request");
                "engine unavailable; retry later".to_owned()
            }
            _ => err.to_string(),
        };
        Self::new(err.code(), reason)
    }
}

impl From<DisconnectReason> for Ended {
    fn from(reason: DisconnectReason) -> Self {
        Self::Closed(reason)
    }
}

impl ClientContext {
    /// The context every connection of a node shares.
    pub fn new(
        hub: Arc<Hub>,
        auth: Arc<dyn Authenticator>,
        limits: Arc<RateLimits>,
        settings: ClientSettings,
    ) -> Self {
        Self {
            hub,
            auth,
            limits,
            settings,
        }
    }

    /// The hub.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// The node's limits.
    pub fn limits(&self) -> &Arc<RateLimits> {
        &self.limits
    }

    /// The settings.
    pub fn settings(&self) -> &ClientSettings {
        &self.settings
    }

    /// Checks what the signature alone cannot: a revoked login session,
    /// malformed grants.
    async fn admit(&self, credentials: Credentials) -> Result<Identity, Ended> {
        if let Some(login_session) = &credentials.login_session {
            match self.auth.is_revoked(login_session).await {
                Ok(false) => {}
                Ok(true) => return Err(DisconnectReason::SessionRevoked.into()),
                Err(err) => {
                    tracing::warn!(error = %err, "checking session revocation failed");
                    return Err(DisconnectReason::Internal.into());
                }
            }
        }
        let grants = credentials
            .grants
            .iter()
            .map(|g| ChannelPattern::parse(g))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| DisconnectReason::InvalidToken("invalid claim: channels".into()))?;
        Ok(Identity {
            user: Some(credentials.user),
            login_session: credentials.login_session,
            grants,
            expires_at_ms: credentials.expires_at.saturating_mul(1000),
        })
    }

    /// Replaces the connection's token with a fresh one for the same user
    /// and login session.
    async fn refresh(&self, conn: &Conn, token: &str) -> Result<(), Refusal> {
        let reject =
            |why: &str| Refusal::new(ErrorCode::TokenRejected, format!("token rejected: {why}"));
        let credentials = self
            .auth
            .verify(token)
            .map_err(|e| reject(&e.to_string()))?;
        if Some(&credentials.user) != conn.user() {
            return Err(reject("it belongs to another user"));
        }
        // The connection stays in its login session: a token of another (or
        // no) session must not extend it, nor a token of a revoked one.
        if credentials.login_session.as_deref() != conn.login_session() {
            return Err(reject("it belongs to another session"));
        }
        if let Some(sid) = &credentials.login_session {
            match self.auth.is_revoked(sid).await {
                Ok(false) => {}
                Ok(true) => return Err(reject("the session is revoked")),
                // An outage is not an answer about the session.
                Err(err) => {
                    tracing::warn!(error = %err, "checking session revocation failed");
                    return Err(Refusal::new(
                        ErrorCode::SessionStoreUnavailable,
                        "the session store is unavailable; retry later",
                    ));
                }
            }
        }
        conn.set_expiry(credentials.expires_at.saturating_mul(1000));
        Ok(())
    }

    /// Serves one connection until it closes: its whole life (see the
    /// module docs). `token` is one the transport found in the upgrade
    /// request; without it the first request must be `auth`.
    ///
    /// Not an `async fn`: the client is built before the future, so the
    /// future stores the transport once (an async fn would keep its
    /// arguments as well as the values moved out of them, and there is one
    /// such future per socket).
    pub fn serve<T: Transport>(
        self: &Arc<Self>,
        transport: T,
        token: Option<String>,
    ) -> impl Future<Output = ()> + Send + use<T> {
        let client = Client {
            transport,
            ctx: Arc::clone(self),
        };
        client.run(token)
    }
}

impl ClientContext {
    /// [`Self::serve`], keeping `held` (the per-IP slot, say) until the
    /// connection ends: the future a transport spawns for a connection.
    /// Made with `map`, not an async block, which would store the serving
    /// future twice (captured, then moved to be awaited).
    pub fn serve_holding<T: Transport, H: Send + 'static>(
        self: &Arc<Self>,
        transport: T,
        token: Option<String>,
        held: H,
    ) -> impl Future<Output = ()> + Send + use<T, H> {
        self.serve(transport, token).map(move |()| drop(held))
    }
}

struct Client<T> {
    transport: T,
    ctx: Arc<ClientContext>,
}

impl<T: Transport> Client<T> {
    /// Not an `async fn` either, for the same reason as [`ClientContext::serve`]:
    /// the block below captures the client and the token once.
    fn run(self, token: Option<String>) -> impl Future<Output = ()> + Send + use<T> {
        let mut client = self;
        async move {
            // Every phase but the serving loop is boxed: an idle connection's
            // future then holds only the loop's state, not the larger state of
            // authentication, setup, request handling or closing.
            let end = match Box::pin(client.open(token)).await {
                Ok(mut live) => {
                    let span = live.span.clone();
                    let result =
                        Box::pin(client.serve(&live.conn, &mut live.subs).instrument(span)).await;
                    let end = result.err().unwrap_or(Ended::Gone);
                    client.finish(live, &end);
                    end
                }
                Err(end) => end,
            };
            if let Ended::Closed(reason) = end {
                client.ctx.hub.record_close(reason.close_code());
                Box::pin(client.transport.close(&reason)).await;
            }
        }
    }

    async fn open(&mut self, token: Option<String>) -> Result<Live, Ended> {
        let (credentials, auth_id) = self.authenticate(token).await?;
        let identity = match credentials {
            Some(credentials) => self.ctx.admit(credentials).await?,
            None => Identity::default(),
        };
        if let Some(user) = &identity.user
            && !self.ctx.limits.acquire_user(user.as_str())
        {
            return Err(DisconnectReason::UserConnectionLimit.into());
        }
        let user = identity.user.clone();
        let conn = match self.ctx.hub.connect(identity) {
            Ok(conn) => conn,
            Err(reason) => {
                self.release_user(user.as_ref());
                return Err(reason.into());
            }
        };
        let span = tracing::info_span!(
            "conn",
            conn_id = conn.id(),
            user_id = conn.user().map(UserId::as_str)
        );
        let mut live = Live {
            conn,
            subs: Subscriptions::default(),
            span,
        };
        match self
            .welcome(&live.conn, &mut live.subs, auth_id)
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

    /// A token from the upgrade, or the first request, within the timeout.
    async fn authenticate(
        &mut self,
        token: Option<String>,
    ) -> Result<(Option<Credentials>, Option<u64>), Ended> {
        if let Some(token) = token {
            return self.verify(&token).map(|c| (Some(c), None));
        }
        match timeout(self.ctx.settings.auth_timeout, self.await_auth()).await {
            Ok(result) => result,
            Err(_) => Err(DisconnectReason::AuthTimeout.into()),
        }
    }

    async fn await_auth(&mut self) -> Result<(Option<Credentials>, Option<u64>), Ended> {
        loop {
            let (id, request) = match self.transport.recv().await? {
                Inbound::Request { id, request } => (id, request),
                Inbound::Invalid { id, code, reason } => {
                    self.reply_error(id, code, &reason).await?;
                    continue;
                }
                Inbound::Control => continue,
            };
            match request {
                Request::Auth { token: Some(token) } => {
                    return self.verify(&token).map(|c| (Some(c), id));
                }
                Request::Auth { token: None } if self.ctx.settings.allow_anonymous => {
                    return Ok((None, id));
                }
                Request::Auth { .. } => return Err(DisconnectReason::Forbidden.into()),
                Request::Ping => self.reply(Reply::Pong { id }).await?,
                _ => {
                    self.reply_error(
                        id,
                        ErrorCode::NotAuthenticated,
                        "send an `auth` message first",
                    )
                    .await?;
                }
            }
        }
    }

    fn verify(&self, token: &str) -> Result<Credentials, Ended> {
        match self.ctx.auth.verify(token) {
            Ok(credentials) => Ok(credentials),
            Err(TokenRefused::Expired) => Err(DisconnectReason::TokenExpired.into()),
            Err(TokenRefused::Invalid(why)) => {
                tracing::debug!(error = %why, "token refused");
                Err(DisconnectReason::InvalidToken(why).into())
            }
        }
    }

    async fn welcome(
        &mut self,
        conn: &Arc<Conn>,
        subs: &mut Subscriptions,
        auth_id: Option<u64>,
    ) -> Result<(), Ended> {
        let hub = Arc::clone(&self.ctx.hub);
        let channels = hub.join_automatic(conn, subs).await.map_err(|err| {
            tracing::warn!(error = %err, "joining automatic channels failed");
            Ended::Closed(DisconnectReason::Internal)
        })?;
        let welcome = Welcome {
            id: auth_id,
            conn_id: format!("{}-{}", hub.node_id(), conn.id()),
            user_id: conn.user().cloned(),
            node_id: hub.node_id().to_owned(),
            heartbeat_ms: u64::try_from(hub.config().heartbeat_interval.as_millis())
                .unwrap_or(u64::MAX),
            channels,
        };
        self.reply(Reply::Welcome(&welcome)).await?;
        // Direct writes start after the welcome: nothing may precede it.
        if let Some(direct) = self.transport.direct() {
            conn.outbox().attach(direct);
        }
        tracing::debug!("connected");
        Ok(())
    }

    /// Unregisters from the hub and returns the per-user slot.
    fn finish(&self, mut live: Live, end: &Ended) {
        // From here on only this task writes (the close frame, say), and
        // the socket is not kept open by the outbox.
        live.conn.outbox().detach();
        self.ctx.hub.disconnect(&live.conn, &mut live.subs);
        self.release_user(live.conn.user());
        live.span.in_scope(|| match end {
            Ended::Closed(reason) => {
                tracing::debug!(code = reason.close_code().as_u16(), "closing");
            }
            Ended::Gone => tracing::debug!("client gone"),
        });
    }

    fn release_user(&self, user: Option<&UserId>) {
        if let Some(user) = user {
            self.ctx.limits.release_user(user.as_str());
        }
    }

    /// The serving loop: outbound queue and inbound requests.
    async fn serve(&mut self, conn: &Arc<Conn>, subs: &mut Subscriptions) -> Result<(), Ended> {
        let mut batch = Vec::new();
        let mut limiter = self.ctx.limits.message_limiter();
        loop {
            tokio::select! {
                // Outbound first: a client that floods requests must not
                // starve its own pushes (or its close signal).
                biased;
                () = conn.outbox().ready() => {
                    let signals = conn.outbox().take(&mut batch);
                    // Boxed like every phase but the wait itself: an idle
                    // connection's future then holds no write state (a
                    // timer, the frames being fed), and with direct writes
                    // this path runs for pings and for backlogs only.
                    let write = self.transport.deliver(&batch, signals.ping);
                    Box::pin(within(self.ctx.settings.write_timeout, write)).await?;
                    batch.clear();
                    if let Some(reason) = signals.close {
                        return Err(reason.into());
                    }
                    conn.outbox().release();
                }
                inbound = self.transport.recv() => {
                    self.ctx.hub.touch(conn);
                    let (id, request) = match inbound? {
                        Inbound::Control => continue,
                        Inbound::Request { id, request } => (id, Ok(request)),
                        Inbound::Invalid { id, code, reason } => (id, Err((code, reason))),
                    };
                    match limiter.check() {
                        Verdict::Allow => {}
                        Verdict::Refuse => {
                            conn.outbox().hold();
                            Box::pin(self.reply_error(id, ErrorCode::RateLimited, "rate limit exceeded; slow down"))
                                .await?;
                            conn.outbox().release();
                            continue;
                        }
                        Verdict::Close => return Err(DisconnectReason::RateLimited.into()),
                    }
                    // Replies and pushes keep their order: no direct write
                    // while this task answers (a push of a channel must not
                    // overtake the reply that subscribed to it).
                    conn.outbox().hold();
                    match request {
                        Ok(request) => Box::pin(self.handle(conn, subs, id, request)).await?,
                        Err((code, reason)) => Box::pin(self.reply_error(id, code, &reason)).await?,
                    }
                    conn.outbox().release();
                }
            }
        }
    }

    async fn handle(
        &mut self,
        conn: &Arc<Conn>,
        subs: &mut Subscriptions,
        id: Option<u64>,
        request: Request,
    ) -> Result<(), Ended> {
        let hub = Arc::clone(&self.ctx.hub);
        let rules = self.ctx.settings.publications;
        let result = match request {
            Request::Ping => return self.reply(Reply::Pong { id }).await,
            Request::Subscribe {
                channel,
                since,
                latest,
            } => {
                let subscribed = match rules.channel(&channel) {
                    Ok(channel) => hub
                        .subscribe(conn, subs, channel, Recovery { since, latest })
                        .await
                        .map_err(Refusal::from),
                    Err(invalid) => Err(Refusal::new(invalid.code(), invalid.to_string())),
                };
                return match subscribed {
                    Ok(Subscribed::Live) => self.reply(Reply::Ok { id }).await,
                    Ok(Subscribed::Stream {
                        position,
                        recovered,
                    }) => {
                        self.reply(Reply::Subscribed {
                            id,
                            position: &position,
                            recovered,
                        })
                        .await
                    }
                    Err(refusal) => self.reply_error(id, refusal.code, &refusal.reason).await,
                };
            }
            Request::History { channel, query } => {
                let page = match rules.channel(&channel) {
                    Ok(channel) => hub
                        .client_history(conn, channel, query)
                        .await
                        .map_err(Refusal::from),
                    Err(invalid) => Err(Refusal::new(invalid.code(), invalid.to_string())),
                };
                return match page {
                    Ok(HistoryPage {
                        publications,
                        position,
                    }) => {
                        self.reply(Reply::History {
                            id,
                            publications: &publications,
                            position: &position,
                        })
                        .await
                    }
                    Err(refusal) => self.reply_error(id, refusal.code, &refusal.reason).await,
                };
            }
            Request::Auth { .. } => Err(Refusal::new(
                ErrorCode::AlreadyAuthenticated,
                "already authenticated; use `refresh` to replace the token",
            )),
            Request::Refresh { token } => self.ctx.refresh(conn, &token).await,
            Request::Unsubscribe { channel } => rules
                .channel(&channel)
                .map_err(|invalid| Refusal::new(invalid.code(), invalid.to_string()))
                .and_then(|channel| hub.unsubscribe(conn, subs, channel).map_err(Refusal::from)),
            Request::Publish {
                channel,
                event,
                data,
            } => match rules.client_publication(&channel, &event, data) {
                Ok(publication) => hub
                    .client_publish(conn, publication)
                    .await
                    .map_err(Refusal::from),
                Err(invalid) => Err(Refusal::new(invalid.code(), invalid.to_string())),
            },
        };
        match result {
            Ok(()) => self.reply(Reply::Ok { id }).await,
            Err(refusal) => self.reply_error(id, refusal.code, &refusal.reason).await,
        }
    }

    async fn reply(&mut self, reply: Reply<'_>) -> Result<(), Ended> {
        within(self.ctx.settings.write_timeout, self.transport.reply(reply)).await
    }

    async fn reply_error(
        &mut self,
        id: Option<u64>,
        code: ErrorCode,
        reason: &str,
    ) -> Result<(), Ended> {
        self.reply(Reply::Error { id, code, reason }).await
    }
}

/// Runs a write under the write timeout: a client that does not take its
/// bytes in time is a slow consumer.
async fn within(
    limit: Duration,
    write: impl Future<Output = Result<(), Ended>>,
) -> Result<(), Ended> {
    match timeout(limit, write).await {
        Ok(result) => result,
        Err(_) => Err(DisconnectReason::SlowConsumer.into()),
    }
}
