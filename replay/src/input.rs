//! Opening the recorded activity: JSON Lines (plain or gzip), Avro object
//! container files ([`ocf`]) or a range of a Kafka topic ([`kafka`]), read as
//! a stream so a week of traffic needs no more memory than a minute of it.
//!
//! What is read is hashed as it is read and the digest goes into the run
//! hash. For JSON Lines it is the *decompressed* bytes, so the same records
//! give the same run whether they were stored compressed or not.

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::rc::Rc;

use flate2::read::MultiGzDecoder;
use sha2::{Digest, Sha256};
use vigil::decode::DecodeError;
use vigil::event::Input;
use vigil::source::file::JsonlSource;
use vigil::source::{Record, Source};

use crate::ReplayError;

pub mod kafka;
pub mod ocf;

/// How far through the input file the reader is, for the progress bar.
#[derive(Debug, Clone, Default)]
pub struct ReadProgress {
    /// Bytes of the file as stored (compressed, for `.gz`).
    pub read: Rc<Cell<u64>>,
    pub total: u64,
}

/// The digest of everything read so far.
#[derive(Debug, Clone, Default)]
pub struct InputDigest(Rc<RefCell<Sha256>>);

impl InputDigest {
    pub fn update(&self, bytes: &[u8]) {
        self.0.borrow_mut().update(bytes);
    }

    /// `sha256:` and the hex digest of the bytes read so far.
    pub fn hex(&self) -> String {
        format!("sha256:{}", hex::encode(self.0.borrow().clone().finalize()))
    }
}

/// Counts the stored bytes as they go by.
struct Counting<R> {
    inner: R,
    read: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.set(self.read.get() + n as u64);
        Ok(n)
    }
}

/// Hashes the decoded bytes as they go by.
struct Hashing<R> {
    inner: R,
    digest: InputDigest,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.digest.0.borrow_mut().update(&buf[..n]);
        Ok(n)
    }
}

/// The first four bytes of the file (fewer are left zero).
fn read_magic(path: &Path) -> Result<[u8; 4], std::io::Error> {
    let mut magic = [0u8; 4];
    let mut file = File::open(path)?;
    let mut got = 0;
    while got < magic.len() {
        let n = file.read(&mut magic[got..])?;
        if n == 0 {
            break;
        }
        got += n;
    }
    Ok(magic)
}

/// True when the file starts with the gzip magic bytes (whatever its name).
fn is_gzip(path: &Path) -> Result<bool, std::io::Error> {
    Ok(read_magic(path)?[..2] == [0x1f, 0x8b])
}

/// One input record: where it stands in the input, what it decoded to, and
/// its bytes as stored (a JSON line, a Kafka value, an Avro datum).
///
/// A JSON line (or a Kafka value that is a JSON event) comes undecoded:
/// the replay decodes it where that costs least (see [`crate::worker`]),
/// with the engine's JSON decoder.
#[derive(Debug)]
pub struct Item<'a> {
    /// Its position in every output: the line for JSON Lines, the record's
    /// number (from 1) for Avro files and Kafka ranges.
    pub position: i64,
    /// `None` for a JSON line or event, which
    /// `vigil::decode::decode(payload, None)` decodes as a live run decodes
    /// JSON.
    pub decoded: Option<Result<Input, DecodeError>>,
    pub payload: &'a [u8],
}

/// Where the records of a replay come from. Each source decodes with the
/// engine's own decoders (a JSON line's is left to the replay), so a record
/// means the same as in a live run.
pub trait ReplaySource {
    /// The next record; `None` at the end of the input.
    fn next(&mut self) -> Result<Option<Item<'_>>, ReplayError>;
    /// How far along the input is and its size, in the source's own unit
    /// (stored bytes for files, records for Kafka).
    fn progress(&self) -> (u64, u64);
    /// `sha256:` and the digest of what was read (see each source for what it covers).
    fn digest(&self) -> String;
}

/// JSON Lines, plain or gzip; the digest covers the decompressed bytes.
pub struct JsonlInput {
    source: JsonlSource,
    record: Record,
    digest: InputDigest,
    progress: ReadProgress,
}

impl std::fmt::Debug for JsonlInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonlInput").field("source", &self.source).field("total", &self.progress.total).finish()
    }
}

impl ReplaySource for JsonlInput {
    fn next(&mut self) -> Result<Option<Item<'_>>, ReplayError> {
        if !self.source.next_into(&mut self.record)? {
            return Ok(None);
        }
        Ok(Some(Item { position: self.record.origin.offset, decoded: None, payload: &self.record.payload }))
    }

    fn progress(&self) -> (u64, u64) {
        (self.progress.read.get(), self.progress.total)
    }

    fn digest(&self) -> String {
        self.digest.hex()
    }
}

/// Opens a recorded file: an Avro object container file when it starts with
/// the container magic, otherwise JSON Lines, gzip or plain.
pub fn open_file(path: &Path) -> Result<Box<dyn ReplaySource>, ReplayError> {
    let read_error = |error| ReplayError::Read { path: path.display().to_string(), error };
    let magic = read_magic(path).map_err(read_error)?;
    if magic == ocf::MAGIC {
        return Ok(Box::new(ocf::OcfInput::open(path)?));
    }
    let gzip = magic[..2] == [0x1f, 0x8b];
    let file = File::open(path).map_err(read_error)?;
    let total = file.metadata().map_err(read_error)?.len();
    let progress = ReadProgress { read: Rc::default(), total };
    let stored = Counting { inner: file, read: Rc::clone(&progress.read) };
    let digest = InputDigest::default();
    let decoded: Box<dyn Read> = if gzip {
        Box::new(MultiGzDecoder::new(BufReader::with_capacity(1 << 16, stored)))
    } else {
        Box::new(stored)
    };
    let hashing = Hashing { inner: decoded, digest: digest.clone() };
    let reader: Box<dyn BufRead> = Box::new(BufReader::with_capacity(1 << 16, hashing));
    let name = path.display().to_string();
    Ok(Box::new(JsonlInput { source: JsonlSource::from_reader(&name, reader), record: Record::default(), digest, progress }))
}

/// Streams the lines of a JSON Lines file, plain or gzip (recorded decisions).
pub fn open_lines(path: &Path) -> Result<(Box<dyn BufRead>, InputDigest), ReplayError> {
    let read_error = |error| ReplayError::Read { path: path.display().to_string(), error };
    let gzip = is_gzip(path).map_err(read_error)?;
    let file = File::open(path).map_err(read_error)?;
    let decoded: Box<dyn Read> =
        if gzip { Box::new(MultiGzDecoder::new(BufReader::with_capacity(1 << 16, file))) } else { Box::new(file) };
    let digest = InputDigest::default();
    let hashing = Hashing { inner: decoded, digest: digest.clone() };
    Ok((Box::new(BufReader::with_capacity(1 << 16, hashing)), digest))
}
