//! Replay throughput on generated traffic.
//!
//! ```sh
//! cargo run --release -p vigil-replay --example throughput -- [EVENTS] [WORKERS] [DIR]
//! ```
//!
//! Writes about EVENTS (default 2,000,000) synthetic records to
//! `DIR/activity-EVENTS.jsonl` once (reused by later runs), then replays
//! them with the shipped rules as the baseline and the shipped rules plus one
//! as the candidate, and prints records per second.


/// The allocator the `vigil` binary uses, so this measures what runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use vigil::rules::RulesetSource;
use vigil::state::StateConfig;
use vigil::workload::{generate, WorkloadSpec};
use vigil_replay::{replay, Baseline, ReplayConfig, ReplayInput};

const EXTRA_RULE: &str = "// id: large_partner_post\n// kinds: network_egress\n\nif event.tool == \"http.post\" && event.bytes > 150000 { return finding(35); }\n()\n";

/// Generates in chunks an hour apart, so memory stays small and each chunk's
/// agents carry on where the previous chunk left them.
fn write_workload(path: &Path, events: u64) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut written = 0u64;
    let mut chunk = 0i64;
    while written < events {
        let spec = WorkloadSpec {
            seed: 7 + chunk as u64,
            tenants: 8,
            agents_per_tenant: 250,
            tasks_per_agent: 5,
            actions_per_task: 30,
            attacks: chunk == 0,
            start: vigil::event::Timestamp(WorkloadSpec::default().start.millis() + chunk * 3_600_000),
        };
        for line in generate(&spec) {
            let line = line
                .replace("\"event_id\":\"", &format!("\"event_id\":\"c{chunk}-"))
                .replace("\"parent_event_id\":\"", &format!("\"parent_event_id\":\"c{chunk}-"));
            out.write_all(line.as_bytes())?;
            out.write_all(b"\n")?;
            written += 1;
            if written >= events {
                break;
            }
        }
        chunk += 1;
        eprint!("\rgenerated {written} records");
    }
    eprintln!();
    out.flush()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let events: u64 = args.get(1).map_or(Ok(2_000_000), |a| a.parse())?;
    let workers: usize = args.get(2).map_or(Ok(2), |a| a.parse())?;
    let dir = args.get(3).map_or_else(std::env::temp_dir, PathBuf::from);
    let input = dir.join(format!("activity-{events}.jsonl"));
    if !input.exists() {
        write_workload(&input, events)?;
    }
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules");
    let baseline = RulesetSource::load(&shipped)?;
    let mut texts: Vec<(String, String)> = baseline.rules.iter().map(|r| (r.file.clone(), r.text.clone())).collect();
    texts.push(("large_partner_post.rhai".into(), EXTRA_RULE.into()));
    let config_text = std::fs::read_to_string(shipped.join("ruleset.toml"))?;
    let candidate = RulesetSource::from_texts(&shipped, Some(&config_text), texts)?;
    let out = dir.join(format!("replay-throughput-{workers}"));
    let config = ReplayConfig {
        input: ReplayInput::File(input.clone()),
        candidate,
        baseline: Baseline::Rules(baseline),
        out,
        workers,
        state: StateConfig::default(),
        checkpoint: None,
        progress: true,
    };
    let started = Instant::now();
    let outcome = replay(&config)?;
    let secs = started.elapsed().as_secs_f64();
    let s = &outcome.summary;
    println!(
        "{} records ({} events) on {workers} worker(s), two rulesets per event: {secs:.1} s, {:.0} records/s, {} verdicts changed",
        s.input.records,
        s.input.events,
        s.input.records as f64 / secs,
        s.changed
    );
    Ok(())
}
