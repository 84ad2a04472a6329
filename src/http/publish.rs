//! `POST /api/v1/publish` and `POST /api/v1/publish/batch`.
//!
//! Either takes an idempotency key (header `Idempotency-Key` or body field
//! `idempotency_key`): a publish retried with the same key within
//! `engine.idempotency_window_ms` is delivered at most once and answered as
//! the first attempt was, on any node.

use std::sync::Arc;

use axum::{
    Json,
    body::Bytes,
    extract::State,
    http::{HeaderMap, HeaderName, HeaderValue},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState};
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
    /// Only on a single publish; a batch has one key for the whole batch.
    idempotency_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest {
    publications: Vec<PublishRequest>,
    idempotency_key: Option<String>,
}

/// The request header that carries an idempotency key.
const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Set on a reply to a publish that was not sent again: its key was seen.
const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
/// The longest idempotency key.
const MAX_KEY_LEN: usize = 128;

/// The request's idempotency key, from the header or the body (equal if both).
fn idempotency_key(headers: &HeaderMap, body: Option<String>) -> Result<Option<String>, ApiError> {
    let header = headers
        .get(IDEMPOTENCY_KEY)
        .map(|v| v.to_str().map(str::to_owned))
        .transpose()
        .map_err(|_| invalid_key())?;
    let key = match (header, body) {
        (Some(h), Some(b)) if h != b => {
            return Err(ApiError::bad_request(
                "invalid_idempotency_key",
                "the Idempotency-Key header and `idempotency_key` differ",
            ));
        }
        (h, b) => h.or(b),
    };
    // Printable ASCII without braces: braces would change the key's Redis
    // Cluster slot (hash tags).
    let valid = |k: &str| {
        (1..=MAX_KEY_LEN).contains(&k.len())
            && k.bytes()
                .all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}')
    };
    match key {
        Some(k) if !valid(&k) => Err(invalid_key()),
        other => Ok(other),
    }
}

fn invalid_key() -> ApiError {
    ApiError::bad_request(
        "invalid_idempotency_key",
        format!("an idempotency key is 1 to {MAX_KEY_LEN} printable ASCII characters, no braces"),
    )
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

/// Publishes `batch`; with a key, each publication at most once under
/// `keys(key, i)`. Returns the subscriber counts and whether any was a repeat.
async fn send(
    state: &AppState,
    batch: Vec<Publication>,
    key: Option<String>,
    keys: impl Fn(&str, usize) -> String,
) -> Result<(Vec<usize>, bool), ApiError> {
    if !state
        .limits
        .allow_api_publishes(u32::try_from(batch.len()).unwrap_or(u32::MAX))
    {
        return Err(ApiError::RateLimited(
            "publish rate limit exceeded; slow down",
        ));
    }
    let Some(key) = key else {
        let counts = state.hub.publish(batch).await?;
        return Ok((counts, false));
    };
    let keys = (0..batch.len()).map(|i| keys(&key, i)).collect();
    let results = state.hub.publish_once(batch, keys).await?;
    let replayed = results.iter().any(|(_, repeat)| *repeat);
    Ok((results.into_iter().map(|(n, _)| n).collect(), replayed))
}

fn reply(body: Value, replayed: bool) -> Response {
    let mut response = Json(body).into_response();
    if replayed {
        response
            .headers_mut()
            .insert(REPLAYED, HeaderValue::from_static("true"));
    }
    response
}

/// Publishes one message; answers `{"subscribers": n}` (local subscribers reached).
pub(super) async fn publish(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut request = parse::<PublishRequest>(&body)?;
    let key = idempotency_key(&headers, request.idempotency_key.take())?;
    let publication = request.into_publication(&state)?;
    let (counts, replayed) = send(&state, vec![publication], key, |k, _| k.to_owned()).await?;
    Ok(reply(
        json!({ "subscribers": counts.first().copied().unwrap_or(0) }),
        replayed,
    ))
}

/// Publishes many messages in one request; all are validated before any is sent.
pub(super) async fn batch(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut request: BatchRequest = parse(&body)?;
    let key = idempotency_key(&headers, request.idempotency_key.take())?;
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
        .map(|(i, p)| {
            if p.idempotency_key.is_some() {
                return Err(ApiError::bad_request(
                    "invalid_idempotency_key",
                    "a batch takes one `idempotency_key`, for the whole batch",
                )
                .at(i));
            }
            p.into_publication(&state).map_err(|e| e.at(i))
        })
        .collect::<Result<Vec<_>, _>>()?;
    // Item i of batch key K is remembered as `K#i`: a retried batch skips
    // exactly the items that went out before.
    let (counts, replayed) = send(&state, batch, key, |k, i| format!("{k}#{i}")).await?;
    let results: Vec<Value> = counts
        .into_iter()
        .map(|n| json!({ "subscribers": n }))
        .collect();
    Ok(reply(json!({ "results": results }), replayed))
}
