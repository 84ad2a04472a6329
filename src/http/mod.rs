//! HTTP surface: the router, the backend API under `/api/v1/`, and the
//! operational endpoints (`/health`, `/ready`, `/metrics`).

mod deadline;
mod demo;
mod error;
mod history;
mod ops;
mod pending;
mod publish;
pub mod serve;
mod sessions;

use std::{convert::Infallible, net::IpAddr, sync::Arc};

use axum::{
    Router,
    extract::{DefaultBodyLimit, FromRequestParts, Request, State},
    http::{HeaderName, HeaderValue, Method, header, request::Parts},
    middleware::{self, Next},
    response::Response,
    routing::{delete, get, post},
};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::task::TaskTracker;
use tower_http::set_header::SetResponseHeaderLayer;

pub use error::{ApiError, Unavailable};

use crate::{
    auth::{TokenVerifier, sessions::Sessions},
    config::Config,
    core::{Hub, PublicationLimits, RateLimits},
    engine::Engine,
};

/// What every handler and connection task shares.
#[derive(Debug)]
pub struct AppState {
    /// The hub core.
    pub hub: Arc<Hub>,
    /// The engine the hub publishes through (for cluster-wide views).
    pub engine: Arc<dyn Engine>,
    /// Verifies access tokens.
    pub verifier: TokenVerifier,
    /// The loaded configuration.
    pub config: Arc<Config>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Tracks connection tasks so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// Login sessions and refresh tokens.
    pub sessions: Sessions,
    /// Rate limits and concurrency caps.
    pub limits: Arc<RateLimits>,
    /// Publication checks shared with client publishing.
    pub publications: PublicationLimits,
}

/// The client's IP: the peer address, or the first `X-Forwarded-For` entry
/// when `server.trust_forwarded_for` is set.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<Arc<AppState>> for ClientIp {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Infallible> {
        Ok(Self(crate::net::client_ip(
            parts,
            state.config.server.trust_forwarded_for,
        )))
    }
}

/// Builds the router: the transports' routes (`transports`), the API and
/// the operations endpoints.
pub fn router(state: Arc<AppState>, transports: Router) -> Router {
    let api = Router::new()
        .route("/publish", post(publish::publish))
        .route("/publish/batch", post(publish::batch))
        .route("/history", get(history::history))
        .route("/stats", get(ops::stats))
        .route("/users/{user}/disconnect", post(ops::disconnect_user))
        .route("/sessions", post(sessions::create))
        .route("/sessions/{session}", delete(sessions::revoke))
        .route("/users/{user}/sessions", delete(sessions::revoke_user))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            require_api_key,
        ));
    // Called by browsers with a refresh token, not the API key: CORS for
    // the allowed origins only.
    let browser = Router::new()
        .route("/sessions/refresh", post(sessions::refresh))
        .route("/sessions/logout", post(sessions::logout))
        .layer(crate::net::origin::cors(
            &state.config.server.allowed_origins,
            [Method::POST],
        ));
    let api = api
        .merge(browser)
        .layer(DefaultBodyLimit::max(state.config.server.max_body_bytes))
        .layer(SetResponseHeaderLayer::overriding(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ));
    let router = Router::new()
        .route("/health", get(ops::health))
        .route("/ready", get(ops::ready))
        .route("/metrics", get(ops::metrics))
        .route("/demo", get(demo::page))
        .route("/demo/herald.js", get(demo::client))
        .route("/demo/demo.js", get(demo::script))
        .nest("/api/v1", api)
        .with_state(Arc::clone(&state))
        .merge(transports)
        .layer(middleware::from_fn_with_state(
            state,
            deadline::body_deadline,
        ));
    security_headers(router)
}

/// The router of the ops listener (`server.ops_listen`): probes and metrics only.
pub fn ops_router(state: Arc<AppState>) -> Router {
    let router = Router::new()
        .route("/health", get(ops::health))
        .route("/ready", get(ops::ready))
        .route("/metrics", get(ops::metrics))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            deadline::body_deadline,
        ))
        .with_state(state);
    security_headers(router)
}

/// Standard security headers on every response.
fn security_headers(router: Router) -> Router {
    let headers = [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("cross-origin-opener-policy", "same-origin"),
    ];
    headers.into_iter().fold(router, |router, (name, value)| {
        router.layer(SetResponseHeaderLayer::if_not_present(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        ))
    })
}

/// Rejects API requests without the configured key (`Authorization: Bearer <key>` or `X-API-Key`).
async fn require_api_key(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let headers = request.headers();
    let presented = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            headers
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| {
                    // The scheme is case-insensitive (RFC 9110).
                    let (scheme, key) = v.split_once(' ')?;
                    scheme.eq_ignore_ascii_case("bearer").then_some(key.trim())
                })
        });
    match presented {
        Some(key) if constant_time_eq(key.as_bytes(), state.config.server.api_key.as_bytes()) => {
            Ok(next.run(request).await)
        }
        Some(_) => Err(ApiError::Unauthorized("wrong API key")),
        None => Err(ApiError::Unauthorized(
            "missing API key: send `Authorization: Bearer <key>` or `X-API-Key`",
        )),
    }
}

/// Compares without an early exit, so timing does not reveal how much of the key matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
