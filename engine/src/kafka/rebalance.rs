//! The activity consumer's context: settles the open batch before the group
//! takes partitions away, so that the next owner neither misses nor repeats
//! an output.

use std::sync::Arc;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;

use super::client::{log_rdkafka, report_error};
use super::outbox::Outbox;

pub(crate) type ActivityConsumer = BaseConsumer<RebalanceContext>;

#[derive(Debug)]
pub(crate) struct RebalanceContext {
    pub worker: usize,
    pub outbox: Arc<Outbox>,
}

impl ClientContext for RebalanceContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        log_rdkafka(self.worker, "activity consumer", level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        report_error(self.worker, "activity consumer", &error, reason);
    }
}

impl ConsumerContext for RebalanceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(partitions) => {
                tracing::info!(worker = self.worker, partitions = partitions.count(), "partitions revoked");
                self.outbox.on_revoke(consumer);
            }
            Rebalance::Assign(partitions) => {
                let list: Vec<i32> = partitions.elements().iter().map(|e| e.partition()).collect();
                tracing::info!(worker = self.worker, partitions = ?list, "partitions assigned");
            }
            Rebalance::Error(error) => {
                tracing::warn!(worker = self.worker, error = %error, "rebalance failed");
            }
        }
    }
}
