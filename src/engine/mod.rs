//! Engines carry publications between herald nodes.
//!
//! An [`Engine`] takes publications from this node and delivers every
//! publication, from any node or outside publisher, to this node's
//! [`Dispatcher`] (the hub's local fan-out). The hub tells the engine which
//! channels have local subscribers, so a distributed engine listens only to
//! those.
//!
//! The in-memory engine ([`memory`]) serves one node with no other service.
//! This module knows only [`crate::protocol`]: no hub internals, no transport.

mod config;
pub mod emitter;
pub mod envelope;
pub mod memory;
pub mod redis;

use std::{fmt, sync::Arc};

use futures_util::future::BoxFuture;

pub use config::{EngineConfig, EngineKind};

use crate::protocol::{ChannelName, HistoryQuery, HistorySpec, Publication, StreamPosition};

/// Why an engine could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The engine lost its backend and is reconnecting.
    #[error("engine unavailable: {0}")]
    Unavailable(String),
    /// The operation was sent but no answer came in time: it may or may not
    /// have taken effect. Never retried by herald; a publisher retries with
    /// the same idempotency key.
    #[error("engine did not answer in time; the outcome is unknown")]
    OutcomeUnknown,
    /// The backend refused the operation.
    #[error("engine operation failed: {0}")]
    Failed(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Why a channel's connections are closed on every node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kick {
    /// A backend disconnected the user (close code 4504).
    User,
    /// The login session was revoked (close code 4505).
    Revoked,
}

/// A publication to deliver at most once per idempotency key.
#[derive(Debug, Clone)]
pub struct Keyed {
    /// What to publish.
    pub publication: Publication,
    /// The publisher's idempotency key (validated; unique per publication).
    pub key: String,
    /// The answer to remember with the key and give to every retry
    /// (the subscriber count of the first attempt).
    pub answer: u64,
}

/// What [`Engine::publish_once`] did with one publication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Once {
    /// First time this key was seen: published.
    Published,
    /// The key was seen within the window: not published again. Carries the
    /// answer remembered with the key.
    Duplicate(u64),
}

/// A part of a channel's stream and where the stream stands.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryPage {
    /// The publications asked for, each with its position, in the order
    /// asked for (oldest first unless reversed).
    pub publications: Vec<Publication>,
    /// The stream's position when it was read: the offset of its newest
    /// publication and its epoch.
    pub position: StreamPosition,
}

/// Local delivery: where an engine hands what it receives.
pub trait Dispatcher: Send + Sync + 'static {
    /// Fans `publication` out to this node's subscribers of its channel.
    /// Returns how many connections it was queued for.
    fn dispatch(&self, publication: Publication) -> usize;

    /// Fans out a run of publications that arrived together, in order. The
    /// same as dispatching each, except that each socket is written once
    /// for the run (see the core's direct writes). Returns the sum.
    fn dispatch_all(&self, publications: Vec<Publication>) -> usize {
        publications.into_iter().map(|p| self.dispatch(p)).sum()
    }

    /// Closes this node's subscribers of `channel`. Returns how many.
    fn disconnect(&self, channel: &str, kick: Kick) -> usize;

    /// Tells this node's subscribers of `channel` that publications may have
    /// been missed (the engine lost and regained its backend).
    fn notify_gap(&self, channel: &ChannelName);
}

/// A shared handle to the local fan-out.
pub type SharedDispatcher = Arc<dyn Dispatcher>;

/// Carries publications between nodes.
///
/// Implementations must keep per-channel order: two publications to one
/// channel from one publisher reach every subscriber in publish order.
///
/// A publication with [`Publication::history`] set is also appended to its
/// channel's stream: the engine gives it the next offset of the stream
/// ([`Publication::position`]) in the same atomic step that appends and
/// publishes it, so every node sees offsets in stream order.
pub trait Engine: NodeRegistry + Send + Sync + fmt::Debug + 'static {
    /// Publishes a batch to every node, this one included.
    ///
    /// Resolves once the engine has accepted every publication; an error
    /// means none of the batch may be reported as delivered.
    fn publish(&self, batch: Vec<Publication>) -> BoxFuture<'static, Result<(), EngineError>>;

    /// Publishes each publication unless its key was already used within
    /// the idempotency window (on any node sharing the engine): the check
    /// and the publish are one atomic step per publication.
    ///
    /// An error means nothing may be reported as delivered; with
    /// [`EngineError::OutcomeUnknown`] some may have been, and a retry with
    /// the same keys publishes only the rest.
    fn publish_once(&self, batch: Vec<Keyed>)
    -> BoxFuture<'static, Result<Vec<Once>, EngineError>>;

    /// Reads `channel`'s stream (kept as `spec` says), and its position.
    ///
    /// A stream that does not exist yet is created (with a new epoch and
    /// offset 0), so that the position returned is the one later
    /// publications continue from. Publications published after this call
    /// began carry greater offsets than the position returned, or are
    /// included.
    fn history(
        &self,
        channel: ChannelName,
        spec: HistorySpec,
        query: HistoryQuery,
    ) -> BoxFuture<'static, Result<HistoryPage, EngineError>>;

    /// A local connection joins `channel` (called on every join).
    ///
    /// Resolves once publications to the channel will reach this node; for
    /// a channel already served that is at once. Calls for one channel are
    /// answered in order.
    fn subscribe(&self, channel: ChannelName) -> BoxFuture<'static, Result<(), EngineError>>;

    /// This node lost its last local subscriber of `channel`.
    ///
    /// Not called per leave: an engine may keep serving the channel a little
    /// longer (linger) so that churn does not flap its subscriptions.
    fn unsubscribe(&self, channel: ChannelName);

    /// Closes the subscribers of `channel` on every node.
    fn disconnect(
        &self,
        channel: ChannelName,
        kick: Kick,
    ) -> BoxFuture<'static, Result<(), EngineError>>;

    /// Whether the engine can currently carry publications (on a sharded
    /// backend: for at least some channels; see [`Engine::degraded`]).
    fn is_connected(&self) -> bool;

    /// What the engine cannot serve right now, while [`Engine::is_connected`]
    /// (e.g. the slots of a Redis Cluster master that is down). Empty when
    /// everything works.
    fn degraded(&self) -> Vec<String> {
        Vec::new()
    }
}

/// One node's state, as `/api/v1/stats` shows it and the node registry
/// keeps it for the other nodes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeStats {
    /// The node's id.
    pub node_id: String,
    /// Seconds since the node started.
    pub uptime_seconds: u64,
    /// Open connections.
    pub connections: usize,
    /// Subscriptions held by local connections.
    pub subscriptions: usize,
    /// Channels with local subscribers.
    pub channels: usize,
    /// Whether the node is draining for shutdown.
    pub draining: bool,
    /// Whether its engine is connected.
    pub engine_connected: bool,
    /// Its channels with the most local subscribers.
    pub top_channels: Vec<TopChannel>,
}

/// One row of [`NodeStats::top_channels`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TopChannel {
    /// Channel name.
    pub channel: String,
    /// Local subscribers.
    pub subscribers: usize,
}

/// Where nodes find each other's stats (for `/api/v1/stats`). Every engine
/// is one: a distributed engine shares the entries between nodes.
pub trait NodeRegistry: Send + Sync + fmt::Debug + 'static {
    /// Records this node's stats, valid for `ttl_secs`.
    fn announce(
        &self,
        stats: &NodeStats,
        ttl_secs: u64,
    ) -> BoxFuture<'static, Result<(), EngineError>>;

    /// The stats of every live node, this one included.
    fn nodes(&self) -> BoxFuture<'static, Result<Vec<NodeStats>, EngineError>>;
}
