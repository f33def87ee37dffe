//! What `vigil run` tells about itself: counts, latencies, consumer lag and
//! readiness, rendered for `/metrics` and `/readyz` by [`crate::http`].
//!
//! The hot path stays cheap. Each worker owns a [`WorkerMetrics`]:
//!
//! - the pipeline's [`Stats`] are copied into it once per commit (the worker
//!   already keeps a copy of them at each commit to rewind to), so the
//!   counters show committed work only and agree with what a
//!   `read_committed` subscriber of the output topics sees, even after a
//!   batch was aborted and decided again;
//! - latency histograms are atomics that only that worker's thread writes;
//! - consumer lag comes from librdkafka's statistics, once a second.
//!
//! A scrape sums the workers. No label ever carries an agent, task or event
//! id: labels are decisions, actions, dead-letter reasons, rule ids,
//! workers, topics and partitions, all bounded.

pub mod text;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use crate::control::RuleCounts;
use crate::kafka::acks::AckCounts;
use crate::pipeline::Stats;
use crate::verdict::{CommandKind, Verdict};
use text::{HistogramSnapshot, Kind, Text};

/// Rule evaluation of one event, in seconds: from a remembered outcome
/// (about a microsecond) to a script at its operation limit.
pub const RULE_EVAL_BUCKETS: [f64; 14] =
    [0.000001, 0.0000025, 0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01, 0.05, 0.25];

/// One Kafka commit (a transaction, or the wait for acknowledgements), in
/// seconds: milliseconds when healthy, up to the retry budget when not.
pub const COMMIT_BUCKETS: [f64; 14] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// A latency histogram with fixed bounds, written by one thread and read by
/// scrapes: `observe` is a short scan and two relaxed atomic adds.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    bounds_ns: Vec<u64>,
    /// One per bound, plus one for what is above the last bound.
    counts: Vec<AtomicU64>,
    sum_ns: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            bounds_ns: bounds.iter().map(|b| (b * 1e9).round() as u64).collect(),
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, elapsed: Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let index = self.bounds_ns.iter().position(|b| ns <= *b).unwrap_or(self.bounds_ns.len());
        if let Some(count) = self.counts.get(index) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds: self.bounds,
            counts: self.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect(),
            sum: self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

/// Where a worker is on its way to deciding records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Compiling its rules.
    Starting,
    /// Building its Kafka clients.
    Connecting,
    /// The last attempt to connect failed; it retries with backoff.
    Unreachable(String),
    /// Connected and subscribed, its state restored to the last commit;
    /// the group has not assigned it partitions yet.
    Joining,
    /// Its partitions were revoked; the group is rebalancing.
    Rebalancing,
    /// Rebuilding the state of this many newly assigned partitions from
    /// the local store and the changelog; nothing is decided there yet.
    Restoring(usize),
    /// The group assigned it this many partitions (zero when there are
    /// more workers than partitions: it stands by).
    Assigned(usize),
    /// Deciding a file or stdin.
    Running,
    Stopped(String),
}

impl Phase {
    fn is_ready(&self) -> bool {
        matches!(self, Phase::Assigned(_) | Phase::Running)
    }

    fn reason(&self) -> String {
        match self {
            Phase::Starting => "loading rules".into(),
            Phase::Connecting => "connecting to the broker".into(),
            Phase::Unreachable(reason) => format!("broker unreachable: {reason}"),
            Phase::Joining => "no partitions assigned yet".into(),
            Phase::Rebalancing => "partitions revoked, rebalancing".into(),
            Phase::Restoring(n) => format!("restoring the state of {n} partitions"),
            Phase::Assigned(n) => format!("{n} partitions assigned"),
            Phase::Running => "running".into(),
            Phase::Stopped(reason) => format!("stopped: {reason}"),
        }
    }
}

/// What a worker publishes under its lock: rarely written, read by scrapes.
#[derive(Debug)]
struct Published {
    phase: Phase,
    stats: Stats,
    /// Commits and aborts of clients the worker has rebuilt since.
    commits_before: u64,
    aborts_before: u64,
    /// Commits and aborts of its current clients.
    commits: u64,
    aborts: u64,
    rebuilds: u64,
    /// State entries rebuilt on assignment, from the local store and from
    /// changelog records.
    restored_from_store: u64,
    restored_from_changelog: u64,
    /// `(topic, partition, records behind)` of its assigned partitions.
    lag: Vec<(String, i32, i64)>,
}

/// One worker's counters, histograms and phase.
#[derive(Debug)]
pub struct WorkerMetrics {
    index: usize,
    /// Rule evaluation per event, by the enforcing ruleset.
    pub rule_eval: Arc<Histogram>,
    /// Kafka commits that succeeded.
    pub commit: Arc<Histogram>,
    /// Checkpoints written to the local store.
    pub checkpoint: Arc<Histogram>,
    published: Mutex<Published>,
}

impl WorkerMetrics {
    fn new(index: usize) -> WorkerMetrics {
        WorkerMetrics {
            index,
            rule_eval: Arc::new(Histogram::new(&RULE_EVAL_BUCKETS)),
            commit: Arc::new(Histogram::new(&COMMIT_BUCKETS)),
            checkpoint: Arc::new(Histogram::new(&COMMIT_BUCKETS)),
            published: Mutex::new(Published {
                phase: Phase::Starting,
                stats: Stats::default(),
                commits_before: 0,
                aborts_before: 0,
                commits: 0,
                aborts: 0,
                rebuilds: 0,
                restored_from_store: 0,
                restored_from_changelog: 0,
                lag: Vec::new(),
            }),
        }
    }

    pub fn index(&self) -> usize {
        self.index
    }

    fn lock(&self) -> MutexGuard<'_, Published> {
        // Holders only copy values in or out: a panic cannot leave them
        // half-written in a way that matters for metrics.
        self.published.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn phase(&self) -> Phase {
        self.lock().phase.clone()
    }

    pub fn set_phase(&self, phase: Phase) {
        let mut published = self.lock();
        // A stopped worker stays stopped, whatever its clients report while
        // they close.
        if !matches!(published.phase, Phase::Stopped(_)) {
            published.phase = phase;
        }
    }

    /// A new connection attempt. A worker that could not reach the broker
    /// stays "unreachable" until it has connected.
    pub fn connecting(&self) {
        let mut published = self.lock();
        if !matches!(published.phase, Phase::Unreachable(_)) {
            published.phase = Phase::Connecting;
        }
    }

    /// Partitions taken away: their lag is no longer this worker's.
    pub fn revoked(&self) {
        let mut published = self.lock();
        if !matches!(published.phase, Phase::Stopped(_)) {
            published.phase = Phase::Rebalancing;
        }
        published.lag.clear();
    }

    /// The counts as of the commit that just succeeded.
    pub fn committed(&self, stats: &Stats) {
        self.lock().stats.clone_from(stats);
    }

    /// Commits and aborts of the worker's current Kafka clients.
    pub fn kafka_counts(&self, commits: u64, aborts: u64) {
        let mut published = self.lock();
        published.commits = commits;
        published.aborts = aborts;
    }

    /// The current clients are gone; new ones start counting from zero.
    pub fn clients_rebuilt(&self) {
        let mut published = self.lock();
        published.commits_before += published.commits;
        published.aborts_before += published.aborts;
        published.commits = 0;
        published.aborts = 0;
        published.rebuilds += 1;
    }

    pub fn set_lag(&self, lag: Vec<(String, i32, i64)>) {
        self.lock().lag = lag;
    }

    /// A partition's state rebuilt: entries from the store, records from
    /// the changelog.
    pub fn restored(&self, from_store: u64, from_changelog: u64) {
        let mut published = self.lock();
        published.restored_from_store += from_store;
        published.restored_from_changelog += from_changelog;
    }
}

/// The registry: every worker of this process, and how to render them.
#[derive(Debug, Default)]
pub struct Metrics {
    workers: Mutex<Vec<Arc<WorkerMetrics>>>,
    kafka: std::sync::atomic::AtomicBool,
    /// Rule changes made for every worker at once (on Kafka).
    rule_counts: OnceLock<Arc<RuleCounts>>,
    /// The closed loop on revocations, when it runs.
    ack_counts: OnceLock<Arc<AckCounts>>,
}

/// One worker's published values, copied out of its lock for rendering.
struct WorkerView {
    index: usize,
    phase: Phase,
    stats: Stats,
    commits: u64,
    aborts: u64,
    rebuilds: u64,
    restored: (u64, u64),
    lag: Vec<(String, i32, i64)>,
    rule_eval: HistogramSnapshot,
    commit: HistogramSnapshot,
    checkpoint: HistogramSnapshot,
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::default()
    }

    fn workers(&self) -> MutexGuard<'_, Vec<Arc<WorkerMetrics>>> {
        self.workers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers `count` Kafka workers, numbered from 0.
    pub fn kafka_workers(&self, count: usize) -> Vec<Arc<WorkerMetrics>> {
        self.kafka.store(true, Ordering::Relaxed);
        let mut workers = self.workers();
        workers.clear();
        workers.extend((0..count).map(|i| Arc::new(WorkerMetrics::new(i))));
        workers.clone()
    }

    /// Counts the rule changes `counts` records beside the pipelines' own.
    pub fn follow_rule_counts(&self, counts: Arc<RuleCounts>) {
        let _ = self.rule_counts.set(counts);
    }

    /// Reports what the acknowledgement tracker counts.
    pub fn follow_ack_counts(&self, counts: Arc<AckCounts>) {
        let _ = self.ack_counts.set(counts);
    }

    /// Registers the one pipeline of a run on files.
    pub fn file_worker(&self) -> Arc<WorkerMetrics> {
        let worker = Arc::new(WorkerMetrics::new(0));
        *self.workers() = vec![Arc::clone(&worker)];
        worker
    }

    /// Each worker's phase, by index.
    pub fn phases(&self) -> Vec<Phase> {
        self.workers().iter().map(|w| w.phase()).collect()
    }

    /// `Ok` when every worker is deciding (or stands by with no partitions);
    /// otherwise why not, one line per worker that is not.
    pub fn readiness(&self) -> Result<(), String> {
        let workers = self.workers();
        if workers.is_empty() {
            return Err("starting".into());
        }
        let waiting: Vec<String> = workers
            .iter()
            .filter_map(|w| {
                let phase = w.phase();
                (!phase.is_ready()).then(|| format!("worker {}: {}", w.index, phase.reason()))
            })
            .collect();
        if waiting.is_empty() {
            Ok(())
        } else {
            Err(waiting.join("\n"))
        }
    }

    fn views(&self) -> Vec<WorkerView> {
        let workers = self.workers().clone();
        workers
            .iter()
            .map(|w| {
                let p = w.lock();
                WorkerView {
                    index: w.index,
                    phase: p.phase.clone(),
                    stats: p.stats.clone(),
                    commits: p.commits_before + p.commits,
                    aborts: p.aborts_before + p.aborts,
                    rebuilds: p.rebuilds,
                    restored: (p.restored_from_store, p.restored_from_changelog),
                    lag: p.lag.clone(),
                    rule_eval: w.rule_eval.snapshot(),
                    commit: w.commit.snapshot(),
                    checkpoint: w.checkpoint.snapshot(),
                }
            })
            .collect()
    }

    /// Everything, in the Prometheus text format.
    pub fn render(&self) -> String {
        let views = self.views();
        let mut text = Text::new();
        let ready = !views.is_empty() && views.iter().all(|v| v.phase.is_ready());
        text.single("vigil_ready", Kind::Gauge, "1 when every worker is deciding (what /readyz answers 200 to), else 0.", f64::from(u8::from(ready)));
        let counts = self.rule_counts.get().map_or((0, 0, 0), |c| {
            (c.swaps.load(Ordering::Relaxed), c.rejections.load(Ordering::Relaxed), c.promotions.load(Ordering::Relaxed))
        });
        render_stats(&mut text, &views, counts);
        if self.kafka.load(Ordering::Relaxed) {
            render_kafka(&mut text, &views);
        }
        if let Some(acks) = self.ack_counts.get() {
            let load = |n: &std::sync::atomic::AtomicU64| n.load(Ordering::Relaxed) as f64;
            text.single(
                "vigil_unacknowledged_revocations",
                Kind::Gauge,
                "Revocations sent and not yet acknowledged as enforced by a subscriber.",
                load(&acks.pending),
            );
            text.single("vigil_revocation_acks_total", Kind::Counter, "Revocations a subscriber acknowledged as enforced.", load(&acks.acknowledged));
            text.single(
                "vigil_revocation_escalations_total",
                Kind::Counter,
                "Revocations past their acknowledgement deadline: alerted and sent again (or given up).",
                load(&acks.escalated),
            );
        }
        text.finish()
    }
}

fn sum<T: Ord + Clone>(views: &[WorkerView], field: impl Fn(&Stats) -> &BTreeMap<T, u64>) -> BTreeMap<T, u64> {
    let mut total = BTreeMap::new();
    for view in views {
        for (key, n) in field(&view.stats) {
            *total.entry(key.clone()).or_default() += n;
        }
    }
    total
}

fn labelled<K>(text: &mut Text, name: &str, help: &str, label: &str, counts: &BTreeMap<K, u64>, key: impl Fn(&K) -> String) {
    text.family(name, Kind::Counter, help);
    for (k, n) in counts {
        text.sample(name, &[(label, &key(k))], *n as f64);
    }
}

/// `rules`: swaps, rejections and promotions made for all workers at once.
fn render_stats(text: &mut Text, views: &[WorkerView], rules: (u64, u64, u64)) {
    let total = |f: fn(&Stats) -> u64| views.iter().map(|v| f(&v.stats)).sum::<u64>() as f64;
    text.single("vigil_records_total", Kind::Counter, "Input records committed: events, signals and dead letters.", total(|s| s.records));
    text.single("vigil_events_total", Kind::Counter, "Activity events decided and committed.", total(|s| s.events));
    text.single("vigil_signals_total", Kind::Counter, "Risk signals applied and committed.", total(|s| s.signals));
    text.single("vigil_alerts_total", Kind::Counter, "OCSF alerts committed.", total(|s| s.alerts));

    // Every decision and action is listed from the start, so rates work
    // before the first one happens.
    let mut decisions: BTreeMap<Verdict, u64> = Verdict::ALL.iter().map(|v| (*v, 0)).collect();
    decisions.extend(sum(views, |s| &s.decisions));
    labelled(text, "vigil_decisions_total", "Decisions committed, by decision.", "decision", &decisions, |v| v.as_str().into());
    let mut commands: BTreeMap<CommandKind, u64> = [
        CommandKind::RevokeCredentials,
        CommandKind::RevokeAgent,
        CommandKind::StepUp,
        CommandKind::Quarantine,
        CommandKind::Release,
    ]
    .iter()
    .map(|c| (*c, 0))
    .collect();
    commands.extend(sum(views, |s| &s.commands));
    labelled(text, "vigil_commands_total", "Control commands committed, by action.", "action", &commands, |c| c.as_str().into());
    labelled(text, "vigil_dlq_total", "Records sent to the dead-letter queue, by reason.", "reason", &sum(views, |s| &s.dead_letters), |r| (*r).into());
    labelled(text, "vigil_rule_fired_total", "Reasons contributed to committed decisions, by rule.", "rule", &sum(views, |s| &s.rules_fired), Clone::clone);
    labelled(text, "vigil_rule_faults_total", "Rule evaluations that failed (recorded on the decision, not fatal), by rule.", "rule", &sum(views, |s| &s.rule_faults), Clone::clone);

    text.family("vigil_rule_eval_seconds", Kind::Histogram, "Time to evaluate the enforcing ruleset on one event, including batches decided again after an abort.");
    let mut eval = HistogramSnapshot::empty(&RULE_EVAL_BUCKETS);
    for view in views {
        eval.merge(&view.rule_eval);
    }
    text.histogram("vigil_rule_eval_seconds", &[], &eval);

    let (swaps, rejections, promotions) = rules;
    text.single(
        "vigil_rule_swaps_total",
        Kind::Counter,
        "Ruleset changes swapped in (on disk or by promotion).",
        total(|s| s.rule_swaps) + swaps as f64,
    );
    text.single(
        "vigil_rule_rejections_total",
        Kind::Counter,
        "Ruleset changes refused: they did not compile or failed their cases.",
        total(|s| s.rule_rejections) + rejections as f64,
    );
    text.single("vigil_rule_promotions_total", Kind::Counter, "Shadow rulesets promoted to enforcing.", promotions as f64);
    labelled(
        text,
        "vigil_shadow_divergences_total",
        "Shadow decisions that differ from the enforcing ones, by transition (enforced->shadow).",
        "transition",
        &sum(views, |s| &s.shadow_transitions),
        |(from, to)| format!("{from}->{to}"),
    );
}

fn render_kafka(text: &mut Text, views: &[WorkerView]) {
    text.family("vigil_kafka_commit_seconds", Kind::Histogram, "Time to commit one batch: the transaction with its offsets (exactly once) or the wait for the acknowledgements of the batch before it (at least once).");
    let mut commit = HistogramSnapshot::empty(&COMMIT_BUCKETS);
    for view in views {
        commit.merge(&view.commit);
    }
    text.histogram("vigil_kafka_commit_seconds", &[], &commit);

    text.family("vigil_checkpoint_seconds", Kind::Histogram, "Time to write one checkpoint (the changes since the last one) to the local store.");
    let mut checkpoint = HistogramSnapshot::empty(&COMMIT_BUCKETS);
    for view in views {
        checkpoint.merge(&view.checkpoint);
    }
    text.histogram("vigil_checkpoint_seconds", &[], &checkpoint);
    text.family(
        "vigil_state_restored_total",
        Kind::Counter,
        "State rebuilt for assigned partitions: entries read from the local store, records read from the changelog.",
    );
    let store: u64 = views.iter().map(|v| v.restored.0).sum();
    let changelog: u64 = views.iter().map(|v| v.restored.1).sum();
    text.sample("vigil_state_restored_total", &[("source", "store")], store as f64);
    text.sample("vigil_state_restored_total", &[("source", "changelog")], changelog as f64);

    let per_worker = |text: &mut Text, name: &str, help: &str, value: fn(&WorkerView) -> u64| {
        text.family(name, Kind::Counter, help);
        for view in views {
            text.sample(name, &[("worker", &view.index.to_string())], value(view) as f64);
        }
    };
    per_worker(text, "vigil_kafka_commits_total", "Batches committed, by worker.", |v| v.commits);
    per_worker(text, "vigil_kafka_aborts_total", "Batches aborted and decided again from the last commit, by worker.", |v| v.aborts);
    per_worker(text, "vigil_kafka_client_rebuilds_total", "Kafka clients rebuilt after a fatal error, by worker.", |v| v.rebuilds);

    text.family(
        "vigil_kafka_consumer_lag",
        Kind::Gauge,
        "Activity records on a partition not yet read by the worker that holds it (last stable offset minus position), from librdkafka statistics.",
    );
    let mut lag: Vec<&(String, i32, i64)> = views.iter().flat_map(|v| &v.lag).collect();
    lag.sort();
    for (topic, partition, behind) in lag {
        text.sample("vigil_kafka_consumer_lag", &[("topic", topic), ("partition", &partition.to_string())], *behind as f64);
    }
}

#[cfg(test)]
// A test reports its failure by panicking.
#[allow(clippy::panic)]
mod tests {
    use super::*;

    /// Checks the exposition the way a scraper reads it: every sample
    /// belongs to the family declared just before it, each family is
    /// declared once with HELP then TYPE, names and labels are well formed,
    /// values parse, histograms are cumulative and end with `+Inf`, `_sum`
    /// and `_count`.
    fn validate(exposition: &str) -> BTreeMap<String, f64> {
        let mut samples = BTreeMap::new();
        let mut declared = std::collections::BTreeSet::new();
        let mut family: Option<(String, String)> = None;
        let mut last_bucket: Option<(String, f64)> = None;
        let name_ok = |n: &str| {
            !n.is_empty()
                && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                && !n.starts_with(|c: char| c.is_ascii_digit())
        };
        let lines: Vec<&str> = exposition.lines().collect();
        let mut i = 0;
        while i < lines.len() {
            let line = lines[i];
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap_or_default().to_owned();
                let kind = lines.get(i + 1).and_then(|l| l.strip_prefix(&format!("# TYPE {name} ")));
                assert!(kind.is_some(), "HELP {name} is not followed by its TYPE");
                assert!(name_ok(&name), "bad family name {name}");
                assert!(declared.insert(name.clone()), "family {name} declared twice");
                family = Some((name, kind.unwrap_or_default().to_owned()));
                i += 2;
                continue;
            }
            assert!(!line.starts_with('#'), "stray comment {line}");
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
            };
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => {
                    let labels = labels.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels: {line}"));
                    (name, labels)
                }
                None => (series, ""),
            };
            let (family_name, kind) = family.clone().unwrap_or_else(|| panic!("sample before any family: {line}"));
            let suffix = name.strip_prefix(family_name.as_str()).unwrap_or_else(|| panic!("{name} outside its family {family_name}"));
            match kind.as_str() {
                "histogram" => assert!(["_bucket", "_sum", "_count"].contains(&suffix), "{line}"),
                "counter" | "gauge" => assert_eq!(suffix, "", "{line}"),
                other => panic!("unknown type {other}"),
            }
            for pair in labels.split(',').filter(|p| !p.is_empty()) {
                let (label, quoted) = pair.split_once('=').unwrap_or_else(|| panic!("bad label {pair}"));
                assert!(name_ok(label) && !label.contains(':'), "bad label name {label}");
                assert!(quoted.starts_with('"') && quoted.ends_with('"') && quoted.len() >= 2, "unquoted {pair}");
            }
            if suffix == "_bucket" {
                let le = labels.rsplit("le=\"").next().and_then(|l| l.strip_suffix('"')).unwrap_or_default();
                let base = labels.rsplit_once("le=").map(|(b, _)| b.to_owned()).unwrap_or_default();
                if let Some((previous_base, previous)) = &last_bucket {
                    if *previous_base == base {
                        assert!(value >= *previous, "buckets not cumulative: {line}");
                    }
                }
                last_bucket = if le == "+Inf" { None } else { Some((base, value)) };
                if le == "+Inf" {
                    let count = lines.get(i + 2).and_then(|l| l.rsplit_once(' ')).map(|(_, v)| v.parse::<f64>().ok());
                    assert_eq!(count, Some(Some(value)), "+Inf bucket is not followed by _sum and an equal _count");
                }
            }
            samples.insert(series.to_owned(), value);
            i += 1;
        }
        samples
    }

    fn stats() -> Stats {
        let mut stats = Stats { records: 7, events: 5, signals: 1, alerts: 2, ..Stats::default() };
        stats.decisions.insert(Verdict::Allow, 3);
        stats.decisions.insert(Verdict::Deny, 2);
        stats.commands.insert(CommandKind::RevokeCredentials, 1);
        stats.dead_letters.insert("malformed_json", 1);
        stats.rule_faults.insert("exfil \"quoted\"".into(), 1);
        stats.shadow_transitions.insert((Verdict::Allow, Verdict::Deny), 4);
        stats
    }

    #[test]
    fn a_scrape_sums_the_workers_and_is_valid_exposition() {
        let metrics = Metrics::new();
        let workers = metrics.kafka_workers(2);
        for worker in &workers {
            worker.committed(&stats());
            worker.rule_eval.observe(Duration::from_micros(3));
            worker.commit.observe(Duration::from_millis(20));
            worker.checkpoint.observe(Duration::from_millis(300));
            worker.kafka_counts(4, 1);
            worker.restored(100, 7);
        }
        workers[1].clients_rebuilt();
        workers[1].kafka_counts(2, 0);
        workers[0].set_lag(vec![("agent.activity".into(), 1, 5), ("agent.activity".into(), 0, 0)]);
        let out = metrics.render();
        let samples = validate(&out);
        let get = |s: &str| samples.get(s).copied();
        assert_eq!(get("vigil_events_total"), Some(10.0));
        assert_eq!(get("vigil_decisions_total{decision=\"allow\"}"), Some(6.0));
        assert_eq!(get("vigil_decisions_total{decision=\"deny\"}"), Some(4.0));
        assert_eq!(get("vigil_decisions_total{decision=\"revoke\"}"), Some(0.0));
        assert_eq!(get("vigil_commands_total{action=\"revoke_credentials\"}"), Some(2.0));
        assert_eq!(get("vigil_commands_total{action=\"quarantine\"}"), Some(0.0));
        assert_eq!(get("vigil_dlq_total{reason=\"malformed_json\"}"), Some(2.0));
        assert_eq!(get("vigil_rule_faults_total{rule=\"exfil \\\"quoted\\\"\"}"), Some(2.0));
        assert_eq!(get("vigil_shadow_divergences_total{transition=\"allow->deny\"}"), Some(8.0));
        assert_eq!(get("vigil_rule_eval_seconds_bucket{le=\"0.000005\"}"), Some(2.0));
        assert_eq!(get("vigil_rule_eval_seconds_bucket{le=\"0.0000025\"}"), Some(0.0));
        assert_eq!(get("vigil_rule_eval_seconds_count"), Some(2.0));
        assert_eq!(get("vigil_kafka_commit_seconds_bucket{le=\"0.025\"}"), Some(2.0));
        assert_eq!(get("vigil_kafka_commits_total{worker=\"1\"}"), Some(6.0));
        assert_eq!(get("vigil_checkpoint_seconds_count"), Some(2.0));
        assert_eq!(get("vigil_checkpoint_seconds_bucket{le=\"0.1\"}"), Some(0.0));
        assert_eq!(get("vigil_state_restored_total{source=\"store\"}"), Some(200.0));
        assert_eq!(get("vigil_state_restored_total{source=\"changelog\"}"), Some(14.0));
        assert_eq!(get("vigil_kafka_aborts_total{worker=\"1\"}"), Some(1.0));
        assert_eq!(get("vigil_kafka_client_rebuilds_total{worker=\"1\"}"), Some(1.0));
        assert_eq!(get("vigil_kafka_consumer_lag{topic=\"agent.activity\",partition=\"1\"}"), Some(5.0));
        assert_eq!(get("vigil_ready"), Some(0.0));
        let sum = get("vigil_rule_eval_seconds_sum").unwrap_or_default();
        assert!((sum - 0.000006).abs() < 1e-12, "{sum}");
        // Lag series come sorted by partition, whichever worker holds them.
        let p0 = out.find("partition=\"0\"").unwrap_or(usize::MAX);
        let p1 = out.find("partition=\"1\"").unwrap_or(0);
        assert!(p0 < p1);
    }

    #[test]
    fn a_file_run_has_no_kafka_families() {
        let metrics = Metrics::new();
        metrics.file_worker().committed(&stats());
        let out = metrics.render();
        validate(&out);
        assert!(!out.contains("vigil_kafka_"), "{out}");
        assert!(out.contains("vigil_decisions_total{decision=\"allow\"} 3\n"));
    }

    #[test]
    fn histogram_observations_land_in_the_first_bucket_that_holds_them() {
        let histogram = Histogram::new(&COMMIT_BUCKETS);
        histogram.observe(Duration::from_millis(1));
        histogram.observe(Duration::from_micros(1001));
        histogram.observe(Duration::from_secs(60));
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.counts.first(), Some(&1));
        assert_eq!(snapshot.counts.get(1), Some(&1));
        assert_eq!(snapshot.counts.last(), Some(&1));
        assert_eq!(snapshot.count(), 3);
    }

    #[test]
    fn ready_only_when_every_worker_holds_its_assignment() {
        let metrics = Metrics::new();
        assert_eq!(metrics.readiness(), Err("starting".into()));
        let workers = metrics.kafka_workers(2);
        assert!(metrics.readiness().is_err_and(|r| r.contains("worker 0: loading rules")));
        workers[0].connecting();
        workers[1].set_phase(Phase::Unreachable("metadata: timed out".into()));
        workers[1].connecting();
        let reason = metrics.readiness().err().unwrap_or_default();
        assert_eq!(reason, "worker 0: connecting to the broker\nworker 1: broker unreachable: metadata: timed out");
        workers[0].set_phase(Phase::Joining);
        workers[1].set_phase(Phase::Joining);
        assert!(metrics.readiness().is_err_and(|r| r.contains("no partitions assigned")));
        workers[0].set_phase(Phase::Assigned(2));
        assert!(metrics.readiness().is_err());
        // More workers than partitions: the one with none stands by, ready.
        workers[1].set_phase(Phase::Assigned(0));
        assert_eq!(metrics.readiness(), Ok(()));
        assert!(metrics.render().contains("vigil_ready 1\n"));
        workers[0].revoked();
        assert!(metrics.readiness().is_err_and(|r| r == "worker 0: partitions revoked, rebalancing"));
        workers[0].set_phase(Phase::Stopped("shutdown".into()));
        assert!(metrics.readiness().is_err_and(|r| r.contains("stopped")));
    }
}
