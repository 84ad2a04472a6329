//! JWT access tokens: verification on connect, and minting for development.
//!
//! Exactly one algorithm is accepted, the one configured with the key, so a
//! token can never pick its own algorithm (`none`, or HS256 signed with an
//! RSA public key). `sub` is the user id; `exp` is required.

use std::{fs, path::PathBuf};

use jsonwebtoken::{
    Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode, errors::ErrorKind,
};
use serde::{Deserialize, Serialize};

use crate::protocol::UserId;

/// The key algorithm used to sign access tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum KeyAlgorithm {
    /// HMAC-SHA256 with a shared secret.
    HS256,
    /// RSA PKCS#1 v1.5 with SHA-256; verified with the public key.
    RS256,
    /// ECDSA P-256 with SHA-256; verified with the public key.
    ES256,
}

impl KeyAlgorithm {
    fn jwt(self) -> Algorithm {
        match self {
            Self::HS256 => Algorithm::HS256,
            Self::RS256 => Algorithm::RS256,
            Self::ES256 => Algorithm::ES256,
        }
    }
}

/// The development secret used when none is configured. Never use it in production.
pub const DEV_SECRET: &str = "herald-insecure-development-secret";

/// Token settings (`[auth]`).
#[derive(Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Signing algorithm of access tokens.
    pub algorithm: KeyAlgorithm,
    /// Shared secret for HS256.
    #[serde(deserialize_with = "crate::config::text")]
    pub secret: String,
    /// PEM public key for RS256/ES256, inline.
    pub public_key: Option<String>,
    /// PEM public key for RS256/ES256, from a file.
    pub public_key_file: Option<PathBuf>,
    /// Clock skew allowed when checking `exp`, in seconds.
    pub leeway_secs: u64,
    /// Required `iss` claim, if set.
    pub issuer: Option<String>,
    /// Required `aud` claim, if set.
    pub audience: Option<String>,
    /// Whether connections without a token are accepted (public channels only).
    pub allow_anonymous: bool,
    /// How long before a connection's token expires `token_expiring` is sent, ms.
    pub expiry_warning_ms: u64,
    /// How long after expiry a connection may stay without `refresh` before 4005, ms.
    pub expiry_grace_ms: u64,
    /// How long a connection may take to send its `auth` message, in milliseconds.
    pub timeout_ms: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            algorithm: KeyAlgorithm::HS256,
            secret: DEV_SECRET.to_owned(),
            public_key: None,
            public_key_file: None,
            leeway_secs: 5,
            issuer: None,
            audience: None,
            allow_anonymous: false,
            expiry_warning_ms: 60_000,
            expiry_grace_ms: 5_000,
            timeout_ms: 5000,
        }
    }
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("algorithm", &self.algorithm)
            .field("secret", &"<redacted>")
            .field("public_key_file", &self.public_key_file)
            .field("allow_anonymous", &self.allow_anonymous)
            .finish_non_exhaustive()
    }
}

/// Why a token was refused. The text is safe to send to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// `exp` is in the past.
    #[error("token expired")]
    Expired,
    /// The signature does not match the key.
    #[error("bad signature")]
    BadSignature,
    /// The token's `alg` is not the configured one.
    #[error("algorithm not allowed")]
    Algorithm,
    /// `sub` is missing or not a valid user id.
    #[error("missing or invalid sub claim")]
    Subject,
    /// A claim other than `sub` is missing or wrong (`exp`, `nbf`, `iss`, `aud`).
    #[error("invalid claim: {0}")]
    Claim(&'static str),
    /// Not a well-formed JWT.
    #[error("malformed token")]
    Malformed,
}

/// A verified access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The `sub` claim.
    pub user: UserId,
    /// The `exp` claim, seconds since the Unix epoch.
    pub expires_at: u64,
}

#[derive(Deserialize)]
struct Claims {
    // Optional here so that a token without `sub` is reported as such,
    // not as an undecodable token.
    sub: Option<String>,
    exp: u64,
}

/// Verifies access tokens against the configured key.
#[derive(Clone)]
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

fn public_key_pem(config: &AuthConfig) -> Result<Vec<u8>, String> {
    match (&config.public_key, &config.public_key_file) {
        (Some(pem), _) => Ok(pem.as_bytes().to_vec()),
        (None, Some(path)) => fs::read(path)
            .map_err(|e| format!("auth.public_key_file: cannot read {}: {e}", path.display())),
        (None, None) => Err(format!(
            "auth.public_key or auth.public_key_file is required for {:?}",
            config.algorithm
        )),
    }
}

impl TokenVerifier {
    /// Builds a verifier from `[auth]`.
    ///
    /// # Errors
    /// A message naming the config key that is missing or unusable.
    pub fn new(config: &AuthConfig) -> Result<Self, String> {
        let key = match config.algorithm {
            KeyAlgorithm::HS256 if config.secret.is_empty() => {
                return Err("auth.secret must not be empty for HS256".into());
            }
            KeyAlgorithm::HS256 => DecodingKey::from_secret(config.secret.as_bytes()),
            KeyAlgorithm::RS256 => DecodingKey::from_rsa_pem(&public_key_pem(config)?)
                .map_err(|e| format!("auth.public_key: not an RSA public key PEM: {e}"))?,
            KeyAlgorithm::ES256 => DecodingKey::from_ec_pem(&public_key_pem(config)?)
                .map_err(|e| format!("auth.public_key: not an EC public key PEM: {e}"))?,
        };
        let mut validation = Validation::new(config.algorithm.jwt());
        let mut required = vec!["exp", "sub"];
        // A configured issuer or audience must be present, not only match when present.
        if config.issuer.is_some() {
            required.push("iss");
        }
        if config.audience.is_some() {
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        validation.leeway = config.leeway_secs;
        validation.validate_nbf = true;
        if let Some(issuer) = &config.issuer {
            validation.set_issuer(&[issuer]);
        }
        if let Some(audience) = &config.audience {
            validation.set_audience(&[audience]);
        } else {
            validation.validate_aud = false;
        }
        Ok(Self { key, validation })
    }

    /// Verifies `token`.
    ///
    /// # Errors
    /// [`AuthError`] says which check failed.
    pub fn verify(&self, token: &str) -> Result<Verified, AuthError> {
        let data =
            decode::<Claims>(token, &self.key, &self.validation).map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                ErrorKind::InvalidAlgorithm
                | ErrorKind::InvalidAlgorithmName
                | ErrorKind::MissingAlgorithm => AuthError::Algorithm,
                ErrorKind::ImmatureSignature => AuthError::Claim("nbf is in the future"),
                ErrorKind::InvalidIssuer => AuthError::Claim("iss"),
                ErrorKind::InvalidAudience => AuthError::Claim("aud"),
                ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
                    "sub" => AuthError::Subject,
                    "iss" => AuthError::Claim("iss"),
                    "aud" => AuthError::Claim("aud"),
                    _ => AuthError::Claim("exp is required"),
                },
                _ => AuthError::Malformed,
            })?;
        let sub = data.claims.sub.ok_or(AuthError::Subject)?;
        let user = UserId::parse(&sub).map_err(|_| AuthError::Subject)?;
        Ok(Verified {
            user,
            expires_at: data.claims.exp,
        })
    }
}

#[derive(Serialize)]
struct MintClaims<'a> {
    sub: &'a str,
    exp: u64,
    iat: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

/// Mints HS256 access tokens with the configured secret (`herald token`, tests, examples).
#[derive(Clone)]
pub struct TokenIssuer {
    key: EncodingKey,
    issuer: Option<String>,
    audience: Option<String>,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenIssuer")
    }
}

impl TokenIssuer {
    /// An issuer for the HS256 secret of `config`.
    ///
    /// # Errors
    /// If the configured algorithm is not HS256: RS256/ES256 tokens are minted by the app's own backend.
    pub fn new(config: &AuthConfig) -> Result<Self, String> {
        if config.algorithm != KeyAlgorithm::HS256 {
            return Err(
                "herald can only mint HS256 tokens; sign RS256/ES256 tokens with your private key"
                    .into(),
            );
        }
        Ok(Self {
            key: EncodingKey::from_secret(config.secret.as_bytes()),
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
        })
    }

    /// A token for `user` valid for `ttl_secs`.
    ///
    /// # Errors
    /// If signing fails, which HMAC does not.
    pub fn mint(&self, user: &str, ttl_secs: u64) -> Result<String, String> {
        UserId::parse(user).map_err(|e| format!("invalid user id: {e}"))?;
        let now = jsonwebtoken::get_current_timestamp();
        let claims = MintClaims {
            sub: user,
            exp: now + ttl_secs,
            iat: now,
            iss: self.issuer.as_deref(),
            aud: self.audience.as_deref(),
        };
        encode(&Header::new(Algorithm::HS256), &claims, &self.key).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_verify_and_tampering_is_caught() {
        let config = AuthConfig::default();
        let token = TokenIssuer::new(&config).unwrap().mint("42", 60).unwrap();
        let verifier = TokenVerifier::new(&config).unwrap();
        assert_eq!(verifier.verify(&token).unwrap().user.as_str(), "42");
        let mut tampered = token.clone();
        tampered.pop();
        tampered.push(if token.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(verifier.verify(&tampered), Err(AuthError::BadSignature));
        assert_eq!(verifier.verify("nope"), Err(AuthError::Malformed));
    }
}
