//! What Vigil remembers about one agent.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::window::Windows;
use crate::event::{DataClass, Timestamp};

/// A bounded set of hashed names (targets, tools, destinations).
///
/// Hashes keep an idle agent small. Once full, nothing more is added and an
/// unseen name keeps reading as new: a noisy agent errs towards scrutiny.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenSet(Vec<u64>);

impl SeenSet {
    pub fn contains(&self, name: &str) -> bool {
        self.0.binary_search(&super::name_hash(name)).is_ok()
    }

    pub fn insert(&mut self, name: &str, capacity: usize) {
        let h = super::name_hash(name);
        if let Err(at) = self.0.binary_search(&h) {
            if self.0.len() < capacity {
                self.0.insert(at, h);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SensitiveRead {
    pub time: Timestamp,
    pub target: String,
    pub data_class: DataClass,
}

/// A step-up waiting for its `approval`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingStepUp {
    pub decision_id: String,
    pub task_id: Option<String>,
    pub since: Timestamp,
    pub expires_at: Timestamp,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionCounts {
    pub allow: u64,
    pub step_up: u64,
    pub deny: u64,
    pub revoke: u64,
}

/// How many recent event ids an agent keeps to resolve `parent_event_id`.
pub const CHAIN_MEMORY: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentState {
    pub tenant: String,
    pub agent_id: String,
    pub workload_id: String,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    /// `None` once the agent has been quiet for longer than the widest window.
    pub windows: Option<Box<Windows>>,
    pub targets: SeenSet,
    pub tools: SeenSet,
    pub destinations: SeenSet,
    /// Hash of the last call's kind, tool, target and operation, and how many
    /// times in a row it was made.
    pub last_call: u64,
    pub repeats: u32,
    pub last_sensitive_read: Option<SensitiveRead>,
    pub quarantined: bool,
    pub pending_step_ups: Vec<PendingStepUp>,
    /// (hash of event id, chain depth) of recent events, newest last.
    pub chain: VecDeque<(u64, u32)>,
    pub decisions: DecisionCounts,
}

/// What the sweep and the signals read of an agent without decoding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentHead {
    pub last_seen: Timestamp,
    /// [`super::name_hash`] of the workload id.
    pub workload: u64,
    pub windows: bool,
}

impl super::table::Stored for AgentState {
    type Head = AgentHead;

    fn head(&self) -> AgentHead {
        AgentHead { last_seen: self.last_seen, workload: super::name_hash(&self.workload_id), windows: self.windows.is_some() }
    }
}

impl AgentState {
    pub fn new(tenant: &str, agent_id: &str, workload_id: &str, now: Timestamp) -> AgentState {
        AgentState {
            tenant: tenant.to_owned(),
            agent_id: agent_id.to_owned(),
            workload_id: workload_id.to_owned(),
            first_seen: now,
            last_seen: now,
            windows: None,
            targets: SeenSet::default(),
            tools: SeenSet::default(),
            destinations: SeenSet::default(),
            last_call: 0,
            repeats: 0,
            last_sensitive_read: None,
            quarantined: false,
            pending_step_ups: Vec::new(),
            chain: VecDeque::new(),
            decisions: DecisionCounts::default(),
        }
    }

    /// Chain depth of an event whose parent is `parent`: one more than the
    /// parent's, or 1 for a root (or a parent too old to remember).
    pub fn depth_after(&self, parent: Option<&str>) -> u32 {
        let Some(parent) = parent else { return 1 };
        let h = super::name_hash(parent);
        self.chain.iter().rev().find(|(id, _)| *id == h).map_or(1, |(_, d)| d + 1)
    }

    pub fn pending_step_up(&self, task_id: Option<&str>, now: Timestamp) -> Option<&PendingStepUp> {
        self.pending_step_ups
            .iter()
            .find(|p| p.task_id.as_deref() == task_id && p.expires_at > now)
    }
}
