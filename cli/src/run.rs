//! `vigil run`: the engine on files (Kafka comes through `--brokers`).

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use clap::Args;
use vigil::pipeline::{self, Pipeline};
use vigil::rules::RuleHost;
use vigil::sink::jsonl::JsonlSink;
use vigil::source::file::JsonlSource;
use vigil::state::StateConfig;

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
}

pub fn run(args: RunArgs) -> Result<(), Failure> {
    let (Some(input), Some(out)) = (args.input, args.out) else {
        return Err(Failure::Input("`vigil run` needs `--input FILE --out DIR`".into()));
    };
    let rules = RuleHost::compile(crate::load_rules(args.rules.as_ref())?)?;
    let mut pipeline = Pipeline::new(rules, StateConfig::default());
    let mut source = JsonlSource::open(&input)?;
    let mut sink = JsonlSink::create(&out)?;
    pipeline::run(&mut source, &mut pipeline, &mut sink, &AtomicBool::new(false))?;
    let s = &pipeline.stats;
    let count = |v| s.decisions.get(&v).copied().unwrap_or(0);
    use vigil::verdict::Verdict::*;
    eprintln!(
        "{} records: {} events, {} signals; allow {}, step_up {}, deny {}, revoke {}; {} commands, {} alerts, {} dead letters -> {}",
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
        out.display()
    );
    Ok(())
}
