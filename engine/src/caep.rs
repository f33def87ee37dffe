//! Control commands as OpenID Shared Signals Security Event Tokens (RFC 8417,
//! CAEP 1.0), for subscribers that already speak CAEP rather than the native
//! command JSON. The mapping and its reasons are in `schemas/caep.md`.
//!
//! The token is built from the command alone, never from the clock: `iat` and
//! `event_timestamp` are the command's `issued_at`, so a replay gives the
//! same bytes.

use serde_json::{json, Map, Value};

use crate::event::Timestamp;
use crate::sign::KeyRing;
use crate::verdict::{CommandKind, ControlCommand};

pub const SESSION_REVOKED: &str = "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
pub const CREDENTIAL_CHANGE: &str = "https://schemas.openid.net/secevent/caep/event-type/credential-change";
pub const ASSURANCE_LEVEL_CHANGE: &str = "https://schemas.openid.net/secevent/caep/event-type/assurance-level-change";
/// RISC, the other Shared Signals profile: the counterpart of a quarantine.
pub const ACCOUNT_ENABLED: &str = "https://schemas.openid.net/secevent/risc/event-type/account-enabled";

/// `credential_type` of the just-in-time credentials a broker issues for a
/// task. None of CAEP's listed types (password, x509, fido2, …) describes a
/// scoped broker token, and CAEP allows a value agreed between transmitter
/// and receiver, so this one is named for what it is.
pub const CREDENTIAL_TYPE: &str = "jit-credential";

/// The custom assurance `namespace` of a step-up (CAEP §3.4 allows an alias
/// agreed between transmitter and receiver): the agent goes from acting on
/// its own to needing a human approval for the decision named in `txn`.
pub const ASSURANCE_NAMESPACE: &str = "vigil-agent-approval";
pub const LEVEL_AUTONOMOUS: &str = "autonomous";
pub const LEVEL_HUMAN_APPROVAL: &str = "human-approval";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaepError {
    #[error("command `{command_id}` has `issued_at` `{issued_at}`, not an RFC 3339 time")]
    Time { command_id: String, issued_at: String },
}

/// The SET claims for `command`, addressed from `issuer` to `audience`.
///
/// One event per token (the Shared Signals Framework asks for exactly one),
/// and one token per command, so `jti` is the `command_id` that native
/// subscribers already deduplicate and acknowledge by.
pub fn to_set(command: &ControlCommand, issuer: &str, audience: &str) -> Result<Value, CaepError> {
    let time = Timestamp::parse_rfc3339(&command.issued_at).ok_or_else(|| CaepError::Time {
        command_id: command.command_id.clone(),
        issued_at: command.issued_at.clone(),
    })?;
    let seconds = time.millis().div_euclid(1000);
    let mut event = Map::new();
    event.insert("event_timestamp".into(), json!(seconds));
    event.insert("initiating_entity".into(), json!("policy"));
    event.insert("reason_admin".into(), json!({"en": command.reason}));
    let event_type = match command.command {
        CommandKind::RevokeAgent | CommandKind::Quarantine => SESSION_REVOKED,
        CommandKind::RevokeCredentials => {
            event.insert("credential_type".into(), json!(CREDENTIAL_TYPE));
            event.insert("change_type".into(), json!("revoke"));
            // CAEP has no member for a credential's id; without one a broker
            // could not tell which of the agent's credentials to revoke.
            event.insert("credential_ids".into(), json!(command.credential_ids));
            CREDENTIAL_CHANGE
        }
        CommandKind::StepUp => {
            event.insert("namespace".into(), json!(ASSURANCE_NAMESPACE));
            event.insert("current_level".into(), json!(LEVEL_HUMAN_APPROVAL));
            event.insert("previous_level".into(), json!(LEVEL_AUTONOMOUS));
            event.insert("change_direction".into(), json!("increase"));
            ASSURANCE_LEVEL_CHANGE
        }
        CommandKind::Release => ACCOUNT_ENABLED,
    };
    let mut vigil = json!({"command": command.command.as_str(), "tenant": command.tenant, "agent_id": command.agent_id});
    if let Some(expires_at) = &command.expires_at {
        vigil["expires_at"] = json!(expires_at);
    }
    Ok(json!({
        "iss": issuer,
        "aud": audience,
        "jti": command.command_id,
        "iat": seconds,
        "txn": command.decision_id,
        "sub_id": subject(command),
        "events": {event_type: event},
        "vigil": vigil,
    }))
}

/// The workload's SPIFFE ID as a `uri` subject (RFC 9493); with a task, a
/// complex subject that adds the task as the session and the tenant, so a
/// receiver can end that task alone rather than everything the workload does.
fn subject(command: &ControlCommand) -> Value {
    let workload = json!({"format": "uri", "uri": command.workload_id});
    match &command.task_id {
        Some(task) => json!({
            "format": "complex",
            "user": workload,
            "session": {"format": "opaque", "id": task},
            "tenant": {"format": "opaque", "id": command.tenant},
        }),
        None => workload,
    }
}

/// `command` as a signed SET (compact JWS, `typ: secevent+jwt`).
pub fn sign(keys: &KeyRing, command: &ControlCommand, issuer: &str, audience: &str) -> Result<String, CaepError> {
    to_set(command, issuer, audience).map(|claims| keys.sign_set(&claims))
}
