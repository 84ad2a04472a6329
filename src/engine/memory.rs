//! The in-memory engine: a single node, no other service.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Mutex, PoisonError},
    time::Duration,
};

use futures_util::future::{BoxFuture, FutureExt, ready};
use tokio::time::Instant;

use super::{Engine, EngineError, Keyed, Kick, NodeRegistry, NodeStats, Once, SharedDispatcher};
use crate::protocol::{ChannelName, Publication};

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

/// Delivers every publication straight to the local fan-out.
pub struct MemoryEngine {
    dispatcher: SharedDispatcher,
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
            self.dispatcher.dispatch(publication);
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
                self.dispatcher.dispatch(keyed.publication);
                Once::Published
            })
            .collect();
        ready(Ok(outcomes)).boxed()
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
