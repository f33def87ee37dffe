//! The in-process bench's full path (`pipeline/shipped_ruleset`) as a plain
//! program: N passes over the demo workload, each on a fresh pipeline.
//!
//! `cargo run --release -p vigil-benches --bin passes -- [PASSES]` (default 5)
//!
//! On a shared machine, where wall time moves with the neighbours, run it
//! under `valgrind --tool=callgrind --toggle-collect='vigil::pipeline::Pipeline::process'`
//! with one pass: the instructions per record are the same on every run.

use std::time::Instant;

use vigil::rules::RulesetSource;
use vigil_benches::{demo_records, pass};

fn main() {
    let passes: usize = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(5);
    let rules = match RulesetSource::shipped() {
        Ok(rules) => rules,
        Err(e) => unreachable!("the shipped ruleset loads: {e}"),
    };
    let records = demo_records();
    let mut buf = Vec::with_capacity(1 << 16);
    let started = Instant::now();
    let done: usize = (0..passes).map(|_| pass(&records, &rules, &mut buf)).sum();
    let seconds = started.elapsed().as_secs_f64();
    println!("{done} records in {seconds:.3} s: {:.0} records/s", done as f64 / seconds);
}
