//! The broker goes away in the middle of a stream and comes back: the
//! outputs a read_committed subscriber sees are complete, with no loss and
//! no duplicate. Then the engine is stopped and a new one (with no local
//! store) decides the rest of the stream from the state it rebuilds from
//! the changelog: what the outage made the first one write again, it wrote
//! in order. This test stops and restarts its broker, so it always
//! starts one of its own (even when `VIGIL_TEST_BROKERS` is set).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Mutex;
use std::time::Duration;

use support::{config, deadline, event_ids, Broker, Collector, Engine, Input, TestProducer};
use vigil::config::Delivery;
use vigil::kafka::Work;
use vigil::rules::RulesetSource;
use vigil::workload::{generate, WorkloadSpec};


#[derive(Clone, Copy, PartialEq, Eq)]
enum Outage {
    /// A crash (SIGKILL) and an immediate restart: the open transaction
    /// survives, and one being committed is completed by the restarted
    /// broker.
    Crash,
    /// A clean stop (SIGTERM) and restart: the open transaction survives.
    Stop,
    /// A crash (SIGKILL) that outlasts the transaction timeout: the open
    /// batch is aborted, and decided again from the last commit.
    KillPastTimeout,
}

#[test]
fn a_broker_restart_mid_stream_loses_and_repeats_nothing() {
    outage(Outage::Crash, Delivery::ExactlyOnce);
}

/// Ignored by default: a single broker stopped cleanly while a transaction
/// commits can leave that transaction hanging. Its controlled shutdown first
/// takes away the leadership of every partition (there is no other replica
/// to hand it to); the coordinator then finds no leader for the commit
/// markers, takes the partitions for deleted and completes the commit
/// without them. The outputs stay invisible to `read_committed` readers and
/// the committed offsets stay unstable until the hanging transaction is
/// aborted (`kafka-transactions.sh find-hanging`, then `abort`). A cluster
/// of several brokers moves the leadership first and is not affected. Run
/// it with `cargo test --test kafka_restart -- --ignored`.
#[test]
#[ignore = "a single broker's clean stop can leave a committing transaction hanging"]
fn a_clean_broker_stop_mid_stream_loses_and_repeats_nothing() {
    outage(Outage::Stop, Delivery::ExactlyOnce);
}

/// The broker stays down for longer than a transaction may live: the open
/// batch is aborted and decided again, with the same bytes.
#[test]
fn a_crash_longer_than_a_transaction_replays_the_open_batch_exactly() {
    outage(Outage::KillPastTimeout, Delivery::ExactlyOnce);
}

/// At least once, the outputs of the batch in flight and of the open one
/// time out while the broker is down: both batches are decided again from
/// the state before the first, so a decision made twice carries the same
/// bytes both times.
#[test]
fn at_least_once_a_crash_longer_than_a_delivery_timeout_decides_both_batches_again() {
    outage(Outage::KillPastTimeout, Delivery::AtLeastOnce);
}

/// Two brokers going down and up at once on a small machine make each
/// other's restarts slow: one outage at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn outage(kind: Outage, delivery: Delivery) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    support::init_logs();
    let broker = Broker::start_new();
    let mut config = config(&broker.brokers, "restart", 1, delivery);
    let mut pace = Duration::from_millis(10);
    if kind == Outage::KillPastTimeout {
        for key in ["transaction.timeout.ms", "message.timeout.ms"] {
            config.producer_properties.insert(key.into(), "3000".into());
        }
        // Long batches and a slower stream: the crash almost surely hits
        // a batch that is open, rather than one being committed.
        config.commit_interval = vigil::config::Span::millis(1000);
        pace = Duration::from_millis(50);
    }
    let lines = generate(&WorkloadSpec {
        tenants: 2,
        agents_per_tenant: 12,
        tasks_per_agent: 2,
        actions_per_task: 40,
        ..WorkloadSpec::default()
    });
    let rules_dir = tempfile::tempdir().unwrap();
    let rules = RulesetSource::load(&support::rules_with_tally(rules_dir.path())).unwrap();
    let expected = support::file_outputs_with(&lines, rules.clone()).swap_remove(0);
    let expected_ids = {
        let mut ids: Vec<String> = expected
            .iter()
            .map(|d| serde_json::from_slice::<serde_json::Value>(d).unwrap()["event_id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };

    // The first engine sees the outage in the first part of the stream;
    // the second decides the rest.
    let (first, rest) = lines.split_at(lines.len() * 7 / 10);
    let first_decisions = support::file_outputs_with(first, rules.clone())[0].len();
    let decided = |records: &[support::Output], count: usize| {
        let mut ids = event_ids(records);
        ids.dedup();
        ids.len() >= count
    };

    let engine = Engine::start(&config, Work::decide(rules.clone()));
    let producer = TestProducer::new(&broker.brokers);
    let mut decisions = Collector::new(&broker.brokers, &config.topics.decisions);
    let until = deadline(240);
    std::thread::scope(|scope| {
        // A steady stream, as from a gateway: it keeps producing while the
        // broker is away (its client queues) and catches up afterwards.
        scope.spawn(|| {
            for chunk in first.chunks(25) {
                producer.send(&config.topics.activity, &chunk.iter().map(|l| Input::keyed_json(l)).collect::<Vec<_>>());
                std::thread::sleep(pace);
            }
        });
        decisions.until_count(until, expected.len() / 10);
        match kind {
            Outage::Crash => broker.kill(),
            Outage::Stop => broker.stop(),
            Outage::KillPastTimeout => {
                broker.kill();
                // Down for longer than a transaction may live.
                std::thread::sleep(Duration::from_secs(4));
            }
        }
        broker.restart();
    });
    producer.flush();
    decisions.until(until, |records| decided(records, first_decisions));
    let mut reports = engine.stop();
    let engine = Engine::start(&config, Work::decide(rules));
    producer.send(&config.topics.activity, &rest.iter().map(|l| Input::keyed_json(l)).collect::<Vec<_>>());
    producer.flush();
    decisions.until(until, |records| decided(records, expected.len()));
    reports.extend(engine.stop());
    decisions.drain(until);
    let aborts: u64 = reports.iter().map(|r| r.aborts).sum();
    eprintln!(
        "outage test: {} decisions, {} commits, {} aborted batches, {} client rebuilds",
        decisions.records.len(),
        reports.iter().map(|r| r.commits).sum::<u64>(),
        reports.iter().map(|r| r.aborts).sum::<u64>(),
        reports.iter().map(|r| r.restarts).sum::<u64>()
    );

    if kind == Outage::KillPastTimeout && aborts == 0 {
        // Rare: the crash came while a batch was being committed; the
        // commit completed after the restart and nothing was replayed.
        eprintln!("note: the crash did not catch a batch open");
    }
    if delivery == Delivery::AtLeastOnce {
        let mut ids = event_ids(&decisions.records);
        ids.dedup();
        assert_eq!(ids, expected_ids, "every event decided at least once");
        let (mut seen, mut wanted) = (decisions.payloads(), expected.clone());
        seen.sort();
        seen.dedup();
        wanted.sort();
        assert_eq!(seen, wanted, "a decision made again has the bytes of an uninterrupted run");
        return;
    }
    assert_eq!(event_ids(&decisions.records), expected_ids, "every event decided exactly once");
    // Aborted batches were decided again from the state of the last
    // commit, so even the bytes are those of an uninterrupted run.
    assert_eq!(decisions.payloads(), expected);
}
