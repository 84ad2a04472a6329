//! The hub's side of one connection: identity, outbox and liveness.
//!
//! "Conn" is a connection; a *login session* (a user's sign-in, with its
//! refresh token) is something else, owned by `auth::sessions`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::{ChannelPattern, DisconnectReason, Outbox};
use crate::protocol::{ChannelName, UserId};

/// Who a connection is, as its token says.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    /// The user, `None` for anonymous connections.
    pub user: Option<UserId>,
    /// The login session, if the token has one.
    pub login_session: Option<String>,
    /// Granted channel patterns.
    pub grants: Vec<ChannelPattern>,
    /// Token expiry, Unix milliseconds; 0 for none.
    pub expires_at_ms: u64,
}

/// A connection id, unique on this node.
pub type ConnId = u64;

/// What the hub knows about one connection. Shared between the connection's
/// own task, the fan-out and the heartbeat scanner.
#[derive(Debug)]
pub struct Conn {
    id: ConnId,
    user: Option<UserId>,
    /// The login session the token belongs to, if any.
    login_session: Option<Box<str>>,
    /// Channel patterns the token granted (empty: no allocation).
    grants: Box<[ChannelPattern]>,
    outbox: Outbox,
    /// Milliseconds since hub start when the client last sent anything.
    last_seen_ms: AtomicU64,
    /// Token expiry, Unix milliseconds; 0 for connections without a token.
    expires_at_ms: AtomicU64,
    /// Whether `token_expiring` was sent for the current token.
    warned: AtomicBool,
}

impl Conn {
    pub(super) fn new(id: ConnId, identity: Identity, now_ms: u64) -> Self {
        Self {
            id,
            user: identity.user,
            login_session: identity.login_session.map(String::into_boxed_str),
            grants: identity.grants.into_boxed_slice(),
            outbox: Outbox::default(),
            last_seen_ms: AtomicU64::new(now_ms),
            expires_at_ms: AtomicU64::new(0),
            warned: AtomicBool::new(false),
        }
    }

    /// Sets when the connection's token expires (Unix ms; 0 = never) and re-arms the warning.
    pub fn set_expiry(&self, expires_at_ms: u64) {
        self.expires_at_ms.store(expires_at_ms, Ordering::Relaxed);
        self.warned.store(false, Ordering::Relaxed);
    }

    pub(super) fn expires_at_ms(&self) -> u64 {
        self.expires_at_ms.load(Ordering::Relaxed)
    }

    /// Marks the expiry warning sent; true the first time.
    pub(super) fn warn_once(&self) -> bool {
        !self.warned.swap(true, Ordering::Relaxed)
    }

    /// This connection's id.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// The authenticated user, `None` for anonymous connections.
    pub fn user(&self) -> Option<&UserId> {
        self.user.as_ref()
    }

    /// The login session the token belongs to, if any.
    pub fn login_session(&self) -> Option<&str> {
        self.login_session.as_deref()
    }

    /// Channel patterns the token granted.
    pub fn grants(&self) -> &[ChannelPattern] {
        &self.grants
    }

    /// The outbound queue the connection's writer drains.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Asks the connection to close with `reason`.
    pub fn close(&self, reason: DisconnectReason) {
        self.outbox.request_close(reason);
    }

    pub(super) fn touch(&self, now_ms: u64) {
        self.last_seen_ms.store(now_ms, Ordering::Relaxed);
    }

    pub(super) fn last_seen_ms(&self) -> u64 {
        self.last_seen_ms.load(Ordering::Relaxed)
    }
}

/// The channels one connection subscribed to; owned by the connection's task.
#[derive(Debug, Default)]
pub struct Subscriptions {
    channels: Vec<ChannelName>,
    /// How many of `channels` (the first ones) were joined automatically.
    pub(super) automatic: usize,
}

impl Subscriptions {
    /// Whether `channel` is among them.
    pub fn contains(&self, channel: &ChannelName) -> bool {
        self.channels.contains(channel)
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.channels.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }

    pub(super) fn insert(&mut self, channel: ChannelName) {
        self.channels.push(channel);
    }

    pub(super) fn remove(&mut self, channel: &ChannelName) -> bool {
        let before = self.channels.len();
        self.channels.retain(|c| c != channel);
        before != self.channels.len()
    }

    pub(super) fn take(&mut self) -> Vec<ChannelName> {
        self.automatic = 0;
        std::mem::take(&mut self.channels)
    }
}
