//! JSON Lines from a file or stdin; blank lines are skipped.

use std::io::BufRead;

use super::{Record, Source, SourceError};

pub struct JsonlSource {
    name: String,
    reader: Box<dyn BufRead>,
    line: i64,
}

impl std::fmt::Debug for JsonlSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonlSource").field("name", &self.name).field("line", &self.line).finish()
    }
}

impl JsonlSource {
    /// `-` reads stdin.
    pub fn open(path: &str) -> Result<JsonlSource, SourceError> {
        let io = |error| SourceError::Io { source_name: path.to_owned(), error };
        let reader: Box<dyn BufRead> = if path == "-" {
            Box::new(std::io::BufReader::with_capacity(1 << 16, std::io::stdin()))
        } else {
            let file = std::fs::File::open(path).map_err(io)?;
            Box::new(std::io::BufReader::with_capacity(1 << 16, file))
        };
        Ok(JsonlSource::from_reader(path, reader))
    }

    pub fn from_reader(name: &str, reader: Box<dyn BufRead>) -> JsonlSource {
        JsonlSource { name: name.to_owned(), reader, line: 0 }
    }
}

impl Source for JsonlSource {
    fn next_into(&mut self, record: &mut Record) -> Result<bool, SourceError> {
        loop {
            record.payload.clear();
            let n = self
                .reader
                .read_until(b'\n', &mut record.payload)
                .map_err(|error| SourceError::Io { source_name: self.name.clone(), error })?;
            if n == 0 {
                return Ok(false);
            }
            self.line += 1;
            while record.payload.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                record.payload.pop();
            }
            if record.payload.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            if record.origin.source != self.name {
                record.origin.source.clone_from(&self.name);
            }
            record.origin.partition = 0;
            record.origin.offset = self.line;
            return Ok(true);
        }
    }
}

/// Records from memory (demo, tests, benches).
#[derive(Debug)]
pub struct MemorySource<I> {
    name: String,
    records: I,
    n: i64,
}

impl<I: Iterator<Item = Vec<u8>>> MemorySource<I> {
    pub fn new(name: &str, records: I) -> Self {
        MemorySource { name: name.to_owned(), records, n: 0 }
    }
}

impl<I: Iterator<Item = Vec<u8>>> Source for MemorySource<I> {
    fn next_into(&mut self, record: &mut Record) -> Result<bool, SourceError> {
        let Some(payload) = self.records.next() else { return Ok(false) };
        self.n += 1;
        record.payload = payload;
        if record.origin.source != self.name {
            record.origin.source.clone_from(&self.name);
        }
        record.origin.offset = self.n;
        Ok(true)
    }
}
