//! `GET /api/v1/history`: a channel's kept publications, with their offsets
//! and the stream's position, for backends (API key; no channel rules).

use std::{collections::HashMap, sync::Arc};

use axum::{
    Json,
    extract::{Query, State, rejection::QueryRejection},
};
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::{
    core::HubError,
    protocol::{HistoryEntry, HistoryQuery},
};

/// Reads `channel`'s history: `since` (offset; only later publications),
/// `limit` (capped at the namespace's `history_size`), `reverse` (newest
/// first), `epoch` (refuse with 409 if the stream is in another epoch).
pub(super) async fn history(
    State(state): State<Arc<AppState>>,
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(params) =
        params.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let name = params
        .get("channel")
        .ok_or_else(|| ApiError::bad_request("invalid_channel", "`channel` is required"))?;
    let channel = state
        .publications
        .channel(name)
        .map_err(|e| ApiError::bad_request("invalid_channel", e.to_string()))?;
    let query = HistoryQuery {
        since: number(&params, "since", "invalid_since")?,
        limit: number(&params, "limit", "invalid_limit")?
            .map(|l| usize::try_from(l).unwrap_or(usize::MAX)),
        reverse: match params.get("reverse").map(String::as_str) {
            None | Some("false" | "0") => false,
            Some("true" | "1") => true,
            Some(_) => {
                return Err(ApiError::bad_request(
                    "invalid_reverse",
                    "`reverse` must be true or false",
                ));
            }
        },
    };
    let page = match state.hub.history(channel.clone(), query).await {
        Ok(page) => page,
        Err(HubError::NoHistory(channel)) => {
            return Err(ApiError::NotFound(
                "no_history",
                format!("channel {channel} keeps no history"),
            ));
        }
        Err(HubError::Engine(err)) => return Err(err.into()),
        Err(other) => return Err(ApiError::bad_request("invalid_request", other.to_string())),
    };
    if let Some(epoch) = params.get("epoch")
        && *epoch != page.position.epoch
    {
        return Err(ApiError::Conflict(
            "epoch_changed",
            format!(
                "the stream is in epoch {:?} now, offsets of {epoch:?} no longer apply",
                page.position.epoch
            ),
        ));
    }
    let publications: Vec<HistoryEntry> =
        page.publications.iter().map(HistoryEntry::from).collect();
    Ok(Json(json!({
        "channel": channel.as_str(),
        "publications": publications,
        "position": page.position,
    })))
}

fn number(
    params: &HashMap<String, String>,
    name: &str,
    code: &'static str,
) -> Result<Option<u64>, ApiError> {
    params
        .get(name)
        .map(|v| {
            v.parse::<u64>().map_err(|_| {
                ApiError::bad_request(code, format!("`{name}` must be a non-negative integer"))
            })
        })
        .transpose()
}
