//! Login sessions: an access JWT plus an opaque, rotating refresh token.
//!
//! A refresh token is `<session id>.<secret>` with 256 random bits of
//! secret. Only the SHA-256 of the secret is stored, in the session's record,
//! with the refresh TTL. Every refresh rotates it: the presented token stops
//! working, and presenting it again is treated as theft: the whole session
//! is revoked and its live connections are closed. Rotation is one atomic
//! step in the store (a Lua script on Redis), so of two concurrent refreshes
//! of one token exactly one wins.

mod memory;
mod redis;

/// How many rotated refresh tokens a session remembers to detect reuse:
/// a bounded record even for a session refreshed for months. An older one
/// is merely unknown (401), without revoking the session.
const REMEMBERED_ROTATIONS: usize = 16;

/// Longest access token lifetime a session may have: 1 day.
pub const MAX_ACCESS_TTL_SECS: u64 = 24 * 3600;

/// Longest refresh token lifetime a session may have: 365 days.
pub const MAX_REFRESH_TTL_SECS: u64 = 365 * 24 * 3600;

use std::{sync::Arc, time::Duration};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use futures_util::future::BoxFuture;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

pub use self::{memory::MemoryStore, redis::RedisStore};
use super::{AuthConfig, Claims, IssueError, TokenIssuer};
use crate::protocol::UserId;

/// What a session carries into every access token minted for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The user (`sub`).
    pub user: String,
    /// Granted channel patterns (`channels`).
    pub grants: Vec<String>,
    /// Extra claims from the app.
    pub extra: Map<String, Value>,
    /// Access token lifetime, seconds.
    pub access_ttl_secs: u64,
    /// Refresh token lifetime, seconds.
    pub refresh_ttl_secs: u64,
}

/// The outcome of presenting a refresh token to the store.
#[derive(Debug, Clone, PartialEq)]
pub enum Rotation {
    /// The token was current; it is replaced by the new one.
    Rotated(Record),
    /// The token was already rotated: the session is now revoked.
    Reused,
    /// The session was revoked earlier.
    Revoked,
    /// No such session or token (or it expired).
    Unknown,
}

/// The store failed (Redis unreachable, say).
#[derive(Debug, thiserror::Error)]
#[error("session store unavailable: {0}")]
pub struct StoreError(pub String);

/// Where sessions live: Redis with the Redis engine, memory otherwise.
pub trait SessionStore: Send + Sync + std::fmt::Debug + 'static {
    /// Stores a new session whose current refresh token hashes to `hash`.
    fn create(
        &self,
        sid: String,
        record: Record,
        hash: String,
    ) -> BoxFuture<'static, Result<(), StoreError>>;
    /// Atomically replaces `presented` by `next` if `presented` is current.
    fn rotate(
        &self,
        sid: String,
        presented: String,
        next: String,
    ) -> BoxFuture<'static, Result<Rotation, StoreError>>;
    /// Revokes a session; its record stays (until its TTL) so revocation
    /// survives restarts. Returns whether it existed.
    fn revoke(&self, sid: String) -> BoxFuture<'static, Result<bool, StoreError>>;
    /// The live sessions of `user`.
    fn sessions_of(&self, user: String) -> BoxFuture<'static, Result<Vec<String>, StoreError>>;
    /// Whether `sid` was revoked.
    fn is_revoked(&self, sid: String) -> BoxFuture<'static, Result<bool, StoreError>>;
    /// Counts one hit on `key` in the current fixed window of `window`;
    /// returns the count so far. Shared by every node using the store.
    fn hit(&self, key: String, window: Duration) -> BoxFuture<'static, Result<u64, StoreError>>;
    /// Whether the store answered its last call or health check.
    fn is_available(&self) -> bool {
        true
    }
    /// A health check within the store's deadline; also updates
    /// [`SessionStore::is_available`]. Resolves to the result.
    fn check(&self) -> BoxFuture<'static, bool> {
        Box::pin(std::future::ready(true))
    }
}

/// One of a session's two lifetimes, each with its allowed range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// `access_ttl_secs`: 1 to [`MAX_ACCESS_TTL_SECS`].
    Access,
    /// `refresh_ttl_secs`: 1 to [`MAX_REFRESH_TTL_SECS`].
    Refresh,
}

impl Lifetime {
    /// The field name, as in the API and the configuration.
    pub fn field(self) -> &'static str {
        match self {
            Self::Access => "access_ttl_secs",
            Self::Refresh => "refresh_ttl_secs",
        }
    }

    /// The largest allowed value, seconds.
    pub fn max(self) -> u64 {
        match self {
            Self::Access => MAX_ACCESS_TTL_SECS,
            Self::Refresh => MAX_REFRESH_TTL_SECS,
        }
    }

    /// `secs` if it is within 1 and [`Self::max`].
    ///
    /// # Errors
    /// [`SessionError::Lifetime`] otherwise.
    pub fn check(self, secs: u64) -> Result<u64, SessionError> {
        if (1..=self.max()).contains(&secs) {
            Ok(secs)
        } else {
            Err(SessionError::Lifetime(self))
        }
    }
}

/// Why a session call failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// A lifetime outside its range (`access_ttl_secs`, `refresh_ttl_secs`).
    #[error("{} must be an integer from 1 to {}", .0.field(), .0.max())]
    Lifetime(Lifetime),
    /// Malformed, unknown or expired refresh token.
    #[error("invalid refresh token")]
    Invalid,
    /// An already-rotated refresh token was presented: the session is revoked.
    #[error("refresh token reused; the session has been revoked")]
    Reused {
        /// The revoked session, whose connections must be closed.
        session: String,
    },
    /// The session was revoked.
    #[error("session revoked")]
    Revoked,
    /// Herald has no key to sign access tokens with.
    #[error("sessions need a signing key: {0}")]
    NoSigningKey(#[source] Arc<IssueError>),
    /// Signing failed or the user id is invalid.
    #[error(transparent)]
    Issue(IssueError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Tokens handed to the app for one session.
#[derive(Debug, Clone, Serialize)]
pub struct Issued {
    /// The session id (`sid`).
    pub session_id: String,
    /// The access JWT.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Access token lifetime, seconds.
    pub expires_in: u64,
    /// The refresh token (opaque).
    pub refresh_token: String,
    /// Refresh token lifetime, seconds.
    pub refresh_expires_in: u64,
}

/// A new session's options.
#[derive(Debug, Clone, Default)]
pub struct NewSession {
    /// The user.
    pub user: String,
    /// Granted channel patterns.
    pub grants: Vec<String>,
    /// Extra claims.
    pub extra: Map<String, Value>,
    /// Access token lifetime, seconds (default `auth.access_ttl_secs`).
    pub access_ttl_secs: Option<u64>,
    /// Refresh token lifetime, seconds (default `auth.refresh_ttl_secs`).
    pub refresh_ttl_secs: Option<u64>,
}

/// Issues, rotates and revokes sessions.
#[derive(Debug, Clone)]
pub struct Sessions {
    store: Arc<dyn SessionStore>,
    // Shared: every call that needs to sign reports the one start-up failure.
    issuer: Result<TokenIssuer, Arc<IssueError>>,
    access_ttl_secs: u64,
    refresh_ttl_secs: u64,
}

fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// SHA-256 of the secret part, hex: what the store keeps instead of the token.
fn hash(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Splits `<sid>.<secret>`; `None` if malformed.
fn split(token: &str) -> Option<(&str, &str)> {
    let (sid, secret) = token.split_once('.')?;
    let valid = |s: &str, len| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    (valid(sid, 22) && valid(secret, 43)).then_some((sid, secret))
}

impl Sessions {
    /// Sessions over `store`, signing with the keys of `config`.
    pub fn new(store: Arc<dyn SessionStore>, config: &AuthConfig) -> Self {
        Self {
            store,
            issuer: TokenIssuer::new(config).map_err(Arc::new),
            access_ttl_secs: config.access_ttl_secs,
            refresh_ttl_secs: config.refresh_ttl_secs,
        }
    }

    /// The store (for rate limits shared across nodes).
    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.store
    }

    fn issue(&self, sid: &str, record: &Record, secret: &str) -> Result<Issued, SessionError> {
        let issuer = self
            .issuer
            .as_ref()
            .map_err(|e| SessionError::NoSigningKey(Arc::clone(e)))?;
        let claims = Claims {
            extra: record.extra.clone(),
            session: Some(sid.to_owned()),
            grants: record.grants.clone(),
        };
        let access_token = issuer
            .mint_with(&record.user, record.access_ttl_secs, &claims)
            .map_err(SessionError::Issue)?;
        Ok(Issued {
            session_id: sid.to_owned(),
            access_token,
            token_type: "Bearer",
            expires_in: record.access_ttl_secs,
            refresh_token: format!("{sid}.{secret}"),
            refresh_expires_in: record.refresh_ttl_secs,
        })
    }

    /// Creates a session.
    ///
    /// # Errors
    /// [`SessionError`] when the user id is invalid, a lifetime is out of
    /// range, nothing can sign, or the store failed.
    pub async fn create(&self, new: NewSession) -> Result<Issued, SessionError> {
        UserId::parse(&new.user).map_err(|e| SessionError::Issue(IssueError::User(e)))?;
        let record = Record {
            user: new.user,
            grants: new.grants,
            extra: new.extra,
            access_ttl_secs: Lifetime::Access
                .check(new.access_ttl_secs.unwrap_or(self.access_ttl_secs))?,
            refresh_ttl_secs: Lifetime::Refresh
                .check(new.refresh_ttl_secs.unwrap_or(self.refresh_ttl_secs))?,
        };
        let sid = random_token(16);
        let secret = random_token(32);
        // Sign first: never store a session the app did not get tokens for.
        let issued = self.issue(&sid, &record, &secret)?;
        self.store.create(sid, record, hash(&secret)).await?;
        Ok(issued)
    }

    /// Exchanges a refresh token for a new access token and refresh token.
    ///
    /// # Errors
    /// [`SessionError::Reused`] when the token was already rotated (the
    /// session is then revoked); [`SessionError::Invalid`] or
    /// [`SessionError::Revoked`] otherwise.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Issued, SessionError> {
        let (sid, secret) = split(refresh_token).ok_or(SessionError::Invalid)?;
        let next = random_token(32);
        match self
            .store
            .rotate(sid.to_owned(), hash(secret), hash(&next))
            .await?
        {
            Rotation::Rotated(record) => self.issue(sid, &record, &next),
            Rotation::Reused => Err(SessionError::Reused {
                session: sid.to_owned(),
            }),
            Rotation::Revoked => Err(SessionError::Revoked),
            Rotation::Unknown => Err(SessionError::Invalid),
        }
    }

    /// Revokes the session of `refresh_token` (logout). Returns the session id.
    ///
    /// # Errors
    /// [`SessionError::Invalid`] for a malformed token; store failures.
    pub async fn logout(&self, refresh_token: &str) -> Result<String, SessionError> {
        let (sid, secret) = split(refresh_token).ok_or(SessionError::Invalid)?;
        // Rotating first proves the token is current (an old one counts as
        // reuse and revokes the session anyway).
        let rotation = self
            .store
            .rotate(sid.to_owned(), hash(secret), hash(&random_token(32)));
        match rotation.await? {
            Rotation::Rotated(_) => {
                self.store.revoke(sid.to_owned()).await?;
                Ok(sid.to_owned())
            }
            Rotation::Reused => Err(SessionError::Reused {
                session: sid.to_owned(),
            }),
            Rotation::Revoked => Err(SessionError::Revoked),
            Rotation::Unknown => Err(SessionError::Invalid),
        }
    }

    /// Revokes one session. Returns whether it existed.
    ///
    /// # Errors
    /// Store failures.
    pub async fn revoke(&self, sid: &str) -> Result<bool, SessionError> {
        Ok(self.store.revoke(sid.to_owned()).await?)
    }

    /// Revokes every session of `user`; returns their ids.
    ///
    /// # Errors
    /// Store failures.
    pub async fn revoke_user(&self, user: &str) -> Result<Vec<String>, SessionError> {
        let sessions = self.store.sessions_of(user.to_owned()).await?;
        for sid in &sessions {
            self.store.revoke(sid.clone()).await?;
        }
        Ok(sessions)
    }

    /// Whether `sid` was revoked.
    ///
    /// # Errors
    /// Store failures.
    pub async fn is_revoked(&self, sid: &str) -> Result<bool, SessionError> {
        Ok(self.store.is_revoked(sid.to_owned()).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_tokens_are_long_random_and_hashed() {
        let secret = random_token(32);
        assert_eq!(secret.len(), 43, "256 bits in base64url");
        assert_ne!(secret, random_token(32));
        let token = format!("{}.{secret}", random_token(16));
        assert_eq!(split(&token).map(|(_, s)| s), Some(secret.as_str()));
        assert_eq!(hash(&secret).len(), 64);
        assert!(!hash(&secret).contains(&secret));
        assert_eq!(split("short.token"), None);
    }

    #[test]
    fn lifetimes_are_bounded_on_both_ends() {
        assert!(Lifetime::Access.check(0).is_err());
        assert_eq!(Lifetime::Access.check(86_400).ok(), Some(86_400));
        assert!(Lifetime::Access.check(86_401).is_err());
        assert_eq!(Lifetime::Refresh.check(31_536_000).ok(), Some(31_536_000));
        let err = Lifetime::Refresh.check(u64::MAX).unwrap_err().to_string();
        assert_eq!(
            err,
            "refresh_ttl_secs must be an integer from 1 to 31536000"
        );
    }
}
