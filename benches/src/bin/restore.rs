//! How long a worker takes to rebuild a partition's state when it is
//! assigned one: from the changelog on a real broker (no local store, as
//! after a lost disk or on another instance), and from the local store;
//! then what the restore left for later: the first event of every agent
//! decodes it.
//!
//! `cargo run --release -p vigil-benches --bin restore -- --brokers HOST:PORT [AGENTS...]`
//! (default: 100000)

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;
use vigil::checkpoint::{CheckpointStore, Offsets, RedbStore};
use vigil::config::{KafkaConfig, Topics};
use vigil::kafka::changelog::{self, format_header};
use vigil::state::{State, StateConfig};
use vigil_benches::fold_agents;

fn fail(message: String) -> ! {
    eprintln!("restore: {message}");
    std::process::exit(1)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut brokers = None;
    let mut sizes = Vec::new();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--brokers" => brokers = args.next(),
            n => sizes.push(n.parse::<usize>().unwrap_or_else(|_| fail(format!("not a number of agents: {n}")))),
        }
    }
    let brokers = brokers.unwrap_or_else(|| fail("usage: restore --brokers HOST:PORT [AGENTS...]".into()));
    if sizes.is_empty() {
        sizes.push(100_000);
    }
    println!("| agents | entries | changelog: read | changelog: fold in | store: read | store: fold in | then an event per agent | the same, never stopped |");
    println!("|---|---|---|---|---|---|---|---|");
    for n in sizes {
        let mut state = State::new(StateConfig::default());
        fold_agents(&mut state, 0..n, 3, 0);
        let changes = state.take_changes(&[0]);

        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let mut config = KafkaConfig { brokers: brokers.clone(), topics: Topics::prefixed(&format!("restore-{n}-{nanos}")), ..KafkaConfig::default() };
        config.create_topics.partitions = 1;
        vigil::kafka::create_topics(&config).unwrap_or_else(|e| fail(e.to_string()));
        let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("linger.ms", "20")
            .set("compression.type", "lz4")
            .set("queue.buffering.max.messages", "1000000")
            .create()
            .unwrap_or_else(|e| fail(e.to_string()));
        for change in &changes {
            let mut record = BaseRecord::<[u8], [u8]>::to(&config.topics.changelog)
                .partition(0)
                .key(&change.key)
                .headers(format_header());
            if let Some(value) = &change.value {
                record = record.payload(value);
            }
            let mut record = record;
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((_, back)) => {
                        record = back;
                        producer.poll(Duration::from_millis(5));
                    }
                }
            }
        }
        producer.flush(Duration::from_secs(120)).unwrap_or_else(|e| fail(e.to_string()));

        let started = Instant::now();
        let rebuilt = changelog::rebuild(&config, 0, None, &[0], &AtomicBool::new(false))
            .unwrap_or_else(|e| fail(format!("{e:?}")));
        let read = started.elapsed();
        let started = Instant::now();
        let mut restored = State::new(StateConfig::default());
        for part in rebuilt {
            restored.absorb(part.partition, part.entries).unwrap_or_else(|e| fail(e.to_string()));
        }
        let fold_changelog = started.elapsed();
        assert_eq!(restored.agent_count(), n);

        let dir = tempfile::tempdir().unwrap_or_else(|e| fail(e.to_string()));
        let store = RedbStore::open(&dir.path().join("state.redb")).unwrap_or_else(|e| fail(e.to_string()));
        store.commit(&changes, &Offsets::new()).unwrap_or_else(|e| fail(e.to_string()));
        let started = Instant::now();
        let entries = store.load_partition(0).unwrap_or_else(|e| fail(e.to_string()));
        let read_store = started.elapsed();
        let started = Instant::now();
        let mut restored = State::new(StateConfig::default());
        restored.absorb(0, entries).unwrap_or_else(|e| fail(e.to_string()));
        let fold_store = started.elapsed();
        assert_eq!(restored.agent_count(), n);
        // What the restore left for later: the first event of every agent
        // decodes it. The same event on the state that never stopped, for
        // comparison.
        let started = Instant::now();
        fold_agents(&mut restored, 0..n, 1, 3);
        let first_events = started.elapsed();
        let started = Instant::now();
        fold_agents(&mut state, 0..n, 1, 3);
        let warm_events = started.elapsed();
        println!(
            "| {n} | {} | {:.2?} | {:.2?} | {:.2?} | {:.2?} | {:.2?} | {:.2?} |",
            changes.len(),
            read,
            fold_changelog,
            read_store,
            fold_store,
            first_events,
            warm_events
        );
    }
}
