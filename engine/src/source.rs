//! Where records come from. A source fills a reusable [`Record`] so the hot
//! loop allocates nothing per record.

pub mod file;
pub mod kafka;

/// Where a record came from: a file and line, or a topic, partition and offset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Origin {
    pub source: String,
    pub partition: i32,
    /// The line number (from 1) for files, the offset for Kafka.
    pub offset: i64,
}

#[derive(Debug, Clone, Default)]
pub struct Record {
    pub payload: Vec<u8>,
    pub origin: Origin,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read `{source_name}`: {error}")]
    Io { source_name: String, error: std::io::Error },
    #[error("kafka source: {0}")]
    Kafka(String),
}

pub trait Source {
    /// Fills `record` with the next record; `Ok(false)` at the end of input.
    fn next_into(&mut self, record: &mut Record) -> Result<bool, SourceError>;
}
