//! The native protocol v1 transport: `GET /ws`.
//!
//! The upgrade handler picks the wire format and an optional token from the
//! request, then hands the socket to one [`connection`] task that owns it for
//! its whole life. docs/PROTOCOL.md is the contract this module implements.

mod connection;

use std::sync::Arc;

use axum::{
    extract::{Query, State, WebSocketUpgrade, ws::rejection::WebSocketUpgradeRejection},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Deserialize;

use crate::{
    http::{AppState, ClientIp, origin},
    protocol::Format,
};

/// Subprotocol selecting JSON frames.
pub const SUBPROTOCOL_JSON: &str = "herald.v1.json";
/// Subprotocol selecting MessagePack frames.
pub const SUBPROTOCOL_MSGPACK: &str = "herald.v1.msgpack";
/// Prefix of a subprotocol entry carrying the access token (`bearer.<jwt>`).
const TOKEN_SUBPROTOCOL_PREFIX: &str = "bearer.";

/// Query parameters of `GET /ws`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct UpgradeParams {
    /// `json` (default) or `msgpack`.
    format: Option<String>,
    /// Access token, for clients that cannot send it in the first message.
    token: Option<String>,
}

/// `GET /ws`: upgrades to a WebSocket speaking protocol v1.
pub(crate) async fn upgrade(
    State(state): State<Arc<AppState>>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Query(params): Query<UpgradeParams>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return refuse_handshake(rejection),
    };
    if state.hub.is_draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response();
    }
    // Browsers always send Origin; a page on a foreign site must not be able
    // to open a socket with the user's cookies or stored token
    // (cross-site WebSocket hijacking). Non-browser clients send none.
    if let Some(origin) = headers.get(header::ORIGIN)
        && !origin
            .to_str()
            .is_ok_and(|o| origin::allowed(o, &state.config.server.allowed_origins))
    {
        return (StatusCode::FORBIDDEN, "origin not allowed").into_response();
    }
    if !state.limits.allow_upgrade(ip) {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            "too many new connections from this address",
        )
            .into_response();
    }
    let header_token = ws
        .requested_protocols()
        .filter_map(|p| p.to_str().ok())
        .find_map(|p| p.strip_prefix(TOKEN_SUBPROTOCOL_PREFIX))
        .map(str::to_owned);
    let ws = ws.protocols([SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK]);
    let format = match (ws.selected_protocol(), params.format.as_deref()) {
        (Some(p), _) if p == SUBPROTOCOL_MSGPACK => Format::MsgPack,
        (Some(_), _) | (None, None | Some("json")) => Format::Json,
        (None, Some("msgpack")) => Format::MsgPack,
        (None, Some(other)) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("unknown format {other:?}: use json or msgpack"),
            )
                .into_response();
        }
    };
    let token = header_token.or(params.token).filter(|t| !t.is_empty());
    let settings = &state.config.websocket;
    let max_message = state.config.limits.max_message_size;
    if !state.limits.acquire_ip(ip) {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            "too many open connections from this address",
        )
            .into_response();
    }
    let slot = IpSlot {
        state: Arc::clone(&state),
        ip,
    };
    let tracker = state.tracker.clone();
    ws.read_buffer_size(settings.read_buffer_size)
        .write_buffer_size(settings.write_buffer_size)
        .max_message_size(max_message)
        .max_frame_size(max_message)
        .on_upgrade(move |socket| {
            // Herald tracks its sockets itself: once upgraded, a socket has
            // left hyper's connection, which the HTTP shutdown reaches.
            tracker.track_future(connection::run(socket, state, format, token, slot))
        })
}

/// Answers a handshake that is not a valid WebSocket upgrade. A version
/// other than 13 gets the versions herald speaks (RFC 6455 §4.2.2, §4.4).
fn refuse_handshake(rejection: WebSocketUpgradeRejection) -> Response {
    let version = matches!(
        rejection,
        WebSocketUpgradeRejection::InvalidWebSocketVersionHeader(_)
    );
    let mut response = rejection.into_response();
    if version {
        response.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            header::HeaderValue::from_static("13"),
        );
    }
    response
}

/// A per-IP connection slot, returned when the connection ends (or the
/// upgrade fails, since the callback then never runs and the slot drops).
struct IpSlot {
    state: Arc<AppState>,
    ip: std::net::IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        self.state.limits.release_ip(self.ip);
    }
}
