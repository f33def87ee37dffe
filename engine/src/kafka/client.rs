//! librdkafka client settings and the contexts that route its logs,
//! errors and failed deliveries into `tracing`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::ProducerContext;
use rdkafka::ClientConfig;

use crate::config::{Delivery, KafkaConfig};

/// Logs what librdkafka reports, with the worker it belongs to.
#[derive(Debug)]
pub(crate) struct ClientLog {
    pub worker: usize,
    pub role: &'static str,
}

pub(crate) fn log_rdkafka(worker: usize, role: &str, level: RDKafkaLogLevel, facility: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
            tracing::error!(worker, role, facility, "{message}")
        }
        RDKafkaLogLevel::Warning => tracing::warn!(worker, role, facility, "{message}"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => tracing::info!(worker, role, facility, "{message}"),
        RDKafkaLogLevel::Debug => tracing::debug!(worker, role, facility, "{message}"),
    }
}

/// Broker outages surface here first; librdkafka reconnects by itself, so
/// these are reports, not actions.
pub(crate) fn report_error(worker: usize, role: &str, error: &KafkaError, reason: &str) {
    // The changelog reader asks for ends of partitions; they are not errors.
    if matches!(error, KafkaError::Global(rdkafka::types::RDKafkaErrorCode::PartitionEOF)) {
        return;
    }
    tracing::warn!(worker, role, error = %error, reason, "kafka client error");
}

impl ClientContext for ClientLog {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        log_rdkafka(self.worker, self.role, level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        report_error(self.worker, self.role, &error, reason);
    }
}

impl ConsumerContext for ClientLog {}

/// The producer's context: counts outputs the broker refused for good, so
/// that at-least-once delivery never commits offsets past a lost output.
/// Every delivery is reported, so that a batch can wait for its outputs to
/// settle (delivered or refused) on a signal rather than by polling. Each
/// output carries the sequence number of its batch as its delivery opaque,
/// and the last two batches are counted apart: at least once, a batch's
/// offsets are committed once its own outputs settled, while the next
/// batch's are still on their way.
#[derive(Debug)]
pub(crate) struct DeliveryLog {
    pub worker: usize,
    /// Outputs the broker acknowledged or refused, all told.
    settled: AtomicU64,
    /// Per batch, by the parity of its sequence number: settled, refused.
    batches: [(Tally, Tally); 2],
    /// Whether a worker is waiting in [`DeliveryLog::wait_settled`].
    waiting: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
    /// Why the broker refused our credentials, once it has: a wrong
    /// password is not worth waiting out like a broker that is away.
    pub authentication: std::sync::Mutex<Option<String>>,
}

/// A count for one batch, tagged with the batch: the sequence number's low
/// 32 bits above the count's. A late report for an earlier batch (one that
/// was aborted while its outputs were on their way) finds another tag and
/// does not count for the batch that took its place.
#[derive(Debug, Default)]
struct Tally(AtomicU64);

impl Tally {
    fn tag(batch: u64) -> u64 {
        batch & 0xffff_ffff
    }

    fn start(&self, batch: u64) {
        self.0.store(Tally::tag(batch) << 32, Ordering::SeqCst);
    }

    fn add(&self, batch: u64) {
        let _ = self
            .0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| (v >> 32 == Tally::tag(batch)).then_some(v + 1));
    }

    /// The count, if the tally still counts for `batch`.
    fn count(&self, batch: u64) -> Option<u64> {
        let v = self.0.load(Ordering::SeqCst);
        (v >> 32 == Tally::tag(batch)).then_some(v & 0xffff_ffff)
    }
}

impl DeliveryLog {
    pub fn new(worker: usize) -> DeliveryLog {
        DeliveryLog {
            worker,
            settled: AtomicU64::new(0),
            batches: Default::default(),
            waiting: AtomicBool::new(false),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            authentication: std::sync::Mutex::new(None),
        }
    }

    pub fn authentication_failure(&self) -> Option<String> {
        self.authentication.lock().ok().and_then(|reason| reason.clone())
    }

    /// Counts the outputs of `batch` from zero, in place of the batch two
    /// before it.
    pub fn start_batch(&self, batch: u64) {
        let (settled, refused) = &self.batches[(batch % 2) as usize];
        settled.start(batch);
        refused.start(batch);
    }

    /// Outputs of `batch` refused so far.
    pub fn batch_failures(&self, batch: u64) -> u64 {
        self.batches[(batch % 2) as usize].1.count(batch).unwrap_or(0)
    }

    /// Waits until `sent` outputs in all have settled; false on timeout.
    pub fn wait_settled(&self, sent: u64, timeout: Duration) -> bool {
        self.wait_until(timeout, || self.settled.load(Ordering::SeqCst) >= sent)
    }

    /// Waits until the `sent` outputs of `batch` have settled; false on
    /// timeout, or if the batch is no longer counted.
    pub fn wait_batch_settled(&self, batch: u64, sent: u64, timeout: Duration) -> bool {
        let settled = &self.batches[(batch % 2) as usize].0;
        self.wait_until(timeout, || settled.count(batch).is_none_or(|n| n >= sent)) && settled.count(batch).is_some()
    }

    fn wait_until(&self, timeout: Duration, done: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let Ok(mut guard) = self.lock.lock() else { return false };
        self.waiting.store(true, Ordering::SeqCst);
        let settled = loop {
            if done() {
                break true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break false;
            }
            match self.wake.wait_timeout(guard, left) {
                Ok((next, _)) => guard = next,
                Err(_) => return false,
            }
        };
        self.waiting.store(false, Ordering::SeqCst);
        settled
    }
}

impl ClientContext for DeliveryLog {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        log_rdkafka(self.worker, "producer", level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::Authentication) {
            if let Ok(mut slot) = self.authentication.lock() {
                *slot = Some(reason.to_owned());
            }
        }
        report_error(self.worker, "producer", &error, reason);
    }
}

impl ProducerContext for DeliveryLog {
    /// The sequence number of the output's batch.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, batch: usize) {
        let batch = batch as u64;
        let (settled, refused) = &self.batches[(batch % 2) as usize];
        if let Err((error, message)) = result {
            use rdkafka::Message;
            refused.add(batch);
            tracing::warn!(worker = self.worker, topic = message.topic(), error = %error, "output not delivered");
        }
        settled.add(batch);
        self.settled.fetch_add(1, Ordering::SeqCst);
        // Taking the lock orders this wake-up after the waiter's last look.
        if self.waiting.load(Ordering::SeqCst) {
            let _guard = self.lock.lock();
            self.wake.notify_all();
        }
    }
}

/// Adds the brokers and the operator's own properties, which win over
/// ours.
fn finish(mut client: ClientConfig, config: &KafkaConfig, extra: &BTreeMap<String, String>) -> ClientConfig {
    client.set("bootstrap.servers", &config.brokers);
    // Logs reach `tracing` through the contexts above. librdkafka's own
    // debug lines are asked for with its `debug` property (for example
    // `debug = "eos"`); only then are they let through.
    let mut level = RDKafkaLogLevel::Info;
    for (key, value) in config.properties.iter().chain(extra) {
        if key == "debug" {
            level = RDKafkaLogLevel::Debug;
        }
        client.set(key, value);
    }
    client.set_log_level(level);
    client
}

/// A consumer that commits nothing by itself: offsets are committed only
/// with the outputs they produced.
pub(crate) fn consumer(config: &KafkaConfig, group_id: &str, client_id: &str) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("group.id", group_id)
        .set("client.id", client_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // Upstream producers may be transactional too: never act on
        // records they aborted.
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "false");
    finish(client, config, &config.consumer_properties)
}

/// How often librdkafka reports an activity consumer's statistics, the
/// source of the consumer lag metric. An operator's
/// `statistics.interval.ms` wins.
const STATISTICS_INTERVAL_MS: &str = "1000";

/// [`consumer`] for the activity topic, with statistics for metrics.
pub(crate) fn activity_consumer(config: &KafkaConfig, group_id: &str, client_id: &str) -> ClientConfig {
    let mut client = consumer(config, group_id, client_id);
    let operator_set = |key: &str| config.properties.contains_key(key) || config.consumer_properties.contains_key(key);
    if !operator_set("statistics.interval.ms") {
        client.set("statistics.interval.ms", STATISTICS_INTERVAL_MS);
    }
    // Incremental rebalancing: a worker gives up only the partitions that
    // move, and keeps deciding the others while their state stays put.
    if !operator_set("partition.assignment.strategy") {
        client.set("partition.assignment.strategy", "cooperative-sticky");
    }
    client
}

/// The output producer of one worker: transactional for exactly once,
/// idempotent for at least once.
pub(crate) fn producer(config: &KafkaConfig, worker: usize) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("client.id", member(config, worker))
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        // A busy worker writes a few outputs to a partition per millisecond;
        // sent after one millisecond, they made batches small enough to cost
        // about a sixth of the engine's throughput at least once, on a
        // broker sharing its cores (BENCHMARKS.md).
        .set("linger.ms", "5");
    if config.delivery == Delivery::ExactlyOnce {
        client
            // Back-to-back transactions meet CONCURRENT_TRANSACTIONS while
            // the last one's markers are written; the default 100 ms backoff
            // before each retry would then dominate every commit.
            .set("retry.backoff.ms", "5")
            .set("transactional.id", transactional_id(config, worker))
            .set("transaction.timeout.ms", "60000");
    }
    finish(client, config, &config.producer_properties)
}

/// One worker's name: `<group_id>[-<instance_id>]-<worker>`, stable across
/// restarts and distinct between the instances of a group.
pub(crate) fn member(config: &KafkaConfig, worker: usize) -> String {
    match &config.instance_id {
        Some(instance) => format!("{}-{instance}-{worker}", config.group_id),
        None => format!("{}-{worker}", config.group_id),
    }
}

pub(crate) fn transactional_id(config: &KafkaConfig, worker: usize) -> String {
    member(config, worker)
}

/// The group under which a worker records how far it read the signals
/// topic. Every worker reads every signal, so each has its own.
pub(crate) fn signals_group(config: &KafkaConfig, worker: usize) -> String {
    match &config.instance_id {
        Some(instance) => format!("{}-signals-{instance}-{worker}", config.group_id),
        None => format!("{}-signals-{worker}", config.group_id),
    }
}

/// A consumer that reads changelog partitions to their end and commits
/// nothing: how a worker rebuilds the state of partitions it is assigned.
pub(crate) fn changelog_reader(config: &KafkaConfig, worker: usize) -> ClientConfig {
    let name = format!("{}-restore", member(config, worker));
    let mut client = consumer(config, &name, &name);
    client
        .set("enable.partition.eof", "true")
        .set("fetch.wait.max.ms", "20")
        // Large fetches: a rebuild reads whole partitions.
        .set("max.partition.fetch.bytes", "16777216")
        .set("fetch.max.bytes", "67108864");
    client
}

/// Settings for an admin or metadata client.
pub(crate) fn admin(config: &KafkaConfig) -> ClientConfig {
    finish(ClientConfig::new(), config, &BTreeMap::new())
}

/// An idempotent producer outside any transaction: the acknowledgement
/// tracker's, whose alerts and re-issues are at least once by design.
pub(crate) fn idempotent_producer(config: &KafkaConfig, client_id: &str) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("client.id", client_id)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "1");
    finish(client, config, &config.producer_properties)
}
