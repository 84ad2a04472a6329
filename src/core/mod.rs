//! The hub core: connections, channels, fan-out and backpressure policy.
//!
//! The core knows nothing of HTTP, WebSocket frames, JSON or Redis. It moves
//! [`crate::protocol::SharedMessage`]s into per-connection [`Outbox`]es and
//! reaches other nodes only through the [`crate::engine::Engine`] trait.

mod disconnect;
mod hub;
mod outbox;
mod policy;
mod rate_limit;
mod registry;
mod session;

pub use disconnect::DisconnectReason;
pub use hub::{Hub, HubConfig, HubError, HubStats, TopChannel};
pub use outbox::{Outbox, OutboxLimits, Pushed, Signals};
pub use policy::{Access, ChannelPattern, ChannelRules, Namespace, Requester};
pub use rate_limit::{Limit, MessageLimiter, RateLimitConfig, RateLimits, Verdict};
pub use registry::Registry;
pub(crate) use registry::{Joined, Left};
pub use session::{ConnId, Identity, Session, Subscriptions};
