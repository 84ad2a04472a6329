//! The application payload of a publication: a JSON value that every wire
//! format can carry, or (from outside Redis publishers only) raw bytes.
//!
//! JSON is the canonical form. A JSON client's bytes are kept verbatim (no
//! parse-and-reprint); a MessagePack client's value is converted to JSON on
//! the way in and back to MessagePack on the way out, once per publication.
//!
//! Every [`JsonData`] is checked when it is made, so that encoding it for a
//! subscriber cannot fail: herald refuses at the door what it could not
//! deliver to every format (docs/PROTOCOL.md, "Data").

use std::{borrow::Cow, cell::Cell, fmt};

use base64::{Engine as _, engine::general_purpose::STANDARD};
use bytes::Bytes;
use serde::{
    Deserialize, Deserializer, Serialize, Serializer,
    de::{DeserializeSeed, Error as _, MapAccess, SeqAccess, Visitor},
    ser::{Error as _, SerializeMap},
};
use serde_json::{Map, Number, Value, value::RawValue};

/// The deepest nesting of arrays and objects that data may have.
///
/// Well below serde_json's recursion limit (128), which the MessagePack
/// encoder meets when it reads the JSON text back.
pub const MAX_DATA_DEPTH: usize = 64;

/// The key of the object JSON clients receive for binary data.
pub const BINARY_KEY: &str = "$binary";

/// Why data cannot be carried to every wire format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    /// The text is not one JSON value.
    #[error("data is not valid JSON: {0}")]
    Syntax(String),
    /// Arrays and objects nest deeper than [`MAX_DATA_DEPTH`].
    #[error("data nests arrays and objects deeper than {MAX_DATA_DEPTH} levels")]
    TooDeep,
    /// A number is beyond the range of a 64-bit float (or, from MessagePack, not finite).
    #[error(
        "data holds a number out of range: {0} (numbers must be finite 64-bit floats, magnitude below 1.8e308)"
    )]
    NumberOutOfRange(String),
}

/// A checked publication payload; serializes as native MessagePack for binary encoders.
#[derive(Clone, PartialEq)]
pub struct JsonData(Repr);

#[derive(Clone)]
enum Repr {
    /// One checked JSON value.
    Json(Box<RawValue>),
    /// Bytes that are not UTF-8, from an outside Redis publisher.
    Binary(Bytes),
}

impl PartialEq for Repr {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Json(a), Self::Json(b)) => a.get() == b.get(),
            (Self::Binary(a), Self::Binary(b)) => a == b,
            _ => false,
        }
    }
}

impl JsonData {
    /// Checks that `text` is one JSON value that every format can carry, and wraps it.
    ///
    /// # Errors
    /// [`DataError`] says what is wrong.
    pub fn from_json(text: &str) -> Result<Self, DataError> {
        let raw =
            RawValue::from_string(text.to_owned()).map_err(|e| DataError::Syntax(e.to_string()))?;
        Self::from_raw(raw)
    }

    /// Checks JSON text that a parser already captured, and wraps it.
    ///
    /// # Errors
    /// [`DataError::TooDeep`] or [`DataError::NumberOutOfRange`].
    pub fn from_raw(raw: Box<RawValue>) -> Result<Self, DataError> {
        check(raw.get())?;
        Ok(Self(Repr::Json(raw)))
    }

    /// Serializes any value into checked JSON data.
    ///
    /// # Errors
    /// If the value has no JSON form (a map with non-string keys) or fails the check.
    pub fn from_value<T: Serialize>(value: &T) -> Result<Self, DataError> {
        let raw =
            serde_json::value::to_raw_value(value).map_err(|e| DataError::Syntax(e.to_string()))?;
        Self::from_raw(raw)
    }

    /// `text` as a JSON string value.
    pub fn string(text: &str) -> Self {
        // Escaping a str always gives a valid JSON string; `null` is only a formal fallback.
        let raw =
            serde_json::value::to_raw_value(text).unwrap_or_else(|_| RawValue::NULL.to_owned());
        Self(Repr::Json(raw))
    }

    /// Raw bytes: MessagePack clients get a `bin`, JSON clients `{"$binary": "<base64>"}`.
    pub fn binary(bytes: Bytes) -> Self {
        Self(Repr::Binary(bytes))
    }

    /// The JSON text, or `None` for binary data.
    pub fn as_json(&self) -> Option<&str> {
        match &self.0 {
            Repr::Json(raw) => Some(raw.get()),
            Repr::Binary(_) => None,
        }
    }

    /// The bytes of binary data, or `None` for JSON data.
    pub fn as_binary(&self) -> Option<&Bytes> {
        match &self.0 {
            Repr::Json(_) => None,
            Repr::Binary(bytes) => Some(bytes),
        }
    }

    /// Length in bytes: of the JSON text, or of the binary data.
    pub fn len(&self) -> usize {
        match &self.0 {
            Repr::Json(raw) => raw.get().len(),
            Repr::Binary(bytes) => bytes.len(),
        }
    }

    /// Whether [`Self::len`] is 0 (never for JSON data).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for JsonData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Json(raw) => f.write_str(raw.get()),
            Repr::Binary(bytes) => write!(f, "<{} bytes of binary>", bytes.len()),
        }
    }
}

impl Serialize for JsonData {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match (&self.0, serializer.is_human_readable()) {
            // JSON: splice the original text in unchanged.
            (Repr::Json(raw), true) => raw.serialize(serializer),
            // MessagePack: emit a native value, so clients get maps and numbers,
            // not a string. The check at construction makes this parse succeed.
            (Repr::Json(raw), false) => serde_json::from_str::<Value>(raw.get())
                .map_err(S::Error::custom)?
                .serialize(serializer),
            (Repr::Binary(bytes), true) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry(BINARY_KEY, &STANDARD.encode(bytes))?;
                map.end()
            }
            (Repr::Binary(bytes), false) => serializer.serialize_bytes(bytes),
        }
    }
}

/// Data as read from input, with the outcome of its check: reading never
/// fails on the check, so each caller answers with its own error.
#[derive(Debug)]
pub struct CheckedData(pub Result<JsonData, DataError>);

impl<'de> Deserialize<'de> for CheckedData {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            Box::<RawValue>::deserialize(deserializer).map(|raw| Self(JsonData::from_raw(raw)))
        } else {
            let refused = Cell::new(None);
            let value = Packed(&refused).deserialize(deserializer)?;
            Ok(Self(match refused.take() {
                Some(err) => Err(err),
                None => JsonData::from_value(&value),
            }))
        }
    }
}

/// Reads a binary format's value as JSON, noting (rather than turning into
/// `null`, as serde_json's own `Value` does) floats JSON cannot hold.
#[derive(Clone, Copy)]
struct Packed<'a>(&'a Cell<Option<DataError>>);

impl<'de> DeserializeSeed<'de> for Packed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Packed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value JSON can hold (no binary, no extension types)")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or_else(
            || {
                self.0.set(Some(DataError::NumberOutOfRange(v.to_string())));
                Value::Null
            },
            Value::Number,
        ))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        // The length is the sender's claim: allocate for it only up to a bound.
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(self)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

impl<'de> Deserialize<'de> for JsonData {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        CheckedData::deserialize(deserializer)?
            .0
            .map_err(D::Error::custom)
    }
}

/// Checks valid JSON text for what MessagePack cannot carry, in one pass over
/// the bytes and without building a tree.
fn check(text: &str) -> Result<(), DataError> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i = string_end(bytes, i + 1);
                continue;
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DATA_DEPTH {
                    return Err(DataError::TooDeep);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            // Outside strings, in valid JSON, a digit or `-` starts a number.
            b'-' | b'0'..=b'9' => {
                let end = number_end(bytes, i);
                check_number(text.get(i..end).unwrap_or_default())?;
                i = end;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// The index after the closing quote of the string whose body starts at `i`.
fn string_end(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    i
}

fn number_end(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() && matches!(bytes[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') {
        i += 1;
    }
    i
}

/// Whether the MessagePack encoder's parser (serde_json's) reads `token`.
fn check_number(token: &str) -> Result<(), DataError> {
    // Without an exponent, fewer than 300 characters are below 1e300: finite.
    let exponent = token.bytes().any(|b| b == b'e' || b == b'E');
    if !exponent && token.len() < 300 {
        return Ok(());
    }
    // The same parser as the encoder's, so the two never disagree at the edge.
    serde_json::from_str::<serde_json::Number>(token)
        .map(drop)
        .map_err(|_| DataError::NumberOutOfRange(shorten(token).into_owned()))
}

fn shorten(token: &str) -> Cow<'_, str> {
    match token.get(..40) {
        Some(head) if token.len() > 40 => format!("{head}…").into(),
        _ => token.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> String {
        format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn depth_is_limited_at_64_levels() {
        assert!(JsonData::from_json(&nested(MAX_DATA_DEPTH)).is_ok());
        assert_eq!(
            JsonData::from_json(&nested(MAX_DATA_DEPTH + 1)).unwrap_err(),
            DataError::TooDeep
        );
        let objects = format!("{}1{}", r#"{"a":"#.repeat(65), "}".repeat(65));
        assert_eq!(
            JsonData::from_json(&objects).unwrap_err(),
            DataError::TooDeep
        );
        // Brackets inside strings do not count.
        let text = format!(r#"["{}", "\"[["]"#, "[".repeat(200));
        assert!(JsonData::from_json(&text).is_ok());
    }

    #[test]
    fn numbers_must_fit_a_float_and_integers_keep_their_type() {
        for ok in [
            "1e308",
            "-1.7976931348623157e308",
            "1e-400",
            "18446744073709551615",
            "-9223372036854775808",
            "18446744073709551616",
            "[0.5, -0, 12E3]",
        ] {
            let data = JsonData::from_json(ok).unwrap();
            let packed = rmp_serde::to_vec_named(&data).unwrap();
            assert!(!packed.is_empty(), "{ok}");
        }
        for bad in ["1e400", "-1e400", "[1, {\"a\": 2E+999}]"] {
            assert!(
                matches!(
                    JsonData::from_json(bad),
                    Err(DataError::NumberOutOfRange(_))
                ),
                "{bad}"
            );
        }
        let huge = "9".repeat(400);
        assert!(matches!(
            JsonData::from_json(&huge),
            Err(DataError::NumberOutOfRange(t)) if t.len() < 50
        ));
        let packed = rmp_serde::to_vec_named(&JsonData::from_json("18446744073709551615").unwrap());
        assert_eq!(
            rmp_serde::from_slice::<u64>(&packed.unwrap()).unwrap(),
            u64::MAX
        );
        let packed = rmp_serde::to_vec_named(&JsonData::from_json("-9223372036854775808").unwrap());
        assert_eq!(
            rmp_serde::from_slice::<i64>(&packed.unwrap()).unwrap(),
            i64::MIN
        );
    }

    #[test]
    fn msgpack_input_is_checked_too() {
        let mut value = serde_json::json!(1);
        for _ in 0..MAX_DATA_DEPTH + 1 {
            value = serde_json::json!([value]);
        }
        let packed = rmp_serde::to_vec(&value).unwrap();
        let checked: CheckedData = rmp_serde::from_slice(&packed).unwrap();
        assert_eq!(checked.0.unwrap_err(), DataError::TooDeep);
        for float in [f64::INFINITY, f64::NEG_INFINITY, f64::NAN] {
            let packed = rmp_serde::to_vec(&(1, [float])).unwrap();
            let checked: CheckedData = rmp_serde::from_slice(&packed).unwrap();
            assert!(
                matches!(checked.0, Err(DataError::NumberOutOfRange(_))),
                "{float}"
            );
        }
        let packed =
            rmp_serde::to_vec_named(&serde_json::json!({"a": [1.5, -3, "x", null, true]})).unwrap();
        let checked: CheckedData = rmp_serde::from_slice(&packed).unwrap();
        assert_eq!(
            checked.0.unwrap().as_json(),
            Some(r#"{"a":[1.5,-3,"x",null,true]}"#)
        );
    }

    #[test]
    fn binary_is_bin_in_msgpack_and_marked_base64_in_json() {
        let data = JsonData::binary(Bytes::from_static(&[0xff, 0xfe, 0x00, 0x41]));
        assert_eq!(
            serde_json::to_string(&data).unwrap(),
            r#"{"$binary":"//4AQQ=="}"#
        );
        assert_eq!(
            rmp_serde::to_vec(&data).unwrap(),
            [0xc4, 0x04, 0xff, 0xfe, 0x00, 0x41]
        );
    }
}
