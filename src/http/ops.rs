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
use crate::{engine::NodeStats, protocol::UserId};

/// `GET /health`: the process is alive.
pub(super) async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /ready`: 200 while the node takes connections; 503 while draining,
/// the engine is down or the session store does not answer.
pub(super) async fn ready(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let hub = &state.hub;
    let store_up =
        !state.config.engine.ready_requires_connection || state.sessions.store().is_available();
    if hub.is_ready() && store_up {
        // Still ready with part of a Redis Cluster down: the channels of
        // the other masters work; say which part does not.
        let unavailable = state.engine.degraded();
        if unavailable.is_empty() {
            (StatusCode::OK, Json(json!({ "status": "ready" })))
        } else {
            (
                StatusCode::OK,
                Json(json!({ "status": "degraded", "unavailable": unavailable })),
            )
        }
    } else {
        let status = if hub.is_draining() {
            "draining"
        } else if !store_up {
            "session_store_unavailable"
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

/// `GET /api/v1/stats`: this node's state, every live node's, and cluster totals.
pub(super) async fn stats(State(state): State<Arc<AppState>>) -> Json<Value> {
    let node = state.hub.stats(10);
    let mut nodes: Vec<NodeStats> = match state.engine.nodes().await {
        Ok(nodes) => nodes,
        Err(err) => {
            tracing::warn!(error = %err, "reading cluster stats failed");
            Vec::new()
        }
    };
    // This node's own view is always current, whatever the engine stored.
    nodes.retain(|n| n.node_id != node.node_id);
    nodes.push(node.clone());
    nodes.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    let cluster = json!({
        "nodes": nodes.len(),
        "connections": nodes.iter().map(|n| n.connections).sum::<usize>(),
        "subscriptions": nodes.iter().map(|n| n.subscriptions).sum::<usize>(),
    });
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "node": node,
        "cluster": cluster,
        "nodes": nodes,
    }))
}

/// `POST /api/v1/users/{user}/disconnect`: closes every connection of one user (code 4504).
pub(super) async fn disconnect_user(
    State(state): State<Arc<AppState>>,
    Path(user): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let user = UserId::parse(&user)
        .map_err(|e| ApiError::bad_request("invalid_user", format!("invalid user id: {e}")))?;
    let disconnected = state
        .hub
        .disconnect_user(&user)
        .await
        .map_err(ApiError::from)?;
    Ok(Json(json!({ "disconnected": disconnected })))
}
