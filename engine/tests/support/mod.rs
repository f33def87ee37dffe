//! Helpers for the Kafka integration tests: a real broker (started with
//! `scripts/kafka.sh` unless `VIGIL_TEST_BROKERS` names one), the engine
//! on a thread, a producer, and read_committed collectors.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use vigil::config::{Delivery, KafkaConfig, Topics};
use vigil::kafka::{self, KafkaEngineError, Work, WorkerReport};
use vigil::rules::RulesetSource;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn script() -> PathBuf {
    repo_root().join("scripts/kafka.sh")
}

/// A broker: one this test binary started (stopped when dropped, or at
/// exit for the shared one), or the one `VIGIL_TEST_BROKERS` names.
pub struct Broker {
    pub brokers: String,
    /// The SASL_PLAINTEXT listener (users `vigil`/`vigil-secret` and
    /// `admin`/`admin-secret`, PLAIN and SCRAM), on the shared broker.
    pub sasl_brokers: Option<String>,
    dir: Option<PathBuf>,
    /// Closed when the test process exits, however it exits: the watchdog
    /// reading it then stops the broker.
    _watchdog: Mutex<Option<ChildStdin>>,
}

fn start_script(args: &[&str]) -> BTreeMap<String, String> {
    // A broker can fail to come up on a loaded machine (its controller
    // registration times out); a second attempt on the same dir then works,
    // once whatever the first attempt left running is gone.
    for attempt in 1..=3 {
        let output = Command::new(script())
            .arg("start")
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/kafka.sh start");
        if output.status.success() {
            return String::from_utf8_lossy(&output.stdout)
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.trim_matches('\'').to_owned()))
                .collect();
        }
        eprintln!("scripts/kafka.sh start failed (attempt {attempt})");
        if let Some(dir) = args.iter().position(|a| *a == "--dir").and_then(|i| args.get(i + 1)) {
            let _ = Command::new(script()).args(["kill", "--dir", dir]).status();
        }
    }
    panic!("scripts/kafka.sh start failed three times");
}

impl Broker {
    /// One broker for the whole test binary.
    pub fn shared() -> &'static Broker {
        static SHARED: OnceLock<Broker> = OnceLock::new();
        SHARED.get_or_init(|| match std::env::var("VIGIL_TEST_BROKERS") {
            Ok(brokers) if !brokers.trim().is_empty() => Broker {
                brokers,
                sasl_brokers: std::env::var("VIGIL_TEST_SASL_BROKERS").ok().filter(|b| !b.trim().is_empty()),
                dir: None,
                _watchdog: Mutex::new(None),
            },
            _ => {
                let env = start_script(&["--sasl"]);
                let dir = PathBuf::from(&env["KAFKA_DIR"]);
                // A static is never dropped: stop the broker when the
                // process ends instead.
                let watchdog = spawn_watchdog(&dir);
                Broker {
                    brokers: env["KAFKA_BROKERS"].clone(),
                    sasl_brokers: env.get("KAFKA_SASL_BROKERS").cloned(),
                    dir: Some(dir),
                    _watchdog: Mutex::new(Some(watchdog)),
                }
            }
        })
    }

    /// A broker of its own, for tests that stop and restart it.
    pub fn start_new() -> Broker {
        let env = start_script(&[]);
        Broker {
            brokers: env["KAFKA_BROKERS"].clone(),
            sasl_brokers: None,
            dir: Some(PathBuf::from(&env["KAFKA_DIR"])),
            _watchdog: Mutex::new(None),
        }
    }

    /// Stops the broker gracefully (SIGTERM); its data and port stay.
    pub fn stop(&self) {
        let dir = self.dir.as_ref().expect("only an owned broker can be stopped");
        let status = Command::new(script()).args(["stop", "--dir"]).arg(dir).status().unwrap();
        assert!(status.success());
    }

    /// Kills the broker (SIGKILL), as a crash would.
    pub fn kill(&self) {
        let dir = self.dir.as_ref().expect("only an owned broker can be killed");
        let status = Command::new(script()).args(["kill", "--dir"]).arg(dir).status().unwrap();
        assert!(status.success());
    }

    /// Starts a stopped broker again on the same data and port.
    pub fn restart(&self) {
        let dir = self.dir.as_ref().expect("only an owned broker can be restarted");
        start_script(&["--dir", dir.to_str().unwrap()]);
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = Command::new(script()).args(["stop", "--purge", "--dir"]).arg(dir).status();
        }
    }
}

// The watchdog must outlive this process, so it is never waited for.
#[allow(clippy::zombie_processes)]
fn spawn_watchdog(dir: &Path) -> ChildStdin {
    let mut child: Child = Command::new("sh")
        .arg("-c")
        .arg("read _ignored; exec \"$0\" stop --purge --dir \"$1\" 2>/dev/null")
        .arg(script())
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the broker watchdog");
    child.stdin.take().unwrap()
}

/// Logs go to the test's captured output, shown only when it fails: the
/// engine's own account of what went wrong. `RUST_LOG` overrides the level.
pub fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,vigil=info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}

/// A name no other test (or earlier run) uses.
pub fn unique(name: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{name}-{}-{}-{nanos}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// A configuration with topics and group of its own, created with
/// `partitions` partitions each.
pub fn config(brokers: &str, name: &str, partitions: i32, delivery: Delivery) -> KafkaConfig {
    init_logs();
    let prefix = unique(name);
    let topics = Topics::prefixed(&prefix);
    let mut config = KafkaConfig {
        brokers: brokers.to_owned(),
        group_id: format!("{prefix}-group"),
        delivery,
        topics,
        ..KafkaConfig::default()
    };
    config.create_topics.partitions = partitions;
    config.create_topics.at_startup = false;
    // Faster group joins on a test broker.
    config.consumer_properties.insert("session.timeout.ms".into(), "10000".into());
    config.consumer_properties.insert("heartbeat.interval.ms".into(), "1000".into());
    kafka::create_topics(&config).unwrap();
    config
}

pub fn decide() -> Work {
    Work::decide(RulesetSource::shipped().unwrap())
}

/// The engine on its own thread until [`Engine::stop`].
pub struct Engine {
    shutdown: Arc<AtomicBool>,
    handle: Option<JoinHandle<Result<Vec<WorkerReport>, KafkaEngineError>>>,
    pub metrics: Arc<vigil::metrics::Metrics>,
}

impl Engine {
    pub fn start(config: &KafkaConfig, work: Work) -> Engine {
        let shutdown = Arc::new(AtomicBool::new(false));
        let metrics = Arc::new(vigil::metrics::Metrics::new());
        let (config, stop, watched) = (config.clone(), Arc::clone(&shutdown), Arc::clone(&metrics));
        let handle = std::thread::spawn(move || kafka::run_with_metrics(&config, &work, stop, &watched));
        Engine { shutdown, handle: Some(handle), metrics }
    }

    /// Partitions the workers hold and decide, once every worker settled.
    pub fn assigned(&self) -> Option<usize> {
        let mut total = 0;
        for phase in self.metrics.phases() {
            match phase {
                vigil::metrics::Phase::Assigned(n) => total += n,
                _ => return None,
            }
        }
        Some(total)
    }


    pub fn stop(mut self) -> Vec<WorkerReport> {
        self.shutdown.store(true, Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap().unwrap()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// One record to produce.
#[derive(Debug, Clone, Default)]
pub struct Input {
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Input {
    pub fn new(payload: impl Into<Vec<u8>>) -> Input {
        Input { payload: payload.into(), ..Input::default() }
    }

    /// Keyed by the record's `agent_id` when it has one, as a gateway would.
    pub fn keyed_json(line: &str) -> Input {
        let key = serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v.get("agent_id").and_then(|a| a.as_str()).map(|a| a.as_bytes().to_vec()));
        Input { key, payload: line.as_bytes().to_vec(), headers: Vec::new() }
    }

    pub fn header(mut self, key: &str, value: &str) -> Input {
        self.headers.push((key.to_owned(), value.as_bytes().to_vec()));
        self
    }
}

pub struct TestProducer {
    producer: ThreadedProducer<DefaultProducerContext>,
}

impl TestProducer {
    pub fn new(brokers: &str) -> TestProducer {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("linger.ms", "2")
            .create()
            .unwrap();
        TestProducer { producer }
    }

    /// Queues `inputs` in order (idempotence keeps the order per partition).
    pub fn send(&self, topic: &str, inputs: &[Input]) {
        for input in inputs {
            let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).payload(&input.payload[..]);
            if let Some(key) = &input.key {
                record = record.key(&key[..]);
            }
            if !input.headers.is_empty() {
                let mut headers = OwnedHeaders::new();
                for (key, value) in &input.headers {
                    headers = headers.insert(Header { key, value: Some(&value[..]) });
                }
                record = record.headers(headers);
            }
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        self.producer.poll(Duration::from_millis(10));
                    }
                    Err((e, _)) => panic!("produce: {e}"),
                }
            }
        }
    }

    pub fn flush(&self) {
        self.producer.flush(Duration::from_secs(60)).unwrap();
    }
}

/// One record read back from an output topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Output {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_ref())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).unwrap()
    }
}

/// A read_committed reader of one topic, from its beginning.
pub struct Collector {
    consumer: BaseConsumer,
    topic: String,
    partitions: usize,
    pub records: Vec<Output>,
}

impl Collector {
    pub fn new(brokers: &str, topic: &str) -> Collector {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", unique("collector"))
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .create()
            .unwrap();
        // A topic created a moment ago can still be unknown to the broker
        // that answers: ask again until it lists the partitions, within 10 s.
        let deadline = Instant::now() + Duration::from_secs(10);
        let partitions: Vec<i32> = loop {
            let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
            let partitions: Vec<i32> = metadata.topics()[0].partitions().iter().map(|p| p.id()).collect();
            if !partitions.is_empty() || Instant::now() > deadline {
                break partitions;
            }
        };
        assert!(!partitions.is_empty(), "topic {topic} has no partitions");
        let mut list = TopicPartitionList::new();
        for p in &partitions {
            list.add_partition_offset(topic, *p, Offset::Beginning).unwrap();
        }
        consumer.assign(&list).unwrap();
        Collector { consumer, topic: topic.to_owned(), partitions: partitions.len(), records: Vec::new() }
    }

    /// Reads until `done` holds for what was read, or panics at `deadline`.
    pub fn until(&mut self, deadline: Instant, done: impl Fn(&[Output]) -> bool) {
        while !done(&self.records) {
            assert!(
                Instant::now() < deadline,
                "{}: gave up waiting after {} records",
                self.topic,
                self.records.len()
            );
            self.poll(Duration::from_millis(100));
        }
    }

    pub fn until_count(&mut self, deadline: Instant, count: usize) {
        self.until(deadline, |r| r.len() >= count);
    }

    /// Reads until every partition reported its end (only meaningful once
    /// nothing writes to the topic any more). An end reported before the
    /// partition's current high watermark is stale (it was queued when the
    /// topic was still empty) and does not count.
    pub fn drain(&mut self, deadline: Instant) {
        let mut ends = std::collections::BTreeMap::new();
        for p in 0..self.partitions as i32 {
            // Right after a broker restart the client may not know the
            // partition yet: ask again until it does.
            let high = loop {
                match self.consumer.fetch_watermarks(&self.topic, p, Duration::from_secs(10)) {
                    Ok((low, high)) => break if low >= high { 0 } else { high },
                    Err(e) => {
                        assert!(Instant::now() < deadline, "{}: no watermarks: {e}", self.topic);
                        self.poll(Duration::from_millis(100));
                    }
                }
            };
            ends.insert(p, high);
        }
        // An empty partition has nothing to wait for.
        let mut at_end: std::collections::BTreeSet<i32> = ends.iter().filter(|(_, high)| **high == 0).map(|(p, _)| *p).collect();
        while at_end.len() < self.partitions {
            if Instant::now() >= deadline {
                let position = self.consumer.position().ok();
                let positions: Vec<_> = (0..self.partitions as i32)
                    .map(|p| (p, position.as_ref().and_then(|l| l.find_partition(&self.topic, p)).map(|e| e.offset())))
                    .collect();
                panic!("{}: never reached the end: ends {ends:?}, at end {at_end:?}, positions {positions:?}", self.topic);
            }
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    at_end.remove(&m.partition());
                    push(&mut self.records, &m);
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    let position = self.consumer.position().unwrap();
                    let offset = position.find_partition(&self.topic, p).and_then(|e| e.offset().to_raw());
                    if offset.unwrap_or(0) >= ends.get(&p).copied().unwrap_or(0) {
                        at_end.insert(p);
                    }
                }
                Some(Err(e)) => eprintln!("collector {}: {e}", self.topic),
                // An end is reported once: one reached before draining
                // began shows only in the position.
                None => {
                    let position = self.consumer.position().unwrap();
                    for (p, high) in &ends {
                        let offset = position.find_partition(&self.topic, *p).and_then(|e| e.offset().to_raw());
                        if offset.is_some_and(|o| o >= *high) {
                            at_end.insert(*p);
                        }
                    }
                }
            }
        }
    }

    fn poll(&mut self, timeout: Duration) {
        match self.consumer.poll(timeout) {
            Some(Ok(m)) => push(&mut self.records, &m),
            Some(Err(KafkaError::PartitionEOF(_))) | None => {}
            Some(Err(e)) => eprintln!("collector {}: {e}", self.topic),
        }
    }

    pub fn payloads(&self) -> Vec<Vec<u8>> {
        self.records.iter().map(|r| r.payload.clone()).collect()
    }
}

fn push(records: &mut Vec<Output>, m: &rdkafka::message::BorrowedMessage<'_>) {
    {
        let headers = m
            .headers()
            .map(|h| h.iter().map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec))).collect())
            .unwrap_or_default();
        records.push(Output {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().unwrap_or_default().to_vec(),
            headers,
        });
    }
}

pub fn deadline(seconds: u64) -> Instant {
    Instant::now() + Duration::from_secs(seconds)
}

/// The `event_id`s of decision records, sorted (a multiset).
pub fn event_ids(decisions: &[Output]) -> Vec<String> {
    let mut ids: Vec<String> =
        decisions.iter().map(|d| d.json()["event_id"].as_str().unwrap_or_default().to_owned()).collect();
    ids.sort();
    ids
}

pub fn write_lines(path: &Path, lines: &[String]) {
    let mut file = std::fs::File::create(path).unwrap();
    for line in lines {
        writeln!(file, "{line}").unwrap();
    }
}

/// Runs the file engine (`vigil run --input`) on `lines` with `rules`; its
/// output files are in the returned folder.
fn run_file_engine(lines: &[String], rules: RulesetSource) -> tempfile::TempDir {
    use vigil::pipeline::{self, Pipeline};
    use vigil::rules::RuleHost;
    use vigil::sink::jsonl::JsonlSink;
    use vigil::source::file::JsonlSource;
    use vigil::state::StateConfig;

    let dir = tempfile::tempdir().unwrap();
    let mut pipeline = Pipeline::new(RuleHost::compile(rules).unwrap(), StateConfig::default());
    let text = lines.join("\n").into_bytes();
    let mut source = JsonlSource::from_reader("input", Box::new(std::io::Cursor::new(text)));
    let mut sink = JsonlSink::create(dir.path()).unwrap();
    pipeline::run(&mut source, &mut pipeline, &mut sink, &std::sync::atomic::AtomicBool::new(false)).unwrap();
    dir
}

fn lines_of(path: &Path) -> Vec<Vec<u8>> {
    let text = std::fs::read(path).unwrap();
    text.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec).collect()
}

/// What `vigil run --input` writes to `file` (`decisions.jsonl`,
/// `control.jsonl`, …) for `lines`, one entry per line: the file engine the
/// Kafka engine must agree with.
pub fn file_output(lines: &[String], file: &str) -> Vec<Vec<u8>> {
    lines_of(&run_file_engine(lines, RulesetSource::shipped().unwrap()).path().join(file))
}

/// Every output file of `vigil run --input` for `lines`, in the order of
/// [`vigil::sink::jsonl::FILES`].
pub fn file_outputs(lines: &[String]) -> Vec<Vec<Vec<u8>>> {
    file_outputs_with(lines, RulesetSource::shipped().unwrap())
}

/// [`file_outputs`] under `rules`.
pub fn file_outputs_with(lines: &[String], rules: RulesetSource) -> Vec<Vec<Vec<u8>>> {
    let dir = run_file_engine(lines, rules);
    vigil::sink::jsonl::FILES.iter().map(|name| lines_of(&dir.path().join(name))).collect()
}

/// A fresh signing key, written where `config.signing.key` now points; the
/// folder lives as long as the returned guard.
pub fn sign_with_new_key(config: &mut KafkaConfig) -> (tempfile::TempDir, vigil::sign::KeyRing) {
    let dir = tempfile::tempdir().unwrap();
    let keys = vigil::sign::KeyRing::generate();
    let key_file = dir.path().join("signing-key.pem");
    std::fs::write(&key_file, keys.to_pkcs8_pem().unwrap().as_bytes()).unwrap();
    config.signing.key = Some(key_file);
    (dir, keys)
}

/// A rule for tests of the state: it fires on every event with a score of 1
/// (a reason is only kept with a score), its message the agent's count of
/// actions in the last hour. A state short of an event, or counting one
/// twice, shows in every decision after it.
const TALLY_RULE: &str = r#"// id: tally
// title: The agent's actions in the last hour
// severity: low
finding(1, `${agent.count("1h")} actions in the last hour`)
"#;

/// The shipped rules and [`TALLY_RULE`], in a folder under `dir`.
pub fn rules_with_tally(dir: &std::path::Path) -> std::path::PathBuf {
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    for entry in std::fs::read_dir(repo_root().join("rules")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, rules.join(path.file_name().unwrap())).unwrap();
        }
    }
    std::fs::write(rules.join("tally.rhai"), TALLY_RULE).unwrap();
    rules
}

/// Decisions, alerts and control commands, as subscribers read them.
pub struct Subscribers(Vec<Collector>);

impl Subscribers {
    pub fn new(config: &KafkaConfig) -> Subscribers {
        let t = &config.topics;
        Subscribers([&t.decisions, &t.alerts, &t.control].iter().map(|topic| Collector::new(&config.brokers, topic)).collect())
    }

    pub fn decisions_until(&mut self, count: usize) {
        self.0[0].until_count(deadline(180), count);
    }

    /// Everything, sorted: partitions interleave differently from run to run.
    pub fn sorted(&mut self) -> Vec<Vec<Vec<u8>>> {
        self.0
            .iter_mut()
            .map(|c| {
                c.drain(deadline(60));
                let mut payloads = c.payloads();
                payloads.sort();
                payloads
            })
            .collect()
    }
}

/// What the file engine writes for `lines`, sorted like [`Subscribers::sorted`].
pub fn expected(lines: &[String]) -> Vec<Vec<Vec<u8>>> {
    expected_with(lines, RulesetSource::shipped().unwrap())
}

/// [`expected`] under `rules`.
pub fn expected_with(lines: &[String], rules: RulesetSource) -> Vec<Vec<Vec<u8>>> {
    file_outputs_with(lines, rules)
        .into_iter()
        .take(3)
        .map(|mut file| {
            file.sort();
            file
        })
        .collect()
}

/// Equal, file by file; otherwise the first line that differs, as text.
pub fn same(got: Vec<Vec<Vec<u8>>>, want: Vec<Vec<Vec<u8>>>) {
    for (i, (got, want)) in got.iter().zip(&want).enumerate() {
        let file = vigil::sink::jsonl::FILES[i];
        if let Some((g, w)) = got.iter().zip(want).find(|(g, w)| g != w) {
            panic!("{file}: first difference\n  got:  {}\n  want: {}", String::from_utf8_lossy(g), String::from_utf8_lossy(w));
        }
        assert_eq!(got.len(), want.len(), "{file}: as many records as an uninterrupted run");
    }
}

pub fn decisions_for(lines: &[String]) -> usize {
    file_output(lines, "decisions.jsonl").len()
}

/// The demo workload, without the signals that name no agent (a leaked
/// credential, threat intel): keyed by nothing, they land on any partition,
/// and their order against the agents' events is then up to the broker.
pub fn keyed_workload(spec: &vigil::workload::WorkloadSpec) -> Vec<String> {
    let mut lines = vigil::workload::generate(spec);
    lines.retain(|line| Input::keyed_json(line).key.is_some() || !line.contains("\"signal_id\""));
    lines
}

pub fn send(producer: &TestProducer, config: &KafkaConfig, lines: &[String]) {
    producer.send(&config.topics.activity, &lines.iter().map(|l| Input::keyed_json(l)).collect::<Vec<_>>());
    producer.flush();
}
