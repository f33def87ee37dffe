//! Opening the recorded activity: JSON Lines, plain or gzip, read as a
//! stream so a week of traffic needs no more memory than a minute of it.
//!
//! The bytes are hashed as they are read: the digest of the *decompressed*
//! records goes into the run hash, so the same records give the same run
//! whether they were stored compressed or not.

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::rc::Rc;

use flate2::read::MultiGzDecoder;
use sha2::{Digest, Sha256};
use vigil::source::file::JsonlSource;

use crate::ReplayError;

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

/// An opened input: the records, their running digest and how far along it is.
pub struct OpenedInput {
    pub source: JsonlSource,
    pub digest: InputDigest,
    pub progress: ReadProgress,
}

impl std::fmt::Debug for OpenedInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedInput").field("source", &self.source).field("total", &self.progress.total).finish()
    }
}

/// True when the file starts with the gzip magic bytes (whatever its name).
fn is_gzip(path: &Path) -> Result<bool, std::io::Error> {
    let mut magic = [0u8; 2];
    let mut file = File::open(path)?;
    let mut got = 0;
    while got < 2 {
        let n = file.read(&mut magic[got..])?;
        if n == 0 {
            break;
        }
        got += n;
    }
    Ok(got == 2 && magic == [0x1f, 0x8b])
}

/// Opens a JSON Lines file, decompressing it when it is gzip.
pub fn open_jsonl(path: &Path) -> Result<OpenedInput, ReplayError> {
    let read_error = |error| ReplayError::Read { path: path.display().to_string(), error };
    let gzip = is_gzip(path).map_err(read_error)?;
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
    Ok(OpenedInput { source: JsonlSource::from_reader(&name, reader), digest, progress })
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
