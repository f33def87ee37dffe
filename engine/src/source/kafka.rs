//! Records from Kafka: the worker's share of the activity topic (a consumer
//! group member) interleaved with every partition of the signals topic
//! (assigned, since a signal applies wherever the agent it names lives).
//!
//! The source cuts the stream into batches: it ends one (returns
//! `Ok(false)`) when its window has passed, when the batch is full, or
//! after a quiet spell with nothing in it. The window counts from the
//! batch's first record or, if that record was already waiting, from the
//! end of the batch before: records that came while the worker committed
//! have waited since then, and a commit interval counts from the last
//! commit. [`crate::pipeline::run`] then flushes the sink, which commits
//! the batch, and the worker starts the next run. A batch is the unit of
//! commit and of rewind.
//!
//! The window is the commit interval while the worker keeps up with its
//! input. A worker that is saturated (it spent under a tenth of its last
//! batch waiting for input) doubles the window, up to the longest interval
//! configured: each commit, and each changelog record of an entry the batch
//! changed, then carries more events. Its outputs were waiting in the
//! input's backlog anyway. The first batch that waits for input goes back
//! to the commit interval.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::Offset;

use super::{Record, Source, SourceError};
use crate::kafka::outbox::SignalsConsumer;
use crate::kafka::rebalance::ActivityConsumer;

/// With nothing to commit, the source still returns this often so the
/// worker can notice a shutdown.
const QUIET_RETURN: Duration = Duration::from_millis(100);
/// The longest the activity poll blocks while signals could be waiting.
const SIGNAL_POLL_INTERVAL: Duration = Duration::from_millis(10);
/// While activity flows, signals are polled once per this many records.
const ACTIVITY_PER_SIGNAL_POLL: u32 = 64;
const SEEK_TIMEOUT: Duration = Duration::from_secs(5);
/// A poll that takes this long waited for input; a shorter one took a
/// record that was already there.
const WAIT: Duration = Duration::from_micros(50);

/// The key and headers of the record last handed out, for the sink: a
/// dead letter keeps its original key and headers, and every output carries
/// the input's trace context.
#[derive(Debug, Default)]
pub struct LastInput {
    pub key: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl LastInput {
    fn fill(&mut self, message: &BorrowedMessage<'_>) {
        match (message.key(), &mut self.key) {
            (Some(key), Some(ours)) => {
                ours.clear();
                ours.extend_from_slice(key);
            }
            (Some(key), None) => self.key = Some(key.to_vec()),
            (None, _) => self.key = None,
        }
        self.headers.clear();
        if let Some(headers) = message.headers() {
            for header in headers.iter() {
                self.headers.push((header.key.to_owned(), header.value.map(<[u8]>::to_vec)));
            }
        }
    }

    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(k, _)| k == name).and_then(|(_, v)| v.as_deref())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Feed {
    Activity,
    Signals,
}

#[derive(Debug, Default)]
struct Batch {
    records: usize,
    /// When its window started: at its first record, or at the end of the
    /// batch before if that record was already waiting. It ends a window
    /// later.
    started: Option<Instant>,
    /// Time spent waiting for input since its first record.
    idle: Duration,
    /// The first offset handed out per partition: where to rewind to.
    starts: Vec<(Feed, i32, i64)>,
    ended: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// A batch's window while the worker keeps up.
    pub interval: Duration,
    /// The longest window, while it is saturated.
    pub max_interval: Duration,
    pub max_records: usize,
}

impl BatchLimits {
    /// The window after a batch that ran `length` in a window of `window`,
    /// `idle` of it waiting for input.
    fn next_window(&self, window: Duration, length: Duration, idle: Duration) -> Duration {
        if idle * 10 < length {
            (window * 2).clamp(self.interval, self.max_interval.max(self.interval))
        } else {
            self.interval
        }
    }
}

pub struct KafkaSource {
    worker: usize,
    activity: Arc<ActivityConsumer>,
    signals: Option<Arc<SignalsConsumer>>,
    activity_topic: String,
    signals_topic: String,
    last: Rc<RefCell<LastInput>>,
    limits: BatchLimits,
    /// How long the next batch runs.
    window: Duration,
    batch: Batch,
    /// When the last batch ended.
    ended: Option<Instant>,
    /// The first offsets of the batch whose outputs are in flight (at least
    /// once): a rewind goes back to them until it lands.
    in_flight: Vec<(Feed, i32, i64)>,
    signal_credit: u32,
}

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource")
            .field("worker", &self.worker)
            .field("activity", &self.activity_topic)
            .field("signals", &self.signals.as_ref().map(|_| &self.signals_topic))
            .finish()
    }
}

impl KafkaSource {
    pub(crate) fn new(
        worker: usize,
        activity: Arc<ActivityConsumer>,
        signals: Option<Arc<SignalsConsumer>>,
        topics: (&str, &str),
        last: Rc<RefCell<LastInput>>,
        limits: BatchLimits,
    ) -> KafkaSource {
        KafkaSource {
            worker,
            activity,
            signals,
            activity_topic: topics.0.to_owned(),
            signals_topic: topics.1.to_owned(),
            last,
            limits,
            window: limits.interval,
            batch: Batch::default(),
            ended: None,
            in_flight: Vec::new(),
            signal_credit: 0,
        }
    }

    /// Records handed out in the current (or just ended) batch.
    pub fn batch_records(&self) -> usize {
        self.batch.records
    }

    /// The batch that just ended is in flight: a rewind still goes back to
    /// its start.
    pub fn mark_in_flight(&mut self) {
        self.in_flight = std::mem::take(&mut self.batch.starts);
    }

    /// The batch in flight landed.
    pub fn landed(&mut self) {
        self.in_flight.clear();
    }

    /// Seeks every partition read since the last commit (in the batch in
    /// flight or in this one) back to its first offset since: the position
    /// of the last commit. Partitions no longer assigned are skipped; their
    /// next owner starts from the commit.
    pub fn rewind(&mut self) {
        let mut starts = std::mem::take(&mut self.in_flight);
        for start in self.batch.starts.drain(..) {
            // The batch in flight read each partition earlier.
            if !starts.iter().any(|(f, p, _)| (*f, *p) == (start.0, start.1)) {
                starts.push(start);
            }
        }
        for (feed, partition, offset) in starts {
            let result = match feed {
                Feed::Activity => self.activity.seek(&self.activity_topic, partition, Offset::Offset(offset), SEEK_TIMEOUT),
                Feed::Signals => match &self.signals {
                    Some(signals) => signals.seek(&self.signals_topic, partition, Offset::Offset(offset), SEEK_TIMEOUT),
                    None => Ok(()),
                },
            };
            match result {
                Ok(()) => tracing::info!(worker = self.worker, feed = ?feed, partition, offset, "rewound to the last commit"),
                Err(error) => tracing::debug!(worker = self.worker, feed = ?feed, partition, error = %error, "not rewound"),
            }
        }
        self.batch = Batch::default();
    }

    fn end_batch(&mut self) -> Result<bool, SourceError> {
        let batch = &mut self.batch;
        batch.ended = true;
        self.ended = Some(Instant::now());
        if let Some(started) = batch.started {
            self.window = self.limits.next_window(self.window, started.elapsed(), batch.idle);
        }
        Ok(false)
    }

    /// Hands out `message`; `waited` says whether the poll waited for it.
    fn take(&mut self, feed: Feed, message: &BorrowedMessage<'_>, record: &mut Record, waited: bool) {
        record.payload.clear();
        record.payload.extend_from_slice(message.payload().unwrap_or_default());
        if record.origin.source != message.topic() {
            record.origin.source.clear();
            record.origin.source.push_str(message.topic());
        }
        record.origin.partition = message.partition();
        record.origin.offset = message.offset();
        if let Ok(mut last) = self.last.try_borrow_mut() {
            last.fill(message);
        }
        let batch = &mut self.batch;
        if batch.records == 0 {
            batch.started = Some(match self.ended {
                Some(ended) if !waited => ended,
                _ => Instant::now(),
            });
        }
        batch.records += 1;
        let partition = message.partition();
        if !batch.starts.iter().any(|(f, p, _)| *f == feed && *p == partition) {
            batch.starts.push((feed, partition, message.offset()));
        }
    }

    /// One non-blocking look at the signals topic.
    fn poll_signals(&mut self, record: &mut Record) -> Result<bool, SourceError> {
        self.signal_credit = ACTIVITY_PER_SIGNAL_POLL;
        let Some(signals) = self.signals.clone() else { return Ok(false) };
        match signals.poll(Duration::ZERO) {
            Some(Ok(message)) => {
                self.take(Feed::Signals, &message, record, false);
                Ok(true)
            }
            Some(Err(error)) => self.consumer_error("signals", error).map(|()| false),
            None => Ok(false),
        }
    }

    /// Transient errors (a broker away) are logged and waited out;
    /// librdkafka reconnects by itself.
    fn consumer_error(&self, feed: &str, error: KafkaError) -> Result<(), SourceError> {
        match error {
            KafkaError::PartitionEOF(_) => Ok(()),
            KafkaError::MessageConsumptionFatal(code) => {
                Err(SourceError::Kafka(format!("{feed} consumer failed for good: {code}")))
            }
            other => {
                tracing::warn!(worker = self.worker, feed, error = %other, "consumer error");
                Ok(())
            }
        }
    }
}

impl Source for KafkaSource {
    fn next_into(&mut self, record: &mut Record) -> Result<bool, SourceError> {
        if self.batch.ended {
            self.batch = Batch::default();
        }
        let quiet_until = Instant::now() + QUIET_RETURN;
        loop {
            // A batch a rebalance aborted goes back to the last commit;
            // partitions that came or went are settled between batches.
            match self.activity.context().outbox.interruption() {
                Some(Err(failure)) => return Err(SourceError::Kafka(failure.to_string())),
                Some(Ok(())) => return self.end_batch(),
                None => {}
            }
            let now = Instant::now();
            let until = match self.batch.started.map(|started| started + self.window) {
                _ if self.batch.records >= self.limits.max_records => return self.end_batch(),
                Some(deadline) if now >= deadline => return self.end_batch(),
                Some(deadline) => deadline,
                None if now >= quiet_until => return self.end_batch(),
                None => quiet_until,
            };
            if self.signal_credit == 0 && self.poll_signals(record)? {
                return Ok(true);
            }
            let mut wait = until.saturating_duration_since(now);
            if self.signals.is_some() {
                wait = wait.min(SIGNAL_POLL_INTERVAL);
            }
            let activity = Arc::clone(&self.activity);
            let polled = Instant::now();
            let message = activity.poll(wait);
            let waited = polled.elapsed();
            if self.batch.started.is_some() && waited >= WAIT {
                self.batch.idle += waited;
            }
            match message {
                Some(Ok(message)) => {
                    self.signal_credit = self.signal_credit.saturating_sub(1);
                    self.take(Feed::Activity, &message, record, waited >= WAIT);
                    return Ok(true);
                }
                Some(Err(error)) => self.consumer_error("activity", error)?,
                None => {
                    if self.poll_signals(record)? {
                        return Ok(true);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn limits() -> BatchLimits {
        BatchLimits { interval: 50 * MS, max_interval: 200 * MS, max_records: 20_000 }
    }

    #[test]
    fn a_saturated_worker_doubles_its_window_up_to_the_longest() {
        let limits = limits();
        let mut window = limits.interval;
        let mut seen = vec![];
        for _ in 0..4 {
            window = limits.next_window(window, window, 2 * MS);
            seen.push(window.as_millis());
        }
        assert_eq!(seen, [100, 200, 200, 200]);
    }

    #[test]
    fn a_batch_that_waited_for_input_goes_back_to_the_commit_interval() {
        let limits = limits();
        assert_eq!(limits.next_window(200 * MS, 200 * MS, 20 * MS), 50 * MS);
        assert_eq!(limits.next_window(200 * MS, 200 * MS, 19 * MS), 200 * MS);
        // A full batch that ended early was still saturated.
        assert_eq!(limits.next_window(100 * MS, 30 * MS, MS), 200 * MS);
    }

    #[test]
    fn equal_intervals_keep_the_window_fixed() {
        let fixed = BatchLimits { max_interval: 50 * MS, ..limits() };
        assert_eq!(fixed.next_window(50 * MS, 50 * MS, Duration::ZERO), 50 * MS);
        assert_eq!(fixed.next_window(50 * MS, 50 * MS, 50 * MS), 50 * MS);
    }
}
