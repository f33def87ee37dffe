//! Topic creation, for `vigil topics create` and for start-up.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use super::{client, KafkaEngineError};
use crate::config::KafkaConfig;

const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// What happened to one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicOutcome {
    Created,
    AlreadyThere,
}

/// Creates every topic of `config` that does not exist yet, with the
/// partitions and replication of `config.create_topics`. Existing topics
/// are left as they are.
pub fn create_topics(config: &KafkaConfig) -> Result<Vec<(String, TopicOutcome)>, KafkaEngineError> {
    let admin: AdminClient<DefaultClientContext> = client::admin(config)
        .create()
        .map_err(|e| KafkaEngineError::Client(format!("admin client: {e}")))?;
    let settings = &config.create_topics;
    let mut names: Vec<&str> = config.topics.all().iter().map(|(_, name)| *name).collect();
    names.extend(config.signing.caep_topic.as_deref());
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|name| {
            let topic = NewTopic::new(name, settings.partitions, TopicReplication::Fixed(settings.replication));
            // The changelog keeps each entry's latest value, forever.
            if *name == config.topics.changelog {
                topic.set("cleanup.policy", "compact")
            } else {
                topic
            }
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT)).request_timeout(Some(ADMIN_TIMEOUT));
    let results = block_on(admin.create_topics(&topics, &options))
        .map_err(|e| KafkaEngineError::Client(format!("cannot create topics: {e}")))?;
    let mut outcomes = Vec::new();
    for result in results {
        match result {
            Ok(name) => outcomes.push((name, TopicOutcome::Created)),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => outcomes.push((name, TopicOutcome::AlreadyThere)),
            Err((name, code)) => {
                return Err(KafkaEngineError::Client(format!("cannot create topic `{name}`: {code}")));
            }
        }
    }
    Ok(outcomes)
}

struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Waits for a future on this thread. The admin client completes its
/// futures from its own thread, so no runtime is needed.
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut context = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        std::thread::park();
    }
}
