//! The native protocol v1 transport: `GET /ws`.
//!
//! This module only speaks WebSocket: the upgrade handshake (subprotocol,
//! format, token in the request), then [`NativeTransport`], which turns
//! frames into the core's requests and the core's replies and deliveries
//! into frames. The connection's life (authentication, admission, requests,
//! heartbeats, backpressure, close) is the core's
//! [`ClientContext::serve`]. docs/PROTOCOL.md is the contract.

mod transport;

use std::sync::Arc;

use axum::{
    Router,
    extract::{FromRequestParts, Query, Request, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::protocol::{Role, WebSocketConfig},
};
use tokio_util::task::TaskTracker;

pub use transport::NativeTransport;

use crate::{
    core::ClientContext,
    net::{
        self,
        websocket::Handshake,
        wire::{WireIo, take_back},
    },
    protocol::Format,
};

/// Subprotocol selecting JSON frames.
pub const SUBPROTOCOL_JSON: &str = "herald.v1.json";
/// Subprotocol selecting MessagePack frames.
pub const SUBPROTOCOL_MSGPACK: &str = "herald.v1.msgpack";
/// Prefix of a subprotocol entry carrying the access token (`bearer.<jwt>`).
const TOKEN_SUBPROTOCOL_PREFIX: &str = "bearer.";

/// Socket settings of the native transport (from `[websocket]` and `[limits]`).
#[derive(Debug, Clone)]
pub struct NativeSettings {
    /// Read buffer per socket, bytes.
    pub read_buffer_size: usize,
    /// Write buffer per socket, bytes.
    pub write_buffer_size: usize,
    /// Largest inbound message (and frame), bytes.
    pub max_message_size: usize,
    /// Browser origins allowed to open sockets.
    pub allowed_origins: Vec<String>,
    /// Take the client IP from `X-Forwarded-For`.
    pub trust_forwarded_for: bool,
}

/// What the `/ws` handler needs.
#[derive(Debug)]
pub struct NativeState {
    /// Serves each connection's life.
    pub clients: Arc<ClientContext>,
    /// Socket settings.
    pub settings: NativeSettings,
    /// Tracks connection tasks so shutdown can wait for them.
    pub tracker: TaskTracker,
}

/// The `/ws` route.
pub fn router(state: Arc<NativeState>) -> Router {
    Router::new().route("/ws", get(upgrade)).with_state(state)
}

/// Query parameters of `GET /ws`.
#[derive(Debug, Default, Deserialize)]
struct UpgradeParams {
    /// `json` (default) or `msgpack`.
    format: Option<String>,
    /// Access token, for clients that cannot send it in the first message.
    token: Option<String>,
}

/// `GET /ws`: checks the WebSocket handshake (RFC 6455 §4.2.1), then the
/// node's admission rules, and upgrades to a socket speaking protocol v1.
async fn upgrade(State(state): State<Arc<NativeState>>, request: Request) -> Response {
    let (mut parts, _body) = request.into_parts();
    let handshake = match Handshake::read(&mut parts) {
        Ok(handshake) => handshake,
        Err(refused) => return refused.into_response(),
    };
    let Query(params) = match Query::<UpgradeParams>::from_request_parts(&mut parts, &()).await {
        Ok(query) => query,
        Err(rejection) => return rejection.into_response(),
    };
    let ip = net::client_ip(&parts, state.settings.trust_forwarded_for);
    let clients = &state.clients;
    if clients.hub().is_draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response();
    }
    // Browsers always send Origin; a page on a foreign site must not be able
    // to open a socket with the user's cookies or stored token
    // (cross-site WebSocket hijacking). Non-browser clients send none.
    if let Some(origin) = parts.headers.get(header::ORIGIN)
        && !origin
            .to_str()
            .is_ok_and(|o| net::origin::allowed(o, &state.settings.allowed_origins))
    {
        return (StatusCode::FORBIDDEN, "origin not allowed").into_response();
    }
    if !clients.limits().allow_upgrade(ip) {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            "too many new connections from this address",
        )
            .into_response();
    }
    let header_token = handshake
        .protocols
        .iter()
        .find_map(|p| p.strip_prefix(TOKEN_SUBPROTOCOL_PREFIX))
        .map(str::to_owned);
    // The first of ours the client offered, in our order.
    let selected = [SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK]
        .into_iter()
        .find(|ours| handshake.protocols.iter().any(|p| p == ours));
    let format = match (selected, params.format.as_deref()) {
        (Some(SUBPROTOCOL_MSGPACK), _) => Format::MsgPack,
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
    let Some(slot) = clients.limits().ip_slot(ip) else {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            "too many open connections from this address",
        )
            .into_response();
    };
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(state.settings.read_buffer_size)
        .write_buffer_size(state.settings.write_buffer_size)
        .max_message_size(Some(state.settings.max_message_size))
        .max_frame_size(Some(state.settings.max_message_size));
    let clients = Arc::clone(clients);
    let response = handshake.switching_protocols(selected);
    let on_upgrade = handshake.on_upgrade;
    // Herald tracks its sockets itself: the HTTP server's graceful shutdown
    // does not wait for upgraded connections.
    let tracker = state.tracker.clone();
    state.tracker.spawn(async move {
        // Served by a task of its own, built from the finished transport:
        // this one's state (the upgrade, the handshake) is freed now instead
        // of being kept for the connection's whole life.
        match Box::pin(complete_upgrade(on_upgrade, format, config)).await {
            Some(Upgraded::Tcp(transport)) => {
                tracker.spawn(clients.serve_holding(transport, token, slot));
            }
            Some(Upgraded::Other(transport)) => {
                tracker.spawn(clients.serve_holding(transport, token, slot));
            }
            None => {}
        }
    });
    response
}

/// The transport of an upgraded connection.
enum Upgraded {
    /// Our own listener's plain TCP socket, with direct writes.
    Tcp(NativeTransport<WireIo>),
    /// Any other stream the HTTP server upgraded.
    Other(NativeTransport<TokioIo<hyper::upgrade::Upgraded>>),
}

/// Completes the upgrade and returns the connection's transport (`None`:
/// the client went away first).
async fn complete_upgrade(
    on_upgrade: hyper::upgrade::OnUpgrade,
    format: Format,
    config: WebSocketConfig,
) -> Option<Upgraded> {
    let upgraded = match on_upgrade.await {
        Ok(upgraded) => upgraded,
        Err(err) => {
            tracing::debug!(error = %err, "WebSocket upgrade failed");
            return None;
        }
    };
    let framing = match format {
        Format::Json => transport::json_frame,
        Format::MsgPack => transport::msgpack_frame,
    };
    match take_back(upgraded, framing, config).await {
        Ok((ws, wire)) => Some(Upgraded::Tcp(NativeTransport::over_wire(ws, format, wire))),
        Err(upgraded) => {
            let ws = WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                Some(config),
            )
            .await;
            Some(Upgraded::Other(NativeTransport::new(ws, format)))
        }
    }
}
