//! `vigil demo`: the engine on a synthetic workload, with no setup at all.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use clap::Args;
use vigil::pipeline::{self, Outputs, Pipeline};
use vigil::rules::RuleHost;
use vigil::sink::jsonl::JsonlSink;
use vigil::sink::{Sink, SinkError};
use vigil::source::file::MemorySource;
use vigil::source::Origin;
use vigil::state::StateConfig;
use vigil::verdict::Verdict;
use vigil::workload::{generate, WorkloadSpec, SCENARIOS};

use crate::Failure;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the outputs go.
    #[arg(long, default_value = "vigil-demo")]
    out: PathBuf,
    /// Seed of the synthetic workload.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    #[arg(long, default_value_t = 3)]
    tenants: usize,
    /// Benign agents per tenant.
    #[arg(long, default_value_t = 20)]
    agents: usize,
    /// Tasks per benign agent.
    #[arg(long, default_value_t = 5)]
    tasks: usize,
    /// Actions per task.
    #[arg(long, default_value_t = 30)]
    actions: usize,
    /// Ruleset folder (default: the shipped ruleset, embedded).
    #[arg(long)]
    rules: Option<PathBuf>,
    /// Also write the generated input as JSON Lines, to feed `vigil run` or `vigil replay`.
    #[arg(long, value_name = "FILE")]
    save_trace: Option<PathBuf>,
}

/// A sink that passes everything on and keeps a live tally on the terminal.
struct LiveSummary<S> {
    inner: S,
    live: bool,
    records: u64,
    verdicts: BTreeMap<Verdict, u64>,
    worst_by_agent: BTreeMap<String, Verdict>,
    last_print: Instant,
}

impl<S: Sink> Sink for LiveSummary<S> {
    fn write(&mut self, out: &Outputs, origin: &Origin) -> Result<(), SinkError> {
        self.records += 1;
        for d in &out.decisions {
            *self.verdicts.entry(d.decision).or_default() += 1;
            let worst = self.worst_by_agent.entry(d.agent_id.clone()).or_insert(Verdict::Allow);
            *worst = (*worst).max(d.decision);
        }
        if self.live && self.last_print.elapsed().as_millis() >= 100 {
            self.last_print = Instant::now();
            let n = |v| self.verdicts.get(&v).copied().unwrap_or(0);
            eprint!(
                "\r  {:>8} records  allow {:>7}  step_up {:>4}  deny {:>4}  revoke {:>4}",
                self.records,
                n(Verdict::Allow),
                n(Verdict::StepUp),
                n(Verdict::Deny),
                n(Verdict::Revoke)
            );
            let _ = std::io::stderr().flush();
        }
        self.inner.write(out, origin)
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        if self.live {
            eprintln!();
        }
        self.inner.flush()
    }
}

pub fn run(args: DemoArgs) -> Result<(), Failure> {
    let spec = WorkloadSpec {
        seed: args.seed,
        tenants: args.tenants,
        agents_per_tenant: args.agents,
        tasks_per_agent: args.tasks,
        actions_per_task: args.actions,
        ..WorkloadSpec::default()
    };
    let lines = generate(&spec);
    if let Some(path) = &args.save_trace {
        let mut text = lines.join("\n");
        text.push('\n');
        std::fs::write(path, text).map_err(|e| Failure::Input(format!("cannot write `{}`: {e}", path.display())))?;
    }
    let host = RuleHost::compile(crate::load_rules(args.rules.as_ref())?)?;
    println!(
        "vigil demo: {} records from {} tenants x {} agents plus {} attack scenarios, ruleset {} ({} rules)",
        lines.len(),
        spec.tenants,
        spec.agents_per_tenant,
        SCENARIOS.len(),
        host.version(),
        host.metas().count()
    );
    let mut pipeline = Pipeline::new(host, StateConfig::default());
    let mut source = MemorySource::new("demo", lines.into_iter().map(String::into_bytes));
    let mut sink = LiveSummary {
        inner: JsonlSink::create(&args.out)?,
        live: std::io::stderr().is_terminal(),
        records: 0,
        verdicts: BTreeMap::new(),
        worst_by_agent: BTreeMap::new(),
        last_print: Instant::now(),
    };
    let started = Instant::now();
    pipeline::run(&mut source, &mut pipeline, &mut sink, &AtomicBool::new(false))?;
    let elapsed = started.elapsed();
    let s = &pipeline.stats;

    println!("\ndecisions ({} events in {:.2?}, {:.0} events/s)", s.events, elapsed, s.records as f64 / elapsed.as_secs_f64());
    for v in Verdict::ALL {
        println!("  {:<8} {:>8}", v.as_str(), s.decisions.get(&v).copied().unwrap_or(0));
    }
    println!("commands issued");
    for (kind, n) in &s.commands {
        println!("  {:<19} {n:>5}", kind.as_str());
    }
    let mut top: Vec<(&String, &u64)> = s.rules_fired.iter().collect();
    top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    println!("top rules");
    for (rule, n) in top.iter().take(10) {
        println!("  {rule:<30} {n:>6}");
    }
    println!("attack scenarios (worst decision for the agent)");
    for (agent, what) in SCENARIOS {
        let worst = sink.worst_by_agent.get(agent).map_or("-", |v| v.as_str());
        println!("  {agent:<24} {worst:<8} {what}");
    }
    let benign_flagged = sink
        .worst_by_agent
        .iter()
        .filter(|(agent, v)| !agent.starts_with("attacker-") && **v != Verdict::Allow)
        .count();
    println!("benign agents not allowed throughout: {benign_flagged}");
    println!("dead letters: {} {:?}", s.dead_letter_total(), s.dead_letters);
    println!("alerts: {}", s.alerts);
    println!("outputs: {}/{{decisions,alerts,control,dlq}}.jsonl", args.out.display());
    Ok(())
}
