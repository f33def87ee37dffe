//! Which worker a record goes to.
//!
//! Agents are independent, so each `(tenant, agent_id)` lives on one worker,
//! as it does on one Kafka partition in the live engine. A signal goes where
//! its subject lives: a leaked credential to the worker that saw the
//! credential, a quarantine or release to the named agent's worker, and a
//! signal about a workload or a target to every worker. Sending a signal that
//! names one subject to one worker keeps the "unknown subject" commands from
//! being issued once per worker.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::Deserialize;
use xxhash_rust::xxh3::Xxh3;

/// The few fields routing needs, borrowed from the record where possible.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RoutingKey<'a> {
    #[serde(borrow)]
    pub event_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub signal_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub tenant: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub agent_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub tool: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub credential_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub credential: Option<CredentialKey<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CredentialKey<'a> {
    #[serde(borrow)]
    pub id: Option<Cow<'a, str>>,
}

impl<'a> RoutingKey<'a> {
    /// `None` when the record is not a JSON object (it will be a dead letter).
    pub fn parse(payload: &'a [u8]) -> Option<RoutingKey<'a>> {
        serde_json::from_slice(payload).ok()
    }

    pub fn tenant(&self) -> &str {
        self.tenant.as_deref().unwrap_or("default")
    }
}

/// Where one record goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    One(usize),
    Every,
}

/// Remembers which worker saw each credential, so a leak signal finds it.
#[derive(Debug)]
pub struct Router {
    workers: usize,
    credential_worker: HashMap<u64, u16>,
}

fn hash_pair(a: &str, b: &str) -> u64 {
    let mut hasher = Xxh3::new();
    hasher.update(a.as_bytes());
    hasher.update(&[0xff]);
    hasher.update(b.as_bytes());
    hasher.digest()
}

impl Router {
    pub fn new(workers: usize) -> Router {
        Router { workers: workers.max(1), credential_worker: HashMap::new() }
    }

    fn agent_worker(&self, tenant: &str, agent: &str) -> usize {
        (hash_pair(tenant, agent) % self.workers as u64) as usize
    }

    /// The route of a record; records that are not JSON go to worker 0,
    /// which turns them into dead letters.
    pub fn route(&mut self, key: Option<&RoutingKey<'_>>) -> Route {
        let Some(key) = key else { return Route::One(0) };
        if self.workers == 1 {
            return Route::One(0);
        }
        let tenant = key.tenant();
        let agent = key.agent_id.as_deref().unwrap_or_default();
        if key.signal_id.is_none() {
            let worker = self.agent_worker(tenant, agent);
            if let Some(id) = key.credential.as_ref().and_then(|c| c.id.as_deref()) {
                self.credential_worker.entry(hash_pair(tenant, id)).or_insert(worker as u16);
            }
            return Route::One(worker);
        }
        match key.kind.as_deref() {
            Some("credential_leaked") => {
                let by_credential = key
                    .credential_id
                    .as_deref()
                    .and_then(|id| self.credential_worker.get(&hash_pair(tenant, id)).copied());
                Route::One(by_credential.map_or_else(|| self.agent_worker(tenant, agent), usize::from))
            }
            Some("agent_quarantine" | "agent_release") => Route::One(self.agent_worker(tenant, agent)),
            _ => Route::Every,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(router: &mut Router, text: &str) -> Route {
        let key = RoutingKey::parse(text.as_bytes());
        router.route(key.as_ref())
    }

    #[test]
    fn an_agent_always_goes_to_the_same_worker() {
        let mut router = Router::new(2);
        let a = route(&mut router, r#"{"tenant":"acme","agent_id":"a1","event_id":"1"}"#);
        let b = route(&mut router, r#"{"agent_id":"a1","tenant":"acme","event_id":"2","tool":"x"}"#);
        assert_eq!(a, b);
    }

    #[test]
    fn a_leak_follows_its_credential() {
        let mut router = Router::new(2);
        let issued = r#"{"tenant":"acme","agent_id":"a7","kind":"credential_issued","credential":{"id":"c1"}}"#;
        let worker = route(&mut router, issued);
        let leak = r#"{"signal_id":"s1","tenant":"acme","kind":"credential_leaked","credential_id":"c1"}"#;
        assert_eq!(route(&mut router, leak), worker);
        let intel = r#"{"signal_id":"s2","kind":"threat_intel","target":"evil.example"}"#;
        assert_eq!(route(&mut router, intel), Route::Every);
        assert_eq!(route(&mut router, "{not json"), Route::One(0));
    }
}
