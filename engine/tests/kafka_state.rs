//! The state survives restarts and moves with its partitions: every change
//! goes to the changelog with the outputs it came with, and whoever is
//! assigned a partition rebuilds its state (from the local store, then the
//! changelog's tail) before deciding anything there. Each test compares
//! what `read_committed` subscribers see with an uninterrupted run of the
//! file engine over the same input: rules that read earlier events (the
//! exfiltration window, velocity, new targets) only agree if no state was
//! lost or counted twice.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::Path;

use support::{config, decide, deadline, decisions_for, expected, keyed_workload, same, send, Broker, Engine, Subscribers, TestProducer};
use vigil::config::{Delivery, KafkaConfig};
use vigil::kafka::{WorkerReport, STORE_FILE};
use vigil::workload::WorkloadSpec;

fn workload() -> Vec<String> {
    keyed_workload(&WorkloadSpec { tenants: 2, agents_per_tenant: 10, tasks_per_agent: 2, actions_per_task: 24, ..WorkloadSpec::default() })
}

fn instance(config: &KafkaConfig, id: &str) -> KafkaConfig {
    KafkaConfig { instance_id: Some(id.into()), ..config.clone() }
}

fn restored(reports: &[WorkerReport]) -> (u64, u64) {
    (reports.iter().map(|r| r.restored_from_store).sum(), reports.iter().map(|r| r.restored_from_changelog).sum())
}

#[test]
fn partitions_move_to_another_instance_with_their_state() {
    let broker = Broker::shared();
    let config = config(&broker.brokers, "handover", 4, Delivery::ExactlyOnce);
    let lines = workload();
    let (first, rest) = lines.split_at(lines.len() / 3);
    let (second, _) = rest.split_at(rest.len() / 2);
    let producer = TestProducer::new(&broker.brokers);
    let mut subscribers = Subscribers::new(&config);

    let a = Engine::start(&instance(&config, "a"), decide());
    send(&producer, &config, first);
    subscribers.decisions_until(decisions_for(first));

    // B joins: some of A's partitions move to B, which rebuilds them from
    // the changelog A wrote.
    let b = Engine::start(&instance(&config, "b"), decide());
    // Wait until the group settled with both holding some of the four.
    let settled = deadline(120);
    let (a_holds, b_holds) = loop {
        if let (Some(x), Some(y)) = (a.assigned(), b.assigned()) {
            if x > 0 && y > 0 && x + y == 4 {
                break (x, y);
            }
        }
        assert!(std::time::Instant::now() < settled, "A and B never shared the partitions");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    eprintln!("handover: A holds {a_holds} partitions, B {b_holds}");
    let upto_second = lines.len() / 3 + second.len();
    send(&producer, &config, second);
    subscribers.decisions_until(decisions_for(&lines[..upto_second]));

    // A leaves: B takes over the rest, with the state A left.
    let a_reports = a.stop();
    send(&producer, &config, &lines[upto_second..]);
    subscribers.decisions_until(decisions_for(&lines));
    let b_reports = b.stop();

    let (_, a_read) = restored(&a_reports);
    let (_, b_read) = restored(&b_reports);
    eprintln!("handover: A read {a_read} changelog records on assignment, B read {b_read}");
    assert!(b_read > 0, "B took over partitions with state and read their changelog");
    same(subscribers.sorted(), expected(&lines));
}

/// Runs `lines` in three legs, stopping and starting the engine between
/// them; `between` runs while it is down, with the store's folder.
fn three_legs(name: &str, between: impl Fn(&Path)) -> (Vec<WorkerReport>, Vec<WorkerReport>, std::path::PathBuf, String) {
    let broker = Broker::shared();
    let mut config = config(&broker.brokers, name, 2, Delivery::ExactlyOnce);
    let store = tempfile::tempdir().unwrap();
    config.checkpoint.dir = Some(store.path().to_path_buf());
    let lines = workload();
    let (first, rest) = lines.split_at(lines.len() / 2);
    let producer = TestProducer::new(&broker.brokers);
    let mut subscribers = Subscribers::new(&config);

    let engine = Engine::start(&config, decide());
    send(&producer, &config, first);
    subscribers.decisions_until(decisions_for(first));
    let before = engine.stop();
    assert!(store.path().join(STORE_FILE).exists(), "a checkpoint was written at shutdown");
    between(store.path());

    let engine = Engine::start(&config, decide());
    send(&producer, &config, rest);
    subscribers.decisions_until(decisions_for(&lines));
    let scrape = engine.metrics.render();
    let after = engine.stop();
    same(subscribers.sorted(), expected(&lines));
    (before, after, store.keep(), scrape)
}

#[test]
fn a_restart_resumes_from_the_local_store_and_the_changelog_tail() {
    let (_, after, dir, scrape) = three_legs("store-restart", |_| {});
    let (from_store, from_changelog) = restored(&after);
    eprintln!("restart: {from_store} entries from the store, {from_changelog} changelog records");
    assert!(from_store > 0, "the restart read its state from the local store");
    let metric = format!("vigil_state_restored_total{{source=\"store\"}} {from_store}\n");
    assert!(scrape.contains(&metric), "/metrics reports the restore: {scrape}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_garbled_store_is_refused_and_the_state_comes_from_the_changelog() {
    let (_, after, dir, _) = three_legs("store-garbled", |dir| {
        let path = dir.join(STORE_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let len = bytes.len();
        for b in &mut bytes[len / 4..len / 2] {
            *b ^= 0x5a;
        }
        std::fs::write(&path, &bytes[..len * 3 / 4]).unwrap();
    });
    let (from_store, from_changelog) = restored(&after);
    eprintln!("garbled store: {from_store} entries from the store, {from_changelog} changelog records");
    assert!(dir.join(format!("{STORE_FILE}.refused")).exists(), "the garbled store was moved aside");
    assert_eq!(from_store, 0, "nothing was read from the garbled store");
    assert!(from_changelog > 0, "the state came from the changelog");
    std::fs::remove_dir_all(dir).ok();
}
