//! The RFC 6455 opening handshake of Engine.IO's WebSocket transport.
//!
//! The same checks as the native transport's (§4.2.1); kept here because
//! transports do not name each other, and it is small.

use axum::{
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// The parts of an upgrade request the handshake needs.
pub(crate) struct Handshake {
    accept: String,
    pub(crate) on_upgrade: hyper::upgrade::OnUpgrade,
}

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handshake").finish_non_exhaustive()
    }
}

impl Handshake {
    /// Reads and checks the handshake headers.
    ///
    /// # Errors
    /// [`BadHandshake`] naming what is wrong.
    pub(crate) fn read(parts: &mut Parts) -> Result<Self, BadHandshake> {
        let headers = &parts.headers;
        let refuse = BadHandshake::Header;
        if !has_token(headers, header::CONNECTION, "upgrade") {
            return Err(refuse("Connection header did not include 'upgrade'"));
        }
        if !has_token(headers, header::UPGRADE, "websocket") {
            return Err(refuse("`Upgrade` header did not include 'websocket'"));
        }
        if headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_none_or(|v| v.as_bytes() != b"13")
        {
            return Err(BadHandshake::Version);
        }
        let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
            return Err(refuse("`Sec-WebSocket-Key` header missing"));
        };
        let accept = derive_accept_key(key.as_bytes());
        let on_upgrade = parts
            .extensions
            .remove::<hyper::upgrade::OnUpgrade>()
            .ok_or(BadHandshake::NotUpgradable)?;
        Ok(Self { accept, on_upgrade })
    }

    /// The `101 Switching Protocols` answer.
    pub(crate) fn switching_protocols(&self) -> Response {
        let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(accept) = HeaderValue::from_str(&self.accept) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        response
    }
}

/// Why an upgrade request was refused.
#[derive(Debug)]
pub(crate) enum BadHandshake {
    /// A required header is missing or wrong: 400.
    Header(&'static str),
    /// Not version 13: 400 with `Sec-WebSocket-Version: 13` (RFC 6455 §4.2.2).
    Version,
    /// The HTTP connection cannot be upgraded.
    NotUpgradable,
}

impl IntoResponse for BadHandshake {
    fn into_response(self) -> Response {
        match self {
            Self::Header(why) => (StatusCode::BAD_REQUEST, why).into_response(),
            Self::Version => (
                StatusCode::BAD_REQUEST,
                [(
                    header::SEC_WEBSOCKET_VERSION,
                    HeaderValue::from_static("13"),
                )],
                "`Sec-WebSocket-Version` must be 13",
            )
                .into_response(),
            Self::NotUpgradable => (
                StatusCode::UPGRADE_REQUIRED,
                "this connection cannot be upgraded",
            )
                .into_response(),
        }
    }
}

/// Whether a comma-separated header has `token` (case-insensitive).
fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}
