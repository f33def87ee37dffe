//! The state on Kafka: every change to a worker's state goes to the
//! changelog topic, in the same transaction as the outputs and the input
//! offsets it came with, to the partition of the activity topic its agent
//! lives in. A worker assigned a partition rebuilds that partition's state
//! from the local checkpoint store (if it has one) and the changelog's
//! tail before it decides anything there. The changelog is compacted: it
//! keeps each entry's latest value, and a tombstone once the entry is gone.

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

pub fn format_header() -> OwnedHeaders {
    OwnedHeaders::new_with_capacity(1).insert(Header { key: HEADER_FORMAT, value: Some(FORMAT_VERSION.to_string().as_bytes()) })
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
    let mut images: BTreeMap<i32, HashMap<Vec<u8>, Vec<u8>>> = BTreeMap::new();
    let mut rebuilt: BTreeMap<i32, Rebuilt> = BTreeMap::new();
    let mut assignment = TopicPartitionList::with_capacity(partitions.len());
    for &partition in partitions {
        let mut from = Offset::Beginning;
        let mut image = HashMap::new();
        let mut from_store = 0;
        if let (Some(store), Some(&position)) = (store, positions.get(&(topic.clone(), partition))) {
            match store.load_partition(partition) {
                Ok(entries) => {
                    from_store = entries.len();
                    image.extend(entries);
                    from = Offset::Offset(position);
                }
                Err(error) => tracing::error!(worker, partition, %error, "stored state unreadable; rebuilding it from the changelog"),
            }
        }
        assignment.add_partition_offset(topic, partition, from).map_err(|e| unavailable(&e))?;
        images.insert(partition, image);
        rebuilt.insert(partition, Rebuilt { partition, from_store, ..Rebuilt::default() });
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
                match message.payload() {
                    Some(value) => drop(image.insert(key.to_vec(), value.to_vec())),
                    None => drop(image.remove(key)),
                }
                out.from_changelog += 1;
                // Only a local store takes the tail; without one it is not copied.
                if store.is_some() {
                    out.tail.push(Change { partition, key: key.to_vec(), value: message.payload().map(<[u8]>::to_vec) });
                }
            }
        }
    }
    Ok(rebuilt
        .into_values()
        .map(|mut r| {
            r.entries = images.remove(&r.partition).unwrap_or_default().into_iter().collect();
            r
        })
        .collect())
}
