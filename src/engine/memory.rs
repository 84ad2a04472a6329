//! The in-memory engine: a single node, no other service.

use futures_util::future::{BoxFuture, FutureExt, ready};

use super::{Engine, EngineError, SharedDispatcher};
use crate::protocol::{ChannelName, Publication};

/// Delivers every publication straight to the local fan-out.
pub struct MemoryEngine {
    dispatcher: SharedDispatcher,
}

impl MemoryEngine {
    /// An engine that delivers into `dispatcher`.
    pub fn new(dispatcher: SharedDispatcher) -> Self {
        Self { dispatcher }
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

    fn is_connected(&self) -> bool {
        true
    }
}
