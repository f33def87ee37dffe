//! Reading a ruleset directory: `ruleset.toml` and one rule per `.rhai` file.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::event::{EventKind, Severity};

/// A problem in a ruleset, located in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

/// Every problem found in a ruleset; nothing runs on a ruleset that has one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct RulesetError(pub Vec<RuleError>);

impl fmt::Display for RulesetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl RulesetError {
    pub fn at(file: impl Into<String>, line: usize, message: impl Into<String>) -> RulesetError {
        RulesetError(vec![RuleError { file: file.into(), line, message: message.into() }])
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    pub step_up: u32,
    pub deny: u32,
    pub revoke: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Rhai operations one rule may run on one event.
    pub max_operations: u64,
    pub max_call_levels: usize,
    pub max_string_size: usize,
    pub max_array_size: usize,
    pub max_map_size: usize,
    pub max_expr_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_operations: 20_000,
            max_call_levels: 16,
            max_string_size: 4096,
            max_array_size: 1024,
            max_map_size: 256,
            max_expr_depth: 64,
        }
    }
}

/// What a faulting rule means for the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    /// A fault on an event touching non-public data denies it.
    #[default]
    Closed,
    /// A fault is recorded and otherwise ignored.
    Open,
}

/// `ruleset.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesetConfig {
    pub thresholds: Thresholds,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub fail_mode: FailMode,
}

impl Default for RulesetConfig {
    fn default() -> Self {
        RulesetConfig {
            thresholds: Thresholds { step_up: 30, deny: 60, revoke: 85 },
            limits: Limits::default(),
            fail_mode: FailMode::Closed,
        }
    }
}

/// A rule's header: the `// key: value` comment lines at the top of its file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleMeta {
    pub id: String,
    pub title: String,
    pub severity: Severity,
    pub description: String,
    pub references: Vec<String>,
    /// The event kinds the rule runs on; empty means all.
    pub kinds: Vec<EventKind>,
}

/// One rule's file, read but not compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSource {
    pub file: String,
    pub text: String,
    pub meta: RuleMeta,
}

/// A whole ruleset as text: cheap to send to worker threads, which compile it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesetSource {
    pub dir: PathBuf,
    pub config: RulesetConfig,
    pub rules: Vec<RuleSource>,
    /// Content hash of the config and every rule: the ruleset's version.
    pub version: String,
}

pub const CONFIG_FILE: &str = "ruleset.toml";

impl RulesetSource {
    /// Reads `dir`; every problem is reported with its file and line.
    pub fn load(dir: &Path) -> Result<RulesetSource, RulesetError> {
        let entries = std::fs::read_dir(dir)
            .map_err(|e| RulesetError::at(dir.display().to_string(), 0, format!("cannot read rules directory: {e}")))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "rhai"))
            .collect();
        files.sort();
        let mut texts = Vec::new();
        let mut errors = Vec::new();
        for path in files {
            let name = display_name(dir, &path);
            match std::fs::read_to_string(&path) {
                Ok(text) => texts.push((name, text)),
                Err(e) => errors.push(RuleError { file: name, line: 0, message: format!("cannot read: {e}") }),
            }
        }
        let config_path = dir.join(CONFIG_FILE);
        let config_text = match std::fs::read_to_string(&config_path) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                errors.push(RuleError { file: display_name(dir, &config_path), line: 0, message: format!("cannot read: {e}") });
                None
            }
        };
        if !errors.is_empty() {
            return Err(RulesetError(errors));
        }
        RulesetSource::from_texts(dir, config_text.as_deref(), texts)
    }

    /// Builds a ruleset from texts in memory (tests, the embedded demo ruleset).
    pub fn from_texts(dir: &Path, config: Option<&str>, rules: Vec<(String, String)>) -> Result<RulesetSource, RulesetError> {
        let mut errors = Vec::new();
        let mut hasher = Sha256::new();
        let config = match config {
            None => RulesetConfig::default(),
            Some(text) => {
                hasher.update(CONFIG_FILE.as_bytes());
                hasher.update([0]);
                hasher.update(text.as_bytes());
                hasher.update([0]);
                match toml::from_str::<RulesetConfig>(text) {
                    Ok(config) => {
                        check_thresholds(&config, &mut errors);
                        config
                    }
                    Err(e) => {
                        let line = e.span().map_or(0, |s| line_of(text, s.start));
                        errors.push(RuleError { file: CONFIG_FILE.into(), line, message: e.message().to_owned() });
                        RulesetConfig::default()
                    }
                }
            }
        };
        let mut parsed: Vec<RuleSource> = Vec::new();
        let mut rules = rules;
        rules.sort_by(|a, b| a.0.cmp(&b.0));
        for (file, text) in rules {
            // The version hashes bare file names, so it does not depend on where the folder is.
            let bare = Path::new(&file).file_name().map_or(file.as_str(), |n| n.to_str().unwrap_or_default());
            hasher.update(bare.as_bytes());
            hasher.update([0]);
            hasher.update(text.as_bytes());
            hasher.update([0]);
            match parse_meta(&file, &text) {
                Ok(meta) => {
                    if let Some(other) = parsed.iter().find(|r| r.meta.id == meta.id) {
                        errors.push(RuleError {
                            file: file.clone(),
                            line: 1,
                            message: format!("rule id `{}` is already used by {}", meta.id, other.file),
                        });
                    }
                    parsed.push(RuleSource { file, text, meta });
                }
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(RulesetError(errors));
        }
        let digest = hasher.finalize();
        Ok(RulesetSource {
            dir: dir.to_path_buf(),
            config,
            rules: parsed,
            version: format!("sha256:{}", hex::encode(&digest[..8])),
        })
    }
}

fn display_name(dir: &Path, path: &Path) -> String {
    let name = path.strip_prefix(dir).unwrap_or(path);
    dir.join(name).display().to_string()
}

fn check_thresholds(config: &RulesetConfig, errors: &mut Vec<RuleError>) {
    let t = config.thresholds;
    if !(0 < t.step_up && t.step_up <= t.deny && t.deny <= t.revoke && t.revoke <= 100) {
        errors.push(RuleError {
            file: CONFIG_FILE.into(),
            line: 0,
            message: format!(
                "thresholds must satisfy 0 < step_up ≤ deny ≤ revoke ≤ 100, got {}/{}/{}",
                t.step_up, t.deny, t.revoke
            ),
        });
    }
}

pub fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|&b| b == b'\n').count() + 1
}

/// Parses the header comment. Continuation lines (`//   more text`) extend the
/// previous key, so descriptions can span lines.
fn parse_meta(file: &str, text: &str) -> Result<RuleMeta, RuleError> {
    let err = |line: usize, message: String| RuleError { file: file.to_owned(), line, message };
    let mut fields: Vec<(String, String, usize)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let Some(comment) = line.trim_start().strip_prefix("//") else {
            if line.trim().is_empty() {
                continue;
            }
            break;
        };
        let comment = comment.trim_start_matches(['/', '!']);
        match comment.trim().split_once(':') {
            Some((key, value)) if !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_') && !comment.starts_with("   ") => {
                fields.push((key.to_owned(), value.trim().to_owned(), i + 1));
            }
            _ => match fields.last_mut() {
                Some((_, value, _)) if !comment.trim().is_empty() => {
                    value.push(' ');
                    value.push_str(comment.trim());
                }
                _ => {}
            },
        }
    }
    let get = |key: &str| fields.iter().find(|(k, _, _)| k == key).map(|(_, v, line)| (v.clone(), *line));
    for (key, _, line) in &fields {
        if !["id", "title", "severity", "description", "references", "kinds"].contains(&key.as_str()) {
            return Err(err(*line, format!("unknown header key `{key}`")));
        }
    }
    let (id, id_line) = get("id").ok_or_else(|| err(1, "missing `// id: ...` header".into()))?;
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-') {
        return Err(err(id_line, format!("rule id `{id}` may only use letters, digits, `_`, `-` and `.`")));
    }
    if id.starts_with("builtin.") {
        return Err(err(id_line, "rule ids starting with `builtin.` are reserved for the engine".into()));
    }
    let title = get("title").map(|(v, _)| v).unwrap_or_else(|| id.clone());
    let severity = match get("severity") {
        None => Severity::Medium,
        Some((text, line)) => Severity::parse(&text)
            .ok_or_else(|| err(line, format!("severity `{text}` is not one of {}", Severity::expected())))?,
    };
    let list = |text: &str| -> Vec<String> {
        text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
    };
    let kinds = match get("kinds") {
        None => Vec::new(),
        Some((text, line)) => list(&text)
            .iter()
            .map(|k| EventKind::parse(k).ok_or_else(|| err(line, format!("kind `{k}` is not one of {}", EventKind::expected()))))
            .collect::<Result<_, _>>()?,
    };
    Ok(RuleMeta {
        id,
        title,
        severity,
        description: get("description").map(|(v, _)| v).unwrap_or_default(),
        references: get("references").map(|(v, _)| list(&v)).unwrap_or_default(),
        kinds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: &str = "// id: demo\n// title: A demo\n// severity: high\n// kinds: tool_call, data_access\n// description: first line\n//   second line\n\n0\n";

    #[test]
    fn reads_the_header() {
        let meta = parse_meta("demo.rhai", RULE).map_err(|e| e.to_string());
        let meta = meta.as_ref().map_err(String::as_str);
        assert_eq!(meta.map(|m| m.id.as_str()), Ok("demo"));
        assert_eq!(meta.map(|m| m.description.as_str()), Ok("first line second line"));
        assert_eq!(meta.map(|m| m.kinds.len()), Ok(2));
    }

    #[test]
    fn header_errors_carry_their_line() {
        let bad = RULE.replace("severity: high", "severity: dire");
        assert_eq!(parse_meta("x.rhai", &bad).map_err(|e| e.to_string()).err().as_deref().map(|e| &e[..8]), Some("x.rhai:3"));
        assert!(parse_meta("x.rhai", "let x = 1;").is_err());
    }

    #[test]
    fn the_version_follows_the_content() {
        let dir = Path::new("rules");
        let a = RulesetSource::from_texts(dir, None, vec![("a.rhai".into(), RULE.into())]).map(|r| r.version);
        let b = RulesetSource::from_texts(dir, None, vec![("a.rhai".into(), RULE.replace("0\n", "1\n"))]).map(|r| r.version);
        assert!(a.is_ok() && b.is_ok() && a != b);
    }

    #[test]
    fn bad_thresholds_are_refused() {
        let config = "[thresholds]\nstep_up = 70\ndeny = 60\nrevoke = 85\n";
        assert!(RulesetSource::from_texts(Path::new("r"), Some(config), vec![]).is_err());
        let typo = "[thresholds]\nstep_up = 30\ndeny = 60\nrevoke = 85\nfail_mod = \"open\"\n";
        let err = RulesetSource::from_texts(Path::new("r"), Some(typo), vec![]).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.starts_with("ruleset.toml:5")));
    }
}
