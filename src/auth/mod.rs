//! Authentication of connections: verifying access tokens (JWT).

mod jwt;

pub use jwt::{
    AuthConfig, AuthError, DEV_SECRET, KeyAlgorithm, TokenIssuer, TokenVerifier, Verified,
};
