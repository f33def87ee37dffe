//! Hot reload: a ruleset folder watched between events.
//!
//! A change on disk is loaded, compiled and its test cases run; only a
//! ruleset that passes all of that replaces the running one, and the swap
//! happens between two events, so the version on every decision changes
//! exactly at the swap. A rejected ruleset is reported with `file:line` and
//! the running one keeps going.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::cases::{case_files, run_cases};
use super::{RuleHost, RulesetSource};

/// What a check of the folder found.
#[derive(Debug)]
pub enum Reload {
    /// A new ruleset that compiled and passed its cases.
    Swapped(Box<RuleHost>),
    /// A changed ruleset that was refused, and why.
    Rejected(String),
}

#[derive(Debug)]
pub struct RuleWatch {
    dir: PathBuf,
    every: Duration,
    last_check: Option<Instant>,
    /// Digest of the folder's files as last seen, accepted or not, so a
    /// broken edit is reported once rather than on every check.
    seen: [u8; 32],
}

/// A digest of the rule files, the config and the test cases, cheap enough
/// to take every check.
fn folder_digest(dir: &Path) -> [u8; 32] {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .chain(case_files(dir))
        .collect();
    files.sort();
    let mut hasher = Sha256::new();
    for file in files {
        hasher.update(file.to_string_lossy().as_bytes());
        hasher.update(std::fs::read(&file).unwrap_or_default());
        hasher.update([0]);
    }
    hasher.finalize().into()
}

impl RuleWatch {
    /// Watches `dir`, looking at most once per `every`.
    pub fn new(dir: &Path, every: Duration) -> RuleWatch {
        RuleWatch { dir: dir.to_path_buf(), every, last_check: None, seen: folder_digest(dir) }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Looks at the folder if `every` has passed; `None` when nothing changed.
    pub fn check(&mut self, running: &str) -> Option<Reload> {
        if self.last_check.is_some_and(|t| t.elapsed() < self.every) {
            return None;
        }
        self.last_check = Some(Instant::now());
        self.check_now(running)
    }

    /// Looks at the folder now.
    pub fn check_now(&mut self, running: &str) -> Option<Reload> {
        let digest = folder_digest(&self.dir);
        if digest == self.seen {
            return None;
        }
        self.seen = digest;
        let source = match RulesetSource::load(&self.dir) {
            Ok(source) => source,
            Err(e) => return Some(Reload::Rejected(e.to_string())),
        };
        if source.version == running {
            return None;
        }
        let cases = case_files(&self.dir);
        match run_cases(&source, &cases) {
            Err(errors) => {
                let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
                return Some(Reload::Rejected(lines.join("\n")));
            }
            Ok(results) => {
                let failed: Vec<String> = results
                    .iter()
                    .filter(|r| !r.passed)
                    .map(|r| format!("{}: case `{}` failed: {}", r.file, r.name, r.failures.join("; ")))
                    .collect();
                if !failed.is_empty() {
                    return Some(Reload::Rejected(failed.join("\n")));
                }
            }
        }
        match RuleHost::compile(source) {
            Ok(host) => Some(Reload::Swapped(Box::new(host))),
            Err(e) => Some(Reload::Rejected(e.to_string())),
        }
    }
}
