//! The command line as a user meets it: exit codes, messages, files.

use std::path::Path;
use std::process::{Command, Output};

fn vigil(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(args)
        .output()
        .unwrap_or_else(|e| unreachable!("cannot run vigil: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const RULES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../rules");

#[test]
fn demo_runs_to_completion_and_writes_its_outputs() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| unreachable!("{e}"));
    let out = dir.path().join("demo");
    let run = vigil(&["demo", "--out", out.to_str().unwrap_or_default(), "--agents", "5", "--tasks", "2"]);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    let stdout = text(&run.stdout);
    for verdict in ["allow", "step_up", "deny", "revoke"] {
        let line = stdout.lines().find(|l| l.trim_start().starts_with(verdict)).unwrap_or_default();
        let n: u64 = line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or(0);
        assert!(n > 0, "the summary shows no {verdict}:\n{stdout}");
    }
    for file in ["decisions.jsonl", "alerts.jsonl", "control.jsonl", "dlq.jsonl"] {
        let len = std::fs::metadata(out.join(file)).map(|m| m.len()).unwrap_or(0);
        assert!(len > 0, "{file} is empty");
    }
}

#[test]
fn run_on_a_file_decides_and_dead_letters() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| unreachable!("{e}"));
    let input = dir.path().join("in.jsonl");
    let good = r#"{"event_id":"e1","time":"2026-11-28T10:00:00Z","agent_id":"a1","workload_id":"spiffe://acme.example/a1","identity":{"method":"x509_svid","verified":true},"kind":"tool_call","tool":"docs.search","target":"docs/x","data_class":"public"}"#;
    std::fs::write(&input, format!("{good}\nnot json\n\n{}\n", good.replace("e1", "e2"))).unwrap_or_default();
    let out = dir.path().join("out");
    let run = vigil(&["run", "--input", input.to_str().unwrap_or_default(), "--out", out.to_str().unwrap_or_default()]);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    let decisions = std::fs::read_to_string(out.join("decisions.jsonl")).unwrap_or_default();
    assert_eq!(decisions.lines().count(), 2);
    let dlq = std::fs::read_to_string(out.join("dlq.jsonl")).unwrap_or_default();
    assert!(dlq.contains("\"offset\":2") && dlq.contains("\"record\":\"not json\"") && dlq.contains("malformed json"), "{dlq}");
    assert!(text(&run.stderr).contains("1 dead letters"), "{}", text(&run.stderr));
}

#[test]
fn a_broken_rule_is_reported_with_file_and_line_and_exit_1() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| unreachable!("{e}"));
    for entry in std::fs::read_dir(RULES).into_iter().flatten().flatten() {
        if entry.path().is_file() {
            let _ = std::fs::copy(entry.path(), dir.path().join(entry.file_name()));
        }
    }
    let ok = vigil(&["rules", "check", dir.path().to_str().unwrap_or_default()]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));
    std::fs::write(dir.path().join("broken.rhai"), "// id: broken\n\nif event.tool == {\n").unwrap_or_default();
    let bad = vigil(&["rules", "check", dir.path().to_str().unwrap_or_default()]);
    assert_eq!(bad.status.code(), Some(1));
    let err = text(&bad.stderr);
    assert!(err.contains("broken.rhai:3:") || err.contains("broken.rhai:4:"), "{err}");
}

#[test]
fn rules_test_reports_per_case_and_json() {
    let run = vigil(&["rules", "test", RULES]);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stdout));
    assert!(text(&run.stdout).contains("PASS"));
    let json = vigil(&["rules", "test", RULES, "--format", "json"]);
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap_or_default();
    assert_eq!(report["failed"], 0);
    assert!(report["passed"].as_u64().unwrap_or(0) > 20);
}

#[test]
fn a_failing_case_exits_1_with_the_difference() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| unreachable!("{e}"));
    std::fs::create_dir_all(dir.path().join("tests")).unwrap_or_default();
    std::fs::write(dir.path().join("always.rhai"), "// id: always\nfinding(70, \"always\")\n").unwrap_or_default();
    let case = "cases:\n  - name: expects allow\n    events:\n      - {kind: tool_call, agent_id: a, workload_id: \"spiffe://x.example/a\"}\n    expect:\n      - {event: 1, decision: allow}\n";
    std::fs::write(dir.path().join("tests/always.yaml"), case).unwrap_or_default();
    let run = vigil(&["rules", "test", dir.path().to_str().unwrap_or_default()]);
    assert_eq!(run.status.code(), Some(1));
    let out = text(&run.stdout);
    assert!(out.contains("FAIL expects allow") && out.contains("expected allow, got deny"), "{out}");
}

#[test]
fn bad_usage_exits_2() {
    assert_eq!(vigil(&["run"]).status.code(), Some(2));
    assert_eq!(vigil(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(vigil(&["rules", "check", "/nonexistent/rules"]).status.code(), Some(2));
    let missing = Path::new("/nonexistent/input.jsonl");
    let run = vigil(&["run", "--input", missing.to_str().unwrap_or_default(), "--out", "/tmp/never"]);
    assert_eq!(run.status.code(), Some(2));
    assert!(text(&run.stderr).contains("input.jsonl"));
}

#[test]
fn config_check_prints_the_effective_configuration_or_what_is_wrong_and_where() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| unreachable!("{e}"));
    let file = dir.path().join("vigil.toml");
    let check = |toml: &str, env: &[(&str, &str)]| {
        std::fs::write(&file, toml).unwrap_or_else(|e| unreachable!("{e}"));
        Command::new(env!("CARGO_BIN_EXE_vigil"))
            .args(["config", "check", file.to_str().unwrap_or_default()])
            .envs(env.iter().copied())
            .output()
            .unwrap_or_else(|e| unreachable!("cannot run vigil: {e}"))
    };

    let ok = check(
        "brokers = \"kafka:9092\"\n[properties]\n\"sasl.password\" = \"hunter2\"\n",
        &[("VIGIL_WORKERS", "4"), ("VIGIL_TOPICS__DECISIONS", "soc.decisions")],
    );
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));
    let printed = text(&ok.stdout);
    for expected in ["brokers = \"kafka:9092\"", "workers = 4", "decisions = \"soc.decisions\"", "***"] {
        assert!(printed.contains(expected), "`{expected}` missing from:\n{printed}");
    }
    assert!(!printed.contains("hunter2"), "a secret was printed:\n{printed}");

    let unknown = check("brokers = \"kafka:9092\"\ncommit_intervall_ms = 5\n", &[]);
    assert_eq!(unknown.status.code(), Some(1));
    let message = text(&unknown.stderr);
    assert!(message.contains("commit_intervall_ms") && message.contains("line 2"), "{message}");

    let broker = check("brokers = \"kafka\"\n", &[]);
    assert_eq!(broker.status.code(), Some(1));
    assert!(text(&broker.stderr).contains("`brokers`: `kafka`"), "{}", text(&broker.stderr));

    let env = check("", &[("VIGIL_SIGNING__KEYFILE", "k.pem")]);
    assert_eq!(env.status.code(), Some(1));
    assert!(text(&env.stderr).contains("VIGIL_SIGNING__KEYFILE"), "{}", text(&env.stderr));
}

#[test]
fn logs_can_be_json_lines_with_structured_fields() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| unreachable!("{e}"));
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "{\"not an event\": 1}\n").unwrap_or_else(|e| unreachable!("{e}"));
    // Serving /metrics logs its address as a field.
    let run = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["--log-format", "json", "run", "--http", "127.0.0.1:0", "--input"])
        .arg(&input)
        .arg("--out")
        .arg(dir.path().join("out"))
        .env("RUST_LOG", "info")
        .output()
        .unwrap_or_else(|e| unreachable!("cannot run vigil: {e}"));
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    let lines: Vec<serde_json::Value> =
        text(&run.stderr).lines().filter(|l| l.starts_with('{')).filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert!(!lines.is_empty(), "no JSON log line:\n{}", text(&run.stderr));
    assert!(lines.iter().all(|l| l["level"].is_string() && l["message"].is_string()), "{lines:?}");
    assert!(lines.iter().any(|l| l["address"].as_str().is_some_and(|a| a.starts_with("127.0.0.1:"))), "{lines:?}");
    let bad = vigil(&["--log-format", "xml", "demo"]);
    assert_eq!(bad.status.code(), Some(2));
}

/// `--from-checkpoint` reaches the replay: it says where it started, and
/// a path without a store is bad input, refused by name (exit 2).
#[test]
fn replay_from_a_checkpoint_says_where_it_started() {
    use vigil::pipeline::{Outputs, Pipeline};
    use vigil::rules::{RuleHost, RulesetSource};
    use vigil::state::StateConfig;
    let dir = tempfile::tempdir().unwrap_or_else(|e| unreachable!("{e}"));
    let lines = vigil::workload::generate(&vigil::workload::WorkloadSpec { agents_per_tenant: 3, tasks_per_agent: 1, ..Default::default() });
    let (first, second) = lines.split_at(lines.len() / 2);
    let Ok(host) = RulesetSource::shipped().and_then(RuleHost::compile) else { unreachable!("the shipped rules compile") };
    let mut live = Pipeline::new(host, StateConfig::default());
    let mut out = Outputs::default();
    for line in first {
        out.clear();
        live.process(&vigil::source::Record { payload: line.clone().into_bytes(), ..Default::default() }, &mut out);
    }
    let Ok(store) = vigil::checkpoint::RedbStore::open(&dir.path().join(vigil::kafka::STORE_FILE)) else { unreachable!("a new store") };
    if let Err(e) = vigil::checkpoint::checkpoint(&mut live.state, &store, &Default::default()) {
        unreachable!("{e}")
    }
    drop(store);
    let input = dir.path().join("rest.jsonl");
    std::fs::write(&input, second.join("\n")).unwrap_or_else(|e| unreachable!("{e}"));
    let out = dir.path().join("replay");
    let path = |p: &Path| p.to_str().unwrap_or_default().to_owned();
    let run = vigil(&["replay", "--input", &path(&input), "--from-checkpoint", &path(dir.path()), "--out", &path(&out), "--no-progress"]);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    assert!(text(&run.stdout).contains("from checkpoint sha256:"), "{}", text(&run.stdout));
    let summary = std::fs::read_to_string(out.join("summary.json")).unwrap_or_default();
    assert!(summary.contains("\"checkpoint\""), "{summary}");

    let nowhere = dir.path().join("nowhere");
    let run = vigil(&["replay", "--input", &path(&input), "--from-checkpoint", &path(&nowhere), "--out", &path(&out), "--no-progress"]);
    assert_eq!(run.status.code(), Some(2), "{}", text(&run.stderr));
    assert!(text(&run.stderr).contains("nowhere"), "{}", text(&run.stderr));
}

/// The analyst's first backtest: `vigil run` records decisions, and
/// `vigil replay --baseline-decisions` compares a candidate with them. The
/// rules that made the recording change nothing; one added rule changes
/// the decisions the diff lists, each by that rule or by the step-up it
/// left pending.
#[test]
fn replay_against_what_a_run_recorded() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| unreachable!("{e}"));
    let path = |p: &Path| p.to_str().unwrap_or_default().to_owned();
    let spec = vigil::workload::WorkloadSpec { agents_per_tenant: 6, tasks_per_agent: 2, actions_per_task: 20, ..Default::default() };
    let input = dir.path().join("activity.jsonl");
    std::fs::write(&input, vigil::workload::generate(&spec).join("\n")).unwrap_or_else(|e| unreachable!("{e}"));
    let recorded = dir.path().join("recorded");
    let run = vigil(&["run", "--input", &path(&input), "--out", &path(&recorded)]);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    let decisions = recorded.join("decisions.jsonl");
    let recorded_count = std::fs::read_to_string(&decisions).unwrap_or_default().lines().count() as u64;

    let candidate = dir.path().join("candidate");
    std::fs::create_dir_all(&candidate).unwrap_or_else(|e| unreachable!("{e}"));
    for entry in std::fs::read_dir(RULES).into_iter().flatten().flatten() {
        if entry.path().is_file() {
            let _ = std::fs::copy(entry.path(), candidate.join(entry.file_name()));
        }
    }
    let rule = "// id: large_partner_post\n// kinds: network_egress\n\nif event.tool == \"http.post\" && event.bytes > 150000 { return finding(35); }\n()\n";
    std::fs::write(candidate.join("large_partner_post.rhai"), rule).unwrap_or_else(|e| unreachable!("{e}"));

    let replay = |rules: &str, out: &Path| -> (serde_json::Value, String) {
        let args = ["replay", "--input", &path(&input), "--baseline-decisions", &path(&decisions), "--rules", rules];
        let run = vigil(&[&args[..], &["--out", &path(out), "--no-progress"]].concat());
        assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
        let summary = std::fs::read(out.join("summary.json")).unwrap_or_default();
        let summary = serde_json::from_slice(&summary).unwrap_or_else(|e| unreachable!("{e}"));
        (summary, std::fs::read_to_string(out.join("diff.jsonl")).unwrap_or_default())
    };
    let (same, diff) = replay(RULES, &dir.path().join("same"));
    assert_eq!(same["compared"], recorded_count, "{same}");
    for key in ["changed", "reasons_changed", "only_candidate", "only_baseline", "baseline_unreadable"] {
        assert_eq!(same[key], 0, "{key}");
    }
    assert!(diff.is_empty(), "{diff}");

    let (added, diff) = replay(&path(&candidate), &dir.path().join("added"));
    let changed = added["changed"].as_u64().unwrap_or_default();
    assert!(changed > 0, "{added}");
    assert_eq!(diff.lines().count() as u64, changed);
    // The rule's own step-ups, and the later actions that wait for them.
    let mut by_the_rule = 0;
    for line in diff.lines() {
        let changed: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
        let added = changed["rules_added"].as_array().cloned().unwrap_or_default();
        assert!(!added.is_empty(), "{line}");
        assert!(added.iter().all(|r| r == "large_partner_post" || r == "builtin.pending_step_up"), "{line}");
        assert_eq!(changed["rules_removed"], serde_json::json!([]), "{line}");
        by_the_rule += usize::from(added.iter().any(|r| r == "large_partner_post"));
    }
    assert!(by_the_rule > 0, "{diff}");
}

/// Offsets of the activity topics name no decisions: a published baseline
/// with offsets is refused before anything is read.
#[test]
fn a_published_baseline_is_read_by_time_not_offset() {
    let run = vigil(&["replay", "--brokers", "127.0.0.1:1", "--topic", "agent.activity", "--baseline-topic", "vigil.decisions", "--from-offset", "3"]);
    assert_eq!(run.status.code(), Some(2), "{}", text(&run.stderr));
    assert!(text(&run.stderr).contains("--from-time"), "{}", text(&run.stderr));
}

/// A Schema Registry url this build cannot use is refused before any broker is asked.
#[test]
fn a_replay_refuses_an_https_registry_before_asking_a_broker() {
    let run = vigil(&["replay", "--brokers", "127.0.0.1:1", "--topic", "agent.activity", "--schema-registry", "https://registry.example"]);
    assert_eq!(run.status.code(), Some(2), "{}", text(&run.stderr));
    assert!(text(&run.stderr).contains("https is not supported"), "{}", text(&run.stderr));
}
