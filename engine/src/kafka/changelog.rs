//! The state on Kafka: every change to a worker's state goes to the
//! changelog topic, in the same transaction as the outputs and the input
//! offsets it came with, to the partition of the activity topic its agent
//! lives in. A worker assigned a partition rebuilds that partition's state
//! from the local checkpoint store (if it has one) and the changelog's
//! tail before it decides anything there. The changelog is compacted: it
//! keeps each entry's latest value, and a tombstone once the entry is gone.
//!
//! Each batch's changes to a partition end with a position record: the
//! next input offset of that partition the state has decided. A rebuilt
//! state is read up to the last position record and the worker reads its
//! input from that position, so the state it decides with is exactly the
//! fold of what came before. Changes after the last position record are a
//! batch whose writing was cut short; they are left out.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::{Offset, TopicPartitionList};

use super::client::{self, ClientLog};
use crate::checkpoint::{CheckpointStore, Entries, FORMAT_VERSION};
use crate::config::KafkaConfig;
use crate::state::Change;

/// Every changelog record says which snapshot format its value is in.
pub const HEADER_FORMAT: &str = "vigil.state.format";
const POLL: Duration = Duration::from_millis(100);
/// How long rebuilding may wait on a broker that does not answer.
const REBUILD_TIMEOUT: Duration = Duration::from_secs(300);

/// The key of a partition's position record; no entry's key is one byte `p`.
pub const POSITION_KEY: &[u8] = b"p";
/// A position record's value for a partition whose position is not known.
const UNKNOWN: i64 = -1;

pub fn format_header() -> OwnedHeaders {
    OwnedHeaders::new_with_capacity(1).insert(Header { key: HEADER_FORMAT, value: Some(FORMAT_VERSION.to_string().as_bytes()) })
}

/// The record saying that `partition`'s state holds every input record
/// before `position`.
pub fn position_change(partition: i32, position: Option<i64>) -> Change {
    Change { partition, key: POSITION_KEY.to_vec(), value: Some(position.unwrap_or(UNKNOWN).to_be_bytes().to_vec()) }
}

pub(crate) fn read_position(value: &[u8]) -> Option<i64> {
    let position = i64::from_be_bytes(value.try_into().ok()?);
    (position != UNKNOWN).then_some(position)
}

/// One partition's state, rebuilt.
#[derive(Debug, Default)]
pub struct Rebuilt {
    pub partition: i32,
    pub entries: Entries,
    /// Entries read from the local store.
    pub from_store: usize,
    /// Changelog records read after the store's position.
    pub from_changelog: usize,
    /// What the changelog had beyond the store: the store takes it at the
    /// next checkpoint. Empty without a store.
    pub tail: Vec<Change>,
    /// The next input offset the state has decided, if known: where the
    /// worker starts reading.
    pub position: Option<i64>,
    /// Changes after the last position record, left out.
    pub unfinished: usize,
}

/// One partition's image as it is read: every change is applied at once,
/// and what it replaced is kept until the next position record, to put
/// back if the changelog ends before one.
#[derive(Debug, Default)]
struct Image {
    entries: HashMap<Vec<u8>, Vec<u8>>,
    /// Whether this partition's changelog has position records at all
    /// (one written before them has none, and is taken whole).
    positioned: bool,
    /// Per entry changed since the last position record, its value before.
    before: HashMap<Vec<u8>, Option<Vec<u8>>>,
    /// The length of the tail at the last position record.
    tail_at_position: usize,
}

impl Image {
    /// Starts from what the local store holds, its position record included.
    fn load(&mut self, entries: Entries, out: &mut Rebuilt) {
        out.from_store = entries.len();
        self.entries.extend(entries);
        if let Some(value) = self.entries.remove(POSITION_KEY) {
            out.position = read_position(&value);
            self.positioned(0);
        }
    }

    /// Takes in one changelog record of `out`'s partition; with `keep_tail`
    /// (a local store will take it), also keeps a copy in `out.tail`.
    fn read(&mut self, out: &mut Rebuilt, key: &[u8], value: Option<&[u8]>, keep_tail: bool) {
        out.from_changelog += 1;
        if keep_tail {
            out.tail.push(Change { partition: out.partition, key: key.to_vec(), value: value.map(<[u8]>::to_vec) });
        }
        if key == POSITION_KEY {
            out.position = value.and_then(read_position);
            self.positioned(out.tail.len());
        } else {
            self.apply(key, value);
        }
    }

    fn apply(&mut self, key: &[u8], value: Option<&[u8]>) {
        let old = match value {
            Some(value) => self.entries.insert(key.to_vec(), value.to_vec()),
            None => self.entries.remove(key),
        };
        // Before the first position record nothing would be put back: the
        // record clears what is kept, and without one all is taken whole.
        // (In a compacted changelog, that is nearly all of it.)
        if self.positioned && !self.before.contains_key(key) {
            self.before.insert(key.to_vec(), old);
        }
    }

    fn positioned(&mut self, tail: usize) {
        self.positioned = true;
        self.before.clear();
        self.tail_at_position = tail;
    }

    /// Puts back what came after the last position record, and hands the
    /// entries to `out`.
    fn finish(mut self, out: &mut Rebuilt) {
        if self.positioned {
            out.unfinished = self.before.len();
            for (key, old) in self.before.drain() {
                match old {
                    Some(value) => drop(self.entries.insert(key, value)),
                    None => drop(self.entries.remove(&key)),
                }
            }
            out.tail.truncate(self.tail_at_position);
        }
        out.entries = self.entries.into_iter().collect();
    }
}

/// Changes committed since the last checkpoint, latest value per entry.
#[derive(Debug, Default)]
pub(crate) struct Pending(BTreeMap<(i32, Vec<u8>), Option<Vec<u8>>>);

impl Pending {
    pub fn add(&mut self, changes: impl IntoIterator<Item = Change>) {
        for c in changes {
            self.0.insert((c.partition, c.key), c.value);
        }
    }

    /// Puts back changes a failed checkpoint did not write, under any newer ones.
    pub fn put_back(&mut self, changes: Vec<Change>) {
        for c in changes {
            self.0.entry((c.partition, c.key)).or_insert(c.value);
        }
    }

    pub fn take(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.0).into_iter().map(|((partition, key), value)| Change { partition, key, value }).collect()
    }
}

#[derive(Debug)]
pub enum RebuildError {
    /// The changelog holds what this build cannot read.
    Refused(String),
    /// The broker did not let the changelog be read to its end.
    Unavailable(String),
    Interrupted,
}

/// Rebuilds the state of `partitions`: what the store holds for each, then
/// the changelog from the store's position (or from its start) to its end.
pub fn rebuild(
    config: &KafkaConfig,
    worker: usize,
    store: Option<&dyn CheckpointStore>,
    partitions: &[i32],
    shutdown: &AtomicBool,
) -> Result<Vec<Rebuilt>, RebuildError> {
    let unavailable = |e: &dyn std::fmt::Display| RebuildError::Unavailable(e.to_string());
    let topic = &config.topics.changelog;
    let positions = match store.map(CheckpointStore::offsets).transpose() {
        Ok(positions) => positions.unwrap_or_default(),
        Err(error) => {
            tracing::error!(worker, %error, "checkpoint store unreadable; rebuilding from the changelog alone");
            Default::default()
        }
    };
    let mut images: BTreeMap<i32, Image> = BTreeMap::new();
    let mut rebuilt: BTreeMap<i32, Rebuilt> = BTreeMap::new();
    let mut assignment = TopicPartitionList::with_capacity(partitions.len());
    for &partition in partitions {
        let mut from = Offset::Beginning;
        let mut image = Image::default();
        let mut out = Rebuilt { partition, ..Rebuilt::default() };
        if let (Some(store), Some(&offset)) = (store, positions.get(&(topic.clone(), partition))) {
            match store.load_partition(partition) {
                Ok(entries) => {
                    image.load(entries, &mut out);
                    from = Offset::Offset(offset);
                }
                Err(error) => tracing::error!(worker, partition, %error, "stored state unreadable; rebuilding it from the changelog"),
            }
        }
        assignment.add_partition_offset(topic, partition, from).map_err(|e| unavailable(&e))?;
        images.insert(partition, image);
        rebuilt.insert(partition, out);
    }
    let reader: BaseConsumer<ClientLog> = client::changelog_reader(config, worker)
        .create_with_context(ClientLog { worker, role: "changelog reader" })
        .map_err(|e| unavailable(&format!("changelog reader: {e}")))?;
    reader.assign(&assignment).map_err(|e| unavailable(&format!("assign `{topic}`: {e}")))?;
    let mut open: Vec<i32> = partitions.to_vec();
    let started = Instant::now();
    while !open.is_empty() {
        if shutdown.load(Ordering::Relaxed) {
            return Err(RebuildError::Interrupted);
        }
        if started.elapsed() > REBUILD_TIMEOUT {
            return Err(RebuildError::Unavailable(format!(
                "changelog `{topic}` partitions {open:?} not read to their end within {}s",
                REBUILD_TIMEOUT.as_secs()
            )));
        }
        match reader.poll(POLL) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(partition))) => open.retain(|p| *p != partition),
            Some(Err(error)) => tracing::warn!(worker, %error, "changelog reader error"),
            Some(Ok(message)) => {
                let partition = message.partition();
                let format = message
                    .headers()
                    .and_then(|h| h.iter().find(|h| h.key == HEADER_FORMAT))
                    .and_then(|h| h.value)
                    .and_then(|v| std::str::from_utf8(v).ok()?.parse::<u64>().ok());
                if format != Some(FORMAT_VERSION) {
                    return Err(RebuildError::Refused(format!(
                        "changelog `{topic}` partition {partition} offset {} has state format {}; this build reads v{FORMAT_VERSION}",
                        message.offset(),
                        format.map_or("(none)".into(), |v| format!("v{v}"))
                    )));
                }
                let Some(key) = message.key() else { continue };
                let (Some(image), Some(out)) = (images.get_mut(&partition), rebuilt.get_mut(&partition)) else { continue };
                // Only a local store takes the tail; without one it is not copied.
                image.read(out, key, message.payload(), store.is_some());
            }
        }
    }
    Ok(rebuilt
        .into_values()
        .map(|mut r| {
            images.remove(&r.partition).unwrap_or_default().finish(&mut r);
            r
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(key: &str, value: Option<&str>) -> Change {
        Change { partition: 0, key: key.as_bytes().to_vec(), value: value.map(|v| v.as_bytes().to_vec()) }
    }

    fn entries(pairs: &[(&str, &str)]) -> Entries {
        pairs.iter().map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec())).collect()
    }

    /// Reads `records` as `rebuild` does, after what a store holds, if
    /// anything; the entries come out sorted.
    fn read(stored: Option<Entries>, records: &[Change]) -> Rebuilt {
        let (mut image, mut out) = (Image::default(), Rebuilt::default());
        if let Some(stored) = stored {
            image.load(stored, &mut out);
        }
        for record in records {
            image.read(&mut out, &record.key, record.value.as_deref(), true);
        }
        image.finish(&mut out);
        out.entries.sort();
        out
    }

    #[test]
    fn changes_after_the_last_position_are_left_out() {
        let records = [
            change("a", Some("1")),
            change("b", Some("1")),
            position_change(0, Some(10)),
            change("a", Some("2")),
            change("b", None),
            change("c", Some("1")),
        ];
        let out = read(None, &records);
        assert_eq!(out.entries, entries(&[("a", "1"), ("b", "1")]));
        assert_eq!(out.tail, records[..3]);
        assert_eq!(out.position, Some(10));
        assert_eq!(out.unfinished, 3);
    }

    #[test]
    fn a_finished_batch_is_taken_whole() {
        let records = [change("a", Some("2")), change("b", None), position_change(0, Some(12))];
        let out = read(Some(entries(&[("a", "1"), ("b", "1")])), &records);
        assert_eq!(out.entries, entries(&[("a", "2")]));
        assert_eq!(out.tail.len(), 3);
        assert_eq!((out.position, out.unfinished), (Some(12), 0));
    }

    /// A store that holds a position starts the image positioned: a tail
    /// with no position record of its own is a batch cut short.
    #[test]
    fn after_a_stored_position_an_unfinished_tail_is_left_out() {
        let mut stored = entries(&[("a", "1")]);
        let position = position_change(0, Some(7));
        stored.push((position.key, position.value.unwrap_or_default()));
        let out = read(Some(stored), &[change("a", Some("2")), change("b", Some("1"))]);
        assert_eq!(out.entries, entries(&[("a", "1")]));
        assert!(out.tail.is_empty());
        assert_eq!((out.position, out.unfinished), (Some(7), 2));
    }

    /// A changelog written before position records is taken as it is.
    #[test]
    fn a_changelog_without_positions_is_taken_whole() {
        let out = read(None, &[change("a", Some("1")), change("b", Some("1"))]);
        assert_eq!(out.entries.len(), 2);
        assert_eq!(out.tail.len(), 2);
        assert_eq!((out.position, out.unfinished), (None, 0));
    }

    #[test]
    fn a_position_not_known_reads_as_none() {
        let unknown = position_change(3, None);
        assert_eq!((unknown.partition, unknown.key.as_slice()), (3, POSITION_KEY));
        assert_eq!(unknown.value.as_deref().and_then(read_position), None);
        assert_eq!(position_change(3, Some(0)).value.as_deref().and_then(read_position), Some(0));
        assert_eq!(read_position(b"short"), None);
    }
}
