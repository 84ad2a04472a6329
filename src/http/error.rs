//! API errors: one enum, one JSON shape, one status mapping.
//!
//! A 5xx answers a fixed message per code: the cause (a Redis client's
//! error text, say) is logged where the error is made, never sent.

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
    /// 404: what was asked for does not exist (code says what).
    #[error("{1}")]
    NotFound(&'static str, String),
    /// 409: the request no longer fits the state (code says how).
    #[error("{1}")]
    Conflict(&'static str, String),
    /// 401: a refresh token or session was refused (code says why).
    #[error("{1}")]
    Session(&'static str, String),
    /// 429: a rate limit was exceeded.
    #[error("{0}")]
    RateLimited(&'static str),
    /// 503: a service herald depends on failed; see [`ApiError::unavailable`].
    #[error("{}", .0.message())]
    Unavailable(Unavailable),
    /// 504: the publish was sent but Redis did not answer in time: it may
    /// or may not be delivered. Retry with the same idempotency key.
    #[error(
        "the outcome is unknown: redis did not answer in time; retry with the same idempotency key"
    )]
    OutcomeUnknown,
}

/// What failed behind a 503; each has one stable code and message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// The engine failed.
    Engine,
    /// The session store (Redis) does not answer.
    SessionStore,
    /// No configured key can sign access tokens.
    SigningKey,
}

impl Unavailable {
    /// The stable `error.code`.
    pub fn code(self) -> &'static str {
        match self {
            Self::Engine => "engine_unavailable",
            Self::SessionStore => "session_store_unavailable",
            Self::SigningKey => "no_signing_key",
        }
    }

    /// The stable `error.message`.
    pub fn message(self) -> &'static str {
        match self {
            Self::Engine => "the engine is unavailable; retry with backoff",
            Self::SessionStore => "the session store is unavailable; retry later",
            Self::SigningKey => "herald has no key to sign access tokens with",
        }
    }
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

    /// A 503 for `what`. The cause is logged here, at warn, and not answered:
    /// it may carry a backend's internals.
    pub fn unavailable(what: Unavailable, cause: &dyn std::fmt::Display) -> Self {
        tracing::warn!(error = %cause, code = what.code(), "answering 503");
        Self::Unavailable(what)
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
    /// 504 for an unknown outcome; otherwise a 503 whose cause is logged,
    /// not answered.
    fn from(err: crate::engine::EngineError) -> Self {
        match err {
            crate::engine::EngineError::OutcomeUnknown => {
                tracing::warn!("answering 504: the engine did not answer in time");
                Self::OutcomeUnknown
            }
            other => Self::unavailable(Unavailable::Engine, &other),
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
            Self::NotFound(code, _) => (StatusCode::NOT_FOUND, *code, None),
            Self::Conflict(code, _) => (StatusCode::CONFLICT, *code, None),
            Self::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited", None),
            Self::Unavailable(what) => (StatusCode::SERVICE_UNAVAILABLE, what.code(), None),
            Self::OutcomeUnknown => (StatusCode::GATEWAY_TIMEOUT, "outcome_unknown", None),
        };
        let mut error = json!({ "code": code, "message": self.to_string() });
        if let Some(index) = index {
            error["index"] = index.into();
        }
        (status, Json(json!({ "error": error }))).into_response()
    }
}
