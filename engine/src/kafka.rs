//! The engine on Kafka: N workers, each a consumer group member on its own
//! thread with its own pipeline, signals consumer and producer.
//!
//! A worker is [`crate::pipeline::run`] between a [`KafkaSource`] and a
//! [`KafkaSink`], called once per batch. The source ends a batch when the
//! commit interval has passed; `run` then flushes the sink, which commits
//! the batch: exactly once, its outputs and the input offsets in one
//! transaction; at least once, the outputs are left in flight, and the
//! offsets are committed with the next batch, once the broker acknowledged
//! them.
//!
//! From each commit the state keeps a journal of what the batches since
//! changed. When a batch fails (the broker went away for longer than a
//! transaction lives, a fenced producer, a refused output), the batch is
//! aborted, the consumers seek back to the last commit and the state is
//! undone to it, so the batch is decided again exactly as before and no
//! committed output is lost or repeated. When a client fails for
//! good, the worker rebuilds its clients and resumes from the committed
//! offsets.
//!
//! [`KafkaSource`]: crate::source::kafka::KafkaSource
//! [`KafkaSink`]: crate::sink::kafka::KafkaSink

pub mod acks;
pub mod admin;
mod backoff;
pub mod changelog;
pub mod client;
pub(crate) mod outbox;
pub(crate) mod rebalance;
pub mod subscriber;
mod worker;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub use admin::{create_topics, TopicOutcome};

use crate::checkpoint::{CheckpointStore, RedbStore};
use crate::config::{ConfigError, KafkaConfig};
use crate::decode::avro::AvroDecoder;
use crate::pipeline::Stats;
use crate::rules::board::RuleBoard;
use crate::rules::{RuleHost, RulesetSource};
use crate::state::StateConfig;
use crate::verdict::Mode;

#[derive(Debug, thiserror::Error)]
pub enum KafkaEngineError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("kafka: {0}")]
    Client(String),
    #[error("ruleset refused:\n{0}")]
    Rules(String),
    #[error("avro schemas: {0}")]
    Avro(String),
    #[error("signing key: {0}")]
    Signing(String),
    #[error("checkpoint store: {0}")]
    Checkpoint(String),
    #[error("worker {worker} stopped: {reason}")]
    Worker { worker: usize, reason: String },
}

/// What every worker does with a record.
#[derive(Debug, Clone)]
pub enum Work {
    /// Decide it: the engine, with the rules the board publishes.
    Decide { rules: Arc<RuleBoard>, state: StateConfig, mode: Mode },
    /// Produce its bytes unchanged to the decisions topic, with the same
    /// batching and delivery mode: a baseline for the load harness.
    PassThrough,
}

impl Work {
    /// Enforces `ruleset`, which nothing will change, with default state
    /// settings.
    pub fn decide(ruleset: RulesetSource) -> Work {
        Work::Decide { rules: Arc::new(RuleBoard::new(ruleset, None)), state: StateConfig::default(), mode: Mode::Enforce }
    }
}

/// What one worker did, counting committed work only.
#[derive(Debug, Clone, Default)]
pub struct WorkerReport {
    pub worker: usize,
    pub stats: Stats,
    pub commits: u64,
    pub aborts: u64,
    /// How often the worker rebuilt its clients after a fatal error.
    pub restarts: u64,
    /// State entries rebuilt from the local store on assignment.
    pub restored_from_store: u64,
    /// Changelog records read to rebuild state on assignment.
    pub restored_from_changelog: u64,
}

/// The decoder for Avro inputs: the shipped schemas, or `[avro]
/// schema_dir` and `ids`, plus the registry if one is configured.
pub fn avro_decoder(config: &KafkaConfig) -> Result<AvroDecoder, KafkaEngineError> {
    let avro = |e: crate::decode::avro::AvroError| KafkaEngineError::Avro(e.to_string());
    let decoder = match &config.avro.schema_dir {
        Some(dir) => AvroDecoder::from_schema_dir(dir, &config.avro_ids()?).map_err(avro)?,
        None => AvroDecoder::shipped().map_err(avro)?,
    };
    match &config.avro.registry {
        Some(url) => decoder.and_registry(url).map_err(avro),
        None => Ok(decoder),
    }
}

/// The file of the local checkpoint store in `[checkpoint] dir`.
pub const STORE_FILE: &str = "state.redb";

/// The local checkpoint store of `[checkpoint] dir`, shared by the
/// workers, read through once to know it is whole. A store that is
/// unreadable, torn or of another format is moved aside (`.refused`) and
/// replaced by an empty one: the changelog holds everything it did.
pub fn open_store(config: &KafkaConfig) -> Result<worker::Store, KafkaEngineError> {
    let Some(dir) = &config.checkpoint.dir else { return Ok(None) };
    let failed = |what: &str, e: &dyn std::fmt::Display| KafkaEngineError::Checkpoint(format!("{what}: {e}"));
    std::fs::create_dir_all(dir).map_err(|e| failed(&format!("cannot create `{}`", dir.display()), &e))?;
    let path = dir.join(STORE_FILE);
    let opened = RedbStore::open(&path).and_then(|store| store.load().map(|_| store));
    let store = match opened {
        Ok(store) => store,
        Err(error) => {
            let aside = dir.join(format!("{STORE_FILE}.refused"));
            tracing::error!(%error, moved_to = %aside.display(), "checkpoint store refused; the state is rebuilt from the changelog");
            std::fs::rename(&path, &aside).map_err(|e| failed("cannot move the refused store aside", &e))?;
            RedbStore::open(&path).map_err(|e| failed("cannot create a new store", &e))?
        }
    };
    Ok(Some(Arc::new(store)))
}

/// Runs `config.workers` workers until `shutdown` is set, then commits what
/// they hold and returns what each did.
pub fn run(config: &KafkaConfig, work: &Work, shutdown: Arc<AtomicBool>) -> Result<Vec<WorkerReport>, KafkaEngineError> {
    run_with_metrics(config, work, shutdown, &crate::metrics::Metrics::new())
}

/// [`run`], with the workers registered in `metrics` from the start, so
/// that `/metrics` and `/readyz` follow them.
pub fn run_with_metrics(
    config: &KafkaConfig,
    work: &Work,
    shutdown: Arc<AtomicBool>,
    metrics: &crate::metrics::Metrics,
) -> Result<Vec<WorkerReport>, KafkaEngineError> {
    let worker_metrics = metrics.kafka_workers(config.workers);
    config.validate()?;
    // Refuse a bad ruleset or schema here, once, rather than in every worker.
    if let Work::Decide { rules, .. } = work {
        let (_, published) = rules.published();
        for ruleset in std::iter::once(published.enforcing).chain(published.shadow) {
            RuleHost::compile(ruleset).map_err(|e| KafkaEngineError::Rules(e.to_string()))?;
        }
    }
    avro_decoder(config)?;
    crate::sign::Signer::from_config(&config.signing).map_err(|e| KafkaEngineError::Signing(e.to_string()))?;
    if config.create_topics.at_startup {
        for (topic, outcome) in create_topics(config)? {
            if outcome == TopicOutcome::Created {
                tracing::info!(topic, "topic created");
            }
        }
    }
    let store = match work {
        Work::Decide { .. } => open_store(config)?,
        Work::PassThrough => None,
    };
    let config = Arc::new(config.clone());
    let mut handles = Vec::with_capacity(config.workers);
    for (index, metrics) in worker_metrics.into_iter().enumerate() {
        let (config, work, stop, store) = (Arc::clone(&config), work.clone(), Arc::clone(&shutdown), store.clone());
        let handle = std::thread::Builder::new()
            .name(format!("vigil-worker-{index}"))
            .spawn(move || {
                let result = worker::run(index, &config, &work, &stop, &metrics, &store);
                if let Err(error) = &result {
                    metrics.set_phase(crate::metrics::Phase::Stopped(error.to_string()));
                    // One worker cannot go on: stop the others too rather
                    // than leave its partitions undecided.
                    stop.store(true, Ordering::Relaxed);
                }
                result
            })
            .map_err(|e| KafkaEngineError::Client(format!("cannot start worker {index}: {e}")));
        match handle {
            Ok(handle) => handles.push(handle),
            Err(error) => {
                shutdown.store(true, Ordering::Relaxed);
                for handle in handles {
                    let _ = handle.join();
                }
                return Err(error);
            }
        }
    }
    let mut reports = Vec::with_capacity(handles.len());
    let mut failure = None;
    for (index, handle) in handles.into_iter().enumerate() {
        match handle.join() {
            Ok(Ok(report)) => reports.push(report),
            Ok(Err(error)) => failure = failure.or(Some(error)),
            Err(_) => {
                failure = failure.or(Some(KafkaEngineError::Worker { worker: index, reason: "panicked".into() }))
            }
        }
    }
    match failure {
        Some(error) => Err(error),
        None => Ok(reports),
    }
}

/// Sums the workers' counts.
pub fn total(reports: &[WorkerReport]) -> Stats {
    let mut total = Stats::default();
    for r in reports {
        let s = &r.stats;
        total.records += s.records;
        total.events += s.events;
        total.signals += s.signals;
        total.alerts += s.alerts;
        for (k, v) in &s.decisions {
            *total.decisions.entry(*k).or_default() += v;
        }
        for (k, v) in &s.commands {
            *total.commands.entry(*k).or_default() += v;
        }
        for (k, v) in &s.dead_letters {
            *total.dead_letters.entry(k).or_default() += v;
        }
        for (k, v) in &s.rules_fired {
            *total.rules_fired.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &s.rule_faults {
            *total.rule_faults.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &s.shadow_transitions {
            *total.shadow_transitions.entry(*k).or_default() += v;
        }
        for (k, v) in &s.shadow_rules {
            *total.shadow_rules.entry(k.clone()).or_default() += v;
        }
    }
    total
}
