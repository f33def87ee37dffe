//! What the candidate ruleset is compared against: a second ruleset run in
//! the same pass, or the decisions a live run recorded.
//!
//! Recorded decisions are joined to the input by `event_id`. They come in
//! input order when `vigil run` wrote them, so the join reads them in step
//! with the input; a bounded look-ahead window (`window.rs`) absorbs local
//! reordering (a file written by several Kafka workers) without holding the
//! whole file, and lets go of decisions the input has long passed (a
//! recording of every tenant against an input of one).

mod window;

use std::borrow::Cow;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use vigil::rules::RulesetSource;
use vigil::verdict::Verdict;

use crate::input::kafka::{KafkaInput, KafkaRange, ValueLines};
use crate::input::{open_lines, InputDigest};
use crate::tally::{verdict_index, VerdictCounts};
use crate::ReplayError;
use window::Window;

/// The side the candidate is measured against.
#[derive(Debug, Clone)]
pub enum Baseline {
    Rules(RulesetSource),
    /// A `decisions.jsonl` that `vigil run` wrote (plain or gzip).
    Recorded(PathBuf),
    /// The decisions the engine published on a topic (JSON or Avro), over a range.
    Published(KafkaRange),
}

/// How many recorded decisions may be read ahead of the input.
const WINDOW: usize = 1 << 16;
/// How many lines before the last decision that met its event a waiting
/// decision is let go of, as one that will meet none.
const PASSED: u64 = 1 << 15;

/// How far the join reads ahead for one record's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// As far as the window: a live run decides every valid event.
    Window,
    /// The next line only, for a record a live run sends to the DLQ: a
    /// decision for it (from another engine version) is looked for where it
    /// would stand in step. Reading ahead for a decision that is not there
    /// would fill the window with those of the events after it.
    Next,
}

#[derive(Deserialize)]
struct RecordedKey<'a> {
    #[serde(borrow)]
    event_id: Cow<'a, str>,
}

#[derive(Deserialize)]
struct RecordedVerdict {
    #[serde(default)]
    decision: Option<Verdict>,
}

/// The event id of a recorded decision. A line that `vigil run` wrote opens
/// with its decision id and then its event id, so the id is read from there
/// without parsing the rest; any other line is parsed. A line that opens
/// that way but is broken further on is found out by the worker, which
/// reads every recorded decision.
fn event_id_of(line: &[u8]) -> Option<Cow<'_, str>> {
    if let Some(id) = event_id_in_prefix(line) {
        return Some(Cow::Borrowed(id));
    }
    serde_json::from_slice::<RecordedKey>(line).ok().map(|key| key.event_id)
}

/// `{"decision_id":"…","event_id":"…"` with no escapes in either id.
fn event_id_in_prefix(line: &[u8]) -> Option<&str> {
    let plain = |s: &[u8]| s.iter().position(|&b| b == b'"' || b == b'\\').filter(|&i| s[i] == b'"');
    let rest = line.strip_prefix(b"{\"decision_id\":\"")?;
    let rest = rest[plain(rest)?..].strip_prefix(b"\",\"event_id\":\"")?;
    std::str::from_utf8(&rest[..plain(rest)?]).ok()
}

/// Reads recorded decisions in step with the input.
pub struct RecordedJoin {
    path: String,
    lines: Box<dyn BufRead>,
    line: Vec<u8>,
    /// The line number of `line`, from 1.
    line_no: u64,
    /// The line number of the latest decision that met its event.
    met: u64,
    window: Window,
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
        Ok(RecordedJoin::over(path.display().to_string(), lines, digest))
    }

    /// The decisions published on a topic range, merged by the time of the
    /// events they decided.
    pub fn open_topic(range: &KafkaRange) -> Result<RecordedJoin, ReplayError> {
        // The range hashes what it reads: the same bytes as these lines.
        let values = ValueLines::new(KafkaInput::open_decisions(range)?);
        let digest = values.digest();
        let lines = Box::new(BufReader::with_capacity(1 << 16, values));
        Ok(RecordedJoin::over(format!("kafka {} on {}", range.topics.join(","), range.brokers), lines, digest))
    }

    fn over(path: String, lines: Box<dyn BufRead>, digest: InputDigest) -> RecordedJoin {
        RecordedJoin {
            path,
            lines,
            line: Vec::new(),
            line_no: 0,
            met: 0,
            window: Window::default(),
            exhausted: false,
            digest,
            unreadable: 0,
            unmatched: VerdictCounts::default(),
        }
    }

    /// Reads the next line that is not blank into `self.line`; false at the end.
    fn next_line(&mut self) -> Result<bool, ReplayError> {
        loop {
            self.line.clear();
            let n = self
                .lines
                .read_until(b'\n', &mut self.line)
                .map_err(|error| ReplayError::Read { path: self.path.clone(), error })?;
            if n == 0 {
                self.exhausted = true;
                return Ok(false);
            }
            self.line_no += 1;
            if !self.line.iter().all(u8::is_ascii_whitespace) {
                return Ok(true);
            }
        }
    }

    fn count_unmatched(&mut self, line: &[u8]) {
        match serde_json::from_slice::<RecordedVerdict>(line).ok().and_then(|k| k.decision) {
            Some(v) => self.unmatched[verdict_index(v)] += 1,
            None => self.unreadable += 1,
        }
    }

    /// Appends the recorded decision for `event_id` to `into`, if there is
    /// one within reach; whether there was.
    pub fn take(&mut self, event_id: &str, reach: Reach, into: &mut Vec<u8>) -> Result<bool, ReplayError> {
        // In step with the input the window stays empty: no key to hash.
        if !self.window.is_empty() {
            if let Some((line_no, line)) = self.window.take(event_id) {
                into.extend_from_slice(&line);
                self.met_at(line_no);
                return Ok(true);
            }
        }
        let mut lines = match reach {
            Reach::Window => WINDOW,
            Reach::Next => 1,
        };
        while !self.exhausted && self.window.len() < WINDOW && lines > 0 {
            lines -= 1;
            if !self.next_line()? {
                break;
            }
            let id = match event_id_of(&self.line) {
                Some(id) if id == event_id => {
                    into.extend_from_slice(&self.line);
                    self.met_at(self.line_no);
                    return Ok(true);
                }
                Some(id) => id.into_owned(),
                None => {
                    self.unreadable += 1;
                    continue;
                }
            };
            // A copy sized to the line: the reading buffer is as long as
            // the longest line yet.
            if let Some(second) = self.window.keep(self.line_no, id, self.line.clone()) {
                self.count_unmatched(&second);
            }
        }
        Ok(false)
    }

    /// A decision read at `line_no` met its event: those waiting from far
    /// before it will meet none.
    fn met_at(&mut self, line_no: u64) {
        self.met = self.met.max(line_no);
        while let Some(passed) = self.window.release_before(self.met.saturating_sub(PASSED)) {
            self.count_unmatched(&passed);
        }
    }

    /// Reads to the end so the digest covers the whole file and every
    /// decision left over is counted.
    pub fn finish(mut self) -> Result<(String, u64, VerdictCounts), ReplayError> {
        for line in self.window.drain() {
            self.count_unmatched(&line);
        }
        while self.next_line()? {
            let line = std::mem::take(&mut self.line);
            self.count_unmatched(&line);
            self.line = line;
        }
        Ok((self.digest.hex(), self.unreadable, self.unmatched))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join_over(lines: &str) -> RecordedJoin {
        let lines: Box<dyn BufRead> = Box::new(std::io::Cursor::new(lines.as_bytes().to_vec()));
        RecordedJoin::over("test".into(), lines, InputDigest::default())
    }

    /// A record without a decision looks at the next line only, and the
    /// events after it still meet theirs, in step.
    #[test]
    fn a_dead_letter_reads_one_line_ahead() -> Result<(), ReplayError> {
        let recorded: String = (1..=5).map(|i| format!("{{\"decision_id\":\"d{i}\",\"event_id\":\"e{i}\"}}\n")).collect();
        let mut join = join_over(&recorded);
        let mut bytes = Vec::new();
        assert!(!join.take("dead", Reach::Next, &mut bytes)?);
        assert_eq!(join.window.len(), 1);
        for i in 1..=5 {
            bytes.clear();
            assert!(join.take(&format!("e{i}"), Reach::Window, &mut bytes)?, "e{i}");
            assert!(bytes.starts_with(format!("{{\"decision_id\":\"d{i}\"").as_bytes()));
        }
        assert!(join.window.is_empty());
        // Looking as far as the window reads every line there is.
        let mut join = join_over(&recorded);
        assert!(!join.take("dead", Reach::Window, &mut bytes)?);
        assert_eq!(join.window.len(), 5);
        Ok(())
    }

    /// An input of one tenant against a recording of eight: seven decisions
    /// in eight meet no event. Those the join has passed are let go of, so
    /// the window never fills and every event meets its decision.
    #[test]
    fn decisions_the_input_has_passed_are_let_go_of() -> Result<(), ReplayError> {
        let events = WINDOW / 2;
        let recorded: String = (0..events * 8)
            .map(|i| {
                let id = if i % 8 == 7 { format!("e{}", i / 8) } else { format!("other{i}") };
                format!("{{\"decision_id\":\"d{i}\",\"event_id\":\"{id}\",\"decision\":\"allow\"}}\n")
            })
            .collect();
        let mut join = join_over(&recorded);
        let mut bytes = Vec::new();
        for i in 0..events {
            assert!(join.take(&format!("e{i}"), Reach::Window, &mut bytes)?, "e{i}");
            assert!(join.window.len() < WINDOW);
        }
        let (_, unreadable, unmatched) = join.finish()?;
        assert_eq!(unreadable, 0);
        assert_eq!(unmatched[verdict_index(Verdict::Allow)], (events * 7) as u64);
        Ok(())
    }

    #[test]
    fn an_event_id_is_read_from_the_opening_or_parsed() {
        let written = br#"{"decision_id":"d-1","event_id":"e-1","time":"t"}"#;
        assert_eq!(event_id_in_prefix(written), Some("e-1"));
        // An escape in either id, another key order, a nested key: parsed.
        let escaped = br#"{"decision_id":"d-1","event_id":"e\"1","time":"t"}"#;
        assert_eq!(event_id_in_prefix(escaped), None);
        assert_eq!(event_id_of(escaped).as_deref(), Some("e\"1"));
        let escaped_decision = br#"{"decision_id":"d\"1","event_id":"e-3"}"#;
        assert_eq!(event_id_in_prefix(escaped_decision), None);
        assert_eq!(event_id_of(escaped_decision).as_deref(), Some("e-3"));
        let reordered = br#"{"reasons":[{"evidence":{"event_id":"inner"}}],"event_id":"e-2"}"#;
        assert_eq!(event_id_of(reordered).as_deref(), Some("e-2"));
        assert_eq!(event_id_of(br#"{"decision_id":"d-1"#), None);
    }
}
