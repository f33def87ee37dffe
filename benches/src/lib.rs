//! Shared pieces of the benchmarks.

pub mod sled_store;

/// The allocator the `vigil` binary uses, so the benches measure what runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use vigil::event::{ActivityEvent, EventKind, Identity, IdentityMethod, Timestamp};
use vigil::pipeline::{Outputs, Pipeline};
use vigil::rules::{RuleHost, RulesetSource};
use vigil::source::Record;
use vigil::state::{State, StateConfig};
use vigil::workload::{generate, WorkloadSpec};
use vigil::verdict::{Decision, Mode, Verdict};

/// An activity event for agent `i`, `n` seconds into the run.
pub fn event(i: usize, n: i64, kind: EventKind) -> ActivityEvent {
    ActivityEvent {
        event_id: format!("e-{i}-{n}"),
        time: Timestamp(1_795_856_400_000 + n * 1000),
        tenant: "acme".into(),
        agent_id: format!("agent-{i:07}"),
        workload_id: format!("spiffe://acme.example/agents/agent-{i:07}"),
        identity: Identity { method: IdentityMethod::X509Svid, verified: true },
        task_id: Some(format!("task-{i:07}")),
        kind,
        tool: Some("sql.query".into()),
        target: Some(format!("crm/table-{}", n % 7)),
        operation: Some("read".into()),
        data_class: None,
        bytes: 1200,
        parent_event_id: None,
        trust_boundary: None,
        scope: None,
        credential: None,
        approval: None,
        attributes: Default::default(),
    }
}

/// Folds `events_per_agent` actions of each of `agents` agents into `state`,
/// with an `allow` decision (the fold is what is measured, not the rules).
pub fn fold_agents(state: &mut State, agents: std::ops::Range<usize>, events_per_agent: i64, start: i64) {
    for n in 0..events_per_agent {
        for i in agents.clone() {
            let event = event(i, start + n, if n == 0 { EventKind::TaskStarted } else { EventKind::DataAccess });
            let ctx = state.context(&event);
            let (keys, depth) = (ctx.keys, ctx.depth);
            drop(ctx);
            let decision = Decision {
                decision_id: String::new(),
                event_id: String::new(),
                time: String::new(),
                tenant: String::new(),
                agent_id: String::new(),
                workload_id: String::new(),
                task_id: None,
                decision: Verdict::Allow,
                score: 0,
                reasons: Vec::new(),
                faults: Vec::new(),
                ruleset: String::new(),
                mode: Mode::Enforce,
            };
            state.apply(&event, keys, depth, &decision, &[]);
        }
    }
}

/// The in-process bench's workload: the demo's synthetic agents and attacks
/// (3 tenants × 100 agents × 3 tasks × 30 actions), as input records.
pub fn demo_records() -> Vec<Record> {
    let spec = WorkloadSpec { agents_per_tenant: 100, tasks_per_agent: 3, actions_per_task: 30, ..WorkloadSpec::default() };
    generate(&spec).into_iter().map(|line| Record { payload: line.into_bytes(), ..Record::default() }).collect()
}

/// A pipeline on `rules` with the default state settings.
pub fn pipeline(rules: RulesetSource) -> Pipeline {
    match RuleHost::compile(rules) {
        Ok(host) => Pipeline::new(host, StateConfig::default()),
        Err(e) => unreachable!("the ruleset compiles: {e}"),
    }
}

/// Runs every record through a fresh pipeline on `rules` and encodes every
/// decision and alert as the JSON sink would. Returns the records run.
pub fn pass(records: &[Record], rules: &RulesetSource, buf: &mut Vec<u8>) -> usize {
    let mut p = pipeline(rules.clone());
    let mut out = Outputs::default();
    for record in records {
        out.clear();
        p.process(record, &mut out);
        buf.clear();
        for d in &out.decisions {
            d.write_json(buf);
        }
        for a in &out.alerts {
            buf.extend_from_slice(a.as_bytes());
        }
        std::hint::black_box(&buf);
    }
    records.len()
}

