//! Every alert of a demo run against the pinned OCSF 1.3.0 JSON Schema for
//! Detection Finding (`schemas/ocsf/detection_finding.schema.json`).
//!
//! Every demo alert must conform. Should a deviation ever be accepted, it is
//! listed in [`KNOWN_DEVIATIONS`] with the fix; the test fails on any other
//! error, and also when a listed deviation no longer occurs, so the list
//! shrinks as the alert code is fixed. The schema itself is never loosened
//! to make an alert pass.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use serde_json::{json, Value};
use vigil::pipeline::{self, Pipeline};
use vigil::rules::{RuleHost, RulesetSource};
use vigil::sink::jsonl::JsonlSink;
use vigil::source::file::MemorySource;
use vigil::state::StateConfig;
use vigil::workload::{generate, WorkloadSpec};

/// Where the alerts of `engine/src/decide/ocsf.rs` break OCSF 1.3.0 today:
/// (instance path with array indices as `*`, schema path, the fix).
const KNOWN_DEVIATIONS: &[(&str, &str, &str)] = &[];

fn demo_alerts() -> Vec<Value> {
    let spec = WorkloadSpec { tenants: 1, agents_per_tenant: 3, tasks_per_agent: 2, actions_per_task: 6, ..WorkloadSpec::default() };
    let dir = tempfile::tempdir().unwrap();
    let host = RuleHost::compile(RulesetSource::shipped().unwrap()).unwrap();
    let mut pipeline = Pipeline::new(host, StateConfig::default());
    let mut input = MemorySource::new("test", generate(&spec).into_iter().map(String::into_bytes));
    let mut sink = JsonlSink::create(dir.path()).unwrap();
    pipeline::run(&mut input, &mut pipeline, &mut sink, &AtomicBool::new(false)).unwrap();
    drop(sink);
    let text = std::fs::read_to_string(dir.path().join("alerts.jsonl")).unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn validator() -> jsonschema::Validator {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/ocsf/detection_finding.schema.json");
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    jsonschema::draft202012::new(&schema).unwrap()
}

/// Errors as (instance path with indices as `*`, schema path) → message.
fn errors(validator: &jsonschema::Validator, alert: &Value) -> BTreeMap<(String, String), String> {
    validator
        .iter_errors(alert)
        .map(|e| {
            let instance: Vec<String> = e
                .instance_path()
                .to_string()
                .split('/')
                .map(|s| if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) { "*".into() } else { s.to_string() })
                .collect();
            ((instance.join("/"), e.schema_path().to_string()), e.to_string())
        })
        .collect()
}

/// The fixes the known deviations call for, applied to an alert.

#[test]
fn demo_alerts_match_the_pinned_detection_finding_schema_but_for_known_deviations() {
    let validator = validator();
    let alerts = demo_alerts();
    assert!(alerts.len() > 10, "the demo run gives alerts");
    let mut seen = BTreeMap::new();
    for alert in &alerts {
        for ((instance, schema), message) in errors(&validator, alert) {
            let known = KNOWN_DEVIATIONS.iter().any(|(i, s, _)| *i == instance && *s == schema);
            assert!(known, "alert `{}` breaks OCSF at `{instance}` ({schema}): {message}\n{alert}", alert["finding_info"]["uid"]);
            *seen.entry((instance, schema)).or_insert(0) += 1;
        }
    }
    for (instance, schema, fix) in KNOWN_DEVIATIONS {
        assert!(
            seen.contains_key(&(instance.to_string(), schema.to_string())),
            "`{instance}` ({schema}) conforms now ({fix}): remove it from KNOWN_DEVIATIONS"
        );
    }
}


#[test]
fn the_demo_covers_every_non_allow_disposition() {
    let alerts = demo_alerts();
    for (id, name) in [(23, "Challenge"), (2, "Blocked"), (24, "Access Revoked")] {
        assert!(
            alerts.iter().any(|a| a["disposition_id"] == id && a["disposition"] == name),
            "no alert with disposition {id} {name}"
        );
    }
}

#[test]
fn the_schema_refuses_what_ocsf_refuses() {
    let validator = validator();
    let good = demo_alerts()[0].clone();
    assert!(validator.is_valid(&good));
    type Mutation = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Mutation)> = vec![
        ("a caption that is not its id's", Box::new(|a| a["disposition"] = json!("Allowed"))),
        ("an unknown disposition", Box::new(|a| a["disposition_id"] = json!(28))),
        ("an unknown severity", Box::new(|a| a["severity_id"] = json!(7))),
        ("a severity caption off by one", Box::new(|a| a["severity"] = json!("Medium"))),
        ("another class", Box::new(|a| a["class_uid"] = json!(2005))),
        ("a type_uid that is not class * 100 + activity", Box::new(|a| a["type_uid"] = json!(200402))),
        ("a time as text", Box::new(|a| a["time"] = json!("2026-11-28T09:00:00Z"))),
        ("an attribute the class lacks", Box::new(|a| a["verdict"] = json!("deny"))),
        ("no finding uid", Box::new(|a| drop(a["finding_info"].as_object_mut().unwrap().remove("uid")))),
        ("no finding title", Box::new(|a| drop(a["finding_info"].as_object_mut().unwrap().remove("title")))),
        ("no product vendor", Box::new(|a| drop(a["metadata"]["product"].as_object_mut().unwrap().remove("vendor_name")))),
        ("another OCSF version", Box::new(|a| a["metadata"]["version"] = json!("1.1.0"))),
        ("an analytic without type", Box::new(|a| drop(a["finding_info"]["analytic"].as_object_mut().unwrap().remove("type_id")))),
        ("a user type caption of another id", Box::new(|a| a["actor"]["user"] = json!({"uid": "x", "type_id": 1, "type": "Admin"}))),
        ("resources not a list", Box::new(|a| a["resources"] = json!({"name": "x"}))),
        ("unmapped not an object", Box::new(|a| a["unmapped"] = json!("x"))),
        ("no metadata", Box::new(|a| drop(a.as_object_mut().unwrap().remove("metadata")))),
    ];
    for (what, mutate) in cases {
        let mut bad = good.clone();
        mutate(&mut bad);
        assert!(!validator.is_valid(&bad), "the schema accepts {what}");
    }
}

/// The escalation of an unacknowledged revocation is a Detection Finding too.
#[test]
fn the_unacknowledged_revocation_finding_matches_the_schema() {
    use vigil::verdict::{CommandKind, ControlCommand};
    let validator = validator();
    for task in [None, Some("t-1".to_owned())] {
        let command = ControlCommand {
            command_id: "c-1".into(),
            issued_at: "2026-11-28T09:00:00Z".into(),
            command: CommandKind::RevokeCredentials,
            tenant: "acme".into(),
            agent_id: "billing-bot".into(),
            workload_id: "spiffe://acme.example/agents/billing-bot".into(),
            task_id: task,
            credential_ids: vec!["k-1".into()],
            reason: "exfiltration".into(),
            decision_id: "d-1".into(),
            expires_at: None,
        };
        for (attempt, last) in [(1, false), (4, true)] {
            let finding = vigil::decide::ocsf::unacknowledged(&command, attempt, last, 1_795_000_000_000).to_value();
            assert_eq!(errors(&validator, &finding), BTreeMap::new(), "{finding}");
        }
    }
}
