//! OCSF Detection Finding (class 2004) for every non-allow decision.
//!
//! A finding is a typed value that borrows from the decision it explains,
//! so building one allocates little. Every object's fields are declared in
//! sorted order: the JSON text is the same as a sorted map's, which is what
//! the alerts have always looked like.

use std::borrow::Cow;

use serde::Serialize;

use crate::event::{ActivityEvent, DataClass, Severity, Timestamp};
use crate::rules::RuleMeta;
use crate::verdict::{ControlCommand, Decision, Verdict};

/// The OCSF schema version the alerts follow.
pub const OCSF_VERSION: &str = "1.3.0";

/// One OCSF Detection Finding, created.
#[derive(Debug, Serialize)]
pub struct Finding<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    action: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    action_id: Option<u8>,
    activity_id: u8,
    activity_name: &'static str,
    actor: Actor<'a>,
    category_name: &'static str,
    category_uid: u8,
    class_name: &'static str,
    class_uid: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    disposition: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disposition_id: Option<u8>,
    finding_info: FindingInfo<'a>,
    is_alert: bool,
    message: Cow<'a, str>,
    metadata: Metadata<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resources: Option<Vec<Resource<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    risk_score: Option<u32>,
    severity: &'static str,
    severity_id: u8,
    status: &'static str,
    status_id: u8,
    time: i64,
    type_name: &'static str,
    type_uid: u32,
    unmapped: Unmapped<'a>,
}

/// The agent as a finding's actor, with its task as the session. OCSF has
/// no null values: without a tool or a task those attributes are absent.
#[derive(Debug, Serialize)]
struct Actor<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    app_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session: Option<Uid<'a>>,
    user: User<'a>,
}

#[derive(Debug, Serialize)]
struct Uid<'a> {
    uid: &'a str,
}

#[derive(Debug, Serialize)]
struct User<'a> {
    name: &'a str,
    r#type: &'static str,
    type_id: u8,
    uid: &'a str,
}

#[derive(Debug, Serialize)]
struct FindingInfo<'a> {
    analytic: Analytic<'a>,
    desc: Cow<'a, str>,
    related_events_count: u32,
    title: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    types: Option<Vec<&'a str>>,
    uid: Cow<'a, str>,
}

#[derive(Debug, Serialize)]
struct Analytic<'a> {
    name: &'a str,
    r#type: &'static str,
    type_id: u8,
    uid: &'a str,
}

#[derive(Debug, Serialize)]
struct Metadata<'a> {
    product: Product,
    profiles: &'static [&'static str],
    tenant_uid: &'a str,
    uid: Cow<'a, str>,
    version: &'static str,
}

#[derive(Debug, Serialize)]
struct Product {
    name: &'static str,
    vendor_name: &'static str,
    version: &'static str,
}

const PRODUCT: Product = Product { name: "Vigil", vendor_name: "Vigil", version: env!("CARGO_PKG_VERSION") };

#[derive(Debug, Serialize)]
struct Resource<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    data_classification: Option<Classification>,
    name: &'a str,
    r#type: &'static str,
}

/// OCSF `data_classification`: personal and financial data are categories,
/// the rest are confidentiality levels (Vigil's `internal` has no OCSF
/// level of its own, so it is "Other" with its name).
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Classification {
    Category { category: &'static str, category_id: u8 },
    Confidentiality { confidentiality: &'static str, confidentiality_id: u8 },
}

fn data_classification(class: DataClass) -> Classification {
    let category = |category_id, category| Classification::Category { category, category_id };
    let level = |confidentiality_id, confidentiality| Classification::Confidentiality { confidentiality, confidentiality_id };
    match class {
        DataClass::Pii => category(1, "Personal"),
        DataClass::Financial => category(3, "Financial"),
        DataClass::Public => level(1, "Not Confidential"),
        DataClass::Confidential => level(2, "Confidential"),
        DataClass::Secret => level(3, "Secret"),
        DataClass::Restricted => level(6, "Restricted"),
        DataClass::Internal => level(99, "internal"),
    }
}

/// What Vigil adds beyond OCSF's attributes.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Unmapped<'a> {
    Decision {
        decision: &'static str,
        event_id: &'a str,
        identity_method: &'static str,
        identity_verified: bool,
        kind: &'static str,
        operation: Option<&'a str>,
        rules: Vec<RuleRef<'a>>,
        ruleset: &'a str,
        workload_id: &'a str,
    },
    Unacknowledged {
        attempt: u32,
        command_id: &'a str,
        credential_ids: &'a [String],
        decision_id: &'a str,
        workload_id: &'a str,
    },
}

#[derive(Debug, Serialize)]
struct RuleRef<'a> {
    name: &'a str,
    score: u32,
    uid: &'a str,
}

impl<'a> Finding<'a> {
    /// A finding with the attributes every Vigil finding shares; the
    /// Security Control attributes are set by the caller when they apply.
    fn new(actor: Actor<'a>, finding_info: FindingInfo<'a>, metadata: Metadata<'a>, unmapped: Unmapped<'a>) -> Self {
        Finding {
            action: None,
            action_id: None,
            activity_id: 1,
            activity_name: "Create",
            actor,
            category_name: "Findings",
            category_uid: 2,
            class_name: "Detection Finding",
            class_uid: 2004,
            disposition: None,
            disposition_id: None,
            message: finding_info.desc.clone(),
            finding_info,
            is_alert: true,
            metadata,
            resources: None,
            risk_score: None,
            severity: "Critical",
            severity_id: 5,
            status: "New",
            status_id: 1,
            time: 0,
            type_name: "Detection Finding: Create",
            type_uid: 200401,
            unmapped,
        }
    }

    /// The finding as a JSON value, for validation and inspection.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

fn agent_actor<'a>(agent_id: &'a str, task_id: Option<&'a str>, tool: Option<&'a str>) -> Actor<'a> {
    Actor {
        app_name: tool,
        session: task_id.map(|uid| Uid { uid }),
        user: User { name: agent_id, r#type: "AI Agent", type_id: 99, uid: agent_id },
    }
}

fn analytic<'a>(uid: &'a str, name: &'a str) -> Analytic<'a> {
    Analytic { name, r#type: "Rule", type_id: 1, uid }
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

/// The alert for `decision`, or `None` for an allow. `meta` looks up a rule's
/// header by id; built-in reasons have none.
pub fn finding<'a>(
    decision: &'a Decision,
    event: &'a ActivityEvent,
    meta: impl Fn(&str) -> Option<&'a RuleMeta>,
) -> Option<Finding<'a>> {
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
    let title = top_meta.map_or(top.rule.as_str(), |m| m.title.as_str());
    let mut references: Vec<&str> = top_meta.map(|m| m.references.iter().map(String::as_str).collect()).unwrap_or_default();
    references.sort_unstable();
    let rules = decision
        .reasons
        .iter()
        .map(|r| RuleRef { name: meta(&r.rule).map_or(r.rule.as_str(), |m| m.title.as_str()), score: r.score, uid: &r.rule })
        .collect();
    let resources = event
        .target
        .as_deref()
        .map(|name| Resource { data_classification: event.data_class.map(data_classification), name, r#type: "target" })
        .into_iter()
        .collect();
    let info = FindingInfo {
        analytic: analytic(&top.rule, title),
        desc: Cow::Borrowed(&top.message),
        related_events_count: 1,
        title,
        types: Some(references),
        uid: Cow::Borrowed(&decision.decision_id),
    };
    let metadata = Metadata {
        product: PRODUCT,
        // `action_id`/`disposition_id` come from the Security Control profile, `actor` from Host.
        profiles: &["host", "security_control"],
        tenant_uid: &decision.tenant,
        uid: Cow::Borrowed(&decision.decision_id),
        version: OCSF_VERSION,
    };
    let unmapped = Unmapped::Decision {
        decision: decision.decision.as_str(),
        event_id: &decision.event_id,
        identity_method: event.identity.method.as_str(),
        identity_verified: event.identity.verified,
        kind: event.kind.as_str(),
        operation: event.operation.as_deref(),
        rules,
        ruleset: &decision.ruleset,
        workload_id: &decision.workload_id,
    };
    let actor = agent_actor(&decision.agent_id, decision.task_id.as_deref(), event.tool.as_deref());
    let mut finding = Finding::new(actor, info, metadata, unmapped);
    let (severity_id, severity) = severity_id(severity);
    let (disposition_id, disposition) = disposition(decision.decision);
    let (action_id, action) = if decision.decision == Verdict::StepUp { (1, "Allowed") } else { (2, "Denied") };
    finding.action = Some(action);
    finding.action_id = Some(action_id);
    finding.disposition = Some(disposition);
    finding.disposition_id = Some(disposition_id);
    finding.message = Cow::Owned(format!("{}: {}", decision.decision, top.message));
    finding.resources = Some(resources);
    finding.risk_score = Some(decision.score);
    finding.severity = severity;
    finding.severity_id = severity_id;
    finding.time = Timestamp::parse_rfc3339(&decision.time).unwrap_or_default().millis();
    Some(finding)
}

/// The finding for a revocation no subscriber acknowledged in time: the
/// SOC learns that an order to cut an agent off may not have been carried
/// out. `attempt` counts the sends so far; `time` is when it was noticed.
pub fn unacknowledged(command: &ControlCommand, attempt: u32, final_attempt: bool, time: i64) -> Finding<'_> {
    let uid = format!("{}-unacknowledged-{attempt}", command.command_id);
    let message = if final_attempt {
        format!("{} `{}` still unacknowledged after {attempt} sends; giving up", command.command.as_str(), command.command_id)
    } else {
        format!("{} `{}` unacknowledged; sent again", command.command.as_str(), command.command_id)
    };
    const TITLE: &str = "Revocation not acknowledged";
    let info = FindingInfo {
        analytic: analytic("builtin.unacknowledged_revocation", TITLE),
        desc: Cow::Owned(message),
        related_events_count: 1,
        title: TITLE,
        types: None,
        uid: Cow::Owned(uid.clone()),
    };
    let metadata = Metadata { product: PRODUCT, profiles: &["host"], tenant_uid: &command.tenant, uid: Cow::Owned(uid), version: OCSF_VERSION };
    let unmapped = Unmapped::Unacknowledged {
        attempt,
        command_id: &command.command_id,
        credential_ids: &command.credential_ids,
        decision_id: &command.decision_id,
        workload_id: &command.workload_id,
    };
    let actor = agent_actor(&command.agent_id, command.task_id.as_deref(), None);
    let mut finding = Finding::new(actor, info, metadata, unmapped);
    finding.time = time;
    finding
}
