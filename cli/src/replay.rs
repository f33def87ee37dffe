//! `vigil replay`: a candidate ruleset on recorded activity, diffed against
//! the recorded decisions or another ruleset.

use std::path::PathBuf;

use clap::Args;
use vigil::state::StateConfig;
use vigil_replay::{Baseline, ReplayConfig, ReplayInput, DIFF_FILE, REPORT_FILE, SUMMARY_FILE};

use crate::Failure;

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Activity events and signals: JSON Lines (plain or gzip) or an Avro
    /// object container file (told by its first bytes).
    #[arg(long, value_name = "FILE")]
    input: PathBuf,
    /// The candidate ruleset folder (default: the shipped ruleset).
    #[arg(long, value_name = "DIR")]
    rules: Option<PathBuf>,
    /// Compare with this ruleset, run in the same pass (default: the shipped ruleset).
    #[arg(long, value_name = "DIR", conflicts_with = "baseline_decisions")]
    baseline_rules: Option<PathBuf>,
    /// Compare with the decisions a run recorded (`decisions.jsonl` of `vigil run`).
    #[arg(long, value_name = "FILE")]
    baseline_decisions: Option<PathBuf>,
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

pub fn run(args: ReplayArgs) -> Result<(), Failure> {
    let candidate = crate::load_rules(args.rules.as_ref())?;
    let baseline = match (&args.baseline_decisions, &args.baseline_rules) {
        (Some(file), _) => Baseline::Recorded(file.clone()),
        (None, dir) => Baseline::Rules(crate::load_rules(dir.as_ref())?),
    };
    let workers = args.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    if workers == 0 {
        return Err(Failure::Input("`--workers` must be at least 1".into()));
    }
    let config = ReplayConfig {
        input: ReplayInput::File(args.input),
        candidate,
        baseline,
        out: args.out.clone(),
        workers,
        state: StateConfig::default(),
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
