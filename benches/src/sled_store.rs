//! sled behind the engine's checkpoint trait, only to compare it with redb.

use std::path::Path;

use vigil::checkpoint::{CheckpointError, CheckpointStore, Offsets, Stored};

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
    fn commit(&mut self, changes: &[(Vec<u8>, Option<Vec<u8>>)], offsets: &Offsets) -> Result<(), CheckpointError> {
        use sled::Transactional;
        (&self.entries, &self.offsets)
            .transaction(|(entries, offs)| {
                for (k, v) in changes {
                    match v {
                        Some(v) => entries.insert(k.as_slice(), v.as_slice())?,
                        None => entries.remove(k.as_slice())?,
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
            stored.entries.push((k.to_vec(), v.to_vec()));
        }
        Ok(stored)
    }
}
