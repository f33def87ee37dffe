//! The engine on a real Kafka broker: the same bytes as on files, signals
//! that reach the worker holding the agent, the DLQ, and at-least-once
//! delivery. One broker serves every test here; each test has topics and
//! a group of its own, so they run in parallel.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::json;
use support::{config, decide, deadline, event_ids, Broker, Collector, Engine, Input, TestProducer};
use vigil::config::Delivery;
use vigil::decode::avro::{encode_wire, ACTIVITY_EVENT_AVSC, ACTIVITY_EVENT_ID};
use vigil::sink::jsonl::FILES;
use vigil::workload::{generate, WorkloadSpec};

fn small_workload() -> Vec<String> {
    generate(&WorkloadSpec { tenants: 1, agents_per_tenant: 2, tasks_per_agent: 2, actions_per_task: 5, ..WorkloadSpec::default() })
}


#[test]
fn the_demo_workload_gives_the_bytes_the_file_engine_gives() {
    let broker = Broker::shared();
    let config = config(&broker.brokers, "same-bytes", 1, Delivery::ExactlyOnce);
    let lines = small_workload();
    let expected = support::file_outputs(&lines);
    assert!(expected[0].len() > 50 && !expected[1].is_empty() && !expected[2].is_empty());
    assert_eq!(expected[3].len(), 4, "the workload has four malformed lines");

    // Signals ride on the activity topic here, so the engine sees exactly
    // the order the file engine saw.
    let producer = TestProducer::new(&broker.brokers);
    let inputs: Vec<Input> = lines.iter().map(|l| Input::keyed_json(l)).collect();
    producer.send(&config.topics.activity, &inputs);
    producer.flush();

    let engine = Engine::start(&config, decide());
    let topics = [&config.topics.decisions, &config.topics.alerts, &config.topics.control, &config.topics.dlq];
    let mut collectors: Vec<Collector> = topics.iter().map(|t| Collector::new(&broker.brokers, t)).collect();
    let until = deadline(120);
    for (collector, want) in collectors.iter_mut().zip(&expected) {
        collector.until_count(until, want.len());
    }
    let reports = engine.stop();
    assert_eq!(vigil::kafka::total(&reports).events as usize, expected[0].len());
    for collector in &mut collectors {
        collector.drain(until);
    }

    for (i, collector) in collectors[..3].iter().enumerate() {
        assert_eq!(collector.payloads(), expected[i], "{} differs from the file engine's", FILES[i]);
    }
    let originals: Vec<Vec<u8>> = collectors[3].payloads();
    for letter in &expected[3] {
        let letter: serde_json::Value = serde_json::from_slice(letter).unwrap();
        let record = letter["record"].as_str().unwrap().as_bytes().to_vec();
        assert!(originals.contains(&record), "dead letter {record:?} missing");
    }
    assert_eq!(originals.len(), 4);
    // Every output is keyed by its agent.
    for d in &collectors[0].records {
        assert_eq!(d.key.as_deref(), d.json()["agent_id"].as_str().map(str::as_bytes));
    }
}

fn event(id: &str, seconds: u32, kind: &str, extra: serde_json::Value) -> String {
    let mut e = json!({
        "event_id": id,
        "time": format!("2026-11-28T10:00:{seconds:02}Z"),
        "tenant": "acme",
        "agent_id": "agent-signalled",
        "workload_id": "spiffe://acme.example/agents/agent-signalled",
        "identity": {"method": "x509_svid", "verified": true},
        "task_id": "task-1",
        "kind": kind,
    });
    if let (Some(e), serde_json::Value::Object(extra)) = (e.as_object_mut(), extra) {
        e.extend(extra);
    }
    e.to_string()
}

#[test]
fn a_signal_on_the_signals_topic_reaches_the_worker_holding_the_agent() {
    let broker = Broker::shared();
    let mut config = config(&broker.brokers, "signals", 2, Delivery::ExactlyOnce);
    config.workers = 2;
    let engine = Engine::start(&config, decide());
    let producer = TestProducer::new(&broker.brokers);
    let scope = json!({"scope": {"tools": ["docs.search"], "targets": ["docs/*"], "data_classes": ["internal"], "max_duration_s": 3600, "egress_budget_bytes": 1000000}});
    let credential = json!({"credential": {"id": "cred-signalled", "scopes": ["docs/wiki:read"], "ttl_s": 3600}});
    let call = |id, s| {
        event(id, s, "tool_call", json!({"tool": "docs.search", "target": "docs/wiki", "operation": "read", "data_class": "internal", "credential": {"id": "cred-signalled"}}))
    };
    let first = [
        event("sig-e1", 1, "task_started", scope),
        event("sig-e2", 2, "credential_issued", credential),
        call("sig-e3", 3),
    ];
    producer.send(&config.topics.activity, &first.iter().map(|l| Input::keyed_json(l)).collect::<Vec<_>>());
    producer.flush();
    let mut decisions = Collector::new(&broker.brokers, &config.topics.decisions);
    let until = deadline(120);
    decisions.until_count(until, 3);

    let signal = json!({"signal_id": "sig-quarantine", "time": "2026-11-28T10:00:04Z", "tenant": "acme", "kind": "agent_quarantine", "severity": "high", "agent_id": "agent-signalled"});
    producer.send(&config.topics.signals, &[Input::new(signal.to_string())]);
    producer.flush();
    // Only the worker holding the agent knows its live credential: a
    // quarantine naming it proves the signal reached that worker.
    let mut control = Collector::new(&broker.brokers, &config.topics.control);
    let by_holder = |records: &[support::Output]| {
        records.iter().any(|r| {
            let c = r.json();
            c["command"] == "quarantine" && c["credential_ids"] == json!(["cred-signalled"])
        })
    };
    control.until(until, by_holder);

    producer.send(&config.topics.activity, &[Input::keyed_json(&call("sig-e4", 5))]);
    producer.flush();
    decisions.until_count(until, 4);
    engine.stop();
    let after = decisions.records.iter().map(|r| r.json()).find(|d| d["event_id"] == "sig-e4").unwrap();
    assert_eq!(after["decision"], "deny", "a quarantined agent's action: {after}");
}

#[test]
fn malformed_records_go_to_the_dlq_and_the_rest_is_decided() {
    let broker = Broker::shared();
    let config = config(&broker.brokers, "dlq", 1, Delivery::ExactlyOnce);
    let schema = apache_avro::Schema::parse_str(ACTIVITY_EVENT_AVSC).unwrap();
    let good_avro = encode_wire(
        ACTIVITY_EVENT_ID,
        &schema,
        &json!({"event_id": "dlq-good-avro", "time": "2026-11-28T10:00:02Z", "tenant": "acme", "agent_id": "agent-d",
                "workload_id": "spiffe://acme.example/agents/agent-d", "kind": "tool_call", "tool": "docs.search",
                "target": "docs/wiki", "operation": "read", "data_class": "public"}),
    )
    .unwrap();
    let json_event = |id: &str, workload: &str| {
        json!({"event_id": id, "time": "2026-11-28T10:00:01Z", "tenant": "acme", "agent_id": "agent-d",
               "workload_id": workload, "kind": "tool_call", "tool": "docs.search", "target": "docs/wiki",
               "operation": "read", "data_class": "public"})
        .to_string()
    };
    let good = |id: &str| json_event(id, "spiffe://acme.example/agents/agent-d");
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let inputs = vec![
        Input::keyed_json(&good("dlq-good-1")).header("traceparent", traceparent),
        Input::new("{\"event_id\": \"broken").header("traceparent", traceparent).header("x-gateway", "gw-7"),
        Input::new(good_avro),
        Input::new(vec![0, 0, 0, 0, 1, 0x02, b'A', 0xff, 0xff]),
        Input::new(vec![0, 0, 0, 0x03, 0xe7, 1, 2, 3]),
        Input::keyed_json(&json_event("dlq-bad-spiffe", "spiffe://Bad.Domain/x")),
        Input::keyed_json(&good("dlq-good-2")),
    ];
    let mut bad_json = inputs[1].clone();
    bad_json.key = Some(b"gateway-key".to_vec());
    let inputs: Vec<Input> = inputs.into_iter().enumerate().map(|(i, x)| if i == 1 { bad_json.clone() } else { x }).collect();
    let producer = TestProducer::new(&broker.brokers);
    producer.send(&config.topics.activity, &inputs);
    producer.flush();

    let engine = Engine::start(&config, decide());
    let until = deadline(120);
    let mut decisions = Collector::new(&broker.brokers, &config.topics.decisions);
    let mut dlq = Collector::new(&broker.brokers, &config.topics.dlq);
    decisions.until_count(until, 3);
    dlq.until_count(until, 4);
    engine.stop();
    decisions.drain(until);
    dlq.drain(until);

    assert_eq!(event_ids(&decisions.records), ["dlq-good-1", "dlq-good-2", "dlq-good-avro"]);
    let first = decisions.records.iter().find(|d| d.json()["event_id"] == "dlq-good-1").unwrap();
    assert_eq!(first.header("traceparent").as_deref(), Some(traceparent), "trace context passes through");

    let labels: Vec<String> = dlq.records.iter().map(|r| r.header("vigil.error").unwrap()).collect();
    assert_eq!(labels, ["malformed_json", "malformed_avro", "unknown_schema", "invalid_field"]);
    for (letter, input_offset) in dlq.records.iter().zip([1, 3, 4, 5]) {
        assert_eq!(letter.payload, inputs[input_offset].payload, "a dead letter keeps the original bytes");
        assert_eq!(letter.header("vigil.source.topic").as_deref(), Some(config.topics.activity.as_str()));
        assert_eq!(letter.header("vigil.source.partition").as_deref(), Some("0"));
        assert_eq!(letter.header("vigil.source.offset"), Some(input_offset.to_string()));
        assert!(!letter.header("vigil.reason").unwrap_or_default().is_empty());
    }
    assert!(dlq.records[2].header("vigil.reason").unwrap().contains("999"), "{:?}", dlq.records[2].headers);
    assert!(dlq.records[3].header("vigil.reason").unwrap().contains("workload_id"));
    let bad_json = &dlq.records[0];
    assert_eq!(bad_json.key.as_deref(), Some(&b"gateway-key"[..]), "a dead letter keeps the original key");
    assert_eq!(bad_json.header("x-gateway").as_deref(), Some("gw-7"), "and the original headers");
    assert_eq!(bad_json.header("traceparent").as_deref(), Some(traceparent));
}

#[test]
fn at_least_once_delivers_every_decision() {
    let broker = Broker::shared();
    let mut config = config(&broker.brokers, "at-least-once", 3, Delivery::AtLeastOnce);
    config.workers = 2;
    let lines = small_workload();
    let mut expected: Vec<String> = support::file_outputs(&lines)[0]
        .iter()
        .map(|d| serde_json::from_slice::<serde_json::Value>(d).unwrap()["event_id"].as_str().unwrap().to_owned())
        .collect();
    expected.sort();
    expected.dedup();

    let engine = Engine::start(&config, decide());
    let producer = TestProducer::new(&broker.brokers);
    producer.send(&config.topics.activity, &lines.iter().map(|l| Input::keyed_json(l)).collect::<Vec<_>>());
    producer.flush();
    let mut decisions = Collector::new(&broker.brokers, &config.topics.decisions);
    decisions.until(deadline(120), |records| {
        let mut seen = event_ids(records);
        seen.dedup();
        seen.len() >= expected.len()
    });
    engine.stop();
    let mut seen = event_ids(&decisions.records);
    seen.dedup();
    assert_eq!(seen, expected, "every valid event decided at least once");
}

/// A decision or command in the Confluent wire format, as JSON: the schema
/// id it carries, and its fields.
fn avro_json(bytes: &[u8], schema: &str) -> (u32, serde_json::Value) {
    assert_eq!(bytes[0], 0, "the Confluent magic byte");
    let id = u32::from_be_bytes(bytes[1..5].try_into().unwrap());
    let schema = apache_avro::Schema::parse_str(schema).unwrap();
    let value = apache_avro::from_avro_datum(&schema, &mut &bytes[5..], None).unwrap();
    (id, serde_json::Value::try_from(value).unwrap())
}

#[test]
fn avro_outputs_carry_the_decisions_and_commands_the_file_engine_gives() {
    let broker = Broker::shared();
    let mut config = config(&broker.brokers, "avro-out", 1, Delivery::ExactlyOnce);
    config.avro.outputs = true;
    let lines = small_workload();
    let expected = support::file_outputs(&lines);
    let producer = TestProducer::new(&broker.brokers);
    producer.send(&config.topics.activity, &lines.iter().map(|l| Input::keyed_json(l)).collect::<Vec<_>>());
    producer.flush();

    let engine = Engine::start(&config, decide());
    let mut decisions = Collector::new(&broker.brokers, &config.topics.decisions);
    let mut control = Collector::new(&broker.brokers, &config.topics.control);
    let until = deadline(120);
    decisions.until_count(until, expected[0].len());
    control.until_count(until, expected[2].len());
    engine.stop();

    let fields = ["decision_id", "event_id", "time", "agent_id", "task_id", "decision", "score", "ruleset", "mode"];
    for (got, want) in decisions.payloads().iter().zip(&expected[0]) {
        let (id, got) = avro_json(got, vigil::decode::avro::DECISION_AVSC);
        assert_eq!(id, vigil::decode::avro::DECISION_ID);
        let want: serde_json::Value = serde_json::from_slice(want).unwrap();
        for field in fields {
            assert_eq!(got[field], want[field], "{field} of {}", want["event_id"]);
        }
        assert_eq!(got["reasons"].as_array().map(Vec::len), want["reasons"].as_array().map(Vec::len));
    }
    for (got, want) in control.payloads().iter().zip(&expected[2]) {
        let (id, got) = avro_json(got, vigil::decode::avro::CONTROL_COMMAND_AVSC);
        assert_eq!(id, vigil::decode::avro::CONTROL_COMMAND_ID);
        let want: serde_json::Value = serde_json::from_slice(want).unwrap();
        for field in ["command_id", "command", "agent_id", "credential_ids", "reason"] {
            assert_eq!(got[field], want[field], "{field} of command {}", want["command_id"]);
        }
    }
}
