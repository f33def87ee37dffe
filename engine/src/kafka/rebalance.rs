//! The activity consumer's context: lands the batch in flight and aborts
//! the open one before the group takes partitions away, so that the next
//! owner neither misses nor repeats an output. It also tells the worker's
//! metrics what the group assigned and how far behind each assigned
//! partition is.

use std::collections::HashMap;
use std::sync::Arc;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use serde::Deserialize;

use super::client::{log_rdkafka, report_error};
use super::outbox::Outbox;
use crate::metrics::{Phase, WorkerMetrics};

pub(crate) type ActivityConsumer = BaseConsumer<RebalanceContext>;

#[derive(Debug)]
pub(crate) struct RebalanceContext {
    pub worker: usize,
    pub outbox: Arc<Outbox>,
    pub metrics: Arc<WorkerMetrics>,
}

impl ClientContext for RebalanceContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        log_rdkafka(self.worker, "activity consumer", level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        report_error(self.worker, "activity consumer", &error, reason);
    }

    fn stats_raw(&self, statistics: &[u8]) {
        match consumer_lag(statistics) {
            Ok(lag) => self.metrics.set_lag(lag),
            Err(error) => tracing::debug!(worker = self.worker, error = %error, "unreadable librdkafka statistics"),
        }
    }
}

fn partitions_of(list: &rdkafka::TopicPartitionList) -> Vec<i32> {
    list.elements().iter().map(|e| e.partition()).collect()
}

impl ConsumerContext for RebalanceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(partitions) => {
                let list = partitions_of(partitions);
                tracing::info!(worker = self.worker, partitions = ?list, "partitions revoked");
                self.metrics.revoked();
                self.outbox.on_revoke(&list, consumer);
            }
            Rebalance::Assign(_) => {}
            Rebalance::Error(error) => {
                tracing::warn!(worker = self.worker, error = %error, "rebalance failed");
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(partitions) = rebalance else { return };
        let list = partitions_of(partitions);
        if list.is_empty() {
            // Nothing new: a worker that was waiting for the group now
            // knows what it holds (perhaps nothing: more workers than
            // partitions).
            if matches!(self.metrics.phase(), Phase::Joining | Phase::Rebalancing) {
                self.metrics.set_phase(Phase::Assigned(consumer.assignment().map_or(0, |a| a.count())));
            }
            return;
        }
        tracing::info!(worker = self.worker, partitions = ?list, "partitions assigned");
        // Nothing is read from a new partition before the worker has
        // rebuilt its state; it resumes them then.
        if let Err(error) = consumer.pause(partitions) {
            tracing::warn!(worker = self.worker, error = %error, "cannot pause newly assigned partitions");
        }
        self.outbox.on_assign(&list);
        self.metrics.set_phase(Phase::Restoring(list.len()));
    }
}

/// The fields of librdkafka's statistics JSON the lag is computed from.
#[derive(Debug, Deserialize)]
struct Statistics {
    #[serde(default)]
    topics: HashMap<String, TopicStatistics>,
}

#[derive(Debug, Deserialize)]
struct TopicStatistics {
    #[serde(default)]
    partitions: HashMap<String, PartitionStatistics>,
}

#[derive(Debug, Deserialize)]
struct PartitionStatistics {
    partition: i32,
    #[serde(default)]
    desired: bool,
    #[serde(default = "invalid_offset")]
    app_offset: i64,
    #[serde(default = "invalid_offset")]
    committed_offset: i64,
    #[serde(default = "invalid_offset")]
    ls_offset: i64,
}

fn invalid_offset() -> i64 {
    -1001
}

/// Records behind, per assigned partition: the last stable offset (the
/// consumer reads `read_committed`) minus the worker's position. The
/// position is the offset after the last record handed to the worker, or,
/// before it has read anything since the assignment, the committed offset
/// it starts from. librdkafka's own `consumer_lag` is not used: it counts
/// from offsets the consumer committed itself, and with exactly-once
/// delivery the producer commits them inside its transactions.
pub(crate) fn consumer_lag(statistics: &[u8]) -> Result<Vec<(String, i32, i64)>, serde_json::Error> {
    let statistics: Statistics = serde_json::from_slice(statistics)?;
    let mut lag = Vec::new();
    for (topic, stats) in &statistics.topics {
        for p in stats.partitions.values() {
            // Partition -1 is librdkafka's internal unassigned queue.
            if p.partition < 0 || !p.desired || p.ls_offset < 0 {
                continue;
            }
            let position = if p.app_offset >= 0 { p.app_offset } else { p.committed_offset };
            if position >= 0 {
                lag.push((topic.clone(), p.partition, (p.ls_offset - position).max(0)));
            }
        }
    }
    lag.sort();
    Ok(lag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_counts_from_the_position_or_else_the_committed_offset() {
        let json = br#"{"name": "c", "topics": {"t": {"topic": "t", "partitions": {
            "0": {"partition": 0, "desired": true, "app_offset": 40, "committed_offset": 10, "ls_offset": 50, "hi_offset": 52},
            "1": {"partition": 1, "desired": true, "app_offset": -1001, "committed_offset": 7, "ls_offset": 7},
            "2": {"partition": 2, "desired": false, "app_offset": 1, "committed_offset": 1, "ls_offset": 9},
            "3": {"partition": 3, "desired": true, "app_offset": -1001, "committed_offset": -1001, "ls_offset": 9},
            "-1": {"partition": -1, "desired": false, "app_offset": -1001, "committed_offset": -1001, "ls_offset": -1001}
        }}}}"#;
        let lag = consumer_lag(json).ok();
        assert_eq!(lag, Some(vec![("t".to_owned(), 0, 10), ("t".to_owned(), 1, 0)]));
        assert_eq!(consumer_lag(br#"{"name": "c"}"#).ok(), Some(vec![]));
        assert!(consumer_lag(b"not json").is_err());
    }
}
