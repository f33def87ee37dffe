//! The in-process bench's full path (`pipeline/shipped_ruleset`) as a plain
//! program: N passes, each on a fresh pipeline, over the demo workload or
//! over a JSON Lines file (a replay's input, say) with any ruleset.
//!
//! `cargo run --release -p vigil-benches --bin passes -- [PASSES] [--input FILE] [--rules DIR] [--as-replay]`
//! (default: 5 passes over the demo workload with the shipped rules)
//!
//! `--as-replay` builds the pipeline as a replay worker does (no alerts, no
//! set of changed state) and encodes nothing: what a replay must spend per
//! record before it reads, joins or compares anything.
//!
//! On a shared machine, where wall time moves with the neighbours, run it
//! under `valgrind --tool=callgrind --toggle-collect='vigil::pipeline::Pipeline::process'`
//! with one pass: the instructions per record are the same on every run.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use vigil::pipeline::Outputs;
use vigil::rules::RulesetSource;
use vigil::source::file::JsonlSource;
use vigil::source::{Record, Source};
use vigil_benches::{demo_records, pass, pipeline};

struct Args {
    passes: usize,
    input: Option<PathBuf>,
    rules: Option<PathBuf>,
    as_replay: bool,
}

fn args() -> Result<Args, String> {
    let mut args = Args { passes: 5, input: None, rules: None, as_replay: false };
    let mut words = std::env::args().skip(1);
    while let Some(word) = words.next() {
        let mut value = |flag: &str| words.next().map(PathBuf::from).ok_or(format!("{flag} needs a value"));
        match word.as_str() {
            "--input" => args.input = Some(value("--input")?),
            "--rules" => args.rules = Some(value("--rules")?),
            "--as-replay" => args.as_replay = true,
            n => args.passes = n.parse().map_err(|_| format!("not a number of passes: {n}"))?,
        }
    }
    Ok(args)
}

/// Every record of a JSON Lines file, read by the engine's file source.
fn file_records(path: &Path) -> Result<Vec<Record>, String> {
    let mut source = JsonlSource::open(&path.display().to_string()).map_err(|e| e.to_string())?;
    let mut records = Vec::new();
    let mut record = Record::default();
    while source.next_into(&mut record).map_err(|e| e.to_string())? {
        records.push(record.clone());
    }
    Ok(records)
}

/// One pass through a pipeline built as a replay worker builds it.
fn replay_pass(records: &[Record], rules: &RulesetSource) -> usize {
    let mut p = pipeline(rules.clone()).without_alerts().without_changes();
    let mut out = Outputs::default();
    for record in records {
        out.clear();
        p.process(record, &mut out);
        std::hint::black_box(&out);
    }
    records.len()
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("passes: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<(), String> {
    let args = args()?;
    let rules = match &args.rules {
        Some(dir) => RulesetSource::load(dir).map_err(|e| e.to_string())?,
        None => RulesetSource::shipped().map_err(|e| e.to_string())?,
    };
    let records = match &args.input {
        Some(path) => file_records(path)?,
        None => demo_records(),
    };
    let mut buf = Vec::with_capacity(1 << 16);
    let started = Instant::now();
    let done: usize = (0..args.passes)
        .map(|_| if args.as_replay { replay_pass(&records, &rules) } else { pass(&records, &rules, &mut buf) })
        .sum();
    let seconds = started.elapsed().as_secs_f64();
    println!("{done} records in {seconds:.3} s: {:.0} records/s", done as f64 / seconds);
    Ok(())
}
