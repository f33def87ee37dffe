//! The validated input types: activity events and signals (SPEC §3).
//!
//! Everything downstream of `decode` works on these types only, so a value
//! here has already passed every check: required fields, enum values, the
//! SPIFFE ID rules and RFC 3339 times.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

mod rfc3339;

/// Event time in milliseconds since the Unix epoch (UTC).
///
/// Windows, TTLs and deadlines compare these, never the wall clock, so the
/// same input always gives the same decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn millis(self) -> i64 {
        self.0
    }

    pub fn plus_secs(self, secs: i64) -> Timestamp {
        Timestamp(self.0.saturating_add(secs.saturating_mul(1000)))
    }

    /// Seconds from `earlier` to `self`, negative if `earlier` is later.
    pub fn secs_since(self, earlier: Timestamp) -> f64 {
        (self.0 - earlier.0) as f64 / 1000.0
    }

    pub fn parse_rfc3339(text: &str) -> Option<Timestamp> {
        if let Some(ms) = rfc3339::parse_utc(text) {
            return Some(Timestamp(ms));
        }
        chrono::DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|t| Timestamp(t.timestamp_millis()))
    }

    /// RFC 3339 in UTC with milliseconds: one canonical spelling per instant.
    pub fn to_rfc3339(self) -> String {
        if let Some(text) = rfc3339::format_utc(self.0) {
            return text;
        }
        match chrono::DateTime::from_timestamp_millis(self.0) {
            Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            None => self.0.to_string(),
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

macro_rules! string_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum $name {
            $(#[serde(rename = $text)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(text: &str) -> Option<$name> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }

            /// The accepted spellings, for error messages.
            pub fn expected() -> String {
                [$($text),+].join("|")
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(
    /// What an activity event reports.
    EventKind {
        TaskStarted => "task_started",
        TaskEnded => "task_ended",
        CredentialRequest => "credential_request",
        CredentialIssued => "credential_issued",
        ToolCall => "tool_call",
        DataAccess => "data_access",
        NetworkEgress => "network_egress",
        Approval => "approval",
    }
);

string_enum!(
    /// How sensitive the data an action touches is.
    DataClass {
        Public => "public",
        Internal => "internal",
        Confidential => "confidential",
        Restricted => "restricted",
        Pii => "pii",
        Secret => "secret",
        Financial => "financial",
    }
);

impl DataClass {
    /// The classes whose read starts an exfiltration chain.
    pub fn is_sensitive(self) -> bool {
        matches!(
            self,
            DataClass::Restricted | DataClass::Pii | DataClass::Secret | DataClass::Financial
        )
    }
}

string_enum!(
    /// How the workload proved who it is.
    IdentityMethod {
        X509Svid => "x509_svid",
        JwtSvid => "jwt_svid",
        Oidc => "oidc",
        ApiKey => "api_key",
        None => "none",
    }
);

string_enum!(
    /// What a signal reports.
    SignalKind {
        CredentialLeaked => "credential_leaked",
        WorkloadCompromised => "workload_compromised",
        ThreatIntel => "threat_intel",
        AgentQuarantine => "agent_quarantine",
        AgentRelease => "agent_release",
    }
);

string_enum!(
    Severity {
        Low => "low",
        Medium => "medium",
        High => "high",
        Critical => "critical",
    }
);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub method: IdentityMethod,
    pub verified: bool,
}

impl Identity {
    pub const UNVERIFIED: Identity = Identity { method: IdentityMethod::None, verified: false };
}

/// The approved scope of a task, set by its `task_started` event.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TaskScope {
    pub tools: Vec<String>,
    /// Globs: `*` matches any run of characters, including `/`.
    pub targets: Vec<String>,
    pub data_classes: Vec<DataClass>,
    pub max_duration_s: Option<u64>,
    pub egress_budget_bytes: Option<u64>,
}

impl TaskScope {
    pub fn allows_tool(&self, tool: &str) -> bool {
        self.tools.iter().any(|t| glob_match(t, tool))
    }

    pub fn allows_target(&self, target: &str) -> bool {
        self.targets.iter().any(|g| glob_match(g, target))
    }

    pub fn allows_data_class(&self, class: DataClass) -> bool {
        class == DataClass::Public || self.data_classes.contains(&class)
    }
}

/// `*` matches any run of characters; everything else matches itself.
///
/// A scope is checked on every event, so the usual answers come first: the
/// same text, or a first character that differs. Otherwise the text must
/// start with what comes before the first star and end with what comes
/// after the last, and the pieces between are found left to right, each at
/// its first place after the one before: no pattern backtracks.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    if pattern == text {
        return true;
    }
    let bytes = pattern.as_bytes();
    if bytes.first().is_some_and(|&c| c != b'*' && text.as_bytes().first() != Some(&c)) {
        return false;
    }
    let star = |b: &u8| *b == b'*';
    let (Some(first), Some(last)) = (bytes.iter().position(star), bytes.iter().rposition(star)) else {
        return false;
    };
    let rest = text.strip_prefix(&pattern[..first]).and_then(|t| t.strip_suffix(&pattern[last + 1..]));
    let Some(mut middle) = rest else {
        return false;
    };
    if first < last {
        for piece in pattern[first + 1..last].split('*').filter(|p| !p.is_empty()) {
            match middle.find(piece) {
                Some(at) => middle = &middle[at + piece.len()..],
                None => return false,
            }
        }
    }
    true
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CredentialRef {
    pub id: String,
    pub scopes: Vec<String>,
    pub ttl_s: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub decision_id: String,
    pub granted: bool,
    pub approver: String,
}

/// One agent action (SPEC §3), validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivityEvent {
    pub event_id: String,
    pub time: Timestamp,
    pub tenant: String,
    pub agent_id: String,
    pub workload_id: String,
    pub identity: Identity,
    pub task_id: Option<String>,
    pub kind: EventKind,
    pub tool: Option<String>,
    pub target: Option<String>,
    pub operation: Option<String>,
    pub data_class: Option<DataClass>,
    pub bytes: u64,
    pub parent_event_id: Option<String>,
    pub trust_boundary: Option<String>,
    pub scope: Option<TaskScope>,
    pub credential: Option<CredentialRef>,
    pub approval: Option<Approval>,
    pub attributes: BTreeMap<String, String>,
}

impl ActivityEvent {
    /// Data the action touches is non-public (absent counts as non-public
    /// only for data access, where the class is the point of the event).
    pub fn touches_non_public(&self) -> bool {
        match self.data_class {
            Some(class) => class != DataClass::Public,
            None => self.kind == EventKind::DataAccess,
        }
    }
}

/// A risk signal from outside the activity stream (SPEC §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signal {
    pub signal_id: String,
    pub time: Timestamp,
    pub tenant: String,
    pub kind: SignalKind,
    pub severity: Severity,
    pub credential_id: Option<String>,
    pub agent_id: Option<String>,
    pub workload_id: Option<String>,
    pub target: Option<String>,
}

/// What one input record decodes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Activity(Box<ActivityEvent>),
    Signal(Box<Signal>),
}

impl Input {
    pub fn time(&self) -> Timestamp {
        match self {
            Input::Activity(e) => e.time,
            Input::Signal(s) => s.time,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_like_a_shell_star() {
        assert!(glob_match("crm/*", "crm/customers"));
        assert!(glob_match("*", "anything/at/all"));
        assert!(glob_match("api.*.com", "api.stripe.com"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("crm/*", "billing/invoices"));
        assert!(!glob_match("a*b", "acbx"));
        assert!(glob_match("a*b*c", "aXbYbZc"));
        assert!(!glob_match("a*a", "a"));
        assert!(glob_match("crm/*/export", "crm/eu/west/export"));
    }

    /// The definition, one character at a time: a star takes nothing or one
    /// more character.
    fn glob_by_definition(p: &[u8], t: &[u8]) -> bool {
        match (p.first(), t.first()) {
            (None, _) => t.is_empty(),
            (Some(b'*'), _) => glob_by_definition(&p[1..], t) || (!t.is_empty() && glob_by_definition(p, &t[1..])),
            (Some(c), Some(d)) => c == d && glob_by_definition(&p[1..], &t[1..]),
            (Some(_), None) => false,
        }
    }

    /// Every string over `alphabet` up to `max` characters long.
    fn strings(alphabet: &[char], max: usize) -> Vec<String> {
        let mut all = vec![String::new()];
        let mut last = vec![String::new()];
        for _ in 0..max {
            last = last.iter().flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}"))).collect();
            all.extend(last.iter().cloned());
        }
        all
    }

    #[test]
    fn glob_agrees_with_its_definition_on_every_short_pattern() {
        let texts = strings(&['a', 'b'], 6);
        for pattern in strings(&['a', 'b', '*'], 5) {
            for text in &texts {
                let expected = glob_by_definition(pattern.as_bytes(), text.as_bytes());
                assert_eq!(glob_match(&pattern, text), expected, "`{pattern}` against `{text}`");
            }
        }
    }

    #[test]
    fn timestamps_round_trip_through_rfc3339() {
        let t = Timestamp::parse_rfc3339("2026-11-28T10:00:00.250+01:00");
        assert_eq!(t.map(|t| t.to_rfc3339()).as_deref(), Some("2026-11-28T09:00:00.250Z"));
        assert_eq!(Timestamp::parse_rfc3339("yesterday"), None);
    }
}
