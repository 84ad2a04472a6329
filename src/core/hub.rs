//! The hub: connections, subscriptions, publishing and lifecycle on one node.

use std::{
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use dashmap::DashMap;
use metrics::{Counter, Gauge};
use tokio::time::Instant;

use super::{
    ChannelRules, Conn, ConnId, Delivery, DisconnectReason, Identity, Joined, Left, Payload,
    Recovery, Registry, Requester, Subscribed, Subscriptions,
};
use crate::{
    engine::{Engine, EngineError, Keyed, Kick, NodeStats, Once, TopChannel},
    metrics as names,
    protocol::{ChannelName, CloseCode, ErrorCode, Publication, UserId, unix_ms},
};

pub(super) fn requester(conn: &Conn) -> Requester<'_> {
    Requester {
        user: conn.user().map(UserId::as_str),
        grants: conn.grants(),
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Told about every confirmed join and every leave on this node: the seam
/// for presence. Called synchronously on the joining or leaving
/// connection's task, so it must not block; it never runs on the fan-out.
pub trait MembershipObserver: Send + Sync + std::fmt::Debug + 'static {
    /// `conn` joined `channel` (and the engine confirmed it).
    fn joined(&self, channel: &ChannelName, conn: &Conn);
    /// `conn` left `channel` (unsubscribed or disconnected).
    fn left(&self, channel: &ChannelName, conn: &Conn);
}

/// Settings of the hub core.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// This node's id, shown to clients and in stats.
    pub node_id: String,
    /// Most connections this node accepts.
    pub max_connections: usize,
    /// Most channels one connection may subscribe to (automatic channels not counted).
    pub max_subscriptions: usize,
    /// How often each connection is pinged.
    pub heartbeat_interval: Duration,
    /// How long past the interval a silent connection is kept.
    pub heartbeat_timeout: Duration,
    /// Whether readiness requires a connected engine.
    pub ready_requires_engine: bool,
    /// How long before token expiry `token_expiring` is sent.
    pub expiry_warning: Duration,
    /// How long past token expiry a connection may stay without a refresh.
    pub expiry_grace: Duration,
    /// Longest a join waits for the engine's subscription before the
    /// request fails with `engine_unavailable` (112). While it waits, the
    /// connection reads nothing and writes nothing, so it must be bounded.
    pub engine_timeout: Duration,
}

/// Why a request was refused; mapped to a protocol error code in [`HubError::code`].
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The connection may not do this on this channel.
    #[error("permission denied: {0}")]
    PermissionDenied(&'static str),
    /// Already a member.
    #[error("already subscribed to {0}")]
    AlreadySubscribed(ChannelName),
    /// Not a member.
    #[error("not subscribed to {0}")]
    NotSubscribed(ChannelName),
    /// At the per-connection subscription limit.
    #[error("subscription limit of {0} reached")]
    SubscriptionLimit(usize),
    /// The channel keeps no history.
    #[error("channel {0} keeps no history")]
    NoHistory(ChannelName),
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl HubError {
    /// The protocol error code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::PermissionDenied(_) => ErrorCode::PermissionDenied,
            Self::AlreadySubscribed(_) => ErrorCode::AlreadySubscribed,
            Self::NotSubscribed(_) => ErrorCode::NotSubscribed,
            Self::SubscriptionLimit(_) => ErrorCode::SubscriptionLimit,
            Self::NoHistory(_) => ErrorCode::NoHistory,
            Self::Engine(EngineError::OutcomeUnknown) => ErrorCode::OutcomeUnknown,
            Self::Engine(_) => ErrorCode::EngineUnavailable,
        }
    }
}

pub(super) struct HubMetrics {
    connections: Gauge,
    opened: Counter,
    subscriptions: Gauge,
    pub(super) channels: Gauge,
    published: Counter,
}

/// One node's hub. Transports drive it; engines feed its [`Registry`].
pub struct Hub {
    config: HubConfig,
    pub(super) rules: Arc<ChannelRules>,
    pub(super) registry: Arc<Registry>,
    pub(super) engine: Arc<dyn Engine>,
    conns: DashMap<ConnId, Arc<Conn>>,
    connections: AtomicUsize,
    subscriptions: AtomicUsize,
    next_id: AtomicU64,
    draining: AtomicBool,
    started: Instant,
    pub(super) metrics: HubMetrics,
    observer: OnceLock<Arc<dyn MembershipObserver>>,
    /// Whether any namespace keeps history: without one, publishing skips
    /// the namespace lookup.
    pub(super) any_history: bool,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("node_id", &self.config.node_id)
            .field("connections", &self.connections)
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// A hub over `registry`, publishing through `engine` (which delivers into `registry`).
    pub fn new(
        config: HubConfig,
        rules: Arc<ChannelRules>,
        registry: Arc<Registry>,
        engine: Arc<dyn Engine>,
    ) -> Arc<Self> {
        Arc::new(Self {
            any_history: rules.any_history(),
            config,
            rules,
            registry,
            engine,
            conns: DashMap::new(),
            connections: AtomicUsize::new(0),
            subscriptions: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            draining: AtomicBool::new(false),
            started: Instant::now(),
            observer: OnceLock::new(),
            metrics: HubMetrics {
                connections: metrics::gauge!(names::CONNECTIONS),
                opened: metrics::counter!(names::CONNECTIONS_OPENED),
                subscriptions: metrics::gauge!(names::SUBSCRIPTIONS),
                channels: metrics::gauge!(names::CHANNELS),
                published: metrics::counter!(names::MESSAGES_PUBLISHED),
            },
        })
    }

    /// Installs the one observer of joins and leaves (presence plugs in
    /// here). `false` if one is installed already.
    pub fn observe(&self, observer: Arc<dyn MembershipObserver>) -> bool {
        self.observer.set(observer).is_ok()
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.config.node_id
    }

    /// The hub's settings.
    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// The channel rules.
    pub fn rules(&self) -> &ChannelRules {
        &self.rules
    }

    /// Whether the node is ready for new connections: not draining and the engine is up.
    pub fn is_ready(&self) -> bool {
        !self.is_draining() && (!self.config.ready_requires_engine || self.engine.is_connected())
    }

    /// Whether the node is draining for shutdown.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Registers a new authenticated (or anonymous) connection.
    ///
    /// # Errors
    /// [`DisconnectReason::Shutdown`] while draining, [`DisconnectReason::ConnectionLimit`] when full.
    pub fn connect(&self, identity: Identity) -> Result<Arc<Conn>, DisconnectReason> {
        if self.is_draining() {
            return Err(DisconnectReason::Shutdown);
        }
        if self.connections.fetch_add(1, Ordering::AcqRel) >= self.config.max_connections {
            self.connections.fetch_sub(1, Ordering::AcqRel);
            return Err(DisconnectReason::ConnectionLimit);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let expires_at_ms = identity.expires_at_ms;
        let conn = Arc::new(Conn::new(id, identity, self.now_ms()));
        conn.set_expiry(expires_at_ms);
        self.conns.insert(id, Arc::clone(&conn));
        self.metrics.connections.increment(1);
        self.metrics.opened.increment(1);
        Ok(conn)
    }

    /// Joins the channels every connection gets: its user's personal channel and broadcast.
    ///
    /// # Errors
    /// If the engine cannot subscribe.
    pub async fn join_automatic(
        &self,
        conn: &Arc<Conn>,
        subs: &mut Subscriptions,
    ) -> Result<Vec<ChannelName>, HubError> {
        let mut channels = Vec::with_capacity(3);
        if let Some(user) = conn.user() {
            channels.push(ChannelName::personal(user));
        }
        if let Some(channel) = conn.login_session().and_then(ChannelName::session) {
            channels.push(channel);
        }
        channels.push(ChannelName::broadcast());
        for channel in &channels {
            self.join(conn, subs, channel.clone()).await?;
        }
        subs.automatic = channels.len();
        Ok(channels)
    }

    /// Subscribes a connection to a channel, checking permissions and limits.
    ///
    /// # Errors
    /// [`HubError`] names the refused rule; nothing changed in that case.
    pub async fn subscribe(
        &self,
        conn: &Arc<Conn>,
        subs: &mut Subscriptions,
        channel: ChannelName,
        recovery: Recovery,
    ) -> Result<Subscribed, HubError> {
        if channel.is_reserved() {
            return Err(HubError::PermissionDenied(
                "personal and broadcast channels are joined automatically",
            ));
        }
        if let Some(why) = self.rules.refuse_subscribe(&channel, requester(conn)) {
            return Err(HubError::PermissionDenied(why));
        }
        if subs.contains(&channel) {
            return Err(HubError::AlreadySubscribed(channel));
        }
        if subs.len() - subs.automatic >= self.config.max_subscriptions {
            return Err(HubError::SubscriptionLimit(self.config.max_subscriptions));
        }
        match self.rules.history(&channel) {
            None => {
                self.join(conn, subs, channel).await?;
                Ok(Subscribed::Live)
            }
            Some(history) => {
                self.join_stream(conn, subs, channel, history, recovery)
                    .await
            }
        }
    }

    async fn join(
        &self,
        conn: &Arc<Conn>,
        subs: &mut Subscriptions,
        channel: ChannelName,
    ) -> Result<(), HubError> {
        if self.registry.join(&channel, conn) == Joined::First {
            self.metrics.channels.increment(1);
        }
        self.engine_join(conn, &channel).await?;
        self.joined(conn, subs, channel);
        Ok(())
    }

    pub(super) async fn within_engine_timeout<T>(
        &self,
        op: impl Future<Output = Result<T, EngineError>>,
    ) -> Result<T, EngineError> {
        match tokio::time::timeout(self.config.engine_timeout, op).await {
            Ok(result) => result,
            Err(_elapsed) => Err(EngineError::Unavailable(
                "the engine did not answer in time".into(),
            )),
        }
    }

    /// Makes sure the engine brings `channel` to this node; on failure the
    /// connection leaves again.
    pub(super) async fn engine_join(
        &self,
        conn: &Conn,
        channel: &ChannelName,
    ) -> Result<(), HubError> {
        // Asked on every join, not only the first: a second subscriber that
        // joins while the first one's engine subscription is still in flight
        // must also wait for it, or publications in between would be missed.
        let subscribed = match tokio::time::timeout(
            self.config.engine_timeout,
            self.engine.subscribe(channel.clone()),
        )
        .await
        {
            Ok(result) => result,
            Err(_elapsed) => Err(EngineError::Unavailable(
                "the engine did not confirm the subscription in time".into(),
            )),
        };
        if let Err(err) = subscribed {
            self.leave(conn.id(), channel);
            return Err(err.into());
        }
        Ok(())
    }

    /// Books a confirmed join.
    pub(super) fn joined(&self, conn: &Arc<Conn>, subs: &mut Subscriptions, channel: ChannelName) {
        if let Some(observer) = self.observer.get() {
            observer.joined(&channel, conn);
        }
        subs.insert(channel);
        self.subscriptions.fetch_add(1, Ordering::Relaxed);
        self.metrics.subscriptions.increment(1);
    }

    /// Unsubscribes a connection from a channel.
    ///
    /// # Errors
    /// [`HubError::PermissionDenied`] for automatic channels, [`HubError::NotSubscribed`].
    pub fn unsubscribe(
        &self,
        conn: &Conn,
        subs: &mut Subscriptions,
        channel: ChannelName,
    ) -> Result<(), HubError> {
        if channel.is_reserved() {
            return Err(HubError::PermissionDenied(
                "personal and broadcast channels cannot be left",
            ));
        }
        if !subs.remove(&channel) {
            return Err(HubError::NotSubscribed(channel));
        }
        self.leave(conn.id(), &channel);
        if let Some(observer) = self.observer.get() {
            observer.left(&channel, conn);
        }
        self.subscriptions.fetch_sub(1, Ordering::Relaxed);
        self.metrics.subscriptions.decrement(1);
        Ok(())
    }

    pub(super) fn leave(&self, id: ConnId, channel: &ChannelName) {
        if self.registry.leave(channel, id) == Left::Last {
            self.metrics.channels.decrement(1);
            self.engine.unsubscribe(channel.clone());
        }
    }

    /// Removes a connection and all its subscriptions.
    pub fn disconnect(&self, conn: &Conn, subs: &mut Subscriptions) {
        let channels = subs.take();
        let observer = self.observer.get();
        for channel in &channels {
            self.leave(conn.id(), channel);
            if let Some(observer) = observer {
                observer.left(channel, conn);
            }
        }
        self.subscriptions
            .fetch_sub(channels.len(), Ordering::Relaxed);
        self.metrics.subscriptions.decrement(channels.len() as f64);
        if self.conns.remove(&conn.id()).is_some() {
            self.connections.fetch_sub(1, Ordering::AcqRel);
            self.metrics.connections.decrement(1);
        }
    }

    /// Counts a connection that herald closed with `code`.
    pub fn record_close(&self, code: CloseCode) {
        metrics::counter!(names::CLOSES, "code" => code.as_u16().to_string()).increment(1);
        // Counted here, where every slow consumer ends (queue overflow or a
        // blocked write alike), and nowhere else.
        if code == CloseCode::SlowConsumer {
            metrics::counter!(names::SLOW_CONSUMER_DISCONNECTS).increment(1);
        }
    }

    /// Records that the client sent something (any frame counts as alive).
    pub fn touch(&self, conn: &Conn) {
        conn.touch(self.now_ms());
    }

    /// Publishes a batch through the engine. Returns, per publication, the
    /// number of local subscribers of its channel.
    ///
    /// # Errors
    /// If the engine did not accept the batch; then nothing may be reported as delivered.
    pub async fn publish(&self, mut batch: Vec<Publication>) -> Result<Vec<usize>, EngineError> {
        batch.iter_mut().for_each(|p| self.stamp(p));
        let counts = batch
            .iter()
            .map(|p| self.registry.subscriber_count(p.channel.as_str()))
            .collect();
        let len = batch.len() as u64;
        self.engine.publish(batch).await?;
        self.metrics.published.increment(len);
        Ok(counts)
    }

    /// Publishes a batch at most once per idempotency key (`keys[i]` for
    /// `batch[i]`). Returns, per publication, the subscriber count to answer
    /// (for a repeat, the first attempt's) and whether it was a repeat.
    ///
    /// # Errors
    /// As [`Hub::publish`]; after [`EngineError::OutcomeUnknown`] a retry
    /// with the same keys publishes only what did not go out.
    pub async fn publish_once(
        &self,
        batch: Vec<Publication>,
        keys: Vec<String>,
    ) -> Result<Vec<(usize, bool)>, EngineError> {
        let keyed: Vec<Keyed> = batch
            .into_iter()
            .zip(keys)
            .map(|(mut publication, key)| {
                self.stamp(&mut publication);
                (publication, key)
            })
            .map(|(publication, key)| Keyed {
                answer: self.registry.subscriber_count(publication.channel.as_str()) as u64,
                publication,
                key,
            })
            .collect();
        let answers: Vec<u64> = keyed.iter().map(|k| k.answer).collect();
        let outcomes = self.engine.publish_once(keyed).await?;
        let mut published = 0;
        let results = outcomes
            .into_iter()
            .zip(answers)
            .map(|(outcome, answer)| match outcome {
                Once::Published => {
                    published += 1;
                    (usize::try_from(answer).unwrap_or(usize::MAX), false)
                }
                Once::Duplicate(first) => (usize::try_from(first).unwrap_or(usize::MAX), true),
            })
            .collect();
        self.metrics.published.increment(published);
        Ok(results)
    }

    /// Publishes on behalf of a client, if the channel rules allow it.
    ///
    /// # Errors
    /// [`HubError::PermissionDenied`] when not allowed, [`HubError::Engine`] when the engine failed.
    pub async fn client_publish(
        &self,
        conn: &Conn,
        publication: Publication,
    ) -> Result<(), HubError> {
        let channel = &publication.channel;
        if channel.is_reserved() {
            return Err(HubError::PermissionDenied(
                "clients may not publish to this channel",
            ));
        }
        if let Some(why) = self.rules.refuse_publish(channel, requester(conn)) {
            return Err(HubError::PermissionDenied(why));
        }
        self.publish(vec![publication]).await?;
        Ok(())
    }

    /// Closes every connection of `user` on every node (code 4504).
    /// Returns how many were open on this node.
    ///
    /// # Errors
    /// If the engine cannot reach the other nodes.
    pub async fn disconnect_user(&self, user: &UserId) -> Result<usize, EngineError> {
        self.kick(ChannelName::personal(user), Kick::User).await
    }

    /// Closes every connection of login session `login_session` on every
    /// node (code 4505). Returns how many were open on this node.
    ///
    /// # Errors
    /// If the engine cannot reach the other nodes.
    pub async fn revoke_session(&self, login_session: &str) -> Result<usize, EngineError> {
        match ChannelName::session(login_session) {
            Some(channel) => self.kick(channel, Kick::Revoked).await,
            None => Ok(0),
        }
    }

    async fn kick(&self, channel: ChannelName, kick: Kick) -> Result<usize, EngineError> {
        let local = self.registry.subscriber_count(channel.as_str());
        self.engine.disconnect(channel, kick).await?;
        Ok(local)
    }

    /// Stops accepting connections and closes every open one with
    /// [`DisconnectReason::Shutdown`], spread evenly over `window` so that
    /// clients do not reconnect to the other nodes all at once.
    pub async fn drain(&self, window: Duration) {
        self.draining.store(true, Ordering::Release);
        let conns: Vec<Arc<Conn>> = self.conns.iter().map(|e| Arc::clone(e.value())).collect();
        let Some(count) = u32::try_from(conns.len()).ok().filter(|n| *n > 0) else {
            return;
        };
        let step = window / count;
        let start = Instant::now();
        for (i, conn) in (0..count).zip(&conns) {
            tokio::time::sleep_until(start + step * i).await;
            conn.close(DisconnectReason::Shutdown);
        }
        // A connection that passed the draining check just before the flag
        // was set may have registered after the snapshot: close it too.
        for entry in self.conns.iter() {
            entry.value().close(DisconnectReason::Shutdown);
        }
    }

    /// Pings connections on a shared schedule and closes silent ones.
    ///
    /// One task serves every connection, so idle connections carry no timer.
    /// Each connection is pinged once per interval, at a phase set by its id,
    /// which spreads pings evenly instead of bursting them.
    pub async fn run_heartbeats(self: Arc<Self>) {
        let interval = self.config.heartbeat_interval;
        let tick = (interval / 10).clamp(Duration::from_millis(20), Duration::from_secs(1));
        let slots = (interval.as_millis() / tick.as_millis().max(1)).max(1) as u64;
        let limit_ms = u64::try_from((interval + self.config.heartbeat_timeout).as_millis())
            .unwrap_or(u64::MAX);
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        for round in 0u64.. {
            ticker.tick().await;
            let now = self.now_ms();
            let slot = round % slots;
            let unix_now = unix_ms();
            for entry in self.conns.iter() {
                let conn = entry.value();
                if now.saturating_sub(conn.last_seen_ms()) > limit_ms {
                    conn.close(DisconnectReason::HeartbeatTimeout);
                    continue;
                }
                self.check_expiry(conn, unix_now);
                if conn.id() % slots == slot {
                    conn.outbox().request_ping();
                }
            }
        }
    }

    /// Warns a connection whose token expires soon; closes it once the
    /// token expired and the grace period passed without a refresh.
    fn check_expiry(&self, conn: &Conn, unix_now: u64) {
        let expires_at = conn.expires_at_ms();
        if expires_at == 0 {
            return;
        }
        // `exp` comes from the token: a far-future one saturates to "never"
        // instead of wrapping around to a deadline in the past.
        let deadline = expires_at.saturating_add(millis(self.config.expiry_grace));
        if unix_now >= deadline {
            conn.close(DisconnectReason::TokenExpired);
        } else if unix_now.saturating_add(millis(self.config.expiry_warning)) >= expires_at
            && conn.warn_once()
        {
            let notice = Arc::new(Delivery::new(Payload::TokenExpiring {
                expires_in_ms: deadline - unix_now,
            }));
            conn.outbox().push(&notice, false, self.registry.limits());
        }
    }

    /// A snapshot of this node's state.
    pub fn stats(&self, top: usize) -> NodeStats {
        NodeStats {
            node_id: self.config.node_id.clone(),
            uptime_seconds: self.started.elapsed().as_secs(),
            connections: self.connections.load(Ordering::Relaxed),
            subscriptions: self.subscriptions.load(Ordering::Relaxed),
            channels: self.registry.channel_count(),
            draining: self.is_draining(),
            engine_connected: self.engine.is_connected(),
            top_channels: self
                .registry
                .top_channels(top)
                .into_iter()
                .map(|(channel, subscribers)| TopChannel {
                    channel: channel.as_str().to_owned(),
                    subscribers,
                })
                .collect(),
        }
    }
}
