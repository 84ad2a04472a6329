//! `POST /api/v1/publish` and `POST /api/v1/publish/batch`.

use std::sync::Arc;

use axum::{Json, body::Bytes, extract::State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::protocol::{ChannelName, EventName, JsonData, Publication, UserId, unix_ms};

/// One publication as the API accepts it: exactly one of `channel`, `user`, `broadcast`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishRequest {
    channel: Option<String>,
    user: Option<String>,
    #[serde(default)]
    broadcast: bool,
    event: String,
    data: JsonData,
    ts: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest {
    publications: Vec<PublishRequest>,
}

impl PublishRequest {
    fn into_publication(self, state: &AppState) -> Result<Publication, ApiError> {
        let limits = &state.config.limits;
        let channel = match (self.channel, self.user, self.broadcast) {
            (Some(channel), None, false) => ChannelName::parse(&channel, limits.max_channel_length)
                .map_err(|e| {
                    ApiError::bad_request("invalid_channel", format!("invalid channel name: {e}"))
                })?,
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
        let event = EventName::parse(&self.event).map_err(|e| {
            ApiError::bad_request("invalid_event", format!("invalid event name: {e}"))
        })?;
        if self.data.len() > limits.max_data_size {
            return Err(ApiError::TooLarge {
                message: format!(
                    "data is {} bytes; the limit is {}",
                    self.data.len(),
                    limits.max_data_size
                ),
                index: None,
            });
        }
        Ok(Publication {
            channel,
            event,
            data: self.data,
            ts: Some(self.ts.unwrap_or_else(unix_ms)),
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
    state.hub.publish(batch).await.map_err(ApiError::from)
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
