//! The closed set of reasons a connection ends, each with its close code.

use std::borrow::Cow;

use crate::protocol::CloseCode;

/// Why herald closes (or refuses) a connection. Mapped to a close code in one place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The node is shutting down or draining.
    Shutdown,
    /// The client's outbound queue overflowed.
    SlowConsumer,
    /// Nothing received within the heartbeat interval plus timeout.
    HeartbeatTimeout,
    /// No `auth` message within the authentication timeout.
    AuthTimeout,
    /// The node is at its connection limit.
    ConnectionLimit,
    /// The user has too many open connections.
    UserConnectionLimit,
    /// The access token expired.
    TokenExpired,
    /// The access token was refused; the text says why.
    InvalidToken(String),
    /// Anonymous access is not allowed.
    Forbidden,
    /// The client broke the protocol; the text says how.
    ProtocolViolation(String),
    /// An inbound message exceeded the size limit.
    MessageTooLarge,
    /// A backend disconnected the user through the API.
    Kicked,
    /// The login session was revoked (logout, or a refresh token reused).
    SessionRevoked,
    /// The client kept exceeding its rate limit.
    RateLimited,
    /// Herald failed internally.
    Internal,
}

impl DisconnectReason {
    /// The close code sent to the client.
    pub fn close_code(&self) -> CloseCode {
        match self {
            Self::Shutdown => CloseCode::ServiceRestart,
            Self::SlowConsumer => CloseCode::SlowConsumer,
            Self::HeartbeatTimeout => CloseCode::HeartbeatTimeout,
            Self::AuthTimeout => CloseCode::AuthTimeout,
            Self::ConnectionLimit | Self::UserConnectionLimit => CloseCode::ConnectionLimit,
            Self::TokenExpired => CloseCode::TokenExpired,
            Self::InvalidToken(_) => CloseCode::InvalidToken,
            Self::Forbidden => CloseCode::Forbidden,
            Self::ProtocolViolation(_) => CloseCode::ProtocolViolation,
            Self::MessageTooLarge => CloseCode::MessageTooLarge,
            Self::Kicked => CloseCode::Kicked,
            Self::SessionRevoked => CloseCode::SessionRevoked,
            Self::RateLimited => CloseCode::RateLimited,
            Self::Internal => CloseCode::InternalError,
        }
    }

    /// The close reason text (a WebSocket close reason holds at most 123 bytes).
    pub fn reason(&self) -> Cow<'static, str> {
        let text: Cow<'static, str> = match self {
            Self::Shutdown => "server shutting down".into(),
            Self::SlowConsumer => "slow consumer: outbound queue overflowed".into(),
            Self::HeartbeatTimeout => "heartbeat timeout".into(),
            Self::AuthTimeout => "authentication timeout".into(),
            Self::ConnectionLimit => "node connection limit reached".into(),
            Self::UserConnectionLimit => "too many connections for this user".into(),
            Self::TokenExpired => "token expired".into(),
            Self::InvalidToken(why) => format!("invalid token: {why}").into(),
            Self::Forbidden => "anonymous connections are not allowed".into(),
            Self::ProtocolViolation(why) => format!("protocol violation: {why}").into(),
            Self::MessageTooLarge => "message too large".into(),
            Self::Kicked => "disconnected by the server".into(),
            Self::SessionRevoked => "session revoked".into(),
            Self::RateLimited => "rate limit exceeded".into(),
            Self::Internal => "internal error".into(),
        };
        truncate(text, 123)
    }
}

fn truncate(text: Cow<'static, str>, max: usize) -> Cow<'static, str> {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_fit_a_close_frame() {
        let long = DisconnectReason::InvalidToken("é".repeat(100));
        assert!(long.reason().len() <= 123);
        assert_eq!(DisconnectReason::Shutdown.close_code().as_u16(), 1012);
    }

    #[test]
    fn every_reason_closes_with_a_code_the_metrics_register() {
        use DisconnectReason::*;
        let reasons = [
            Shutdown,
            SlowConsumer,
            HeartbeatTimeout,
            AuthTimeout,
            ConnectionLimit,
            UserConnectionLimit,
            TokenExpired,
            InvalidToken(String::new()),
            Forbidden,
            ProtocolViolation(String::new()),
            MessageTooLarge,
            Kicked,
            SessionRevoked,
            RateLimited,
            Internal,
        ];
        for reason in reasons {
            assert!(CloseCode::SENT.contains(&reason.close_code()), "{reason:?}");
        }
    }
}
