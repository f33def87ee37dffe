//! Avro object container files: a header with the writer's schema and codec,
//! then blocks of datums, each block closed by the file's sync marker.
//!
//! The container is read block by block, so memory is bounded by the largest
//! block, not by the file. Each datum is decoded with the writer's schema and
//! validated by the engine ([`vigil::decode::avro::decode_value`]), the same
//! checks a Kafka record gets. A file holds activity events, signals, or both
//! under a union schema.
//!
//! The digest covers the writer's schema (its canonical form) and the
//! decompressed datums in order, not the file's bytes: the same records give
//! the same run hash whatever the codec, block size or sync marker. It
//! differs from the digest of the same events as JSON Lines, since the
//! bytes differ.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::rc::Rc;

use apache_avro::Schema;
use flate2::read::DeflateDecoder;
use vigil::decode::avro::{decode_value, Datum, MAX_AVRO_ALLOCATION};

use super::{Counting, InputDigest, Item, ReadProgress, ReplaySource};
use crate::ReplayError;

/// The container magic: `Obj` and format version 1.
pub const MAGIC: [u8; 4] = *b"Obj\x01";
/// A block claiming more than this (stored or decompressed) is refused: no
/// writer makes blocks near it, so the file is corrupt.
const MAX_BLOCK: u64 = 256 * 1024 * 1024;
const SYNC_LEN: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Codec {
    Null,
    Deflate,
}

/// Records from an Avro object container file.
pub struct OcfInput {
    path: String,
    reader: BufReader<Counting<File>>,
    schema: Schema,
    codec: Codec,
    sync: [u8; SYNC_LEN],
    /// The current block, decompressed, and how far into it decoding is.
    block: Vec<u8>,
    stored: Vec<u8>,
    at: usize,
    left_in_block: u64,
    position: i64,
    digest: InputDigest,
    progress: ReadProgress,
}

impl std::fmt::Debug for OcfInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OcfInput").field("path", &self.path).field("position", &self.position).finish()
    }
}

/// Reads a zig-zag varint `long`; `None` at a clean end of input.
fn read_long(r: &mut impl Read) -> std::io::Result<Option<i64>> {
    let mut value: u64 = 0;
    for i in 0..10 {
        let mut byte = [0u8; 1];
        if r.read(&mut byte)? == 0 {
            if i == 0 {
                return Ok(None);
            }
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        value |= u64::from(byte[0] & 0x7f) << (7 * i);
        if byte[0] & 0x80 == 0 {
            return Ok(Some((value >> 1) as i64 ^ -((value & 1) as i64)));
        }
    }
    Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "varint longer than 10 bytes"))
}

fn corrupt(path: &str, what: impl std::fmt::Display) -> ReplayError {
    ReplayError::Input(format!("`{path}` is not a readable avro container: {what}"))
}

impl OcfInput {
    pub fn open(path: &Path) -> Result<OcfInput, ReplayError> {
        let name = path.display().to_string();
        let io = |error| ReplayError::Read { path: name.clone(), error };
        let file = File::open(path).map_err(io)?;
        let total = file.metadata().map_err(io)?.len();
        let progress = ReadProgress { read: Rc::default(), total };
        let mut reader =
            BufReader::with_capacity(1 << 16, Counting { inner: file, read: Rc::clone(&progress.read) });
        let mut magic = [0u8; 4];
        reader.read_exact(&mut magic).map_err(io)?;
        if magic != MAGIC {
            return Err(corrupt(&name, "no container magic"));
        }
        let (mut schema_text, mut codec) = (None, Codec::Null);
        // The metadata is an Avro map of bytes: blocks of entries, a block
        // with a negative count also gives its size, a zero count ends it.
        loop {
            let count = read_long(&mut reader).map_err(io)?.ok_or_else(|| corrupt(&name, "header cut short"))?;
            if count == 0 {
                break;
            }
            if count < 0 {
                read_long(&mut reader).map_err(io)?;
            }
            for _ in 0..count.unsigned_abs() {
                let key = read_bytes(&mut reader, &name)?;
                let value = read_bytes(&mut reader, &name)?;
                match key.as_slice() {
                    b"avro.schema" => schema_text = Some(value),
                    b"avro.codec" => {
                        codec = match value.as_slice() {
                            b"null" => Codec::Null,
                            b"deflate" => Codec::Deflate,
                            other => {
                                return Err(ReplayError::Input(format!(
                                    "`{name}` uses the avro codec `{}`; this build reads `null` and `deflate`",
                                    String::from_utf8_lossy(other)
                                )))
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        let schema_text = schema_text.ok_or_else(|| corrupt(&name, "no `avro.schema` in the header"))?;
        let schema = std::str::from_utf8(&schema_text)
            .map_err(|e| corrupt(&name, e))
            .and_then(|text| Schema::parse_str(text).map_err(|e| corrupt(&name, format!("writer schema: {e}"))))?;
        let mut sync = [0u8; SYNC_LEN];
        reader.read_exact(&mut sync).map_err(io)?;
        // The cap is process-wide; set it as the engine does before any datum is read.
        apache_avro::util::max_allocation_bytes(MAX_AVRO_ALLOCATION);
        let digest = InputDigest::default();
        digest.update(b"avro\n");
        digest.update(schema.canonical_form().as_bytes());
        digest.update(b"\n");
        Ok(OcfInput {
            path: name,
            reader,
            schema,
            codec,
            sync,
            block: Vec::new(),
            stored: Vec::new(),
            at: 0,
            left_in_block: 0,
            position: 0,
            digest,
            progress,
        })
    }

    /// Reads the next block; `false` at the end of the file.
    fn next_block(&mut self) -> Result<bool, ReplayError> {
        let path = self.path.clone();
        let io = |error| ReplayError::Read { path: path.clone(), error };
        if self.at != self.block.len() {
            return Err(corrupt(&path, format!("{} bytes left after the last datum of a block", self.block.len() - self.at)));
        }
        let Some(count) = read_long(&mut self.reader).map_err(io)? else { return Ok(false) };
        let size = read_long(&mut self.reader).map_err(io)?.ok_or_else(|| corrupt(&path, "block cut short"))?;
        if count < 0 || size < 0 || size as u64 > MAX_BLOCK {
            return Err(corrupt(&path, format!("block of {count} records in {size} bytes")));
        }
        self.stored.resize(size as usize, 0);
        self.reader.read_exact(&mut self.stored).map_err(io)?;
        let mut sync = [0u8; SYNC_LEN];
        self.reader.read_exact(&mut sync).map_err(io)?;
        if sync != self.sync {
            return Err(corrupt(&path, "sync marker does not match the header's"));
        }
        match self.codec {
            Codec::Null => std::mem::swap(&mut self.block, &mut self.stored),
            Codec::Deflate => {
                self.block.clear();
                DeflateDecoder::new(self.stored.as_slice())
                    .take(MAX_BLOCK + 1)
                    .read_to_end(&mut self.block)
                    .map_err(|e| corrupt(&path, format!("deflate: {e}")))?;
                if self.block.len() as u64 > MAX_BLOCK {
                    return Err(corrupt(&path, "a block inflates past 256 MiB"));
                }
            }
        }
        self.at = 0;
        self.left_in_block = count as u64;
        Ok(true)
    }
}

fn read_bytes(reader: &mut impl Read, path: &str) -> Result<Vec<u8>, ReplayError> {
    let io = |error| ReplayError::Read { path: path.to_owned(), error };
    let len = read_long(reader).map_err(io)?.ok_or_else(|| corrupt(path, "header cut short"))?;
    if !(0..=MAX_BLOCK as i64).contains(&len) {
        return Err(corrupt(path, format!("header entry of {len} bytes")));
    }
    let mut bytes = vec![0u8; len as usize];
    reader.read_exact(&mut bytes).map_err(io)?;
    Ok(bytes)
}

impl ReplaySource for OcfInput {
    fn next(&mut self) -> Result<Option<Item<'_>>, ReplayError> {
        while self.left_in_block == 0 {
            if !self.next_block()? {
                return Ok(None);
            }
        }
        let mut datum = Datum::new(&self.block[self.at..]);
        let value = apache_avro::from_avro_datum(&self.schema, &mut datum, None);
        if datum.overran() {
            return Err(corrupt(&self.path, format!("record {} is cut off by the end of its block", self.position + 1)));
        }
        // Without a length per datum, one that does not match the schema
        // leaves no way to find the next: the file cannot be read on.
        let value = value.map_err(|e| corrupt(&self.path, format!("record {}: {e}", self.position + 1)))?;
        let payload = &self.block[self.at..self.at + datum.consumed()];
        self.at += datum.consumed();
        self.left_in_block -= 1;
        self.position += 1;
        self.digest.update(payload);
        Ok(Some(Item { position: self.position, decoded: Some(decode_value(value)), payload }))
    }

    fn progress(&self) -> (u64, u64) {
        (self.progress.read.get(), self.progress.total)
    }

    fn digest(&self) -> String {
        self.digest.hex()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn longs_are_zigzag_varints() {
        for (bytes, value) in [(&[0x00][..], 0), (&[0x01], -1), (&[0x02], 1), (&[0x80, 0x01], 64), (&[0x7f], -64), (&[0xff, 0x01], -128)] {
            assert_eq!(read_long(&mut &bytes[..]).unwrap(), Some(value));
        }
        assert_eq!(read_long(&mut &[][..]).unwrap(), None);
        assert!(read_long(&mut &[0x80][..]).is_err());
    }
}
