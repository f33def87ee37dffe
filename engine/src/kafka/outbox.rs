//! One worker's producer and the input positions its outputs answer for.
//!
//! Exactly once: the first record of a batch begins a transaction; every
//! output is produced into it; the commit sends the next input offsets of
//! both the activity group and the worker's signals group into the same
//! transaction, then commits it. At least once: a batch's outputs are left
//! in flight while the worker goes on with the next batch; the next commit
//! waits until the broker acknowledged every output of the batch in flight
//! (usually long done), commits its offsets, and leaves the new batch in
//! flight in its place. So a worker never stops reading to wait for the
//! broker, and a failure goes back two batches: the one in flight and the
//! open one.
//!
//! The state changes of a batch go to the changelog with a record of where
//! each held partition's input stands (its position). Exactly once they are
//! in the batch's transaction. At least once they are sent only once every
//! output of their batch landed, with the batch after it: so a position on
//! the changelog never runs ahead of the outputs, and a worker that
//! rebuilds a partition's state starts reading where that state ends,
//! neither deciding a record against a state that already holds it nor
//! losing an output.
//!
//! The sink and the consumer's rebalance callback share it: when partitions
//! are taken away, the batch in flight lands with its state changes and the
//! open batch is aborted before they go (its state changes are not on the
//! changelog yet), so the next owner starts from the last commit, with the
//! state that commit left, and this worker goes back to it too.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, ConsumerGroupMetadata};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

use super::backoff::Backoff;
use super::changelog::{format_header, position_change};
use super::client::{ClientLog, DeliveryLog};
use crate::config::{Delivery, Topics};
use crate::source::Origin;
use crate::state::Change;

pub(crate) type OutputProducer = ThreadedProducer<DeliveryLog>;
pub(crate) type SignalsConsumer = BaseConsumer<ClientLog>;
/// An output, tagged with its batch's sequence number.
type Output<'a> = BaseRecord<'a, [u8], [u8], usize>;

/// How long one transactional call may block before it is retried.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a full local queue is given to drain before `send` tries again.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(5);
/// How long one call may keep failing before the producer is given up and
/// rebuilt. librdkafka can leave a transactional request queued for good
/// on a coordinator connection that never comes back after a broker
/// restart (each attempt then times out after a minute, whatever timeout
/// was asked for); a new producer fences the old one and starts clean.
const RETRY_BUDGET: Duration = Duration::from_secs(30);
/// Retries allowed once shutdown was requested, so that a healthy broker
/// still gets the last commit while a dead one does not hold the exit.
const RETRIES_AFTER_SHUTDOWN: u32 = 2;

/// Why outputs could not be made durable. Whatever the kind, nothing of the
/// failed batch is visible to `read_committed` subscribers.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum OutboxFailure {
    /// The batch was aborted; the worker rewinds its inputs and state to
    /// the last commit and goes on.
    #[error("batch aborted: {0}")]
    Aborted(String),
    /// The producer is unusable; the worker rebuilds its clients.
    #[error("producer failed for good: {0}")]
    Fatal(String),
    /// Shutdown was requested while the broker was away.
    #[error("shutdown while the broker was unreachable: {0}")]
    Interrupted(String),
}

/// What the group changed since the worker last looked, for it to act on
/// between two batches: let go of the state of revoked partitions, rebuild
/// that of assigned ones.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Membership {
    pub revoked: Vec<i32>,
    pub assigned: Vec<i32>,
}

impl Membership {
    fn is_empty(&self) -> bool {
        self.revoked.is_empty() && self.assigned.is_empty()
    }
}

/// Next offsets to commit, per partition, for one input topic.
#[derive(Debug, Default)]
struct Positions(Vec<(i32, i64)>);

impl Positions {
    fn advance(&mut self, partition: i32, offset: i64) {
        match self.0.iter_mut().find(|(p, _)| *p == partition) {
            Some(entry) => entry.1 = offset + 1,
            None => self.0.push((partition, offset + 1)),
        }
    }

    fn next(&self, partition: i32) -> Option<i64> {
        self.0.iter().find(|(p, _)| *p == partition).map(|(_, next)| *next)
    }

    fn list(&self, topic: &str) -> KafkaResult<TopicPartitionList> {
        let mut list = TopicPartitionList::with_capacity(self.0.len());
        for &(partition, next) in &self.0 {
            list.add_partition_offset(topic, partition, Offset::Offset(next))?;
        }
        Ok(list)
    }
}

/// What a successful commit did. After any, every earlier batch is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Committed {
    /// There was no open batch.
    Nothing,
    /// The open batch is durable: committed with its offsets.
    Durable,
    /// The open batch's outputs are in flight (at least once): its offsets
    /// are committed with the next commit, once the broker acknowledged
    /// them all.
    InFlight,
}

/// At least once, a batch whose outputs were all sent and whose offsets
/// wait for their acknowledgements.
#[derive(Debug)]
struct InFlight {
    seq: u64,
    sent: u64,
    activity: Positions,
    signals: Positions,
    /// Its state changes, sent once it lands.
    changes: Vec<Change>,
    /// The changes of the batch before it, sent with it: durable once it lands.
    carried: Vec<Change>,
}

#[derive(Debug, Default)]
struct Batch {
    /// A transaction is open (exactly once), or outputs are being sent (at
    /// least once).
    open: bool,
    /// The open batch's sequence number: its outputs carry it.
    seq: u64,
    /// Outputs sent before the open batch began.
    sent_before: u64,
    activity: Positions,
    signals: Positions,
    in_flight: Option<InFlight>,
    /// A batch landed since the worker last asked.
    landed: bool,
    /// The open batch was aborted by a rebalance: the worker goes back to
    /// the last commit.
    interrupt: Option<OutboxFailure>,
    membership: Membership,
    /// The open batch's state changes: in its transaction already (exactly
    /// once), or held until its outputs land (at least once).
    changes: Vec<Change>,
    /// Changes of landed batches not sent yet, oldest first.
    due: Vec<Change>,
    /// Changes the broker has, for the local store to take.
    durable: Vec<Change>,
    /// How far the input of each held partition is decided, as of the last
    /// batch that landed (`None`: not known, nothing read yet).
    positions: BTreeMap<i32, Option<i64>>,
}

/// The worker's signals consumer and the group its positions commit under.
pub(crate) struct SignalsFeed {
    pub consumer: Arc<SignalsConsumer>,
    pub group: ConsumerGroupMetadata,
}

pub(crate) struct Outbox {
    worker: usize,
    delivery: Delivery,
    producer: OutputProducer,
    activity_topic: String,
    signals_topic: String,
    /// Where state changes go; none for a worker without state.
    changelog: Option<String>,
    signals: Option<SignalsFeed>,
    batch: Mutex<Batch>,
    fatal: AtomicBool,
    shutdown: Arc<AtomicBool>,
    /// Outputs handed to the producer, all told.
    sent: AtomicU64,
    /// The open batch's sequence number, for [`Outbox::queue`] to tag
    /// outputs with without taking the lock.
    seq: AtomicU64,
    pub commits: AtomicU64,
    pub aborts: AtomicU64,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").field("worker", &self.worker).field("delivery", &self.delivery).finish()
    }
}

/// What to do about a failed client call.
enum Class {
    Retry,
    Abort,
    Fatal,
}

fn classify(error: &KafkaError) -> Class {
    match error {
        KafkaError::Transaction(e) if e.is_fatal() => Class::Fatal,
        KafkaError::Transaction(e) if e.txn_requires_abort() => Class::Abort,
        KafkaError::Transaction(e) if e.is_retriable() => Class::Retry,
        KafkaError::Flush(_) => Class::Retry,
        other if other.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) => Class::Fatal,
        _ => Class::Abort,
    }
}

impl Outbox {
    pub fn new(
        worker: usize,
        delivery: Delivery,
        producer: OutputProducer,
        topics: &Topics,
        stateful: bool,
        signals: Option<SignalsFeed>,
        shutdown: Arc<AtomicBool>,
    ) -> Outbox {
        Outbox {
            worker,
            delivery,
            producer,
            activity_topic: topics.activity.clone(),
            signals_topic: topics.signals.clone(),
            changelog: stateful.then(|| topics.changelog.clone()),
            signals,
            batch: Mutex::new(Batch::default()),
            fatal: AtomicBool::new(false),
            shutdown,
            sent: AtomicU64::new(0),
            seq: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            aborts: AtomicU64::new(0),
        }
    }

    pub fn signals(&self) -> Option<&Arc<SignalsConsumer>> {
        self.signals.as_ref().map(|s| &s.consumer)
    }

    /// Whether a batch is open: a record was taken since the last commit.
    pub fn is_open(&self) -> bool {
        self.lock().open
    }

    /// Whether a committed batch's outputs are still in flight.
    pub fn in_flight(&self) -> bool {
        self.lock().in_flight.is_some()
    }

    /// Whether a batch in flight landed since the last call.
    pub fn take_landed(&self) -> bool {
        std::mem::take(&mut self.lock().landed)
    }

    /// Whether the producer hit a fatal error and must be rebuilt.
    pub fn is_fatal(&self) -> bool {
        self.fatal.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, Batch> {
        // Only this worker's thread takes the lock; a poisoned lock means a
        // panic elsewhere on it, and the batch data is still consistent.
        self.batch.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn fail(&self, what: &str, error: &KafkaError) -> OutboxFailure {
        let message = format!("{what}: {error}");
        match classify(error) {
            Class::Fatal => {
                self.fatal.store(true, Ordering::Relaxed);
                OutboxFailure::Fatal(message)
            }
            Class::Abort | Class::Retry => OutboxFailure::Aborted(message),
        }
    }

    /// Runs `call` until it succeeds, retrying what librdkafka calls
    /// retriable (a broker away, a timeout) with backoff, for at most
    /// [`RETRY_BUDGET`]; past it the producer counts as failed for good.
    fn retry(&self, what: &str, call: impl Fn() -> KafkaResult<()>) -> Result<(), OutboxFailure> {
        let mut backoff = Backoff::new();
        let mut after_shutdown = 0;
        let started = Instant::now();
        loop {
            let error = match call() {
                Ok(()) => {
                    if backoff.attempts > 0 {
                        tracing::info!(worker = self.worker, what, attempts = backoff.attempts, "kafka call succeeded after retries");
                    }
                    return Ok(());
                }
                Err(error) => error,
            };
            if !matches!(classify(&error), Class::Retry) {
                return Err(self.fail(what, &error));
            }
            if started.elapsed() > RETRY_BUDGET {
                self.fatal.store(true, Ordering::Relaxed);
                return Err(OutboxFailure::Fatal(format!(
                    "{what}: still failing after {}s: {error}",
                    started.elapsed().as_secs()
                )));
            }
            tracing::warn!(worker = self.worker, what, error = %error, retry_in_ms = backoff.delay().as_millis() as u64, "kafka call failed; retrying");
            if self.shutdown.load(Ordering::Relaxed) {
                after_shutdown += 1;
                if after_shutdown > RETRIES_AFTER_SHUTDOWN {
                    return Err(OutboxFailure::Interrupted(format!("{what}: {error}")));
                }
                std::thread::sleep(backoff.delay().min(Duration::from_secs(1)));
            } else {
                backoff.wait(&self.shutdown);
            }
        }
    }

    /// Notes that the record at `origin` is being answered for, opening the
    /// batch (and its transaction) if needed.
    pub fn record(&self, origin: &Origin) -> Result<(), OutboxFailure> {
        let mut batch = self.lock();
        if !batch.open {
            self.open_locked(&mut batch)?;
        }
        if origin.source == self.activity_topic {
            batch.activity.advance(origin.partition, origin.offset);
        } else if origin.source == self.signals_topic {
            batch.signals.advance(origin.partition, origin.offset);
        }
        Ok(())
    }

    fn open_locked(&self, batch: &mut Batch) -> Result<(), OutboxFailure> {
        if self.delivery == Delivery::ExactlyOnce {
            self.producer.begin_transaction().map_err(|e| self.fail("begin transaction", &e))?;
        }
        batch.open = true;
        batch.seq += 1;
        batch.sent_before = self.sent.load(Ordering::Relaxed);
        self.seq.store(batch.seq, Ordering::Relaxed);
        self.producer.context().start_batch(batch.seq);
        Ok(())
    }

    /// The open batch's outputs are all sent (at least once): it is in
    /// flight, carrying `carried`.
    fn fly_locked(&self, batch: &mut Batch, carried: Vec<Change>) {
        batch.open = false;
        batch.in_flight = Some(InFlight {
            seq: batch.seq,
            sent: self.sent.load(Ordering::Relaxed) - batch.sent_before,
            activity: std::mem::take(&mut batch.activity),
            signals: std::mem::take(&mut batch.signals),
            changes: std::mem::take(&mut batch.changes),
            carried,
        });
    }

    /// The worker now holds `partition`, its state decided up to
    /// `position` (`None`: not known).
    pub fn hold(&self, partition: i32, position: Option<i64>) {
        self.lock().positions.insert(partition, position);
    }

    /// Changes the broker acknowledged since the last call.
    pub fn take_durable(&self) -> Vec<Change> {
        std::mem::take(&mut self.lock().durable)
    }

    /// Hands over the open batch's state changes, at its end: exactly once
    /// they go into its transaction at once, followed by the position of
    /// every held partition; at least once they wait for the batch to land.
    pub fn changes(&self, changes: Vec<Change>) -> Result<(), OutboxFailure> {
        let Some(topic) = self.changelog.as_deref() else { return Ok(()) };
        let mut batch = self.lock();
        let batch = &mut *batch;
        let first = batch.changes.len();
        batch.changes.extend(changes);
        if self.delivery == Delivery::ExactlyOnce {
            batch.changes.extend(positions_after(&batch.positions, &batch.activity));
            for change in &batch.changes[first..] {
                self.send_change(topic, change)?;
            }
        }
        Ok(())
    }

    /// Sends the changes due (at least once) with the open batch, or, with
    /// none open, as a batch of their own, put in flight at once. Returns
    /// what it sent, which the batch carries.
    fn send_due_locked(&self, batch: &mut Batch) -> Result<Vec<Change>, OutboxFailure> {
        let Some(topic) = self.changelog.as_deref() else { return Ok(Vec::new()) };
        if batch.due.is_empty() {
            return Ok(Vec::new());
        }
        let alone = !batch.open;
        if alone {
            self.open_locked(batch)?;
        }
        let due = std::mem::take(&mut batch.due);
        if let Err(failure) = due.iter().try_for_each(|change| self.send_change(topic, change)) {
            batch.due = due;
            return Err(failure);
        }
        if alone {
            self.fly_locked(batch, due);
            return Ok(Vec::new());
        }
        Ok(due)
    }

    /// Queues one output. Never waits for the broker, only for room in the
    /// local queue when the broker is slower than the engine.
    pub fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: Option<OwnedHeaders>,
    ) -> Result<(), OutboxFailure> {
        let mut record: Output<'_> = BaseRecord::with_opaque_to(topic, self.batch_tag()).payload(payload);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(headers) = headers {
            record = record.headers(headers);
        }
        self.queue(record)
    }

    /// Queues one change of state to its changelog partition; no value is
    /// a tombstone.
    fn send_change(&self, topic: &str, change: &Change) -> Result<(), OutboxFailure> {
        let mut record: Output<'_> = BaseRecord::with_opaque_to(topic, self.batch_tag())
            .partition(change.partition)
            .key(change.key.as_slice())
            .headers(format_header());
        if let Some(value) = &change.value {
            record = record.payload(value.as_slice());
        }
        self.queue(record)
    }

    /// The open batch's sequence number, as its outputs carry it.
    fn batch_tag(&self) -> usize {
        self.seq.load(Ordering::Relaxed) as usize
    }

    fn queue(&self, mut record: Output<'_>) -> Result<(), OutboxFailure> {
        let mut waited_at_shutdown = Duration::ZERO;
        loop {
            match self.producer.send(record) {
                Ok(()) => {
                    self.sent.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    if self.shutdown.load(Ordering::Relaxed) {
                        waited_at_shutdown += QUEUE_FULL_WAIT;
                        if waited_at_shutdown > CALL_TIMEOUT {
                            return Err(OutboxFailure::Interrupted("the output queue does not drain".into()));
                        }
                    }
                    record = back;
                    self.producer.poll(QUEUE_FULL_WAIT);
                }
                Err((error, _)) => return Err(self.fail("produce", &error)),
            }
        }
    }

    /// The end of each of `partitions` of `topic`: how far a checkpoint
    /// taken now reaches into the changelog.
    pub fn ends(&self, topic: &str, partitions: &[i32]) -> KafkaResult<Vec<(i32, i64)>> {
        partitions
            .iter()
            .map(|&p| self.producer.client().fetch_watermarks(topic, p, CALL_TIMEOUT).map(|(_, high)| (p, high)))
            .collect()
    }

    /// Makes the open batch durable and visible with the offsets it
    /// consumed (exactly once), or leaves its outputs in flight (at least
    /// once) once the batch before it has landed. `activity` is the group
    /// consumer (its metadata fences a zombie worker after a rebalance).
    pub fn commit<C: ConsumerContext>(&self, activity: &BaseConsumer<C>) -> Result<Committed, OutboxFailure> {
        let mut batch = self.lock();
        let mut result = self.land_locked(&mut batch, activity, CommitMode::Async);
        let mut carried = Vec::new();
        if result.is_ok() && batch.open && self.delivery == Delivery::ExactlyOnce {
            result = self.commit_transaction(&batch, activity);
        }
        if result.is_ok() && self.delivery == Delivery::AtLeastOnce {
            result = self.send_due_locked(&mut batch).map(|sent| carried = sent);
        }
        match result {
            Ok(()) if !batch.open => Ok(Committed::Nothing),
            Ok(()) => {
                self.commits.fetch_add(1, Ordering::Relaxed);
                if self.delivery == Delivery::ExactlyOnce {
                    let batch = &mut *batch;
                    batch.open = false;
                    advance(&mut batch.positions, &batch.activity);
                    batch.activity.0.clear();
                    batch.signals.0.clear();
                    batch.durable.append(&mut batch.changes);
                    return Ok(Committed::Durable);
                }
                self.fly_locked(&mut batch, carried);
                Ok(Committed::InFlight)
            }
            Err(OutboxFailure::Aborted(reason)) => {
                tracing::warn!(worker = self.worker, reason, "commit failed; aborting the batch");
                self.abort_locked(&mut batch)?;
                Err(OutboxFailure::Aborted(reason))
            }
            Err(other) => Err(other),
        }
    }

    /// Makes the batch in flight durable, if there is one, and the state
    /// changes it leaves, without waiting for the next commit: before a
    /// checkpoint, a rebalance or shutdown. On failure the open batch is
    /// aborted too.
    pub fn land<C: ConsumerContext>(&self, activity: &BaseConsumer<C>) -> Result<(), OutboxFailure> {
        let mut batch = self.lock();
        match self.drain_locked(&mut batch, activity) {
            Err(OutboxFailure::Aborted(reason)) => {
                self.abort_locked(&mut batch)?;
                Err(OutboxFailure::Aborted(reason))
            }
            other => other,
        }
    }

    fn commit_transaction<C: ConsumerContext>(&self, batch: &Batch, activity: &BaseConsumer<C>) -> Result<(), OutboxFailure> {
        // The commit would flush the outputs itself, but measurably slower
        // than waiting for their delivery reports here.
        self.settle()?;
        if !batch.activity.0.is_empty() {
            let offsets = batch.activity.list(&self.activity_topic).map_err(|e| self.fail("offsets", &e))?;
            let group = activity
                .group_metadata()
                .ok_or_else(|| OutboxFailure::Fatal("the activity consumer has no group".into()))?;
            self.retry("send activity offsets", || self.producer.send_offsets_to_transaction(&offsets, &group, CALL_TIMEOUT))?;
        }
        if let (false, Some(signals)) = (batch.signals.0.is_empty(), &self.signals) {
            let offsets = batch.signals.list(&self.signals_topic).map_err(|e| self.fail("offsets", &e))?;
            self.retry("send signal offsets", || {
                self.producer.send_offsets_to_transaction(&offsets, &signals.group, CALL_TIMEOUT)
            })?;
        }
        self.retry("commit transaction", || self.producer.commit_transaction(CALL_TIMEOUT))
    }

    /// Waits until every output so far is delivered or refused: what the
    /// client's `flush` waits for, but woken by the last delivery report
    /// rather than polling for it in 100 ms steps.
    fn settle(&self) -> Result<(), OutboxFailure> {
        let sent = self.sent.load(Ordering::Relaxed);
        self.wait_for_reports(|log| log.wait_settled(sent, CALL_TIMEOUT))
    }

    /// Retries `wait` (a wait on the delivery log that gives up after
    /// [`CALL_TIMEOUT`]) as a flush that timed out.
    fn wait_for_reports(&self, wait: impl Fn(&DeliveryLog) -> bool) -> Result<(), OutboxFailure> {
        self.retry("flush outputs", || {
            if wait(self.producer.context()) {
                Ok(())
            } else {
                Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut))
            }
        })
    }

    /// Lands the batch in flight, then the state changes it leaves due, so
    /// that the changelog holds every batch that landed. Between batches.
    fn drain_locked<C: ConsumerContext>(&self, batch: &mut Batch, activity: &BaseConsumer<C>) -> Result<(), OutboxFailure> {
        self.land_locked(batch, activity, CommitMode::Sync)?;
        // The changes due go in flight on their own, and leave none due.
        self.send_due_locked(batch)?;
        self.land_locked(batch, activity, CommitMode::Sync)
    }

    /// Lands the batch in flight, if there is one; a batch that does not
    /// land counts as aborted.
    fn land_locked<C: ConsumerContext>(
        &self,
        batch: &mut Batch,
        activity: &BaseConsumer<C>,
        mode: CommitMode,
    ) -> Result<(), OutboxFailure> {
        let Some(flight) = batch.in_flight.take() else { return Ok(()) };
        let landed = self.land_flight(&flight, activity, mode);
        match landed {
            Ok(()) => {
                batch.landed = true;
                advance(&mut batch.positions, &flight.activity);
                batch.durable.extend(flight.carried);
                if self.changelog.is_some() {
                    batch.due.extend(flight.changes);
                    batch.due.extend(positions_after(&batch.positions, &Positions::default()));
                }
            }
            Err(_) => self.lost(batch, flight),
        }
        landed
    }

    /// A batch in flight that will not land counts as aborted. What it
    /// carried may not have arrived: it is sent again, first.
    fn lost(&self, batch: &mut Batch, flight: InFlight) {
        self.aborts.fetch_add(1, Ordering::Relaxed);
        batch.due.splice(0..0, flight.carried);
    }

    /// Waits until every output of `flight` settled, then commits its
    /// offsets, unless the broker refused one of them.
    fn land_flight<C: ConsumerContext>(
        &self,
        flight: &InFlight,
        activity: &BaseConsumer<C>,
        mode: CommitMode,
    ) -> Result<(), OutboxFailure> {
        self.wait_for_reports(|log| log.wait_batch_settled(flight.seq, flight.sent, CALL_TIMEOUT))?;
        let refused = self.producer.context().batch_failures(flight.seq);
        if refused > 0 {
            return Err(OutboxFailure::Aborted(format!("{refused} outputs were not delivered")));
        }
        // A lost commit only means some outputs are produced again after a
        // restart, which at-least-once allows.
        if !flight.activity.0.is_empty() {
            let offsets = flight.activity.list(&self.activity_topic).map_err(|e| self.fail("offsets", &e))?;
            if let Err(error) = activity.commit(&offsets, mode) {
                tracing::warn!(worker = self.worker, error = %error, "activity offsets not committed");
            }
        }
        if let (false, Some(signals)) = (flight.signals.0.is_empty(), &self.signals) {
            let offsets = flight.signals.list(&self.signals_topic).map_err(|e| self.fail("offsets", &e))?;
            if let Err(error) = signals.consumer.commit(&offsets, mode) {
                tracing::warn!(worker = self.worker, error = %error, "signal offsets not committed");
            }
        }
        Ok(())
    }

    /// Drops the open batch: nothing of it becomes visible (exactly once),
    /// and its offsets are not committed.
    pub fn abort(&self) -> Result<(), OutboxFailure> {
        let mut batch = self.lock();
        self.abort_locked(&mut batch)
    }

    fn abort_locked(&self, batch: &mut Batch) -> Result<(), OutboxFailure> {
        batch.activity.0.clear();
        batch.signals.0.clear();
        batch.changes.clear();
        if let Some(flight) = batch.in_flight.take() {
            self.lost(batch, flight);
        }
        if !batch.open {
            return Ok(());
        }
        batch.open = false;
        self.aborts.fetch_add(1, Ordering::Relaxed);
        if self.delivery == Delivery::ExactlyOnce {
            self.retry("abort transaction", || self.producer.abort_transaction(CALL_TIMEOUT)).map_err(|e| match e {
                OutboxFailure::Aborted(reason) => {
                    self.fatal.store(true, Ordering::Relaxed);
                    OutboxFailure::Fatal(reason)
                }
                other => other,
            })?;
        }
        Ok(())
    }

    /// Called by the rebalance callback before `partitions` are taken
    /// away: the batch in flight lands and its state changes are written,
    /// so that the next owner starts after it, and the open batch is
    /// aborted.
    pub fn on_revoke<C: ConsumerContext>(&self, partitions: &[i32], activity: &BaseConsumer<C>) {
        let mut batch = self.lock();
        let landed = self.land_locked(&mut batch, activity, CommitMode::Sync);
        if let Err(failure) = &landed {
            tracing::warn!(worker = self.worker, %failure, "the batch in flight did not land before partitions were revoked");
            batch.interrupt = Some(failure.clone());
        }
        if batch.open {
            let outcome = match self.abort_locked(&mut batch) {
                Ok(()) => OutboxFailure::Aborted("partitions revoked".into()),
                Err(failure) => failure,
            };
            tracing::info!(worker = self.worker, outcome = %outcome, "open batch aborted before partitions were revoked");
            batch.interrupt.get_or_insert(outcome);
        }
        if landed.is_ok() {
            if let Err(failure) = self.drain_locked(&mut batch, activity) {
                tracing::warn!(worker = self.worker, %failure, "state changes not written before partitions were revoked");
                batch.interrupt.get_or_insert(failure);
            }
        }
        // The next owner starts from the changelog as it is: changes of
        // these partitions that did not make it would land after its own.
        batch.due.retain(|c| !partitions.contains(&c.partition));
        for partition in partitions {
            batch.positions.remove(partition);
        }
        let membership = &mut batch.membership;
        for partition in partitions {
            // Assigned and revoked before the worker looked: never restored.
            match membership.assigned.iter().position(|p| p == partition) {
                Some(at) => drop(membership.assigned.remove(at)),
                None => membership.revoked.push(*partition),
            }
        }
    }

    /// Called by the rebalance callback after `partitions` were assigned.
    pub fn on_assign(&self, partitions: &[i32]) {
        self.lock().membership.assigned.extend_from_slice(partitions);
    }

    pub fn membership_changed(&self) -> bool {
        !self.lock().membership.is_empty()
    }

    pub fn take_membership(&self) -> Membership {
        std::mem::take(&mut self.lock().membership)
    }

    /// What the source must stop for, looked at once per record under one
    /// lock: a batch a rebalance aborted (`Some(Err)`), or partitions to
    /// settle between batches (`Some(Ok)`).
    pub fn interruption(&self) -> Option<Result<(), OutboxFailure>> {
        let mut batch = self.lock();
        if let Some(failure) = batch.interrupt.take() {
            return Some(Err(failure));
        }
        (!batch.membership.is_empty()).then_some(Ok(()))
    }
}

/// Takes in a landed batch's next offsets.
fn advance(positions: &mut BTreeMap<i32, Option<i64>>, batch: &Positions) {
    for &(partition, next) in &batch.0 {
        positions.insert(partition, Some(next));
    }
}

/// A position record for every held partition, with `batch` taken in.
fn positions_after(positions: &BTreeMap<i32, Option<i64>>, batch: &Positions) -> Vec<Change> {
    positions.iter().map(|(&partition, &position)| position_change(partition, batch.next(partition).or(position))).collect()
}
