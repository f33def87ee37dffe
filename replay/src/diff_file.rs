//! `diff.jsonl`: each worker writes its changed decisions in its own input
//! order to a part file (`LINE<TAB>JSON`); the parts are merged by input line
//! so the file is the same whatever the number of workers, and no more than
//! one line per worker is in memory.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::ReplayError;

struct Part {
    path: PathBuf,
    reader: BufReader<File>,
    line: Vec<u8>,
    position: Option<i64>,
}

impl Part {
    fn advance(&mut self) -> Result<(), ReplayError> {
        self.line.clear();
        let n = self
            .reader
            .read_until(b'\n', &mut self.line)
            .map_err(|error| ReplayError::Read { path: self.path.display().to_string(), error })?;
        self.position = if n == 0 {
            None
        } else {
            let tab = self.line.iter().position(|b| *b == b'\t').unwrap_or(0);
            let position = std::str::from_utf8(&self.line[..tab]).ok().and_then(|s| s.parse().ok());
            if position.is_none() {
                return Err(ReplayError::Encode(format!("corrupt part file `{}`", self.path.display())));
            }
            position
        };
        Ok(())
    }
}

/// Merges the part files into `out` and removes them; returns the line count.
pub fn merge(parts: &[PathBuf], out: &Path) -> Result<u64, ReplayError> {
    let write_error = |error| ReplayError::Write { path: out.display().to_string(), error };
    let mut open = Vec::with_capacity(parts.len());
    for path in parts {
        let file = File::open(path).map_err(|error| ReplayError::Read { path: path.display().to_string(), error })?;
        let mut part = Part { path: path.clone(), reader: BufReader::new(file), line: Vec::new(), position: None };
        part.advance()?;
        open.push(part);
    }
    let mut writer = BufWriter::with_capacity(1 << 16, File::create(out).map_err(write_error)?);
    let mut lines = 0;
    loop {
        let next = open
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.position.map(|pos| (pos, i)))
            .min();
        let Some((_, i)) = next else { break };
        let part = &mut open[i];
        let tab = part.line.iter().position(|b| *b == b'\t').map_or(0, |t| t + 1);
        writer.write_all(&part.line[tab..]).map_err(write_error)?;
        lines += 1;
        part.advance()?;
    }
    writer.flush().map_err(write_error)?;
    for path in parts {
        std::fs::remove_file(path).map_err(|error| ReplayError::Write { path: path.display().to_string(), error })?;
    }
    Ok(lines)
}
