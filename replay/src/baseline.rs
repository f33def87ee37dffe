//! What the candidate ruleset is compared against: a second ruleset run in
//! the same pass, or the decisions a live run recorded.
//!
//! Recorded decisions are joined to the input by `event_id`. They come in
//! input order when `vigil run` wrote them, so the join reads them in step
//! with the input; a bounded look-ahead window absorbs local reordering (a
//! file written by several Kafka workers) without holding the whole file.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use vigil::rules::RulesetSource;
use vigil::verdict::Verdict;

use crate::input::{open_lines, InputDigest};
use crate::tally::{verdict_index, VerdictCounts};
use crate::ReplayError;

/// The side the candidate is measured against.
#[derive(Debug, Clone)]
pub enum Baseline {
    Rules(RulesetSource),
    Recorded(PathBuf),
}

/// How many recorded decisions may be read ahead of the input.
const WINDOW: usize = 1 << 16;

#[derive(Deserialize)]
struct RecordedKey {
    event_id: String,
    #[serde(default)]
    decision: Option<Verdict>,
}

/// Reads recorded decisions in step with the input.
pub struct RecordedJoin {
    path: String,
    lines: Box<dyn BufRead>,
    line: Vec<u8>,
    window: HashMap<String, Vec<u8>>,
    exhausted: bool,
    pub digest: InputDigest,
    pub unreadable: u64,
    /// Recorded decisions that never met their event, by verdict.
    pub unmatched: VerdictCounts,
}

impl std::fmt::Debug for RecordedJoin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordedJoin").field("path", &self.path).field("window", &self.window.len()).finish()
    }
}

impl RecordedJoin {
    pub fn open(path: &Path) -> Result<RecordedJoin, ReplayError> {
        let (lines, digest) = open_lines(path)?;
        Ok(RecordedJoin {
            path: path.display().to_string(),
            lines,
            line: Vec::new(),
            window: HashMap::new(),
            exhausted: false,
            digest,
            unreadable: 0,
            unmatched: VerdictCounts::default(),
        })
    }

    /// The next recorded line and its event id; `None` at the end.
    fn next_line(&mut self) -> Result<Option<(String, Vec<u8>)>, ReplayError> {
        loop {
            self.line.clear();
            let n = self
                .lines
                .read_until(b'\n', &mut self.line)
                .map_err(|error| ReplayError::Read { path: self.path.clone(), error })?;
            if n == 0 {
                self.exhausted = true;
                return Ok(None);
            }
            if self.line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<RecordedKey>(&self.line) {
                Ok(key) => return Ok(Some((key.event_id, self.line.clone()))),
                Err(_) => self.unreadable += 1,
            }
        }
    }

    fn count_unmatched(&mut self, line: &[u8]) {
        match serde_json::from_slice::<RecordedKey>(line).ok().and_then(|k| k.decision) {
            Some(v) => self.unmatched[verdict_index(v)] += 1,
            None => self.unreadable += 1,
        }
    }

    /// The recorded decision for `event_id`, if there is one within reach.
    pub fn take(&mut self, event_id: &str) -> Result<Option<Vec<u8>>, ReplayError> {
        if let Some(line) = self.window.remove(event_id) {
            return Ok(Some(line));
        }
        while !self.exhausted && self.window.len() < WINDOW {
            let Some((id, line)) = self.next_line()? else { break };
            if id == event_id {
                return Ok(Some(line));
            }
            match self.window.entry(id) {
                // A second decision for one event: the first one stays.
                std::collections::hash_map::Entry::Occupied(_) => self.count_unmatched(&line),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(line);
                }
            }
        }
        Ok(None)
    }

    /// Reads to the end so the digest covers the whole file and every
    /// decision left over is counted.
    pub fn finish(mut self) -> Result<(String, u64, VerdictCounts), ReplayError> {
        let left: Vec<Vec<u8>> = self.window.drain().map(|(_, line)| line).collect();
        for line in left {
            self.count_unmatched(&line);
        }
        while let Some((_, line)) = self.next_line()? {
            self.count_unmatched(&line);
        }
        Ok((self.digest.hex(), self.unreadable, self.unmatched))
    }
}
