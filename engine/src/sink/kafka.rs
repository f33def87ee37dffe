//! Outputs to Kafka: decisions, OCSF alerts, control commands and dead
//! letters, each to its topic, keyed by the agent they concern.
//!
//! Values are the same JSON as the JSON Lines sink writes, so a subscriber
//! sees the same bytes whether the engine ran on files or on Kafka. With a
//! [`Signer`], a control command is instead its compact JWS, and its CAEP
//! token goes to the CAEP topic if there is one. A dead
//! letter is the original record (bytes, key and headers) plus headers that
//! say why and where it came from.
//!
//! Nothing here waits for the broker: outputs are queued, and
//! [`Sink::flush`] commits the batch (see [`crate::kafka`]).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use rdkafka::message::{Header, OwnedHeaders};

use super::{Sink, SinkError};
use crate::config::Topics;
use crate::kafka::changelog::Pending;
use crate::kafka::outbox::{Committed, Outbox, OutboxFailure};
use crate::kafka::rebalance::ActivityConsumer;
use crate::pipeline::{DeadLetter, Outputs};
use crate::source::kafka::LastInput;
use crate::sign::Signer;
use crate::state::State;
use crate::source::{Origin, Record};
use crate::decode::avro::AvroEncoder;
use crate::verdict::{ControlCommand, Decision};

/// W3C trace context: carried from an input to everything it produced.
const TRACE_HEADERS: [&str; 2] = ["traceparent", "tracestate"];

pub const HEADER_ERROR: &str = "vigil.error";
pub const HEADER_REASON: &str = "vigil.reason";
pub const HEADER_SOURCE_TOPIC: &str = "vigil.source.topic";
pub const HEADER_SOURCE_PARTITION: &str = "vigil.source.partition";
pub const HEADER_SOURCE_OFFSET: &str = "vigil.source.offset";

pub struct KafkaSink {
    outbox: Arc<Outbox>,
    activity: Arc<ActivityConsumer>,
    last: Rc<RefCell<LastInput>>,
    decisions: String,
    alerts: String,
    control: String,
    dlq: String,
    shadow: String,
    signer: Option<Arc<Signer>>,
    buf: Vec<u8>,
    /// Where the duration of each successful commit goes, if anywhere.
    commit_seconds: Option<Arc<crate::metrics::Histogram>>,
    changelog: Option<Changelog>,
    /// Decisions and control commands as Avro, when set.
    avro: Option<Arc<AvroEncoder>>,
}

/// The changelog side of the sink: the partitions the worker holds and,
/// with a local store, the changes the broker has that its next checkpoint
/// writes.
#[derive(Debug)]
struct Changelog {
    held: Vec<i32>,
    pending: Option<Pending>,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink").field("outbox", &self.outbox).finish()
    }
}

fn sink_error(failure: OutboxFailure) -> SinkError {
    SinkError::Kafka(failure.to_string())
}

impl KafkaSink {
    pub(crate) fn new(
        outbox: Arc<Outbox>,
        activity: Arc<ActivityConsumer>,
        last: Rc<RefCell<LastInput>>,
        topics: &Topics,
    ) -> KafkaSink {
        KafkaSink {
            outbox,
            activity,
            last,
            decisions: topics.decisions.clone(),
            alerts: topics.alerts.clone(),
            control: topics.control.clone(),
            dlq: topics.dlq.clone(),
            shadow: topics.shadow.clone(),
            signer: None,
            buf: Vec::with_capacity(1024),
            commit_seconds: None,
            changelog: None,
            avro: None,
        }
    }

    /// Writes decisions and (unsigned) control commands as Avro.
    pub(crate) fn with_avro(mut self, encoder: Option<Arc<AvroEncoder>>) -> KafkaSink {
        self.avro = encoder;
        self
    }

    /// One output keyed by its agent, with the input's trace context.
    fn send_bytes(&self, topic: &str, key: &str, value: &[u8]) -> Result<(), SinkError> {
        let headers = self.last.try_borrow().ok().and_then(|last| KafkaSink::trace_headers(&last));
        self.outbox.send(topic, Some(key.as_bytes()), value, headers).map_err(sink_error)
    }

    fn send_decision(&mut self, topic_of: fn(&KafkaSink) -> &str, decision: &Decision) -> Result<(), SinkError> {
        match &self.avro {
            Some(avro) => {
                let bytes = avro.decision(decision).map_err(|e| SinkError::Encode(e.to_string()))?;
                self.send_bytes(topic_of(self), &decision.agent_id, &bytes)
            }
            None => {
                self.buf.clear();
                decision.write_json(&mut self.buf);
                self.send_bytes(topic_of(self), &decision.agent_id, &self.buf)
            }
        }
    }

    /// Writes the state's changes to the changelog (through the outbox);
    /// with `keep`, also keeps those the broker has for the local store.
    pub(crate) fn with_changelog(mut self, keep: bool) -> KafkaSink {
        self.changelog = Some(Changelog { held: Vec::new(), pending: keep.then(Pending::default) });
        self
    }

    /// The partitions whose changelog takes the state's global entries.
    pub(crate) fn set_held(&mut self, held: &std::collections::BTreeSet<i32>) {
        if let Some(changelog) = self.changelog.as_mut() {
            changelog.held = held.iter().copied().collect();
        }
    }

    /// Changes the broker has that are not yet in the local store.
    pub(crate) fn pending(&mut self) -> Option<&mut Pending> {
        self.take_durable();
        self.changelog.as_mut().and_then(|c| c.pending.as_mut())
    }

    /// Takes what the outbox made durable: kept for the local store, if
    /// there is one.
    fn take_durable(&mut self) {
        let durable = self.outbox.take_durable();
        if let Some(Changelog { pending: Some(pending), .. }) = self.changelog.as_mut() {
            pending.add(durable);
        }
    }

    /// Signs every control command with `signer`.
    pub(crate) fn with_signer(mut self, signer: Option<Arc<Signer>>) -> KafkaSink {
        self.signer = signer;
        self
    }

    /// The input's trace context, if it had one. Built per output message:
    /// the producer takes ownership of the headers it sends.
    /// Times each commit that succeeds into `histogram`.
    pub(crate) fn with_commit_histogram(mut self, histogram: Arc<crate::metrics::Histogram>) -> KafkaSink {
        self.commit_seconds = Some(histogram);
        self
    }

    fn trace_headers(last: &LastInput) -> Option<OwnedHeaders> {
        let mut headers: Option<OwnedHeaders> = None;
        for name in TRACE_HEADERS {
            if let Some(value) = last.header(name) {
                headers = Some(headers.unwrap_or_default().insert(Header { key: name, value: Some(value) }));
            }
        }
        headers
    }

    fn send_json<T: serde::Serialize>(&mut self, topic_of: fn(&KafkaSink) -> &str, key: &str, value: &T) -> Result<(), SinkError> {
        self.buf.clear();
        serde_json::to_writer(&mut self.buf, value).map_err(|e| SinkError::Encode(e.to_string()))?;
        self.send_bytes(topic_of(self), key, &self.buf)
    }

    /// A command as plain JSON, or signed (and in its CAEP form too).
    fn send_command(&mut self, command: &ControlCommand) -> Result<(), SinkError> {
        let Some(signer) = self.signer.clone() else {
            if let Some(avro) = &self.avro {
                let bytes = avro.control_command(command).map_err(|e| SinkError::Encode(e.to_string()))?;
                return self.send_bytes(&self.control, &command.agent_id, &bytes);
            }
            return self.send_json(|s| &s.control, &command.agent_id, command);
        };
        self.send_bytes(&self.control, &command.agent_id, signer.keys.sign(command).as_bytes())?;
        if let Some(topic) = &signer.caep_topic {
            match crate::caep::sign(&signer.keys, command, &signer.issuer, &signer.audience) {
                Ok(token) => self.send_bytes(topic, &command.agent_id, token.as_bytes())?,
                // Only a command with a malformed time could fail, and the
                // engine makes none; the native command went out anyway.
                Err(error) => tracing::error!(command_id = command.command_id, %error, "no CAEP form for this command"),
            }
        }
        Ok(())
    }

    fn send_dead_letter(&self, letter: &DeadLetter) -> Result<(), SinkError> {
        let last = self.last.try_borrow().ok();
        let mut headers = OwnedHeaders::new_with_capacity(last.as_ref().map_or(0, |l| l.headers.len()) + 5);
        if let Some(last) = &last {
            for (key, value) in &last.headers {
                headers = headers.insert(Header { key, value: value.as_deref() });
            }
        }
        let partition = letter.origin.partition.to_string();
        let offset = letter.origin.offset.to_string();
        let reason = letter.error.to_string();
        for (key, value) in [
            (HEADER_ERROR, letter.error.label()),
            (HEADER_REASON, reason.as_str()),
            (HEADER_SOURCE_TOPIC, letter.origin.source.as_str()),
            (HEADER_SOURCE_PARTITION, partition.as_str()),
            (HEADER_SOURCE_OFFSET, offset.as_str()),
        ] {
            headers = headers.insert(Header { key, value: Some(value.as_bytes()) });
        }
        let key = last.as_ref().and_then(|l| l.key.as_deref());
        self.outbox.send(&self.dlq, key, &letter.payload, Some(headers)).map_err(sink_error)
    }

    /// Produces `record` unchanged (payload, key, headers) to the decisions
    /// topic, in the same batches and transactions as real outputs: the
    /// baseline the load harness compares the engine with.
    pub fn forward(&mut self, record: &Record) -> Result<(), SinkError> {
        self.outbox.record(&record.origin).map_err(sink_error)?;
        let last = self.last.try_borrow().ok();
        let mut headers = None;
        if let Some(last) = last.as_ref().filter(|l| !l.headers.is_empty()) {
            let mut all = OwnedHeaders::new_with_capacity(last.headers.len());
            for (key, value) in &last.headers {
                all = all.insert(Header { key, value: value.as_deref() });
            }
            headers = Some(all);
        }
        let key = last.as_ref().and_then(|l| l.key.as_deref());
        self.outbox.send(&self.decisions, key, &record.payload, headers).map_err(sink_error)
    }
}

impl Sink for KafkaSink {
    fn write(&mut self, out: &Outputs, origin: &Origin) -> Result<(), SinkError> {
        // Even a record that produced nothing (a signal about no one here)
        // must have its offset committed with the batch.
        self.outbox.record(origin).map_err(sink_error)?;
        for decision in &out.decisions {
            self.send_decision(|s| &s.decisions, decision)?;
        }
        for alert in &out.alerts {
            self.send_bytes(&self.alerts, &out.agent_id, alert.as_bytes())?;
        }
        for command in &out.commands {
            self.send_command(command)?;
        }
        for decision in &out.shadow_decisions {
            self.send_decision(|s| &s.shadow, decision)?;
        }
        for letter in &out.dead_letters {
            self.send_dead_letter(letter)?;
        }
        Ok(())
    }

    fn state_changes(&mut self, state: &mut State) -> Result<(), SinkError> {
        let Some(changelog) = self.changelog.as_mut() else { return Ok(()) };
        // Changes come with a batch; without one they wait for the next.
        if !self.outbox.is_open() {
            return Ok(());
        }
        let changes = state.take_changes(&changelog.held);
        self.outbox.changes(changes).map_err(sink_error)
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        let started = std::time::Instant::now();
        let committed = self.outbox.commit(&self.activity).map_err(sink_error)?;
        self.take_durable();
        if let (Committed::Durable | Committed::InFlight, Some(histogram)) = (committed, &self.commit_seconds) {
            histogram.observe(started.elapsed());
        }
        Ok(())
    }
}
