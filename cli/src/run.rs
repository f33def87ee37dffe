//! `vigil run`: the engine on files (`--input`, `--out`) or on Kafka
//! (`--brokers` or `--config`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use vigil::config::{Delivery, KafkaConfig};
use vigil::control::{self, RuleControl};
use vigil::kafka::{self, Work};
use vigil::pipeline::{self, Pipeline, Stats};
use vigil::rules::board::RuleBoard;
use vigil::rules::watch::RuleWatch;
use vigil::rules::RuleHost;
use vigil::sink::jsonl::JsonlSink;
use vigil::source::file::JsonlSource;
use vigil::state::StateConfig;
use vigil::verdict::Mode;

use crate::Failure;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// JSON Lines of activity events and signals; `-` for stdin.
    #[arg(long)]
    input: Option<String>,
    /// Folder for decisions.jsonl, alerts.jsonl, control.jsonl and dlq.jsonl.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Ruleset folder (default: the shipped ruleset).
    #[arg(long)]
    rules: Option<PathBuf>,
    /// Run on Kafka: bootstrap brokers, `HOST:PORT[,HOST:PORT…]`.
    #[arg(long, value_name = "HOST:PORT")]
    brokers: Option<String>,
    /// Run on Kafka with this TOML configuration (flags override it).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Kafka: worker threads, each an independent consumer group member.
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// Kafka: `exactly_once` (default) or `at_least_once`.
    #[arg(long, value_name = "MODE")]
    delivery: Option<String>,
    /// Kafka: consumer group id (also the transactional id prefix).
    #[arg(long, value_name = "ID")]
    group: Option<String>,
    /// A candidate ruleset run beside the enforcing one: its decisions go to
    /// `shadow.jsonl` with `mode: shadow` and never cause commands.
    #[arg(long, value_name = "DIR")]
    shadow_rules: Option<PathBuf>,
    /// Reload `--rules DIR` when it changes on disk (compiled and its cases
    /// run first; a broken change is refused and the running rules stay).
    #[arg(long)]
    watch_rules: bool,
}

impl RunArgs {
    fn on_kafka(&self) -> bool {
        self.brokers.is_some() || self.config.is_some()
    }
}

pub fn run(args: RunArgs) -> Result<(), Failure> {
    if args.on_kafka() {
        if args.input.is_some() || args.out.is_some() {
            return Err(Failure::Input("`--input`/`--out` and `--brokers`/`--config` cannot be combined".into()));
        }
        return run_kafka(args);
    }
    let (Some(input), Some(out)) = (args.input, args.out) else {
        return Err(Failure::Input(
            "`vigil run` needs `--input FILE --out DIR`, or `--brokers HOST:PORT` (or `--config FILE`)".into(),
        ));
    };
    let rules = RuleHost::compile(crate::load_rules(args.rules.as_ref())?)?;
    let mut pipeline = Pipeline::new(rules, StateConfig::default());
    if let Some(dir) = &args.shadow_rules {
        pipeline = pipeline.with_shadow(RuleHost::compile(crate::load_rules(Some(dir))?)?);
    }
    if args.watch_rules {
        let Some(dir) = &args.rules else {
            return Err(Failure::Input("`--watch-rules` needs `--rules DIR`".into()));
        };
        pipeline = pipeline.with_watch(RuleWatch::new(dir, Duration::from_secs(1)));
    }
    let mut source = JsonlSource::open(&input)?;
    let mut sink = JsonlSink::create(&out)?;
    pipeline::run(&mut source, &mut pipeline, &mut sink, &AtomicBool::new(false))?;
    eprintln!("{} -> {}", summary(&pipeline.stats), out.display());
    let s = &pipeline.stats;
    if pipeline.shadow_rules().is_some() {
        let moves: Vec<String> = s.shadow_transitions.iter().map(|((a, b), n)| format!("{a}→{b} {n}")).collect();
        let rules: Vec<String> = s.shadow_rules.iter().map(|(r, n)| format!("{r} {n}")).collect();
        eprintln!("shadow divergences: [{}]; by rule: [{}]", moves.join(", "), rules.join(", "));
    }
    if args.watch_rules {
        eprintln!("ruleset swaps {}, rejected changes {}", s.rule_swaps, s.rule_rejections);
    }
    Ok(())
}

fn summary(s: &Stats) -> String {
    let count = |v| s.decisions.get(&v).copied().unwrap_or(0);
    use vigil::verdict::Verdict::*;
    format!(
        "{} records: {} events, {} signals; allow {}, step_up {}, deny {}, revoke {}; {} commands, {} alerts, {} dead letters",
        s.records,
        s.events,
        s.signals,
        count(Allow),
        count(StepUp),
        count(Deny),
        count(Revoke),
        s.commands.values().sum::<u64>(),
        s.alerts,
        s.dead_letter_total(),
    )
}

/// The configuration file (or the defaults) with the command line's flags on top.
pub fn kafka_config(
    config: Option<&PathBuf>,
    brokers: Option<&String>,
    group: Option<&String>,
) -> Result<KafkaConfig, Failure> {
    let mut kafka = KafkaConfig::resolve(config.map(PathBuf::as_path), std::env::vars())?;
    if let Some(brokers) = brokers {
        kafka.brokers.clone_from(brokers);
    }
    if let Some(group) = group {
        kafka.group_id.clone_from(group);
    }
    Ok(kafka)
}

fn run_kafka(args: RunArgs) -> Result<(), Failure> {
    let mut config = kafka_config(args.config.as_ref(), args.brokers.as_ref(), args.group.as_ref())?;
    if let Some(workers) = args.workers {
        config.workers = workers;
    }
    if let Some(delivery) = &args.delivery {
        config.delivery = Delivery::parse(delivery).ok_or_else(|| {
            Failure::Input(format!("`--delivery {delivery}`: expected `exactly_once` or `at_least_once`"))
        })?;
    }
    config.validate()?;
    let ruleset = crate::load_rules(args.rules.as_ref())?;
    let shadow = args.shadow_rules.as_ref().map(|dir| crate::load_rules(Some(dir))).transpose()?;
    if args.watch_rules && args.rules.is_none() {
        return Err(Failure::Input("`--watch-rules` needs `--rules DIR`".into()));
    }
    let board = Arc::new(RuleBoard::new(ruleset, shadow));
    let watched = args.rules.as_deref().filter(|_| args.watch_rules);
    let control = RuleControl::new(Arc::clone(&board), watched, args.shadow_rules.as_deref());
    let counts = Arc::clone(&control.counts);
    let shutdown = Arc::new(AtomicBool::new(false));
    control::listen(Some(control), Arc::clone(&shutdown)).map_err(|e| Failure::Input(e.to_string()))?;
    eprintln!(
        "vigil: {} worker(s) on {} ({}), group `{}`, reading `{}` and `{}`",
        config.workers,
        config.brokers,
        config.delivery.as_str(),
        config.group_id,
        config.topics.activity,
        config.topics.signals
    );
    let work = Work::Decide { rules: board, state: StateConfig::default(), mode: Mode::Enforce };
    let reports = kafka::run(&config, &work, shutdown)?;
    let commits: u64 = reports.iter().map(|r| r.commits).sum();
    let aborts: u64 = reports.iter().map(|r| r.aborts).sum();
    eprintln!("{}; {commits} commits, {aborts} aborted batches", summary(&kafka::total(&reports)));
    let (swaps, rejections) = (counts.swaps.load(Ordering::Relaxed), counts.rejections.load(Ordering::Relaxed));
    if swaps + rejections > 0 {
        eprintln!("ruleset swaps {swaps}, rejected changes {rejections}");
    }
    Ok(())
}
