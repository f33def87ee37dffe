//! What the engine says: decisions, control commands and their reasons (SPEC §5).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The ordered outcomes: `allow` < `step_up` < `deny` < `revoke`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Allow,
    StepUp,
    Deny,
    Revoke,
}

impl Verdict {
    pub const ALL: [Verdict; 4] = [Verdict::Allow, Verdict::StepUp, Verdict::Deny, Verdict::Revoke];

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::StepUp => "step_up",
            Verdict::Deny => "deny",
            Verdict::Revoke => "revoke",
        }
    }

    pub fn parse(text: &str) -> Option<Verdict> {
        Verdict::ALL.into_iter().find(|v| v.as_str() == text)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Enforce,
    Shadow,
}

/// Why a decision is what it is: one rule's finding, or a built-in obligation
/// (rule ids starting with `builtin.`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reason {
    pub rule: String,
    pub score: u32,
    pub message: String,
    /// The state values the rule read, by the name it read them under.
    pub evidence: BTreeMap<String, serde_json::Value>,
}

/// A rule that failed to give an answer (error, or out of operations).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleFault {
    pub rule: String,
    pub error: String,
}

/// One decision per activity event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub decision_id: String,
    pub event_id: String,
    pub time: String,
    pub tenant: String,
    pub agent_id: String,
    pub workload_id: String,
    pub task_id: Option<String>,
    pub decision: Verdict,
    pub score: u32,
    pub reasons: Vec<Reason>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<RuleFault>,
    pub ruleset: String,
    pub mode: Mode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandKind {
    RevokeCredentials,
    RevokeAgent,
    StepUp,
    Quarantine,
    Release,
}

impl CommandKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CommandKind::RevokeCredentials => "revoke_credentials",
            CommandKind::RevokeAgent => "revoke_agent",
            CommandKind::StepUp => "step_up",
            CommandKind::Quarantine => "quarantine",
            CommandKind::Release => "release",
        }
    }
}

/// An order for credential brokers and tool proxies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlCommand {
    pub command_id: String,
    pub issued_at: String,
    pub command: CommandKind,
    pub tenant: String,
    pub agent_id: String,
    pub workload_id: String,
    pub task_id: Option<String>,
    pub credential_ids: Vec<String>,
    pub reason: String,
    /// The decision or signal that caused it.
    pub decision_id: String,
    pub expires_at: Option<String>,
}

/// A deterministic id: a prefix and 128 bits of a stable hash of `parts`.
pub fn stable_id(prefix: &str, parts: &[&str]) -> String {
    let digest = crate::digest::xxh3_128_terminated(parts, 0xff);
    let mut hex = [0u8; 32];
    hex::encode_to_slice(digest.to_be_bytes(), &mut hex).unwrap_or_default();
    let mut id = String::with_capacity(prefix.len() + 33);
    id.push_str(prefix);
    id.push('-');
    id.push_str(std::str::from_utf8(&hex).unwrap_or_default());
    id
}

#[cfg(test)]
mod tests {
    /// Ids are compared across versions (replay against recorded
    /// decisions), so their spelling is pinned to the streaming hash.
    #[test]
    fn stable_ids_are_the_streaming_digest_in_hex() {
        for parts in [&["acme", "agent-1", "e-1"][..], &[], &[""], &["x"; 40]] {
            let mut hasher = xxhash_rust::xxh3::Xxh3::new();
            for part in parts {
                hasher.update(part.as_bytes());
                hasher.update(&[0xff]);
            }
            assert_eq!(super::stable_id("d", parts), format!("d-{:032x}", hasher.digest128()));
        }
        assert_eq!(super::stable_id("c", &["acme", "t"]).len(), 34);
    }
}
