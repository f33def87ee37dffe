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
