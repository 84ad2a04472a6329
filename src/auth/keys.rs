//! The configured keys: one default key (tokens without `kid`) and any
//! number of keys selected by `kid`, each pinned to one algorithm.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Validation};

use super::{AuthConfig, KeyAlgorithm};

fn jwt_algorithm(algorithm: KeyAlgorithm) -> Algorithm {
    match algorithm {
        KeyAlgorithm::HS256 => Algorithm::HS256,
        KeyAlgorithm::HS384 => Algorithm::HS384,
        KeyAlgorithm::HS512 => Algorithm::HS512,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::ES256 => Algorithm::ES256,
    }
}

/// A key for verifying, with the validation rules pinned to its algorithm.
#[derive(Clone)]
pub(super) struct VerifyingKey {
    pub(super) key: DecodingKey,
    pub(super) validation: Validation,
}

/// A key herald signs with.
#[derive(Clone)]
pub(super) struct SigningKey {
    pub(super) kid: Option<String>,
    pub(super) algorithm: Algorithm,
    pub(super) key: EncodingKey,
}

/// Every configured key.
#[derive(Clone)]
pub struct KeySet {
    default: VerifyingKey,
    by_kid: HashMap<String, VerifyingKey>,
    signing: Option<SigningKey>,
    issuer: Option<String>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("kids", &self.by_kid.keys().collect::<Vec<_>>())
            .field("signs", &self.signing.is_some())
            .finish()
    }
}

/// Why the configured keys could not be loaded; the text names the config key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A key file could not be read.
    #[error("{key}: cannot read {}: {source}", path.display())]
    Read {
        /// The config key naming the file, such as `auth.public_key_file`.
        key: String,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// An HMAC key without its secret.
    #[error("{key}.secret is required for {algorithm:?}")]
    MissingSecret {
        /// The key's config section, such as `auth` or `auth.keys[0]`.
        key: String,
        /// The key's algorithm.
        algorithm: KeyAlgorithm,
    },
    /// An RS256/ES256 key without its public key.
    #[error("{key}.public_key or {key}.public_key_file is required for {algorithm:?}")]
    MissingPublicKey {
        /// The key's config section, such as `auth` or `auth.keys[0]`.
        key: String,
        /// The key's algorithm.
        algorithm: KeyAlgorithm,
    },
    /// The public key is not a PEM of the key's algorithm.
    #[error("{key}.public_key: not a {algorithm:?} public key PEM: {source}")]
    PublicKey {
        /// The key's config section, such as `auth` or `auth.keys[0]`.
        key: String,
        /// The key's algorithm.
        algorithm: KeyAlgorithm,
        /// Why the PEM was refused.
        #[source]
        source: jsonwebtoken::errors::Error,
    },
    /// The private key file is not a PEM of the key's algorithm.
    #[error("{key}.private_key_file: not a {algorithm:?} private key PEM: {source}")]
    PrivateKey {
        /// The key's config section, such as `auth` or `auth.keys[0]`.
        key: String,
        /// The key's algorithm.
        algorithm: KeyAlgorithm,
        /// Why the PEM was refused.
        #[source]
        source: jsonwebtoken::errors::Error,
    },
    /// Two entries of `auth.keys` share a `kid`.
    #[error("auth.keys[{index}].kid {kid:?} is used twice")]
    DuplicateKid {
        /// The position of the second entry in `auth.keys`.
        index: usize,
        /// The shared `kid`.
        kid: String,
    },
    /// The key named by `auth.signing_kid` cannot sign.
    #[error("auth.keys[{index}] signs (auth.signing_kid) but has no private key or secret")]
    CannotSign {
        /// The position of the key in `auth.keys`.
        index: usize,
    },
    /// `auth.signing_kid` names no key.
    #[error("auth.signing_kid {kid:?} names no key in auth.keys")]
    UnknownSigningKid {
        /// The configured `auth.signing_kid`.
        kid: String,
    },
}

struct Material<'a> {
    name: String,
    algorithm: KeyAlgorithm,
    secret: Option<&'a str>,
    public_key: Option<&'a str>,
    public_key_file: Option<&'a Path>,
    private_key_file: Option<&'a Path>,
}

fn read(path: &Path, name: &str, field: &str) -> Result<Vec<u8>, KeyError> {
    fs::read(path).map_err(|source| KeyError::Read {
        key: format!("{name}.{field}"),
        path: path.to_owned(),
        source,
    })
}

impl Material<'_> {
    fn decoding(&self) -> Result<DecodingKey, KeyError> {
        let name = &self.name;
        if self.algorithm.is_hmac() {
            return match self.secret {
                Some(secret) if !secret.is_empty() => {
                    Ok(DecodingKey::from_secret(secret.as_bytes()))
                }
                _ => Err(KeyError::MissingSecret {
                    key: name.clone(),
                    algorithm: self.algorithm,
                }),
            };
        }
        let pem = match (self.public_key, self.public_key_file) {
            (Some(pem), _) => pem.as_bytes().to_vec(),
            (None, Some(path)) => read(path, name, "public_key_file")?,
            (None, None) => {
                return Err(KeyError::MissingPublicKey {
                    key: name.clone(),
                    algorithm: self.algorithm,
                });
            }
        };
        match self.algorithm {
            KeyAlgorithm::RS256 => DecodingKey::from_rsa_pem(&pem),
            _ => DecodingKey::from_ec_pem(&pem),
        }
        .map_err(|source| KeyError::PublicKey {
            key: name.clone(),
            algorithm: self.algorithm,
            source,
        })
    }

    fn encoding(&self) -> Result<Option<EncodingKey>, KeyError> {
        let name = &self.name;
        if self.algorithm.is_hmac() {
            return Ok(self.secret.map(|s| EncodingKey::from_secret(s.as_bytes())));
        }
        let Some(path) = self.private_key_file else {
            return Ok(None);
        };
        let pem = read(path, name, "private_key_file")?;
        match self.algorithm {
            KeyAlgorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
            _ => EncodingKey::from_ec_pem(&pem),
        }
        .map(Some)
        .map_err(|source| KeyError::PrivateKey {
            key: name.clone(),
            algorithm: self.algorithm,
            source,
        })
    }

    fn validation(&self, config: &AuthConfig) -> Validation {
        let mut validation = Validation::new(jwt_algorithm(self.algorithm));
        let mut required = vec!["exp", "sub"];
        // A configured issuer or audience must be present, not only match when present.
        if let Some(issuer) = &config.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        if let Some(audience) = &config.audience {
            validation.set_audience(&[audience]);
            required.push("aud");
        } else {
            validation.validate_aud = false;
        }
        validation.set_required_spec_claims(&required);
        validation.leeway = config.leeway_secs;
        validation.validate_nbf = true;
        validation
    }
}

impl KeySet {
    /// Loads every key of `[auth]`.
    ///
    /// # Errors
    /// [`KeyError`] naming the config key that is missing or unusable.
    pub fn new(config: &AuthConfig) -> Result<Self, KeyError> {
        let default = Material {
            name: "auth".into(),
            algorithm: config.algorithm,
            secret: Some(config.secret.as_str()),
            public_key: config.public_key.as_deref(),
            public_key_file: config.public_key_file.as_deref(),
            private_key_file: config.private_key_file.as_deref(),
        };
        let mut by_kid = HashMap::new();
        let mut signing = None;
        if config.signing_kid.is_none()
            && let Some(key) = default.encoding()?
        {
            signing = Some(SigningKey {
                kid: None,
                algorithm: jwt_algorithm(config.algorithm),
                key,
            });
        }
        for (i, key) in config.keys.iter().enumerate() {
            let material = Material {
                name: format!("auth.keys[{i}]"),
                algorithm: key.algorithm,
                secret: key.secret.as_deref(),
                public_key: key.public_key.as_deref(),
                public_key_file: key.public_key_file.as_deref(),
                private_key_file: key.private_key_file.as_deref(),
            };
            let verifying = VerifyingKey {
                key: material.decoding()?,
                validation: material.validation(config),
            };
            if by_kid.insert(key.kid.clone(), verifying).is_some() {
                return Err(KeyError::DuplicateKid {
                    index: i,
                    kid: key.kid.clone(),
                });
            }
            if config.signing_kid.as_deref() == Some(key.kid.as_str()) {
                let key_material = material
                    .encoding()?
                    .ok_or(KeyError::CannotSign { index: i })?;
                signing = Some(SigningKey {
                    kid: Some(key.kid.clone()),
                    algorithm: jwt_algorithm(key.algorithm),
                    key: key_material,
                });
            }
        }
        if let Some(kid) = &config.signing_kid
            && signing.is_none()
        {
            return Err(KeyError::UnknownSigningKid { kid: kid.clone() });
        }
        Ok(Self {
            default: VerifyingKey {
                key: default.decoding()?,
                validation: default.validation(config),
            },
            by_kid,
            signing,
            issuer: config.issuer.clone(),
        })
    }

    /// The `iss` every token must carry, if one is configured.
    pub(super) fn issuer(&self) -> Option<&str> {
        self.issuer.as_deref()
    }

    /// The key for a token header's `kid`; `None` for an unknown kid.
    pub(super) fn verifying(&self, kid: Option<&str>) -> Option<&VerifyingKey> {
        match kid {
            None => Some(&self.default),
            Some(kid) => self.by_kid.get(kid),
        }
    }

    /// The key herald signs with, if it has one.
    pub(super) fn signing(&self) -> Option<&SigningKey> {
        self.signing.as_ref()
    }
}
