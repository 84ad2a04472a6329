//! Operational endpoints and node-level API calls.

use std::sync::Arc;

use axum::{
    Json,
    extract::{Path, State},
    http::{StatusCode, header},
    response::IntoResponse,
};
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::{core::DisconnectReason, protocol::UserId};

/// `GET /health`: the process is alive.
pub(super) async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /ready`: 200 while the node takes connections; 503 while draining or the engine is down.
pub(super) async fn ready(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let hub = &state.hub;
    if hub.is_ready() {
        (StatusCode::OK, Json(json!({ "status": "ready" })))
    } else {
        let status = if hub.is_draining() {
            "draining"
        } else {
            "engine_disconnected"
        };
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": status })),
        )
    }
}

/// `GET /metrics`: Prometheus text format.
pub(super) async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

/// `GET /api/v1/stats`: this node's state.
pub(super) async fn stats(State(state): State<Arc<AppState>>) -> Json<Value> {
    let stats = state.hub.stats(10);
    Json(json!({ "version": env!("CARGO_PKG_VERSION"), "node": stats }))
}

/// `POST /api/v1/users/{user}/disconnect`: closes every connection of one user (code 4504).
pub(super) async fn disconnect_user(
    State(state): State<Arc<AppState>>,
    Path(user): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let user = UserId::parse(&user)
        .map_err(|e| ApiError::bad_request("invalid_user", format!("invalid user id: {e}")))?;
    let disconnected = state.hub.disconnect_user(&user, DisconnectReason::Kicked);
    Ok(Json(json!({ "disconnected": disconnected })))
}
