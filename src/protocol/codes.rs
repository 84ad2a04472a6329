//! Stable numeric codes: error replies and WebSocket close codes.
//!
//! Numbers never change meaning once released; docs/PROTOCOL.md lists each.

/// The code in an `error` reply: what went wrong with one request.
///
/// The connection stays open after every error reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    /// The server failed in a way the client cannot fix.
    Internal = 100,
    /// The message could not be decoded or misses a required field.
    BadRequest = 101,
    /// The message `type` is not one this protocol version knows.
    UnknownType = 102,
    /// A channel name breaks the charset or length rules.
    InvalidChannel = 103,
    /// The connection may not do this on this channel.
    PermissionDenied = 104,
    /// The connection is already subscribed to the channel.
    AlreadySubscribed = 105,
    /// The connection is not subscribed to the channel.
    NotSubscribed = 106,
    /// The connection holds the maximum number of subscriptions.
    SubscriptionLimit = 107,
    /// A request other than `auth` arrived before authentication.
    NotAuthenticated = 108,
    /// An `auth` message arrived on an authenticated connection.
    AlreadyAuthenticated = 109,
    /// An event name breaks the charset or length rules.
    InvalidEvent = 110,
    /// The client exceeded a rate limit; slow down.
    RateLimited = 111,
    /// The engine that carries publications between nodes is unavailable.
    EngineUnavailable = 112,
    /// The publication data exceeds the size limit.
    PayloadTooLarge = 113,
    /// A `refresh` token was refused (invalid, expired, or another user's).
    TokenRejected = 114,
    /// The publication data cannot be carried to every wire format: it nests
    /// deeper than 64 levels or holds a number beyond the 64-bit float range
    /// (or, from MessagePack, a NaN or infinity).
    InvalidData = 115,
    /// The session store (Redis) did not answer; the token was neither
    /// accepted nor refused. Retry later.
    SessionStoreUnavailable = 116,
    /// A `publish` reached the engine but no answer came in time: it may or
    /// may not be delivered (at most once; herald does not send it again).
    OutcomeUnknown = 117,
    /// A `history` request (or `since`/`latest`) for a channel whose
    /// namespace keeps no history.
    NoHistory = 118,
}

impl ErrorCode {
    /// The numeric value sent on the wire.
    pub fn as_u16(self) -> u16 {
        self as u16
    }
}

/// A WebSocket close code herald sends, and whether the client should reconnect.
///
/// Herald's own codes are split into two ranges: 4000–4499 mean "reconnect
/// (with backoff)", 4500–4999 mean "do not reconnect until something changes".
/// 1012 (service restart) is the standard code and means "reconnect".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum CloseCode {
    /// The client closed, or the server closed a healthy connection on request.
    Normal = 1000,
    /// The server is restarting or draining: reconnect, ideally to another node.
    ServiceRestart = 1012,
    /// The server hit an internal error; reconnect with backoff.
    InternalError = 4000,
    /// The client did not read its messages fast enough; its queue overflowed.
    SlowConsumer = 4001,
    /// The client neither sent anything nor answered pings in time.
    HeartbeatTimeout = 4002,
    /// The client did not authenticate within the timeout.
    AuthTimeout = 4003,
    /// The node holds its maximum number of connections.
    ConnectionLimit = 4004,
    /// The access token expired; fetch a fresh token, then reconnect.
    TokenExpired = 4005,
    /// The client kept exceeding its message rate limit; reconnect with backoff.
    RateLimited = 4006,
    /// The token is invalid (bad signature, algorithm, claims); do not retry it.
    InvalidToken = 4500,
    /// The connection is not allowed: anonymous access is disabled.
    Forbidden = 4501,
    /// The client broke the protocol (for example a frame type herald does not accept).
    ProtocolViolation = 4502,
    /// A message exceeded the inbound size limit.
    MessageTooLarge = 4503,
    /// A backend disconnected this user through the API.
    Kicked = 4504,
    /// The login session was revoked (logout, revocation, or a reused refresh token).
    SessionRevoked = 4505,
}

impl CloseCode {
    /// Every code herald itself closes with (all but [`CloseCode::Normal`]).
    pub const SENT: [CloseCode; 14] = [
        Self::ServiceRestart,
        Self::InternalError,
        Self::SlowConsumer,
        Self::HeartbeatTimeout,
        Self::AuthTimeout,
        Self::ConnectionLimit,
        Self::TokenExpired,
        Self::RateLimited,
        Self::InvalidToken,
        Self::Forbidden,
        Self::ProtocolViolation,
        Self::MessageTooLarge,
        Self::Kicked,
        Self::SessionRevoked,
    ];

    /// The numeric value sent in the close frame.
    pub fn as_u16(self) -> u16 {
        self as u16
    }

    /// Whether a well-behaved client reconnects (with backoff) after this code.
    pub fn should_reconnect(self) -> bool {
        let code = self.as_u16();
        code == 1012 || (4000..4500).contains(&code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_code_ranges_decide_reconnect() {
        assert!(CloseCode::ServiceRestart.should_reconnect());
        assert!(CloseCode::SlowConsumer.should_reconnect());
        assert!(CloseCode::TokenExpired.should_reconnect());
        assert!(!CloseCode::InvalidToken.should_reconnect());
        assert!(!CloseCode::Kicked.should_reconnect());
        assert!(!CloseCode::Normal.should_reconnect());
    }
}
