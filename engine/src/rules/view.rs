//! The read-only views a rule sees: `event`, `agent`, `task` and `cred`.
//!
//! The four views share one [`Frame`]: the event and the state before it.
//! The host refills the frame for each event, so the views in a rule's scope
//! are built once per ruleset rather than once per event. Every value a rule
//! reads goes through `Frame::read` and lands in the frame's trace. The
//! state values among them are the decision's `evidence` (the analyst sees
//! exactly the numbers the rule saw); the whole trace is what the host's
//! memo of rule outcomes is keyed by.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

use rhai::{Array, Dynamic, Engine, EvalAltResult, ImmutableString};

use crate::event::{ActivityEvent, DataClass, Timestamp};
use crate::state::window::{Span, Tally};
use crate::state::{call_signature, AgentState, Context, CredentialState, TaskState};

/// Everything a view can read, one variant per getter or method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Getter {
    EventId,
    EventKind,
    EventTenant,
    EventAgentId,
    EventWorkloadId,
    EventTaskId,
    EventTool,
    EventTarget,
    EventOperation,
    EventDataClass,
    EventSensitive,
    EventNonPublic,
    EventBytes,
    EventVerified,
    EventIdentityMethod,
    EventTrustBoundary,
    EventParentEventId,
    EventCredentialId,
    EventCredentialScopes,
    EventTimeMs,
    EventDepth,
    EventThreat,
    EventAttr,
    AgentCount,
    AgentCountOver,
    AgentBytes,
    AgentEgress,
    AgentEgressOver,
    AgentStepUps,
    AgentDenials,
    AgentIsNewTarget,
    AgentIsNewTool,
    AgentIsNewDestination,
    AgentDistinctTargets,
    AgentDistinctTools,
    AgentRepeatRun,
    AgentSecsSinceSensitiveRead,
    AgentLastSensitiveTarget,
    AgentLastSensitiveClass,
    AgentAgeS,
    AgentQuarantined,
    AgentPendingStepUps,
    AgentWorkloadId,
    AgentTotalActions,
    TaskExists,
    TaskHasScope,
    TaskStatus,
    TaskIsOver,
    TaskInScopeTool,
    TaskInScopeTarget,
    TaskInScopeDataClass,
    TaskAllowsScope,
    TaskEgressBytes,
    TaskEgressBudget,
    TaskOverBudget,
    TaskActions,
    TaskAgeS,
    TaskSecsSinceEnd,
    TaskMaxDepth,
    CredExists,
    CredId,
    CredRevoked,
    CredExpired,
    CredLeaked,
    CredAgeS,
    CredTtlS,
    CredWorkloadId,
    CredAgentId,
    CredTaskId,
    CredMatchesWorkload,
    CredMatchesAgent,
}

impl Getter {
    /// The evidence name of a state value; `None` for what the event itself
    /// says, which the decision already carries.
    fn evidence_name(self) -> Option<&'static str> {
        use Getter::*;
        Some(match self {
            EventDepth => "event.depth",
            EventThreat => "event.threat",
            AgentCount => "agent.count",
            AgentCountOver => "agent.count_over",
            AgentBytes => "agent.bytes",
            AgentEgress => "agent.egress",
            AgentEgressOver => "agent.egress_over",
            AgentStepUps => "agent.step_ups",
            AgentDenials => "agent.denials",
            AgentIsNewTarget => "agent.is_new_target",
            AgentIsNewTool => "agent.is_new_tool",
            AgentIsNewDestination => "agent.is_new_destination",
            AgentDistinctTargets => "agent.distinct_targets",
            AgentDistinctTools => "agent.distinct_tools",
            AgentRepeatRun => "agent.repeat_run",
            AgentSecsSinceSensitiveRead => "agent.secs_since_sensitive_read",
            AgentLastSensitiveTarget => "agent.last_sensitive_target",
            AgentLastSensitiveClass => "agent.last_sensitive_class",
            AgentAgeS => "agent.age_s",
            AgentQuarantined => "agent.quarantined",
            AgentPendingStepUps => "agent.pending_step_ups",
            AgentTotalActions => "agent.total_actions",
            TaskExists => "task.exists",
            TaskHasScope => "task.has_scope",
            TaskStatus => "task.status",
            TaskIsOver => "task.is_over",
            TaskInScopeTool => "task.in_scope_tool",
            TaskInScopeTarget => "task.in_scope_target",
            TaskInScopeDataClass => "task.in_scope_data_class",
            TaskAllowsScope => "task.allows_scope",
            TaskEgressBytes => "task.egress_bytes",
            TaskEgressBudget => "task.egress_budget",
            TaskOverBudget => "task.over_budget",
            TaskActions => "task.actions",
            TaskAgeS => "task.age_s",
            TaskSecsSinceEnd => "task.secs_since_end",
            TaskMaxDepth => "task.max_depth",
            CredExists => "cred.exists",
            CredRevoked => "cred.revoked",
            CredExpired => "cred.expired",
            CredLeaked => "cred.leaked",
            CredAgeS => "cred.age_s",
            CredTtlS => "cred.ttl_s",
            CredWorkloadId => "cred.workload_id",
            CredAgentId => "cred.agent_id",
            CredTaskId => "cred.task_id",
            CredMatchesWorkload => "cred.matches_workload",
            CredMatchesAgent => "cred.matches_agent",
            _ => return None,
        })
    }
}

/// A value read from the frame, borrowed from the event or the state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value<'a> {
    Bool(bool),
    Int(i64),
    Str(&'a str),
    Strs(&'a [String]),
    /// The read itself failed (an unknown window): the rule gets an error.
    Fail(String),
}

impl Value<'_> {
    /// A 64-bit digest; equal values give equal digests.
    pub(crate) fn digest(&self) -> u64 {
        use xxhash_rust::xxh3::xxh3_64_with_seed;
        match self {
            Value::Bool(b) => mix(u64::from(*b) ^ 0x1000),
            Value::Int(i) => mix(*i as u64 ^ 0x2000_0000_0000_0000),
            Value::Str(s) => xxh3_64_with_seed(s.as_bytes(), 3),
            Value::Strs(items) => items.iter().fold(mix(items.len() as u64 ^ 0x4000), |h, s| {
                mix(h ^ xxh3_64_with_seed(s.as_bytes(), 4))
            }),
            Value::Fail(message) => xxh3_64_with_seed(message.as_bytes(), 5),
        }
    }

    fn to_dynamic(&self) -> Result<Dynamic, Box<EvalAltResult>> {
        match self {
            Value::Bool(b) => Ok(Dynamic::from_bool(*b)),
            Value::Int(i) => Ok(Dynamic::from_int(*i)),
            Value::Str(s) => Ok(Dynamic::from(ImmutableString::from(*s))),
            Value::Strs(items) => {
                Ok(Dynamic::from_array(items.iter().map(|s| Dynamic::from(ImmutableString::from(s.as_str()))).collect::<Array>()))
            }
            Value::Fail(message) => Err(message.clone().into()),
        }
    }

    fn to_owned_value(&self) -> Owned {
        match self {
            Value::Bool(b) => Owned::Bool(*b),
            Value::Int(i) => Owned::Int(*i),
            Value::Str(s) => Owned::Str((*s).into()),
            Value::Strs(items) => Owned::Strs(items.to_vec()),
            Value::Fail(message) => Owned::Fail(message.clone()),
        }
    }
}

/// A 64-bit finaliser (splitmix64), so small integers spread over the table.
pub(crate) fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A [`Value`] kept after the event is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Owned {
    Bool(bool),
    Int(i64),
    Str(ImmutableString),
    Strs(Vec<String>),
    Fail(String),
}

impl Owned {
    pub(crate) fn as_value(&self) -> Value<'_> {
        match self {
            Owned::Bool(b) => Value::Bool(*b),
            Owned::Int(i) => Value::Int(*i),
            Owned::Str(s) => Value::Str(s.as_str()),
            Owned::Strs(items) => Value::Strs(items),
            Owned::Fail(message) => Value::Fail(message.clone()),
        }
    }

    fn to_json(&self) -> serde_json::Value {
        match self {
            Owned::Bool(b) => (*b).into(),
            Owned::Int(i) => (*i).into(),
            Owned::Str(s) => s.as_str().into(),
            Owned::Strs(items) => items.clone().into(),
            Owned::Fail(message) => message.as_str().into(),
        }
    }
}

/// One read a rule made: what, with which argument, and what it got.
#[derive(Debug, Clone)]
pub(crate) struct Read {
    pub(crate) getter: Getter,
    pub(crate) arg: Option<ImmutableString>,
    pub(crate) value: Owned,
}

/// The event being decided and the state before it, shared by the views.
#[derive(Debug, Default)]
pub struct Frame {
    event: Option<Rc<ActivityEvent>>,
    agent: Option<Rc<AgentState>>,
    task: Option<Rc<TaskState>>,
    cred: Option<Rc<CredentialState>>,
    now: Timestamp,
    depth: u32,
    threat: &'static str,
    /// The agent's windows summed once per event: 1m, 10m, 1h.
    tallies: Cell<[Option<Tally>; 3]>,
    /// The reads of the rule being evaluated, in order.
    pub(crate) trace: Vec<Read>,
}

pub type SharedFrame = Rc<RefCell<Frame>>;

impl Frame {
    pub(crate) fn fill(&mut self, event: &Rc<ActivityEvent>, ctx: &Context) {
        self.event = Some(event.clone());
        self.agent = Some(ctx.agent.clone());
        self.task.clone_from(&ctx.task);
        self.cred.clone_from(&ctx.credential);
        self.now = ctx.now;
        self.depth = ctx.depth;
        self.threat = ctx.threat.as_ref().map_or("", |t| t.severity.as_str());
        self.tallies.set([None; 3]);
        self.trace.clear();
    }

    /// Lets go of the event and the state, so folding it copies nothing.
    pub(crate) fn release(&mut self) {
        self.event = None;
        self.agent = None;
        self.task = None;
        self.cred = None;
        self.trace.clear();
    }

    /// The evidence of the current trace, later reads of the same name winning.
    pub(crate) fn evidence(&self) -> BTreeMap<String, serde_json::Value> {
        self.trace
            .iter()
            .filter(|r| !matches!(r.value, Owned::Fail(_)))
            .filter_map(|r| {
                let name = r.getter.evidence_name()?;
                let name = match &r.arg {
                    Some(arg) => format!("{name}({arg})"),
                    None => name.to_owned(),
                };
                Some((name, r.value.to_json()))
            })
            .collect()
    }

    /// What `getter` (with `arg`, for methods) reads on the current event.
    #[inline(always)]
    pub(crate) fn read<'a>(&'a self, getter: Getter, arg: &'a str) -> Value<'a> {
        use Getter::*;
        use Value::{Bool, Int, Str, Strs};
        let (Some(e), Some(a)) = (self.event.as_deref(), self.agent.as_deref()) else {
            return Value::Fail("no event is being evaluated".to_owned());
        };
        let t = self.task.as_deref();
        let scope = t.and_then(|t| t.scope.as_ref());
        let c = self.cred.as_deref();
        let now = self.now;
        let opt = |v: &'a Option<String>| Str(v.as_deref().unwrap_or(""));
        match getter {
            EventId => Str(&e.event_id),
            EventKind => Str(e.kind.as_str()),
            EventTenant => Str(&e.tenant),
            EventAgentId => Str(&e.agent_id),
            EventWorkloadId => Str(&e.workload_id),
            EventTaskId => opt(&e.task_id),
            EventTool => opt(&e.tool),
            EventTarget => opt(&e.target),
            EventOperation => opt(&e.operation),
            EventDataClass => Str(e.data_class.map_or("", DataClass::as_str)),
            EventSensitive => Bool(e.data_class.is_some_and(DataClass::is_sensitive)),
            EventNonPublic => Bool(e.touches_non_public()),
            EventBytes => Int(clamp(e.bytes)),
            EventVerified => Bool(e.identity.verified),
            EventIdentityMethod => Str(e.identity.method.as_str()),
            EventTrustBoundary => opt(&e.trust_boundary),
            EventParentEventId => opt(&e.parent_event_id),
            EventCredentialId => Str(e.credential.as_ref().map_or("", |c| c.id.as_str())),
            EventCredentialScopes => Strs(e.credential.as_ref().map_or(&[], |c| c.scopes.as_slice())),
            EventTimeMs => Int(e.time.millis()),
            EventDepth => Int(i64::from(self.depth)),
            EventThreat => Str(self.threat),
            EventAttr => Str(e.attributes.get(arg).map_or("", String::as_str)),
            AgentCount => self.tally(a, arg, |t| i64::from(t.actions)),
            AgentBytes => self.tally(a, arg, |t| clamp(t.bytes)),
            AgentEgress => self.tally(a, arg, |t| clamp(t.egress)),
            AgentCountOver => self.over(a, arg, |t| i64::from(t.actions), 1),
            AgentEgressOver => self.over(a, arg, |t| clamp(t.egress), clamp(e.bytes)),
            AgentStepUps => self.tally(a, arg, |t| i64::from(t.step_ups)),
            AgentDenials => self.tally(a, arg, |t| i64::from(t.denials)),
            AgentIsNewTarget => Bool(!a.targets.contains(arg)),
            AgentIsNewTool => Bool(!a.tools.contains(arg)),
            AgentIsNewDestination => Bool(!a.destinations.contains(arg)),
            AgentDistinctTargets => Int(a.targets.len() as i64),
            AgentDistinctTools => Int(a.tools.len() as i64),
            AgentRepeatRun => Int(i64::from(if call_signature(e) == a.last_call { a.repeats.wrapping_add(1) } else { 1 })),
            AgentSecsSinceSensitiveRead => Int(a.last_sensitive_read.as_ref().map_or(-1, |r| secs(now.secs_since(r.time)))),
            AgentLastSensitiveTarget => Str(a.last_sensitive_read.as_ref().map_or("", |r| r.target.as_str())),
            AgentLastSensitiveClass => Str(a.last_sensitive_read.as_ref().map_or("", |r| r.data_class.as_str())),
            AgentAgeS => Int(secs(now.secs_since(a.first_seen))),
            AgentQuarantined => Bool(a.quarantined),
            AgentPendingStepUps => Int(a.pending_step_ups.iter().filter(|p| p.expires_at > now).count() as i64),
            AgentWorkloadId => Str(&a.workload_id),
            AgentTotalActions => {
                let d = a.decisions;
                Int((d.allow + d.step_up + d.deny + d.revoke) as i64)
            }
            TaskExists => Bool(t.is_some()),
            TaskHasScope => Bool(scope.is_some()),
            TaskStatus => Str(t.map_or("none", |t| t.status.as_str())),
            TaskIsOver => Bool(t.is_some_and(TaskState::is_over)),
            TaskInScopeTool => Bool(scope.is_some_and(|s| s.allows_tool(arg))),
            TaskInScopeTarget => Bool(scope.is_some_and(|s| s.allows_target(arg))),
            TaskInScopeDataClass => Bool(match DataClass::parse(arg) {
                Some(class) => scope.is_some_and(|s| s.allows_data_class(class)),
                None => arg.is_empty(),
            }),
            TaskAllowsScope => Bool(scope.is_some_and(|s| {
                let target = arg.split_once(':').map_or(arg, |(target, _)| target);
                s.allows_target(target)
            })),
            TaskEgressBytes => Int(t.map_or(0, |t| clamp(t.egress_bytes))),
            TaskEgressBudget => Int(scope.and_then(|s| s.egress_budget_bytes).map_or(-1, clamp)),
            TaskOverBudget => Bool(match (t, scope.and_then(|s| s.egress_budget_bytes)) {
                (Some(t), Some(budget)) => t.egress_bytes.saturating_add(e.bytes) > budget,
                _ => false,
            }),
            TaskActions => Int(t.map_or(0, |t| t.actions as i64)),
            TaskAgeS => Int(t.and_then(|t| t.started_at).map_or(-1, |s| secs(now.secs_since(s)))),
            TaskSecsSinceEnd => Int(t.and_then(|t| t.ended_at).map_or(-1, |e| secs(now.secs_since(e)))),
            TaskMaxDepth => Int(t.map_or(0, |t| i64::from(t.max_depth))),
            CredExists => Bool(c.is_some()),
            CredId => Str(c.map_or("", |c| c.id.as_str())),
            CredRevoked => Bool(c.is_some_and(|c| c.revoked_at.is_some())),
            CredExpired => Bool(c.is_some_and(|c| c.is_expired(now))),
            CredLeaked => Bool(c.is_some_and(|c| c.leaked)),
            CredAgeS => Int(c.map_or(-1, |c| secs(now.secs_since(c.issued_at)))),
            CredTtlS => Int(c.and_then(|c| c.ttl_s).map_or(-1, clamp)),
            CredWorkloadId => Str(c.map_or("", |c| c.workload_id.as_str())),
            CredAgentId => Str(c.map_or("", |c| c.agent_id.as_str())),
            CredTaskId => Str(c.and_then(|c| c.task_id.as_deref()).unwrap_or("")),
            CredMatchesWorkload => Bool(c.is_some_and(|c| c.workload_id == e.workload_id)),
            CredMatchesAgent => Bool(c.is_some_and(|c| c.agent_id == e.agent_id)),
        }
    }
}

impl Frame {
    fn tally<'a>(&self, agent: &AgentState, window: &str, pick: fn(&Tally) -> i64) -> Value<'a> {
        let Some(span) = Span::parse(window) else {
            return Value::Fail(format!("unknown window `{window}`; use \"1m\", \"10m\" or \"1h\""));
        };
        let slot = match span {
            Span::M1 => 0,
            Span::M10 => 1,
            Span::H1 => 2,
        };
        let mut tallies = self.tallies.get();
        let tally = *tallies[slot].get_or_insert_with(|| agent.windows.as_ref().map(|w| w.sum(span, self.now)).unwrap_or_default());
        self.tallies.set(tallies);
        Value::Int(pick(&tally))
    }

    /// Whether a window's total, with `this` event's share added, is above
    /// a limit; `arg` is the window and the limit, `"1m,2500000"`.
    fn over<'a>(&self, agent: &AgentState, arg: &str, pick: fn(&Tally) -> i64, this: i64) -> Value<'a> {
        let Some((window, limit)) = arg.split_once(',').and_then(|(w, n)| Some((w, n.parse::<i64>().ok()?))) else {
            return Value::Fail(format!("`{arg}` is not a window and a limit"));
        };
        match self.tally(agent, window, pick) {
            Value::Int(total) => Value::Bool(total.saturating_add(this) > limit),
            failed => failed,
        }
    }
}

fn clamp(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

fn secs(value: f64) -> i64 {
    value.floor() as i64
}

/// A read from a rule: evaluated, traced, handed to Rhai.
fn get(frame: &SharedFrame, getter: Getter, arg: Option<ImmutableString>) -> Result<Dynamic, Box<EvalAltResult>> {
    let mut frame = frame.borrow_mut();
    let (value, dynamic) = {
        let value = frame.read(getter, arg.as_ref().map_or("", |a| a.as_str()));
        match &value {
            // One string shared by the trace and the rule.
            Value::Str(s) => {
                let s = ImmutableString::from(*s);
                (Owned::Str(s.clone()), Ok(Dynamic::from(s)))
            }
            _ => (value.to_owned_value(), value.to_dynamic()),
        }
    };
    frame.trace.push(Read { getter, arg, value });
    dynamic
}

#[derive(Debug, Clone)]
pub struct EventView(SharedFrame);

#[derive(Debug, Clone)]
pub struct AgentView(SharedFrame);

#[derive(Debug, Clone)]
pub struct TaskView(SharedFrame);

#[derive(Debug, Clone)]
pub struct CredentialView(SharedFrame);

/// The four views over `frame`, ready to go into a Rhai scope.
pub fn views(frame: &SharedFrame) -> (EventView, AgentView, TaskView, CredentialView) {
    (EventView(frame.clone()), AgentView(frame.clone()), TaskView(frame.clone()), CredentialView(frame.clone()))
}

/// Registers the views, their getters and the helpers on `engine`.
pub fn register(engine: &mut Engine) {
    use Getter::*;
    macro_rules! getters {
        ($view:ty, $($name:literal => $getter:ident),+ $(,)?) => {
            $(engine.register_get($name, |v: &mut $view| get(&v.0, $getter, None));)+
        };
    }
    macro_rules! methods {
        ($view:ty, $($name:literal => $getter:ident),+ $(,)?) => {
            $(engine.register_fn($name, |v: &mut $view, arg: ImmutableString| get(&v.0, $getter, Some(arg)));)+
        };
    }

    engine.register_type_with_name::<EventView>("Event");
    getters!(EventView,
        "id" => EventId,
        "kind" => EventKind,
        "tenant" => EventTenant,
        "agent_id" => EventAgentId,
        "workload_id" => EventWorkloadId,
        "task_id" => EventTaskId,
        "tool" => EventTool,
        "target" => EventTarget,
        "operation" => EventOperation,
        "data_class" => EventDataClass,
        "sensitive" => EventSensitive,
        "non_public" => EventNonPublic,
        "bytes" => EventBytes,
        "verified" => EventVerified,
        "identity_method" => EventIdentityMethod,
        "trust_boundary" => EventTrustBoundary,
        "parent_event_id" => EventParentEventId,
        "credential_id" => EventCredentialId,
        "credential_scopes" => EventCredentialScopes,
        "time_ms" => EventTimeMs,
        "depth" => EventDepth,
        "threat" => EventThreat,
    );
    methods!(EventView, "attr" => EventAttr);

    engine.register_type_with_name::<AgentView>("Agent");
    methods!(AgentView,
        "count" => AgentCount,
        "bytes" => AgentBytes,
        "egress" => AgentEgress,
        "step_ups" => AgentStepUps,
        "denials" => AgentDenials,
        "is_new_target" => AgentIsNewTarget,
        "is_new_tool" => AgentIsNewTool,
        "is_new_destination" => AgentIsNewDestination,
    );
    // A limit is an argument of the read like its window, so the memo
    // keys on both: "1m,2500000".
    for (name, getter) in [("count_over", AgentCountOver), ("egress_over", AgentEgressOver)] {
        engine.register_fn(name, move |v: &mut AgentView, window: ImmutableString, limit: i64| {
            get(&v.0, getter, Some(format!("{window},{limit}").into()))
        });
    }
    getters!(AgentView,
        "distinct_targets" => AgentDistinctTargets,
        "distinct_tools" => AgentDistinctTools,
        "repeat_run" => AgentRepeatRun,
        "secs_since_sensitive_read" => AgentSecsSinceSensitiveRead,
        "last_sensitive_target" => AgentLastSensitiveTarget,
        "last_sensitive_class" => AgentLastSensitiveClass,
        "age_s" => AgentAgeS,
        "quarantined" => AgentQuarantined,
        "pending_step_ups" => AgentPendingStepUps,
        "workload_id" => AgentWorkloadId,
        "total_actions" => AgentTotalActions,
    );

    engine.register_type_with_name::<TaskView>("Task");
    getters!(TaskView,
        "exists" => TaskExists,
        "has_scope" => TaskHasScope,
        "status" => TaskStatus,
        "is_over" => TaskIsOver,
        "egress_bytes" => TaskEgressBytes,
        "egress_budget" => TaskEgressBudget,
        "over_budget" => TaskOverBudget,
        "actions" => TaskActions,
        "age_s" => TaskAgeS,
        "secs_since_end" => TaskSecsSinceEnd,
        "max_depth" => TaskMaxDepth,
    );
    methods!(TaskView,
        "in_scope_tool" => TaskInScopeTool,
        "in_scope_target" => TaskInScopeTarget,
        "in_scope_data_class" => TaskInScopeDataClass,
        "allows_scope" => TaskAllowsScope,
    );

    engine.register_type_with_name::<CredentialView>("Credential");
    getters!(CredentialView,
        "exists" => CredExists,
        "id" => CredId,
        "revoked" => CredRevoked,
        "expired" => CredExpired,
        "leaked" => CredLeaked,
        "age_s" => CredAgeS,
        "ttl_s" => CredTtlS,
        "workload_id" => CredWorkloadId,
        "agent_id" => CredAgentId,
        "task_id" => CredTaskId,
        "matches_workload" => CredMatchesWorkload,
        "matches_agent" => CredMatchesAgent,
    );
}
