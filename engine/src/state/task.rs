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
    /// Ended or expired: its credentials are gone and it is kept only for its retention.
    pub fn is_over(self) -> bool {
        matches!(self, TaskStatus::Ended | TaskStatus::Expired)
    }

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

/// What the sweep and the deadline index read of a task without decoding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskHead {
    pub status: TaskStatus,
    pub deadline: Option<Timestamp>,
    pub ended_at: Option<Timestamp>,
    pub last_seen: Timestamp,
}

impl TaskHead {
    pub fn is_over(&self) -> bool {
        self.status.is_over()
    }

    /// The deadline the index holds it under: an active task's.
    pub fn active_deadline(&self) -> Option<Timestamp> {
        self.deadline.filter(|_| self.status == TaskStatus::Active)
    }
}

impl super::table::Stored for TaskState {
    type Head = TaskHead;

    fn head(&self) -> TaskHead {
        TaskHead { status: self.status, deadline: self.deadline, ended_at: self.ended_at, last_seen: self.last_seen }
    }
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
        self.status.is_over()
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

/// What the sweep and the revocations read of a credential without decoding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialHead {
    /// The [`super::Key`] of the agent it was issued to.
    pub agent: super::Key,
    pub expires_at: Option<Timestamp>,
    pub revoked: bool,
    pub last_seen: Timestamp,
}

impl CredentialHead {
    pub fn is_live(&self, now: Timestamp) -> bool {
        !self.revoked && !expired(self.expires_at, now)
    }
}

/// Past its expiry (a credential without a TTL never expires).
fn expired(expires_at: Option<Timestamp>, now: Timestamp) -> bool {
    expires_at.is_some_and(|at| now > at)
}

impl super::table::Stored for CredentialState {
    type Head = CredentialHead;

    fn head(&self) -> CredentialHead {
        CredentialHead {
            agent: super::key(&self.tenant, &self.agent_id),
            expires_at: self.expires_at(),
            revoked: self.revoked_at.is_some(),
            last_seen: self.last_seen,
        }
    }
}

impl CredentialState {
    pub fn expires_at(&self) -> Option<Timestamp> {
        self.ttl_s.map(|ttl| self.issued_at.plus_secs(ttl as i64))
    }

    pub fn is_expired(&self, now: Timestamp) -> bool {
        expired(self.expires_at(), now)
    }

    pub fn is_live(&self, now: Timestamp) -> bool {
        self.revoked_at.is_none() && !self.is_expired(now)
    }
}
