//! sled behind the engine's checkpoint trait, only to compare it with redb.

use std::path::Path;

use vigil::checkpoint::{split_key, store_key, CheckpointError, CheckpointStore, Entries, Offsets, Stored};
use vigil::state::Change;

#[derive(Debug)]
pub struct SledStore {
    entries: sled::Tree,
    offsets: sled::Tree,
    db: sled::Db,
}

fn write(e: impl std::fmt::Display) -> CheckpointError {
    CheckpointError::Write(e.to_string())
}

impl SledStore {
    pub fn open(path: &Path) -> Result<SledStore, CheckpointError> {
        let db = sled::open(path).map_err(write)?;
        Ok(SledStore { entries: db.open_tree("entries").map_err(write)?, offsets: db.open_tree("offsets").map_err(write)?, db })
    }
}

impl CheckpointStore for SledStore {
    fn commit(&self, changes: &[Change], offsets: &Offsets) -> Result<(), CheckpointError> {
        use sled::Transactional;
        (&self.entries, &self.offsets)
            .transaction(|(entries, offs)| {
                for change in changes {
                    let key = store_key(change.partition, &change.key);
                    match &change.value {
                        Some(v) => entries.insert(key.as_slice(), v.as_slice())?,
                        None => entries.remove(key.as_slice())?,
                    };
                }
                for ((topic, partition), offset) in offsets {
                    offs.insert(format!("{topic}\u{0}{partition}").as_bytes(), &offset.to_be_bytes())?;
                }
                Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|e| write(format!("{e:?}")))?;
        self.db.flush().map_err(write)?;
        Ok(())
    }

    fn load(&self) -> Result<Stored, CheckpointError> {
        let mut stored = Stored::default();
        for item in self.entries.iter() {
            let (k, v) = item.map_err(write)?;
            if let Some((partition, key)) = split_key(&k) {
                stored.partitions.entry(partition).or_default().push((key.to_vec(), v.to_vec()));
            }
        }
        Ok(stored)
    }

    fn load_partition(&self, partition: i32) -> Result<Entries, CheckpointError> {
        let mut entries = Vec::new();
        for item in self.entries.scan_prefix(partition.to_be_bytes()) {
            let (k, v) = item.map_err(write)?;
            entries.push((k[4..].to_vec(), v.to_vec()));
        }
        Ok(entries)
    }

    fn offsets(&self) -> Result<Offsets, CheckpointError> {
        Ok(Offsets::new())
    }
}
