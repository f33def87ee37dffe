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
use vigil::decode::{ActivityKey, DecodeError};
use vigil::event::{Input, SignalKind};
use vigil::state::KeyHash;
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// The ids of a record that did not decode, read where it is still JSON so
/// a recorded decision for it can be joined.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RecordIds<'a> {
    #[serde(borrow)]
    pub event_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub signal_id: Option<Cow<'a, str>>,
}

impl<'a> RecordIds<'a> {
    /// `None` when the record is not a JSON object.
    pub fn parse(payload: &'a [u8]) -> Option<RecordIds<'a>> {
        serde_json::from_slice(payload).ok()
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
    /// By [`hash_pair`] of tenant and credential id, already uniform.
    credential_worker: HashMap<u64, u16, KeyHash>,
}

/// A hash of two names: the second's, seeded with the first's.
fn hash_pair(a: &str, b: &str) -> u64 {
    xxh3_64_with_seed(b.as_bytes(), xxh3_64(a.as_bytes()))
}

impl Router {
    pub fn new(workers: usize) -> Router {
        Router { workers: workers.max(1), credential_worker: HashMap::default() }
    }

    fn agent_worker(&self, tenant: &str, agent: &str) -> usize {
        (hash_pair(tenant, agent) % self.workers as u64) as usize
    }

    /// The worker of an activity event, from its ids alone. `None` for one
    /// whose credential no worker has yet: the first valid event with a
    /// credential says which worker a leak of it goes to, so that event is
    /// decoded first and routed by [`Router::route`]. An event routed here
    /// that then fails to decode is a dead letter on its agent's worker,
    /// where [`Router::route`] would send it to worker 0: counted the same.
    pub fn route_key(&self, key: &ActivityKey) -> Option<usize> {
        if self.workers == 1 {
            return Some(0);
        }
        let known = |id| self.credential_worker.contains_key(&hash_pair(key.tenant, id));
        key.credential_id.is_none_or(known).then(|| self.agent_worker(key.tenant, key.agent_id))
    }

    /// The route of a record; records that did not decode go to worker 0,
    /// which counts them as dead letters.
    pub fn route(&mut self, decoded: &Result<Input, DecodeError>) -> Route {
        if self.workers == 1 {
            return Route::One(0);
        }
        match decoded {
            Err(_) => Route::One(0),
            Ok(Input::Activity(event)) => {
                let worker = self.agent_worker(&event.tenant, &event.agent_id);
                if let Some(credential) = &event.credential {
                    self.credential_worker.entry(hash_pair(&event.tenant, &credential.id)).or_insert(worker as u16);
                }
                Route::One(worker)
            }
            Ok(Input::Signal(signal)) => {
                let tenant = &signal.tenant;
                let agent = signal.agent_id.as_deref().unwrap_or_default();
                match signal.kind {
                    SignalKind::CredentialLeaked => {
                        let by_credential = signal
                            .credential_id
                            .as_deref()
                            .and_then(|id| self.credential_worker.get(&hash_pair(tenant, id)).copied());
                        Route::One(by_credential.map_or_else(|| self.agent_worker(tenant, agent), usize::from))
                    }
                    SignalKind::AgentQuarantine | SignalKind::AgentRelease => Route::One(self.agent_worker(tenant, agent)),
                    _ => Route::Every,
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn route(router: &mut Router, text: &str) -> Route {
        router.route(&vigil::decode::decode_json(text.as_bytes()))
    }

    const ACT: &str = r#""time":"2026-11-28T09:00:00Z","workload_id":"spiffe://acme.example/a","kind":"tool_call""#;

    #[test]
    fn an_agent_always_goes_to_the_same_worker() {
        let mut router = Router::new(2);
        let a = route(&mut router, &format!(r#"{{"tenant":"acme","agent_id":"a1","event_id":"1",{ACT}}}"#));
        let b = route(&mut router, &format!(r#"{{"agent_id":"a1","tenant":"acme","event_id":"2","tool":"x",{ACT}}}"#));
        assert_eq!(a, b);
        assert!(matches!(a, Route::One(_)));
    }

    #[test]
    fn a_leak_follows_its_credential() {
        let mut router = Router::new(2);
        // Agents whose own worker differs from a7's, so following the
        // credential is what sends the leak to a7's worker.
        let issued = r#"{"event_id":"1","tenant":"acme","agent_id":"a7","time":"2026-11-28T09:00:00Z","workload_id":"spiffe://acme.example/a","kind":"credential_issued","credential":{"id":"c1"}}"#;
        let worker = route(&mut router, issued);
        let other = (0..50).map(|i| format!("b{i}")).find(|a| Route::One(router.agent_worker("acme", a)) != worker).unwrap();
        let leak = format!(
            r#"{{"signal_id":"s1","time":"2026-11-28T09:00:00Z","tenant":"acme","kind":"credential_leaked","severity":"high","credential_id":"c1","agent_id":"{other}"}}"#
        );
        assert_eq!(route(&mut router, &leak), worker);
        let intel = r#"{"signal_id":"s2","time":"2026-11-28T09:00:00Z","kind":"threat_intel","severity":"high","target":"evil.example"}"#;
        assert_eq!(route(&mut router, intel), Route::Every);
        assert_eq!(route(&mut router, "{not json"), Route::One(0));
    }
}
