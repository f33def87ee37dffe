//! Signed control commands on a real broker: with `[signing]`, every value
//! on the control topic is a JWS a subscriber verifies with the published
//! key set, and the CAEP topic carries the same commands as Security Event
//! Tokens. A tampered command, or one signed by another key, is refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;


use serde_json::Value;
use support::{config, decide, deadline, Broker, Collector, Engine, Input, TestProducer};
use vigil::config::Delivery;
use vigil::sign::{self, KeyRing};
use vigil::workload::{generate, WorkloadSpec};

/// The commands `vigil run --input` writes for `lines`.
fn file_commands(lines: &[String]) -> Vec<Value> {
    support::file_output(lines, "control.jsonl").iter().map(|l| serde_json::from_slice(l).unwrap()).collect()
}

#[test]
fn every_command_on_kafka_is_signed_and_offered_as_caep() {
    let broker = Broker::shared();
    let mut config = config(&broker.brokers, "signing", 1, Delivery::ExactlyOnce);
    let (_keys_dir, keys) = support::sign_with_new_key(&mut config);
    config.signing.caep_topic = Some(format!("{}.caep", config.group_id));
    vigil::kafka::create_topics(&config).unwrap();

    let lines = generate(&WorkloadSpec { tenants: 1, agents_per_tenant: 2, tasks_per_agent: 2, actions_per_task: 5, ..WorkloadSpec::default() });
    let expected = file_commands(&lines);
    assert!(!expected.is_empty(), "the workload's attacks cause commands");

    let producer = TestProducer::new(&broker.brokers);
    producer.send(&config.topics.activity, &lines.iter().map(|l| Input::keyed_json(l)).collect::<Vec<_>>());
    producer.flush();
    let engine = Engine::start(&config, decide());
    let mut control = Collector::new(&broker.brokers, &config.topics.control);
    let mut caep = Collector::new(&broker.brokers, config.signing.caep_topic.as_deref().unwrap());
    let until = deadline(120);
    control.until_count(until, expected.len());
    caep.until_count(until, expected.len());
    engine.stop();
    control.drain(until);
    caep.drain(until);

    // Native: each value verifies with the published keys and is exactly
    // the command the file engine wrote.
    let jwks = keys.jwks();
    let verified: Vec<Value> = control
        .records
        .iter()
        .map(|r| {
            let jws = std::str::from_utf8(&r.payload).unwrap();
            serde_json::to_value(sign::verify(jws, &jwks).unwrap()).unwrap()
        })
        .collect();
    assert_eq!(verified, expected);

    // CAEP: one token per command, `jti` the command id, `txn` its decision.
    assert_eq!(caep.records.len(), expected.len());
    for (record, command) in caep.records.iter().zip(&expected) {
        let claims = sign::verify_set(std::str::from_utf8(&record.payload).unwrap(), &jwks).unwrap();
        assert_eq!(claims["jti"], command["command_id"]);
        assert_eq!(claims["txn"], command["decision_id"]);
        assert_eq!(claims["events"].as_object().unwrap().len(), 1);
    }

    // A subscriber refuses a tampered command and one signed by another key.
    let jws = std::str::from_utf8(&control.records[0].payload).unwrap();
    let mut parts: Vec<String> = jws.split('.').map(str::to_owned).collect();
    let mut payload: Value = serde_json::from_slice(&base64_decode(&parts[1])).unwrap();
    payload["command"] = Value::from("release");
    parts[1] = base64_encode(payload.to_string().as_bytes());
    assert!(sign::verify(&parts.join("."), &jwks).is_err(), "a tampered command verifies");
    assert!(sign::verify(jws, &KeyRing::generate().jwks()).is_err(), "another key's set accepts the command");
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text).unwrap()
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
