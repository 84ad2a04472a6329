//! Authentication: verifying and issuing access tokens (JWT), and sessions
//! with rotating refresh tokens.
//!
//! - `keys`: the configured keys, selected by `kid`, each pinned to one algorithm.
//! - `jwt`: [`TokenVerifier`] (connections) and [`TokenIssuer`] (sessions, `herald token`).
//! - [`sessions`]: refresh tokens kept hashed in a [`sessions::SessionStore`]
//!   (Redis, or memory under the memory engine), rotated on every refresh.

mod jwt;
mod keys;
pub mod sessions;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use jwt::{
    AuthError, Claims, IssueError, MAX_TOKEN_TTL_SECS, TokenIssuer, TokenVerifier, Verified,
};
pub use keys::{KeyError, KeySet};

/// A signing algorithm. Each key is pinned to exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum KeyAlgorithm {
    /// HMAC-SHA256 with a shared secret.
    HS256,
    /// HMAC-SHA384 with a shared secret.
    HS384,
    /// HMAC-SHA512 with a shared secret.
    HS512,
    /// RSA PKCS#1 v1.5 with SHA-256.
    RS256,
    /// ECDSA P-256 with SHA-256.
    ES256,
}

impl KeyAlgorithm {
    /// Whether the key is a shared secret (HMAC).
    pub fn is_hmac(self) -> bool {
        matches!(self, Self::HS256 | Self::HS384 | Self::HS512)
    }
}

/// The development secret used when none is configured. Never use it in production.
pub const DEV_SECRET: &str = "herald-insecure-development-secret";

/// One additional key (`[[auth.keys]]`), selected by the token header's `kid`.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Key id, matched against the JWT header's `kid`.
    pub kid: String,
    /// The one algorithm tokens under this key may use.
    pub algorithm: KeyAlgorithm,
    /// Shared secret (HS*).
    #[serde(default, deserialize_with = "crate::serde_text::optional_text")]
    pub secret: Option<String>,
    /// PEM public key (RS256/ES256), inline.
    #[serde(default)]
    pub public_key: Option<String>,
    /// PEM public key (RS256/ES256), from a file.
    #[serde(default)]
    pub public_key_file: Option<PathBuf>,
    /// PEM private key (RS256/ES256), only if herald signs with this key.
    #[serde(default)]
    pub private_key_file: Option<PathBuf>,
}

impl std::fmt::Debug for KeyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyConfig")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// Token and session settings (`[auth]`).
#[derive(Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Algorithm of the default key (tokens without `kid`).
    pub algorithm: KeyAlgorithm,
    /// Shared secret of the default key (HS*).
    #[serde(deserialize_with = "crate::serde_text::text")]
    pub secret: String,
    /// PEM public key of the default key (RS256/ES256), inline.
    pub public_key: Option<String>,
    /// PEM public key of the default key, from a file.
    pub public_key_file: Option<PathBuf>,
    /// PEM private key of the default key, if herald signs RS256/ES256 tokens with it.
    pub private_key_file: Option<PathBuf>,
    /// Additional keys, selected by `kid` (key rotation without downtime).
    pub keys: Vec<KeyConfig>,
    /// The `kid` of the key that signs tokens herald issues; none = the default key.
    pub signing_kid: Option<String>,
    /// Clock skew allowed when checking `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
    /// Required `iss` claim, if set.
    pub issuer: Option<String>,
    /// Required `aud` claim, if set.
    pub audience: Option<String>,
    /// Whether connections without a token are accepted (public channels only).
    pub allow_anonymous: bool,
    /// How long a connection may take to send its `auth` message, in milliseconds.
    pub timeout_ms: u64,
    /// How long before a connection's token expires `token_expiring` is sent, ms.
    pub expiry_warning_ms: u64,
    /// How long after expiry a connection may stay without `refresh` before 4005, ms.
    pub expiry_grace_ms: u64,
    /// Lifetime of access tokens issued for sessions, seconds.
    pub access_ttl_secs: u64,
    /// Lifetime of refresh tokens, seconds (renewed on every rotation).
    pub refresh_ttl_secs: u64,
    /// Where login sessions live: `auto` (default: Redis when
    /// `engine.kind = "redis"`, else memory), `memory` (this node only) or
    /// `redis` (on the server of `engine.url`/`engine.cluster_urls`, shared
    /// by every node, whatever engine carries publications).
    pub session_store: SessionStoreKind,
}

/// `auth.session_store`: where login sessions live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionStoreKind {
    /// Redis with the `redis` engine, memory with the `memory` engine.
    #[default]
    Auto,
    /// In this process: sessions are per node and lost on restart.
    Memory,
    /// In Redis, shared by every node.
    Redis,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            algorithm: KeyAlgorithm::HS256,
            secret: DEV_SECRET.to_owned(),
            public_key: None,
            public_key_file: None,
            private_key_file: None,
            keys: Vec::new(),
            signing_kid: None,
            leeway_secs: 5,
            issuer: None,
            audience: None,
            allow_anonymous: false,
            timeout_ms: 5000,
            expiry_warning_ms: 60_000,
            expiry_grace_ms: 5_000,
            access_ttl_secs: 15 * 60,
            refresh_ttl_secs: 7 * 24 * 3600,
            session_store: SessionStoreKind::Auto,
        }
    }
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("algorithm", &self.algorithm)
            .field("secret", &"<redacted>")
            .field("keys", &self.keys)
            .field("signing_kid", &self.signing_kid)
            .field("allow_anonymous", &self.allow_anonymous)
            .finish_non_exhaustive()
    }
}

/// What the core's connections need from authentication: token checks and
/// login-session revocation (the core's [`crate::core::Authenticator`]).
#[derive(Debug, Clone)]
pub struct ConnectionAuth {
    verifier: TokenVerifier,
    sessions: sessions::Sessions,
}

impl ConnectionAuth {
    /// Verifies with `verifier`, asks `sessions` about revocations.
    pub fn new(verifier: TokenVerifier, sessions: sessions::Sessions) -> Self {
        Self { verifier, sessions }
    }
}

impl crate::core::Authenticator for ConnectionAuth {
    fn verify(&self, token: &str) -> Result<crate::core::Credentials, crate::core::TokenRefused> {
        match self.verifier.verify(token) {
            Ok(verified) => Ok(crate::core::Credentials {
                user: verified.user,
                login_session: verified.session,
                grants: verified.grants,
                expires_at: verified.expires_at,
            }),
            Err(AuthError::Expired) => Err(crate::core::TokenRefused::Expired),
            Err(err) => Err(crate::core::TokenRefused::Invalid(err.to_string())),
        }
    }

    fn is_revoked<'a>(
        &'a self,
        login_session: &'a str,
    ) -> futures_util::future::BoxFuture<'a, Result<bool, crate::core::StoreUnavailable>> {
        Box::pin(async move {
            self.sessions
                .is_revoked(login_session)
                .await
                .map_err(|err| crate::core::StoreUnavailable(err.to_string()))
        })
    }
}
