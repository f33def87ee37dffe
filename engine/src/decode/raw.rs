//! The wire shape of a record, before validation. JSON and Avro both
//! deserialize into [`RawRecord`]; [`RawRecord::validate`] is the one place
//! that decides what a valid event or signal is.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;

use super::{spiffe, DecodeError};
use crate::event::{
    ActivityEvent, Approval, CredentialRef, DataClass, EventKind, Identity, IdentityMethod, Input, Severity, Signal,
    SignalKind, TaskScope, Timestamp,
};

/// Every field an activity event or a signal may carry, all optional.
///
/// The fields that are only parsed, never kept (the time, the names of enum
/// values), are `Cow`s: the JSON reader in `fast` borrows them from
/// the record's text, so reading them allocates nothing. serde gives them
/// owned, as it gives every other field.
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct RawRecord<'a> {
    pub event_id: Option<String>,
    pub signal_id: Option<String>,
    pub time: Option<Cow<'a, str>>,
    pub tenant: Option<String>,
    pub agent_id: Option<String>,
    pub workload_id: Option<String>,
    pub identity: Option<RawIdentity<'a>>,
    pub task_id: Option<String>,
    pub kind: Option<Cow<'a, str>>,
    pub tool: Option<String>,
    pub target: Option<String>,
    pub operation: Option<String>,
    pub data_class: Option<Cow<'a, str>>,
    pub bytes: Option<i64>,
    pub parent_event_id: Option<String>,
    pub trust_boundary: Option<String>,
    pub scope: Option<RawScope>,
    pub credential: Option<RawCredential>,
    pub approval: Option<RawApproval>,
    pub attributes: Option<BTreeMap<String, String>>,
    pub severity: Option<Cow<'a, str>>,
    pub credential_id: Option<String>,
}

#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct RawIdentity<'a> {
    pub method: Option<Cow<'a, str>>,
    pub verified: Option<bool>,
}

#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct RawScope {
    pub tools: Option<Vec<String>>,
    pub targets: Option<Vec<String>>,
    pub data_classes: Option<Vec<String>>,
    pub max_duration_s: Option<i64>,
    pub egress_budget_bytes: Option<i64>,
}

#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct RawCredential {
    pub id: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub ttl_s: Option<i64>,
}

#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct RawApproval {
    pub decision_id: Option<String>,
    pub granted: Option<bool>,
    pub approver: Option<String>,
}

fn required<S: AsRef<str>>(value: Option<S>, field: &'static str) -> Result<S, DecodeError> {
    match value {
        Some(v) if !v.as_ref().is_empty() => Ok(v),
        Some(_) => Err(DecodeError::invalid(field, "must not be empty")),
        None => Err(DecodeError::Missing(field)),
    }
}

fn time(value: Option<Cow<str>>) -> Result<Timestamp, DecodeError> {
    let text = required(value, "time")?;
    Timestamp::parse_rfc3339(&text)
        .ok_or_else(|| DecodeError::invalid("time", format!("`{text}` is not an RFC 3339 timestamp")))
}

fn non_negative(value: Option<i64>, field: &'static str) -> Result<Option<u64>, DecodeError> {
    match value {
        Some(v) if v < 0 => Err(DecodeError::invalid(field, format!("must be ≥ 0, got {v}"))),
        Some(v) => Ok(Some(v as u64)),
        None => Ok(None),
    }
}

fn one_of<T>(value: &str, field: &'static str, parse: fn(&str) -> Option<T>, expected: fn() -> String) -> Result<T, DecodeError> {
    parse(value).ok_or_else(|| DecodeError::invalid(field, format!("`{value}` is not one of {}", expected())))
}

fn workload(value: Option<String>) -> Result<String, DecodeError> {
    let id = required(value, "workload_id")?;
    spiffe::validate(&id).map_err(|reason| DecodeError::invalid("workload_id", reason))?;
    Ok(id)
}

impl RawRecord<'_> {
    /// A record with `signal_id` is a signal; anything else is an activity event.
    pub fn validate(self) -> Result<Input, DecodeError> {
        if self.signal_id.is_some() {
            self.into_signal().map(|s| Input::Signal(Box::new(s)))
        } else {
            self.into_event().map(|e| Input::Activity(Box::new(e)))
        }
    }

    fn into_event(self) -> Result<ActivityEvent, DecodeError> {
        let event_id = required(self.event_id, "event_id")?;
        let time = time(self.time)?;
        let agent_id = required(self.agent_id, "agent_id")?;
        let workload_id = workload(self.workload_id)?;
        let kind_text = required(self.kind, "kind")?;
        let kind = one_of(&kind_text, "kind", EventKind::parse, EventKind::expected)?;
        let identity = match self.identity {
            None => Identity::UNVERIFIED,
            Some(raw) => Identity {
                method: match raw.method {
                    Some(m) => one_of(&m, "identity.method", IdentityMethod::parse, IdentityMethod::expected)?,
                    None => IdentityMethod::None,
                },
                verified: raw.verified.unwrap_or(false),
            },
        };
        let data_class = match self.data_class {
            Some(c) => Some(one_of(&c, "data_class", DataClass::parse, DataClass::expected)?),
            None => None,
        };
        let bytes = non_negative(self.bytes, "bytes")?.unwrap_or(0);
        let scope = self.scope.map(RawScope::validate).transpose()?;
        if kind == EventKind::TaskStarted && self.task_id.is_none() {
            return Err(DecodeError::Missing("task_id"));
        }
        let credential = match self.credential {
            Some(raw) => Some(CredentialRef {
                id: required(raw.id, "credential.id")?,
                scopes: raw.scopes.unwrap_or_default(),
                ttl_s: non_negative(raw.ttl_s, "credential.ttl_s")?,
            }),
            None => None,
        };
        if kind == EventKind::CredentialIssued && credential.is_none() {
            return Err(DecodeError::Missing("credential"));
        }
        let approval = match self.approval {
            Some(raw) => Some(Approval {
                decision_id: required(raw.decision_id, "approval.decision_id")?,
                granted: raw.granted.ok_or(DecodeError::Missing("approval.granted"))?,
                approver: raw.approver.unwrap_or_default(),
            }),
            None if kind == EventKind::Approval => return Err(DecodeError::Missing("approval")),
            None => None,
        };
        Ok(ActivityEvent {
            event_id,
            time,
            tenant: self.tenant.unwrap_or_else(|| "default".to_owned()),
            agent_id,
            workload_id,
            identity,
            task_id: self.task_id,
            kind,
            tool: self.tool,
            target: self.target,
            operation: self.operation,
            data_class,
            bytes,
            parent_event_id: self.parent_event_id,
            trust_boundary: self.trust_boundary,
            scope,
            credential,
            approval,
            attributes: self.attributes.unwrap_or_default(),
        })
    }

    fn into_signal(self) -> Result<Signal, DecodeError> {
        let signal_id = required(self.signal_id, "signal_id")?;
        let time = time(self.time)?;
        let kind_text = required(self.kind, "kind")?;
        let kind = one_of(&kind_text, "kind", SignalKind::parse, SignalKind::expected)?;
        let severity = match self.severity {
            Some(s) => one_of(&s, "severity", Severity::parse, Severity::expected)?,
            None => Severity::Medium,
        };
        let workload_id = match self.workload_id {
            Some(id) => Some(workload(Some(id))?),
            None => None,
        };
        let signal = Signal {
            signal_id,
            time,
            tenant: self.tenant.unwrap_or_else(|| "default".to_owned()),
            kind,
            severity,
            credential_id: self.credential_id,
            agent_id: self.agent_id,
            workload_id,
            target: self.target,
        };
        let names_subject = match kind {
            SignalKind::CredentialLeaked => signal.credential_id.is_some(),
            SignalKind::ThreatIntel => signal.target.is_some() || signal.workload_id.is_some(),
            SignalKind::WorkloadCompromised => signal.workload_id.is_some() || signal.agent_id.is_some(),
            SignalKind::AgentQuarantine | SignalKind::AgentRelease => signal.agent_id.is_some(),
        };
        if !names_subject {
            return Err(DecodeError::invalid("kind", format!("a `{kind}` signal must name its subject")));
        }
        Ok(signal)
    }
}

impl RawScope {
    fn validate(self) -> Result<TaskScope, DecodeError> {
        let data_classes = self
            .data_classes
            .unwrap_or_default()
            .iter()
            .map(|c| one_of(c, "scope.data_classes", DataClass::parse, DataClass::expected))
            .collect::<Result<_, _>>()?;
        Ok(TaskScope {
            tools: self.tools.unwrap_or_default(),
            targets: self.targets.unwrap_or_default(),
            data_classes,
            max_duration_s: non_negative(self.max_duration_s, "scope.max_duration_s")?,
            egress_budget_bytes: non_negative(self.egress_budget_bytes, "scope.egress_budget_bytes")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::decode::{decode_json, DecodeError};
    use crate::event::{EventKind, Input};

    const GOOD: &str = r#"{"event_id":"e1","time":"2026-11-28T10:00:00Z","agent_id":"a1",
        "workload_id":"spiffe://acme.org/agent/a1","kind":"tool_call","tool":"sql.query","bytes":10}"#;

    fn err(text: &str) -> String {
        match decode_json(text.as_bytes()) {
            Err(e) => e.to_string(),
            Ok(input) => format!("unexpectedly valid: {input:?}"),
        }
    }

    #[test]
    fn decodes_an_event_with_defaults() {
        let Ok(Input::Activity(e)) = decode_json(GOOD.as_bytes()) else {
            unreachable!("GOOD is valid")
        };
        assert_eq!(e.kind, EventKind::ToolCall);
        assert_eq!(e.tenant, "default");
        assert!(!e.identity.verified);
        assert_eq!(e.bytes, 10);
    }

    #[test]
    fn names_the_broken_field() {
        assert_eq!(err(r#"{"time":"2026-11-28T10:00:00Z"}"#), "missing required field `event_id`");
        assert!(err(&GOOD.replace("tool_call", "teleport")).starts_with("invalid `kind`: `teleport` is not one of"));
        assert_eq!(err(&GOOD.replace("\"bytes\":10", "\"bytes\":-5")), "invalid `bytes`: must be ≥ 0, got -5");
        assert!(err(&GOOD.replace("spiffe://acme.org", "spiffe://ACME.org")).starts_with("invalid `workload_id`"));
        assert!(err(&GOOD.replace("2026-11-28T10:00:00Z", "noon")).contains("not an RFC 3339"));
        assert!(err("{not json").starts_with("malformed json"));
    }

    /// A record's own time is read whether or not it decodes, and only
    /// from a record that parses, with a time that reads as one.
    #[test]
    fn a_record_that_does_not_decode_still_tells_its_time() {
        use crate::decode::record_time;
        use crate::event::Timestamp;
        let time = Timestamp::parse_rfc3339("2026-11-28T10:00:00Z");
        assert!(time.is_some());
        let invalid = GOOD.replace("spiffe://acme.org", "spiffe://ACME.org");
        assert!(decode_json(invalid.as_bytes()).is_err());
        for text in [GOOD, &invalid, &GOOD.replace("\"bytes\":10", "\"bytes\":-5"), r#"{"time":"2026-11-28T10:00:00Z"}"#] {
            assert_eq!(record_time(text.as_bytes(), None), time, "{text}");
        }
        for text in ["{not json", r#"{"event_id":"e1"}"#, &GOOD.replace("2026-11-28T10:00:00Z", "noon"), ""] {
            assert_eq!(record_time(text.as_bytes(), None), None, "{text}");
        }
    }

    #[test]
    fn a_record_with_signal_id_is_a_signal() {
        let text = r#"{"signal_id":"s1","time":"2026-11-28T10:00:00Z","kind":"credential_leaked","severity":"high","credential_id":"c1"}"#;
        assert!(matches!(decode_json(text.as_bytes()), Ok(Input::Signal(_))));
        let nameless = r#"{"signal_id":"s1","time":"2026-11-28T10:00:00Z","kind":"credential_leaked"}"#;
        assert!(matches!(decode_json(nameless.as_bytes()), Err(DecodeError::Invalid { field: "kind", .. })));
    }
}
