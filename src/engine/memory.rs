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
#[derive(Debug)]
struct Stream {
    /// This life of the stream: a stream made again after its position
    /// expired starts at offset 1 in a new epoch.
    epoch: String,
    /// The offset of the newest publication.
    top: u64,
    /// Publications, oldest first, offsets consecutive.
    ring: VecDeque<Publication>,
    /// When the publications expire: `history_ttl_secs` after the last one.
    ring_expires: Option<Instant>,
    /// When the stream's position may be forgotten.
    meta_expires: Instant,
}

impl Stream {
    /// Drops the publications if they expired; returns what they held.
    fn forget_expired(&mut self, now: Instant) -> Kept {
        let mut dropped = Kept::default();
        if self.ring_expires.is_some_and(|at| at <= now) {
            for publication in self.ring.drain(..) {
                dropped.add(&publication);
            }
        }
        dropped
    }

    fn position(&self) -> StreamPosition {
        StreamPosition {
            offset: self.top,
            epoch: self.epoch.clone(),
        }
    }
}

/// What the streams hold, for the gauges.
#[derive(Debug, Default, Clone, Copy)]
struct Kept {
    publications: usize,
    /// Estimated: data, event and a fixed overhead per publication.
    bytes: usize,
}

impl Kept {
    fn size(publication: &Publication) -> usize {
        64 + publication.event.as_str().len() + publication.data.len()
    }

    fn add(&mut self, publication: &Publication) {
        self.publications += 1;
        self.bytes += Self::size(publication);
    }

    fn remove(&mut self, gone: Kept) {
        self.publications -= gone.publications;
        self.bytes -= gone.bytes;
    }
}

/// Every channel's stream, under one lock with the dispatch that follows an
/// append, so that offsets reach the fan-out in order.
#[derive(Debug)]
struct Streams {
    by_channel: HashMap<ChannelName, Stream>,
    /// The engine's epoch: every stream's epoch starts with it.
    base: String,
    /// Streams made so far: the rest of each new stream's epoch.
    made: u64,
    /// What every stream holds together.
    kept: Kept,
    /// Streams beyond which the next access sweeps out expired ones, so
    /// that channels nobody touches again do not stay forever.
    sweep_at: usize,
}

impl Streams {
    fn new(base: String) -> Self {
        Self {
            by_channel: HashMap::new(),
            base,
            made: 0,
            kept: Kept::default(),
            sweep_at: 1024,
        }
    }

    /// The stream of `channel` (made, in a new epoch, if it has none or its
    /// position expired), its position kept `meta_ttl` from now at least.
    fn stream(&mut self, channel: &ChannelName, now: Instant, meta_ttl: Duration) -> &mut Stream {
        if self.by_channel.len() >= self.sweep_at {
            self.sweep(now);
        }
        let expired = self.by_channel.get_mut(channel).map(|stream| {
            let dropped = stream.forget_expired(now);
            (dropped, stream.meta_expires <= now)
        });
        if let Some((dropped, gone)) = expired {
            self.kept.remove(dropped);
            if gone {
                self.by_channel.remove(channel);
            }
        }
        let (base, made) = (&self.base, &mut self.made);
        let stream = self.by_channel.entry(channel.clone()).or_insert_with(|| {
            *made += 1;
            Stream {
                epoch: format!("{base}{made:x}"),
                top: 0,
                ring: VecDeque::new(),
                ring_expires: None,
                meta_expires: now + meta_ttl,
            }
        });
        stream.meta_expires = stream.meta_expires.max(now + meta_ttl);
        stream
    }

    fn sweep(&mut self, now: Instant) {
        let mut dropped = Kept::default();
        self.by_channel.retain(|_, stream| {
            let gone = stream.forget_expired(now);
            dropped.publications += gone.publications;
            dropped.bytes += gone.bytes;
            stream.meta_expires > now
        });
        self.kept.remove(dropped);
        self.sweep_at = (self.by_channel.len() * 2).max(1024);
        self.report();
    }

    /// Gives `publication` the next offset and keeps it, as `spec` says.
    fn append(&mut self, publication: &mut Publication, spec: HistorySpec) {
        let now = Instant::now();
        let stream = self.stream(&publication.channel, now, meta_ttl(spec));
        stream.top += 1;
        publication.position = Some(stream.position());
        stream.ring.push_back(publication.clone());
        stream.ring_expires = Some(now + Duration::from_secs(spec.ttl_secs));
        let mut trimmed = Kept::default();
        while stream.ring.len() > spec.size {
            if let Some(old) = stream.ring.pop_front() {
                trimmed.add(&old);
            }
        }
        self.kept.add(publication);
        self.kept.remove(trimmed);
        self.report();
    }

    fn report(&self) {
        use crate::metrics as names;
        metrics::gauge!(names::HISTORY_PUBLICATIONS).set(self.kept.publications as f64);
        metrics::gauge!(names::HISTORY_BYTES).set(self.kept.bytes as f64);
        metrics::gauge!(names::HISTORY_STREAMS).set(self.by_channel.len() as f64);
    }
}

/// How long a stream's position outlives its last publication.
fn meta_ttl(spec: HistorySpec) -> Duration {
    Duration::from_secs(spec.meta_ttl_secs.max(spec.ttl_secs))
}

/// Delivers every publication straight to the local fan-out, keeping the
/// streams of history channels in memory (a ring per channel).
pub struct MemoryEngine {
    dispatcher: SharedDispatcher,
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
            streams: Mutex::new(Streams::new(new_epoch())),
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

/// An epoch prefix no earlier engine had: the start time and randomness.
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
        streams.append(&mut publication, spec);
        self.dispatcher.dispatch(publication);
    }

    fn read(&self, channel: &ChannelName, spec: HistorySpec, query: HistoryQuery) -> HistoryPage {
        let mut streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        let stream = streams.stream(channel, Instant::now(), meta_ttl(spec));
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
            position: stream.position(),
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
        spec: HistorySpec,
        query: HistoryQuery,
    ) -> BoxFuture<'static, Result<HistoryPage, EngineError>> {
        ready(Ok(self.read(&channel, spec, query))).boxed()
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{
        engine::Dispatcher,
        protocol::{EventName, JsonData},
    };

    #[derive(Debug)]
    struct Nowhere;

    impl Dispatcher for Nowhere {
        fn dispatch(&self, _: Publication) -> usize {
            0
        }
        fn disconnect(&self, _: &str, _: Kick) -> usize {
            0
        }
        fn notify_gap(&self, _: &ChannelName) {}
    }

    const SPEC: HistorySpec = HistorySpec {
        size: 3,
        ttl_secs: 10,
        meta_ttl_secs: 100,
    };

    fn ch() -> ChannelName {
        ChannelName::parse("h", 128).unwrap()
    }

    fn publish(engine: &MemoryEngine) {
        engine.emit(Publication {
            channel: ch(),
            event: EventName::parse("e").unwrap(),
            data: JsonData::from_json("1").unwrap(),
            ts: None,
            position: None,
            history: Some(SPEC),
        });
    }

    fn page(engine: &MemoryEngine) -> HistoryPage {
        engine.read(&ch(), SPEC, HistoryQuery::default())
    }

    #[tokio::test(start_paused = true)]
    async fn publications_expire_first_then_the_position_with_a_new_epoch() {
        let engine = MemoryEngine::new(Arc::new(Nowhere));
        for _ in 0..4 {
            publish(&engine);
        }
        let first = page(&engine);
        assert_eq!(first.position.offset, 4);
        assert_eq!(first.publications.len(), 3, "trimmed to size");
        tokio::time::advance(Duration::from_secs(11)).await;
        let later = page(&engine);
        assert_eq!(later.position, first.position, "the position outlives them");
        assert!(later.publications.is_empty());
        publish(&engine);
        assert_eq!(page(&engine).position.offset, 5);
        tokio::time::advance(Duration::from_secs(101)).await;
        let reborn = page(&engine);
        assert_eq!(reborn.position.offset, 0);
        assert_ne!(reborn.position.epoch, first.position.epoch);
        let kept = engine.streams.lock().unwrap().kept;
        assert_eq!((kept.publications, kept.bytes), (0, 0));
    }
}
