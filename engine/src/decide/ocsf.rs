//! OCSF Detection Finding (class 2004) for every non-allow decision.

use serde_json::{json, Value};

use crate::event::{ActivityEvent, DataClass, Severity, Timestamp};
use crate::rules::RuleMeta;
use crate::verdict::{ControlCommand, Decision, Verdict};

/// The OCSF schema version the alerts follow.
pub const OCSF_VERSION: &str = "1.3.0";

/// What every Vigil finding is: an OCSF Detection Finding (class 2004),
/// created. `fields` holds the rest.
fn detection_finding(mut fields: Value) -> Value {
    let class = [
        ("activity_id", json!(1)),
        ("activity_name", json!("Create")),
        ("category_uid", json!(2)),
        ("category_name", json!("Findings")),
        ("class_uid", json!(2004)),
        ("class_name", json!("Detection Finding")),
        ("type_uid", json!(200401)),
        ("type_name", json!("Detection Finding: Create")),
    ];
    for (key, value) in class {
        fields[key] = value;
    }
    fields
}

/// The agent as a finding's actor, with its task as the session. OCSF has
/// no null values: without a task there is no session.
fn agent_actor(agent_id: &str, task_id: Option<&str>) -> Value {
    let mut actor = json!({"user": {"uid": agent_id, "name": agent_id, "type_id": 99, "type": "AI Agent"}});
    if let Some(task) = task_id {
        actor["session"] = json!({"uid": task});
    }
    actor
}

fn severity_id(severity: Severity) -> (u8, &'static str) {
    match severity {
        Severity::Low => (2, "Low"),
        Severity::Medium => (3, "Medium"),
        Severity::High => (4, "High"),
        Severity::Critical => (5, "Critical"),
    }
}

/// OCSF `disposition_id`: Allowed, Challenge, Blocked, Access Revoked.
pub fn disposition(verdict: Verdict) -> (u8, &'static str) {
    match verdict {
        Verdict::Allow => (1, "Allowed"),
        Verdict::StepUp => (23, "Challenge"),
        Verdict::Deny => (2, "Blocked"),
        Verdict::Revoke => (24, "Access Revoked"),
    }
}

/// OCSF `data_classification`: personal and financial data are categories,
/// the rest are confidentiality levels (Vigil's `internal` has no OCSF
/// level of its own, so it is "Other" with its name).
fn data_classification(class: DataClass) -> Value {
    match class {
        DataClass::Pii => json!({"category_id": 1, "category": "Personal"}),
        DataClass::Financial => json!({"category_id": 3, "category": "Financial"}),
        DataClass::Public => json!({"confidentiality_id": 1, "confidentiality": "Not Confidential"}),
        DataClass::Confidential => json!({"confidentiality_id": 2, "confidentiality": "Confidential"}),
        DataClass::Secret => json!({"confidentiality_id": 3, "confidentiality": "Secret"}),
        DataClass::Restricted => json!({"confidentiality_id": 6, "confidentiality": "Restricted"}),
        DataClass::Internal => json!({"confidentiality_id": 99, "confidentiality": "internal"}),
    }
}

/// The alert for `decision`, or `None` for an allow. `meta` looks up a rule's
/// header by id; built-in reasons have none.
pub fn finding<'a>(decision: &Decision, event: &ActivityEvent, meta: impl Fn(&str) -> Option<&'a RuleMeta>) -> Option<Value> {
    if decision.decision == Verdict::Allow {
        return None;
    }
    // The analytic is the reason that weighed most: a built-in obligation, else the top-scoring rule.
    let top = decision
        .reasons
        .iter()
        .filter(|r| r.rule != "builtin.task_ended" && r.rule != "builtin.approval_unmatched")
        .max_by_key(|r| (r.rule.starts_with("builtin."), r.score))?;
    let top_meta = meta(&top.rule);
    let severity = decision
        .reasons
        .iter()
        .filter_map(|r| meta(&r.rule).map(|m| m.severity))
        .max()
        .unwrap_or(match decision.decision {
            Verdict::Revoke => Severity::Critical,
            Verdict::Deny => Severity::High,
            _ => Severity::Medium,
        });
    let (severity_id, severity_name) = severity_id(severity);
    let (disposition_id, disposition_name) = disposition(decision.decision);
    let (action_id, action) = if decision.decision == Verdict::StepUp { (1, "Allowed") } else { (2, "Denied") };
    let time = Timestamp::parse_rfc3339(&decision.time).unwrap_or_default().millis();
    let title = top_meta.map_or_else(|| top.rule.clone(), |m| m.title.clone());
    let mut references: Vec<&str> = top_meta.map(|m| m.references.iter().map(String::as_str).collect()).unwrap_or_default();
    references.sort_unstable();
    let rules: Vec<Value> = decision
        .reasons
        .iter()
        .map(|r| json!({"uid": r.rule, "name": meta(&r.rule).map_or(r.rule.as_str(), |m| m.title.as_str()), "score": r.score}))
        .collect();
    let mut resources = Vec::new();
    if let Some(target) = &event.target {
        let mut resource = json!({"name": target, "type": "target"});
        if let Some(class) = event.data_class {
            resource["data_classification"] = data_classification(class);
        }
        resources.push(resource);
    }
    // OCSF has no null values: absent tool or task means absent attributes.
    let mut actor = agent_actor(&decision.agent_id, decision.task_id.as_deref());
    if let Some(tool) = &event.tool {
        actor["app_name"] = json!(tool);
    }
    Some(detection_finding(json!({
        "time": time,
        "severity_id": severity_id,
        "severity": severity_name,
        "status_id": 1,
        "status": "New",
        "message": format!("{}: {}", decision.decision, top.message),
        "disposition_id": disposition_id,
        "disposition": disposition_name,
        "action_id": action_id,
        "action": action,
        "risk_score": decision.score,
        "metadata": {
            "version": OCSF_VERSION,
            // `action_id`/`disposition_id` come from the Security Control profile, `actor` from Host.
            "profiles": ["host", "security_control"],
            "uid": decision.decision_id,
            "product": {"name": "Vigil", "vendor_name": "Vigil", "version": env!("CARGO_PKG_VERSION")},
            "tenant_uid": decision.tenant,
        },
        "finding_info": {
            "uid": decision.decision_id,
            "title": title,
            "desc": top.message,
            "analytic": {"uid": top.rule, "name": title, "type_id": 1, "type": "Rule"},
            "types": references,
            "related_events_count": 1,
        },
        "actor": actor,
        "is_alert": true,
        "resources": resources,
        "unmapped": {
            "event_id": decision.event_id,
            "workload_id": decision.workload_id,
            "identity_method": event.identity.method.as_str(),
            "identity_verified": event.identity.verified,
            "kind": event.kind.as_str(),
            "operation": event.operation,
            "ruleset": decision.ruleset,
            "decision": decision.decision.as_str(),
            "rules": rules,
        },
    })))
}

/// The finding for a revocation no subscriber acknowledged in time: the
/// SOC learns that an order to cut an agent off may not have been carried
/// out. `attempt` counts the sends so far; `time` is when it was noticed.
pub fn unacknowledged(command: &ControlCommand, attempt: u32, final_attempt: bool, time: i64) -> Value {
    let uid = format!("{}-unacknowledged-{attempt}", command.command_id);
    let message = if final_attempt {
        format!("{} `{}` still unacknowledged after {attempt} sends; giving up", command.command.as_str(), command.command_id)
    } else {
        format!("{} `{}` unacknowledged; sent again", command.command.as_str(), command.command_id)
    };
    let actor = agent_actor(&command.agent_id, command.task_id.as_deref());
    detection_finding(json!({
        "time": time,
        "severity_id": 5,
        "severity": "Critical",
        "status_id": 1,
        "status": "New",
        "message": message,
        "metadata": {
            "version": OCSF_VERSION,
            "profiles": ["host"],
            "uid": uid,
            "product": {"name": "Vigil", "vendor_name": "Vigil", "version": env!("CARGO_PKG_VERSION")},
            "tenant_uid": command.tenant,
        },
        "finding_info": {
            "uid": uid,
            "title": "Revocation not acknowledged",
            "desc": message,
            "analytic": {"uid": "builtin.unacknowledged_revocation", "name": "Revocation not acknowledged", "type_id": 1, "type": "Rule"},
            "related_events_count": 1,
        },
        "actor": actor,
        "is_alert": true,
        "unmapped": {
            "command_id": command.command_id,
            "decision_id": command.decision_id,
            "workload_id": command.workload_id,
            "credential_ids": command.credential_ids,
            "attempt": attempt,
        },
    }))
}
