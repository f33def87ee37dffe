//! Pure decisions: (event, state before it, rule findings) → decision and
//! commands. The built-in obligations of SPEC §4 live here, not in rules,
//! so no ruleset can switch them off.

pub mod ocsf;

use crate::event::{ActivityEvent, EventKind, Severity, Signal, SignalKind, Timestamp};
use crate::rules::{Evaluation, FailMode, RulesetConfig};
use crate::state::{Context, Overdue, State, TaskStatus};
use crate::verdict::{stable_id, CommandKind, ControlCommand, Decision, Mode, Reason, Verdict};

/// A decision and the commands it causes.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub decision: Decision,
    pub commands: Vec<ControlCommand>,
}

fn builtin(rule: &str, message: String) -> Reason {
    Reason { rule: format!("builtin.{rule}"), score: 0, message, evidence: Default::default() }
}

fn verdict_for(score: u32, config: &RulesetConfig) -> Verdict {
    let t = config.thresholds;
    if score >= t.revoke {
        Verdict::Revoke
    } else if score >= t.deny {
        Verdict::Deny
    } else if score >= t.step_up {
        Verdict::StepUp
    } else {
        Verdict::Allow
    }
}

fn threshold_of(verdict: Verdict, config: &RulesetConfig) -> u32 {
    let t = config.thresholds;
    match verdict {
        Verdict::Allow => 0,
        Verdict::StepUp => t.step_up,
        Verdict::Deny => t.deny,
        Verdict::Revoke => t.revoke,
    }
}

/// The decision id of an event: stable across rulesets, so replays line up.
pub fn decision_id(event: &ActivityEvent) -> String {
    stable_id("d", &[&event.tenant, &event.agent_id, &event.event_id])
}

/// Decides one activity event. `state` is read only, for the live
/// credentials that revocations name.
pub fn activity(
    event: &ActivityEvent,
    ctx: &Context,
    eval: Evaluation,
    config: &RulesetConfig,
    ruleset: &str,
    mode: Mode,
    state: &State,
) -> Outcome {
    let now = event.time;
    let rule_score = eval.reasons.iter().map(|r| r.score).sum::<u32>().min(100);
    let Evaluation { mut reasons, faults } = eval;
    let mut floor = Verdict::Allow;
    let mut raise = |verdict: Verdict, reason: Reason, reasons: &mut Vec<Reason>| {
        floor = floor.max(verdict);
        reasons.push(reason);
    };
    let agent = &ctx.agent;
    let task = ctx.task.as_deref();

    if agent.quarantined && event.kind != EventKind::Approval {
        raise(Verdict::Deny, builtin("quarantined", "agent is quarantined until released".into()), &mut reasons);
    }
    let asks_for_credential = matches!(event.kind, EventKind::CredentialRequest | EventKind::CredentialIssued);
    if !event.identity.verified && (asks_for_credential || event.touches_non_public()) {
        let what = if asks_for_credential { "requests a credential" } else { "touches non-public data" };
        let message = format!("unverified identity ({}) {what}", event.identity.method);
        raise(Verdict::Deny, builtin("unverified_identity", message), &mut reasons);
    }
    if let (Some(cred), false) = (ctx.credential.as_deref(), event.kind == EventKind::CredentialIssued) {
        if cred.is_expired(now) {
            let at = cred.expires_at().unwrap_or_default();
            raise(Verdict::Deny, builtin("expired_credential", format!("credential `{}` expired at {at}", cred.id)), &mut reasons);
        } else if let Some(at) = cred.revoked_at {
            raise(Verdict::Deny, builtin("revoked_credential", format!("credential `{}` was revoked at {at}", cred.id)), &mut reasons);
        } else if cred.leaked {
            raise(Verdict::Deny, builtin("leaked_credential", format!("credential `{}` is reported leaked", cred.id)), &mut reasons);
        }
    }
    if let Some(t) = task {
        let past_deadline = t.deadline.is_some_and(|d| now > d);
        if (t.status == TaskStatus::Expired || past_deadline) && event.kind != EventKind::TaskEnded {
            let message = format!("task `{}` ran past its max_duration_s", t.task_id);
            raise(Verdict::Deny, builtin("task_deadline", message), &mut reasons);
        }
    }
    if let (EventKind::Approval, Some(approval)) = (event.kind, &event.approval) {
        let pending = agent.pending_step_ups.iter().any(|p| p.decision_id == approval.decision_id && p.expires_at > now);
        if pending && !approval.granted {
            let message = format!("`{}` refused step-up `{}`", approval.approver, approval.decision_id);
            raise(Verdict::Revoke, builtin("approval_refused", message), &mut reasons);
        } else if !pending {
            let message = format!("approval names `{}`, which is not a pending step-up", approval.decision_id);
            reasons.push(builtin("approval_unmatched", message));
        }
    }
    let pending = (event.kind != EventKind::Approval)
        .then(|| agent.pending_step_up(event.task_id.as_deref(), now))
        .flatten();
    if let Some(p) = pending {
        let message = format!("waiting for approval of step-up `{}`", p.decision_id);
        raise(Verdict::StepUp, builtin("pending_step_up", message), &mut reasons);
    }
    if !faults.is_empty() && config.fail_mode == FailMode::Closed && event.touches_non_public() {
        let ids: Vec<&str> = faults.iter().map(|f| f.rule.as_str()).collect();
        let message = format!("rule fault on non-public data ({}), failing closed", ids.join(", "));
        raise(Verdict::Deny, builtin("rule_fault", message), &mut reasons);
    }
    if event.kind == EventKind::TaskEnded {
        reasons.push(builtin("task_ended", "task ended; its live credentials are revoked".into()));
    }

    let verdict = verdict_for(rule_score, config).max(floor);
    let score = rule_score.max(threshold_of(verdict, config));
    let decision = Decision {
        decision_id: decision_id(event),
        event_id: event.event_id.clone(),
        time: now.to_rfc3339(),
        tenant: event.tenant.clone(),
        agent_id: event.agent_id.clone(),
        workload_id: event.workload_id.clone(),
        task_id: event.task_id.clone(),
        decision: verdict,
        score,
        reasons,
        faults,
        ruleset: ruleset.to_owned(),
        mode,
    };

    let mut commands = Vec::new();
    if mode == Mode::Enforce {
        let id = &decision.decision_id;
        let command = |kind: CommandKind, credential_ids: Vec<String>, reason: String, expires_at: Option<Timestamp>| {
            let n = kind.as_str();
            ControlCommand {
                command_id: stable_id("c", &[id, n]),
                issued_at: now.to_rfc3339(),
                command: kind,
                tenant: event.tenant.clone(),
                agent_id: event.agent_id.clone(),
                workload_id: event.workload_id.clone(),
                task_id: event.task_id.clone(),
                credential_ids,
                reason,
                decision_id: id.clone(),
                expires_at: expires_at.map(Timestamp::to_rfc3339),
            }
        };
        let live = || state.live_credentials(&event.tenant, &event.agent_id, event.task_id.as_deref(), now);
        match verdict {
            Verdict::Revoke => {
                let mut ids = live();
                if let Some(c) = &event.credential {
                    if ctx.credential.as_ref().is_some_and(|s| s.is_live(now)) && !ids.contains(&c.id) {
                        ids.push(c.id.clone());
                    }
                }
                let kind = if ids.is_empty() { CommandKind::RevokeAgent } else { CommandKind::RevokeCredentials };
                commands.push(command(kind, ids, top_reason(&decision), None));
            }
            Verdict::StepUp if pending.is_none() => {
                let expires = now.plus_secs(state.config.step_up_ttl_s as i64);
                commands.push(command(CommandKind::StepUp, Vec::new(), top_reason(&decision), Some(expires)));
            }
            _ => {}
        }
        // The obligation holds whatever the rules said; a revoke above already named them.
        if event.kind == EventKind::TaskEnded && verdict != Verdict::Revoke {
            let ids = live();
            if !ids.is_empty() {
                let mut revoke = command(CommandKind::RevokeCredentials, ids, "task ended".into(), None);
                revoke.command_id = stable_id("c", &[id, "task_ended"]);
                commands.push(revoke);
            }
        }
    }
    Outcome { decision, commands }
}

/// The message of the strongest reason, for a command's `reason`.
fn top_reason(decision: &Decision) -> String {
    let builtin = decision.reasons.iter().find(|r| r.rule.starts_with("builtin.") && r.rule != "builtin.task_ended");
    let strongest = decision.reasons.iter().filter(|r| !r.rule.starts_with("builtin.")).max_by_key(|r| r.score);
    match builtin.or(strongest) {
        Some(r) => format!("{}: {}", r.rule, r.message),
        None => format!("score {}", decision.score),
    }
}

/// The commands a signal causes (SPEC §4). `owns_unknown` says whether this
/// engine speaks for credentials and agents it holds no state for (true on
/// files; on Kafka, for the worker holding activity partition 0), so they
/// are revoked once, not by every instance.
pub fn signal(signal: &Signal, state: &State, owns_unknown: bool) -> Vec<ControlCommand> {
    let now = signal.time;
    let mut commands = Vec::new();
    let mut push = |kind: CommandKind, agent_id: &str, workload_id: &str, task_id: Option<String>, ids: Vec<String>, reason: String| {
        let n = commands.len().to_string();
        commands.push(ControlCommand {
            command_id: stable_id("c", &[&signal.signal_id, kind.as_str(), agent_id, &n]),
            issued_at: now.to_rfc3339(),
            command: kind,
            tenant: signal.tenant.clone(),
            agent_id: agent_id.to_owned(),
            workload_id: workload_id.to_owned(),
            task_id,
            credential_ids: ids,
            reason,
            decision_id: signal.signal_id.clone(),
            expires_at: None,
        });
    };
    let agents = state.agents_named_by(signal);
    let severe = signal.severity >= Severity::High;
    match signal.kind {
        SignalKind::CredentialLeaked => {
            let Some(cred_id) = signal.credential_id.as_deref() else { return commands };
            let reason = format!("credential `{cred_id}` reported leaked ({})", signal.severity);
            match state.credential(&signal.tenant, cred_id) {
                Some(cred) => {
                    if cred.revoked_at.is_none() {
                        push(CommandKind::RevokeCredentials, &cred.agent_id, &cred.workload_id, cred.task_id.clone(), vec![cred_id.to_owned()], reason.clone());
                    }
                    let follow = if severe { CommandKind::Quarantine } else { CommandKind::StepUp };
                    push(follow, &cred.agent_id, &cred.workload_id, cred.task_id.clone(), Vec::new(), reason);
                }
                None if owns_unknown => {
                    let agent_id = signal.agent_id.as_deref().unwrap_or_default();
                    let workload_id = signal.workload_id.as_deref().unwrap_or_default();
                    push(CommandKind::RevokeCredentials, agent_id, workload_id, None, vec![cred_id.to_owned()], reason);
                }
                None => {}
            }
        }
        SignalKind::WorkloadCompromised => {
            for agent in &agents {
                let ids = state.live_credentials(&agent.tenant, &agent.agent_id, None, now);
                let reason = format!("workload `{}` reported compromised ({})", agent.workload_id, signal.severity);
                push(CommandKind::Quarantine, &agent.agent_id, &agent.workload_id, None, ids, reason);
            }
        }
        SignalKind::AgentQuarantine | SignalKind::AgentRelease => {
            let (kind, verb) = match signal.kind {
                SignalKind::AgentQuarantine => (CommandKind::Quarantine, "quarantine"),
                _ => (CommandKind::Release, "release"),
            };
            let agent_id = signal.agent_id.as_deref().unwrap_or_default();
            match agents.first() {
                Some(agent) => {
                    let ids = if kind == CommandKind::Quarantine {
                        state.live_credentials(&agent.tenant, &agent.agent_id, None, now)
                    } else {
                        Vec::new()
                    };
                    push(kind, agent_id, &agent.workload_id, None, ids, format!("{verb} requested by signal"));
                }
                None if owns_unknown => {
                    let workload = signal.workload_id.as_deref().unwrap_or_default();
                    push(kind, agent_id, workload, None, Vec::new(), format!("{verb} requested by signal"));
                }
                None => {}
            }
        }
        SignalKind::ThreatIntel => {}
    }
    commands
}

/// Revocations for tasks that ran past their deadline, issued at the deadline.
pub fn overdue(task: &Overdue) -> Option<ControlCommand> {
    let t = &task.task;
    let deadline = t.deadline?;
    if task.live_credentials.is_empty() {
        return None;
    }
    Some(ControlCommand {
        command_id: stable_id("c", &[&t.tenant, &t.task_id, "deadline"]),
        issued_at: deadline.to_rfc3339(),
        command: CommandKind::RevokeCredentials,
        tenant: t.tenant.clone(),
        agent_id: t.agent_id.clone(),
        workload_id: task.workload_id.clone(),
        task_id: Some(t.task_id.clone()),
        credential_ids: task.live_credentials.clone(),
        reason: format!("task `{}` ran past its max_duration_s", t.task_id),
        decision_id: stable_id("d", &[&t.tenant, &t.task_id, "deadline"]),
        expires_at: None,
    })
}
