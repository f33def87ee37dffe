//! Checkpoints: the state's changed entries and the consumed offsets, written
//! in one atomic transaction, so a restart resumes exactly where the state
//! was (Arroyo's rule: the checkpoint, not the consumer group, owns the
//! offsets).
//!
//! The store is a small trait; [`RedbStore`] is the one the engine uses (see
//! the README's design notes and BENCHMARKS.md for why redb over sled).

use std::collections::BTreeMap;
use std::path::Path;

use crate::state::{RestoreError, State, StateConfig};

/// The snapshot layout this build writes and reads. Bump it when an entry's
/// encoding changes; an older or newer snapshot is then refused whole.
pub const FORMAT_VERSION: u64 = 1;

/// Consumed positions: (topic, partition) → the next offset to read.
pub type Offsets = BTreeMap<(String, i32), i64>;

/// What a store holds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stored {
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
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

/// An embedded store for state entries and offsets.
pub trait CheckpointStore {
    /// Applies `changes` (a value, or `None` to delete) and records `offsets`,
    /// atomically: after a crash either all of it is there or none.
    fn commit(&mut self, changes: &[(Vec<u8>, Option<Vec<u8>>)], offsets: &Offsets) -> Result<(), CheckpointError>;

    /// Everything stored.
    fn load(&self) -> Result<Stored, CheckpointError>;
}

/// Writes what changed in `state` since the last checkpoint, with `offsets`.
pub fn checkpoint(state: &mut State, store: &mut dyn CheckpointStore, offsets: &Offsets) -> Result<usize, CheckpointError> {
    let changes = state.take_changes();
    store.commit(&changes, offsets)?;
    Ok(changes.len())
}

/// Rebuilds the state and the offsets to resume from.
pub fn restore(store: &dyn CheckpointStore, config: StateConfig) -> Result<(State, Offsets), CheckpointError> {
    let stored = store.load()?;
    let state = State::restore(config, stored.entries.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))?;
    Ok((state, stored.offsets))
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

    impl CheckpointStore for RedbStore {
        fn commit(&mut self, changes: &[(Vec<u8>, Option<Vec<u8>>)], offsets: &Offsets) -> Result<(), CheckpointError> {
            let write = |e: &dyn std::fmt::Display| CheckpointError::Write(e.to_string());
            let txn = self.db.begin_write().map_err(|e| write(&e))?;
            {
                let mut entries = txn.open_table(ENTRIES).map_err(|e| write(&e))?;
                for (k, v) in changes {
                    match v {
                        Some(v) => entries.insert(k.as_slice(), v.as_slice()).map(drop),
                        None => entries.remove(k.as_slice()).map(drop),
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
            let unreadable = |e: &dyn std::fmt::Display| CheckpointError::Unreadable { path: self.path.clone(), reason: e.to_string() };
            let txn = self.db.begin_read().map_err(|e| unreadable(&e))?;
            let entries_table = txn.open_table(ENTRIES).map_err(|e| unreadable(&e))?;
            let mut stored = Stored::default();
            for item in entries_table.iter().map_err(|e| unreadable(&e))? {
                let (k, v) = item.map_err(|e| unreadable(&e))?;
                stored.entries.push((k.value().to_vec(), v.value().to_vec()));
            }
            let offsets_table = txn.open_table(OFFSETS).map_err(|e| unreadable(&e))?;
            for item in offsets_table.iter().map_err(|e| unreadable(&e))? {
                let (k, v) = item.map_err(|e| unreadable(&e))?;
                let (topic, partition) = k.value();
                stored.offsets.insert((topic.to_owned(), partition), v.value());
            }
            Ok(stored)
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
            let mut store = RedbStore::open(&path).unwrap_or_else(|e| unreachable!("{e}"));
            checkpoint(&mut p.state, &mut store, &offsets).unwrap_or_else(|e| unreachable!("{e}"));
            drop(store);
            // A "restart" after every checkpoint: the state comes back from disk.
            let store = RedbStore::open(&path).unwrap_or_else(|e| unreachable!("{e}"));
            let (state, resumed) = restore(&store, StateConfig::default()).unwrap_or_else(|e| unreachable!("{e}"));
            assert_eq!(resumed, offsets);
            p = pipeline(Some(state));
        }
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
        let mut store = RedbStore::open(&path).unwrap_or_else(|e| unreachable!("{e}"));
        checkpoint(&mut p.state, &mut store, &Offsets::new()).unwrap_or_else(|e| unreachable!("{e}"));
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
        assert!(err.contains("snapshot format v2"), "{err}");
    }
}
