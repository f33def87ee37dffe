//! `vigil replay`: a candidate ruleset on recorded activity, diffed against
//! the recorded decisions or another ruleset.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Args;
use vigil::event::Timestamp;
use vigil::state::StateConfig;
use vigil_replay::{Baseline, Bound, KafkaRange, ReplayConfig, ReplayInput, DIFF_FILE, REPORT_FILE, SUMMARY_FILE};

use crate::Failure;

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Activity events and signals: JSON Lines (plain or gzip) or an Avro
    /// object container file (told by its first bytes).
    #[arg(long, value_name = "FILE", required_unless_present = "brokers", conflicts_with = "brokers")]
    input: Option<PathBuf>,
    /// Replay a range of Kafka topics instead: bootstrap brokers,
    /// `HOST:PORT[,HOST:PORT…]`. Read-only: no group is joined, nothing is
    /// committed or produced.
    #[arg(long, value_name = "HOST:PORT", requires = "topic")]
    brokers: Option<String>,
    /// Kafka: a topic to replay (repeat for activity and signals topics;
    /// records are merged by event time).
    #[arg(long, value_name = "TOPIC", requires = "brokers")]
    topic: Vec<String>,
    /// Kafka: the first offset read in every partition (default: the earliest).
    #[arg(long, value_name = "N", requires = "brokers", conflicts_with = "from_time")]
    from_offset: Option<i64>,
    /// Kafka: start at the first record stamped at or after this RFC 3339 time.
    #[arg(long, value_name = "RFC3339", requires = "brokers")]
    from_time: Option<String>,
    /// Kafka: stop before this offset in every partition (default: the end
    /// when the replay starts).
    #[arg(long, value_name = "N", requires = "brokers", conflicts_with = "to_time")]
    to_offset: Option<i64>,
    /// Kafka: stop before the first record stamped at or after this RFC 3339 time.
    #[arg(long, value_name = "RFC3339", requires = "brokers")]
    to_time: Option<String>,
    /// Kafka: a librdkafka property for the consumer, `KEY=VALUE`
    /// (security settings, say); repeatable.
    #[arg(long, value_name = "KEY=VALUE", requires = "brokers")]
    kafka_property: Vec<String>,
    /// Kafka: a Schema Registry (`http://host:port`) for Avro schema ids the
    /// shipped schemas (1 to 4) do not answer, as the engine's `[avro] registry`.
    #[arg(long, value_name = "URL", requires = "brokers")]
    schema_registry: Option<String>,
    /// The candidate ruleset folder (default: the shipped ruleset).
    #[arg(long, value_name = "DIR")]
    rules: Option<PathBuf>,
    /// Compare with this ruleset, run in the same pass (default: the shipped ruleset).
    #[arg(long, value_name = "DIR", conflicts_with = "baseline_decisions")]
    baseline_rules: Option<PathBuf>,
    /// Compare with the decisions a run recorded (`decisions.jsonl` of `vigil run`).
    #[arg(long, value_name = "FILE")]
    baseline_decisions: Option<PathBuf>,
    /// Kafka: compare with the decisions the engine published on this topic
    /// (`vigil.decisions`), read over the same `--from-time`/`--to-time`.
    #[arg(long, value_name = "TOPIC", requires = "brokers", conflicts_with_all = ["baseline_rules", "baseline_decisions"])]
    baseline_topic: Option<String>,
    /// Start both rulesets from a live engine's checkpoint store (its
    /// `[checkpoint] dir`, or the store file in it; of a stopped engine, or
    /// a copy) instead of an empty state. The input is what came after it.
    #[arg(long, value_name = "PATH")]
    from_checkpoint: Option<PathBuf>,
    /// Folder for summary.json, diff.jsonl and report.html.
    #[arg(long, value_name = "DIR", default_value = "vigil-replay")]
    out: PathBuf,
    /// Worker threads (default: one per core).
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// Never draw the progress bar.
    #[arg(long)]
    no_progress: bool,
}

fn bound(offset: Option<i64>, time: Option<&str>, flag: &str) -> Result<Bound, Failure> {
    match (offset, time) {
        (Some(offset), _) if offset < 0 => Err(Failure::Input(format!("`--{flag}-offset` must be 0 or more"))),
        (Some(offset), _) => Ok(Bound::Offset(offset)),
        (None, Some(text)) => Timestamp::parse_rfc3339(text)
            .map(Bound::Time)
            .ok_or_else(|| Failure::Input(format!("`--{flag}-time {text}` is not an RFC 3339 time"))),
        (None, None) => Ok(Bound::Edge),
    }
}

fn input(args: &ReplayArgs) -> Result<ReplayInput, Failure> {
    let Some(brokers) = &args.brokers else {
        return match &args.input {
            Some(path) => Ok(ReplayInput::File(path.clone())),
            None => Err(Failure::Input("give `--input FILE` or `--brokers HOST:PORT --topic TOPIC`".into())),
        };
    };
    Ok(ReplayInput::Kafka(KafkaRange {
        brokers: brokers.clone(),
        topics: args.topic.clone(),
        from: bound(args.from_offset, args.from_time.as_deref(), "from")?,
        to: bound(args.to_offset, args.to_time.as_deref(), "to")?,
        properties: properties(args)?,
        schema_registry: args.schema_registry.clone(),
    }))
}

fn properties(args: &ReplayArgs) -> Result<BTreeMap<String, String>, Failure> {
    let mut properties = BTreeMap::new();
    for pair in &args.kafka_property {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(Failure::Input(format!("`--kafka-property {pair}` is not KEY=VALUE")));
        };
        properties.insert(key.trim().to_owned(), value.trim().to_owned());
    }
    Ok(properties)
}

/// The published decisions' range: the input's times. An offset in the
/// activity topics names no decision, so offsets are refused.
fn published(args: &ReplayArgs, topic: &str) -> Result<Baseline, Failure> {
    if args.from_offset.is_some() || args.to_offset.is_some() {
        return Err(Failure::Input(
            "`--baseline-topic` is read over `--from-time`/`--to-time`: offsets of the activity topics name no decisions".into(),
        ));
    }
    Ok(Baseline::Published(KafkaRange {
        brokers: args.brokers.clone().unwrap_or_default(),
        topics: vec![topic.to_owned()],
        from: bound(None, args.from_time.as_deref(), "from")?,
        to: bound(None, args.to_time.as_deref(), "to")?,
        properties: properties(args)?,
        schema_registry: args.schema_registry.clone(),
    }))
}

pub fn run(args: ReplayArgs) -> Result<(), Failure> {
    let candidate = crate::load_rules(args.rules.as_ref())?;
    let baseline = match (&args.baseline_decisions, &args.baseline_topic, &args.baseline_rules) {
        (Some(file), _, _) => Baseline::Recorded(file.clone()),
        (None, Some(topic), _) => published(&args, topic)?,
        (None, None, dir) => Baseline::Rules(crate::load_rules(dir.as_ref())?),
    };
    let workers = args.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    if workers == 0 {
        return Err(Failure::Input("`--workers` must be at least 1".into()));
    }
    let config = ReplayConfig {
        input: input(&args)?,
        candidate,
        baseline,
        out: args.out.clone(),
        workers,
        state: StateConfig::default(),
        checkpoint: args.from_checkpoint.clone(),
        progress: !args.no_progress,
    };
    let outcome = vigil_replay::replay(&config)?;
    print!("{}", vigil_replay::summary::terminal(&outcome.summary));
    let events = outcome.summary.input.records as f64 / outcome.elapsed.as_secs_f64().max(1e-9);
    println!(
        "{:.1} s, {events:.0} records/s on {workers} worker(s); wrote {dir}/{{{SUMMARY_FILE},{DIFF_FILE},{REPORT_FILE}}}",
        outcome.elapsed.as_secs_f64(),
        dir = args.out.display()
    );
    Ok(())
}
