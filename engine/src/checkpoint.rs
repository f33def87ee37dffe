//! Checkpoints: the state's changed entries, and how far into the
//! changelog they reach, written in one atomic transaction.
//!
//! On Kafka the changelog topic is the state's source of truth: every
//! change is in it, in the same transaction as the outputs and the input
//! offsets it answers for. The local store is a cache of it, so that a
//! restart reads only the changelog's tail rather than all of it. Entries
//! are stored under their activity partition, so a worker that is assigned
//! a partition loads just that partition's agents.
//!
//! The store is a small trait; [`RedbStore`] is the one the engine uses (see
//! the README's design notes and BENCHMARKS.md for why redb over sled).

use std::collections::BTreeMap;
use std::path::Path;

use crate::state::{Change, RestoreError, State, StateConfig};

/// The snapshot layout this build writes and reads, in the store and on the
/// changelog. Bump it when an entry's encoding changes; an older or newer
/// snapshot is then refused whole.
pub const FORMAT_VERSION: u64 = 4;

/// Positions: (topic, partition) → the next offset to read.
pub type Offsets = BTreeMap<(String, i32), i64>;

/// One partition's stored entries: (entry key, encoded value).
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// What a store holds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stored {
    pub partitions: BTreeMap<i32, Entries>,
    pub offsets: Offsets,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The store file cannot be opened or read: corrupt, truncated, or not a store.
    #[error("checkpoint store `{path}` is unreadable: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("checkpoint store `{path}` has snapshot format v{found}; this build reads v{FORMAT_VERSION}")]
    Incompatible { path: String, found: u64 },
    #[error("checkpoint write failed: {0}")]
    Write(String),
    #[error(transparent)]
    Restore(#[from] RestoreError),
}

/// An embedded store for state entries and positions. Workers of one
/// process share it; each writes only the partitions it holds.
pub trait CheckpointStore: Send + Sync {
    /// Applies `changes` (a value, or `None` to delete) and records
    /// `offsets`, atomically: after a crash either all of it is there or
    /// none.
    fn commit(&self, changes: &[Change], offsets: &Offsets) -> Result<(), CheckpointError>;

    /// Everything stored.
    fn load(&self) -> Result<Stored, CheckpointError>;

    /// The entries stored for one partition.
    fn load_partition(&self, partition: i32) -> Result<Entries, CheckpointError>;

    /// The positions stored.
    fn offsets(&self) -> Result<Offsets, CheckpointError>;
}

/// The store key of a change: its partition, big-endian, then the entry key.
pub fn store_key(partition: i32, key: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(4 + key.len());
    bytes.extend_from_slice(&partition.to_be_bytes());
    bytes.extend_from_slice(key);
    bytes
}

/// Splits a store key into its partition and entry key.
pub fn split_key(bytes: &[u8]) -> Option<(i32, &[u8])> {
    let partition = i32::from_be_bytes(bytes.get(..4)?.try_into().ok()?);
    Some((partition, &bytes[4..]))
}

/// Writes what changed in `state` since the last checkpoint (one
/// partition, as on files), with `offsets`.
pub fn checkpoint(state: &mut State, store: &dyn CheckpointStore, offsets: &Offsets) -> Result<usize, CheckpointError> {
    let changes = state.take_changes(&[0]);
    store.commit(&changes, offsets)?;
    Ok(changes.len())
}

/// Rebuilds the state of every stored partition and the positions to resume from.
pub fn restore(store: &dyn CheckpointStore, config: StateConfig) -> Result<(State, Offsets), CheckpointError> {
    let stored = store.load()?;
    let mut state = State::new(config);
    for (partition, entries) in stored.partitions {
        state.absorb(partition, entries)?;
    }
    Ok((state, stored.offsets))
}

/// A checkpoint as a replay starts from it: the state a live engine had
/// stored, and where each partition's input stood.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Each activity partition's state entries.
    pub partitions: BTreeMap<i32, Entries>,
    /// Each partition's next input offset: the first record the stored
    /// state has not seen. Absent for a partition stored without one.
    pub positions: BTreeMap<i32, i64>,
    /// SHA-256 of every partition's entries and position, in order.
    pub sha256: String,
}

/// Reads the store at `path` (a `[checkpoint] dir` or the store file in
/// it) whole. A missing, unreadable or other-format store is refused. The
/// store is locked while an engine has it open: read a stopped engine's
/// store, or a copy.
pub fn snapshot(path: &Path) -> Result<Snapshot, CheckpointError> {
    use sha2::{Digest, Sha256};
    let file = if path.is_dir() { path.join(crate::kafka::STORE_FILE) } else { path.to_path_buf() };
    if !file.is_file() {
        let reason = "no checkpoint store there".to_owned();
        return Err(CheckpointError::Unreadable { path: file.display().to_string(), reason });
    }
    let stored = RedbStore::open(&file)?.load()?;
    let mut snapshot = Snapshot::default();
    let mut hasher = Sha256::new();
    for (partition, mut entries) in stored.partitions {
        hasher.update(partition.to_be_bytes());
        for (key, value) in &entries {
            for part in [key, value] {
                hasher.update((part.len() as u64).to_be_bytes());
                hasher.update(part);
            }
        }
        let at = entries.iter().position(|(key, _)| key == crate::kafka::changelog::POSITION_KEY);
        if let Some((_, value)) = at.map(|i| entries.remove(i)) {
            if let Some(position) = crate::kafka::changelog::read_position(&value) {
                snapshot.positions.insert(partition, position);
            }
        }
        snapshot.partitions.insert(partition, entries);
    }
    snapshot.sha256 = hex::encode(hasher.finalize());
    Ok(snapshot)
}

mod redb_store {
    use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

    use super::*;

    const ENTRIES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("entries");
    const OFFSETS: TableDefinition<(&str, i32), i64> = TableDefinition::new("offsets");
    const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

    /// Checkpoints in a redb file: copy-on-write B-trees with checksums, so a
    /// torn or garbled file is detected rather than half-read.
    pub struct RedbStore {
        db: Database,
        path: String,
    }

    impl std::fmt::Debug for RedbStore {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("RedbStore").field("path", &self.path).finish()
        }
    }

    impl RedbStore {
        /// Opens or creates the store; refuses a file of another snapshot format.
        pub fn open(path: &Path) -> Result<RedbStore, CheckpointError> {
            let name = path.display().to_string();
            let unreadable = |e: &dyn std::fmt::Display| CheckpointError::Unreadable { path: name.clone(), reason: e.to_string() };
            let db = Database::create(path).map_err(|e| unreadable(&e))?;
            let store = RedbStore { db, path: name.clone() };
            let txn = store.db.begin_write().map_err(|e| unreadable(&e))?;
            {
                let mut meta = txn.open_table(META).map_err(|e| unreadable(&e))?;
                let found = meta.get("format").map_err(|e| unreadable(&e))?.map(|v| v.value());
                match found {
                    Some(v) if v != FORMAT_VERSION => return Err(CheckpointError::Incompatible { path: name, found: v }),
                    Some(_) => {}
                    None => {
                        meta.insert("format", FORMAT_VERSION).map_err(|e| unreadable(&e))?;
                    }
                }
                txn.open_table(ENTRIES).map_err(|e| unreadable(&e))?;
                txn.open_table(OFFSETS).map_err(|e| unreadable(&e))?;
            }
            txn.commit().map_err(|e| unreadable(&e))?;
            Ok(store)
        }
    }

    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Half {
        Lower,
        Upper,
    }

    impl RedbStore {
        fn unreadable(&self, e: &dyn std::fmt::Display) -> CheckpointError {
            CheckpointError::Unreadable { path: self.path.clone(), reason: e.to_string() }
        }

        /// The partitions holding entries, found by seeking past each.
        fn partitions(&self) -> Result<Vec<i32>, CheckpointError> {
            let txn = self.db.begin_read().map_err(|e| self.unreadable(&e))?;
            let table = txn.open_table(ENTRIES).map_err(|e| self.unreadable(&e))?;
            let mut partitions = Vec::new();
            let mut from = Vec::new();
            while let Some(item) = table.range::<&[u8]>(from.as_slice()..).map_err(|e| self.unreadable(&e))?.next() {
                let (k, _) = item.map_err(|e| self.unreadable(&e))?;
                let (partition, _) = split_key(k.value()).ok_or_else(|| self.unreadable(&"a key without a partition"))?;
                partitions.push(partition);
                match (partition as u32).checked_add(1) {
                    Some(next) => from = next.to_be_bytes().to_vec(),
                    None => break,
                }
            }
            Ok(partitions)
        }

        /// The entries of `partition` whose key after the kind byte is in
        /// one half of the key space (the global entries, which have no
        /// key, in the lower one), kinds in order.
        fn read_half(&self, partition: i32, half: Half) -> Result<Entries, CheckpointError> {
            let txn = self.db.begin_read().map_err(|e| self.unreadable(&e))?;
            let table = txn.open_table(ENTRIES).map_err(|e| self.unreadable(&e))?;
            let mut entries = Vec::new();
            for kind in 0..=u8::MAX {
                let middle = store_key(partition, &[kind, 0x80]);
                let start = match half {
                    Half::Lower => store_key(partition, &[kind]),
                    Half::Upper => middle.clone(),
                };
                for item in table.range::<&[u8]>(start.as_slice()..).map_err(|e| self.unreadable(&e))? {
                    let (k, v) = item.map_err(|e| self.unreadable(&e))?;
                    let key = k.value();
                    let inside = match half {
                        Half::Lower => key < middle.as_slice(),
                        Half::Upper => key.get(..5) == middle.get(..5),
                    };
                    if !inside {
                        break;
                    }
                    entries.push((key[4..].to_vec(), v.value().to_vec()));
                }
            }
            Ok(entries)
        }
    }

    impl CheckpointStore for RedbStore {
        fn commit(&self, changes: &[Change], offsets: &Offsets) -> Result<(), CheckpointError> {
            let write = |e: &dyn std::fmt::Display| CheckpointError::Write(e.to_string());
            let txn = self.db.begin_write().map_err(|e| write(&e))?;
            {
                let mut entries = txn.open_table(ENTRIES).map_err(|e| write(&e))?;
                for change in changes {
                    let key = store_key(change.partition, &change.key);
                    match &change.value {
                        Some(v) => entries.insert(key.as_slice(), v.as_slice()).map(drop),
                        None => entries.remove(key.as_slice()).map(drop),
                    }
                    .map_err(|e| write(&e))?;
                }
                let mut table = txn.open_table(OFFSETS).map_err(|e| write(&e))?;
                for ((topic, partition), offset) in offsets {
                    table.insert((topic.as_str(), *partition), *offset).map_err(|e| write(&e))?;
                }
            }
            txn.commit().map_err(|e| write(&e))
        }

        fn load(&self) -> Result<Stored, CheckpointError> {
            let mut stored = Stored { offsets: self.offsets()?, ..Stored::default() };
            for partition in self.partitions()? {
                stored.partitions.insert(partition, self.load_partition(partition)?);
            }
            Ok(stored)
        }

        /// Read on two cores: one takes the keys of each kind below `0x80`,
        /// the other those from it; the entries of a kind stay in key order.
        fn load_partition(&self, partition: i32) -> Result<Entries, CheckpointError> {
            let (lower, upper) = std::thread::scope(|scope| {
                let lower = scope.spawn(|| self.read_half(partition, Half::Lower));
                let upper = self.read_half(partition, Half::Upper);
                (lower.join(), upper)
            });
            let mut entries = lower.map_err(|_| self.unreadable(&"a reading thread panicked"))??;
            entries.extend(upper?);
            Ok(entries)
        }

        fn offsets(&self) -> Result<Offsets, CheckpointError> {
            let txn = self.db.begin_read().map_err(|e| self.unreadable(&e))?;
            let table = txn.open_table(OFFSETS).map_err(|e| self.unreadable(&e))?;
            let mut offsets = Offsets::new();
            for item in table.iter().map_err(|e| self.unreadable(&e))? {
                let (k, v) = item.map_err(|e| self.unreadable(&e))?;
                let (topic, partition) = k.value();
                offsets.insert((topic.to_owned(), partition), v.value());
            }
            Ok(offsets)
        }
    }
}

pub use redb_store::RedbStore;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{Outputs, Pipeline};
    use crate::rules::{RuleHost, RulesetSource};
    use crate::source::Record;
    use crate::workload::{generate, WorkloadSpec};

    fn pipeline(state: Option<State>) -> Pipeline {
        let host = RuleHost::compile(RulesetSource::shipped().unwrap_or_else(|e| unreachable!("{e}")))
            .unwrap_or_else(|e| unreachable!("{e}"));
        let mut p = Pipeline::new(host, StateConfig::default());
        if let Some(state) = state {
            p.state = state;
        }
        p
    }

    fn decide(p: &mut Pipeline, lines: &[String]) -> Vec<String> {
        let mut out = Outputs::default();
        let mut all = Vec::new();
        for line in lines {
            out.clear();
            p.process(&Record { payload: line.clone().into_bytes(), ..Record::default() }, &mut out);
            all.extend(out.decisions.iter().map(|d| serde_json::to_string(d).unwrap_or_default()));
            all.extend(out.commands.iter().map(|c| serde_json::to_string(c).unwrap_or_default()));
        }
        all
    }

    #[test]
    fn restoring_from_incremental_checkpoints_equals_an_uninterrupted_run() {
        let spec = WorkloadSpec { tenants: 2, agents_per_tenant: 4, tasks_per_agent: 2, actions_per_task: 12, ..WorkloadSpec::default() };
        let lines = generate(&spec);
        let whole = decide(&mut pipeline(None), &lines);

        let dir = tempfile::tempdir().unwrap_or_else(|e| unreachable!("{e}"));
        let path = dir.path().join("state.redb");
        let mut outputs = Vec::new();
        let mut p = pipeline(None);
        let mut offsets = Offsets::new();
        for (i, chunk) in lines.chunks(37).enumerate() {
            outputs.extend(decide(&mut p, chunk));
            offsets.insert(("agent.activity".into(), 0), ((i + 1) * 37) as i64);
            let store = RedbStore::open(&path).unwrap_or_else(|e| unreachable!("{e}"));
            checkpoint(&mut p.state, &store, &offsets).unwrap_or_else(|e| unreachable!("{e}"));
            drop(store);
            // A "restart" after every checkpoint: the state comes back from disk.
            let store = RedbStore::open(&path).unwrap_or_else(|e| unreachable!("{e}"));
            let (state, resumed) = restore(&store, StateConfig::default()).unwrap_or_else(|e| unreachable!("{e}"));
            assert_eq!(resumed, offsets);
            p = pipeline(Some(state));
        }
        assert_eq!(outputs, whole);
    }

    /// Every task with a deadline the state still watches, by id.
    fn watched(state: &State) -> Vec<String> {
        let overdue = state.due_deadlines(crate::event::Timestamp(i64::MAX));
        overdue.iter().map(|o| o.task.task_id.clone()).collect()
    }

    #[test]
    fn a_rolled_back_batch_leaves_no_trace() {
        rolled_back_batches_leave_no_trace(false);
    }

    /// The same on a state restored before every batch: the batches meet
    /// entries still encoded, decode some, sweep some, and roll back.
    #[test]
    fn a_rolled_back_batch_on_a_restored_state_leaves_no_trace() {
        rolled_back_batches_leave_no_trace(true);
    }

    /// A small workload, and a pipeline with a short memory, so that
    /// sweeps forget agents, tasks and credentials mid-batch.
    fn forgetful_run() -> (Vec<String>, fn() -> Pipeline) {
        let spec = WorkloadSpec { tenants: 2, agents_per_tenant: 4, tasks_per_agent: 3, actions_per_task: 12, ..WorkloadSpec::default() };
        let forgetful = || {
            let mut p = pipeline(None);
            p.state.config = StateConfig { agent_idle_s: 90, task_retention_s: 1, sweep_every_s: 1, ..StateConfig::default() };
            p
        };
        (generate(&spec), forgetful)
    }

    fn rolled_back_batches_leave_no_trace(restored: bool) {
        let (lines, forgetful) = forgetful_run();
        let whole = decide(&mut forgetful(), &lines);

        let mut p = forgetful();
        p.state.mark();
        let mut outputs = Vec::new();
        for chunk in lines.chunks(29) {
            if restored {
                let image = p.state.clone().snapshot(0).into_iter().filter_map(|c| Some((c.key, c.value?))).collect();
                p.state = State::restore(p.state.config.clone(), image).unwrap_or_else(|e| unreachable!("{e}"));
                assert!(p.state.agent_count() == 0 || p.state.cold_count() > 0, "the restored entries wait to be decoded");
                p.state.mark();
            }
            let before = (p.state.clone().snapshot(0), watched(&p.state));
            let first = decide(&mut p, chunk);
            p.state.rollback();
            assert_eq!((p.state.clone().snapshot(0), watched(&p.state)), before);
            // Done again from the mark, the batch gives the same outputs.
            let again = decide(&mut p, chunk);
            assert_eq!(again, first);
            p.state.mark();
            outputs.extend(again);
        }
        assert_eq!(outputs, whole);
    }

    /// At least once, a batch's outputs are in flight while the next batch
    /// runs: a failure then undoes both, and once the first landed, only
    /// the second.
    #[test]
    fn a_batch_in_flight_rolls_back_with_the_next_until_it_lands() {
        let (lines, forgetful) = forgetful_run();
        let whole = decide(&mut forgetful(), &lines);
        let seen = |p: &Pipeline| (p.state.clone().snapshot(0), watched(&p.state));

        let mut p = forgetful();
        p.state.mark();
        let mut outputs = Vec::new();
        let chunks: Vec<&[String]> = lines.chunks(23).collect();
        for pair in chunks.chunks(2) {
            let [first, second] = pair else {
                outputs.extend(decide(&mut p, pair[0]));
                continue;
            };
            let before = seen(&p);
            let once = decide(&mut p, first);
            p.state.mark_in_flight();
            let between = seen(&p);
            decide(&mut p, second);
            p.state.rollback();
            assert_eq!(seen(&p), before, "both batches undone");

            assert_eq!(decide(&mut p, first), once, "the first batch done again gives the same outputs");
            p.state.mark_in_flight();
            let then = decide(&mut p, second);
            p.state.landed();
            p.state.rollback();
            assert_eq!(seen(&p), between, "only the second batch undone once the first landed");
            assert_eq!(decide(&mut p, second), then);
            p.state.mark_in_flight();
            outputs.extend(once);
            outputs.extend(then);
        }
        assert_eq!(outputs, whole);
    }

    /// The partition a gateway keyed by agent would send `line` to, of two.
    fn partition_of(line: &str) -> Option<i32> {
        let value: serde_json::Value = serde_json::from_str(line).ok()?;
        let agent = value.get("agent_id")?.as_str()?;
        Some((crate::state::name_hash(agent) % 2) as i32)
    }

    fn decide_from(p: &mut Pipeline, line: &str, partition: i32) -> Vec<String> {
        let mut out = Outputs::default();
        let record = Record { payload: line.as_bytes().to_vec(), origin: crate::source::Origin { partition, ..Default::default() } };
        p.process(&record, &mut out);
        let decisions = out.decisions.iter().map(|d| serde_json::to_string(d).unwrap_or_default());
        decisions.chain(out.commands.iter().map(|c| serde_json::to_string(c).unwrap_or_default())).collect()
    }

    /// A changelog per partition, compacted: the latest value per key.
    fn compact(log: &[Change], partition: i32) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut image = BTreeMap::new();
        for change in log.iter().filter(|c| c.partition == partition) {
            match &change.value {
                Some(v) => drop(image.insert(change.key.clone(), v.clone())),
                None => drop(image.remove(&change.key)),
            }
        }
        image.into_iter().collect()
    }

    #[test]
    fn a_partition_moves_to_another_state_through_its_changelog() {
        let spec = WorkloadSpec { tenants: 2, agents_per_tenant: 6, tasks_per_agent: 2, actions_per_task: 16, ..WorkloadSpec::default() };
        let lines: Vec<(String, i32)> = generate(&spec).into_iter().filter_map(|l| Some((l.clone(), partition_of(&l)?))).collect();
        let mut whole: Vec<String> = Vec::new();
        let mut single = pipeline(None);
        for (line, partition) in &lines {
            whole.extend(decide_from(&mut single, line, *partition));
        }

        // One state holds both partitions, writing its changes to a changelog
        // every few records; halfway, partition 1 moves to a second state
        // rebuilt from the changelog alone.
        let (first, rest) = lines.split_at(lines.len() / 2);
        let mut a = pipeline(None);
        let mut log = Vec::new();
        let mut outputs = Vec::new();
        for chunk in first.chunks(7) {
            for (line, partition) in chunk {
                outputs.extend(decide_from(&mut a, line, *partition));
            }
            log.extend(a.state.take_changes(&[0, 1]));
        }
        assert!(a.state.release(&[1]) > 0, "partition 1 had entries to let go");
        let mut b = pipeline(None);
        let image = compact(&log, 1);
        b.state.absorb(1, image).unwrap_or_else(|e| unreachable!("{e}"));
        for (line, partition) in rest {
            let owner = if *partition == 1 { &mut b } else { &mut a };
            outputs.extend(decide_from(owner, line, *partition));
        }
        whole.sort();
        outputs.sort();
        assert_eq!(outputs, whole);
    }

    #[test]
    fn a_garbled_store_is_refused_not_half_read() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| unreachable!("{e}"));
        let path = dir.path().join("state.redb");
        std::fs::write(&path, b"this is not a checkpoint store, just bytes that look wrong").unwrap_or_default();
        assert!(matches!(RedbStore::open(&path), Err(CheckpointError::Unreadable { .. })));
    }

    #[test]
    fn a_truncated_store_is_refused() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| unreachable!("{e}"));
        let path = dir.path().join("state.redb");
        let mut p = pipeline(None);
        let spec = WorkloadSpec { tenants: 1, agents_per_tenant: 50, tasks_per_agent: 1, actions_per_task: 5, ..WorkloadSpec::default() };
        decide(&mut p, &generate(&spec));
        let store = RedbStore::open(&path).unwrap_or_else(|e| unreachable!("{e}"));
        checkpoint(&mut p.state, &store, &Offsets::new()).unwrap_or_else(|e| unreachable!("{e}"));
        drop(store);
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap_or_else(|e| unreachable!("{e}"));
        file.set_len(len / 2).unwrap_or_else(|e| unreachable!("{e}"));
        drop(file);
        let reopened = RedbStore::open(&path).and_then(|s| restore(&s, StateConfig::default()));
        assert!(reopened.is_err(), "a truncated store must not restore");
    }

    #[test]
    fn a_store_of_another_format_is_refused() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| unreachable!("{e}"));
        let path = dir.path().join("state.redb");
        {
            let db = redb::Database::create(&path).unwrap_or_else(|e| unreachable!("{e}"));
            let txn = db.begin_write().unwrap_or_else(|e| unreachable!("{e}"));
            {
                let mut meta = txn
                    .open_table(redb::TableDefinition::<&str, u64>::new("meta"))
                    .unwrap_or_else(|e| unreachable!("{e}"));
                meta.insert("format", FORMAT_VERSION + 1).unwrap_or_else(|e| unreachable!("{e}"));
            }
            txn.commit().unwrap_or_else(|e| unreachable!("{e}"));
        }
        let err = RedbStore::open(&path).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains(&format!("snapshot format v{}", FORMAT_VERSION + 1)), "{err}");
    }

    /// A store as the Kafka engine writes it: two partitions, each with a
    /// position record. The snapshot takes the records out as positions,
    /// keeps every entry, names its contents by digest, and its entries
    /// decide what follows as the state that wrote them.
    #[test]
    fn a_snapshot_holds_every_partition_and_where_its_input_stood() {
        use crate::kafka::changelog::position_change;
        let lines = generate(&WorkloadSpec { tenants: 2, agents_per_tenant: 3, tasks_per_agent: 1, actions_per_task: 8, ..WorkloadSpec::default() });
        let mut p = pipeline(None);
        decide(&mut p, &lines);
        let mut changes = p.state.take_changes(&[0]);
        let moved: Vec<Change> = changes.iter().step_by(2).map(|c| Change { partition: 1, ..c.clone() }).collect();
        changes.retain(|c| !moved.iter().any(|m| m.key == c.key));
        changes.extend(moved);
        changes.extend([position_change(0, Some(40)), position_change(1, None)]);
        let dir = tempfile::tempdir().unwrap_or_else(|e| unreachable!("{e}"));
        let path = dir.path().join(crate::kafka::STORE_FILE);
        RedbStore::open(&path).and_then(|s| s.commit(&changes, &Offsets::new())).unwrap_or_else(|e| unreachable!("{e}"));

        let Ok(taken) = snapshot(dir.path()) else { unreachable!("the folder's store reads") };
        assert_eq!(taken.positions, BTreeMap::from([(0, 40)]), "an unknown position is left out");
        let entries: usize = taken.partitions.values().map(Vec::len).sum();
        assert_eq!(entries, changes.len() - 2, "every entry but the two position records");
        assert_eq!(taken.partitions.keys().copied().collect::<Vec<_>>(), vec![0, 1]);
        let Ok(again) = snapshot(&path) else { unreachable!("the file itself reads too") };
        assert_eq!((again.sha256.len(), &again.sha256), (64, &taken.sha256));

        let mut state = State::new(StateConfig::default());
        for (partition, entries) in taken.partitions {
            state.absorb(partition, entries).unwrap_or_else(|e| unreachable!("{e}"));
        }
        let more = generate(&WorkloadSpec { seed: 99, tenants: 2, agents_per_tenant: 3, tasks_per_agent: 1, actions_per_task: 8, ..WorkloadSpec::default() });
        assert_eq!(decide(&mut pipeline(Some(state)), &more), decide(&mut p, &more), "the snapshot decides as the state it came from");

        let missing = snapshot(&dir.path().join("elsewhere")).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(missing.contains("elsewhere") && missing.contains("no checkpoint store"), "{missing}");
    }
}
