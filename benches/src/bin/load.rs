//! End-to-end load harness: the engine on a real Kafka broker.
//!
//! For each delivery mode it produces generated activity at a chosen rate
//! (an open loop: the generator does not slow down when the engine does),
//! runs the engine in this process, and reads the decisions topic with a
//! `read_committed` consumer. Latency is from the moment an event was handed
//! to the producer to the moment its decision was visible. In the same run
//! a pass-through (same bytes in and out, no decisioning, same batching and
//! transactions) gives the ceiling the broker and client allow, for a ratio.
//!
//! ```text
//! cargo run --release -p vigil-benches --bin load -- --brokers HOST:PORT --rate 5000 --seconds 20
//! cargo run --release -p vigil-benches --bin load -- --rate 0 --seconds 10      # as fast as it goes
//! ```
//!
//! `--one-hop` adds, to each round, the broker's own floor: the same events
//! produced and read back by the reader, with no engine between them.
//! Latency through the engine takes two such hops. `--linger-ms` sets the
//! engine's output `linger.ms` (the generator always lingers 1 ms), and
//! `--latencies DIR` writes, per scenario, each event's send time and
//! latency (`<scenario>-<round>.tsv`) and the engine's metrics at its end
//! (`.prom`), to place a tail in time.
//!
//! Without `--brokers` it starts a broker of its own with `scripts/kafka.sh`
//! and removes it at the end. `--rounds N` runs the engine and the
//! pass-through in alternation N times and gives each round's ratio and
//! their median: a host whose speed drifts moves both sides of a round.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use vigil::config::{Delivery, KafkaConfig, Topics};
use vigil::kafka::admin::block_on;
use vigil::kafka::{self, Work};
use vigil::metrics::{Metrics, Phase};
use vigil::rules::RulesetSource;
use vigil::workload::{generate, WorkloadSpec};
// The benches' library brings the allocator the `vigil` binary uses.
use vigil_benches as _;

type Failure = Box<dyn std::error::Error>;

const USAGE: &str = "usage: load [--brokers HOST:PORT] [--rate EVENTS_PER_S (0 = unthrottled)] [--seconds S]
            [--workers N] [--partitions N] [--commit-ms MS] [--commit-max-ms MS]
            [--delivery exactly_once|at_least_once|both]
            [--no-pass-through] [--one-hop] [--rounds N] [--linger-ms MS] [--latencies DIR]";

#[derive(Debug, Clone)]
struct Args {
    brokers: Option<String>,
    rate: u64,
    seconds: u64,
    workers: usize,
    partitions: i32,
    commit_ms: u64,
    commit_max_ms: u64,
    deliveries: Vec<Delivery>,
    pass_through: bool,
    one_hop: bool,
    rounds: usize,
    /// The engine's output `linger.ms`, when not its default.
    linger_ms: Option<u64>,
    /// Where to write each scenario's timed events (send time and latency)
    /// and the engine's metrics at its end.
    latencies: Option<std::path::PathBuf>,
}

fn parse_args() -> Result<Args, Failure> {
    let mut args = Args {
        brokers: None,
        rate: 5_000,
        seconds: 20,
        workers: 2,
        partitions: 6,
        commit_ms: KafkaConfig::default().commit_interval.as_millis(),
        commit_max_ms: KafkaConfig::default().commit_interval_max.as_millis(),
        deliveries: vec![Delivery::ExactlyOnce, Delivery::AtLeastOnce],
        pass_through: true,
        one_hop: false,
        rounds: 1,
        linger_ms: None,
        latencies: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"));
        match flag.as_str() {
            "--brokers" => args.brokers = Some(value()?),
            "--rate" => args.rate = value()?.parse()?,
            "--seconds" => args.seconds = value()?.parse()?,
            "--workers" => args.workers = value()?.parse()?,
            "--partitions" => args.partitions = value()?.parse()?,
            "--commit-ms" => args.commit_ms = value()?.parse()?,
            "--commit-max-ms" => args.commit_max_ms = value()?.parse()?,
            "--delivery" => {
                let v = value()?;
                args.deliveries = match v.as_str() {
                    "both" => vec![Delivery::ExactlyOnce, Delivery::AtLeastOnce],
                    other => vec![Delivery::parse(other).ok_or_else(|| format!("unknown delivery `{other}`"))?],
                };
            }
            "--no-pass-through" => args.pass_through = false,
            "--one-hop" => args.one_hop = true,
            "--rounds" => args.rounds = value()?.parse::<usize>()?.max(1),
            "--linger-ms" => args.linger_ms = Some(value()?.parse()?),
            "--latencies" => args.latencies = Some(value()?.into()),
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument `{other}`\n{USAGE}").into()),
        }
    }
    Ok(args)
}

/// A broker this harness started; removed when dropped.
struct OwnBroker {
    dir: String,
}

impl OwnBroker {
    fn script() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/kafka.sh")
    }

    fn start() -> Result<(OwnBroker, String), Failure> {
        let out = Command::new(OwnBroker::script()).arg("start").stderr(std::process::Stdio::inherit()).output()?;
        if !out.status.success() {
            return Err("scripts/kafka.sh start failed".into());
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let get = |name: &str| {
            text.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim_matches('\'').to_owned())
        };
        let (Some(dir), Some(brokers)) = (get("KAFKA_DIR="), get("KAFKA_BROKERS=")) else {
            return Err("scripts/kafka.sh start printed no broker".into());
        };
        Ok((OwnBroker { dir }, brokers))
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = Command::new(OwnBroker::script()).args(["stop", "--purge", "--dir", &self.dir]).status();
    }
}

/// One workload line, with where to make it unique per pass over the
/// workload. Every id in a line derives from its agent's name (workload id,
/// task, credential, event and parent ids), so each pass renames the agent
/// everywhere: a pass is new agents on new tasks, as benign as the first.
/// Renaming only the agent and event ids once left later passes acting on
/// tasks that had ended and credentials another agent held, so nearly every
/// event of them was a step-up or a revocation with an alert.
#[derive(Clone)]
struct Template {
    line: String,
    agent_start: usize,
    agent_end: usize,
    /// Byte offsets where something is inserted, in order: after each
    /// occurrence of the agent's name (`true`), and just before the
    /// closing quote of the event id (`false`).
    marks: Vec<(usize, bool)>,
}

fn value_span(line: &str, field: &str) -> Option<(usize, usize)> {
    let needle = format!("\"{field}\":\"");
    let start = line.find(&needle)? + needle.len();
    let end = start + line[start..].find('"')?;
    Some((start, end))
}

impl Template {
    fn new(line: String) -> Option<Template> {
        let (_, event_end) = value_span(&line, "event_id")?;
        let (agent_start, agent_end) = value_span(&line, "agent_id")?;
        let agent = &line[agent_start..agent_end];
        let mut marks: Vec<(usize, bool)> = line.match_indices(agent).map(|(at, _)| (at + agent.len(), true)).collect();
        marks.push((event_end, false));
        marks.sort();
        Some(Template { agent_start, agent_end, marks, line })
    }

    /// The line for pass `cycle`, its event id stamped with the send time.
    fn render(&self, cycle: &str, sent_us: u64, out: &mut String, key: &mut String) {
        use std::fmt::Write;
        out.clear();
        key.clear();
        key.push_str(&self.line[self.agent_start..self.agent_end]);
        let _ = write!(key, ".{cycle}");
        let mut at = 0;
        for &(pos, name) in &self.marks {
            out.push_str(&self.line[at..pos]);
            if name {
                let _ = write!(out, ".{cycle}");
            } else {
                let _ = write!(out, "~{cycle}~{sent_us}");
            }
            at = pos;
        }
        out.push_str(&self.line[at..]);
    }
}

/// The send time stamped into an output's event id, and whether it was a
/// warm-up event.
fn stamp(payload: &[u8]) -> Option<(bool, u64)> {
    const NEEDLE: &[u8] = b"\"event_id\":\"";
    let start = payload.windows(NEEDLE.len()).position(|w| w == NEEDLE)? + NEEDLE.len();
    let len = payload[start..].iter().position(|b| *b == b'"')?;
    let id = std::str::from_utf8(&payload[start..start + len]).ok()?;
    let mut parts = id.rsplitn(3, '~');
    let sent = parts.next()?.parse().ok()?;
    let cycle = parts.next()?;
    Some((cycle == WARM_CYCLE, sent))
}

const WARM_CYCLE: &str = "warm";
const WARM_EVENTS: usize = 200;

fn producer(brokers: &str) -> Result<ThreadedProducer<DefaultProducerContext>, Failure> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "1")
        .set("compression.type", "lz4")
        .create()?)
}

fn send(p: &ThreadedProducer<DefaultProducerContext>, topic: &str, key: &str, payload: &str) -> Result<(), Failure> {
    let mut record = BaseRecord::to(topic).key(key).payload(payload);
    loop {
        match p.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                p.poll(Duration::from_millis(1));
            }
            Err((e, _)) => return Err(e.into()),
        }
    }
}

/// What the read_committed reader saw.
#[derive(Default)]
struct Seen {
    timed: u64,
    warm: u64,
    /// Per timed event: when it was sent and how long its decision took,
    /// in microseconds from the epoch.
    samples: Vec<(u64, u64)>,
    last: Option<Instant>,
}

fn reader(brokers: &str, topic: &str) -> Result<BaseConsumer, Failure> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("load-reader-{}", std::process::id()))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut list = TopicPartitionList::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            list.add_partition_offset(topic, p.id(), Offset::Beginning)?;
        }
    }
    consumer.assign(&list)?;
    Ok(consumer)
}

/// Sends one round of warm-up events and reads until all their decisions
/// are seen.
fn warm(
    producer: &ThreadedProducer<DefaultProducerContext>,
    consumer: &BaseConsumer,
    topic: &str,
    templates: &[Template],
    epoch: Instant,
    seen: &mut Seen,
    until: Instant,
) -> Result<(), Failure> {
    let (mut line, mut key) = (String::new(), String::new());
    let round = templates.iter().take(WARM_EVENTS);
    let target = seen.warm + round.len() as u64;
    for t in round {
        t.render(WARM_CYCLE, epoch.elapsed().as_micros() as u64, &mut line, &mut key);
        send(producer, topic, &key, &line)?;
    }
    while seen.warm < target {
        if Instant::now() > until {
            return Err("the engine did not decide the warm-up within 120 s".into());
        }
        read(consumer, epoch, seen, Duration::from_millis(100));
    }
    Ok(())
}

fn read(consumer: &BaseConsumer, epoch: Instant, seen: &mut Seen, timeout: Duration) {
    if let Some(Ok(m)) = consumer.poll(timeout) {
        let now = Instant::now();
        if let Some((warm, sent_us)) = m.payload().and_then(stamp) {
            if warm {
                seen.warm += 1;
            } else {
                seen.timed += 1;
                let at_us = now.duration_since(epoch).as_micros() as u64;
                seen.samples.push((sent_us, at_us.saturating_sub(sent_us)));
                seen.last = Some(now);
            }
        }
    }
}

/// What runs between the generator and the reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The engine, deciding.
    Decide(Delivery),
    /// The engine's clients forwarding the same bytes: the throughput ceiling.
    PassThrough(Delivery),
    /// Nothing: the reader reads the activity topic, the latency floor.
    OneHop,
}

impl Kind {
    fn delivery(self) -> Option<Delivery> {
        match self {
            Kind::Decide(delivery) | Kind::PassThrough(delivery) => Some(delivery),
            Kind::OneHop => None,
        }
    }

    fn work(self) -> &'static str {
        match self {
            Kind::Decide(_) => "decide",
            Kind::PassThrough(_) => "pass-through",
            Kind::OneHop => "one hop",
        }
    }

    /// How its topics and files are named.
    fn label(self) -> String {
        match self {
            Kind::Decide(delivery) => format!("{}-decide", delivery.as_str()),
            Kind::PassThrough(delivery) => format!("{}-pass", delivery.as_str()),
            Kind::OneHop => "one-hop".to_owned(),
        }
    }
}

struct Outcome {
    round: usize,
    kind: Kind,
    offered: f64,
    sustained: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    outputs: u64,
    expected: u64,
    /// What the engine produced besides decisions (warm-up included).
    alerts: u64,
    commands: u64,
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn scenario(args: &Args, brokers: &str, round: usize, kind: Kind, templates: &[Template]) -> Result<Outcome, Failure> {
    let label = kind.label();
    let name = format!("load-{label}-{}-{round}", std::process::id());
    let topics = Topics::prefixed(&name);
    let mut config = KafkaConfig {
        brokers: brokers.to_owned(),
        group_id: format!("{name}-group"),
        delivery: kind.delivery().unwrap_or_default(),
        commit_interval: vigil::config::Span::millis(args.commit_ms),
        commit_interval_max: vigil::config::Span::millis(args.commit_max_ms),
        workers: args.workers,
        topics,
        ..KafkaConfig::default()
    };
    if let Some(linger) = args.linger_ms {
        config.producer_properties.insert("linger.ms".into(), linger.to_string());
    }
    config.create_topics.partitions = args.partitions;
    config.create_topics.at_startup = false;
    kafka::create_topics(&config)?;
    let work = match kind {
        Kind::Decide(_) => Some(Work::decide(RulesetSource::shipped()?)),
        Kind::PassThrough(_) => Some(Work::PassThrough),
        Kind::OneHop => None,
    };
    let shutdown = Arc::new(AtomicBool::new(false));
    let metrics = Arc::new(Metrics::new());
    let engine = work.map(|work| {
        let (config, stop, watched) = (config.clone(), Arc::clone(&shutdown), Arc::clone(&metrics));
        std::thread::spawn(move || kafka::run_with_metrics(&config, &work, stop, &watched))
    });
    let epoch = Instant::now();
    let producer = producer(brokers)?;
    let read_from = if engine.is_some() { &config.topics.decisions } else { &config.topics.activity };
    let consumer = reader(brokers, read_from)?;
    let mut seen = Seen::default();

    // Warm-up: the group is joined and every client connected ...
    let warm_until = Instant::now() + Duration::from_secs(120);
    if let Err(error) = warm(&producer, &consumer, &config.topics.activity, templates, epoch, &mut seen, warm_until) {
        shutdown.store(true, Ordering::Relaxed);
        return Err(error);
    }
    // ... and the group has settled: every worker decides its share, so no
    // rebalance falls into the timed load ...
    while engine.is_some() && !settled(&metrics, args.partitions as usize, args.workers) {
        if Instant::now() > warm_until {
            shutdown.store(true, Ordering::Relaxed);
            return Err("the group did not settle within 120 s".into());
        }
        read(&consumer, epoch, &mut seen, Duration::from_millis(50));
    }
    // ... and every worker has taken records from the partitions it now
    // holds, so that the timed load measures the steady state, not the
    // rebalance.
    if let Err(error) = warm(&producer, &consumer, &config.topics.activity, templates, epoch, &mut seen, warm_until) {
        shutdown.store(true, Ordering::Relaxed);
        return Err(error);
    }

    // The timed load, on its own thread so the reader keeps reading.
    let total = if args.rate == 0 { 50_000 * args.seconds } else { args.rate * args.seconds };
    let sending = Arc::new(AtomicBool::new(true));
    let (rate, activity) = (args.rate, config.topics.activity.clone());
    let generator = {
        let sending = Arc::clone(&sending);
        let templates = templates.to_vec();
        std::thread::spawn(move || -> Result<Duration, String> {
            let start = Instant::now();
            let (mut line, mut key, mut cycle) = (String::new(), String::new(), String::from("0"));
            for i in 0..total {
                if rate > 0 && i % 16 == 0 {
                    let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                }
                let n = (i as usize) % templates.len();
                if n == 0 {
                    cycle = (i / templates.len() as u64).to_string();
                }
                templates[n].render(&cycle, epoch.elapsed().as_micros() as u64, &mut line, &mut key);
                send(&producer, &activity, &key, &line).map_err(|e| e.to_string())?;
            }
            let elapsed = start.elapsed();
            // A broker that is slow to acknowledge (a loaded machine) is
            // waited for, up to a point.
            let mut tries = 0;
            while let Err(e) = producer.flush(Duration::from_secs(30)) {
                tries += 1;
                eprintln!("load: generator still flushing: {e}");
                if tries >= 10 {
                    return Err(e.to_string());
                }
            }
            sending.store(false, Ordering::Relaxed);
            Ok(elapsed)
        })
    };
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds * 4 + 60);
    while seen.timed < total && Instant::now() < deadline {
        read(&consumer, epoch, &mut seen, Duration::from_millis(100));
    }
    let send_time = generator.join().map_err(|_| "generator panicked")??;
    shutdown.store(true, Ordering::Relaxed);
    let reports = match engine {
        Some(engine) => engine.join().map_err(|_| "engine panicked")??,
        None => Vec::new(),
    };
    let alerts = reports.iter().map(|r| r.stats.alerts).sum();
    let commands = reports.iter().map(|r| r.stats.commands.values().sum::<u64>()).sum();
    delete_topics(brokers, &config.topics);

    let span = seen.last.map_or(f64::NAN, |last| last.duration_since(started).as_secs_f64());
    if let Some(dir) = &args.latencies {
        write_samples(&dir.join(format!("{label}-{round}.tsv")), &seen.samples)?;
        if kind != Kind::OneHop {
            std::fs::write(dir.join(format!("{label}-{round}.prom")), metrics.render())?;
        }
    }
    let mut latencies_us: Vec<u64> = seen.samples.iter().map(|(_, latency)| *latency).collect();
    latencies_us.sort_unstable();
    Ok(Outcome {
        round,
        kind,
        offered: total as f64 / send_time.as_secs_f64(),
        sustained: seen.timed as f64 / span,
        p50_ms: percentile(&latencies_us, 0.50),
        p99_ms: percentile(&latencies_us, 0.99),
        max_ms: latencies_us.last().map_or(f64::NAN, |v| *v as f64 / 1000.0),
        outputs: seen.timed,
        alerts,
        commands,
        expected: total,
    })
}

/// Writes `sent_ms<TAB>latency_ms` per event, in the order decisions were
/// seen, so a tail can be placed in time (a pause, a commit, a rebalance).
fn write_samples(path: &std::path::Path, samples: &[(u64, u64)]) -> Result<(), Failure> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(out, "sent_ms\tlatency_ms")?;
    for (sent, latency) in samples {
        writeln!(out, "{:.3}\t{:.3}", *sent as f64 / 1000.0, *latency as f64 / 1000.0)?;
    }
    out.flush()?;
    Ok(())
}

/// Whether every worker holds partitions and together they hold them all.
fn settled(metrics: &Metrics, partitions: usize, workers: usize) -> bool {
    let held: Vec<usize> = metrics
        .phases()
        .into_iter()
        .filter_map(|phase| match phase {
            Phase::Assigned(n) => Some(n),
            _ => None,
        })
        .collect();
    held.len() == workers && held.iter().sum::<usize>() == partitions && held.iter().all(|n| *n > 0 || workers > partitions)
}

/// Leaves a shared broker as it was found.
fn delete_topics(brokers: &str, topics: &Topics) {
    let admin: Result<AdminClient<DefaultClientContext>, _> = ClientConfig::new().set("bootstrap.servers", brokers).create();
    if let Ok(admin) = admin {
        let names: Vec<&str> = topics.all().iter().map(|(_, n)| *n).collect();
        let _ = block_on(admin.delete_topics(&names, &AdminOptions::new()));
    }
}

fn main() -> Result<(), Failure> {
    let args = parse_args()?;
    let mut own = None;
    let brokers = match &args.brokers {
        Some(b) => b.clone(),
        None => {
            let (broker, brokers) = OwnBroker::start()?;
            own = Some(broker);
            brokers
        }
    };
    let spec = WorkloadSpec { tenants: 8, agents_per_tenant: 25, tasks_per_agent: 4, actions_per_task: 30, attacks: false, ..WorkloadSpec::default() };
    let templates: Vec<Template> = generate(&spec).into_iter().filter_map(Template::new).collect();
    eprintln!(
        "load: {} workload events (cycled), {} worker(s), {} partitions, commit every {} ms ({} ms while saturated), rate {}, {} s, brokers {brokers}",
        templates.len(),
        args.workers,
        args.partitions,
        args.commit_ms,
        args.commit_max_ms,
        if args.rate == 0 { "unthrottled".to_owned() } else { format!("{}/s", args.rate) },
        args.seconds
    );
    let mut outcomes = Vec::new();
    for round in 1..=args.rounds {
        if args.one_hop {
            eprintln!("load: round {round}, one hop ...");
            outcomes.push(scenario(&args, &brokers, round, Kind::OneHop, &templates)?);
        }
        for &delivery in &args.deliveries {
            let kinds = if args.pass_through {
                vec![Kind::Decide(delivery), Kind::PassThrough(delivery)]
            } else {
                vec![Kind::Decide(delivery)]
            };
            for kind in kinds {
                eprintln!("load: round {round}, {} {} ...", delivery.as_str(), kind.work());
                outcomes.push(scenario(&args, &brokers, round, kind, &templates)?);
            }
        }
    }
    println!(
        "{:<5} {:<14} {:<13} {:>10} {:>12} {:>9} {:>9} {:>9} {:>10} {:>8} {:>8}",
        "round", "delivery", "work", "offered/s", "sustained/s", "p50 ms", "p99 ms", "max ms", "outputs", "alerts", "commands"
    );
    for o in &outcomes {
        println!(
            "{:<5} {:<14} {:<13} {:>10.0} {:>12.0} {:>9.1} {:>9.1} {:>9.1} {:>10} {:>8} {:>8}",
            o.round,
            o.kind.delivery().map_or("-", Delivery::as_str),
            o.kind.work(),
            o.offered,
            o.sustained,
            o.p50_ms,
            o.p99_ms,
            o.max_ms,
            if o.outputs == o.expected { o.outputs.to_string() } else { format!("{}/{}", o.outputs, o.expected) },
            o.alerts,
            o.commands,
        );
    }
    for &delivery in &args.deliveries {
        let mut ratios = Vec::new();
        for round in 1..=args.rounds {
            let find = |kind: Kind| {
                outcomes.iter().find(|o| o.round == round && o.kind == kind).map(|o| o.sustained)
            };
            if let (Some(decide), Some(pass)) = (find(Kind::Decide(delivery)), find(Kind::PassThrough(delivery))) {
                ratios.push(100.0 * decide / pass);
            }
        }
        if ratios.is_empty() {
            continue;
        }
        let each: Vec<String> = ratios.iter().map(|r| format!("{r:.0}%")).collect();
        ratios.sort_by(f64::total_cmp);
        let median = if ratios.len() % 2 == 1 {
            ratios[ratios.len() / 2]
        } else {
            (ratios[ratios.len() / 2 - 1] + ratios[ratios.len() / 2]) / 2.0
        };
        println!("decide / pass-through, {}: {} (median {median:.0}%)", delivery.as_str(), each.join(", "));
    }
    drop(own);
    Ok(())
}
