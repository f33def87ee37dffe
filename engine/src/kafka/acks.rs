//! The closed loop on revocations: a command is only as good as the broker
//! or proxy that carries it out.
//!
//! Subscribers of the control topic acknowledge on the acks topic:
//!
//! ```json
//! {"command_id": "c-…", "subscriber": "broker-eu-1", "outcome": "enforced", "time": "2026-11-28T09:00:00Z"}
//! ```
//!
//! keyed by `agent_id` like the command (`outcome` is `enforced`,
//! `rejected` — the signature did not verify — or `failed`). The tracker
//! reads the control and acks topics in a consumer group of its own (both
//! keyed by agent, so with the same partition count an instance sees a
//! command and its acknowledgement together). Every revocation, quarantine
//! and agent revocation waits for an `enforced`; one still waiting after the
//! deadline raises an OCSF alert and is sent again with a `vigil.reissue`
//! header, up to `max_reissues` times, then a last alert says the engine
//! gave up. Re-sent commands keep their `command_id`, so subscribers that
//! deduplicate apply them once.
//!
//! Pending commands live in memory. The tracker commits no offsets: on start
//! it reads both topics from the beginning and waits only for commands
//! younger than `lookback`, so a restart forgets nothing recent.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde::{Deserialize, Serialize};

use super::client;
use super::KafkaEngineError;
use crate::config::KafkaConfig;
use crate::decide::ocsf;
use crate::sign::{Jwks, Signer};
use crate::verdict::{CommandKind, ControlCommand};

/// The header on a command sent again: how many times it was sent before.
pub const HEADER_REISSUE: &str = "vigil.reissue";

/// A subscriber's answer to one command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub command_id: String,
    pub subscriber: String,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Enforced,
    Rejected,
    Failed,
}

/// What the tracker did, for logs, metrics and tests.
#[derive(Debug, Default)]
pub struct AckCounts {
    pub pending: AtomicU64,
    pub acknowledged: AtomicU64,
    pub escalated: AtomicU64,
    pub given_up: AtomicU64,
}

/// The command in a control value: plain JSON, or the payload of its JWS
/// (read, not verified: the tracker reads the engine's own topic).
pub fn command_of(value: &[u8]) -> Option<ControlCommand> {
    if value.first() == Some(&b'{') {
        return serde_json::from_slice(value).ok();
    }
    let text = std::str::from_utf8(value).ok()?;
    let payload = text.split('.').nth(1)?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
}

fn needs_ack(command: &ControlCommand) -> bool {
    matches!(command.command, CommandKind::RevokeCredentials | CommandKind::RevokeAgent | CommandKind::Quarantine)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

struct Pending {
    command: ControlCommand,
    value: Vec<u8>,
    due_ms: i64,
    sends: u32,
}

struct Tracker {
    producer: BaseProducer,
    control: String,
    acks: String,
    alerts: String,
    deadline_ms: i64,
    max_reissues: u32,
    oldest_ms: i64,
    pending: BTreeMap<String, Pending>,
    /// Acknowledged ids, with when, in case an ack is read before its command.
    enforced: HashMap<String, i64>,
    /// With signing on, only commands that verify are the engine's.
    keys: Option<Jwks>,
    counts: Arc<AckCounts>,
}

impl Tracker {
    fn on_record(&mut self, topic: &str, value: &[u8], timestamp_ms: i64, reissued: bool) {
        if topic == self.control {
            let Some(command) = command_of(value) else { return };
            if let Some(keys) = &self.keys {
                let genuine = std::str::from_utf8(value).is_ok_and(|jws| crate::sign::verify(jws, keys).is_ok());
                if !genuine {
                    tracing::error!(command_id = command.command_id, "a command the engine did not sign is on the control topic");
                    return;
                }
            }
            if reissued || !needs_ack(&command) || timestamp_ms < self.oldest_ms {
                return;
            }
            if self.enforced.contains_key(&command.command_id) {
                return;
            }
            let due_ms = timestamp_ms.max(self.oldest_ms) + self.deadline_ms;
            self.pending
                .entry(command.command_id.clone())
                .or_insert(Pending { command, value: value.to_vec(), due_ms, sends: 1 });
        } else if topic == self.acks {
            let Ok(ack) = serde_json::from_slice::<Ack>(value) else {
                tracing::warn!(topic, "unreadable acknowledgement");
                return;
            };
            match ack.outcome {
                Outcome::Enforced => {
                    if self.pending.remove(&ack.command_id).is_some() {
                        self.counts.acknowledged.fetch_add(1, Ordering::Relaxed);
                    }
                    self.enforced.insert(ack.command_id, now_ms());
                }
                outcome => tracing::warn!(
                    command_id = ack.command_id,
                    subscriber = ack.subscriber,
                    ?outcome,
                    reason = ack.reason.as_deref().unwrap_or(""),
                    "a subscriber did not enforce a command"
                ),
            }
        }
        self.counts.pending.store(self.pending.len() as u64, Ordering::Relaxed);
    }

    /// Alerts on, and sends again, every command past its deadline. While
    /// the consumer is behind (`caught_up` false), an acknowledgement may be
    /// waiting unread, so a command gets a second deadline's grace.
    fn escalate_due(&mut self, caught_up: bool) {
        let now = now_ms();
        let grace = if caught_up { 0 } else { self.deadline_ms };
        let due: Vec<String> =
            self.pending.iter().filter(|(_, p)| p.due_ms + grace <= now).map(|(id, _)| id.clone()).collect();
        for id in due {
            let Some(mut pending) = self.pending.remove(&id) else { continue };
            let last = pending.sends > self.max_reissues;
            let alert = ocsf::unacknowledged(&pending.command, pending.sends, last, now);
            let key = pending.command.agent_id.clone();
            let alert_text = serde_json::to_string(&alert).unwrap_or_default();
            self.send(BaseRecord::to(&self.alerts).key(key.as_bytes()).payload(alert_text.as_bytes()));
            self.counts.escalated.fetch_add(1, Ordering::Relaxed);
            if last {
                self.counts.given_up.fetch_add(1, Ordering::Relaxed);
                tracing::error!(command_id = id, sends = pending.sends, "revocation never acknowledged; giving up");
                continue;
            }
            let reissue = pending.sends.to_string();
            let headers = OwnedHeaders::new().insert(Header { key: HEADER_REISSUE, value: Some(reissue.as_bytes()) });
            let value = std::mem::take(&mut pending.value);
            self.send(BaseRecord::to(&self.control).key(key.as_bytes()).payload(&value[..]).headers(headers));
            tracing::warn!(command_id = id, sends = pending.sends, "revocation unacknowledged; alerted and sent again");
            pending.value = value;
            pending.sends += 1;
            pending.due_ms = now + self.deadline_ms;
            self.pending.insert(id, pending);
        }
        let horizon = now - self.deadline_ms.max(60_000) * 10;
        self.enforced.retain(|_, at| *at >= horizon);
        self.counts.pending.store(self.pending.len() as u64, Ordering::Relaxed);
    }

    fn send(&self, record: BaseRecord<'_, [u8], [u8]>) {
        let mut record = record;
        loop {
            match self.producer.send(record) {
                Ok(()) => return,
                Err((rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    self.producer.poll(Duration::from_millis(10));
                }
                Err((error, _)) => {
                    tracing::error!(%error, "cannot send an escalation");
                    return;
                }
            }
        }
    }
}

/// Starts the tracker on its own thread until `shutdown` is set.
pub fn spawn(config: &KafkaConfig, shutdown: Arc<AtomicBool>) -> Result<(JoinHandle<()>, Arc<AckCounts>), KafkaEngineError> {
    let group = format!("{}-acks", config.group_id);
    let consumer: BaseConsumer = client::consumer(config, &group, &group)
        .create()
        .map_err(|e| KafkaEngineError::Client(format!("acks consumer: {e}")))?;
    consumer
        .subscribe(&[&config.topics.control, &config.topics.acks])
        .map_err(|e| KafkaEngineError::Client(format!("acks subscribe: {e}")))?;
    let producer: BaseProducer = client::idempotent_producer(config, &group)
        .create()
        .map_err(|e| KafkaEngineError::Client(format!("acks producer: {e}")))?;
    let counts = Arc::new(AckCounts::default());
    let settings = &config.acks;
    let mut tracker = Tracker {
        producer,
        control: config.topics.control.clone(),
        acks: config.topics.acks.clone(),
        alerts: config.topics.alerts.clone(),
        deadline_ms: settings.deadline.as_millis() as i64,
        max_reissues: settings.max_reissues,
        oldest_ms: now_ms() - settings.lookback.as_millis() as i64,
        pending: BTreeMap::new(),
        enforced: HashMap::new(),
        keys: Signer::from_config(&config.signing)
            .map_err(|e| KafkaEngineError::Signing(e.to_string()))?
            .map(|signer| signer.keys.jwks()),
        counts: Arc::clone(&counts),
    };
    let handle = std::thread::Builder::new()
        .name("vigil-acks".into())
        .spawn(move || {
            while !shutdown.load(Ordering::Relaxed) {
                let polled = consumer.poll(Duration::from_millis(100));
                let caught_up = polled.is_none();
                if let Some(result) = polled {
                    match result {
                        Ok(message) => {
                            let reissued = message.headers().is_some_and(|h| h.iter().any(|h| h.key == HEADER_REISSUE));
                            let timestamp = message.timestamp().to_millis().unwrap_or_else(now_ms);
                            let topic = message.topic().to_owned();
                            tracker.on_record(&topic, message.payload().unwrap_or_default(), timestamp, reissued);
                        }
                        Err(error) => tracing::warn!(%error, "acks consumer error"),
                    }
                }
                tracker.escalate_due(caught_up);
                tracker.producer.poll(Duration::ZERO);
            }
            let _ = tracker.producer.flush(Duration::from_secs(5));
        })
        .map_err(|e| KafkaEngineError::Client(format!("cannot start the acks tracker: {e}")))?;
    Ok((handle, counts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_is_read_from_json_and_from_its_jws() {
        let command = ControlCommand {
            command_id: "c-1".into(),
            issued_at: "2026-11-28T09:00:00Z".into(),
            command: CommandKind::RevokeCredentials,
            tenant: "acme".into(),
            agent_id: "a".into(),
            workload_id: "spiffe://acme.example/a".into(),
            task_id: None,
            credential_ids: vec!["k".into()],
            reason: "r".into(),
            decision_id: "d-1".into(),
            expires_at: None,
        };
        let json = serde_json::to_vec(&command).unwrap_or_default();
        assert_eq!(command_of(&json), Some(command.clone()));
        let jws = crate::sign::KeyRing::generate().sign(&command);
        assert_eq!(command_of(jws.as_bytes()), Some(command));
        assert_eq!(command_of(b"not a command"), None);
    }
}
