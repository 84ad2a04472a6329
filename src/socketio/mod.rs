//! The Socket.IO transport: Engine.IO v4 at `[socketio] path` (default
//! parser) and `[socketio] msgpack_path` (`socket.io-msgpack-parser`), over
//! HTTP long-polling and WebSocket, with the polling → WebSocket upgrade.
//!
//! This module only moves packets: the Engine.IO handshake and requests
//! (`mod.rs`), polling [`session`]s, the codecs ([`engine`], [`packet`]) and
//! the [`Transport`](crate::core::Transport) (`transport.rs`). The
//! connection's life is the core's [`ClientContext::serve`].
//! docs/SOCKETIO.md is the contract.

mod acks;
mod engine;
mod events;
mod handshake;
mod packet;
mod session;
mod transport;

use std::{net::IpAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    body::Body,
    extract::{FromRequestParts, Query, Request, State},
    http::{HeaderValue, Method, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
    routing::get,
};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::time::timeout;
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{Message, protocol::Role},
};
use tokio_util::task::TaskTracker;
use tower_http::cors::{AllowOrigin, CorsLayer};

use self::{
    engine::{Frame, Open},
    handshake::Handshake,
    packet::Parser,
    session::{Refused, Session, Sessions},
    transport::SocketIoTransport,
};
use crate::{core::ClientContext, core::DisconnectReason, net};

/// An upgraded Engine.IO WebSocket.
pub(crate) type Ws = WebSocketStream<TokioIo<Upgraded>>;

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
    router.layer(cors(&state.settings.allowed_origins))
}

/// Long-polling from a page on another allowed origin needs CORS.
fn cors(origins: &[String]) -> CorsLayer {
    let origins = origins.to_vec();
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin: &HeaderValue, _| {
            origin
                .to_str()
                .is_ok_and(|o| net::origin::allowed(o, &origins))
        }))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([header::CONTENT_TYPE])
        .allow_credentials(true)
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

/// Engine.IO's error codes, sent as `{code, message}` with a 400.
#[derive(Debug, Clone, Copy)]
enum EioError {
    UnknownTransport = 0,
    UnknownSid = 1,
    BadHandshakeMethod = 2,
    BadRequest = 3,
    Forbidden = 4,
    UnsupportedVersion = 5,
}

fn refuse(status: StatusCode, code: EioError, message: &str) -> Response {
    let body = serde_json::json!({ "code": code as u8, "message": message });
    (status, axum::Json(body)).into_response()
}

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
        (Some("polling"), None) => open_polling(&endpoint, &parts),
        (Some("polling"), Some(sid)) => poll(&endpoint, &sid).await,
        (Some("websocket"), sid) => websocket(&endpoint, &mut parts, sid),
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
    post(&endpoint.state.settings, &session, body).await
}

fn unknown_sid() -> Response {
    refuse(
        StatusCode::BAD_REQUEST,
        EioError::UnknownSid,
        "Session ID unknown",
    )
}

async fn post(settings: &SocketIoSettings, session: &Session, body: Body) -> Response {
    let Ok(body) = axum::body::to_bytes(body, settings.max_payload).await else {
        session.end(DisconnectReason::MessageTooLarge);
        return (StatusCode::PAYLOAD_TOO_LARGE, "payload too large").into_response();
    };
    let packets = match engine::decode_payload(&body) {
        Ok(packets) => packets,
        Err(err) => {
            session.end(DisconnectReason::ProtocolViolation(err.to_string()));
            return refuse(
                StatusCode::BAD_REQUEST,
                EioError::BadRequest,
                &err.to_string(),
            );
        }
    };
    match session.post(packets, settings.write_timeout).await {
        Ok(()) => ([(header::CONTENT_TYPE, "text/html")], "ok").into_response(),
        Err(Refused::Overlap) => refuse(
            StatusCode::BAD_REQUEST,
            EioError::BadRequest,
            "overlapping POSTs",
        ),
        Err(Refused::Busy) => (StatusCode::SERVICE_UNAVAILABLE, "busy; retry").into_response(),
        Err(Refused::Gone) => unknown_sid(),
    }
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
    IpSlot::acquire(Arc::clone(clients), ip)
        .ok_or_else(|| too_many("too many open connections from this address"))
}

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

/// The polling handshake: a session, its connection task, the `open` packet.
fn open_polling(endpoint: &Endpoint, parts: &Parts) -> Response {
    let state = &endpoint.state;
    let slot = match admit(state, parts) {
        Ok(slot) => slot,
        Err(refused) => return refused.into_response(),
    };
    let settings = &state.settings;
    let sid = new_sid();
    let idle = settings.ping_interval + settings.ping_timeout;
    let (session, ends) = Session::new(
        sid.clone(),
        endpoint.parser,
        settings.max_buffered_bytes,
        idle,
    );
    if !state.sessions.insert(Arc::clone(&session)) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many polling sessions; connect with the websocket transport",
        )
            .into_response();
    }
    let transport = SocketIoTransport::polling(session, ends, settings.max_batch);
    let task_state = Arc::clone(state);
    let task_sid = sid.clone();
    state.tracker.spawn(async move {
        task_state.clients.serve(transport, None).await;
        task_state.sessions.remove(&task_sid);
        drop(slot);
    });
    text(engine::encode_payload(&[open_frame(
        settings,
        &sid,
        &["websocket"],
    )]))
}

/// A long-poll.
async fn poll(endpoint: &Endpoint, sid: &str) -> Response {
    let state = &endpoint.state;
    let Some(session) = state.sessions.get(sid, endpoint.parser) else {
        return unknown_sid();
    };
    match session.poll(state.settings.ping_interval).await {
        Ok(body) => text(body),
        Err(_) => refuse(
            StatusCode::BAD_REQUEST,
            EioError::BadRequest,
            "overlapping long-polls",
        ),
    }
}

/// A WebSocket: a new connection, or the upgrade of a polling session.
fn websocket(endpoint: &Arc<Endpoint>, parts: &mut Parts, sid: Option<String>) -> Response {
    let handshake = match Handshake::read(parts) {
        Ok(handshake) => handshake,
        Err(refused) => return refused.into_response(),
    };
    let state = &endpoint.state;
    let settings = &state.settings;
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(settings.read_buffer_size)
        .write_buffer_size(settings.write_buffer_size)
        .max_message_size(Some(settings.max_payload))
        .max_frame_size(Some(settings.max_payload));
    let response = handshake.switching_protocols();
    let on_upgrade = handshake.on_upgrade;
    let parser = endpoint.parser;
    let task_state = Arc::clone(state);
    match sid {
        None => {
            let slot = match admit(state, parts) {
                Ok(slot) => slot,
                Err(refused) => return refused.into_response(),
            };
            state.tracker.spawn(async move {
                let Ok(upgraded) = on_upgrade.await else {
                    return;
                };
                let mut ws = Box::new(
                    WebSocketStream::from_raw_socket(
                        TokioIo::new(upgraded),
                        Role::Server,
                        Some(config),
                    )
                    .await,
                );
                let settings = &task_state.settings;
                let open = transport_message(open_frame(settings, &new_sid(), &[]));
                if !matches!(
                    timeout(settings.write_timeout, ws.send(open)).await,
                    Ok(Ok(()))
                ) {
                    return;
                }
                let transport = SocketIoTransport::websocket(ws, parser, settings.max_batch);
                task_state.clients.serve(transport, None).await;
                drop(slot);
            });
        }
        Some(sid) => {
            let Some(session) = state.sessions.get(&sid, parser) else {
                return unknown_sid();
            };
            let Some(hand_over) = session.begin_upgrade() else {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    EioError::BadRequest,
                    "this session is already upgrading",
                );
            };
            state.tracker.spawn(async move {
                let Ok(upgraded) = on_upgrade.await else {
                    return;
                };
                let mut ws = Box::new(
                    WebSocketStream::from_raw_socket(
                        TokioIo::new(upgraded),
                        Role::Server,
                        Some(config),
                    )
                    .await,
                );
                let limit = task_state.settings.ping_interval + task_state.settings.ping_timeout;
                match timeout(limit, probe(&mut ws, &session)).await {
                    Ok(Ok(())) => {
                        // The session's connection now reads and writes the
                        // WebSocket; polling requests for it are refused.
                        task_state.sessions.remove(session.sid());
                        let _ = hand_over.send(ws);
                    }
                    Ok(Err(why)) => {
                        tracing::debug!(why, "Engine.IO upgrade failed");
                        session.unprobed();
                    }
                    Err(_) => {
                        tracing::debug!("Engine.IO upgrade timed out");
                        session.unprobed();
                    }
                }
            });
        }
    }
    response
}

/// The upgrade exchange: `2probe` → `3probe`, long-polls released, then `5`.
async fn probe(ws: &mut Ws, session: &Session) -> Result<(), &'static str> {
    match ws.next().await {
        Some(Ok(Message::Text(text))) if text.as_str() == "2probe" => {}
        _ => return Err("the first frame was not `2probe`"),
    }
    ws.send(Message::Text("3probe".into()))
        .await
        .map_err(|_| "the probe answer could not be sent")?;
    session.probed();
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) if text.as_str() == "5" => return Ok(()),
            Some(Ok(Message::Text(text))) if text.as_str() == "6" => {}
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            _ => return Err("expected the `upgrade` packet"),
        }
    }
}

fn transport_message(frame: Frame) -> Message {
    match frame {
        Frame::Text(text) => Message::Text(text),
        Frame::Binary(bytes) => Message::Binary(bytes),
    }
}

/// A per-IP connection slot, returned when the connection ends (the same
/// accounting as the native transport's).
#[derive(Debug)]
struct IpSlot {
    clients: Arc<ClientContext>,
    ip: IpAddr,
}

impl IpSlot {
    fn acquire(clients: Arc<ClientContext>, ip: IpAddr) -> Option<Self> {
        clients
            .limits()
            .acquire_ip(ip)
            .then_some(Self { clients, ip })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        self.clients.limits().release_ip(self.ip);
    }
}
