//! Crash loop: `vigil run` is killed with SIGKILL at random moments while a
//! gateway keeps streaming, and started again each time. What
//! `read_committed` subscribers see at the end is byte for byte what an
//! uninterrupted run gives: nothing lost, nothing twice, and the rules that
//! read earlier events (the exfiltration window, velocity, new targets)
//! fire at the same events, because each restart rebuilds the state from
//! the local store and the changelog before it decides anything.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../engine/tests/support/mod.rs"]
mod support;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use support::{config, decisions_for, expected, keyed_workload, same, send, Broker, Subscribers, TestProducer};
use vigil::config::{Delivery, Span};
use vigil::workload::WorkloadSpec;

const KILLS: usize = 5;

fn start(config_file: &std::path::Path, log: &std::path::Path) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["run", "--config"])
        .arg(config_file)
        .env("RUST_LOG", "warn,vigil=info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// A small xorshift generator: the moments of the kills, from a seed the
/// test prints so a failing run can be repeated.
struct Moments(u64);

impl Moments {
    fn next_millis(&mut self, from: u64, to: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        from + self.0 % (to - from)
    }
}

#[test]
fn killed_five_times_mid_stream_the_outputs_are_those_of_an_uninterrupted_run() {
    let broker = Broker::shared();
    let mut config = config(&broker.brokers, "crash", 2, Delivery::ExactlyOnce);
    let dir = tempfile::tempdir().unwrap();
    config.checkpoint.dir = Some(dir.path().join("state"));
    config.checkpoint.interval = Span::millis(1000);
    config.instance_id = Some("crash".into());
    let config_file = dir.path().join("vigil.toml");
    std::fs::write(&config_file, config.to_masked_toml()).unwrap();
    let log = dir.path().join("vigil.log");

    let lines = keyed_workload(&WorkloadSpec { tenants: 2, agents_per_tenant: 12, tasks_per_agent: 3, actions_per_task: 30, ..WorkloadSpec::default() });
    let want = expected(&lines);
    let stateful = String::from_utf8_lossy(&want[0].concat()).matches("\"rule\":\"exfiltration_chain\"").count();
    assert!(stateful > 0, "the workload exercises a window rule");

    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    eprintln!("crash loop: seed {seed}, {} input records", lines.len());
    let mut moments = Moments(seed);
    let producer = TestProducer::new(&broker.brokers);
    let mut subscribers = Subscribers::new(&config);
    let streaming = AtomicBool::new(true);
    let mut engine = start(&config_file, &log);
    std::thread::scope(|scope| {
        // The gateway: a steady stream for as long as the kills go on.
        scope.spawn(|| {
            let chunks: Vec<&[String]> = lines.chunks(20).collect();
            let pace = Duration::from_millis(60_000 / chunks.len() as u64);
            for chunk in chunks {
                send(&producer, &config, chunk);
                std::thread::sleep(pace);
            }
            streaming.store(false, Ordering::Relaxed);
        });
        for kill in 1..=KILLS {
            let wait = Duration::from_millis(moments.next_millis(2_000, 9_000));
            std::thread::sleep(wait);
            engine.kill().unwrap();
            engine.wait().unwrap();
            eprintln!("crash loop: kill {kill} after {wait:?} (stream still flowing: {})", streaming.load(Ordering::Relaxed));
            engine = start(&config_file, &log);
        }
    });
    subscribers.decisions_until(decisions_for(&lines));
    Command::new("kill").args(["-TERM", &engine.id().to_string()]).status().unwrap();
    let status = engine.wait().unwrap();
    assert!(status.success(), "a SIGTERM stops the engine cleanly: {status}");
    same(subscribers.sorted(), want);
}
