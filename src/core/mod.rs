//! The hub core: connection lifecycles, channels, fan-out and backpressure.
//!
//! The core knows nothing of HTTP, WebSocket frames, JSON or Redis. A
//! transport hands each socket to [`ClientContext::serve`] as a
//! [`Transport`]; the [`Registry`] fans [`Delivery`]s out into per-connection
//! [`Outbox`]es, and other nodes are reached only through the
//! [`crate::engine::Engine`] trait.

mod client;
mod conn;
mod delivery;
mod direct;
mod disconnect;
mod hub;
mod outbox;
mod policy;
mod publication;
mod rate_limit;
mod recovery;
mod registry;

pub use client::{
    Authenticator, ClientContext, ClientSettings, Credentials, Ended, Inbound, Reply, Request,
    StoreUnavailable, TokenRefused, Transport, Welcome,
};
pub use conn::{Conn, ConnId, Identity, Subscriptions};
pub use delivery::{Delivery, Missed, Payload, WIRE_SLOTS, WireFormat, slots};
pub use direct::FanoutConfig;
pub use disconnect::DisconnectReason;
pub use hub::{Hub, HubConfig, HubError, MembershipObserver};
pub use outbox::{DirectWrite, Outbox, OutboxLimits, Pushed, Signals, Written};
pub use policy::{
    Access, ChannelHistory, ChannelPattern, ChannelRules, Namespace, PolicyError, Requester,
};
pub use publication::{InvalidPublication, PublicationLimits};
pub use rate_limit::{IpSlot, Limit, MessageLimiter, RateLimitConfig, RateLimits, Verdict};
pub use recovery::{Recovery, Subscribed};
pub use registry::Registry;
pub(crate) use registry::{Joined, Left};
