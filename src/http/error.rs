//! API errors: one enum, one JSON shape, one status mapping.

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::json;

/// An error answered by the HTTP API as `{"error": {"code", "message", "index"?}}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401: missing or wrong API key.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// 400: the body is not valid JSON or misses fields.
    #[error("{message}")]
    BadRequest {
        /// Stable machine-readable code, such as `invalid_channel`.
        code: &'static str,
        /// What is wrong.
        message: String,
        /// Position in a batch, when the error is about one item.
        index: Option<usize>,
    },
    /// 413: a publication's data is larger than allowed.
    #[error("{message}")]
    TooLarge {
        /// What is too large.
        message: String,
        /// Position in a batch.
        index: Option<usize>,
    },
    /// 401: a refresh token or session was refused (code says why).
    #[error("{1}")]
    Session(&'static str, String),
    /// 429: a rate limit was exceeded.
    #[error("{0}")]
    RateLimited(&'static str),
    /// 503: the engine cannot carry publications right now.
    #[error("engine unavailable: {0}")]
    Unavailable(String),
    /// 504: the publish was sent but Redis did not answer in time: it may
    /// or may not be delivered. Retry with the same idempotency key.
    #[error(
        "the outcome is unknown: redis did not answer in time; retry with the same idempotency key"
    )]
    OutcomeUnknown,
    /// 503: the session store (Redis) does not answer.
    #[error("the session store is unavailable; retry later")]
    StoreUnavailable,
}

impl ApiError {
    /// A 400 with `code` and `message`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
            index: None,
        }
    }

    /// The same error, about item `i` of a batch.
    pub fn at(self, i: usize) -> Self {
        match self {
            Self::BadRequest { code, message, .. } => Self::BadRequest {
                code,
                message,
                index: Some(i),
            },
            Self::TooLarge { message, .. } => Self::TooLarge {
                message,
                index: Some(i),
            },
            other => other,
        }
    }
}

impl From<crate::engine::EngineError> for ApiError {
    fn from(err: crate::engine::EngineError) -> Self {
        match err {
            crate::engine::EngineError::OutcomeUnknown => Self::OutcomeUnknown,
            other => Self::Unavailable(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, index) = match &self {
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized", None),
            Self::BadRequest { code, index, .. } => (StatusCode::BAD_REQUEST, *code, *index),
            Self::TooLarge { index, .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "data_too_large", *index)
            }
            Self::Session(code, _) => (StatusCode::UNAUTHORIZED, *code, None),
            Self::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited", None),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "engine_unavailable", None),
            Self::OutcomeUnknown => (StatusCode::GATEWAY_TIMEOUT, "outcome_unknown", None),
            Self::StoreUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "session_store_unavailable",
                None,
            ),
        };
        let mut error = json!({ "code": code, "message": self.to_string() });
        if let Some(index) = index {
            error["index"] = index.into();
        }
        (status, Json(json!({ "error": error }))).into_response()
    }
}
