//! `/metrics` and `/readyz` of the engine on a real Kafka broker: the
//! counters equal what a read_committed subscriber reads from the output
//! topics, and readiness follows the connection and the group assignment.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use support::{config, deadline, decide, Broker, Collector, Input, TestProducer};
use vigil::config::{Delivery, KafkaConfig};
use vigil::http::HttpServer;
use vigil::kafka::{self, KafkaEngineError, WorkerReport};
use vigil::metrics::Metrics;
use vigil::workload::{generate, WorkloadSpec};

/// Status and body of `GET path`.
fn get(address: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(address).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: vigil\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

/// The value of one series in a scrape (`name{labels}` exactly as written).
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Polls `path` until `done` holds for its answer, or panics at `until`.
fn poll_until(address: SocketAddr, path: &str, until: Instant, done: impl Fn(u16, &str) -> bool) -> (u16, String) {
    loop {
        let (status, body) = get(address, path);
        if done(status, &body) {
            return (status, body);
        }
        assert!(Instant::now() < until, "{path} never got there; last answer {status}:\n{body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The engine on its own thread, registered in `metrics`.
struct ObservedEngine {
    shutdown: Arc<AtomicBool>,
    handle: Option<JoinHandle<Result<Vec<WorkerReport>, KafkaEngineError>>>,
}

impl ObservedEngine {
    fn start(config: &KafkaConfig, metrics: &Arc<Metrics>) -> ObservedEngine {
        let shutdown = Arc::new(AtomicBool::new(false));
        let (config, stop, metrics) = (config.clone(), Arc::clone(&shutdown), Arc::clone(metrics));
        let work = decide();
        let handle = std::thread::spawn(move || kafka::run_with_metrics(&config, &work, stop, &metrics));
        ObservedEngine { shutdown, handle: Some(handle) }
    }

    fn stop(mut self) -> Result<Vec<WorkerReport>, KafkaEngineError> {
        self.shutdown.store(true, Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap()
    }
}

impl Drop for ObservedEngine {
    fn drop(&mut self) {
        self.shutdown.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// Counts of a JSON field's values over records.
fn count_by(records: &[support::Output], field: &str) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for record in records {
        let value = record.json()[field].as_str().unwrap().to_owned();
        *counts.entry(value).or_default() += 1;
    }
    counts
}

#[test]
fn metrics_count_exactly_what_the_output_topics_hold() {
    let broker = Broker::shared();
    // Three workers on two partitions: one of them stands by with none.
    let mut config = config(&broker.brokers, "metrics", 2, Delivery::ExactlyOnce);
    config.workers = 3;
    let metrics = Arc::new(Metrics::new());
    let server = HttpServer::bind("127.0.0.1:0", Arc::clone(&metrics)).unwrap();
    let address = server.local_addr();

    assert_eq!(get(address, "/livez").0, 200);
    assert_eq!(get(address, "/readyz"), (503, "starting\n".to_owned()));

    let engine = ObservedEngine::start(&config, &metrics);
    let until = deadline(120);
    poll_until(address, "/readyz", until, |status, _| status == 200);

    let lines = generate(&WorkloadSpec {
        tenants: 2,
        agents_per_tenant: 3,
        tasks_per_agent: 2,
        actions_per_task: 6,
        ..WorkloadSpec::default()
    });
    let producer = TestProducer::new(&broker.brokers);
    producer.send(&config.topics.activity, &lines.iter().map(|l| Input::keyed_json(l)).collect::<Vec<_>>());
    producer.flush();

    // Every record is committed once the committed record count says so.
    let records = lines.len() as f64;
    let (_, scrape) =
        poll_until(address, "/metrics", until, |_, body| sample(body, "vigil_records_total") == Some(records));

    let mut decisions = Collector::new(&broker.brokers, &config.topics.decisions);
    let mut control = Collector::new(&broker.brokers, &config.topics.control);
    let mut dlq = Collector::new(&broker.brokers, &config.topics.dlq);
    for collector in [&mut decisions, &mut control, &mut dlq] {
        collector.drain(until);
    }
    let by_decision = count_by(&decisions.records, "decision");
    assert!(by_decision.len() >= 2, "a workload with attacks has more than one kind of decision: {by_decision:?}");
    for verdict in ["allow", "step_up", "deny", "revoke"] {
        let read = by_decision.get(verdict).copied().unwrap_or(0) as f64;
        let series = format!("vigil_decisions_total{{decision=\"{verdict}\"}}");
        assert_eq!(sample(&scrape, &series), Some(read), "{series} against the decisions topic");
    }
    assert_eq!(sample(&scrape, "vigil_events_total"), Some(decisions.records.len() as f64));
    for (action, read) in count_by(&control.records, "command") {
        let series = format!("vigil_commands_total{{action=\"{action}\"}}");
        assert_eq!(sample(&scrape, &series), Some(read as f64), "{series} against the control topic");
    }
    let dead_letters: f64 = scrape
        .lines()
        .filter(|l| l.starts_with("vigil_dlq_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(dead_letters, dlq.records.len() as f64);
    assert!(dead_letters > 0.0, "the workload has malformed lines");

    // Every evaluation was timed; batches were committed and timed.
    let evaluations = sample(&scrape, "vigil_rule_eval_seconds_count").unwrap();
    assert!(evaluations >= decisions.records.len() as f64, "{evaluations} evaluations");
    assert!(sample(&scrape, "vigil_kafka_commit_seconds_count").unwrap() >= 1.0);
    let commits: f64 = (0..3).map(|w| sample(&scrape, &format!("vigil_kafka_commits_total{{worker=\"{w}\"}}")).unwrap()).sum();
    assert!(commits >= 1.0);

    // No series is labelled by an agent, task or event.
    for decision in &decisions.records {
        let json = decision.json();
        for field in ["agent_id", "event_id", "task_id"] {
            if let Some(id) = json[field].as_str() {
                assert!(!scrape.contains(&format!("\"{id}\"")), "{field} `{id}` appears in /metrics");
            }
        }
    }

    // Lag: each activity partition, read to its end.
    let lag = |p: i32| format!("vigil_kafka_consumer_lag{{topic=\"{}\",partition=\"{p}\"}}", config.topics.activity);
    poll_until(address, "/metrics", until, |_, body| (0..2).all(|p| sample(body, &lag(p)) == Some(0.0)));

    let reports = engine.stop().unwrap();
    assert_eq!(kafka::total(&reports).events as usize, decisions.records.len());
    let (status, body) = get(address, "/readyz");
    assert_eq!(status, 503);
    assert!(body.contains("stopped"), "{body}");
}

#[test]
fn not_ready_while_the_broker_is_unreachable() {
    let broker = Broker::shared();
    let mut config = config(&broker.brokers, "metrics-unreachable", 1, Delivery::AtLeastOnce);
    // Nothing listens on port 1.
    config.brokers = "127.0.0.1:1".into();
    let metrics = Arc::new(Metrics::new());
    let server = HttpServer::bind("127.0.0.1:0", Arc::clone(&metrics)).unwrap();
    let address = server.local_addr();
    let engine = ObservedEngine::start(&config, &metrics);

    let (status, body) = poll_until(address, "/readyz", deadline(60), |status, body| {
        assert_eq!(status, 503, "ready without a broker: {body}");
        body.contains("broker unreachable")
    });
    assert_eq!(status, 503);
    assert!(body.starts_with("worker 0: broker unreachable: "), "{body}");
    assert_eq!(get(address, "/livez").0, 200);
    let scrape = get(address, "/metrics").1;
    assert_eq!(sample(&scrape, "vigil_ready"), Some(0.0));
    engine.stop().unwrap();
}
