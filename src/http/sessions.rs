//! Sessions over HTTP: the app's backend creates and revokes them (API
//! key); the browser refreshes and logs out with its refresh token (no API
//! key; CORS for allowed origins; rate-limited per client IP across nodes).

use std::{net::IpAddr, sync::Arc, time::Duration};

use axum::{
    Json,
    body::Bytes,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{ApiError, AppState, ClientIp, Unavailable, publish::parse};
use crate::{
    auth::sessions::{Issued, Lifetime, NewSession, SessionError},
    core::{ChannelPattern, Limit},
    protocol::UserId,
};

/// Claims an app may not set: herald owns them.
const RESERVED_CLAIMS: [&str; 9] = [
    "sub", "exp", "iat", "nbf", "iss", "aud", "sid", "channels", "jti",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    user: String,
    #[serde(default)]
    channels: Vec<String>,
    #[serde(default)]
    claims: Map<String, Value>,
    // Any JSON number, so that a negative, fractional or huge lifetime is
    // refused naming its field rather than as undecodable JSON.
    access_ttl_secs: Option<serde_json::Number>,
    refresh_ttl_secs: Option<serde_json::Number>,
}

/// A requested lifetime, if given, checked against its range.
fn lifetime(
    which: Lifetime,
    requested: Option<&serde_json::Number>,
) -> Result<Option<u64>, SessionError> {
    requested
        .map(|n| {
            n.as_u64()
                .ok_or(SessionError::Lifetime(which))
                .and_then(|secs| which.check(secs))
        })
        .transpose()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    refresh_token: String,
}

impl From<SessionError> for ApiError {
    fn from(err: SessionError) -> Self {
        match err {
            SessionError::Lifetime(_) => Self::bad_request("invalid_ttl", err.to_string()),
            SessionError::Invalid => Self::Session("invalid_refresh_token", err.to_string()),
            SessionError::Reused { .. } => Self::Session("refresh_token_reused", err.to_string()),
            SessionError::Revoked => Self::Session("session_revoked", err.to_string()),
            SessionError::NoSigningKey(_) => Self::unavailable(Unavailable::SigningKey, &err),
            SessionError::Store(_) => Self::unavailable(Unavailable::SessionStore, &err),
            SessionError::Issue(_) => {
                // The request was checked before; what is left is signing
                // itself failing, whose text is the JWT library's.
                tracing::warn!(error = %err, "issuing an access token failed");
                Self::bad_request("invalid_session", "herald could not issue the access token")
            }
        }
    }
}

/// Counts a session call against the per-IP limit shared by every node.
async fn limit(state: &AppState, ip: IpAddr) -> Result<(), ApiError> {
    let per_minute = state.limits.config().session_calls_per_ip_per_minute;
    if per_minute == 0 {
        return Ok(());
    }
    let calls = state
        .sessions
        .store()
        .hit(format!("session:{ip}"), Duration::from_secs(60))
        .await
        .map_err(|e| ApiError::unavailable(Unavailable::SessionStore, &e))?;
    if calls > u64::from(per_minute) {
        Limit::SessionCalls.count();
        return Err(ApiError::RateLimited(
            "too many session calls from this address; retry in a minute",
        ));
    }
    Ok(())
}

fn issued(status: StatusCode, issued: Issued) -> Response {
    (status, Json(issued)).into_response()
}

/// `POST /api/v1/sessions` (API key): creates a session for a user.
pub(super) async fn create(
    State(state): State<Arc<AppState>>,
    ClientIp(ip): ClientIp,
    body: Bytes,
) -> Result<Response, ApiError> {
    limit(&state, ip).await?;
    let request: CreateRequest = parse(&body)?;
    UserId::parse(&request.user)
        .map_err(|e| ApiError::bad_request("invalid_user", format!("invalid user id: {e}")))?;
    for pattern in &request.channels {
        ChannelPattern::parse(pattern)
            .map_err(|e| ApiError::bad_request("invalid_channel", e.to_string()))?;
    }
    if let Some(claim) = RESERVED_CLAIMS
        .iter()
        .find(|c| request.claims.contains_key(**c))
    {
        return Err(ApiError::bad_request(
            "invalid_claims",
            format!("claim {claim:?} is set by herald and may not be given"),
        ));
    }
    let new = NewSession {
        access_ttl_secs: lifetime(Lifetime::Access, request.access_ttl_secs.as_ref())?,
        refresh_ttl_secs: lifetime(Lifetime::Refresh, request.refresh_ttl_secs.as_ref())?,
        user: request.user,
        grants: request.channels,
        extra: request.claims,
    };
    Ok(issued(
        StatusCode::CREATED,
        state.sessions.create(new).await?,
    ))
}

/// `POST /api/v1/sessions/refresh` (browser): rotates the refresh token.
/// A reused token revokes the session and closes its connections everywhere.
pub(super) async fn refresh(
    State(state): State<Arc<AppState>>,
    ClientIp(ip): ClientIp,
    body: Bytes,
) -> Result<Response, ApiError> {
    limit(&state, ip).await?;
    let request: TokenRequest = parse(&body)?;
    match state.sessions.refresh(&request.refresh_token).await {
        Ok(tokens) => Ok(issued(StatusCode::OK, tokens)),
        Err(SessionError::Reused { session }) => {
            tracing::warn!(%session, %ip, "refresh token reused: session revoked");
            close_session(&state, &session).await;
            Err(SessionError::Reused { session }.into())
        }
        Err(err) => Err(err.into()),
    }
}

/// `POST /api/v1/sessions/logout` (browser): revokes the session of a refresh token.
pub(super) async fn logout(
    State(state): State<Arc<AppState>>,
    ClientIp(ip): ClientIp,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    limit(&state, ip).await?;
    let request: TokenRequest = parse(&body)?;
    let session = match state.sessions.logout(&request.refresh_token).await {
        Ok(session) | Err(SessionError::Reused { session }) => session,
        Err(err) => return Err(err.into()),
    };
    close_session(&state, &session).await;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/v1/sessions/{sid}` (API key): revokes one session.
pub(super) async fn revoke(
    State(state): State<Arc<AppState>>,
    Path(session): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let revoked = state.sessions.revoke(&session).await?;
    close_session(&state, &session).await;
    Ok(Json(json!({ "revoked": revoked })))
}

/// `DELETE /api/v1/users/{user}/sessions` (API key): revokes every session of a user.
pub(super) async fn revoke_user(
    State(state): State<Arc<AppState>>,
    Path(user): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let user = UserId::parse(&user)
        .map_err(|e| ApiError::bad_request("invalid_user", format!("invalid user id: {e}")))?;
    let sessions = state.sessions.revoke_user(user.as_str()).await?;
    for session in &sessions {
        close_session(&state, session).await;
    }
    Ok(Json(json!({ "revoked": sessions.len() })))
}

/// Closes the session's connections on every node (4505). Revocation is
/// already stored, so a failure here only delays the close until the
/// connections' tokens expire; it is logged, not returned.
async fn close_session(state: &AppState, session: &str) {
    if let Err(err) = state.hub.revoke_session(session).await {
        tracing::warn!(error = %err, %session, "closing a revoked session's connections failed");
    }
}
