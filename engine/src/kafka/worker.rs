//! One worker: its clients, its pipeline, and the loop that commits batch
//! after batch and recovers from failures.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};

use super::backoff::Backoff;
use super::changelog::{self, RebuildError};
use super::client::{self, ClientLog, DeliveryLog};
use super::outbox::{Outbox, OutboxFailure, OutputProducer, SignalsConsumer, SignalsFeed};
use super::rebalance::{ActivityConsumer, RebalanceContext};
use super::{avro_decoder, KafkaEngineError, Work, WorkerReport};
use crate::checkpoint::{CheckpointStore, Offsets};
use crate::config::{Delivery, KafkaConfig};
use crate::decode::avro::AvroEncoder;
use crate::metrics::{Phase, WorkerMetrics};
use crate::pipeline::{self, Pipeline, RunError, Stats};
use crate::rules::RuleHost;
use crate::sign::Signer;
use crate::sink::kafka::KafkaSink;
use crate::sink::{Sink, SinkError};
use crate::source::kafka::{BatchLimits, KafkaSource, LastInput};
use crate::source::{Record, Source};

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a worker logs its shadow ruleset's divergences.
const SHADOW_SUMMARY_EVERY: Duration = Duration::from_secs(60);
const INIT_TIMEOUT: Duration = Duration::from_secs(30);
const WAKE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a seek to a rebuilt state's position may take.
const SEEK_TIMEOUT: Duration = Duration::from_secs(10);

/// The counts as of the last commit, and as of the end of the batch in
/// flight if there is one (at least once); the state keeps its own journal
/// back to the first ([`crate::state::State::mark`],
/// [`crate::state::State::rollback`]).
struct Saved {
    stats: Stats,
    in_flight: Option<Stats>,
}

impl Saved {
    fn of(pipeline: &mut Pipeline) -> Saved {
        pipeline.state.mark();
        Saved { stats: pipeline.stats.clone(), in_flight: None }
    }

    fn mark_in_flight(&mut self, pipeline: &mut Pipeline) {
        pipeline.state.mark_in_flight();
        self.in_flight = Some(pipeline.stats.clone());
    }

    fn landed(&mut self, pipeline: &mut Pipeline) {
        pipeline.state.landed();
        if let Some(stats) = self.in_flight.take() {
            self.stats = stats;
        }
    }

    fn restore(&mut self, pipeline: &mut Pipeline) {
        pipeline.state.rollback();
        pipeline.stats = self.stats.clone();
        self.in_flight = None;
    }
}

fn build_pipeline(config: &KafkaConfig, work: &Work) -> Result<Option<Pipeline>, KafkaEngineError> {
    let Work::Decide { rules: board, state, mode } = work else { return Ok(None) };
    let compile = |ruleset| RuleHost::compile(ruleset).map_err(|e| KafkaEngineError::Rules(e.to_string()));
    let (generation, published) = board.published();
    let mut pipeline = Pipeline::new(compile(published.enforcing)?, state.clone());
    if let Some(candidate) = published.shadow {
        pipeline = pipeline.with_shadow(compile(candidate)?);
    }
    let pipeline = pipeline
        .with_board(Arc::clone(board), generation)
        .with_mode(*mode)
        .with_avro(avro_decoder(config)?)
        // Set once the worker holds partitions (see `Clients::settle`).
        .with_owns_unknown(false);
    Ok(Some(pipeline))
}

enum Served {
    Shutdown,
    Rebuild(String),
    /// Something no retry mends (a changelog in another state format).
    Fail(String),
}

pub(crate) type Store = Option<Arc<dyn CheckpointStore>>;

pub(crate) fn run(
    index: usize,
    config: &KafkaConfig,
    work: &Work,
    shutdown: &Arc<AtomicBool>,
    metrics: &Arc<WorkerMetrics>,
    store: &Store,
) -> Result<WorkerReport, KafkaEngineError> {
    let mut pipeline =
        build_pipeline(config, work)?.map(|p| p.with_rule_eval_histogram(Arc::clone(&metrics.rule_eval)));
    let mut saved = pipeline.as_mut().map(Saved::of);
    let mut held = BTreeSet::new();
    let mut report = WorkerReport { worker: index, ..WorkerReport::default() };
    let mut backoff = Backoff::new();
    while !shutdown.load(Ordering::Relaxed) {
        metrics.connecting();
        let mut clients = match Clients::connect(index, config, shutdown, metrics, store, pipeline.is_some()) {
            Ok(clients) => clients,
            Err(reason) => {
                metrics.set_phase(Phase::Unreachable(reason.clone()));
                tracing::warn!(worker = index, reason, retry_in_ms = backoff.delay().as_millis() as u64, "cannot connect");
                backoff.wait(shutdown);
                continue;
            }
        };
        tracing::info!(worker = index, delivery = config.delivery.as_str(), "worker connected");
        // New clients join the group afresh: whatever partitions it assigns,
        // their state is rebuilt from the store and the changelog then.
        if let (Some(pipeline), Some(saved)) = (pipeline.as_mut(), saved.as_mut()) {
            saved.restore(pipeline);
            pipeline.state.release(&held.iter().copied().collect::<Vec<_>>());
            *saved = Saved::of(pipeline);
        }
        held.clear();
        metrics.set_phase(Phase::Joining);
        let served = clients.serve(pipeline.as_mut(), &mut saved, &mut held, shutdown);
        report.commits += clients.outbox.commits.load(Ordering::Relaxed);
        report.aborts += clients.outbox.aborts.load(Ordering::Relaxed);
        report.restored_from_store += clients.restored_from_store;
        report.restored_from_changelog += clients.restored_from_changelog;
        metrics.kafka_counts(clients.outbox.commits.load(Ordering::Relaxed), clients.outbox.aborts.load(Ordering::Relaxed));
        drop(clients);
        match served {
            Served::Shutdown => break,
            Served::Fail(reason) => {
                metrics.set_phase(Phase::Stopped(reason.clone()));
                return Err(KafkaEngineError::Worker { worker: index, reason });
            }
            Served::Rebuild(reason) => {
                report.restarts += 1;
                metrics.clients_rebuilt();
                metrics.set_phase(Phase::Unreachable(reason.clone()));
                tracing::warn!(worker = index, reason, "rebuilding kafka clients");
                backoff.wait(shutdown);
            }
        }
    }
    if let Some(saved) = saved {
        report.stats = saved.stats;
    }
    metrics.set_phase(Phase::Stopped("shutdown requested".into()));
    tracing::info!(worker = index, commits = report.commits, aborts = report.aborts, "worker stopped");
    Ok(report)
}

/// Mirrors [`pipeline::run`] for [`Work::PassThrough`].
fn forward_all(source: &mut KafkaSource, sink: &mut KafkaSink, shutdown: &AtomicBool) -> Result<(), RunError> {
    let mut record = Record::default();
    while !shutdown.load(Ordering::Relaxed) {
        if !source.next_into(&mut record)? {
            break;
        }
        sink.forward(&record)?;
    }
    sink.flush()?;
    Ok(())
}

struct Clients {
    index: usize,
    config: KafkaConfig,
    metrics: Arc<WorkerMetrics>,
    activity: Arc<ActivityConsumer>,
    outbox: Arc<Outbox>,
    source: KafkaSource,
    sink: KafkaSink,
    store: Store,
    shadow_logged: Instant,
    checkpointed: Instant,
    restored_from_store: u64,
    restored_from_changelog: u64,
}

impl Clients {
    fn connect(
        index: usize,
        config: &KafkaConfig,
        shutdown: &Arc<AtomicBool>,
        metrics: &Arc<WorkerMetrics>,
        store: &Store,
        stateful: bool,
    ) -> Result<Clients, String> {
        let producer = connect_producer(index, config, shutdown, metrics)?;
        let signals = connect_signals(index, config)?;
        let outbox = Arc::new(Outbox::new(
            index,
            config.delivery,
            producer,
            &config.topics,
            stateful,
            Some(signals),
            Arc::clone(shutdown),
        ));
        let context = RebalanceContext { worker: index, outbox: Arc::clone(&outbox), metrics: Arc::clone(metrics) };
        let activity: ActivityConsumer = client::activity_consumer(config, &config.group_id, &client::member(config, index))
            .create_with_context(context)
            .map_err(|e| format!("activity consumer: {e}"))?;
        activity.subscribe(&[&config.topics.activity]).map_err(|e| format!("subscribe: {e}"))?;
        let activity = Arc::new(activity);
        let last = Rc::new(RefCell::new(LastInput::default()));
        let limits = BatchLimits {
            interval: config.commit_interval(),
            max_interval: config.commit_interval_max.0,
            max_records: config.commit_max_records,
        };
        let source = KafkaSource::new(
            index,
            Arc::clone(&activity),
            outbox.signals().cloned(),
            (&config.topics.activity, &config.topics.signals),
            Rc::clone(&last),
            limits,
        );
        let signer = Signer::from_config(&config.signing).map_err(|e| format!("signing key: {e}"))?;
        let mut sink = KafkaSink::new(Arc::clone(&outbox), Arc::clone(&activity), last, &config.topics)
            .with_signer(signer.map(Arc::new))
            .with_commit_histogram(Arc::clone(&metrics.commit));
        if stateful {
            sink = sink.with_changelog(store.is_some());
        }
        if config.avro.outputs {
            let encoder = AvroEncoder::with_ids(config.avro.decision_id, config.avro.control_command_id)
                .map_err(|e| format!("avro outputs: {e}"))?;
            sink = sink.with_avro(Some(Arc::new(encoder)));
        }
        Ok(Clients {
            index,
            config: config.clone(),
            metrics: Arc::clone(metrics),
            activity,
            outbox,
            source,
            sink,
            store: store.clone(),
            shadow_logged: Instant::now(),
            checkpointed: Instant::now(),
            restored_from_store: 0,
            restored_from_changelog: 0,
        })
    }

    /// Writes the committed changes since the last checkpoint to the local
    /// store, with how far into the changelog they reach.
    fn checkpoint(&mut self, held: &BTreeSet<i32>) {
        let (Some(store), Some(pending)) = (self.store.as_ref(), self.sink.pending()) else { return };
        self.checkpointed = Instant::now();
        let changes = pending.take();
        let topic = &self.config.topics.changelog;
        let partitions: Vec<i32> = held.iter().copied().collect();
        let started = Instant::now();
        let written = self.outbox.ends(topic, &partitions).map_err(|e| e.to_string()).and_then(|ends| {
            let offsets: Offsets = ends.into_iter().map(|(p, end)| ((topic.clone(), p), end)).collect();
            store.commit(&changes, &offsets).map_err(|e| e.to_string())
        });
        match written {
            Ok(()) => {
                self.metrics.checkpoint.observe(started.elapsed());
                tracing::debug!(worker = self.index, changes = changes.len(), "checkpoint written");
            }
            Err(error) => {
                tracing::warn!(worker = self.index, %error, "checkpoint not written; its changes wait for the next");
                pending.put_back(changes);
            }
        }
    }

    /// Lets go of the state of revoked partitions and rebuilds that of
    /// assigned ones, then reads them. Between two batches, at the last
    /// commit.
    fn settle(&mut self, mut pipeline: Option<&mut Pipeline>, saved: &mut Option<Saved>, held: &mut BTreeSet<i32>, shutdown: &AtomicBool) -> Result<(), Served> {
        let change = self.outbox.take_membership();
        if !change.revoked.is_empty() {
            self.checkpoint(held);
            if let Some(pipeline) = pipeline.as_deref_mut() {
                let entries = pipeline.state.release(&change.revoked);
                tracing::info!(worker = self.index, partitions = ?change.revoked, entries, "state of revoked partitions let go");
            }
            for partition in &change.revoked {
                held.remove(partition);
            }
        }
        if !change.assigned.is_empty() {
            if let Some(pipeline) = pipeline.as_deref_mut() {
                let started = Instant::now();
                let rebuilt = changelog::rebuild(&self.config, self.index, self.store.as_deref(), &change.assigned, shutdown)
                    .map_err(|error| match error {
                        RebuildError::Refused(reason) => Served::Fail(reason),
                        RebuildError::Interrupted => Served::Shutdown,
                        RebuildError::Unavailable(reason) => Served::Rebuild(reason),
                    })?;
                for mut part in rebuilt {
                    let entries = std::mem::take(&mut part.entries);
                    pipeline.state.absorb(part.partition, entries).map_err(|e| {
                        Served::Fail(format!("changelog partition {} does not restore: {e}", part.partition))
                    })?;
                    tracing::info!(
                        worker = self.index,
                        partition = part.partition,
                        from_store = part.from_store,
                        from_changelog = part.from_changelog,
                        unfinished = part.unfinished,
                        position = part.position,
                        ms = started.elapsed().as_millis() as u64,
                        "state rebuilt"
                    );
                    // The input is read from where the state ends, which at
                    // least once may be past the committed offset.
                    self.outbox.hold(part.partition, part.position);
                    if let Some(position) = part.position {
                        self.activity
                            .seek(&self.config.topics.activity, part.partition, Offset::Offset(position), SEEK_TIMEOUT)
                            .map_err(|e| Served::Rebuild(format!("cannot seek partition {} to {position}: {e}", part.partition)))?;
                    }
                    self.restored_from_store += part.from_store as u64;
                    self.restored_from_changelog += part.from_changelog as u64;
                    self.metrics.restored(part.from_store as u64, part.from_changelog as u64);
                    if let Some(pending) = self.sink.pending() {
                        pending.add(part.tail);
                    }
                }
            }
            held.extend(&change.assigned);
            let mut list = TopicPartitionList::with_capacity(change.assigned.len());
            for partition in &change.assigned {
                list.add_partition(&self.config.topics.activity, *partition);
            }
            if let Err(error) = self.activity.resume(&list) {
                return Err(Served::Rebuild(format!("cannot resume assigned partitions: {error}")));
            }
            self.wake_fetcher(change.assigned[0]);
        }
        self.sink.set_held(held);
        if let Some(pipeline) = pipeline.as_deref_mut() {
            // A signal about an agent or credential no worker holds state
            // for is acted on once in the group: by the holder of partition 0.
            pipeline.set_owns_unknown(held.contains(&0));
        }
        if let (Some(pipeline), Some(saved)) = (pipeline, saved.as_mut()) {
            *saved = Saved::of(pipeline);
        }
        self.metrics.set_phase(Phase::Assigned(held.len()));
        Ok(())
    }

    /// Asks the broker for the ends of `partition`, and so wakes the
    /// consumer's fetcher. A worker that held no partitions has a fetcher
    /// asleep, and librdkafka does not wake it for partitions that start
    /// fetching: their first records would come up to a second late
    /// (BENCHMARKS.md, "The first fetch after a rebalance").
    fn wake_fetcher(&self, partition: i32) {
        if let Err(error) = self.activity.fetch_watermarks(&self.config.topics.activity, partition, WAKE_TIMEOUT) {
            tracing::debug!(worker = self.index, partition, %error, "fetcher not woken; it wakes by itself within a second");
        }
    }

    fn broken(&self) -> bool {
        self.outbox.is_fatal()
            || self.activity.client().fatal_error().is_some()
            || self.outbox.signals().is_some_and(|s| s.client().fatal_error().is_some())
    }

    /// Now and then, how a shadow ruleset diverges from the enforcing one
    /// (committed decisions since start), for whoever watches the logs.
    fn log_shadow(&mut self, pipeline: &Pipeline, stats: &Stats) {
        let Some(candidate) = pipeline.shadow_rules() else { return };
        if self.shadow_logged.elapsed() < SHADOW_SUMMARY_EVERY {
            return;
        }
        self.shadow_logged = Instant::now();
        let transitions: Vec<String> = stats.shadow_transitions.iter().map(|((a, b), n)| format!("{a}->{b} {n}")).collect();
        let rules: Vec<String> = stats.shadow_rules.iter().map(|(rule, n)| format!("{rule} {n}")).collect();
        tracing::info!(
            worker = self.index,
            candidate = candidate.version(),
            transitions = transitions.join(", "),
            rules = rules.join(", "),
            "shadow divergences so far"
        );
    }

    /// Batch after batch until shutdown or until a client fails for good.
    fn serve(
        &mut self,
        mut pipeline: Option<&mut Pipeline>,
        saved: &mut Option<Saved>,
        held: &mut BTreeSet<i32>,
        shutdown: &AtomicBool,
    ) -> Served {
        let mut backoff = Backoff::new();
        let interval = self.config.checkpoint.interval.0;
        loop {
            let mut result = match pipeline.as_deref_mut() {
                Some(pipeline) => pipeline::run(&mut self.source, pipeline, &mut self.sink, shutdown),
                None => forward_all(&mut self.source, &mut self.sink, shutdown),
            };
            // A checkpoint, a rebalance and shutdown start from a batch
            // that landed.
            let checkpoint_due = self.store.is_some() && self.checkpointed.elapsed() >= interval;
            let landing = checkpoint_due || self.outbox.membership_changed() || shutdown.load(Ordering::Relaxed);
            if result.is_ok() && landing {
                result = self.outbox.land(&self.activity).map_err(|e| RunError::Sink(SinkError::Kafka(e.to_string())));
            }
            if self.outbox.take_landed() {
                self.landed(pipeline.as_deref_mut(), saved);
            }
            let outbox = &self.outbox;
            self.metrics.kafka_counts(outbox.commits.load(Ordering::Relaxed), outbox.aborts.load(Ordering::Relaxed));
            match result {
                Ok(()) => {
                    if self.source.batch_records() > 0 {
                        self.ended(pipeline.as_deref_mut(), saved);
                    }
                    backoff.reset();
                    if self.outbox.membership_changed() {
                        if let Err(served) = self.settle(pipeline.as_deref_mut(), saved, held, shutdown) {
                            return served;
                        }
                    }
                    if shutdown.load(Ordering::Relaxed) {
                        self.checkpoint(held);
                        return Served::Shutdown;
                    }
                    if checkpoint_due {
                        self.checkpoint(held);
                    }
                }
                Err(error) => {
                    let reason = error.to_string();
                    tracing::warn!(worker = self.index, reason, "batch failed; going back to the last commit");
                    if self.broken() {
                        return Served::Rebuild(reason);
                    }
                    match self.outbox.abort() {
                        Ok(()) => {}
                        Err(OutboxFailure::Interrupted(_)) => return Served::Shutdown,
                        Err(failure) => return Served::Rebuild(failure.to_string()),
                    }
                    self.source.rewind();
                    if let (Some(pipeline), Some(saved)) = (pipeline.as_deref_mut(), saved.as_mut()) {
                        saved.restore(pipeline);
                    }
                    if self.outbox.membership_changed() {
                        // A rebalance, not a failure: no reason to wait.
                        if let Err(served) = self.settle(pipeline.as_deref_mut(), saved, held, shutdown) {
                            return served;
                        }
                        continue;
                    }
                    if !backoff.wait(shutdown) {
                        return Served::Shutdown;
                    }
                }
            }
        }
    }

    /// A batch ended and was committed: it is durable, or its outputs are
    /// in flight (at least once) and it can still be undone until it lands.
    fn ended(&mut self, pipeline: Option<&mut Pipeline>, saved: &mut Option<Saved>) {
        let in_flight = self.outbox.in_flight();
        if in_flight {
            self.source.mark_in_flight();
        }
        if let (Some(pipeline), Some(saved)) = (pipeline, saved.as_mut()) {
            if in_flight {
                saved.mark_in_flight(pipeline);
            } else {
                *saved = Saved::of(pipeline);
            }
            self.metrics.committed(&saved.stats);
            self.log_shadow(pipeline, &saved.stats);
        }
    }

    /// The batch in flight landed: it can no longer be undone.
    fn landed(&mut self, pipeline: Option<&mut Pipeline>, saved: &mut Option<Saved>) {
        self.source.landed();
        if let (Some(pipeline), Some(saved)) = (pipeline, saved.as_mut()) {
            saved.landed(pipeline);
            self.metrics.committed(&saved.stats);
        }
    }
}

fn connect_producer(
    index: usize,
    config: &KafkaConfig,
    shutdown: &AtomicBool,
    metrics: &WorkerMetrics,
) -> Result<OutputProducer, String> {
    let producer: OutputProducer = client::producer(config, index)
        .create_with_context(DeliveryLog::new(index))
        .map_err(|e| format!("producer: {e}"))?;
    let refused = |producer: &OutputProducer| {
        producer.context().authentication_failure().map(|reason| format!("authentication failed: {reason}"))
    };
    // Talks to the broker once, so that wrong credentials show at once.
    if producer.client().fetch_metadata(Some(&config.topics.activity), METADATA_TIMEOUT).is_err() {
        if let Some(reason) = refused(&producer) {
            return Err(reason);
        }
    }
    if config.delivery == Delivery::ExactlyOnce {
        // Fences any older producer with this transactional id and aborts
        // what it left open.
        let mut backoff = Backoff::new();
        loop {
            match producer.init_transactions(INIT_TIMEOUT) {
                Ok(()) => break,
                Err(rdkafka::error::KafkaError::Transaction(e)) if e.is_retriable() && !e.is_fatal() => {
                    if let Some(reason) = refused(&producer) {
                        return Err(reason);
                    }
                    tracing::warn!(worker = index, error = %e, "cannot initialise transactions yet");
                    metrics.set_phase(Phase::Unreachable(format!("init transactions: {e}")));
                    if !backoff.wait(shutdown) {
                        return Err("shutdown".into());
                    }
                }
                Err(e) => return Err(format!("init transactions: {e}")),
            }
        }
    }
    Ok(producer)
}

/// A consumer of every partition of the signals topic, resuming where this
/// worker's last commit left it.
fn connect_signals(index: usize, config: &KafkaConfig) -> Result<SignalsFeed, String> {
    let topic = &config.topics.signals;
    let group = client::signals_group(config, index);
    let consumer: SignalsConsumer = client::consumer(config, &group, &group)
        .create_with_context(ClientLog { worker: index, role: "signals consumer" })
        .map_err(|e| format!("signals consumer: {e}"))?;
    let metadata = consumer.fetch_metadata(Some(topic), METADATA_TIMEOUT).map_err(|e| format!("metadata of `{topic}`: {e}"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(format!("signals topic `{topic}` does not exist"));
    }
    let mut assignment = TopicPartitionList::with_capacity(partitions.len());
    for partition in &partitions {
        assignment.add_partition_offset(topic, *partition, Offset::Stored).map_err(|e| e.to_string())?;
    }
    consumer.assign(&assignment).map_err(|e| format!("assign `{topic}`: {e}"))?;
    let group = consumer.group_metadata().ok_or_else(|| "signals consumer has no group".to_owned())?;
    tracing::info!(worker = index, topic, partitions = partitions.len(), "reading every signal");
    Ok(SignalsFeed { consumer: Arc::new(consumer), group })
}
