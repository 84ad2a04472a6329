//! `POST /api/v1/publish` and `POST /api/v1/publish/batch`.

use std::sync::Arc;

use axum::{Json, body::Bytes, extract::State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState, Unavailable};
use crate::{
    core::InvalidPublication,
    protocol::{ChannelName, CheckedData, Publication, UserId},
};

/// One publication as the API accepts it: exactly one of `channel`, `user`, `broadcast`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishRequest {
    channel: Option<String>,
    user: Option<String>,
    #[serde(default)]
    broadcast: bool,
    event: String,
    data: CheckedData,
    ts: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest {
    publications: Vec<PublishRequest>,
}

impl PublishRequest {
    fn into_publication(self, state: &AppState) -> Result<Publication, ApiError> {
        let channel = match (self.channel, self.user, self.broadcast) {
            (Some(channel), None, false) => state
                .publications
                .channel(&channel)
                .map_err(|e| ApiError::bad_request("invalid_channel", e.to_string()))?,
            (None, Some(user), false) => {
                ChannelName::personal(&UserId::parse(&user).map_err(|e| {
                    ApiError::bad_request("invalid_user", format!("invalid user id: {e}"))
                })?)
            }
            (None, None, true) => ChannelName::broadcast(),
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_target",
                    "set exactly one of `channel`, `user` or `broadcast: true`",
                ));
            }
        };
        let data = self
            .data
            .0
            .map_err(|e| ApiError::bad_request("invalid_data", e.to_string()))?;
        state
            .publications
            .publication(channel, &self.event, data, self.ts)
            .map_err(|invalid| match invalid {
                InvalidPublication::TooLarge { .. } => ApiError::TooLarge {
                    message: invalid.to_string(),
                    index: None,
                },
                InvalidPublication::Event(_) => {
                    ApiError::bad_request("invalid_event", invalid.to_string())
                }
                InvalidPublication::Channel(_) => {
                    ApiError::bad_request("invalid_channel", invalid.to_string())
                }
            })
    }
}

pub(super) fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request("invalid_json", e.to_string()))
}

async fn send(state: &AppState, batch: Vec<Publication>) -> Result<Vec<usize>, ApiError> {
    if !state
        .limits
        .allow_api_publishes(u32::try_from(batch.len()).unwrap_or(u32::MAX))
    {
        return Err(ApiError::RateLimited(
            "publish rate limit exceeded; slow down",
        ));
    }
    state
        .hub
        .publish(batch)
        .await
        .map_err(|e| ApiError::unavailable(Unavailable::Engine, &e))
}

/// Publishes one message; answers `{"subscribers": n}` (local subscribers reached).
pub(super) async fn publish(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let publication = parse::<PublishRequest>(&body)?.into_publication(&state)?;
    let counts = send(&state, vec![publication]).await?;
    Ok(Json(
        json!({ "subscribers": counts.first().copied().unwrap_or(0) }),
    ))
}

/// Publishes many messages in one request; all are validated before any is sent.
pub(super) async fn batch(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let request: BatchRequest = parse(&body)?;
    let max = state.config.server.max_batch;
    if request.publications.is_empty() || request.publications.len() > max {
        return Err(ApiError::bad_request(
            "invalid_batch",
            format!("a batch holds 1 to {max} publications"),
        ));
    }
    let batch = request
        .publications
        .into_iter()
        .enumerate()
        .map(|(i, p)| p.into_publication(&state).map_err(|e| e.at(i)))
        .collect::<Result<Vec<_>, _>>()?;
    let counts = send(&state, batch).await?;
    let results: Vec<Value> = counts
        .into_iter()
        .map(|n| json!({ "subscribers": n }))
        .collect();
    Ok(Json(json!({ "results": results })))
}
