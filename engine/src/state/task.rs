//! What Vigil remembers about one task and one credential.

use serde::{Deserialize, Serialize};

use crate::event::{TaskScope, Timestamp};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskStatus {
    /// Seen in activity but never started: it has no approved scope.
    Unregistered,
    Active,
    Ended,
    /// Ran past its `max_duration_s`; its credentials were revoked.
    Expired,
}

impl TaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Unregistered => "unregistered",
            TaskStatus::Active => "active",
            TaskStatus::Ended => "ended",
            TaskStatus::Expired => "expired",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskState {
    pub tenant: String,
    pub task_id: String,
    pub agent_id: String,
    pub scope: Option<TaskScope>,
    pub started_at: Option<Timestamp>,
    pub deadline: Option<Timestamp>,
    pub status: TaskStatus,
    pub ended_at: Option<Timestamp>,
    pub last_seen: Timestamp,
    pub actions: u64,
    pub bytes: u64,
    pub egress_bytes: u64,
    pub max_depth: u32,
    /// Credentials issued for this task, in issue order.
    pub credentials: Vec<String>,
}

impl TaskState {
    pub fn new(tenant: &str, task_id: &str, agent_id: &str, now: Timestamp) -> TaskState {
        TaskState {
            tenant: tenant.to_owned(),
            task_id: task_id.to_owned(),
            agent_id: agent_id.to_owned(),
            scope: None,
            started_at: None,
            deadline: None,
            status: TaskStatus::Unregistered,
            ended_at: None,
            last_seen: now,
            actions: 0,
            bytes: 0,
            egress_bytes: 0,
            max_depth: 0,
            credentials: Vec::new(),
        }
    }

    pub fn is_over(&self) -> bool {
        matches!(self.status, TaskStatus::Ended | TaskStatus::Expired)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialState {
    pub id: String,
    pub tenant: String,
    pub agent_id: String,
    pub workload_id: String,
    pub task_id: Option<String>,
    pub scopes: Vec<String>,
    pub issued_at: Timestamp,
    pub ttl_s: Option<u64>,
    pub revoked_at: Option<Timestamp>,
    pub leaked: bool,
    pub last_seen: Timestamp,
}

impl CredentialState {
    pub fn expires_at(&self) -> Option<Timestamp> {
        self.ttl_s.map(|ttl| self.issued_at.plus_secs(ttl as i64))
    }

    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at().is_some_and(|at| now > at)
    }

    pub fn is_live(&self, now: Timestamp) -> bool {
        self.revoked_at.is_none() && !self.is_expired(now)
    }
}
