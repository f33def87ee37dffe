//! Shared pieces of the benchmarks.

pub mod sled_store;

/// The allocator the `vigil` binary uses, so the benches measure what runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use vigil::event::{ActivityEvent, EventKind, Identity, IdentityMethod, Timestamp};
use vigil::state::State;
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
            let depth = ctx.depth;
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
            state.apply(&event, depth, &decision, &[]);
        }
    }
}
