//! Replay of a Kafka topic range against the real broker: the range gives
//! the same diff and summary as the same records in a file, in the order the
//! replay merges partitions (event time, then partition, then offset); and
//! decisions published on a topic, as JSON or Avro, are a baseline as the
//! same decisions in a file are.
//!
//! The broker is the one `VIGIL_TEST_BROKERS` names, or one started here
//! through `scripts/kafka.sh` and stopped at the end.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use vigil::rules::RulesetSource;
use vigil::state::StateConfig;
use vigil::workload::{generate, WorkloadSpec};
use vigil_replay::{replay, Baseline, Bound, KafkaRange, ReplayConfig, ReplayInput, DIFF_FILE, SUMMARY_FILE};

const PARTITIONS: i32 = 3;

struct Broker {
    brokers: String,
    /// Set when this test started the broker: stopped on drop.
    dir: Option<PathBuf>,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/kafka.sh")
}

impl Broker {
    fn get() -> Broker {
        if let Ok(brokers) = std::env::var("VIGIL_TEST_BROKERS") {
            if !brokers.trim().is_empty() {
                return Broker { brokers, dir: None };
            }
        }
        let output =
            Command::new(script()).arg("start").stdin(Stdio::null()).stderr(Stdio::inherit()).output().unwrap();
        assert!(output.status.success(), "scripts/kafka.sh start failed");
        let text = String::from_utf8(output.stdout).unwrap();
        let value = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .map(|v| v.trim_matches('\'').to_owned())
                .unwrap_or_else(|| panic!("no {key} in {text}"))
        };
        Broker { brokers: value("KAFKA_BROKERS"), dir: Some(PathBuf::from(value("KAFKA_DIR"))) }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = Command::new(script()).args(["stop", "--purge", "--dir"]).arg(dir).status();
        }
    }
}

fn create_topic(brokers: &str, topic: &str) {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", brokers).create().unwrap();
    let new = NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1));
    let results = vigil::kafka::admin::block_on(admin.create_topics([&new], &AdminOptions::new())).unwrap();
    for result in results {
        result.unwrap();
    }
}

/// The partition a gateway keyed by agent would choose; records without an
/// agent go to partition 0.
fn partition_of(line: &str) -> i32 {
    let agent = serde_json::from_str::<serde_json::Value>(line)
        .ok()
        .and_then(|v| v.get("agent_id").and_then(|a| a.as_str()).map(str::to_owned));
    agent.map_or(0, |a| (a.bytes().fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b))) % PARTITIONS as u32) as i32)
}

/// The lines in the order the replay documents for a topic range: by the
/// time each carries, valid event or not (one without a readable time takes
/// the time of the record before it in its partition), then partition; each
/// partition in produce order.
fn merged_order(lines: &[String]) -> Vec<String> {
    let mut last = [i64::MIN; PARTITIONS as usize];
    let mut keyed: Vec<(i64, i32, &String)> = lines
        .iter()
        .map(|line| {
            let p = partition_of(line);
            let time = serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v.get("time").and_then(|t| t.as_str()).and_then(vigil::event::Timestamp::parse_rfc3339))
                .map_or(last[p as usize], |t| t.millis());
            last[p as usize] = time;
            (time, p, line)
        })
        .collect();
    keyed.sort_by_key(|(time, p, _)| (*time, *p));
    keyed.into_iter().map(|(_, _, l)| l.clone()).collect()
}

fn time_of(line: &str) -> Option<i64> {
    let value = serde_json::from_str::<serde_json::Value>(line).ok()?;
    vigil::event::Timestamp::parse_rfc3339(value.get("time")?.as_str()?).map(|t| t.millis())
}

/// An event that does not decode (its SPIFFE ID has an upper-case trust
/// domain) stamped an hour after the last record, in a partition whose last
/// record is not the latest: it sorts last by its own time, not at the time
/// of the record before it.
fn invalid_and_late(lines: &[String]) -> String {
    let latest = lines.iter().filter_map(|l| time_of(l).map(|t| (t, partition_of(l)))).max().unwrap();
    let agent = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("agent_id").and_then(|a| a.as_str()).map(str::to_owned))
        .find(|a| partition_of(&format!(r#"{{"agent_id":"{a}"}}"#)) != latest.1)
        .unwrap();
    let time = vigil::event::Timestamp(latest.0 + 3_600_000).to_rfc3339();
    format!(
        r#"{{"event_id":"late-invalid","time":"{time}","tenant":"acme","agent_id":"{agent}","workload_id":"spiffe://ACME.example/agents/{agent}","kind":"tool_call","tool":"docs.search"}}"#
    )
}

fn config(input: ReplayInput, out: &Path) -> ReplayConfig {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules");
    let baseline = RulesetSource::load(&shipped).unwrap();
    let mut texts: Vec<(String, String)> = baseline.rules.iter().map(|r| (r.file.clone(), r.text.clone())).collect();
    texts.push((
        "large_partner_post.rhai".into(),
        "// id: large_partner_post\n// kinds: network_egress\n\nif event.tool == \"http.post\" && event.bytes > 150000 { return finding(35); }\n()\n".into(),
    ));
    let ruleset_toml = std::fs::read_to_string(shipped.join("ruleset.toml")).unwrap();
    let candidate = RulesetSource::from_texts(&shipped, Some(&ruleset_toml), texts).unwrap();
    ReplayConfig {
        input,
        candidate,
        baseline: Baseline::Rules(baseline),
        out: out.to_path_buf(),
        workers: 2,
        state: StateConfig::default(),
        checkpoint: None,
        progress: false,
    }
}

fn summary(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(out.join(SUMMARY_FILE)).unwrap()).unwrap()
}

fn unique_topic(name: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{name}-{}-{nanos}", std::process::id())
}

/// Produces `lines` to `topic`, each to the partition of its agent, in order;
/// returns how many went to each partition.
fn produce(brokers: &str, topic: &str, lines: &[String]) -> [i64; PARTITIONS as usize] {
    let values: Vec<(i32, Vec<u8>)> = lines.iter().map(|l| (partition_of(l), l.as_bytes().to_vec())).collect();
    produce_values(brokers, topic, &values)
}

/// Produces each value to its partition, in order; returns how many went to
/// each partition.
fn produce_values(brokers: &str, topic: &str, values: &[(i32, Vec<u8>)]) -> [i64; PARTITIONS as usize] {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let mut per_partition = [0i64; PARTITIONS as usize];
    for (p, value) in values {
        per_partition[*p as usize] += 1;
        let mut record = BaseRecord::<[u8], [u8]>::to(topic).partition(*p).payload(value);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(60)).unwrap();
    per_partition
}

fn whole(brokers: &str, topic: &str) -> KafkaRange {
    KafkaRange {
        brokers: brokers.to_owned(),
        topics: vec![topic.to_owned()],
        from: Bound::Edge,
        to: Bound::Edge,
        properties: Default::default(),
        schema_registry: None,
    }
}

#[test]
fn a_topic_range_replays_like_the_same_records_in_a_file() {
    let broker = Broker::get();
    let topic = unique_topic("replay-range");
    create_topic(&broker.brokers, &topic);
    let spec = WorkloadSpec { agents_per_tenant: 6, tasks_per_agent: 2, actions_per_task: 20, ..WorkloadSpec::default() };
    let mut lines = generate(&spec);
    lines.push(invalid_and_late(&lines));
    let per_partition = produce(&broker.brokers, &topic, &lines);
    assert!(per_partition.iter().all(|n| *n > 20), "every partition has records: {per_partition:?}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("merged.jsonl");
    let merged = merged_order(&lines);
    assert_ne!(merged, lines, "the merge reorders across partitions, so the test can tell");
    assert!(vigil::decode::decode_json(merged[merged.len() - 1].as_bytes()).is_err());
    assert_eq!(merged.last(), lines.last(), "the invalid event sorts last, by its own time");
    std::fs::write(&file, merged.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();

    let (from_file, from_kafka) = (dir.path().join("file"), dir.path().join("kafka"));
    replay(&config(ReplayInput::File(file), &from_file)).unwrap();
    let range = whole(&broker.brokers, &topic);
    replay(&config(ReplayInput::Kafka(range.clone()), &from_kafka)).unwrap();
    let diff = std::fs::read(from_kafka.join(DIFF_FILE)).unwrap();
    assert!(diff.len() > 1000, "the candidate changes decisions");
    assert!(std::fs::read(from_file.join(DIFF_FILE)).unwrap() == diff, "diff.jsonl differs");
    let (a, b) = (summary(&from_file), summary(&from_kafka));
    assert_eq!(b["input"]["records"], lines.len());
    // The digest covers the values in merged order: the file's bytes.
    assert_eq!(a, b);

    // A sub-range: the first ten offsets of each partition.
    let first_ten = dir.path().join("first-ten");
    replay(&config(ReplayInput::Kafka(KafkaRange { to: Bound::Offset(10), ..range.clone() }), &first_ten)).unwrap();
    assert_eq!(summary(&first_ten)["input"]["records"], 10 * PARTITIONS);
    // Past the end: nothing, and the replay still ends.
    let past = dir.path().join("past");
    replay(&config(ReplayInput::Kafka(KafkaRange { from: Bound::Offset(1 << 40), ..range }), &past)).unwrap();
    assert_eq!(summary(&past)["input"]["records"], 0);
}

/// The decisions a live engine published, read back from their topic as the
/// baseline, compare as the same decisions in a file do: they are merged by
/// the time of the events they decided, so they meet the activity in step.
#[test]
fn published_decisions_are_a_baseline_like_a_recorded_file() {
    use std::sync::atomic::AtomicBool;
    use vigil::pipeline::{self, Pipeline};
    use vigil::rules::RuleHost;
    use vigil::sink::jsonl::JsonlSink;
    use vigil::source::file::JsonlSource;

    let broker = Broker::get();
    let (activity, decisions) = (unique_topic("replay-activity"), unique_topic("replay-decisions"));
    create_topic(&broker.brokers, &activity);
    create_topic(&broker.brokers, &decisions);
    let spec = WorkloadSpec { agents_per_tenant: 6, tasks_per_agent: 2, actions_per_task: 20, ..WorkloadSpec::default() };
    let lines = generate(&spec);
    produce(&broker.brokers, &activity, &lines);

    // What the engine decides on the activity in the order a replay reads it,
    // published keyed by agent as the live engine publishes.
    let dir = tempfile::tempdir().unwrap();
    let merged = dir.path().join("merged.jsonl");
    std::fs::write(&merged, merged_order(&lines).iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules");
    let mut engine = Pipeline::new(RuleHost::compile(RulesetSource::load(&shipped).unwrap()).unwrap(), StateConfig::default());
    let recorded = dir.path().join("recorded");
    let mut sink = JsonlSink::create(&recorded).unwrap();
    let mut source = JsonlSource::open(merged.to_str().unwrap()).unwrap();
    pipeline::run(&mut source, &mut engine, &mut sink, &AtomicBool::new(false)).unwrap();
    drop(sink);
    let file = recorded.join("decisions.jsonl");
    let published: Vec<String> = std::fs::read_to_string(&file).unwrap().lines().map(str::to_owned).collect();
    let per_partition = produce(&broker.brokers, &decisions, &published);
    assert!(per_partition.iter().all(|n| *n > 20), "every partition has decisions: {per_partition:?}");

    let (by_topic, by_file) = (dir.path().join("topic"), dir.path().join("file"));
    let input = || ReplayInput::Kafka(whole(&broker.brokers, &activity));
    let published_baseline = Baseline::Published(whole(&broker.brokers, &decisions));
    replay(&ReplayConfig { baseline: published_baseline, ..config(input(), &by_topic) }).unwrap();
    replay(&ReplayConfig { baseline: Baseline::Recorded(file), ..config(input(), &by_file) }).unwrap();
    let diff = std::fs::read(by_topic.join(DIFF_FILE)).unwrap();
    assert!(diff.len() > 1000, "the candidate changes decisions");
    assert!(std::fs::read(by_file.join(DIFF_FILE)).unwrap() == diff, "diff.jsonl differs");
    let (a, b) = (summary(&by_topic), summary(&by_file));
    assert_eq!(a["compared"], published.len());
    for key in ["only_candidate", "only_baseline", "baseline_unreadable"] {
        assert_eq!(a[key], 0, "{key}");
    }
    // The digest covers the published values in merged order: the file's bytes.
    assert_eq!(a, b);

    // The same decisions published as Avro, as the engine writes them with
    // `[avro] outputs = true`, are the same baseline: each is read back
    // into the JSON a JSON output carries, digest included. One value that
    // is no decision is counted as unreadable, and nothing else moves.
    let avro = unique_topic("replay-decisions-avro");
    create_topic(&broker.brokers, &avro);
    let encoder = vigil::decode::avro::AvroEncoder::shipped().unwrap();
    let mut values: Vec<(i32, Vec<u8>)> = published
        .iter()
        .map(|line| {
            let decision: vigil::verdict::Decision = serde_json::from_str(line).unwrap();
            (partition_of(line), encoder.decision(&decision).unwrap())
        })
        .collect();
    assert!(values.iter().any(|(_, v)| v.contains(&b'\n')), "a newline in some datum: values are not split as lines");
    let by_avro = dir.path().join("avro");
    produce_values(&broker.brokers, &avro, &values);
    let avro_baseline = || Baseline::Published(whole(&broker.brokers, &avro));
    replay(&ReplayConfig { baseline: avro_baseline(), ..config(input(), &by_avro) }).unwrap();
    assert!(std::fs::read(by_avro.join(DIFF_FILE)).unwrap() == diff, "diff.jsonl differs");
    assert_eq!(summary(&by_avro), a);

    let mut unknown_schema = values[0].1.clone();
    unknown_schema[4] = 99;
    values.push((0, unknown_schema));
    let spoiled = unique_topic("replay-decisions-spoiled");
    create_topic(&broker.brokers, &spoiled);
    produce_values(&broker.brokers, &spoiled, &values);
    let by_spoiled = dir.path().join("spoiled");
    let spoiled_baseline = Baseline::Published(whole(&broker.brokers, &spoiled));
    replay(&ReplayConfig { baseline: spoiled_baseline, ..config(input(), &by_spoiled) }).unwrap();
    assert!(std::fs::read(by_spoiled.join(DIFF_FILE)).unwrap() == diff, "diff.jsonl differs");
    let c = summary(&by_spoiled);
    assert_eq!((&c["compared"], &c["baseline_unreadable"]), (&a["compared"], &serde_json::json!(1)));
}

