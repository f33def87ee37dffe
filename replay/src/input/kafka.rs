//! A range of one or more Kafka topics, read without touching the cluster:
//! partitions are assigned explicitly (no consumer group is joined), offsets
//! are never committed, nothing is produced. Only committed records are read
//! (`read_committed`), as the live engine reads them.
//!
//! The range is fixed when the replay starts: a start offset per partition
//! (the earliest, a given offset, or the first record at or after a time),
//! and an end from the high watermark then (or a given offset or time), so
//! the replay ends even while producers keep writing.
//!
//! Partitions are merged into one stream by event time, then by partition
//! (topics by name, partitions by number), then by offset. A record only
//! leaves the merge when every partition that is not finished has a record
//! waiting, so the order depends on the records alone, never on fetch
//! timing, and per-partition order is kept. A record sorts by the time it
//! carries, whether or not it decodes as a valid event or signal; one
//! without a readable time sorts at the time of the record before it in its
//! partition. The same records written to a file in this order replay to
//! the same bytes.
//!
//! A JSON event is read here only for its ids and time, in place, and
//! decoded by the worker that decides it, as a file's lines are; anything
//! else (an Avro value, a signal) is decoded here.
//!
//! Each partition is read from a queue of its own, and the merge waits only
//! on the partitions it has no record of: librdkafka pre-fetches each
//! partition up to `queued.max.messages.kbytes` (48 MiB shared out over the
//! partitions, from 1 to 8 MiB each, unless set with `--kafka-property`),
//! which bounds the memory, and the merge holds no more than a record per
//! partition. A partition's queue at its bound is fetched again 10 ms after
//! it drains below it (`fetch.queue.backoff.ms`, a second by default).
//!
//! The digest covers each record's value and a newline, in merged order:
//! the digest of a JSON Lines file holding the same values in that order.

use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, Consumer, DefaultConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use vigil::decode::avro::AvroDecoder;
use vigil::decode::{self, DecodeError};
use vigil::event::{Input, Timestamp};
use vigil::verdict::DecisionBrief;

use super::{InputDigest, Item, ReplaySource};
use crate::ReplayError;

/// Where a partition's range starts or ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// The earliest record (for a start) or the high watermark when the
    /// replay starts (for an end).
    Edge,
    /// This offset in every partition (an end is exclusive).
    Offset(i64),
    /// The first record whose Kafka timestamp is at or after this time (an
    /// end is exclusive).
    Time(Timestamp),
}

/// A topic range to replay.
#[derive(Debug, Clone)]
pub struct KafkaRange {
    /// `host:port[,host:port…]`.
    pub brokers: String,
    pub topics: Vec<String>,
    pub from: Bound,
    pub to: Bound,
    /// librdkafka properties (security settings, say), over ours.
    pub properties: BTreeMap<String, String>,
    /// A Schema Registry (`http://host:port`) for Avro schema ids the
    /// shipped schemas (ids 1 to 4) do not answer, as the engine's
    /// `[avro] registry`.
    pub schema_registry: Option<String>,
}

/// The first byte of a value in the Confluent wire format; a JSON value
/// opens with `{`.
const AVRO_MAGIC: u8 = 0;

/// How long a metadata, watermark or time lookup may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(30);
/// With partitions unfinished and nothing arriving for this long, the replay
/// stops rather than wait forever (a broker gone, an open transaction).
const STALL_TIMEOUT: Duration = Duration::from_secs(120);
/// How long one wait on a partition's queue lasts before the stall check.
const POLL_WAIT: Duration = Duration::from_millis(100);
/// librdkafka's pre-fetch over all partitions, in KiB, shared out as each
/// partition's `queued.max.messages.kbytes` within [`PREFETCH_KBYTES_PER`]
/// (unless a property sets it): the memory a replay holds for its input.
const PREFETCH_KBYTES: usize = 48 * 1024;
const PREFETCH_KBYTES_PER: (usize, usize) = (1024, 8 * 1024);

/// What one wait on a partition's queue gave.
enum Fetched {
    Nothing,
    Record { offset: i64, payload: Vec<u8> },
    /// The partition's end as the broker has it now.
    End,
    Failed(String),
}

struct Waiting {
    time: i64,
    offset: i64,
    payload: Vec<u8>,
    /// `None` for a JSON event read only for its time, which the worker
    /// that decides it decodes, and for a published decision.
    decoded: Option<Result<Input, DecodeError>>,
}

struct Partition {
    topic: String,
    partition: i32,
    /// The next offset expected and the exclusive end.
    next: i64,
    end: i64,
    waiting: VecDeque<Waiting>,
    /// The time of the last record queued, for records without one.
    last_time: i64,
}

impl Partition {
    /// Every record of the range has been queued.
    fn fetched(&self) -> bool {
        self.next >= self.end
    }
}

fn kafka_error(what: &str, error: KafkaError) -> ReplayError {
    ReplayError::Input(format!("kafka: {what}: {error}"))
}

/// What the values of a topic range are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Values {
    /// Activity events and signals, decoded as the engine decodes them (a
    /// JSON event by the worker that decides it, as from a file).
    Records,
    /// Decisions the engine published (JSON, or Avro read into the JSON it
    /// stands for), merged by their `time`, the time of the event decided;
    /// not decoded as records.
    Decisions,
}

/// Records of a Kafka topic range, merged by event time.
pub struct KafkaInput {
    consumer: Arc<BaseConsumer>,
    values: Values,
    partitions: Vec<Partition>,
    /// Each partition's own queue, by the partitions' index; none for a
    /// partition with nothing to read.
    queues: Vec<Option<PartitionQueue<DefaultConsumerContext>>>,
    /// Heads of the partitions' queues: (time, partition index, offset).
    heads: BinaryHeap<std::cmp::Reverse<(i64, usize, i64)>>,
    avro: AvroDecoder,
    current: Waiting,
    position: i64,
    total: u64,
    digest: InputDigest,
    last_progress: Instant,
    last_error: Option<String>,
}

impl std::fmt::Debug for KafkaInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaInput").field("partitions", &self.partitions.len()).field("position", &self.position).finish()
    }
}

fn tpl_one(topic: &str, partition: i32, offset: Offset) -> Result<TopicPartitionList, ReplayError> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, offset).map_err(|e| kafka_error("partition list", e))?;
    Ok(tpl)
}

impl KafkaInput {
    /// A range of activity events and signals.
    pub fn open(range: &KafkaRange) -> Result<KafkaInput, ReplayError> {
        KafkaInput::open_values(range, Values::Records)
    }

    /// A range of decisions the engine published, as the baseline of a
    /// replay: merged by the time of the event each decided, so they come
    /// in step with the activity they answer.
    pub fn open_decisions(range: &KafkaRange) -> Result<KafkaInput, ReplayError> {
        KafkaInput::open_values(range, Values::Decisions)
    }

    fn open_values(range: &KafkaRange, values: Values) -> Result<KafkaInput, ReplayError> {
        if range.topics.is_empty() {
            return Err(ReplayError::Input("kafka: no topic to replay".into()));
        }
        let avro = match &range.schema_registry {
            Some(url) => AvroDecoder::shipped().and_then(|d| d.and_registry(url)),
            None => AvroDecoder::shipped(),
        }
        .map_err(|e| ReplayError::Input(format!("avro schemas: {e}")))?;
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &range.brokers)
            .set("client.id", "vigil-replay")
            // Read-only: librdkafka wants a group id to assign partitions,
            // but the group is never joined (no subscription) and no offset
            // is stored or committed under it.
            .set("group.id", "vigil-replay")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest")
            .set("fetch.queue.backoff.ms", "10")
            .set_log_level(RDKafkaLogLevel::Warning);
        let with_properties = |mut config: ClientConfig| {
            for (key, value) in &range.properties {
                config.set(key, value);
            }
            config
        };
        // A consumer to look the range up; the records are read by one made
        // once the partitions are counted, with its share of the pre-fetch.
        let consumer: BaseConsumer =
            with_properties(config.clone()).create().map_err(|e| kafka_error("cannot create a consumer", e))?;
        let mut topics = range.topics.clone();
        topics.sort();
        topics.dedup();
        let mut partitions = Vec::new();
        for topic in &topics {
            let metadata = consumer
                .fetch_metadata(Some(topic), LOOKUP_TIMEOUT)
                .map_err(|e| kafka_error(&format!("metadata of `{topic}`"), e))?;
            let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
                return Err(ReplayError::Input(format!("kafka: no topic `{topic}`")));
            };
            if let Some(error) = found.error() {
                return Err(ReplayError::Input(format!("kafka: topic `{topic}`: {error:?}")));
            }
            let mut numbers: Vec<i32> = found.partitions().iter().map(|p| p.id()).collect();
            numbers.sort_unstable();
            for partition in numbers {
                let (low, high) = consumer
                    .fetch_watermarks(topic, partition, LOOKUP_TIMEOUT)
                    .map_err(|e| kafka_error(&format!("watermarks of `{topic}` [{partition}]"), e))?;
                let start = resolve(&consumer, topic, partition, range.from, low, high)?.max(low);
                let end = resolve(&consumer, topic, partition, range.to, high, high)?.min(high);
                partitions.push(Partition {
                    topic: topic.clone(),
                    partition,
                    next: start,
                    end: end.max(start),
                    waiting: VecDeque::new(),
                    last_time: i64::MIN,
                });
            }
        }
        drop(consumer);
        let share = (PREFETCH_KBYTES / partitions.len().max(1)).clamp(PREFETCH_KBYTES_PER.0, PREFETCH_KBYTES_PER.1);
        config.set("queued.max.messages.kbytes", share.to_string());
        let consumer: Arc<BaseConsumer> =
            Arc::new(with_properties(config).create().map_err(|e| kafka_error("cannot create a consumer", e))?);
        let mut assignment = TopicPartitionList::new();
        for p in partitions.iter().filter(|p| !p.fetched()) {
            assignment
                .add_partition_offset(&p.topic, p.partition, Offset::Offset(p.next))
                .map_err(|e| kafka_error("partition list", e))?;
        }
        // An empty range needs no fetching (and librdkafka refuses an empty
        // assignment from a consumer without a group).
        if assignment.count() > 0 {
            consumer.assign(&assignment).map_err(|e| kafka_error("cannot assign partitions", e))?;
        }
        // Split before the first poll, so no record of them is fetched into
        // the consumer's own queue.
        let mut queues = Vec::with_capacity(partitions.len());
        for p in &partitions {
            queues.push(match p.fetched() {
                true => None,
                false => Some(consumer.split_partition_queue(&p.topic, p.partition).ok_or_else(|| {
                    ReplayError::Input(format!("kafka: no queue for `{}` [{}]", p.topic, p.partition))
                })?),
            });
        }
        let total = partitions.iter().map(|p| (p.end - p.next) as u64).sum();
        Ok(KafkaInput {
            consumer,
            values,
            partitions,
            queues,
            heads: BinaryHeap::new(),
            avro,
            current: Waiting { time: 0, offset: 0, payload: Vec::new(), decoded: None },
            position: 0,
            total,
            digest: InputDigest::default(),
            last_progress: Instant::now(),
            last_error: None,
        })
    }

    /// Waits once on each unfinished partition that has no record waiting,
    /// and queues what it gives: a record of the range, or its end.
    fn poll(&mut self) -> Result<(), ReplayError> {
        // The consumer's own queue carries its errors; every record comes
        // through a partition's queue.
        while let Some(result) = self.consumer.poll(Duration::ZERO) {
            let error = match result {
                Ok(message) => format!("a record of `{}` [{}] outside its queue", message.topic(), message.partition()),
                Err(error) => error.to_string(),
            };
            self.last_error = Some(error);
        }
        for i in 0..self.partitions.len() {
            let p = &self.partitions[i];
            if !p.waiting.is_empty() || p.fetched() {
                continue;
            }
            let fetched = match self.queues[i].as_ref().and_then(|q| q.poll(POLL_WAIT)) {
                None => Fetched::Nothing,
                Some(Ok(message)) => {
                    Fetched::Record { offset: message.offset(), payload: message.payload().unwrap_or_default().to_vec() }
                }
                Some(Err(KafkaError::PartitionEOF(_))) => Fetched::End,
                // librdkafka retries by itself; the stall timeout bounds the
                // wait and its message tells the last error.
                Some(Err(error)) => Fetched::Failed(error.to_string()),
            };
            match fetched {
                Fetched::Nothing => {}
                Fetched::Record { offset, payload } => {
                    self.last_progress = Instant::now();
                    self.queue(i, offset, payload);
                }
                Fetched::End => {
                    self.last_progress = Instant::now();
                    self.check_end(i)?;
                }
                Fetched::Failed(error) => self.last_error = Some(error),
            }
        }
        if self.last_progress.elapsed() > STALL_TIMEOUT {
            let stuck: Vec<String> = self
                .partitions
                .iter()
                .filter(|p| !p.fetched())
                .map(|p| format!("`{}` [{}] at offset {} of {}", p.topic, p.partition, p.next, p.end))
                .collect();
            let last = self.last_error.as_deref().map(|e| format!("; last error: {e}")).unwrap_or_default();
            return Err(ReplayError::Input(format!(
                "kafka: nothing received for {} s with partitions unfinished: {} (broker gone, or a transaction left open?){last}",
                STALL_TIMEOUT.as_secs(),
                stuck.join(", ")
            )));
        }
        Ok(())
    }

    /// Queues a record of partition `i` read at `offset`, if it is in the range.
    fn queue(&mut self, i: usize, offset: i64, mut payload: Vec<u8>) {
        let p = &mut self.partitions[i];
        if offset < p.next || offset >= p.end {
            // Before the range (a re-fetch) or past its end: not ours.
            if offset >= p.end {
                p.next = p.end;
            }
            return;
        }
        let (decoded, time) = match self.values {
            // A JSON event is read in place for its time; anything else is
            // decoded here, and one that does not decode is placed by the
            // time it carries, if any.
            Values::Records => match decode::activity_key(&payload).and_then(|k| Timestamp::parse_rfc3339(k.time?)) {
                Some(time) => (None, Some(time.millis())),
                None => {
                    let decoded = decode::decode(&payload, Some(&self.avro));
                    let time = match &decoded {
                        Ok(input) => Some(input.time()),
                        Err(_) => decode::record_time(&payload, Some(&self.avro)),
                    };
                    (Some(decoded), time.map(Timestamp::millis))
                }
            },
            Values::Decisions => {
                if payload.first() == Some(&AVRO_MAGIC) {
                    payload = self.published_json(&payload, i, offset);
                }
                let brief = DecisionBrief::read(&payload).ok();
                let time = brief.and_then(|b| Timestamp::parse_rfc3339(&b.time)).map(Timestamp::millis);
                (None, time)
            }
        };
        let p = &mut self.partitions[i];
        let time = time.unwrap_or(p.last_time);
        p.last_time = time;
        // Gaps (transaction markers, compaction) are skipped over.
        p.next = offset + 1;
        let first = p.waiting.is_empty();
        p.waiting.push_back(Waiting { time, offset, payload, decoded });
        if first {
            self.heads.push(std::cmp::Reverse((time, i, offset)));
        }
    }

    /// A decision published as Avro, as the JSON line the engine writes
    /// for it; one that does not decode becomes a line that is no decision
    /// (a JSON string saying where it stood and why), which the join counts
    /// as unreadable.
    fn published_json(&self, avro: &[u8], i: usize, offset: i64) -> Vec<u8> {
        match self.avro.decision(avro) {
            Ok(decision) => {
                let mut line = Vec::new();
                decision.write_json(&mut line);
                line
            }
            Err(error) => {
                let p = &self.partitions[i];
                let what = format!("`{}` [{}] offset {offset} is not a decision: {error}", p.topic, p.partition);
                serde_json::Value::String(what).to_string().into_bytes()
            }
        }
    }

    /// A partition reported its end: done when its position is past the range.
    fn check_end(&mut self, i: usize) -> Result<(), ReplayError> {
        let position = self.consumer.position().map_err(|e| kafka_error("position", e))?;
        let p = &mut self.partitions[i];
        if let Some(Offset::Offset(at)) = position.find_partition(&p.topic, p.partition).map(|e| e.offset()) {
            if at >= p.end {
                p.next = p.end;
            }
        }
        Ok(())
    }

    /// True when the earliest head can leave: no unfinished partition is
    /// without a waiting record.
    fn ready(&self) -> bool {
        self.partitions.iter().all(|p| !p.waiting.is_empty() || p.fetched())
    }
}

/// The offset a bound names in one partition.
fn resolve(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    bound: Bound,
    edge: i64,
    high: i64,
) -> Result<i64, ReplayError> {
    match bound {
        Bound::Edge => Ok(edge),
        Bound::Offset(offset) => Ok(offset),
        Bound::Time(time) => {
            let tpl = tpl_one(topic, partition, Offset::Offset(time.millis()))?;
            let found = consumer
                .offsets_for_times(tpl, LOOKUP_TIMEOUT)
                .map_err(|e| kafka_error(&format!("offsets for a time in `{topic}` [{partition}]"), e))?;
            Ok(found
                .find_partition(topic, partition)
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                })
                // No record at or after the time: the range ends at the end.
                .unwrap_or(high))
        }
    }
}

impl ReplaySource for KafkaInput {
    fn next(&mut self) -> Result<Option<Item<'_>>, ReplayError> {
        while !self.ready() {
            self.poll()?;
        }
        let Some(std::cmp::Reverse((_, i, _))) = self.heads.pop() else { return Ok(None) };
        let p = &mut self.partitions[i];
        let Some(record) = p.waiting.pop_front() else { return Ok(None) };
        if let Some(next) = p.waiting.front() {
            self.heads.push(std::cmp::Reverse((next.time, i, next.offset)));
        }
        self.current = record;
        self.position += 1;
        self.digest.update(&self.current.payload);
        self.digest.update(b"\n");
        let decoded = self.current.decoded.take();
        Ok(Some(Item { position: self.position, decoded, payload: &self.current.payload }))
    }

    fn progress(&self) -> (u64, u64) {
        (self.position as u64, self.total)
    }

    fn digest(&self) -> String {
        self.digest.hex()
    }
}

/// The values of a range as JSON Lines, each followed by a newline: what a
/// file of them in merged order would hold (published decisions, for the
/// recorded baseline).
pub struct ValueLines {
    input: KafkaInput,
    line: Vec<u8>,
    at: usize,
}

impl ValueLines {
    pub fn new(input: KafkaInput) -> ValueLines {
        ValueLines { input, line: Vec::new(), at: 0 }
    }

    /// The range's digest as it is read: these lines' bytes.
    pub fn digest(&self) -> InputDigest {
        self.input.digest.clone()
    }
}

impl std::io::Read for ValueLines {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.line.len() {
            self.line.clear();
            self.at = 0;
            match self.input.next().map_err(|e| std::io::Error::other(e.to_string()))? {
                Some(item) => {
                    self.line.extend_from_slice(item.payload);
                    self.line.push(b'\n');
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.line.len() - self.at);
        buf[..n].copy_from_slice(&self.line[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
