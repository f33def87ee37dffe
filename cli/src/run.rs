//! `vigil run`: the engine on files (`--input`, `--out`) or on Kafka
//! (`--brokers` or `--config`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use vigil::config::{Delivery, KafkaConfig};
use vigil::control::{self, RuleControl};
use vigil::http::HttpServer;
use vigil::kafka::{self, Work};
use vigil::metrics::{Metrics, Phase};
use vigil::pipeline::{self, Pipeline, Stats};
use vigil::rules::board::RuleBoard;
use vigil::rules::watch::RuleWatch;
use vigil::rules::RuleHost;
use vigil::sink::jsonl::JsonlSink;
use vigil::source::file::JsonlSource;
use vigil::source::{Record, Source, SourceError};
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
    /// Serve `/metrics` (Prometheus), `/livez` and `/readyz` on this
    /// address, e.g. `127.0.0.1:9464`.
    #[arg(long, value_name = "HOST:PORT")]
    http: Option<String>,
}

/// How often a run on files publishes its counts to `/metrics`.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// Cuts a file or stdin into runs of the pipeline of at most
/// [`PUBLISH_EVERY`], so that the counts reach `/metrics` while a long or
/// endless input is decided. The input is read on a thread of its own, so
/// a quiet stdin still ends a run on time.
struct Chunks {
    records: Receiver<Result<Record, SourceError>>,
    until: Instant,
    ended: bool,
}

impl Chunks {
    fn read(input: String) -> Result<Chunks, Failure> {
        let (sender, records) = sync_channel(4096);
        std::thread::Builder::new()
            .name("vigil-input".into())
            .spawn(move || {
                let mut source = match JsonlSource::open(&input) {
                    Ok(source) => source,
                    Err(error) => {
                        let _ = sender.send(Err(error));
                        return;
                    }
                };
                loop {
                    let mut record = Record::default();
                    let next = match source.next_into(&mut record) {
                        Ok(true) => Ok(record),
                        Ok(false) => return,
                        Err(error) => Err(error),
                    };
                    let failed = next.is_err();
                    if sender.send(next).is_err() || failed {
                        return;
                    }
                }
            })
            .map_err(|e| Failure::Input(format!("cannot start the input thread: {e}")))?;
        Ok(Chunks { records, until: Instant::now() + PUBLISH_EVERY, ended: false })
    }
}

impl Source for Chunks {
    fn next_into(&mut self, record: &mut Record) -> Result<bool, SourceError> {
        let now = Instant::now();
        match self.records.recv_timeout(self.until.saturating_duration_since(now)) {
            Ok(Ok(next)) => {
                *record = next;
                Ok(true)
            }
            Ok(Err(error)) => Err(error),
            Err(RecvTimeoutError::Timeout) => {
                self.until = now + PUBLISH_EVERY;
                Ok(false)
            }
            Err(RecvTimeoutError::Disconnected) => {
                self.ended = true;
                Ok(false)
            }
        }
    }
}

fn serve_http(address: Option<&String>, metrics: &Arc<Metrics>) -> Result<Option<HttpServer>, Failure> {
    address.map(|address| HttpServer::bind(address, Arc::clone(metrics))).transpose().map_err(|e| Failure::Input(e.to_string()))
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
    let metrics = Arc::new(Metrics::new());
    let _server = serve_http(args.http.as_ref(), &metrics)?;
    let worker = metrics.file_worker();
    let rules = RuleHost::compile(crate::load_rules(args.rules.as_ref())?)?;
    let mut pipeline =
        Pipeline::new(rules, StateConfig::default()).with_rule_eval_histogram(Arc::clone(&worker.rule_eval));
    if let Some(dir) = &args.shadow_rules {
        pipeline = pipeline.with_shadow(RuleHost::compile(crate::load_rules(Some(dir))?)?);
    }
    if args.watch_rules {
        let Some(dir) = &args.rules else {
            return Err(Failure::Input("`--watch-rules` needs `--rules DIR`".into()));
        };
        pipeline = pipeline.with_watch(RuleWatch::new(dir, Duration::from_secs(1)));
    }
    let mut sink = JsonlSink::create(&out)?;
    worker.set_phase(Phase::Running);
    if args.http.is_some() {
        let mut chunks = Chunks::read(input)?;
        while !chunks.ended {
            pipeline::run(&mut chunks, &mut pipeline, &mut sink, &AtomicBool::new(false))?;
            worker.committed(&pipeline.stats);
        }
    } else {
        let mut source = JsonlSource::open(&input)?;
        pipeline::run(&mut source, &mut pipeline, &mut sink, &AtomicBool::new(false))?;
    }
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
    let metrics = Arc::new(Metrics::new());
    metrics.follow_rule_counts(Arc::clone(&counts));
    let _server = serve_http(args.http.as_ref().or(config.http.as_ref()), &metrics)?;
    // The closed loop on revocations, beside the workers.
    let tracker = match config.acks.track {
        true => {
            let (handle, counts) = kafka::acks::spawn(&config, Arc::clone(&shutdown))?;
            metrics.follow_ack_counts(counts);
            Some(handle)
        }
        false => None,
    };
    let reports = kafka::run_with_metrics(&config, &work, Arc::clone(&shutdown), &metrics);
    shutdown.store(true, Ordering::Relaxed);
    if let Some(tracker) = tracker {
        let _ = tracker.join();
    }
    let reports = reports?;
    let commits: u64 = reports.iter().map(|r| r.commits).sum();
    let aborts: u64 = reports.iter().map(|r| r.aborts).sum();
    eprintln!("{}; {commits} commits, {aborts} aborted batches", summary(&kafka::total(&reports)));
    let (swaps, rejections) = (counts.swaps.load(Ordering::Relaxed), counts.rejections.load(Ordering::Relaxed));
    if swaps + rejections > 0 {
        eprintln!("ruleset swaps {swaps}, rejected changes {rejections}");
    }
    Ok(())
}
