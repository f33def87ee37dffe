//! Rule test cases (`tests/*.yaml` in a ruleset folder): ordered events in,
//! expected decisions, commands and alerts out, run through the real
//! pipeline on a fresh state per case.
//!
//! ```yaml
//! defaults: {agent_id: a1, workload_id: "spiffe://acme.example/a1"}
//! cases:
//!   - name: a tool outside the scope asks for a human
//!     events:
//!       - {kind: task_started, task_id: t1, scope: {tools: [sql.query], targets: ["reports/*"]}}
//!       - {kind: tool_call, task_id: t1, tool: shell.exec, target: reports/x}
//!     expect:
//!       - {event: 2, decision: step_up, fired: [scope_drift]}
//!     commands: [{command: step_up}]
//!     alerts: 1
//! ```
//!
//! Events get `event_id: e<N>` and a time one `step_s` after the previous
//! (default 1 s) unless they say otherwise; `after_s` on an event advances
//! the clock by that much instead. `event` in an expectation is the event's
//! 1-based position or its `event_id`. An approval's `decision_id: "@x1"`
//! names the decision made on event `x1`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{RuleHost, RulesetSource};
use crate::pipeline::{Outputs, Pipeline};
use crate::source::{Origin, Record};
use crate::state::StateConfig;
use crate::verdict::{Decision, Verdict};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    #[serde(default)]
    defaults: Map<String, Value>,
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    #[serde(default)]
    defaults: Map<String, Value>,
    #[serde(default)]
    step_s: Option<i64>,
    events: Vec<Map<String, Value>>,
    #[serde(default)]
    expect: Vec<Expect>,
    #[serde(default)]
    commands: Option<Vec<Map<String, Value>>>,
    #[serde(default)]
    alerts: Option<usize>,
    #[serde(default)]
    dead_letters: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    event: Value,
    #[serde(default)]
    decision: Option<Verdict>,
    #[serde(default)]
    fired: Vec<String>,
    #[serde(default)]
    not_fired: Vec<String>,
}

/// The result of one case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CaseResult {
    pub file: String,
    pub name: String,
    pub passed: bool,
    /// Expected-versus-actual lines for a failed case.
    pub failures: Vec<String>,
}

/// A case file that could not be read or parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct CaseFileError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

/// The YAML case files of a ruleset folder, sorted.
pub fn case_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("tests"))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

const BASE_TIME_MS: i64 = 1_798_761_600_000; // 2027-01-01T00:00:00Z

/// Runs every case of `files` against `source`. Returns the per-case results,
/// or the first file that cannot be parsed.
pub fn run_cases(source: &RulesetSource, files: &[PathBuf]) -> Result<Vec<CaseResult>, Vec<CaseFileError>> {
    let mut results = Vec::new();
    let mut errors = Vec::new();
    let host = match RuleHost::compile(source.clone()) {
        Ok(host) => host,
        Err(e) => {
            return Err(e
                .0
                .into_iter()
                .map(|e| CaseFileError { file: e.file, line: e.line, message: e.message })
                .collect())
        }
    };
    let mut pipeline = Pipeline::new(host, StateConfig::default());
    for path in files {
        let file = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                errors.push(CaseFileError { file, line: 0, message: format!("cannot read: {e}") });
                continue;
            }
        };
        let parsed: CaseFile = match serde_yaml::from_str(&text) {
            Ok(p) => p,
            Err(e) => {
                let line = e.location().map_or(0, |l| l.line());
                errors.push(CaseFileError { file, line, message: e.to_string() });
                continue;
            }
        };
        for case in &parsed.cases {
            pipeline.reset_state();
            let failures = run_case(&mut pipeline, &parsed.defaults, case);
            results.push(CaseResult { file: file.clone(), name: case.name.clone(), passed: failures.is_empty(), failures });
        }
    }
    if errors.is_empty() {
        Ok(results)
    } else {
        Err(errors)
    }
}

fn run_case(pipeline: &mut Pipeline, file_defaults: &Map<String, Value>, case: &Case) -> Vec<String> {
    let mut clock = BASE_TIME_MS;
    let step = case.step_s.unwrap_or(1) * 1000;
    let mut all = Outputs::default();
    let mut ids = Vec::new();
    let mut out = Outputs::default();
    for (i, fields) in case.events.iter().enumerate() {
        let mut event = file_defaults.clone();
        event.extend(case.defaults.clone());
        event.extend(fields.clone());
        clock += event.remove("after_s").and_then(|v| v.as_i64()).map_or(if i == 0 { 0 } else { step }, |s| s * 1000);
        if event.contains_key("signal_id") {
            for key in ["agent_id", "workload_id", "identity", "task_id"] {
                if !fields.contains_key(key) {
                    event.remove(key);
                }
            }
        } else {
            event.entry("event_id").or_insert_with(|| format!("e{}", i + 1).into());
        }
        event.entry("time").or_insert_with(|| crate::event::Timestamp(clock).to_rfc3339().into());
        resolve_decision_ref(&mut event);
        ids.push(event.get("event_id").and_then(Value::as_str).unwrap_or_default().to_owned());
        let record = Record {
            payload: Value::Object(event).to_string().into_bytes(),
            origin: Origin { source: case.name.clone(), partition: 0, offset: i as i64 + 1 },
        };
        out.clear();
        pipeline.process(&record, &mut out);
        all.decisions.append(&mut out.decisions);
        all.alerts.append(&mut out.alerts);
        all.commands.append(&mut out.commands);
        all.dead_letters.append(&mut out.dead_letters);
    }
    let mut failures = Vec::new();
    for expect in &case.expect {
        let id = match &expect.event {
            Value::Number(n) => n.as_u64().and_then(|n| ids.get(n as usize - 1).cloned()).unwrap_or_default(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let Some(decision) = all.decisions.iter().find(|d| d.event_id == id) else {
            failures.push(format!("event {}: no decision (was it valid?)", expect.event));
            continue;
        };
        check_decision(expect, decision, &mut failures);
    }
    if let Some(expected) = &case.commands {
        let actual: Vec<Value> = all.commands.iter().map(|c| serde_json::to_value(c).unwrap_or_default()).collect();
        if expected.len() != actual.len() {
            failures.push(format!("commands: expected {}, got {}: {}", expected.len(), actual.len(), brief_commands(&actual)));
        } else {
            for (i, (want, got)) in expected.iter().zip(&actual).enumerate() {
                for (key, value) in want {
                    if got.get(key) != Some(value) {
                        failures.push(format!(
                            "command {}: expected {key} = {value}, got {}",
                            i + 1,
                            got.get(key).unwrap_or(&Value::Null)
                        ));
                    }
                }
            }
        }
    }
    if let Some(n) = case.alerts {
        if n != all.alerts.len() {
            failures.push(format!("alerts: expected {n}, got {}", all.alerts.len()));
        }
    }
    if let Some(n) = case.dead_letters {
        if n != all.dead_letters.len() {
            let reasons: Vec<String> = all.dead_letters.iter().map(|d| d.error.to_string()).collect();
            failures.push(format!("dead letters: expected {n}, got {} {reasons:?}", all.dead_letters.len()));
        }
    } else if let Some(d) = all.dead_letters.first() {
        failures.push(format!("event {} was refused: {}", d.origin.offset, d.error));
    }
    failures
}

/// `approval.decision_id: "@x1"` names the decision on event `x1` of the
/// same agent, since decision ids are hashes a case author cannot write.
fn resolve_decision_ref(event: &mut Map<String, Value>) {
    let tenant = event.get("tenant").and_then(Value::as_str).unwrap_or("default").to_owned();
    let agent = event.get("agent_id").and_then(Value::as_str).unwrap_or_default().to_owned();
    if let Some(Value::Object(approval)) = event.get_mut("approval") {
        if let Some(Value::String(id)) = approval.get_mut("decision_id") {
            if let Some(event_id) = id.strip_prefix('@') {
                *id = crate::verdict::stable_id("d", &[&tenant, &agent, event_id]);
            }
        }
    }
}

fn check_decision(expect: &Expect, decision: &Decision, failures: &mut Vec<String>) {
    let fired: Vec<&str> = decision.reasons.iter().map(|r| r.rule.as_str()).collect();
    let summary = || {
        let reasons: Vec<String> = decision.reasons.iter().map(|r| format!("{} {}", r.rule, r.score)).collect();
        format!("{} (score {}; {})", decision.decision, decision.score, reasons.join(", "))
    };
    if let Some(want) = expect.decision {
        if want != decision.decision {
            failures.push(format!("event {}: expected {want}, got {}", expect.event, summary()));
        }
    }
    for rule in &expect.fired {
        if !fired.contains(&rule.as_str()) {
            failures.push(format!("event {}: expected `{rule}` to fire, got {}", expect.event, summary()));
        }
    }
    for rule in &expect.not_fired {
        if fired.contains(&rule.as_str()) {
            failures.push(format!("event {}: expected `{rule}` not to fire, got {}", expect.event, summary()));
        }
    }
    for fault in &decision.faults {
        failures.push(format!("event {}: rule `{}` faulted: {}", expect.event, fault.rule, fault.error));
    }
}

fn brief_commands(commands: &[Value]) -> String {
    let names: Vec<String> = commands
        .iter()
        .map(|c| format!("{}{}", c["command"].as_str().unwrap_or("?"), c["credential_ids"]))
        .collect();
    format!("[{}]", names.join(", "))
}
