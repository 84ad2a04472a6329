//! The in-memory engine: a single node, no other service.

use std::sync::{Mutex, PoisonError};

use futures_util::future::{BoxFuture, FutureExt, ready};

use super::{Engine, EngineError, Kick, SharedDispatcher};
use crate::protocol::{ChannelName, Publication};

/// Delivers every publication straight to the local fan-out.
pub struct MemoryEngine {
    dispatcher: SharedDispatcher,
    /// The last stats this node announced: the whole "cluster".
    stats: Mutex<Option<String>>,
}

impl MemoryEngine {
    /// An engine that delivers into `dispatcher`.
    pub fn new(dispatcher: SharedDispatcher) -> Self {
        // Always connected: the gauge says so, for dashboards that watch it.
        metrics::gauge!(crate::metrics::ENGINE_CONNECTED).set(1.0);
        Self {
            dispatcher,
            stats: Mutex::new(None),
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
            self.dispatcher.dispatch(publication);
        }
        ready(Ok(())).boxed()
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

    fn announce(
        &self,
        _node_id: &str,
        stats: String,
        _ttl_secs: u64,
    ) -> BoxFuture<'static, Result<(), EngineError>> {
        *self.stats.lock().unwrap_or_else(PoisonError::into_inner) = Some(stats);
        ready(Ok(())).boxed()
    }

    fn nodes(&self) -> BoxFuture<'static, Result<Vec<String>, EngineError>> {
        let stats = self
            .stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        ready(Ok(stats.into_iter().collect())).boxed()
    }
}
