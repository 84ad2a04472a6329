//! Deserializing settings that must stay text: the environment parser
//! turns `HERALD_AUTH__SECRET=123456` into a number, but a secret is a
//! string. A leaf module, so every configuration type can use it.

use serde::Deserialize;

/// A string setting that also accepts what the environment parser turns
/// into a number or boolean: a secret such as `123456` must stay text.
pub fn text<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Text(String),
        Int(i128),
        Float(f64),
        Bool(bool),
    }
    Ok(match Scalar::deserialize(deserializer)? {
        Scalar::Text(s) => s,
        Scalar::Int(n) => n.to_string(),
        Scalar::Float(f) => f.to_string(),
        Scalar::Bool(b) => b.to_string(),
    })
}

/// [`text`] for an optional setting.
pub fn optional_text<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    text(deserializer).map(Some)
}
