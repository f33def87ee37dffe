//! The read-only views a rule sees: `event`, `agent`, `task` and `cred`.
//!
//! Views share the state through `Rc`, so building them copies nothing of
//! substance. Every state value a rule reads is written to the rule's
//! [`Evidence`] under the name it was read by, which is what a decision's
//! `evidence` shows: the analyst sees exactly the numbers the rule saw.

use std::cell::RefCell;
use std::rc::Rc;

use rhai::{Array, Dynamic, Engine, EvalAltResult, ImmutableString};

use crate::event::{glob_match, ActivityEvent, DataClass};
use crate::state::window::Span;
use crate::state::{call_signature, AgentState, Context, CredentialState, TaskState};

/// The reads of one rule evaluation: (name, argument, value).
#[derive(Debug, Default)]
pub struct Evidence {
    reads: Vec<(&'static str, Option<ImmutableString>, Dynamic)>,
}

impl Evidence {
    pub fn clear(&mut self) {
        self.reads.clear();
    }

    /// The reads as a JSON map, later reads of the same name winning.
    pub fn to_json(&self) -> std::collections::BTreeMap<String, serde_json::Value> {
        self.reads
            .iter()
            .map(|(name, arg, value)| {
                let name = match arg {
                    Some(arg) => format!("{name}({arg})"),
                    None => (*name).to_owned(),
                };
                (name, dynamic_to_json(value))
            })
            .collect()
    }
}

fn dynamic_to_json(value: &Dynamic) -> serde_json::Value {
    if let Ok(v) = value.as_int() {
        v.into()
    } else if let Ok(v) = value.as_bool() {
        v.into()
    } else if let Ok(v) = value.as_float() {
        serde_json::Number::from_f64((v * 1000.0).round() / 1000.0).map_or(serde_json::Value::Null, Into::into)
    } else if let Some(v) = value.read_lock::<ImmutableString>() {
        v.as_str().into()
    } else {
        value.to_string().into()
    }
}

pub type EvidenceLog = Rc<RefCell<Evidence>>;

fn record<T: Clone + Into<Dynamic>>(log: &EvidenceLog, name: &'static str, arg: Option<&str>, value: T) -> T {
    log.borrow_mut().reads.push((name, arg.map(ImmutableString::from), value.clone().into()));
    value
}

fn text(value: Option<&str>) -> ImmutableString {
    value.map(ImmutableString::from).unwrap_or_default()
}

#[derive(Debug, Clone)]
pub struct EventView {
    event: Rc<ActivityEvent>,
    depth: u32,
    threat: ImmutableString,
    log: EvidenceLog,
}

#[derive(Debug, Clone)]
pub struct AgentView {
    agent: Rc<AgentState>,
    now: crate::event::Timestamp,
    repeat_run: u32,
    log: EvidenceLog,
}

#[derive(Debug, Clone)]
pub struct TaskView {
    task: Option<Rc<TaskState>>,
    now: crate::event::Timestamp,
    log: EvidenceLog,
}

#[derive(Debug, Clone)]
pub struct CredentialView {
    cred: Option<Rc<CredentialState>>,
    now: crate::event::Timestamp,
    log: EvidenceLog,
}

/// The four views of one event, ready to go into a Rhai scope.
pub fn views(event: &Rc<ActivityEvent>, ctx: &Context, log: &EvidenceLog) -> (EventView, AgentView, TaskView, CredentialView) {
    let repeat_run = if call_signature(event) == ctx.agent.last_call { ctx.agent.repeats + 1 } else { 1 };
    (
        EventView {
            event: event.clone(),
            depth: ctx.depth,
            threat: ctx.threat.as_ref().map(|t| ImmutableString::from(t.severity.as_str())).unwrap_or_default(),
            log: log.clone(),
        },
        AgentView { agent: ctx.agent.clone(), now: ctx.now, repeat_run, log: log.clone() },
        TaskView { task: ctx.task.clone(), now: ctx.now, log: log.clone() },
        CredentialView { cred: ctx.credential.clone(), now: ctx.now, log: log.clone() },
    )
}

fn span(text: &str) -> Result<Span, Box<EvalAltResult>> {
    Span::parse(text).ok_or_else(|| format!("unknown window `{text}`; use \"1m\", \"10m\" or \"1h\"").into())
}

fn secs(value: f64) -> i64 {
    value.floor() as i64
}

/// Registers the views, their getters and the helpers on `engine`.
pub fn register(engine: &mut Engine) {
    engine
        .register_type_with_name::<EventView>("Event")
        .register_get("id", |e: &mut EventView| ImmutableString::from(e.event.event_id.as_str()))
        .register_get("kind", |e: &mut EventView| ImmutableString::from(e.event.kind.as_str()))
        .register_get("tenant", |e: &mut EventView| ImmutableString::from(e.event.tenant.as_str()))
        .register_get("agent_id", |e: &mut EventView| ImmutableString::from(e.event.agent_id.as_str()))
        .register_get("workload_id", |e: &mut EventView| ImmutableString::from(e.event.workload_id.as_str()))
        .register_get("task_id", |e: &mut EventView| text(e.event.task_id.as_deref()))
        .register_get("tool", |e: &mut EventView| text(e.event.tool.as_deref()))
        .register_get("target", |e: &mut EventView| text(e.event.target.as_deref()))
        .register_get("operation", |e: &mut EventView| text(e.event.operation.as_deref()))
        .register_get("data_class", |e: &mut EventView| text(e.event.data_class.map(DataClass::as_str)))
        .register_get("sensitive", |e: &mut EventView| e.event.data_class.is_some_and(DataClass::is_sensitive))
        .register_get("non_public", |e: &mut EventView| e.event.touches_non_public())
        .register_get("bytes", |e: &mut EventView| e.event.bytes.min(i64::MAX as u64) as i64)
        .register_get("verified", |e: &mut EventView| e.event.identity.verified)
        .register_get("identity_method", |e: &mut EventView| ImmutableString::from(e.event.identity.method.as_str()))
        .register_get("trust_boundary", |e: &mut EventView| text(e.event.trust_boundary.as_deref()))
        .register_get("parent_event_id", |e: &mut EventView| text(e.event.parent_event_id.as_deref()))
        .register_get("credential_id", |e: &mut EventView| text(e.event.credential.as_ref().map(|c| c.id.as_str())))
        .register_get("credential_scopes", |e: &mut EventView| -> Array {
            e.event.credential.iter().flat_map(|c| &c.scopes).map(|s| Dynamic::from(ImmutableString::from(s.as_str()))).collect()
        })
        .register_get("time_ms", |e: &mut EventView| e.event.time.millis())
        .register_get("depth", |e: &mut EventView| record(&e.log, "event.depth", None, i64::from(e.depth)))
        .register_get("threat", |e: &mut EventView| record(&e.log, "event.threat", None, e.threat.clone()))
        .register_fn("attr", |e: &mut EventView, name: &str| text(e.event.attributes.get(name).map(String::as_str)));

    engine
        .register_type_with_name::<AgentView>("Agent")
        .register_fn("count", |a: &mut AgentView, w: &str| -> Result<i64, Box<EvalAltResult>> {
            let v = a.tally(span(w)?).actions;
            Ok(record(&a.log, "agent.count", Some(w), i64::from(v)))
        })
        .register_fn("bytes", |a: &mut AgentView, w: &str| -> Result<i64, Box<EvalAltResult>> {
            let v = a.tally(span(w)?).bytes;
            Ok(record(&a.log, "agent.bytes", Some(w), v.min(i64::MAX as u64) as i64))
        })
        .register_fn("egress", |a: &mut AgentView, w: &str| -> Result<i64, Box<EvalAltResult>> {
            let v = a.tally(span(w)?).egress;
            Ok(record(&a.log, "agent.egress", Some(w), v.min(i64::MAX as u64) as i64))
        })
        .register_fn("step_ups", |a: &mut AgentView, w: &str| -> Result<i64, Box<EvalAltResult>> {
            let v = a.tally(span(w)?).step_ups;
            Ok(record(&a.log, "agent.step_ups", Some(w), i64::from(v)))
        })
        .register_fn("denials", |a: &mut AgentView, w: &str| -> Result<i64, Box<EvalAltResult>> {
            let v = a.tally(span(w)?).denials;
            Ok(record(&a.log, "agent.denials", Some(w), i64::from(v)))
        })
        .register_fn("is_new_target", |a: &mut AgentView, t: &str| {
            record(&a.log, "agent.is_new_target", Some(t), !a.agent.targets.contains(t))
        })
        .register_fn("is_new_tool", |a: &mut AgentView, t: &str| {
            record(&a.log, "agent.is_new_tool", Some(t), !a.agent.tools.contains(t))
        })
        .register_fn("is_new_destination", |a: &mut AgentView, t: &str| {
            record(&a.log, "agent.is_new_destination", Some(t), !a.agent.destinations.contains(t))
        })
        .register_get("distinct_targets", |a: &mut AgentView| {
            record(&a.log, "agent.distinct_targets", None, a.agent.targets.len() as i64)
        })
        .register_get("distinct_tools", |a: &mut AgentView| {
            record(&a.log, "agent.distinct_tools", None, a.agent.tools.len() as i64)
        })
        .register_get("repeat_run", |a: &mut AgentView| record(&a.log, "agent.repeat_run", None, i64::from(a.repeat_run)))
        .register_get("secs_since_sensitive_read", |a: &mut AgentView| {
            let v = a.agent.last_sensitive_read.as_ref().map_or(-1, |r| secs(a.now.secs_since(r.time)));
            record(&a.log, "agent.secs_since_sensitive_read", None, v)
        })
        .register_get("last_sensitive_target", |a: &mut AgentView| {
            let v = text(a.agent.last_sensitive_read.as_ref().map(|r| r.target.as_str()));
            record(&a.log, "agent.last_sensitive_target", None, v)
        })
        .register_get("last_sensitive_class", |a: &mut AgentView| {
            let v = text(a.agent.last_sensitive_read.as_ref().map(|r| r.data_class.as_str()));
            record(&a.log, "agent.last_sensitive_class", None, v)
        })
        .register_get("age_s", |a: &mut AgentView| record(&a.log, "agent.age_s", None, secs(a.now.secs_since(a.agent.first_seen))))
        .register_get("quarantined", |a: &mut AgentView| record(&a.log, "agent.quarantined", None, a.agent.quarantined))
        .register_get("pending_step_ups", |a: &mut AgentView| {
            let v = a.agent.pending_step_ups.iter().filter(|p| p.expires_at > a.now).count() as i64;
            record(&a.log, "agent.pending_step_ups", None, v)
        })
        .register_get("workload_id", |a: &mut AgentView| ImmutableString::from(a.agent.workload_id.as_str()))
        .register_get("total_actions", |a: &mut AgentView| {
            let d = a.agent.decisions;
            record(&a.log, "agent.total_actions", None, (d.allow + d.step_up + d.deny + d.revoke) as i64)
        });

    engine
        .register_type_with_name::<TaskView>("Task")
        .register_get("exists", |t: &mut TaskView| record(&t.log, "task.exists", None, t.task.is_some()))
        .register_get("has_scope", |t: &mut TaskView| {
            record(&t.log, "task.has_scope", None, t.task.as_ref().is_some_and(|t| t.scope.is_some()))
        })
        .register_get("status", |t: &mut TaskView| {
            let v = ImmutableString::from(t.task.as_ref().map_or("none", |t| t.status.as_str()));
            record(&t.log, "task.status", None, v)
        })
        .register_get("is_over", |t: &mut TaskView| record(&t.log, "task.is_over", None, t.task.as_ref().is_some_and(|t| t.is_over())))
        .register_fn("in_scope_tool", |t: &mut TaskView, tool: &str| {
            let v = t.task.as_ref().and_then(|t| t.scope.as_ref()).is_some_and(|s| s.allows_tool(tool));
            record(&t.log, "task.in_scope_tool", Some(tool), v)
        })
        .register_fn("in_scope_target", |t: &mut TaskView, target: &str| {
            let v = t.task.as_ref().and_then(|t| t.scope.as_ref()).is_some_and(|s| s.allows_target(target));
            record(&t.log, "task.in_scope_target", Some(target), v)
        })
        .register_fn("in_scope_data_class", |t: &mut TaskView, class: &str| {
            let v = match DataClass::parse(class) {
                Some(c) => t.task.as_ref().and_then(|t| t.scope.as_ref()).is_some_and(|s| s.allows_data_class(c)),
                None => class.is_empty(),
            };
            record(&t.log, "task.in_scope_data_class", Some(class), v)
        })
        .register_fn("allows_scope", |t: &mut TaskView, scope: &str| {
            let v = t.task.as_ref().and_then(|t| t.scope.as_ref()).is_some_and(|s| {
                let target = scope.split_once(':').map_or(scope, |(target, _)| target);
                s.targets.iter().any(|g| glob_match(g, target))
            });
            record(&t.log, "task.allows_scope", Some(scope), v)
        })
        .register_get("egress_bytes", |t: &mut TaskView| {
            let v = t.task.as_ref().map_or(0, |t| t.egress_bytes.min(i64::MAX as u64) as i64);
            record(&t.log, "task.egress_bytes", None, v)
        })
        .register_get("egress_budget", |t: &mut TaskView| {
            let v = t
                .task
                .as_ref()
                .and_then(|t| t.scope.as_ref()?.egress_budget_bytes)
                .map_or(-1, |b| b.min(i64::MAX as u64) as i64);
            record(&t.log, "task.egress_budget", None, v)
        })
        .register_get("actions", |t: &mut TaskView| record(&t.log, "task.actions", None, t.task.as_ref().map_or(0, |t| t.actions as i64)))
        .register_get("age_s", |t: &mut TaskView| {
            let v = t.task.as_ref().and_then(|t| t.started_at).map_or(-1, |s| secs(t.now.secs_since(s)));
            record(&t.log, "task.age_s", None, v)
        })
        .register_get("secs_since_end", |t: &mut TaskView| {
            let v = t.task.as_ref().and_then(|t| t.ended_at).map_or(-1, |e| secs(t.now.secs_since(e)));
            record(&t.log, "task.secs_since_end", None, v)
        })
        .register_get("max_depth", |t: &mut TaskView| {
            record(&t.log, "task.max_depth", None, t.task.as_ref().map_or(0, |t| i64::from(t.max_depth)))
        });

    engine
        .register_type_with_name::<CredentialView>("Credential")
        .register_get("exists", |c: &mut CredentialView| record(&c.log, "cred.exists", None, c.cred.is_some()))
        .register_get("id", |c: &mut CredentialView| text(c.cred.as_ref().map(|c| c.id.as_str())))
        .register_get("revoked", |c: &mut CredentialView| {
            record(&c.log, "cred.revoked", None, c.cred.as_ref().is_some_and(|c| c.revoked_at.is_some()))
        })
        .register_get("expired", |c: &mut CredentialView| {
            let now = c.now;
            record(&c.log, "cred.expired", None, c.cred.as_ref().is_some_and(|c| c.is_expired(now)))
        })
        .register_get("leaked", |c: &mut CredentialView| record(&c.log, "cred.leaked", None, c.cred.as_ref().is_some_and(|c| c.leaked)))
        .register_get("age_s", |c: &mut CredentialView| {
            let v = c.cred.as_ref().map_or(-1, |cr| secs(c.now.secs_since(cr.issued_at)));
            record(&c.log, "cred.age_s", None, v)
        })
        .register_get("ttl_s", |c: &mut CredentialView| {
            let v = c.cred.as_ref().and_then(|c| c.ttl_s).map_or(-1, |t| t.min(i64::MAX as u64) as i64);
            record(&c.log, "cred.ttl_s", None, v)
        })
        .register_get("workload_id", |c: &mut CredentialView| {
            record(&c.log, "cred.workload_id", None, text(c.cred.as_ref().map(|c| c.workload_id.as_str())))
        })
        .register_get("agent_id", |c: &mut CredentialView| {
            record(&c.log, "cred.agent_id", None, text(c.cred.as_ref().map(|c| c.agent_id.as_str())))
        })
        .register_get("task_id", |c: &mut CredentialView| {
            record(&c.log, "cred.task_id", None, text(c.cred.as_ref().and_then(|c| c.task_id.as_deref())))
        });
}

impl AgentView {
    fn tally(&self, span: Span) -> crate::state::window::Tally {
        self.agent.windows.as_ref().map(|w| w.sum(span, self.now)).unwrap_or_default()
    }
}
