//! One reader shard: a pub/sub connection, the channels it serves, and the
//! task that reads it and hands messages to the local fan-out.
//!
//! Subscription changes arrive as commands; every command already queued is
//! applied as one SUBSCRIBE and one UNSUBSCRIBE, so churn costs few round
//! trips. A channel that loses its last local subscriber lingers before it
//! is unsubscribed, so a client that leaves and rejoins does not flap it.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    future::Future,
    pin::Pin,
    sync::{Arc, OnceLock, Weak},
    time::Duration,
};

use futures_util::FutureExt as _;
use metrics::{Counter, Histogram};
use tokio::{
    sync::{mpsc, oneshot},
    time::{Instant, sleep, sleep_until, timeout},
};

use super::{
    RedisHandle, StreamReader,
    backend::{Backend, Connection, Event, Moved},
    readers::{Readers, Status},
};
use crate::{
    engine::{
        EngineError, SharedDispatcher,
        envelope::{self, Decoded},
    },
    metrics as names,
    protocol::{ChannelName, EventName, Publication, StreamPosition, unix_ms},
};

/// A request to a shard.
#[derive(Debug)]
pub(super) enum Command {
    /// Serve this channel; answer once publications to it will arrive.
    Subscribe(ChannelName, oneshot::Sender<Result<(), EngineError>>),
    /// This node no longer needs the channel.
    Unsubscribe(ChannelName),
    /// The channel's cluster slot moved to this shard's master: serve it
    /// from now on and tell its subscribers they may have missed messages.
    Adopt(ChannelName),
}

/// Settings every shard shares.
#[derive(Debug, Clone)]
pub(super) struct ShardConfig {
    pub(super) prefix: String,
    pub(super) linger: Duration,
    pub(super) default_event: EventName,
    pub(super) max_data_size: usize,
    pub(super) backoff_min: Duration,
    pub(super) backoff_max: Duration,
    /// Deadline of opening the connection.
    pub(super) connect_timeout: Duration,
    /// Deadline of each SUBSCRIBE / UNSUBSCRIBE.
    pub(super) command_timeout: Duration,
    /// How often a health-check PING is sent.
    pub(super) ping_interval: Duration,
    /// How long a PING may go unanswered before the connection counts as lost.
    pub(super) ping_timeout: Duration,
    /// The other shards, to hand over a channel whose slot moved.
    pub(super) peers: Weak<OnceLock<Readers>>,
    /// Reads channel streams, to fill offsets the live stream skipped.
    pub(super) streams: StreamReader,
    /// The engine's command connection (stream reads).
    pub(super) writer: RedisHandle,
}

struct Metrics {
    reconnects: Counter,
    resubscribe: Histogram,
    lag: Histogram,
    oversized: Counter,
    invalid: Counter,
    detect: Histogram,
    down: Histogram,
}

pub(super) struct Shard<B: Backend> {
    index: usize,
    backend: B,
    config: ShardConfig,
    commands: mpsc::UnboundedReceiver<Command>,
    dispatcher: SharedDispatcher,
    status: Arc<Status>,
    /// Channels subscribed in Redis because this node has local subscribers.
    active: HashSet<ChannelName>,
    /// Channels still subscribed in Redis, waiting out their linger.
    lingering: HashMap<ChannelName, Instant>,
    /// `lingering` in deadline order (entries may be stale; the map decides).
    expiry: VecDeque<(Instant, ChannelName)>,
    /// Unsubscribe confirmations still due, per key: on a cluster they arrive
    /// as the same push as a server-side drop, and must not be taken for one.
    confirmations: HashMap<String, usize>,
    /// The last stream position received per history channel: a jump past
    /// it is filled from the stream before the publication is dispatched.
    positions: HashMap<ChannelName, StreamPosition>,
    /// When [`Self::demoted`] last found our node still serving our slots.
    master_checked: Option<Instant>,
    metrics: Metrics,
}

/// The connection was lost; reconnect.
struct Lost;

/// Why a reader could not connect (logged, then retried).
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error("{0}")]
    TimedOut(&'static str),
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
}

impl<B: Backend> Shard<B> {
    pub(super) fn new(
        index: usize,
        backend: B,
        config: ShardConfig,
        commands: mpsc::UnboundedReceiver<Command>,
        dispatcher: SharedDispatcher,
        status: Arc<Status>,
    ) -> Self {
        Self {
            index,
            backend,
            config,
            commands,
            dispatcher,
            status,
            active: HashSet::new(),
            lingering: HashMap::new(),
            expiry: VecDeque::new(),
            confirmations: HashMap::new(),
            positions: HashMap::new(),
            master_checked: None,
            metrics: Metrics {
                reconnects: metrics::counter!(names::ENGINE_RECONNECTS),
                resubscribe: metrics::histogram!(names::ENGINE_RESUBSCRIBE_DURATION),
                lag: metrics::histogram!(names::ENGINE_PUBSUB_LAG),
                oversized: metrics::counter!(names::MESSAGES_DROPPED, "reason" => names::DROP_TOO_LARGE),
                invalid: metrics::counter!(names::MESSAGES_DROPPED, "reason" => names::DROP_INVALID_DATA),
                detect: metrics::histogram!(names::ENGINE_DETECT_DURATION),
                down: metrics::histogram!(names::ENGINE_DOWN_DURATION),
            },
        }
    }

    /// Runs until the engine is dropped (its command channel closes).
    pub(super) async fn run(mut self) {
        let mut delay = self.config.backoff_min;
        // Set while the shard is down after having been up.
        let mut down_since: Option<Instant> = None;
        // The cluster node this shard last read from.
        let mut node: Option<String> = None;
        loop {
            let started = Instant::now();
            let conn = match self.connect().await {
                Ok(conn) => {
                    // Our slots moved to another node (a failover): the
                    // command connection may still route them to the old
                    // one (see `RedisHandle::reconnect`).
                    let now = conn.node();
                    if node.is_some() && now != node {
                        self.config.writer.reconnect();
                    }
                    node = now;
                    conn
                }
                Err(err) => {
                    tracing::warn!(error = %err, retry_in = ?delay, "redis pub/sub connection failed");
                    if self.wait_disconnected(jitter(delay)).await.is_err() {
                        return;
                    }
                    delay = (delay * 2).min(self.config.backoff_max);
                    continue;
                }
            };
            delay = self.config.backoff_min;
            if let Some(since) = down_since.take() {
                self.metrics.reconnects.increment(1);
                self.metrics.resubscribe.record(started.elapsed());
                self.metrics.down.record(since.elapsed());
                tracing::info!(
                    shard = self.index,
                    channels = self.active.len(),
                    down_for = ?since.elapsed(),
                    "redis pub/sub reconnected"
                );
                // Anything published while we were away is gone: say so.
                for channel in &self.active {
                    self.dispatcher.notify_gap(channel);
                }
            }
            // Gap notices first, then "up": once readiness says so, every
            // affected subscriber has been told.
            self.status.set(self.index, true);
            let closed = self.serve(conn).await;
            self.status.set(self.index, false);
            down_since = Some(Instant::now());
            if closed {
                return;
            }
        }
    }

    /// Connects and resubscribes every channel that still has local
    /// subscribers, each step within its deadline.
    async fn connect(&mut self) -> Result<B::Conn, ConnectError> {
        let mut conn = timeout(self.config.connect_timeout, self.backend.connect())
            .await
            .map_err(|_| ConnectError::TimedOut("connecting timed out"))??;
        // A hung server accepts TCP connections (the kernel does) but
        // answers nothing: only an answered PING makes the connection count.
        timeout(self.config.ping_timeout, conn.ping())
            .await
            .map_err(|_| ConnectError::TimedOut("redis did not answer PING"))??;
        // Lingering channels have no local subscribers: let them go.
        self.lingering.clear();
        self.expiry.clear();
        self.confirmations.clear();
        if let Some(node) = conn.node() {
            self.with_peers(|readers| readers.set_master(self.index, node));
        }
        let channels: Vec<String> = self.active.iter().map(|c| self.key(c)).collect();
        for chunk in channels.chunks(1000) {
            let moved = timeout(self.config.command_timeout, conn.subscribe(chunk.to_vec()))
                .await
                .map_err(|_| ConnectError::TimedOut("resubscribing timed out"))??;
            for moved in moved {
                self.hand_over(&moved, None);
            }
        }
        Ok(conn)
    }

    fn with_peers<T>(&self, f: impl FnOnce(&Readers) -> T) -> Option<T> {
        let peers = self.config.peers.upgrade()?;
        peers.get().map(f)
    }

    /// Gives `moved` to the shard of the master that serves its slot now;
    /// with `reply`, that shard answers the pending subscription.
    fn hand_over(
        &mut self,
        moved: &Moved,
        reply: Option<oneshot::Sender<Result<(), EngineError>>>,
    ) {
        let Some(channel) = self.channel_of(&moved.key) else {
            return;
        };
        self.active.remove(&channel);
        let index = self.index;
        let handed = self.with_peers(|readers| {
            let command = match reply {
                Some(reply) => Command::Subscribe(channel.clone(), reply),
                None => Command::Adopt(channel.clone()),
            };
            readers.move_slot(&moved.key, &moved.node, index, command)
        });
        match handed.flatten() {
            Some(to) => {
                tracing::info!(%channel, from = index, to, node = %moved.node, "cluster slot moved; channel handed over");
            }
            None => {
                tracing::warn!(%channel, node = %moved.node, "cluster slot moved to a node this herald has no reader for; channel dropped");
                self.dispatcher.notify_gap(&channel);
            }
        }
    }

    /// Serves a live connection. Returns `true` when the engine is gone.
    ///
    /// A PING goes out every `ping_interval` (the next one only once the
    /// previous was answered); one unanswered within `ping_timeout` means
    /// Redis is hung or unreachable, whatever the socket says. So a hang is
    /// detected within `ping_interval + ping_timeout`.
    async fn serve(&mut self, mut conn: B::Conn) -> bool {
        let mut last_answer = Instant::now();
        let mut next_ping = Instant::now() + self.config.ping_interval;
        let mut ping: Option<Pin<Box<dyn Future<Output = PingOutcome> + Send>>> = None;
        loop {
            let linger_deadline = self.expiry.front().map(|(deadline, _)| *deadline);
            tokio::select! {
                () = sleep_until(next_ping), if ping.is_none() => {
                    let sent = conn.ping();
                    let deadline = self.config.ping_timeout;
                    ping = Some(Box::pin(async move {
                        match timeout(deadline, sent).await {
                            Ok(Ok(())) => PingOutcome::Answered,
                            Ok(Err(_)) => PingOutcome::Failed,
                            Err(_) => PingOutcome::TimedOut,
                        }
                    }));
                }
                outcome = poll_ping(&mut ping) => {
                    ping = None;
                    if outcome == PingOutcome::Answered {
                        last_answer = Instant::now();
                        next_ping = last_answer + self.config.ping_interval;
                    } else {
                        self.metrics.detect.record(last_answer.elapsed());
                        tracing::warn!(
                            shard = self.index,
                            silent_for = ?last_answer.elapsed(),
                            ?outcome,
                            "redis did not answer the health check; reconnecting"
                        );
                        return false;
                    }
                }
                command = self.commands.recv() => {
                    let Some(command) = command else { return true };
                    if self.apply(&mut conn, command).await.is_err() {
                        return false;
                    }
                }
                event = conn.next() => match event {
                    Some(first) => match self.deliver_run(&mut conn, first).await {
                        Some(Run::Done) => {}
                        Some(Run::Dropped(channel)) => {
                            if self.resubscribe_dropped(&mut conn, &channel).await.is_err() {
                                return false;
                            }
                        }
                        None => {
                            tracing::warn!(shard = self.index, "redis pub/sub connection lost");
                            return false;
                        }
                    },
                    None => {
                        tracing::warn!(shard = self.index, "redis pub/sub connection lost");
                        return false;
                    }
                },
                () = sleep_until(linger_deadline.unwrap_or_else(Instant::now)), if linger_deadline.is_some() => {
                    if self.expire(&mut conn).await.is_err() {
                        return false;
                    }
                }
            }
        }
    }

    /// While disconnected: refuse subscriptions, honour unsubscriptions, wait `delay`.
    async fn wait_disconnected(&mut self, delay: Duration) -> Result<(), ()> {
        let wake = sleep(delay);
        tokio::pin!(wake);
        loop {
            tokio::select! {
                () = &mut wake => return Ok(()),
                command = self.commands.recv() => match command {
                    None => return Err(()),
                    Some(Command::Subscribe(_, reply)) => {
                        let _ = reply.send(Err(EngineError::Unavailable("redis is unreachable".into())));
                    }
                    Some(Command::Unsubscribe(channel)) => {
                        self.active.remove(&channel);
                    }
                    // Served (with a gap notice) once reconnected.
                    Some(Command::Adopt(channel)) => {
                        self.active.insert(channel);
                    }
                },
            }
        }
    }

    /// Applies `first` and every command already queued behind it, batched.
    async fn apply(&mut self, conn: &mut B::Conn, first: Command) -> Result<(), Lost> {
        let mut to_subscribe = Vec::new();
        let mut waiting = Vec::new();
        let mut adopted = Vec::new();
        let mut command = Some(first);
        while let Some(next) = command {
            match next {
                Command::Subscribe(channel, reply) => {
                    if self.lingering.remove(&channel).is_some() || self.active.contains(&channel) {
                        self.active.insert(channel);
                        let _ = reply.send(Ok(()));
                    } else {
                        waiting.push((channel.clone(), reply));
                        to_subscribe.push(channel);
                    }
                }
                Command::Adopt(channel) => {
                    if !self.active.contains(&channel) {
                        adopted.push(channel);
                    }
                }
                Command::Unsubscribe(channel) => {
                    to_subscribe.retain(|c| c != &channel);
                    adopted.retain(|c| c != &channel);
                    if self.active.remove(&channel) {
                        let deadline = Instant::now() + self.config.linger;
                        self.lingering.insert(channel.clone(), deadline);
                        self.expiry.push_back((deadline, channel));
                    }
                }
            }
            command = self.commands.try_recv().ok();
        }
        if to_subscribe.is_empty() && adopted.is_empty() {
            for (_, reply) in waiting {
                let _ = reply.send(Ok(()));
            }
            return Ok(());
        }
        let keys = to_subscribe
            .iter()
            .chain(&adopted)
            .map(|c| self.key(c))
            .collect();
        let result = timeout(self.config.command_timeout, conn.subscribe(keys))
            .await
            .unwrap_or_else(|_| Err(timed_out()));
        match result {
            Ok(moved) => {
                let mut replies = waiting;
                for moved in &moved {
                    // The new owner's shard answers whoever waits for it.
                    let channel = self.channel_of(&moved.key);
                    let (theirs, ours): (Vec<_>, Vec<_>) = replies
                        .into_iter()
                        .partition(|(c, _)| Some(c) == channel.as_ref());
                    replies = ours;
                    let mut theirs = theirs.into_iter().map(|(_, reply)| reply);
                    self.hand_over(moved, theirs.next());
                    for reply in theirs {
                        if let Some(channel) = &channel {
                            self.with_peers(|readers| {
                                let command = Command::Subscribe(channel.clone(), reply);
                                readers.send_to_owner(&moved.key, command);
                            });
                        }
                    }
                }
                let gone: HashSet<&str> = moved.iter().map(|m| m.key.as_str()).collect();
                for channel in to_subscribe.into_iter().chain(adopted.iter().cloned()) {
                    if !gone.contains(self.key(&channel).as_str()) {
                        self.active.insert(channel);
                    }
                }
                for (_, reply) in replies {
                    let _ = reply.send(Ok(()));
                }
                for channel in &adopted {
                    if self.active.contains(channel) {
                        self.dispatcher.notify_gap(channel);
                    }
                }
                Ok(())
            }
            Err(err) => {
                tracing::warn!(error = %err, "redis subscribe failed");
                for (_, reply) in waiting {
                    let _ = reply.send(Err(EngineError::Unavailable(err.to_string())));
                }
                Err(Lost)
            }
        }
    }

    /// Unsubscribes every channel whose linger is over, in one command.
    async fn expire(&mut self, conn: &mut B::Conn) -> Result<(), Lost> {
        let now = Instant::now();
        let mut expired = Vec::new();
        while let Some((deadline, _)) = self.expiry.front()
            && *deadline <= now
        {
            let Some((deadline, channel)) = self.expiry.pop_front() else {
                break;
            };
            // Rejoined (removed from the map) or re-lingered (newer deadline): skip.
            if self.lingering.get(&channel) == Some(&deadline) {
                self.lingering.remove(&channel);
                self.positions.remove(&channel);
                expired.push(self.key(&channel));
            }
        }
        if expired.is_empty() {
            return Ok(());
        }
        for key in &expired {
            *self.confirmations.entry(key.clone()).or_default() += 1;
        }
        timeout(self.config.command_timeout, conn.unsubscribe(expired))
            .await
            .unwrap_or_else(|_| Err(timed_out()))
            .map_err(|err| {
                tracing::warn!(error = %err, "redis unsubscribe failed");
                Lost
            })
    }

    /// The server dropped a subscription we still need (its cluster slot
    /// moved): subscribe again, which reaches the new owner, and warn the
    /// subscribers that messages may have been missed meanwhile.
    async fn resubscribe_dropped(&mut self, conn: &mut B::Conn, key: &str) -> Result<(), Lost> {
        if let Some(due) = self.confirmations.get_mut(key) {
            // The confirmation of our own unsubscribe, not a drop.
            *due -= 1;
            if *due == 0 {
                self.confirmations.remove(key);
            }
            return Ok(());
        }
        let Some(channel) = self.channel_of(key) else {
            return Ok(());
        };
        if !self.active.contains(&channel) {
            return Ok(());
        }
        if self.demoted(conn.node()).await {
            // A master turned replica (a failover, e.g. `CLUSTER FAILOVER`)
            // drops its shard subscriptions. Subscribing there again would
            // work, but a replica delivers a shard message published on it
            // twice to its own subscribers (Redis 7.0): follow the group to
            // its new master instead, as after a lost connection.
            tracing::info!(%channel, node = ?conn.node(), "this reader's node no longer serves its slots as master; reconnecting");
            return Err(Lost);
        }
        tracing::info!(%channel, "subscription dropped by the server; resubscribing");
        let moved = timeout(
            self.config.command_timeout,
            conn.subscribe(vec![key.to_owned()]),
        )
        .await
        .map_err(|_| Lost)?
        .map_err(|_| Lost)?;
        match moved.first() {
            // Another master serves the slot now: its shard takes over.
            Some(moved) => self.hand_over(&moved.clone(), None),
            None => self.dispatcher.notify_gap(&channel),
        }
        Ok(())
    }

    /// Whether `here`, the node this reader is connected to, no longer
    /// serves its slots as master, as `here` itself says (it drops the
    /// subscriptions in the same step as it changes role, so it knows by
    /// the time the drop arrives). Asked after the server dropped a
    /// subscription; a "no" holds for a second, so a slot migration dropping
    /// many channels asks once. Without an answer within the deadline, no.
    async fn demoted(&mut self, here: Option<String>) -> bool {
        let Some(here) = here else {
            return false;
        };
        if self
            .master_checked
            .is_some_and(|at| at.elapsed() < MASTER_CHECK_INTERVAL)
        {
            return false;
        }
        let master = timeout(
            self.config.connect_timeout,
            self.backend.master_seen_by(&here),
        )
        .await;
        let demoted = matches!(master, Ok(Some(master)) if master != here);
        if !demoted {
            self.master_checked = Some(Instant::now());
        }
        demoted
    }

    /// Positioning: if `publication` skips offsets past the last one this
    /// shard received on its channel (a pub/sub message lost, e.g. while
    /// reconnecting), dispatches the skipped ones from the stream first.
    /// When the stream no longer has them all, the dispatcher's own
    /// positioning sends the subscribers a gap notice.
    ///
    /// Waits for Redis on the reader's task, bounded by the command deadline:
    /// this shard's other channels wait too, which a rare jump may cost.
    async fn fill(&mut self, publication: &Publication) {
        let Some(position) = &publication.position else {
            return;
        };
        let last = self
            .positions
            .insert(publication.channel.clone(), position.clone());
        let Some(last) = last.filter(|l| l.epoch == position.epoch) else {
            return;
        };
        if position.offset <= last.offset + 1 {
            if position.offset <= last.offset {
                // A repeat: keep the newer position; the dispatcher drops it.
                self.positions.insert(publication.channel.clone(), last);
            }
            return;
        }
        let read = self.config.streams.fill(
            &self.config.writer,
            &publication.channel,
            last.offset,
            position.offset - 1,
            &position.epoch,
        );
        let deadline = self
            .config
            .command_timeout
            .min(self.config.ping_timeout / 2);
        if let Ok(Some(missing)) = timeout(deadline, read).await {
            metrics::counter!(names::HISTORY_GAPS, "outcome" => "filled").increment(1);
            for publication in missing {
                self.dispatcher.dispatch(publication);
            }
        }
    }

    /// Delivers `first` with every further message already read (at most
    /// [`RUN`]) as one run, so that each socket is written once for the run.
    /// Returns what ended the run, or `None` when the connection was lost.
    async fn deliver_run(&mut self, conn: &mut B::Conn, first: Event) -> Option<Run> {
        let mut run = Vec::new();
        let mut next = Some(first);
        let mut taken = 0;
        let stopped = loop {
            match next {
                Some(Event::Message { channel, payload }) => {
                    self.deliver(&channel, &payload, &mut run).await;
                    taken += 1;
                }
                Some(Event::Dropped(channel)) => break Some(Run::Dropped(channel)),
                None => break None,
            }
            if taken == RUN {
                break Some(Run::Done);
            }
            // Cancel safe (see `Conn::next`): nothing is lost when not ready.
            match conn.next().now_or_never() {
                Some(event) => next = event,
                None => break Some(Run::Done),
            }
        };
        self.dispatcher.dispatch_all(run);
        stopped
    }

    /// Decodes one message into `run`. A publication with a stream position
    /// is dispatched at once, after the run so far (it may wait on Redis to
    /// fill a jump, and order per channel must hold); so is a disconnect.
    async fn deliver(&mut self, key: &str, payload: &[u8], run: &mut Vec<Publication>) {
        let Some(channel) = self.channel_of(key) else {
            return;
        };
        if payload.len() > self.config.max_data_size {
            self.metrics.oversized.increment(1);
            tracing::warn!(%channel, bytes = payload.len(), "dropping an oversized publication from redis");
            return;
        }
        match envelope::decode(channel, payload, &self.config.default_event) {
            Decoded::Publish(publication) => {
                if let Some(ts) = publication.ts {
                    let lag_ms = unix_ms().saturating_sub(ts);
                    self.metrics.lag.record(Duration::from_millis(lag_ms));
                }
                if publication.position.is_some() {
                    self.dispatcher.dispatch_all(std::mem::take(run));
                    self.fill(&publication).await;
                    self.dispatcher.dispatch(publication);
                } else {
                    run.push(publication);
                }
            }
            Decoded::Disconnect(kick) => {
                self.dispatcher.dispatch_all(std::mem::take(run));
                let channel = key.get(self.config.prefix.len()..).unwrap_or_default();
                self.dispatcher.disconnect(channel, kick);
            }
            Decoded::Refused(err) => {
                // Debug, not warn: an outside publisher's mistake, counted in the
                // metric; it must not flood the log at its publish rate.
                self.metrics.invalid.increment(1);
                tracing::debug!(%key, error = %err, "dropping a publication from redis that not every format can carry");
            }
        }
    }

    fn key(&self, channel: &ChannelName) -> String {
        format!("{}{channel}", self.config.prefix)
    }

    fn channel_of(&self, key: &str) -> Option<ChannelName> {
        let name = key.strip_prefix(&self.config.prefix)?;
        ChannelName::parse(name, usize::MAX).ok()
    }
}

/// Most messages one run delivers (see `Shard::deliver_run`) before the
/// shard looks at its other work (commands, health checks).
const RUN: usize = 256;

/// How long one answer of [`Shard::demoted`] holds.
const MASTER_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// How a run of messages ended.
enum Run {
    /// Nothing more was ready, or the run was long enough.
    Done,
    /// The server dropped a subscription (see `Shard::resubscribe_dropped`).
    Dropped(String),
}

/// How a health-check PING ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PingOutcome {
    Answered,
    Failed,
    TimedOut,
}

/// Resolves with the in-flight PING's outcome; never while none is in flight.
async fn poll_ping(
    ping: &mut Option<Pin<Box<dyn Future<Output = PingOutcome> + Send>>>,
) -> PingOutcome {
    match ping {
        Some(ping) => ping.await,
        None => std::future::pending().await,
    }
}

fn timed_out() -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "redis did not answer in time",
    ))
}

/// Full jitter: a random delay up to `delay`, so nodes do not reconnect in lockstep.
fn jitter(delay: Duration) -> Duration {
    delay
        .mul_f64(rand::random::<f64>())
        .max(Duration::from_millis(10))
}
