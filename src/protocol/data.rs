//! The application payload of a publication: any JSON value.
//!
//! JSON is the canonical form. A JSON client's bytes are kept verbatim (no
//! parse-and-reprint); a MessagePack client's value is converted to JSON on
//! the way in and back to MessagePack on the way out, once per publication.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _};
use serde_json::value::RawValue;

/// A JSON value carried as text; serializes as native MessagePack for binary encoders.
#[derive(Clone)]
pub struct JsonData(Box<RawValue>);

impl JsonData {
    /// Checks that `text` is one JSON value and wraps it.
    ///
    /// # Errors
    /// The JSON syntax error.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        RawValue::from_string(text.to_owned()).map(Self)
    }

    /// Serializes any value into JSON data.
    ///
    /// # Errors
    /// If the value cannot be represented in JSON (for example a map with non-string keys).
    pub fn from_value<T: Serialize>(value: &T) -> Result<Self, serde_json::Error> {
        serde_json::value::to_raw_value(value).map(Self)
    }

    /// `text` as a JSON string value.
    pub fn string(text: &str) -> Self {
        // Escaping a str always gives a valid JSON string; `null` is only a formal fallback.
        serde_json::value::to_raw_value(text).map_or_else(|_| Self(RawValue::NULL.to_owned()), Self)
    }

    /// The JSON text.
    pub fn as_json(&self) -> &str {
        self.0.get()
    }

    /// Length of the JSON text in bytes.
    pub fn len(&self) -> usize {
        self.0.get().len()
    }

    /// Whether the JSON text is empty (never true for a valid value).
    pub fn is_empty(&self) -> bool {
        self.0.get().is_empty()
    }
}

impl fmt::Debug for JsonData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_json())
    }
}

impl PartialEq for JsonData {
    fn eq(&self, other: &Self) -> bool {
        self.as_json() == other.as_json()
    }
}

impl Serialize for JsonData {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            // JSON: splice the original text in unchanged.
            self.0.serialize(serializer)
        } else {
            // MessagePack: emit a native value, so clients get maps and numbers, not a string.
            let value: serde_json::Value =
                serde_json::from_str(self.as_json()).map_err(serde::ser::Error::custom)?;
            value.serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for JsonData {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            Box::<RawValue>::deserialize(deserializer).map(Self)
        } else {
            let value = serde_json::Value::deserialize(deserializer)?;
            Self::from_value(&value).map_err(D::Error::custom)
        }
    }
}
