//! A synthetic, seeded workload: benign agents doing their tasks, plus attack
//! scenarios. It feeds `vigil demo`, the golden tests, the property tests and
//! the benchmarks, so all of them exercise the same realistic traffic.

use serde_json::{json, Value};

use crate::event::Timestamp;

/// A small, fast, seedable generator (SplitMix64): the same seed gives the
/// same workload on every platform and every version of every crate.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi` (`lo` when the range is empty).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            lo
        } else {
            lo + self.next_u64() % (hi - lo)
        }
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.range(0, items.len() as u64) as usize]
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.range(0, 100) < percent
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadSpec {
    pub seed: u64,
    pub tenants: usize,
    pub agents_per_tenant: usize,
    pub tasks_per_agent: usize,
    pub actions_per_task: usize,
    /// Include the attack scenarios and a few malformed records.
    pub attacks: bool,
    pub start: Timestamp,
}

impl Default for WorkloadSpec {
    fn default() -> Self {
        WorkloadSpec {
            seed: 7,
            tenants: 3,
            agents_per_tenant: 20,
            tasks_per_agent: 5,
            actions_per_task: 30,
            attacks: true,
            start: Timestamp(1_795_856_400_000), // 2026-11-28T09:00:00Z
        }
    }
}

/// The attack scenarios, by the agent that plays each.
pub const SCENARIOS: [(&str, &str); 12] = [
    ("attacker-scope-drift", "tool and target outside the approved scope"),
    ("attacker-exfil", "pii read, then egress to a new destination"),
    ("attacker-leaked-key", "a credential reported leaked mid-task"),
    ("attacker-unverified", "an unverified identity asks for credentials and pii"),
    ("attacker-runaway", "a runaway, ever deeper tool chain"),
    ("attacker-zombie", "a credential used after its task ended"),
    ("attacker-needs-approval", "a destructive operation, approved by a human"),
    ("attacker-c2", "egress to a target named by threat intel"),
    ("attacker-reuse", "a credential copied to another workload"),
    ("attacker-overtime", "a task that runs past its deadline"),
    ("attacker-fatigue", "a burst of step-ups wearing down approvers"),
    ("attacker-escalation", "a credential request beyond the task's scope"),
];

struct Trace {
    lines: Vec<(i64, u64, String)>,
    seq: u64,
}

impl Trace {
    fn push(&mut self, time: i64, value: Value) {
        self.seq += 1;
        self.lines.push((time, self.seq, value.to_string()));
    }

    fn raw(&mut self, time: i64, line: &str) {
        self.seq += 1;
        self.lines.push((time, self.seq, line.to_owned()));
    }
}

fn ts(ms: i64) -> String {
    Timestamp(ms).to_rfc3339()
}

/// One agent's identity and a running clock and event counter.
struct Actor {
    tenant: String,
    agent: String,
    workload: String,
    verified: bool,
    clock: i64,
    n: u64,
    last_event: Option<String>,
}

impl Actor {
    fn new(tenant: &str, agent: &str, clock: i64) -> Actor {
        Actor {
            tenant: tenant.to_owned(),
            agent: agent.to_owned(),
            workload: format!("spiffe://{tenant}.example/agents/{agent}"),
            verified: true,
            clock,
            n: 0,
            last_event: None,
        }
    }

    /// An event of `kind` at the actor's clock; `extra` fields are merged in.
    fn event(&mut self, trace: &mut Trace, kind: &str, task: Option<&str>, extra: Value) -> String {
        self.n += 1;
        let id = format!("{}-{}-{}", self.tenant, self.agent, self.n);
        let mut e = json!({
            "event_id": id,
            "time": ts(self.clock),
            "tenant": self.tenant,
            "agent_id": self.agent,
            "workload_id": self.workload,
            "identity": {"method": if self.verified { "x509_svid" } else { "api_key" }, "verified": self.verified},
            "task_id": task,
            "kind": kind,
        });
        if let (Value::Object(e), Value::Object(extra)) = (&mut e, extra) {
            e.extend(extra);
        }
        trace.push(self.clock, e);
        self.last_event = Some(id.clone());
        id
    }

    fn wait(&mut self, rng: &mut Rng, lo_ms: u64, hi_ms: u64) {
        self.clock += rng.range(lo_ms, hi_ms) as i64;
    }
}

const TOOLS: [(&str, &str, &str, &str); 6] = [
    ("sql.query", "crm/customers", "read", "pii"),
    ("sql.query", "crm/accounts", "read", "confidential"),
    ("docs.search", "docs/wiki", "read", "internal"),
    ("docs.search", "docs/handbook", "read", "public"),
    ("email.send", "mail/outbox", "write", "internal"),
    ("http.get", "api.partner.example.com", "read", "internal"),
];

fn benign_scope() -> Value {
    json!({
        "tools": ["sql.query", "docs.search", "email.send", "http.get", "http.post"],
        "targets": ["crm/*", "docs/*", "mail/*", "api.partner.example.com"],
        "data_classes": ["internal", "confidential", "pii"],
        "max_duration_s": 7200,
        "egress_budget_bytes": 50_000_000,
    })
}

fn benign_agent(trace: &mut Trace, rng: &mut Rng, spec: &WorkloadSpec, actor: &mut Actor) {
    for t in 0..spec.tasks_per_agent {
        let task = format!("{}-task-{t}", actor.agent);
        let task = Some(task.as_str());
        actor.event(trace, "task_started", task, json!({"scope": benign_scope()}));
        actor.wait(rng, 200, 1500);
        actor.event(trace, "credential_request", task, json!({"credential": {"id": format!("{}-cred-{t}", actor.agent), "scopes": ["crm/customers:read", "docs/wiki:read"], "ttl_s": 3600}}));
        actor.wait(rng, 100, 600);
        actor.event(trace, "credential_issued", task, json!({"credential": {"id": format!("{}-cred-{t}", actor.agent), "scopes": ["crm/customers:read", "docs/wiki:read"], "ttl_s": 3600}}));
        let cred = format!("{}-cred-{t}", actor.agent);
        let mut chain = 0;
        let (mut last_pick, mut run) = (usize::MAX, 0);
        for _ in 0..spec.actions_per_task {
            actor.wait(rng, 1500, 9000);
            // Benign chains stay short: a few tool calls feeding each other.
            chain = if rng.chance(30) && chain < 4 { chain + 1 } else { 0 };
            let parent = if chain > 0 { actor.last_event.clone() } else { None };
            if rng.chance(12) {
                let bytes = rng.range(1_000, 200_000);
                actor.event(trace, "network_egress", task, json!({"tool": "http.post", "target": "api.partner.example.com", "operation": "write", "data_class": "internal", "bytes": bytes, "parent_event_id": parent, "credential": {"id": cred}, "trust_boundary": "internet"}));
            } else {
                // A benign agent varies its calls; it does not loop on one.
                let mut pick = rng.range(0, TOOLS.len() as u64) as usize;
                run = if pick == last_pick { run + 1 } else { 1 };
                if run > 3 {
                    pick = (pick + 1) % TOOLS.len();
                    run = 1;
                }
                last_pick = pick;
                let (tool, target, op, class) = TOOLS[pick];
                let kind = if tool == "sql.query" { "data_access" } else { "tool_call" };
                let bytes = rng.range(200, 50_000);
                actor.event(trace, kind, task, json!({"tool": tool, "target": target, "operation": op, "data_class": class, "bytes": bytes, "parent_event_id": parent, "credential": {"id": cred}}));
            }
        }
        actor.wait(rng, 500, 3000);
        actor.event(trace, "task_ended", task, json!({}));
        actor.wait(rng, 30_000, 180_000);
    }
}

/// A task with an approved scope and one credential; returns (task id, credential id).
fn start_task(trace: &mut Trace, actor: &mut Actor, name: &str, scope: Value) -> (String, String) {
    let task = format!("{}-{name}", actor.agent);
    let cred = format!("{task}-cred");
    actor.event(trace, "task_started", Some(&task), json!({"scope": scope}));
    actor.clock += 500;
    actor.event(trace, "credential_issued", Some(&task), json!({"credential": {"id": cred, "scopes": ["crm/customers:read"], "ttl_s": 1800}}));
    actor.clock += 1000;
    (task, cred)
}

fn attacks(trace: &mut Trace, rng: &mut Rng, start: i64) {
    let tenant = "acme";
    let at = |minutes: i64| start + minutes * 60_000;
    let mut signal_n = 0;
    let mut signal = |trace: &mut Trace, time: i64, extra: Value| {
        signal_n += 1;
        let mut s = json!({"signal_id": format!("sig-{signal_n}"), "time": ts(time), "tenant": tenant});
        if let (Value::Object(s), Value::Object(extra)) = (&mut s, extra) {
            s.extend(extra);
        }
        trace.push(time, s);
    };
    let narrow = json!({"tools": ["sql.query"], "targets": ["reports/*"], "data_classes": ["internal"], "max_duration_s": 3600});

    // Scope drift: a reporting agent reaches for a shell on a production host.
    let mut a = Actor::new(tenant, SCENARIOS[0].0, at(3));
    let (task, cred) = start_task(trace, &mut a, "report", narrow.clone());
    a.event(trace, "data_access", Some(&task), json!({"tool": "sql.query", "target": "reports/weekly", "operation": "read", "data_class": "internal", "bytes": 4000, "credential": {"id": cred}}));
    a.clock += 4000;
    a.event(trace, "tool_call", Some(&task), json!({"tool": "sql.query", "target": "finance/ledger", "operation": "read", "data_class": "internal", "bytes": 900, "credential": {"id": cred}}));
    a.clock += 4000;
    a.event(trace, "tool_call", Some(&task), json!({"tool": "shell.exec", "target": "prod/db-admin", "operation": "execute", "data_class": "internal", "credential": {"id": cred}}));

    // Exfiltration chain: customer pii, then a large post to a paste site.
    let mut a = Actor::new(tenant, SCENARIOS[1].0, at(5));
    let scope = json!({"tools": ["sql.query", "http.post"], "targets": ["crm/*", "api.partner.example.com"], "data_classes": ["pii", "internal"], "max_duration_s": 3600, "egress_budget_bytes": 10_000_000});
    let (task, cred) = start_task(trace, &mut a, "enrich", scope);
    a.event(trace, "data_access", Some(&task), json!({"tool": "sql.query", "target": "crm/customers", "operation": "read", "data_class": "pii", "bytes": 2_400_000, "credential": {"id": cred}}));
    a.clock += 20_000;
    a.event(trace, "network_egress", Some(&task), json!({"tool": "http.post", "target": "paste.evil-bin.io", "operation": "write", "data_class": "pii", "bytes": 2_400_000, "credential": {"id": cred}, "trust_boundary": "internet"}));

    // Leaked key: the credential shows up in a public repository mid-task.
    let mut a = Actor::new(tenant, SCENARIOS[2].0, at(7));
    let (task, cred) = start_task(trace, &mut a, "sync", benign_scope());
    for _ in 0..3 {
        a.event(trace, "tool_call", Some(&task), json!({"tool": "docs.search", "target": "docs/wiki", "operation": "read", "data_class": "internal", "credential": {"id": cred}}));
        a.clock += 3000;
    }
    signal(trace, a.clock, json!({"kind": "credential_leaked", "severity": "critical", "credential_id": cred}));
    a.clock += 2000;
    a.event(trace, "tool_call", Some(&task), json!({"tool": "docs.search", "target": "docs/wiki", "operation": "read", "data_class": "internal", "credential": {"id": cred}}));
    a.clock += 60_000;
    signal(trace, a.clock, json!({"kind": "agent_release", "severity": "low", "agent_id": a.agent}));

    // Unverified identity: an api key with no proof asks for credentials and pii.
    let mut a = Actor::new(tenant, SCENARIOS[3].0, at(9));
    a.verified = false;
    a.event(trace, "credential_request", None, json!({"credential": {"id": "shadow-cred", "scopes": ["crm/customers:read"], "ttl_s": 600}}));
    a.clock += 1500;
    a.event(trace, "data_access", None, json!({"tool": "sql.query", "target": "crm/customers", "operation": "read", "data_class": "pii", "bytes": 5000}));

    // Runaway tool chain: every call spawns the next, faster and deeper.
    let mut a = Actor::new(tenant, SCENARIOS[4].0, at(11));
    let (task, cred) = start_task(trace, &mut a, "triage", benign_scope());
    for _ in 0..24 {
        let parent = a.last_event.clone();
        a.event(trace, "tool_call", Some(&task), json!({"tool": "docs.search", "target": "docs/wiki", "operation": "read", "data_class": "internal", "parent_event_id": parent, "credential": {"id": cred}}));
        a.clock += 250;
    }

    // Zombie credential: the task ends with two live credentials; one is used anyway.
    let mut a = Actor::new(tenant, SCENARIOS[5].0, at(13));
    let (task, cred) = start_task(trace, &mut a, "billing", benign_scope());
    let second = format!("{task}-cred-2");
    a.event(trace, "credential_issued", Some(&task), json!({"credential": {"id": second, "scopes": ["crm/accounts:read"], "ttl_s": 1800}}));
    a.clock += 2000;
    a.event(trace, "data_access", Some(&task), json!({"tool": "sql.query", "target": "crm/accounts", "operation": "read", "data_class": "confidential", "credential": {"id": second}}));
    a.clock += 2000;
    a.event(trace, "task_ended", Some(&task), json!({}));
    a.clock += 30_000;
    a.event(trace, "data_access", Some(&task), json!({"tool": "sql.query", "target": "crm/customers", "operation": "read", "data_class": "pii", "credential": {"id": cred}}));

    // Needs approval: a delete on restricted data waits for a human, who approves.
    let mut a = Actor::new(tenant, SCENARIOS[6].0, at(15));
    let scope = json!({"tools": ["sql.query", "sql.exec"], "targets": ["crm/*"], "data_classes": ["restricted", "pii"], "max_duration_s": 3600});
    let (task, cred) = start_task(trace, &mut a, "cleanup", scope);
    let risky = a.event(trace, "tool_call", Some(&task), json!({"tool": "sql.exec", "target": "crm/gdpr-erasures", "operation": "delete", "data_class": "restricted", "credential": {"id": cred}}));
    a.clock += 3000;
    a.event(trace, "data_access", Some(&task), json!({"tool": "sql.query", "target": "crm/customers", "operation": "read", "data_class": "pii", "credential": {"id": cred}}));
    a.clock += 45_000;
    let decision = crate::verdict::stable_id("d", &[tenant, &a.agent, &risky]);
    a.event(trace, "approval", Some(&task), json!({"approval": {"decision_id": decision, "granted": true, "approver": "alice@acme.example"}}));
    a.clock += 2000;
    a.event(trace, "data_access", Some(&task), json!({"tool": "sql.query", "target": "crm/customers", "operation": "read", "data_class": "pii", "credential": {"id": cred}}));

    // Threat intel: a command-and-control host is named; an agent calls it.
    let mut a = Actor::new(tenant, SCENARIOS[7].0, at(17));
    signal(trace, a.clock - 1000, json!({"kind": "threat_intel", "severity": "high", "target": "c2.badactor.net"}));
    let scope = json!({"tools": ["http.get", "http.post"], "targets": ["*.net", "api.partner.example.com"], "data_classes": ["internal"], "max_duration_s": 3600});
    let (task, cred) = start_task(trace, &mut a, "fetch", scope);
    a.event(trace, "network_egress", Some(&task), json!({"tool": "http.get", "target": "c2.badactor.net", "operation": "read", "data_class": "internal", "bytes": 300, "credential": {"id": cred}}));

    // Credential reuse: a credential issued to one workload turns up in another.
    let mut a = Actor::new(tenant, SCENARIOS[8].0, at(19));
    let (task, cred) = start_task(trace, &mut a, "export", benign_scope());
    a.event(trace, "data_access", Some(&task), json!({"tool": "sql.query", "target": "crm/customers", "operation": "read", "data_class": "pii", "credential": {"id": cred}}));
    a.clock += 5000;
    a.workload = format!("spiffe://{tenant}.example/unknown/forked-runner");
    a.event(trace, "data_access", Some(&task), json!({"tool": "sql.query", "target": "crm/customers", "operation": "read", "data_class": "pii", "credential": {"id": cred}}));

    // Overtime: a two-minute task still at work five minutes later.
    let mut a = Actor::new(tenant, SCENARIOS[9].0, at(21));
    let scope = json!({"tools": ["docs.search"], "targets": ["docs/*"], "data_classes": ["internal"], "max_duration_s": 120});
    let (task, cred) = start_task(trace, &mut a, "digest", scope);
    for _ in 0..5 {
        a.event(trace, "tool_call", Some(&task), json!({"tool": "docs.search", "target": "docs/wiki", "operation": "read", "data_class": "internal", "credential": {"id": cred}}));
        a.clock += 60_000;
    }

    // Approval fatigue: one destructive request after another.
    let mut a = Actor::new(tenant, SCENARIOS[10].0, at(23));
    let scope = json!({"tools": ["sql.exec"], "targets": ["crm/*"], "data_classes": ["restricted"], "max_duration_s": 3600});
    let (task, cred) = start_task(trace, &mut a, "purge", scope);
    for i in 0..5 {
        a.event(trace, "tool_call", Some(&task), json!({"tool": "sql.exec", "target": format!("crm/table-{i}"), "operation": "delete", "data_class": "restricted", "credential": {"id": cred}}));
        a.clock += 30_000;
        let decision = crate::verdict::stable_id("d", &[tenant, &a.agent, a.last_event.as_deref().unwrap_or_default()]);
        a.event(trace, "approval", Some(&task), json!({"approval": {"decision_id": decision, "granted": true, "approver": "bob@acme.example"}}));
        a.clock += 5000;
    }

    // Escalation: a narrow task asks for a credential to the payments system.
    let mut a = Actor::new(tenant, SCENARIOS[11].0, at(25));
    let (task, _) = start_task(trace, &mut a, "summary", narrow);
    a.event(trace, "credential_request", Some(&task), json!({"credential": {"id": "esc-cred", "scopes": ["reports/weekly:read", "payments/transfers:write"], "ttl_s": 600}}));

    // Malformed input: the engine must carry on, and keep the bytes.
    let t = at(27) + rng.range(0, 1000) as i64;
    trace.raw(t, "{\"event_id\": \"broken-1\", \"time\": ");
    trace.raw(t + 1, &json!({"event_id": "bad-spiffe", "time": ts(t), "agent_id": "x", "workload_id": "spiffe://Bad.Domain/x", "kind": "tool_call"}).to_string());
    trace.raw(t + 2, &json!({"event_id": "bad-bytes", "time": ts(t), "agent_id": "x", "workload_id": "spiffe://acme.example/x", "kind": "network_egress", "bytes": -1}).to_string());
    trace.raw(t + 3, &json!({"event_id": "bad-kind", "time": ts(t), "agent_id": "x", "workload_id": "spiffe://acme.example/x", "kind": "teleport"}).to_string());
}

/// The workload as JSON Lines, in event-time order.
pub fn generate(spec: &WorkloadSpec) -> Vec<String> {
    let mut rng = Rng::new(spec.seed);
    let mut trace = Trace { lines: Vec::new(), seq: 0 };
    let start = spec.start.millis();
    let tenants = ["acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "tyrell"];
    for t in 0..spec.tenants {
        let tenant = tenants.get(t).map_or_else(|| format!("tenant-{t}"), |s| (*s).to_owned());
        for i in 0..spec.agents_per_tenant {
            let offset = rng.range(0, 120_000) as i64;
            let mut actor = Actor::new(&tenant, &format!("agent-{i:04}"), start + offset);
            benign_agent(&mut trace, &mut rng, spec, &mut actor);
        }
    }
    if spec.attacks {
        attacks(&mut trace, &mut rng, start);
    }
    trace.lines.sort_by_key(|(time, seq, _)| (*time, *seq));
    trace.lines.into_iter().map(|(_, _, line)| line).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_workload() {
        let spec = WorkloadSpec { agents_per_tenant: 2, tasks_per_agent: 2, actions_per_task: 5, ..WorkloadSpec::default() };
        assert_eq!(generate(&spec), generate(&spec));
        let other = WorkloadSpec { seed: 8, ..spec.clone() };
        assert_ne!(generate(&spec), generate(&other));
    }
}
