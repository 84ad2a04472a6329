//! The Socket.IO transport: Engine.IO v4 at `[socketio] path` (default
//! parser) and `[socketio] msgpack_path` (`socket.io-msgpack-parser`), over
//! HTTP long-polling and WebSocket, with the polling → WebSocket upgrade.
//!
//! This module only moves packets: the Engine.IO requests (`mod.rs` routes
//! and checks them; `polling.rs` and `websocket.rs` serve them), polling
//! sessions (`session.rs`), the codecs (`engine.rs`, `packet.rs`), and the
//! [`Transport`](crate::core::Transport) (`transport.rs`, with `acks.rs` for
//! acks and `events.rs` for deliveries). The
//! connection's life is the core's [`ClientContext::serve`].
//! docs/SOCKETIO.md is the contract.

mod acks;
mod engine;
mod events;
mod packet;
mod polling;
mod recovery;
mod session;
mod transport;
mod websocket;

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{FromRequestParts, Query, Request, State},
    http::{Method, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
    routing::get,
};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::Deserialize;
use tokio_tungstenite::WebSocketStream;
use tokio_util::task::TaskTracker;

use self::{
    engine::{Frame, Open},
    packet::Parser,
    session::Sessions,
};
use crate::{
    core::{ClientContext, IpSlot},
    net,
};

/// An upgraded Engine.IO WebSocket.
pub(crate) type Ws = WebSocketStream<crate::net::wire::WireIo>;

/// Settings of the Socket.IO transport (from `[socketio]`, `[limits]`,
/// `[heartbeat]`, `[websocket]` and `[server]`).
#[derive(Debug, Clone)]
pub struct SocketIoSettings {
    /// Path of the default-parser endpoint, e.g. `/socket.io/`.
    pub path: String,
    /// Path of the msgpack-parser endpoint, e.g. `/socket.io-msgpack/`.
    pub msgpack_path: String,
    /// Largest polling body or WebSocket message read, bytes (`maxPayload`).
    pub max_payload: usize,
    /// Engine.IO `pingInterval`: the heartbeat interval.
    pub ping_interval: Duration,
    /// Engine.IO `pingTimeout`: the heartbeat timeout.
    pub ping_timeout: Duration,
    /// Most polling sessions open at once.
    pub max_polling_sessions: usize,
    /// Most bytes queued for one polling session between long-polls.
    pub max_buffered_bytes: usize,
    /// Most channels in one `subscribe`/`unsubscribe` list.
    pub max_batch: usize,
    /// Connection state recovery: `Some(most channels recovered)` when on.
    pub recovery_max_channels: Option<usize>,
    /// WebSocket read buffer, bytes.
    pub read_buffer_size: usize,
    /// WebSocket write buffer, bytes.
    pub write_buffer_size: usize,
    /// Longest a write (or a posted packet's hand-over) may take.
    pub write_timeout: Duration,
    /// Browser origins allowed.
    pub allowed_origins: Vec<String>,
    /// Take the client IP from `X-Forwarded-For`.
    pub trust_forwarded_for: bool,
}

/// What the Socket.IO endpoints share.
#[derive(Debug)]
pub struct SocketIoState {
    clients: Arc<ClientContext>,
    settings: SocketIoSettings,
    tracker: TaskTracker,
    sessions: Sessions,
}

impl SocketIoState {
    /// The transport's state; connections are tracked on `tracker`.
    pub fn new(
        clients: Arc<ClientContext>,
        settings: SocketIoSettings,
        tracker: TaskTracker,
    ) -> Self {
        let sessions = Sessions::new(settings.max_polling_sessions);
        Self {
            clients,
            settings,
            tracker,
            sessions,
        }
    }
}

/// One endpoint: the shared state and the parser its path selects.
#[derive(Debug)]
struct Endpoint {
    state: Arc<SocketIoState>,
    parser: Parser,
}

/// The routes of both endpoints (with and without the trailing slash).
pub fn router(state: Arc<SocketIoState>) -> Router {
    let mut router = Router::new();
    let endpoints = [
        (state.settings.path.clone(), Parser::Json),
        (state.settings.msgpack_path.clone(), Parser::MsgPack),
    ];
    for (path, parser) in endpoints {
        let endpoint = Arc::new(Endpoint {
            state: Arc::clone(&state),
            parser,
        });
        let trimmed = path.trim_end_matches('/');
        for path in [format!("{trimmed}/"), trimmed.to_owned()] {
            router = router.route(
                &path,
                get(on_get).post(on_post).with_state(Arc::clone(&endpoint)),
            );
        }
    }
    // Long-polling from a page on another allowed origin needs CORS, with
    // credentials for the affinity cookie of sticky sessions.
    router.layer(
        net::origin::cors(&state.settings.allowed_origins, [Method::GET, Method::POST])
            .allow_credentials(true),
    )
}

/// The query of every Engine.IO request.
#[derive(Debug, Default, Deserialize)]
struct EioQuery {
    #[serde(rename = "EIO")]
    eio: Option<String>,
    transport: Option<String>,
    sid: Option<String>,
    /// JSONP polling, which herald does not serve.
    j: Option<String>,
}

/// Engine.IO's error codes, sent as `{code, message}` (engine.io-client
/// shows them in its transport errors).
#[derive(Debug, Clone, Copy)]
enum EioError {
    /// `transport` is neither `polling` nor `websocket`.
    UnknownTransport = 0,
    /// No open session has this `sid` (on this path).
    UnknownSid = 1,
    /// A `POST` without a session.
    BadHandshakeMethod = 2,
    /// Anything else malformed or refused.
    BadRequest = 3,
    /// The origin is not allowed.
    Forbidden = 4,
    /// Not `EIO=4`.
    UnsupportedVersion = 5,
}

/// An Engine.IO error response.
fn refuse(status: StatusCode, code: EioError, message: &str) -> Response {
    let body = serde_json::json!({ "code": code as u8, "message": message });
    (status, axum::Json(body)).into_response()
}

/// A polling response body (packets, never cached).
fn text(body: Vec<u8>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/plain; charset=UTF-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

/// Reads and checks the query and origin of any Engine.IO request.
async fn checked(parts: &mut Parts, state: &SocketIoState) -> Result<EioQuery, Response> {
    let Query(query) = Query::<EioQuery>::from_request_parts(parts, &())
        .await
        .map_err(|_| refuse(StatusCode::BAD_REQUEST, EioError::BadRequest, "Bad request"))?;
    if query.eio.as_deref() != Some(engine::PROTOCOL) {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            EioError::UnsupportedVersion,
            "Unsupported protocol version: herald speaks EIO=4 (socket.io-client 3 and 4)",
        ));
    }
    if query.j.is_some() {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            EioError::BadRequest,
            "JSONP polling is not supported",
        ));
    }
    // Browsers always send Origin; a page on a foreign site must not reach
    // a user's session (cross-site hijacking). Other clients send none.
    if let Some(origin) = parts.headers.get(header::ORIGIN)
        && !origin
            .to_str()
            .is_ok_and(|o| net::origin::allowed(o, &state.settings.allowed_origins))
    {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            EioError::Forbidden,
            "origin not allowed",
        ));
    }
    Ok(query)
}

/// `GET`: a handshake, a long-poll, or a WebSocket (new or upgrading).
async fn on_get(State(endpoint): State<Arc<Endpoint>>, request: Request) -> Response {
    let (mut parts, _body) = request.into_parts();
    let query = match checked(&mut parts, &endpoint.state).await {
        Ok(query) => query,
        Err(refused) => return refused,
    };
    match (query.transport.as_deref(), query.sid) {
        (Some("polling"), None) => polling::open(&endpoint, &parts),
        (Some("polling"), Some(sid)) => polling::poll(&endpoint, &sid).await,
        (Some("websocket"), sid) => websocket::websocket(&endpoint, &mut parts, sid),
        _ => refuse(
            StatusCode::BAD_REQUEST,
            EioError::UnknownTransport,
            "Transport unknown",
        ),
    }
}

/// `POST`: packets of a polling session.
async fn on_post(State(endpoint): State<Arc<Endpoint>>, request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    let query = match checked(&mut parts, &endpoint.state).await {
        Ok(query) => query,
        Err(refused) => return refused,
    };
    let (Some("polling"), Some(sid)) = (query.transport.as_deref(), query.sid) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            EioError::BadHandshakeMethod,
            "Bad handshake method: a POST needs transport=polling and a sid",
        );
    };
    let Some(session) = endpoint.state.sessions.get(&sid, endpoint.parser) else {
        return unknown_sid();
    };
    polling::post(&endpoint.state.settings, &session, body).await
}

/// `400 {"code":1,"message":"Session ID unknown"}`: engine.io-client then
/// closes and socket.io-client reconnects with a new handshake.
fn unknown_sid() -> Response {
    refuse(
        StatusCode::BAD_REQUEST,
        EioError::UnknownSid,
        "Session ID unknown",
    )
}

/// The admission checks of a new connection, and its per-IP slot.
fn admit(state: &Arc<SocketIoState>, parts: &Parts) -> Result<IpSlot, (StatusCode, &'static str)> {
    let clients = &state.clients;
    if clients.hub().is_draining() {
        return Err((StatusCode::SERVICE_UNAVAILABLE, "draining"));
    }
    let ip = net::client_ip(parts, state.settings.trust_forwarded_for);
    let too_many = |why: &'static str| (StatusCode::TOO_MANY_REQUESTS, why);
    if !clients.limits().allow_upgrade(ip) {
        return Err(too_many("too many new connections from this address"));
    }
    clients
        .limits()
        .ip_slot(ip)
        .ok_or_else(|| too_many("too many open connections from this address"))
}

/// The `open` packet of a new connection.
fn open_frame(settings: &SocketIoSettings, sid: &str, upgrades: &[&str]) -> Frame {
    let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    Open {
        sid,
        upgrades,
        ping_interval: millis(settings.ping_interval),
        ping_timeout: millis(settings.ping_timeout),
        max_payload: settings.max_payload,
    }
    .frame()
}

/// A fresh session id: 120 random bits.
fn new_sid() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 15]>())
}
