//! The RFC 6455 opening handshake (§4.2), shared by every transport that
//! upgrades to a WebSocket (the native protocol, Socket.IO's WebSocket
//! transport): the header checks, the accept key and the `101` answer.

use axum::{
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
};
use tokio_tungstenite::tungstenite::{self, handshake::derive_accept_key};

use crate::core::{DisconnectReason, Ended};

/// A checked upgrade request.
pub struct Handshake {
    accept: String,
    /// The subprotocols the client offered, in its order.
    pub protocols: Vec<String>,
    /// Resolves to the upgraded connection once the `101` is sent.
    pub on_upgrade: hyper::upgrade::OnUpgrade,
}

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handshake")
            .field("protocols", &self.protocols)
            .finish_non_exhaustive()
    }
}

impl Handshake {
    /// Reads and checks the handshake headers (§4.2.1).
    ///
    /// # Errors
    /// [`BadHandshake`] naming what is wrong.
    pub fn read(parts: &mut Parts) -> Result<Self, BadHandshake> {
        let headers = &parts.headers;
        if !header_has_token(headers, header::CONNECTION, "upgrade") {
            return Err(BadHandshake::Header(
                "Connection header did not include 'upgrade'",
            ));
        }
        if !header_has_token(headers, header::UPGRADE, "websocket") {
            return Err(BadHandshake::Header(
                "`Upgrade` header did not include 'websocket'",
            ));
        }
        if headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_none_or(|v| v.as_bytes() != b"13")
        {
            return Err(BadHandshake::Version);
        }
        let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
            return Err(BadHandshake::Header("`Sec-WebSocket-Key` header missing"));
        };
        let accept = derive_accept_key(key.as_bytes());
        let protocols = headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .collect();
        let on_upgrade = parts
            .extensions
            .remove::<hyper::upgrade::OnUpgrade>()
            .ok_or(BadHandshake::NotUpgradable)?;
        Ok(Self {
            accept,
            protocols,
            on_upgrade,
        })
    }

    /// The `101 Switching Protocols` answer, naming `protocol` if one was chosen.
    pub fn switching_protocols(&self, protocol: Option<&'static str>) -> Response {
        let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(accept) = HeaderValue::from_str(&self.accept) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        if let Some(protocol) = protocol {
            headers.insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static(protocol),
            );
        }
        response
    }
}

/// Why an upgrade request was refused before anything else was checked.
#[derive(Debug)]
pub enum BadHandshake {
    /// A required header is missing or wrong: 400.
    Header(&'static str),
    /// Not version 13: 400 with `Sec-WebSocket-Version: 13` (§4.2.2).
    Version,
    /// The HTTP connection cannot be upgraded (HTTP/2 without extended CONNECT).
    NotUpgradable,
}

impl IntoResponse for BadHandshake {
    fn into_response(self) -> Response {
        match self {
            Self::Header(why) => (StatusCode::BAD_REQUEST, why).into_response(),
            // 400, not 426: a 426 must also carry an `Upgrade` header, and
            // §4.2.2 asks only for the version we speak.
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
fn header_has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// How a WebSocket read error ends the connection: a message over the size
/// limit closes 4503, a broken frame 4502 (protocol violation); a client
/// that drops TCP without a close frame is ordinary network churn, and any
/// other I/O error means the client is gone.
pub fn ended_by(err: tungstenite::Error) -> Ended {
    match err {
        tungstenite::Error::Capacity(_) => DisconnectReason::MessageTooLarge.into(),
        tungstenite::Error::Protocol(
            tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
        ) => Ended::Gone,
        tungstenite::Error::Protocol(e) => {
            DisconnectReason::ProtocolViolation(e.to_string()).into()
        }
        tungstenite::Error::Utf8(_) => {
            DisconnectReason::ProtocolViolation("text frame is not UTF-8".into()).into()
        }
        _ => Ended::Gone,
    }
}
