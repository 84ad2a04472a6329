//! HTTP surface: the router, the backend API under `/api/v1/`, and the
//! operational endpoints (`/health`, `/ready`, `/metrics`).

mod demo;
mod error;
mod ops;
mod publish;

use std::sync::Arc;

use axum::{
    Router,
    extract::{DefaultBodyLimit, Request, State},
    middleware::{self, Next},
    response::Response,
    routing::{get, post},
};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::task::TaskTracker;

pub use error::ApiError;

use crate::{auth::TokenVerifier, config::Config, core::Hub, engine::Engine};

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
}

/// Builds the router: WebSocket, API and operations endpoints.
pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/publish", post(publish::publish))
        .route("/publish/batch", post(publish::batch))
        .route("/stats", get(ops::stats))
        .route("/users/{user}/disconnect", post(ops::disconnect_user))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            require_api_key,
        ))
        .layer(DefaultBodyLimit::max(state.config.server.max_body_bytes));
    Router::new()
        .route("/ws", get(crate::native::upgrade))
        .route("/health", get(ops::health))
        .route("/ready", get(ops::ready))
        .route("/metrics", get(ops::metrics))
        .route("/demo", get(demo::page))
        .route("/demo/herald.js", get(demo::client))
        .route("/demo/demo.js", get(demo::script))
        .nest("/api/v1", api)
        .with_state(state)
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
