//! The in-memory engine: a single node, no other service.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Mutex, PoisonError},
    time::Duration,
};

use futures_util::future::{BoxFuture, FutureExt, ready};
use tokio::time::Instant;

use super::{
    Engine, EngineError, HistoryPage, Keyed, Kick, NodeRegistry, NodeStats, Once, SharedDispatcher,
};
use crate::protocol::{
    ChannelName, HistoryQuery, HistorySpec, Publication, StreamPosition, unix_ms,
};

/// Idempotency keys seen within the window, with their answers.
#[derive(Debug, Default)]
struct SeenKeys {
    answers: HashMap<String, u64>,
    /// Keys in insertion order, which is expiry order (one window for all).
    expiry: VecDeque<(Instant, String)>,
}

impl SeenKeys {
    fn forget_expired(&mut self, now: Instant) {
        while let Some((expires, _)) = self.expiry.front()
            && *expires <= now
        {
            if let Some((_, key)) = self.expiry.pop_front() {
                self.answers.remove(&key);
            }
        }
    }
}

/// One channel's stream: a bounded ring of its newest publications.
#[derive(Debug, Default)]
struct Stream {
    /// The offset of the newest publication.
    top: u64,
    /// Publications, oldest first, offsets consecutive.
    ring: VecDeque<Publication>,
    /// When the publications expire: `history_ttl_secs` after the last one.
    ring_expires: Option<Instant>,
    /// When the stream's position may be forgotten.
    meta_expires: Option<Instant>,
}

impl Stream {
    fn forget_expired(&mut self, now: Instant) {
        if self.ring_expires.is_some_and(|at| at <= now) {
            self.ring.clear();
        }
    }
}

/// Every channel's stream, under one lock with the dispatch that follows an
/// append, so that offsets reach the fan-out in order.
#[derive(Debug, Default)]
struct Streams {
    by_channel: HashMap<ChannelName, Stream>,
    /// Publications kept, all channels together (a gauge).
    kept: usize,
}

impl Streams {
    /// The stream of `channel`; a new one if its position expired.
    fn stream(&mut self, channel: &ChannelName, now: Instant) -> &mut Stream {
        if let Some(stream) = self.by_channel.get_mut(channel) {
            let before = stream.ring.len();
            stream.forget_expired(now);
            self.kept -= before - stream.ring.len();
        }
        if self
            .by_channel
            .get(channel)
            .and_then(|s| s.meta_expires)
            .is_some_and(|at| at <= now)
        {
            self.by_channel.remove(channel);
        }
        self.by_channel.entry(channel.clone()).or_default()
    }

    /// Gives `publication` the next offset and keeps it, as `spec` says.
    fn append(&mut self, publication: &mut Publication, spec: HistorySpec, epoch: &str) {
        let now = Instant::now();
        let stream = self.stream(&publication.channel, now);
        stream.top += 1;
        publication.position = Some(StreamPosition {
            offset: stream.top,
            epoch: epoch.to_owned(),
        });
        stream.ring.push_back(publication.clone());
        stream.ring_expires = Some(now + Duration::from_secs(spec.ttl_secs));
        let mut trimmed = 0;
        while stream.ring.len() > spec.size {
            stream.ring.pop_front();
            trimmed += 1;
        }
        stream.meta_expires =
            Some(now + Duration::from_secs(spec.meta_ttl_secs.max(spec.ttl_secs)));
        self.kept = self.kept + 1 - trimmed;
        metrics::gauge!(crate::metrics::HISTORY_PUBLICATIONS).set(self.kept as f64);
    }
}

/// Delivers every publication straight to the local fan-out, keeping the
/// streams of history channels in memory (a ring per channel).
pub struct MemoryEngine {
    dispatcher: SharedDispatcher,
    /// This engine's one epoch: a restarted node starts new streams.
    epoch: String,
    streams: Mutex<Streams>,
    /// The last stats this node announced: the whole "cluster".
    stats: Mutex<Option<NodeStats>>,
    seen: Mutex<SeenKeys>,
    window: Duration,
}

impl MemoryEngine {
    /// An engine that delivers into `dispatcher`, remembering idempotency
    /// keys for five minutes.
    pub fn new(dispatcher: SharedDispatcher) -> Self {
        // Always connected: the gauge says so, for dashboards that watch it.
        metrics::gauge!(crate::metrics::ENGINE_CONNECTED).set(1.0);
        metrics::gauge!(crate::metrics::ENGINE_SHARD_CONNECTED, "shard" => "0").set(1.0);
        Self {
            dispatcher,
            epoch: new_epoch(),
            streams: Mutex::new(Streams::default()),
            stats: Mutex::new(None),
            seen: Mutex::new(SeenKeys::default()),
            window: Duration::from_secs(300),
        }
    }

    /// The same engine, remembering idempotency keys for `window`.
    #[must_use]
    pub fn with_idempotency_window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }
}

/// An epoch no earlier engine had: the start time and randomness.
fn new_epoch() -> String {
    format!("{:x}{:08x}", unix_ms(), rand::random::<u32>())
}

impl MemoryEngine {
    /// Appends to the channel's stream if it has one, then fans out.
    fn emit(&self, mut publication: Publication) {
        let Some(spec) = publication.history else {
            self.dispatcher.dispatch(publication);
            return;
        };
        // Append and dispatch under one lock: a reader of the stream then
        // sees every publication either in the stream or after it joined.
        let mut streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        streams.append(&mut publication, spec, &self.epoch);
        self.dispatcher.dispatch(publication);
    }

    fn read(&self, channel: &ChannelName, query: HistoryQuery) -> HistoryPage {
        let mut streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        let stream = streams.stream(channel, Instant::now());
        let after = query.since.unwrap_or(0);
        let limit = query.limit.unwrap_or(usize::MAX);
        let matching = stream
            .ring
            .iter()
            .filter(|p| p.offset().is_some_and(|o| o > after));
        let publications = if query.reverse {
            matching.rev().take(limit).cloned().collect()
        } else {
            matching.take(limit).cloned().collect()
        };
        HistoryPage {
            publications,
            position: StreamPosition {
                offset: stream.top,
                epoch: self.epoch.clone(),
            },
        }
    }
}

impl std::fmt::Debug for MemoryEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryEngine")
    }
}

impl Engine for MemoryEngine {
    fn publish(&self, batch: Vec<Publication>) -> BoxFuture<'static, Result<(), EngineError>> {
        // Fan-out is synchronous and never waits on a client, so doing it on
        // the publisher's task keeps per-channel order without a queue.
        for publication in batch {
            self.emit(publication);
        }
        ready(Ok(())).boxed()
    }

    fn publish_once(
        &self,
        batch: Vec<Keyed>,
    ) -> BoxFuture<'static, Result<Vec<Once>, EngineError>> {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.forget_expired(now);
        let outcomes = batch
            .into_iter()
            .map(|keyed| {
                if let Some(answer) = seen.answers.get(&keyed.key) {
                    return Once::Duplicate(*answer);
                }
                seen.answers.insert(keyed.key.clone(), keyed.answer);
                seen.expiry.push_back((now + self.window, keyed.key));
                // Under the lock: a concurrent retry sees the key only once
                // the publication is out.
                self.emit(keyed.publication);
                Once::Published
            })
            .collect();
        ready(Ok(outcomes)).boxed()
    }

    fn history(
        &self,
        channel: ChannelName,
        _spec: HistorySpec,
        query: HistoryQuery,
    ) -> BoxFuture<'static, Result<HistoryPage, EngineError>> {
        ready(Ok(self.read(&channel, query))).boxed()
    }

    fn subscribe(&self, _channel: ChannelName) -> BoxFuture<'static, Result<(), EngineError>> {
        ready(Ok(())).boxed()
    }

    fn unsubscribe(&self, _channel: ChannelName) {}

    fn disconnect(
        &self,
        channel: ChannelName,
        kick: Kick,
    ) -> BoxFuture<'static, Result<(), EngineError>> {
        self.dispatcher.disconnect(channel.as_str(), kick);
        ready(Ok(())).boxed()
    }

    fn is_connected(&self) -> bool {
        true
    }
}

impl NodeRegistry for MemoryEngine {
    fn announce(
        &self,
        stats: &NodeStats,
        _ttl_secs: u64,
    ) -> BoxFuture<'static, Result<(), EngineError>> {
        *self.stats.lock().unwrap_or_else(PoisonError::into_inner) = Some(stats.clone());
        ready(Ok(())).boxed()
    }

    fn nodes(&self) -> BoxFuture<'static, Result<Vec<NodeStats>, EngineError>> {
        let stats = self
            .stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        ready(Ok(stats.into_iter().collect())).boxed()
    }
}
