//! The configured keys: one default key (tokens without `kid`) and any
//! number of keys selected by `kid`, each pinned to one algorithm.

use std::{collections::HashMap, fs, path::Path};

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

struct Material<'a> {
    name: String,
    algorithm: KeyAlgorithm,
    secret: Option<&'a str>,
    public_key: Option<&'a str>,
    public_key_file: Option<&'a Path>,
    private_key_file: Option<&'a Path>,
}

fn read(path: &Path, name: &str, field: &str) -> Result<Vec<u8>, String> {
    fs::read(path).map_err(|e| format!("{name}.{field}: cannot read {}: {e}", path.display()))
}

impl Material<'_> {
    fn decoding(&self) -> Result<DecodingKey, String> {
        let name = &self.name;
        if self.algorithm.is_hmac() {
            return match self.secret {
                Some(secret) if !secret.is_empty() => {
                    Ok(DecodingKey::from_secret(secret.as_bytes()))
                }
                _ => Err(format!(
                    "{name}.secret is required for {:?}",
                    self.algorithm
                )),
            };
        }
        let pem = match (self.public_key, self.public_key_file) {
            (Some(pem), _) => pem.as_bytes().to_vec(),
            (None, Some(path)) => read(path, name, "public_key_file")?,
            (None, None) => {
                return Err(format!(
                    "{name}.public_key or {name}.public_key_file is required for {:?}",
                    self.algorithm
                ));
            }
        };
        match self.algorithm {
            KeyAlgorithm::RS256 => DecodingKey::from_rsa_pem(&pem),
            _ => DecodingKey::from_ec_pem(&pem),
        }
        .map_err(|e| {
            format!(
                "{name}.public_key: not a {:?} public key PEM: {e}",
                self.algorithm
            )
        })
    }

    fn encoding(&self) -> Result<Option<EncodingKey>, String> {
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
        .map_err(|e| {
            format!(
                "{name}.private_key_file: not a {:?} private key PEM: {e}",
                self.algorithm
            )
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
    /// A message naming the config key that is missing or unusable.
    pub fn new(config: &AuthConfig) -> Result<Self, String> {
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
                return Err(format!("auth.keys[{i}].kid {:?} is used twice", key.kid));
            }
            if config.signing_kid.as_deref() == Some(key.kid.as_str()) {
                let key_material = material.encoding()?.ok_or_else(|| {
                    format!(
                        "auth.keys[{i}] signs (auth.signing_kid) but has no private key or secret"
                    )
                })?;
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
            return Err(format!(
                "auth.signing_kid {kid:?} names no key in auth.keys"
            ));
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
