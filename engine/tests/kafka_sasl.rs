//! The engine on a SASL-authenticated listener: with SCRAM and with PLAIN
//! credentials it decides as on a plain one; with a wrong password it
//! decides nothing and says why.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::{config, decide, deadline, Broker, Collector, Engine, Input, TestProducer};
use vigil::config::{Delivery, KafkaConfig};
use vigil::workload::{generate, WorkloadSpec};

/// `config` pointed at the SASL listener with `mechanism` and `password`.
fn over_sasl(broker: &Broker, mut config: KafkaConfig, mechanism: &str, password: &str) -> KafkaConfig {
    config.brokers = broker
        .sasl_brokers
        .clone()
        .expect("the test broker has no SASL listener: unset VIGIL_TEST_BROKERS, or set VIGIL_TEST_SASL_BROKERS too");
    for (key, value) in [
        ("security.protocol", "SASL_PLAINTEXT"),
        ("sasl.mechanism", mechanism),
        ("sasl.username", "vigil"),
        ("sasl.password", password),
    ] {
        config.properties.insert(key.into(), value.into());
    }
    config
}

fn lines() -> Vec<String> {
    generate(&WorkloadSpec { tenants: 1, agents_per_tenant: 2, tasks_per_agent: 1, actions_per_task: 5, attacks: false, ..WorkloadSpec::default() })
}

#[test]
fn scram_and_plain_credentials_decide_as_on_a_plain_listener() {
    let broker = Broker::shared();
    for mechanism in ["SCRAM-SHA-256", "PLAIN"] {
        let plain = config(&broker.brokers, &format!("sasl-{}", mechanism.to_lowercase()), 1, Delivery::ExactlyOnce);
        let config = over_sasl(broker, plain, mechanism, "vigil-secret");
        let lines = lines();
        let producer = TestProducer::new(&broker.brokers);
        producer.send(&config.topics.activity, &lines.iter().map(|l| Input::keyed_json(l)).collect::<Vec<_>>());
        producer.flush();

        let engine = Engine::start(&config, decide());
        let mut decisions = Collector::new(&broker.brokers, &config.topics.decisions);
        decisions.until_count(deadline(120), lines.len());
        let reports = engine.stop();
        assert_eq!(vigil::kafka::total(&reports).events as usize, lines.len(), "{mechanism}");
        assert!(reports.iter().all(|r| r.commits > 0), "{mechanism}: nothing committed over SASL");
    }
}

#[test]
fn a_wrong_password_is_an_authentication_error_and_never_ready() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let broker = Broker::shared();
    let plain = config(&broker.brokers, "sasl-wrong", 1, Delivery::ExactlyOnce);
    let config = over_sasl(broker, plain, "SCRAM-SHA-256", "not-the-password");
    let metrics = Arc::new(vigil::metrics::Metrics::new());
    let shutdown = Arc::new(AtomicBool::new(false));
    let engine = {
        let (config, metrics, shutdown) = (config.clone(), Arc::clone(&metrics), Arc::clone(&shutdown));
        std::thread::spawn(move || vigil::kafka::run_with_metrics(&config, &decide(), shutdown, &metrics))
    };
    // Readiness names the cause as soon as a worker has tried to connect.
    let until = deadline(90);
    let reason = loop {
        match metrics.readiness() {
            Err(reason) if reason.to_ascii_lowercase().contains("authentication") => break reason,
            Ok(()) => panic!("ready with a wrong password"),
            Err(_) => {
                assert!(std::time::Instant::now() < until, "no authentication error reported: {:?}", metrics.readiness());
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    };
    assert!(reason.contains("SASL") || reason.contains("uthentication"), "{reason}");
    shutdown.store(true, Ordering::Relaxed);
    let reports = engine.join().unwrap().unwrap_or_default();
    assert_eq!(vigil::kafka::total(&reports).records, 0, "records decided without authenticating");
}
