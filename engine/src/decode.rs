//! Bytes in, validated [`Input`] out.
//!
//! A record is JSON or Avro in the Confluent wire format, told apart by its
//! first byte (`0` is the wire format's magic byte, JSON starts with `{` or
//! white space). Both land in the same [`RawRecord`], so the checks in
//! `raw` are written once.

pub mod avro;
mod fast;
mod raw;
pub mod spiffe;

use thiserror::Error;

pub use raw::RawRecord;

use crate::event::{Input, Timestamp};

/// Why a record was refused. The record goes to the DLQ with this reason;
/// the fault is the producer's and retrying will not help.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("malformed json: {0}")]
    Json(String),
    #[error("malformed avro: {0}")]
    Avro(String),
    #[error("unknown schema id {0}")]
    UnknownSchema(u32),
    #[error("empty record")]
    Empty,
    #[error("missing required field `{0}`")]
    Missing(&'static str),
    #[error("invalid `{field}`: {reason}")]
    Invalid { field: &'static str, reason: String },
}

impl DecodeError {
    /// A short, stable label for metrics and DLQ headers.
    pub fn label(&self) -> &'static str {
        match self {
            DecodeError::Json(_) => "malformed_json",
            DecodeError::Avro(_) => "malformed_avro",
            DecodeError::UnknownSchema(_) => "unknown_schema",
            DecodeError::Empty => "empty",
            DecodeError::Missing(_) => "missing_field",
            DecodeError::Invalid { .. } => "invalid_field",
        }
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> DecodeError {
        DecodeError::Invalid { field, reason: reason.into() }
    }
}

/// Decodes one JSON record (an activity event or, if it has `signal_id`, a signal).
pub fn decode_json(bytes: &[u8]) -> Result<Input, DecodeError> {
    raw_json(bytes)?.validate()
}

/// A JSON record's fields, not yet validated.
fn raw_json(bytes: &[u8]) -> Result<RawRecord<'_>, DecodeError> {
    let malformed = |e: serde_json::Error| DecodeError::Json(e.to_string());
    // Checking UTF-8 once for the whole record is cheaper than per string;
    // invalid UTF-8 takes the byte path so its error reads as it always has.
    match std::str::from_utf8(bytes) {
        Ok(text) => match fast::parse(text) {
            Some(raw) => Ok(raw),
            None => serde_json::from_str::<RawRecord>(text).map_err(malformed),
        },
        Err(_) => serde_json::from_slice::<RawRecord>(bytes).map_err(malformed),
    }
}

/// The ids an activity event is routed and joined by, and its time as
/// written, borrowed from its JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActivityKey<'a> {
    pub event_id: &'a str,
    pub tenant: &'a str,
    pub agent_id: &'a str,
    pub credential_id: Option<&'a str>,
    pub time: Option<&'a str>,
}

/// The ids of a JSON activity event, read without decoding it: nothing is
/// allocated. `None` for a signal, a record outside the direct reader's
/// subset (an escape, a float, a duplicate key) or one without its tenant,
/// which the caller decodes whole instead. The ids are the decoded event's;
/// whether the event is valid only decoding tells.
pub fn activity_key(bytes: &[u8]) -> Option<ActivityKey<'_>> {
    fast::activity_key(std::str::from_utf8(bytes).ok()?)
}

/// The time a record carries, whether or not it is a valid event or signal:
/// `None` when it does not parse as JSON or as an Avro datum, or has no
/// RFC 3339 `time`. For ordering records that did not decode by their own
/// time where they have one.
pub fn record_time(bytes: &[u8], avro: Option<&avro::AvroDecoder>) -> Option<Timestamp> {
    raw(bytes, avro).ok()?.time.as_deref().and_then(Timestamp::parse_rfc3339)
}

/// Decodes a record whose format is told by its first byte: JSON, or Avro in
/// the Confluent wire format resolved through `avro`.
pub fn decode(bytes: &[u8], avro: Option<&avro::AvroDecoder>) -> Result<Input, DecodeError> {
    raw(bytes, avro)?.validate()
}

/// A record's fields, read by the format its first byte tells, not yet validated.
fn raw<'a>(bytes: &'a [u8], avro: Option<&avro::AvroDecoder>) -> Result<RawRecord<'a>, DecodeError> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => Err(DecodeError::Empty),
        Some(0) if bytes[0] == 0 => match avro {
            Some(decoder) => decoder.decode(bytes),
            None => Err(DecodeError::Avro("avro record but no schemas are configured".into())),
        },
        Some(_) => raw_json(bytes),
    }
}

/// The shape serde gives the record types, for tests that hold other
/// readers (Avro schemas, the fast JSON path) to it.
#[cfg(test)]
pub(crate) mod shape {
    use serde::de::{DeserializeOwned, Visitor};

    /// The field names serde's derive gives a struct, captured from its
    /// `deserialize_struct` call: the names a JSON or Avro record must use.
    pub(crate) fn struct_fields<T: DeserializeOwned>() -> Vec<String> {
        struct Capture<'a>(&'a mut Vec<String>);
        impl<'de> serde::Deserializer<'de> for Capture<'_> {
            type Error = serde::de::value::Error;
            fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
                Err(serde::de::Error::custom("not a struct"))
            }
            fn deserialize_struct<V: Visitor<'de>>(
                self,
                _: &'static str,
                fields: &'static [&'static str],
                _: V,
            ) -> Result<V::Value, Self::Error> {
                self.0.extend(fields.iter().map(|f| (*f).to_owned()));
                Err(serde::de::Error::custom("captured"))
            }
            serde::forward_to_deserialize_any! {
                bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
                unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
            }
        }
        let mut fields = Vec::new();
        let _ = T::deserialize(Capture(&mut fields));
        assert!(!fields.is_empty(), "{} is not a struct", std::any::type_name::<T>());
        fields
    }
}
