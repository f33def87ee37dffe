//! Determinism and golden files: the same input and ruleset give the same
//! bytes, and the demo scenarios' outputs are pinned.
//!
//! Regenerate the golden files after an intended change with
//! `UPDATE_GOLDEN=1 cargo test -p vigil-engine --test determinism`.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use proptest::prelude::*;
use serde_json::json;
use vigil::pipeline::{self, Pipeline};
use vigil::rules::{RuleHost, RulesetSource};
use vigil::sink::jsonl::{JsonlSink, FILES};
use vigil::source::file::MemorySource;
use vigil::state::StateConfig;
use vigil::workload::{generate, WorkloadSpec};

/// Runs `lines` through the shipped rules into JSONL files; returns their bytes.
fn run(lines: &[String]) -> Vec<Vec<u8>> {
    let dir = tempfile::tempdir().unwrap_or_else(|e| unreachable!("tempdir: {e}"));
    let source = RulesetSource::shipped().unwrap_or_else(|e| unreachable!("{e}"));
    let host = RuleHost::compile(source).unwrap_or_else(|e| unreachable!("{e}"));
    let mut pipeline = Pipeline::new(host, StateConfig::default());
    let mut input = MemorySource::new("test", lines.iter().map(|l| l.clone().into_bytes()));
    let mut sink = JsonlSink::create(dir.path()).unwrap_or_else(|e| unreachable!("{e}"));
    pipeline::run(&mut input, &mut pipeline, &mut sink, &AtomicBool::new(false)).unwrap_or_else(|e| unreachable!("{e}"));
    FILES.iter().map(|f| std::fs::read(dir.path().join(f)).unwrap_or_default()).collect()
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

#[test]
fn demo_scenarios_match_the_golden_files() {
    let spec = WorkloadSpec { tenants: 1, agents_per_tenant: 2, tasks_per_agent: 1, actions_per_task: 6, ..WorkloadSpec::default() };
    let outputs = run(&generate(&spec));
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    for (name, bytes) in FILES.iter().zip(&outputs) {
        let path = golden_dir().join(name);
        if update {
            std::fs::write(&path, bytes).unwrap_or_else(|e| unreachable!("{e}"));
            continue;
        }
        let want = std::fs::read(&path).unwrap_or_else(|e| unreachable!("{}: {e}", path.display()));
        if want != *bytes {
            let (want, got) = (String::from_utf8_lossy(&want), String::from_utf8_lossy(bytes));
            let first = want.lines().zip(got.lines()).position(|(a, b)| a != b);
            assert_eq!(want.lines().count(), got.lines().count(), "{name}: line count changed");
            let i = first.unwrap_or(0);
            assert_eq!(want.lines().nth(i), got.lines().nth(i), "{name}: line {} differs", i + 1);
        }
    }
}

#[test]
fn golden_files_show_every_kind_of_outcome() {
    let decisions = std::fs::read_to_string(golden_dir().join("decisions.jsonl")).unwrap_or_default();
    for verdict in ["allow", "step_up", "deny", "revoke"] {
        assert!(decisions.contains(&format!("\"decision\":\"{verdict}\"")), "no {verdict} in the golden decisions");
    }
    let control = std::fs::read_to_string(golden_dir().join("control.jsonl")).unwrap_or_default();
    for command in ["revoke_credentials", "revoke_agent", "step_up", "quarantine", "release"] {
        assert!(control.contains(&format!("\"command\":\"{command}\"")), "no {command} in the golden commands");
    }
    let dlq = std::fs::read_to_string(golden_dir().join("dlq.jsonl")).unwrap_or_default();
    assert_eq!(dlq.lines().count(), 4, "the four malformed records are dead letters");
}

/// Events over a small universe, so traces collide on agents, tasks,
/// credentials and targets the way real traffic does.
fn event_strategy() -> impl Strategy<Value = serde_json::Value> {
    let kinds = prop::sample::select(vec![
        "task_started", "task_ended", "credential_request", "credential_issued", "tool_call", "data_access",
        "network_egress", "approval",
    ]);
    (
        kinds,
        0..3usize,
        0..3usize,
        prop::sample::select(vec!["sql.query", "http.post", "shell.exec", "docs.search"]),
        prop::sample::select(vec!["crm/customers", "docs/wiki", "paste.evil.io", "api.partner.example.com", "prod/db"]),
        prop::sample::select(vec!["public", "internal", "pii", "secret", "restricted"]),
        prop::sample::select(vec!["read", "write", "delete", "execute"]),
        0..3_000_000u64,
        any::<bool>(),
        0..4usize,
        0..120_000i64,
    )
        .prop_map(|(kind, agent, task, tool, target, class, op, bytes, verified, cred, gap)| {
            json!({
                "kind": kind,
                "agent_id": format!("a{agent}"),
                "workload_id": format!("spiffe://acme.example/agents/a{agent}"),
                "identity": {"method": "x509_svid", "verified": verified || agent != 2},
                "task_id": format!("t{task}"),
                "tool": tool,
                "target": target,
                "data_class": class,
                "operation": op,
                "bytes": bytes,
                "scope": {"tools": ["sql.query", "docs.search"], "targets": ["crm/*", "docs/*"], "data_classes": ["internal", "pii"], "max_duration_s": 600, "egress_budget_bytes": 4_000_000},
                "credential": {"id": format!("c{cred}"), "scopes": ["crm/customers:read"], "ttl_s": 300},
                "approval": {"decision_id": "d-none", "granted": verified, "approver": "x"},
                "gap_ms": gap,
            })
        })
}

fn signal_strategy() -> impl Strategy<Value = serde_json::Value> {
    (prop::sample::select(vec!["credential_leaked", "threat_intel", "agent_quarantine", "agent_release"]), 0..4usize, 0..3usize)
        .prop_map(|(kind, cred, agent)| {
            json!({"signal_kind": kind, "credential_id": format!("c{cred}"), "agent_id": format!("a{agent}"), "target": "paste.evil.io"})
        })
}

fn trace(items: Vec<(serde_json::Value, Option<serde_json::Value>)>) -> Vec<String> {
    let mut clock = 1_795_856_400_000i64;
    let mut lines = Vec::new();
    for (i, (mut event, signal)) in items.into_iter().enumerate() {
        clock += event["gap_ms"].as_i64().unwrap_or(0);
        let time = vigil::event::Timestamp(clock).to_rfc3339();
        if let Some(s) = signal {
            lines.push(json!({"signal_id": format!("s{i}"), "time": time, "kind": s["signal_kind"], "severity": "high",
                "credential_id": s["credential_id"], "agent_id": s["agent_id"], "target": s["target"]}).to_string());
        }
        if let Some(e) = event.as_object_mut() {
            e.remove("gap_ms");
            e.insert("event_id".into(), format!("e{i}").into());
            e.insert("time".into(), time.into());
        }
        lines.push(event.to_string());
    }
    lines
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_same_trace_gives_the_same_bytes(items in prop::collection::vec((event_strategy(), prop::option::weighted(0.1, signal_strategy())), 1..200)) {
        let lines = trace(items);
        let first = run(&lines);
        let second = run(&lines);
        prop_assert_eq!(&first, &second);
        let decisions = String::from_utf8_lossy(&first[0]).lines().count();
        let events = lines.iter().filter(|l| !l.contains("\"signal_id\"")).count();
        prop_assert_eq!(decisions, events, "one decision per valid activity event");
    }

    #[test]
    fn generated_workloads_are_deterministic(seed in any::<u64>()) {
        let spec = WorkloadSpec { seed, tenants: 2, agents_per_tenant: 3, tasks_per_agent: 2, actions_per_task: 8, ..WorkloadSpec::default() };
        let lines = generate(&spec);
        prop_assert_eq!(run(&lines), run(&lines));
    }
}
