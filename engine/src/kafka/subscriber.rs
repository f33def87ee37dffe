//! A reference subscriber of the control topic, as a credential broker or
//! tool proxy would write one: read each command, verify its signature
//! against the engine's published keys, carry it out, and acknowledge on the
//! acks topic. A command that does not verify is refused and acknowledged
//! as `rejected`; nothing in it is acted on.
//!
//! `engine/examples/subscriber.rs` runs it from the command line; the
//! integration tests use it as the engine's peer.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message};

use super::acks::{command_of, Ack, Outcome};
use crate::sign::{self, Jwks};
use crate::verdict::ControlCommand;

/// Decides whether this subscriber carries a command out; a real broker
/// revokes credentials here. `false` leaves the command unacknowledged.
pub type Enforce = Box<dyn Fn(&ControlCommand) -> bool + Send>;

pub struct Subscriber {
    pub brokers: String,
    pub control_topic: String,
    pub acks_topic: String,
    /// This subscriber's name, in every acknowledgement; also its group id.
    pub name: String,
    pub keys: Jwks,
    pub enforce: Enforce,
    /// Extra librdkafka properties (TLS, SASL).
    pub properties: Vec<(String, String)>,
}

#[derive(Debug, Default)]
pub struct SubscriberCounts {
    pub enforced: AtomicU64,
    pub rejected: AtomicU64,
    pub ignored: AtomicU64,
}

impl Subscriber {
    fn client(&self) -> ClientConfig {
        let mut client = ClientConfig::new();
        client.set("bootstrap.servers", &self.brokers);
        for (key, value) in &self.properties {
            client.set(key, value);
        }
        client
    }

    /// Reads and acknowledges until `shutdown` is set.
    pub fn run(&self, shutdown: &AtomicBool, counts: &Arc<SubscriberCounts>) -> Result<(), String> {
        let consumer: BaseConsumer = self
            .client()
            .set("group.id", &self.name)
            .set("isolation.level", "read_committed")
            .set("auto.offset.reset", "earliest")
            .create()
            .map_err(|e| format!("consumer: {e}"))?;
        consumer.subscribe(&[&self.control_topic]).map_err(|e| format!("subscribe: {e}"))?;
        let producer: BaseProducer = self
            .client()
            .set("enable.idempotence", "true")
            .set("linger.ms", "1")
            .create()
            .map_err(|e| format!("producer: {e}"))?;
        while !shutdown.load(Ordering::Relaxed) {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(message)) => {
                    let value = message.payload().unwrap_or_default();
                    if let Some((key, ack)) = self.answer(value, counts) {
                        let text = serde_json::to_string(&ack).map_err(|e| e.to_string())?;
                        if let Err((error, _)) =
                            producer.send(BaseRecord::to(&self.acks_topic).key(key.as_bytes()).payload(text.as_bytes()))
                        {
                            tracing::warn!(%error, "acknowledgement not sent");
                        }
                    }
                }
                Some(Err(error)) => tracing::warn!(%error, "control consumer error"),
                None => {}
            }
            producer.poll(Duration::ZERO);
        }
        producer.flush(Duration::from_secs(10)).map_err(|e| format!("flush: {e}"))
    }

    /// What to acknowledge for one control value, keyed by agent.
    fn answer(&self, value: &[u8], counts: &SubscriberCounts) -> Option<(String, Ack)> {
        let text = std::str::from_utf8(value).unwrap_or_default();
        let ack = |command_id: &str, outcome, reason: Option<String>| Ack {
            command_id: command_id.to_owned(),
            subscriber: self.name.clone(),
            outcome,
            time: None,
            reason,
        };
        match sign::verify(text, &self.keys) {
            Ok(command) => {
                if (self.enforce)(&command) {
                    counts.enforced.fetch_add(1, Ordering::Relaxed);
                    Some((command.agent_id.clone(), ack(&command.command_id, Outcome::Enforced, None)))
                } else {
                    counts.ignored.fetch_add(1, Ordering::Relaxed);
                    None
                }
            }
            Err(error) => {
                counts.rejected.fetch_add(1, Ordering::Relaxed);
                // Named by what the value claims, so the engine can tell
                // which command someone tried to forge or damage.
                let claimed = command_of(value)?;
                tracing::warn!(command_id = claimed.command_id, %error, "command refused");
                Some((claimed.agent_id, ack(&claimed.command_id, Outcome::Rejected, Some(error.to_string()))))
            }
        }
    }
}
