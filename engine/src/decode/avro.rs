//! Avro in the Confluent wire format: magic byte 0, a 4-byte big-endian
//! schema id, then the Avro datum.

use super::{DecodeError, RawRecord};

/// Resolves schema ids to parsed schemas and decodes datums.
#[derive(Debug, Default)]
pub struct AvroDecoder {}

impl AvroDecoder {
    pub fn decode(&self, bytes: &[u8]) -> Result<RawRecord, DecodeError> {
        if bytes.len() < 5 {
            return Err(DecodeError::Avro("shorter than the 5-byte wire-format header".into()));
        }
        let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
        Err(DecodeError::UnknownSchema(id))
    }
}
