//! JWT access tokens: verification on connect, and issuing for sessions.
//!
//! The key is chosen by the token header's `kid` (none = the default key)
//! and each key accepts exactly its own algorithm, so a token can never pick
//! its algorithm (`none`, or HS256 signed with an RSA public key). `sub` is
//! the user id and `exp` is required; `sid` ties the token to a session and
//! `channels` grants channel patterns.

use std::sync::Arc;

use jsonwebtoken::{Header, decode, decode_header, encode, errors::ErrorKind};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{AuthConfig, KeyError, KeySet};
use crate::protocol::{NameError, UserId};

/// Longest lifetime of a token herald issues (`herald token --ttl`): 365 days.
pub const MAX_TOKEN_TTL_SECS: u64 = 365 * 24 * 3600;

/// Why a token was refused. The text is safe to send to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// `exp` is in the past.
    #[error("token expired")]
    Expired,
    /// The signature does not match the key.
    #[error("bad signature")]
    BadSignature,
    /// The token's `alg` is not the one its key allows.
    #[error("algorithm not allowed")]
    Algorithm,
    /// The header names a `kid` no configured key has.
    #[error("unknown kid")]
    UnknownKid,
    /// `sub` is missing or not a valid user id.
    #[error("missing or invalid sub claim")]
    Subject,
    /// A claim other than `sub` is missing or wrong (`exp`, `nbf`, `iss`, `aud`, `channels`).
    #[error("invalid claim: {0}")]
    Claim(&'static str),
    /// Not a well-formed JWT.
    #[error("malformed token")]
    Malformed,
}

/// Why herald could not issue an access token.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The configured keys could not be loaded.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// No configured key can sign.
    #[error(
        "no signing key: set auth.private_key_file (RS256/ES256), or auth.signing_kid naming a key that can sign"
    )]
    NoSigningKey,
    /// The user id is not a valid `sub`.
    #[error("invalid user id: {0}")]
    User(#[source] NameError),
    /// The lifetime is 0 or longer than [`MAX_TOKEN_TTL_SECS`].
    #[error("token lifetime must be from 1 to {MAX_TOKEN_TTL_SECS} seconds")]
    Lifetime(u64),
    /// Encoding or signing the token failed.
    #[error("{0}")]
    Sign(#[source] jsonwebtoken::errors::Error),
}

/// A verified access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The `sub` claim.
    pub user: UserId,
    /// The `exp` claim, seconds since the Unix epoch.
    pub expires_at: u64,
    /// The `sid` claim: the session the token belongs to, if any.
    pub session: Option<String>,
    /// The `channels` claim: channel patterns granted to this token.
    pub grants: Vec<String>,
}

#[derive(Deserialize)]
struct Decoded {
    // Optional here so that a token without `sub` is reported as such,
    // not as an undecodable token.
    sub: Option<String>,
    exp: u64,
    // Any JSON: jsonwebtoken lets an array of issuers pass when one of them
    // matches, so `verify` insists on the one string itself.
    iss: Option<Value>,
    sid: Option<String>,
    #[serde(default)]
    channels: Vec<String>,
}

fn map_error(kind: &ErrorKind) -> AuthError {
    match kind {
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
    }
}

/// Verifies access tokens against the configured keys.
#[derive(Debug, Clone)]
pub struct TokenVerifier {
    keys: Arc<KeySet>,
}

impl TokenVerifier {
    /// Builds a verifier from `[auth]`.
    ///
    /// # Errors
    /// [`KeyError`] naming the config key that is missing or unusable.
    pub fn new(config: &AuthConfig) -> Result<Self, KeyError> {
        KeySet::new(config).map(|keys| Self::with_keys(Arc::new(keys)))
    }

    /// A verifier over already loaded keys.
    pub fn with_keys(keys: Arc<KeySet>) -> Self {
        Self { keys }
    }

    /// Verifies `token`.
    ///
    /// # Errors
    /// [`AuthError`] says which check failed.
    pub fn verify(&self, token: &str) -> Result<Verified, AuthError> {
        let header = decode_header(token).map_err(|e| map_error(e.kind()))?;
        let key = self
            .keys
            .verifying(header.kid.as_deref())
            .ok_or(AuthError::UnknownKid)?;
        let data =
            decode::<Decoded>(token, &key.key, &key.validation).map_err(|e| map_error(e.kind()))?;
        if let Some(issuer) = self.keys.issuer()
            && data.claims.iss.as_ref().and_then(Value::as_str) != Some(issuer)
        {
            return Err(AuthError::Claim("iss"));
        }
        let sub = data.claims.sub.ok_or(AuthError::Subject)?;
        let user = UserId::parse(&sub).map_err(|_| AuthError::Subject)?;
        Ok(Verified {
            user,
            expires_at: data.claims.exp,
            session: data.claims.sid,
            grants: data.claims.channels,
        })
    }
}

/// What goes into a token herald issues.
#[derive(Debug, Clone, Default)]
pub struct Claims {
    /// Extra claims from the app (never overriding the ones below).
    pub extra: Map<String, Value>,
    /// The session id (`sid`).
    pub session: Option<String>,
    /// Granted channel patterns (`channels`).
    pub grants: Vec<String>,
}

/// Issues access tokens signed with the signing key (`herald token`, sessions).
#[derive(Debug, Clone)]
pub struct TokenIssuer {
    keys: Arc<KeySet>,
    issuer: Option<String>,
    audience: Option<String>,
}

impl TokenIssuer {
    /// An issuer for the signing key of `config`.
    ///
    /// # Errors
    /// [`IssueError::Keys`] if a key cannot be loaded, [`IssueError::NoSigningKey`]
    /// if no key can sign (an RS256/ES256 key without its private key).
    pub fn new(config: &AuthConfig) -> Result<Self, IssueError> {
        Self::with_keys(Arc::new(KeySet::new(config)?), config)
    }

    /// An issuer over already loaded keys.
    ///
    /// # Errors
    /// [`IssueError::NoSigningKey`] if no key can sign.
    pub fn with_keys(keys: Arc<KeySet>, config: &AuthConfig) -> Result<Self, IssueError> {
        if keys.signing().is_none() {
            return Err(IssueError::NoSigningKey);
        }
        Ok(Self {
            keys,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
        })
    }

    /// A token for `user` valid for `ttl_secs`.
    ///
    /// # Errors
    /// [`IssueError`] if the user id or lifetime is invalid or signing fails.
    pub fn mint(&self, user: &str, ttl_secs: u64) -> Result<String, IssueError> {
        self.mint_with(user, ttl_secs, &Claims::default())
    }

    /// A token for `user` valid for `ttl_secs`, with session, grants and extra claims.
    ///
    /// # Errors
    /// [`IssueError::User`] if the user id is invalid, [`IssueError::Lifetime`]
    /// if `ttl_secs` is not within 1 and [`MAX_TOKEN_TTL_SECS`],
    /// [`IssueError::Sign`] if signing fails.
    pub fn mint_with(
        &self,
        user: &str,
        ttl_secs: u64,
        claims: &Claims,
    ) -> Result<String, IssueError> {
        UserId::parse(user).map_err(IssueError::User)?;
        // A zero lifetime would hand out a token born expired.
        if !(1..=MAX_TOKEN_TTL_SECS).contains(&ttl_secs) {
            return Err(IssueError::Lifetime(ttl_secs));
        }
        // `with_keys` refused a key set without a signing key, so this is
        // unreachable; it stays an error rather than a panic.
        let key = self.keys.signing().ok_or(IssueError::NoSigningKey)?;
        let now = jsonwebtoken::get_current_timestamp();
        let mut body = claims.extra.clone();
        body.insert("sub".into(), user.into());
        body.insert("iat".into(), now.into());
        body.insert("exp".into(), now.saturating_add(ttl_secs).into());
        if let Some(issuer) = &self.issuer {
            body.insert("iss".into(), issuer.clone().into());
        }
        if let Some(audience) = &self.audience {
            body.insert("aud".into(), audience.clone().into());
        }
        if let Some(session) = &claims.session {
            body.insert("sid".into(), session.clone().into());
        }
        if !claims.grants.is_empty() {
            body.insert("channels".into(), claims.grants.clone().into());
        }
        let mut header = Header::new(key.algorithm);
        header.kid.clone_from(&key.kid);
        encode(&header, &body, &key.key).map_err(IssueError::Sign)
    }
}

#[cfg(test)]
mod tests {
    use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};

    use super::*;

    #[test]
    fn minted_tokens_verify_and_tampering_is_caught() {
        let config = AuthConfig::default();
        let token = TokenIssuer::new(&config).unwrap().mint("42", 60).unwrap();
        let verifier = TokenVerifier::new(&config).unwrap();
        assert_eq!(verifier.verify(&token).unwrap().user.as_str(), "42");
        // Flip one bit of the decoded signature and re-encode it canonically,
        // so the token stays well-formed whatever the signature's bytes are
        // (editing the last base64 character can yield a non-canonical
        // ending, which is `Malformed`, not `BadSignature`).
        let (signed, signature) = token.rsplit_once('.').unwrap();
        let mut signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
        signature[0] ^= 1;
        let tampered = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature));
        assert_eq!(verifier.verify(&tampered), Err(AuthError::BadSignature));
        assert_eq!(verifier.verify("nope"), Err(AuthError::Malformed));
    }

    #[test]
    fn lifetimes_outside_the_range_are_refused() {
        let issuer = TokenIssuer::new(&AuthConfig::default()).unwrap();
        assert!(matches!(issuer.mint("42", 0), Err(IssueError::Lifetime(0))));
        assert!(issuer.mint("42", MAX_TOKEN_TTL_SECS).is_ok());
        assert!(issuer.mint("42", MAX_TOKEN_TTL_SECS + 1).is_err());
        assert!(issuer.mint("42", u64::MAX).is_err());
    }

    #[test]
    fn session_and_grants_round_trip_and_reserved_claims_win() {
        let config = AuthConfig::default();
        let mut extra = Map::new();
        extra.insert("sub".into(), "mallory".into());
        extra.insert("plan".into(), "pro".into());
        let claims = Claims {
            extra,
            session: Some("s1".into()),
            grants: vec!["tracking.42".into()],
        };
        let token = TokenIssuer::new(&config)
            .unwrap()
            .mint_with("42", 60, &claims)
            .unwrap();
        let verified = TokenVerifier::new(&config).unwrap().verify(&token).unwrap();
        assert_eq!(verified.user.as_str(), "42");
        assert_eq!(verified.session.as_deref(), Some("s1"));
        assert_eq!(verified.grants, ["tracking.42"]);
    }
}
