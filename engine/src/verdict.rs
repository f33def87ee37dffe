//! What the engine says: decisions, control commands and their reasons (SPEC §5).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::json::Cursor;

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

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Shadow => "shadow",
        }
    }
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

impl Decision {
    /// Appends the decision's JSON to `out`: the bytes its `Serialize`
    /// gives through serde_json (the tests hold it to that), written
    /// directly. A decision is written for every event, and its strings
    /// (ids, names, a time) nearly never need an escape.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        use crate::json::{write_str, write_u32, write_value};
        let text = |out: &mut Vec<u8>, key: &[u8], value: &str| {
            out.extend_from_slice(key);
            write_str(out, value);
        };
        text(out, b"{\"decision_id\":", &self.decision_id);
        text(out, b",\"event_id\":", &self.event_id);
        text(out, b",\"time\":", &self.time);
        text(out, b",\"tenant\":", &self.tenant);
        text(out, b",\"agent_id\":", &self.agent_id);
        text(out, b",\"workload_id\":", &self.workload_id);
        match &self.task_id {
            Some(task) => text(out, b",\"task_id\":", task),
            None => out.extend_from_slice(b",\"task_id\":null"),
        }
        text(out, b",\"decision\":", self.decision.as_str());
        out.extend_from_slice(b",\"score\":");
        write_u32(out, self.score);
        out.extend_from_slice(b",\"reasons\":");
        write_value(out, &self.reasons);
        if !self.faults.is_empty() {
            out.extend_from_slice(b",\"faults\":");
            write_value(out, &self.faults);
        }
        text(out, b",\"ruleset\":", &self.ruleset);
        text(out, b",\"mode\":", self.mode.as_str());
        out.push(b'}');
    }
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

/// What a comparison reads of a decision's JSON: its verdict, its time, its
/// ruleset and the rules behind it, borrowed from the text. A replay reads
/// every recorded decision this way and builds a whole [`Decision`] only
/// for the few that differ.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DecisionBrief<'a> {
    #[serde(borrow)]
    pub time: Cow<'a, str>,
    pub decision: Verdict,
    #[serde(borrow)]
    pub ruleset: Cow<'a, str>,
    #[serde(borrow)]
    pub reasons: Vec<ReasonBrief<'a>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ReasonBrief<'a> {
    #[serde(borrow)]
    pub rule: Cow<'a, str>,
}

impl<'a> DecisionBrief<'a> {
    /// Reads the text the engine writes directly (its strings need no
    /// escapes, its evidence holds integers) and anything else with
    /// serde_json, which gives the error.
    pub fn read(json: &'a [u8]) -> Result<DecisionBrief<'a>, serde_json::Error> {
        match std::str::from_utf8(json).ok().and_then(DecisionBrief::read_plain) {
            Some(brief) => Ok(brief),
            None => serde_json::from_slice(json),
        }
    }

    fn read_plain(text: &'a str) -> Option<DecisionBrief<'a>> {
        let mut c = Cursor::new(text);
        let (mut time, mut decision, mut ruleset, mut reasons) = (None, None, None, None);
        c.object(|c, key| {
            match key {
                "time" => time = Some(c.str()?),
                "decision" => decision = Some(Verdict::parse(c.str()?)?),
                "ruleset" => ruleset = Some(c.str()?),
                "reasons" => {
                    let mut rules = Vec::new();
                    c.eat(b'[')?;
                    c.items(b']', |c| {
                        let mut rule = None;
                        c.object(|c, key| match key {
                            "rule" => c.str().map(|r| rule = Some(r)),
                            _ => c.skip(0),
                        })?;
                        rules.push(ReasonBrief { rule: Cow::Borrowed(rule?) });
                        Some(())
                    })?;
                    reasons = Some(rules);
                }
                _ => c.skip(0)?,
            }
            Some(())
        })?;
        c.end()?;
        Some(DecisionBrief {
            time: Cow::Borrowed(time?),
            decision: decision?,
            ruleset: Cow::Borrowed(ruleset?),
            reasons: reasons?,
        })
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
    use proptest::prelude::*;

    use super::*;

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![4 => "[a-z0-9:/._-]{0,40}", 1 => "(\\PC|[\"\\\\\u{0}-\u{1f}])*"]
    }

    fn evidence() -> impl Strategy<Value = serde_json::Value> {
        prop_oneof![
            any::<i64>().prop_map(serde_json::Value::from),
            any::<bool>().prop_map(serde_json::Value::from),
            text().prop_map(serde_json::Value::from),
        ]
    }

    fn reason() -> impl Strategy<Value = Reason> {
        (text(), any::<u32>(), text(), proptest::collection::btree_map(text(), evidence(), 0..3))
            .prop_map(|(rule, score, message, evidence)| Reason { rule, score, message, evidence })
    }

    fn decision() -> impl Strategy<Value = Decision> {
        let ids = (text(), text(), text(), text(), text(), text(), proptest::option::of(text()));
        let verdict = (proptest::sample::select(Verdict::ALL.to_vec()), any::<u32>());
        let faults = proptest::collection::vec((text(), text()).prop_map(|(rule, error)| RuleFault { rule, error }), 0..2);
        let rest = (proptest::collection::vec(reason(), 0..3), faults, text(), any::<bool>());
        (ids, verdict, rest).prop_map(
            |((decision_id, event_id, time, tenant, agent_id, workload_id, task_id), (decision, score), (reasons, faults, ruleset, shadow))| {
                Decision {
                    decision_id,
                    event_id,
                    time,
                    tenant,
                    agent_id,
                    workload_id,
                    task_id,
                    decision,
                    score,
                    reasons,
                    faults,
                    ruleset,
                    mode: if shadow { Mode::Shadow } else { Mode::Enforce },
                }
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// Subscribers see the same bytes whichever writer made them.
        #[test]
        fn a_decision_is_written_as_serde_writes_it(d in decision()) {
            let mut ours = Vec::new();
            d.write_json(&mut ours);
            let serde = serde_json::to_vec(&d).unwrap_or_default();
            prop_assert_eq!(String::from_utf8_lossy(&ours), String::from_utf8_lossy(&serde));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// The direct read accepts nothing serde_json reads otherwise: the
        /// decision's JSON, and it with any one byte changed to one that
        /// renames a key, ends a string, starts an escape or makes a float,
        /// or with such a byte after it.
        #[test]
        fn a_brief_reads_as_serde_reads_it(d in decision()) {
            let mut json = Vec::new();
            d.write_json(&mut json);
            let changed = (0..=json.len()).flat_map(|at| {
                b"x\"\\. ".iter().map(move |&byte| (at, byte))
            });
            for (at, byte) in std::iter::once((usize::MAX, 0)).chain(changed) {
                let mut text = json.clone();
                match text.get_mut(at) {
                    Some(b) => *b = byte,
                    None if at == json.len() => text.push(byte),
                    None => {}
                }
                let Ok(text) = std::str::from_utf8(&text) else { continue };
                if let Some(plain) = DecisionBrief::read_plain(text) {
                    prop_assert_eq!(Some(plain), serde_json::from_str::<DecisionBrief>(text).ok());
                }
            }
        }
    }

    #[test]
    fn a_decision_the_engine_writes_is_read_directly() {
        let mut evidence = BTreeMap::new();
        evidence.insert("calls".to_owned(), serde_json::Value::from(12));
        evidence.insert("tool".to_owned(), serde_json::Value::from("http.post"));
        let reason = |rule: &str| Reason { rule: rule.into(), score: 30, message: "m".into(), evidence: evidence.clone() };
        let d = Decision {
            decision_id: "d-1".into(),
            event_id: "e-1".into(),
            time: "2026-11-28T09:00:00.028Z".into(),
            tenant: "acme".into(),
            agent_id: "agent-1".into(),
            workload_id: "spiffe://acme.example/agents/agent-1".into(),
            task_id: None,
            decision: Verdict::StepUp,
            score: 60,
            reasons: vec![reason("scope_drift"), reason("builtin.pending_step_up")],
            faults: vec![RuleFault { rule: "r".into(), error: "e".into() }],
            ruleset: "sha256:1".into(),
            mode: Mode::Enforce,
        };
        let mut json = Vec::new();
        d.write_json(&mut json);
        let text = std::str::from_utf8(&json).unwrap_or_default();
        let brief = DecisionBrief {
            time: d.time.as_str().into(),
            decision: Verdict::StepUp,
            ruleset: d.ruleset.as_str().into(),
            reasons: ["scope_drift", "builtin.pending_step_up"].map(|rule| ReasonBrief { rule: rule.into() }).to_vec(),
        };
        assert_eq!(DecisionBrief::read_plain(text), Some(brief.clone()), "read directly");
        // A float in the evidence is for serde to read.
        let float = text.replace("\"calls\":12", "\"calls\":1.5");
        assert!(DecisionBrief::read_plain(&float).is_none());
        assert_eq!(DecisionBrief::read(float.as_bytes()).ok(), Some(brief));
    }

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
            assert_eq!(stable_id("d", parts), format!("d-{:032x}", hasher.digest128()));
        }
        assert_eq!(stable_id("c", &["acme", "t"]).len(), 34);
    }
}
