//! Where outputs go. A sink receives everything one record produced, with
//! the record's origin, so it can tie outputs to input positions.

pub mod jsonl;
pub mod kafka;

use crate::pipeline::Outputs;
use crate::source::Origin;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot write `{path}`: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("cannot encode output: {0}")]
    Encode(String),
    #[error("kafka sink: {0}")]
    Kafka(String),
}

pub trait Sink {
    fn write(&mut self, out: &Outputs, origin: &Origin) -> Result<(), SinkError>;
    /// Called before [`Sink::flush`]: a sink that keeps the state's changes
    /// (Kafka's changelog) takes them here, to commit them with the outputs.
    fn state_changes(&mut self, _state: &mut crate::state::State) -> Result<(), SinkError> {
        Ok(())
    }
    /// Makes everything written so far durable (or visible).
    fn flush(&mut self) -> Result<(), SinkError>;
}

/// A sink that drops everything (benchmarks of the decision path alone).
#[derive(Debug, Default)]
pub struct NullSink;

impl Sink for NullSink {
    fn write(&mut self, _: &Outputs, _: &Origin) -> Result<(), SinkError> {
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// One JSON object of a dead letter: where it came from, why, and its bytes
/// (as text when they are UTF-8, else hex).
pub fn dead_letter_json(letter: &crate::pipeline::DeadLetter) -> serde_json::Value {
    let mut value = serde_json::json!({
        "source": letter.origin.source,
        "partition": letter.origin.partition,
        "offset": letter.origin.offset,
        "error": letter.error.label(),
        "reason": letter.error.to_string(),
    });
    match std::str::from_utf8(&letter.payload) {
        Ok(text) => value["record"] = text.into(),
        Err(_) => value["record_hex"] = hex::encode(&letter.payload).into(),
    }
    value
}
