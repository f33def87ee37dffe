//! Per-agent and per-task risk state, folded from events in event time.
//!
//! The state is a pure fold: [`State::context`] shows the rules the state
//! *before* an event, and [`State::apply`] folds the event and what was
//! decided about it. Nothing here reads a clock.
//!
//! Entries are `Rc` so that rule views share them without copying; the fold
//! gets them back with `Rc::make_mut`, which copies nothing once the views
//! are dropped. A `State` therefore lives on one worker thread.

mod agent;
mod table;
mod task;
pub mod window;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};

pub use agent::{AgentHead, AgentState, DecisionCounts, PendingStepUp, SeenSet, SensitiveRead, CHAIN_MEMORY};
use table::{Lazy, Stored, Table};
pub use task::{CredentialHead, CredentialState, TaskHead, TaskState, TaskStatus};
use window::{Tally, Windows};

use crate::event::{ActivityEvent, EventKind, Severity, Signal, SignalKind, Timestamp};
use crate::verdict::{CommandKind, ControlCommand, Decision, Verdict};

/// A stable 64-bit hash of a name, for sets that only need membership.
pub fn name_hash(name: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(name.as_bytes())
}

/// Hashes keys that are already uniform hashes ([`Key`], [`Entry`]) by
/// folding them rather than hashing them again: the state's maps are looked
/// up several times per event and filled by the million on a restore.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyHash;

#[derive(Debug, Default)]
pub struct KeyHasher(u64);

impl std::hash::BuildHasher for KeyHash {
    type Hasher = KeyHasher;

    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(0)
    }
}

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.write_u64(xxhash_rust::xxh3::xxh3_64(bytes));
    }

    fn write_u128(&mut self, value: u128) {
        // Already uniform: fold the halves in.
        self.0 = self.0.rotate_left(23) ^ (value as u64) ^ ((value >> 64) as u64);
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = (self.0.rotate_left(23) ^ value).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn write_u8(&mut self, value: u8) {
        self.write_u64(u64::from(value));
    }

    fn write_u32(&mut self, value: u32) {
        self.write_u64(u64::from(value));
    }

    fn write_usize(&mut self, value: usize) {
        self.write_u64(value as u64);
    }

    fn write_isize(&mut self, value: isize) {
        self.write_u64(value as u64);
    }
}

type KeyMap<K, V> = HashMap<K, V, KeyHash>;

/// A map key for a (tenant, id) pair. 128 bits make a collision between two
/// real ids practically impossible; the entries keep their ids regardless.
pub type Key = u128;

pub fn key(tenant: &str, id: &str) -> Key {
    crate::digest::xxh3_128_of(tenant.len() + 1 + id.len(), |buf| {
        buf[..tenant.len()].copy_from_slice(tenant.as_bytes());
        buf[tenant.len()] = 0;
        buf[tenant.len() + 1..].copy_from_slice(id.as_bytes());
    })
}

/// The entries an activity event reads and folds into, hashed once: the
/// context looks them up and the fold updates them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keys {
    pub agent: Key,
    pub task: Option<Key>,
    pub credential: Option<Key>,
}

impl Keys {
    pub fn of(event: &ActivityEvent) -> Keys {
        Keys {
            agent: key(&event.tenant, &event.agent_id),
            task: event.task_id.as_deref().map(|id| key(&event.tenant, id)),
            credential: event.credential.as_ref().map(|c| key(&event.tenant, &c.id)),
        }
    }
}

/// How long state is kept, in event time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// An agent quiet for this long is forgotten.
    pub agent_idle_s: u64,
    /// An ended task (and its credentials) is forgotten this long after it ended.
    pub task_retention_s: u64,
    /// How many distinct targets, tools and destinations an agent remembers.
    pub seen_capacity: usize,
    /// How often (event time) forgotten entries are swept from memory.
    pub sweep_every_s: u64,
    /// How long a step-up waits for its approval.
    pub step_up_ttl_s: u64,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            agent_idle_s: 24 * 3600,
            task_retention_s: 24 * 3600,
            seen_capacity: 512,
            sweep_every_s: 300,
            step_up_ttl_s: 900,
        }
    }
}

/// A threat-intel entry from a `threat_intel` signal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Threat {
    pub severity: Severity,
    pub signal_id: String,
}

/// What the rules and the decision see of the state before one event.
#[derive(Debug, Clone)]
pub struct Context {
    pub now: Timestamp,
    pub agent: Rc<AgentState>,
    pub task: Option<Rc<TaskState>>,
    pub credential: Option<Rc<CredentialState>>,
    /// Depth of this event in its tool chain (1 for a root).
    pub depth: u32,
    /// Threat intel naming the event's target or workload.
    pub threat: Option<Threat>,
    /// The entries read here, for [`State::apply`] to fold into.
    pub keys: Keys,
}

/// A task that ran past its deadline, found by [`State::due_deadlines`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overdue {
    pub task: Rc<TaskState>,
    pub live_credentials: Vec<String>,
    pub workload_id: String,
}

#[derive(Debug, Clone, Default)]
pub struct State {
    pub config: StateConfig,
    agents: Table<AgentState>,
    tasks: Table<TaskState>,
    credentials: Table<CredentialState>,
    threats: HashMap<String, Threat>,
    /// Active tasks by deadline, so overdue ones are found without a scan.
    deadlines: BTreeSet<(Timestamp, Key)>,
    watermark: Timestamp,
    last_sweep: Timestamp,
    /// Entries changed since the last [`State::take_changes`]: what the
    /// changelog and an incremental checkpoint write.
    dirty: ChangeSet,
    /// The partition of the record being folded.
    placing: i32,
    /// What changed since the last [`State::mark`] or
    /// [`State::mark_in_flight`], to undo it.
    journal: Journal,
    /// The journal of the batch in flight, if any: undone after `journal`.
    in_flight: Option<Journal>,
}

/// The values entries had at the last [`State::mark`], kept the first time
/// each is changed after it: undoing a batch costs what the batch touched,
/// not the size of the state. `None` for an entry that did not exist.
#[derive(Debug, Clone, Default)]
struct Journal {
    open: bool,
    agents: KeyMap<Key, Option<Lazy<AgentState>>>,
    tasks: KeyMap<Key, Option<Lazy<TaskState>>>,
    credentials: KeyMap<Key, Option<Lazy<CredentialState>>>,
    homes: KeyMap<Entry, Option<i32>>,
    threats: Option<HashMap<String, Threat>>,
    clock: (Timestamp, Timestamp),
    dirty: HashSet<Entry, KeyHash>,
}

/// The entries changed since they were last taken. A state whose changes
/// no one takes (a replay's) keeps none: on a long input the set would
/// grow to every entry ever seen, each insert a cache miss.
#[derive(Debug, Clone, Default)]
struct ChangeSet {
    entries: HashSet<Entry, KeyHash>,
    off: bool,
}

impl ChangeSet {
    fn insert(&mut self, entry: Entry) {
        if !self.off {
            self.entries.insert(entry);
        }
    }
}

/// What [`State::heap_bytes`] counts: agents with their map, tasks,
/// credentials, and the other tables (their maps, homes, the change set).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeapBytes {
    pub agents: usize,
    pub tasks: usize,
    pub credentials: usize,
    pub other: usize,
}

impl HeapBytes {
    pub fn total(&self) -> usize {
        self.agents + self.tasks + self.credentials + self.other
    }
}

/// One change to the state, as the changelog and the checkpoint store
/// record it: the entry's key, its encoded value (`None` once it is gone)
/// and the activity partition it lives in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub partition: i32,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// One entry of the state as a checkpoint stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Entry {
    Agent(Key),
    Task(Key),
    Credential(Key),
    Threats,
    Clock,
}

impl Entry {
    /// The store key: a kind byte, then the 128-bit key big-endian, so a
    /// store's key order groups entries by kind.
    pub fn to_bytes(self) -> Vec<u8> {
        let (kind, k) = match self {
            Entry::Agent(k) => (b'a', Some(k)),
            Entry::Task(k) => (b't', Some(k)),
            Entry::Credential(k) => (b'c', Some(k)),
            Entry::Threats => (b'x', None),
            Entry::Clock => (b'w', None),
        };
        let mut bytes = vec![kind];
        if let Some(k) = k {
            bytes.extend_from_slice(&k.to_be_bytes());
        }
        bytes
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Entry> {
        let key = || bytes.get(1..17).and_then(|b| b.try_into().ok()).map(u128::from_be_bytes);
        match bytes.first()? {
            b'a' => key().map(Entry::Agent),
            b't' => key().map(Entry::Task),
            b'c' => key().map(Entry::Credential),
            b'x' => Some(Entry::Threats),
            b'w' => Some(Entry::Clock),
            _ => None,
        }
    }
}

/// Why a snapshot could not be restored. Nothing is half-read: a snapshot
/// with any bad entry is refused whole.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("unknown state entry key `{0}`")]
    UnknownKey(String),
    #[error("state entry `{key}` does not decode: {reason}")]
    Corrupt { key: String, reason: String },
}

impl State {
    pub fn new(config: StateConfig) -> State {
        State { config, ..State::default() }
    }

    /// Keeps no change set, for a state whose changes are never taken (a
    /// replay): [`State::take_changes`] then gives only the clock.
    pub fn without_changes(mut self) -> State {
        self.dirty = ChangeSet { entries: HashSet::default(), off: true };
        self
    }

    /// Marks the state as committed: [`State::rollback`] returns here. The
    /// first mark turns the journal on; a state never marked keeps none.
    pub fn mark(&mut self) {
        self.in_flight = None;
        self.restart_journal();
    }

    /// Marks the end of a batch whose outputs are in flight: a new journal
    /// starts, and [`State::rollback`] still returns to before the batch,
    /// until [`State::landed`]. A batch in flight before it has landed.
    pub fn mark_in_flight(&mut self) {
        let recycled = self.in_flight.take().unwrap_or_default();
        self.in_flight = Some(std::mem::replace(&mut self.journal, recycled));
        self.restart_journal();
    }

    /// The batch in flight is durable: [`State::rollback`] returns to the
    /// last mark only.
    pub fn landed(&mut self) {
        self.in_flight = None;
    }

    fn restart_journal(&mut self) {
        let journal = &mut self.journal;
        journal.open = true;
        journal.agents.clear();
        journal.tasks.clear();
        journal.credentials.clear();
        journal.homes.clear();
        journal.threats = None;
        journal.clock = (self.watermark, self.last_sweep);
        journal.dirty.clone_from(&self.dirty.entries);
    }

    /// Undoes every change since the last [`State::mark`] (the batch in
    /// flight included) and marks again.
    pub fn rollback(&mut self) {
        if !self.journal.open {
            return;
        }
        let mut journal = std::mem::take(&mut self.journal);
        self.undo(&mut journal);
        if let Some(mut older) = self.in_flight.take() {
            self.undo(&mut older);
        }
        self.journal = journal;
        self.mark();
    }

    fn undo(&mut self, journal: &mut Journal) {
        // The deadline index follows the tasks: active ones with a deadline.
        for (k, old) in &journal.tasks {
            if let Some(deadline) = self.tasks.head(k).and_then(|t| t.deadline) {
                self.deadlines.remove(&(deadline, *k));
            }
            if let Some(deadline) = old.as_ref().and_then(Lazy::head).and_then(|t| t.active_deadline()) {
                self.deadlines.insert((deadline, *k));
            }
        }
        put_back(&mut self.agents, &mut journal.agents);
        put_back(&mut self.tasks, &mut journal.tasks);
        put_back(&mut self.credentials, &mut journal.credentials);
        for (entry, home) in journal.homes.drain() {
            match home {
                Some(home) => self.set_home(entry, home),
                None => drop(self.forget_home(entry)),
            }
        }
        if let Some(threats) = journal.threats.take() {
            self.threats = threats;
        }
        (self.watermark, self.last_sweep) = journal.clock;
        std::mem::swap(&mut self.dirty.entries, &mut journal.dirty);
    }

    /// Journals `entry`'s value as of the last mark, before its first change.
    fn keep(&mut self, entry: Entry) {
        let journal = &mut self.journal;
        if !journal.open {
            return;
        }
        match entry {
            Entry::Agent(k) => keep(&mut journal.agents, &self.agents, k),
            Entry::Task(k) => keep(&mut journal.tasks, &self.tasks, k),
            Entry::Credential(k) => keep(&mut journal.credentials, &self.credentials, k),
            Entry::Threats => {
                journal.threats.get_or_insert_with(|| self.threats.clone());
            }
            // The clock is journaled at every mark.
            Entry::Clock => {}
        }
    }

    /// Journals where `entry` lives, before that first changes.
    fn keep_home(&mut self, entry: Entry) {
        if self.journal.open {
            let home = self.home(entry);
            self.journal.homes.entry(entry).or_insert(home);
        }
    }

    /// The activity partition an entry lives in (its agent's), so that a
    /// change goes to that partition's changelog and a revoked partition's
    /// entries can be let go; kept after the entry is gone until its
    /// tombstone is written. Global entries (threats, clock) have none.
    fn home(&self, entry: Entry) -> Option<i32> {
        match entry {
            Entry::Agent(k) => self.agents.home(&k),
            Entry::Task(k) => self.tasks.home(&k),
            Entry::Credential(k) => self.credentials.home(&k),
            Entry::Threats | Entry::Clock => None,
        }
    }

    fn set_home(&mut self, entry: Entry, home: i32) {
        match entry {
            Entry::Agent(k) => self.agents.set_home(k, home),
            Entry::Task(k) => self.tasks.set_home(k, home),
            Entry::Credential(k) => self.credentials.set_home(k, home),
            Entry::Threats | Entry::Clock => {}
        }
    }

    fn forget_home(&mut self, entry: Entry) -> Option<i32> {
        match entry {
            Entry::Agent(k) => self.agents.forget_home(&k),
            Entry::Task(k) => self.tasks.forget_home(&k),
            Entry::Credential(k) => self.credentials.forget_home(&k),
            Entry::Threats | Entry::Clock => None,
        }
    }

    pub fn agent_count(&self) -> usize {
        self.agents.len()
    }

    pub fn task_count(&self) -> usize {
        self.tasks.len()
    }

    pub fn watermark(&self) -> Timestamp {
        self.watermark
    }

    /// An estimate of the heap memory the state holds, in bytes: every
    /// entry's own size and what its strings, sets and queues allocated,
    /// and the maps' tables at their capacity. Allocator overhead is not
    /// counted. O(entries): for benchmarks and occasional reports.
    pub fn heap_bytes(&self) -> HeapBytes {
        use std::mem::size_of;
        fn text(s: &str) -> usize {
            s.len()
        }
        fn texts(v: &[String]) -> usize {
            v.iter().map(|s| size_of::<String>() + s.len()).sum()
        }
        fn cold<T: Stored>(table: &Table<T>) -> usize {
            table.cold().map(<[u8]>::len).sum()
        }
        const RC: usize = 2 * size_of::<usize>();
        let agents: usize = self
            .agents
            .warm()
            .map(|a| {
                RC + size_of::<AgentState>()
                    + text(&a.tenant)
                    + text(&a.agent_id)
                    + text(&a.workload_id)
                    + a.windows.as_ref().map_or(0, |_| size_of::<Windows>())
                    + (a.targets.len() + a.tools.len() + a.destinations.len()) * size_of::<u64>()
                    + a.last_sensitive_read.as_ref().map_or(0, |r| r.target.capacity())
                    + a.pending_step_ups.capacity() * size_of::<PendingStepUp>()
                    + a.chain.capacity() * size_of::<(u64, u32)>()
            })
            .sum();
        let tasks: usize = self
            .tasks
            .warm()
            .map(|t| {
                RC + size_of::<TaskState>()
                    + text(&t.tenant)
                    + text(&t.task_id)
                    + text(&t.agent_id)
                    + texts(&t.credentials)
                    + t.scope.as_ref().map_or(0, |s| texts(&s.tools) + texts(&s.targets) + s.data_classes.capacity())
            })
            .sum();
        let credentials: usize = self
            .credentials
            .warm()
            .map(|c| RC + size_of::<CredentialState>() + text(&c.id) + text(&c.agent_id) + text(&c.workload_id) + texts(&c.scopes))
            .sum();
        let tables = self.tasks.slot_bytes() + self.credentials.slot_bytes();
        HeapBytes {
            agents: agents + self.agents.slot_bytes() + cold(&self.agents),
            tasks: tasks + cold(&self.tasks),
            credentials: credentials + cold(&self.credentials),
            other: tables + self.dirty.entries.capacity() * (size_of::<Entry>() + 1),
        }
    }

    /// The activity partition the next records come from: the agents they
    /// fold into live there.
    pub fn place(&mut self, partition: i32) {
        self.placing = partition;
    }

    /// An agent as it stands (a restored one is decoded for this read).
    pub fn agent(&self, tenant: &str, agent_id: &str) -> Option<Rc<AgentState>> {
        self.agents.peek(&key(tenant, agent_id))
    }

    pub fn task(&self, tenant: &str, task_id: &str) -> Option<Rc<TaskState>> {
        self.tasks.peek(&key(tenant, task_id))
    }

    pub fn credential(&self, tenant: &str, id: &str) -> Option<Rc<CredentialState>> {
        self.credentials.peek(&key(tenant, id))
    }

    /// How many restored entries have not been decoded yet.
    pub fn cold_count(&self) -> usize {
        self.agents.cold().count() + self.tasks.cold().count() + self.credentials.cold().count()
    }

    fn agent_is_forgotten(config: &StateConfig, last_seen: Timestamp, now: Timestamp) -> bool {
        now > last_seen.plus_secs(config.agent_idle_s as i64)
    }

    fn task_is_forgotten(config: &StateConfig, task: &TaskHead, now: Timestamp) -> bool {
        let since = task.ended_at.unwrap_or(task.last_seen);
        let keep = if task.is_over() { config.task_retention_s } else { config.agent_idle_s };
        now > since.plus_secs(keep as i64)
    }

    /// The state before `event`, as the rules see it. A forgotten (idle)
    /// agent or task starts afresh here, so forgetting does not depend on
    /// when the sweep last ran.
    pub fn context(&mut self, event: &ActivityEvent) -> Context {
        let now = event.time;
        let keys = Keys::of(event);
        let agent_key = keys.agent;
        let fresh = match self.agents.get(&agent_key) {
            Some(agent) => State::agent_is_forgotten(&self.config, agent.last_seen, now),
            None => true,
        };
        if fresh {
            self.keep(Entry::Agent(agent_key));
            let agent = AgentState::new(&event.tenant, &event.agent_id, &event.workload_id, now);
            self.agents.insert(agent_key, Rc::new(agent));
            self.dirty.insert(Entry::Agent(agent_key));
        }
        let agent = self.agents.get(&agent_key).cloned().unwrap_or_else(|| {
            Rc::new(AgentState::new(&event.tenant, &event.agent_id, &event.workload_id, now))
        });
        let task = keys.task.and_then(|k| {
            let task = self.tasks.get(&k)?;
            (!State::task_is_forgotten(&self.config, &task.head(), now)).then(|| task.clone())
        });
        let credential = keys.credential.and_then(|k| self.credentials.get(&k).cloned());
        let threat = event
            .target
            .as_deref()
            .and_then(|t| self.threats.get(t))
            .or_else(|| self.threats.get(&event.workload_id))
            .cloned();
        let depth = agent.depth_after(event.parent_event_id.as_deref());
        Context { now, agent, task, credential, depth, threat, keys }
    }

    /// Folds an activity event, its decision and the commands it caused
    /// into the entries at `keys` (the event's [`Context::keys`]).
    pub fn apply(&mut self, event: &ActivityEvent, keys: Keys, depth: u32, decision: &Decision, commands: &[ControlCommand]) {
        debug_assert_eq!(keys, Keys::of(event), "keys of another event");
        let now = event.time;
        self.advance(now);
        let capacity = self.config.seen_capacity;
        let step_up_ttl = self.config.step_up_ttl_s as i64;
        let tenant = event.tenant.as_str();

        let agent_key = keys.agent;
        self.keep(Entry::Agent(agent_key));
        self.dirty.insert(Entry::Agent(agent_key));
        if self.agents.home(&agent_key) != Some(self.placing) {
            self.keep_home(Entry::Agent(agent_key));
            self.agents.set_home(agent_key, self.placing);
        }
        let agent = self
            .agents
            .get_or_insert_with(agent_key, || AgentState::new(tenant, &event.agent_id, &event.workload_id, now));
        let asked = commands.iter().any(|c| c.command == CommandKind::StepUp);
        fold_agent(agent, event, depth, decision, asked, capacity);
        if decision.decision == Verdict::StepUp && asked {
            agent.pending_step_ups.push(PendingStepUp {
                decision_id: decision.decision_id.clone(),
                task_id: event.task_id.clone(),
                since: now,
                expires_at: now.plus_secs(step_up_ttl),
            });
        }
        if let (EventKind::Approval, Some(approval)) = (event.kind, &event.approval) {
            agent.pending_step_ups.retain(|p| p.decision_id != approval.decision_id);
        }
        agent.pending_step_ups.retain(|p| p.expires_at > now);

        if let (Some(task_id), Some(task_key)) = (event.task_id.as_deref(), keys.task) {
            self.fold_task(event, task_id, task_key, depth);
        }
        if let (EventKind::CredentialIssued, Some(cred_key)) = (event.kind, keys.credential) {
            self.issue_credential(event, cred_key, keys.task);
        }
        if let Some(cred_key) = keys.credential {
            self.keep(Entry::Credential(cred_key));
            if let Some(c) = self.credentials.get_mut(&cred_key) {
                c.last_seen = now;
                self.dirty.insert(Entry::Credential(cred_key));
            }
        }
        self.apply_commands(commands, now);
    }

    fn fold_task(&mut self, event: &ActivityEvent, task_id: &str, task_key: Key, depth: u32) {
        let now = event.time;
        self.keep(Entry::Task(task_key));
        self.dirty.insert(Entry::Task(task_key));
        let forgotten = self.tasks.head(&task_key).is_some_and(|t| State::task_is_forgotten(&self.config, &t, now));
        if forgotten || event.kind == EventKind::TaskStarted {
            if let Some(deadline) = self.tasks.remove(&task_key).and_then(|t| t.head()).and_then(|t| t.deadline) {
                self.deadlines.remove(&(deadline, task_key));
            }
        }
        let task = self.tasks.get_or_insert_with(task_key, || TaskState::new(&event.tenant, task_id, &event.agent_id, now));
        task.last_seen = task.last_seen.max(now);
        match event.kind {
            EventKind::TaskStarted => {
                task.status = TaskStatus::Active;
                task.started_at = Some(now);
                task.scope = event.scope.clone();
                task.deadline = event
                    .scope
                    .as_ref()
                    .and_then(|s| s.max_duration_s)
                    .map(|secs| now.plus_secs(secs as i64));
                if let Some(deadline) = task.deadline {
                    self.deadlines.insert((deadline, task_key));
                }
            }
            EventKind::TaskEnded => {
                if !task.is_over() {
                    task.status = TaskStatus::Ended;
                    task.ended_at = Some(now);
                }
                if let Some(deadline) = task.deadline {
                    self.deadlines.remove(&(deadline, task_key));
                }
            }
            _ => {
                task.actions += 1;
                task.bytes = task.bytes.saturating_add(event.bytes);
                if event.kind == EventKind::NetworkEgress {
                    task.egress_bytes = task.egress_bytes.saturating_add(event.bytes);
                }
                task.max_depth = task.max_depth.max(depth);
            }
        }
    }

    fn issue_credential(&mut self, event: &ActivityEvent, cred_key: Key, task_key: Option<Key>) {
        let Some(cred) = &event.credential else { return };
        self.keep(Entry::Credential(cred_key));
        self.dirty.insert(Entry::Credential(cred_key));
        self.credentials.insert(
            cred_key,
            Rc::new(CredentialState {
                id: cred.id.clone(),
                tenant: event.tenant.clone(),
                agent_id: event.agent_id.clone(),
                workload_id: event.workload_id.clone(),
                task_id: event.task_id.clone(),
                scopes: cred.scopes.clone(),
                issued_at: event.time,
                ttl_s: cred.ttl_s,
                revoked_at: None,
                leaked: false,
                last_seen: event.time,
            }),
        );
        if let Some(task_key) = task_key {
            self.keep(Entry::Task(task_key));
            if let Some(task) = self.tasks.get_mut(&task_key) {
                if !task.credentials.contains(&cred.id) {
                    task.credentials.push(cred.id.clone());
                }
            }
        }
    }

    /// Folds what commands do to state: revoked credentials, quarantines.
    pub fn apply_commands(&mut self, commands: &[ControlCommand], now: Timestamp) {
        for command in commands {
            match command.command {
                CommandKind::RevokeCredentials | CommandKind::RevokeAgent => {
                    for id in &command.credential_ids {
                        let cred_key = key(&command.tenant, id);
                        self.keep(Entry::Credential(cred_key));
                        if let Some(c) = self.credentials.get_mut(&cred_key) {
                            c.revoked_at.get_or_insert(now);
                            self.dirty.insert(Entry::Credential(cred_key));
                        }
                    }
                }
                CommandKind::Quarantine | CommandKind::Release => {
                    let agent_key = key(&command.tenant, &command.agent_id);
                    self.keep(Entry::Agent(agent_key));
                    if let Some(agent) = self.agents.get_mut(&agent_key) {
                        agent.quarantined = command.command == CommandKind::Quarantine;
                        self.dirty.insert(Entry::Agent(agent_key));
                    }
                }
                CommandKind::StepUp => {}
            }
        }
    }

    /// Folds a signal and the commands it caused.
    pub fn apply_signal(&mut self, signal: &Signal, commands: &[ControlCommand]) {
        self.advance(signal.time);
        match signal.kind {
            SignalKind::ThreatIntel | SignalKind::WorkloadCompromised => {
                let threat = Threat { severity: signal.severity, signal_id: signal.signal_id.clone() };
                self.keep(Entry::Threats);
                for subject in [&signal.target, &signal.workload_id].into_iter().flatten() {
                    self.threats.insert(subject.clone(), threat.clone());
                }
                self.dirty.insert(Entry::Threats);
            }
            SignalKind::CredentialLeaked => {
                if let Some(id) = &signal.credential_id {
                    let cred_key = key(&signal.tenant, id);
                    self.keep(Entry::Credential(cred_key));
                    if let Some(c) = self.credentials.get_mut(&cred_key) {
                        c.leaked = true;
                        self.dirty.insert(Entry::Credential(cred_key));
                    }
                }
            }
            SignalKind::AgentQuarantine | SignalKind::AgentRelease => {}
        }
        self.apply_commands(commands, signal.time);
    }

    /// Live credentials of `agent_id`, or of its task when one is given, in issue order.
    pub fn live_credentials(&self, tenant: &str, agent_id: &str, task_id: Option<&str>, now: Timestamp) -> Vec<String> {
        if let Some(task) = task_id.and_then(|t| self.tasks.peek(&key(tenant, t))) {
            return task
                .credentials
                .iter()
                .filter(|id| self.credentials.head(&key(tenant, id)).is_some_and(|c| c.is_live(now)))
                .cloned()
                .collect();
        }
        let agent = key(tenant, agent_id);
        let mut held: Vec<Rc<CredentialState>> = self
            .credentials
            .heads()
            .filter(|(_, c)| c.agent == agent && c.is_live(now))
            .filter_map(|(k, _)| self.credentials.peek(&k))
            .filter(|c| c.tenant == tenant && c.agent_id == agent_id)
            .collect();
        held.sort_by(|a, b| (a.issued_at, &a.id).cmp(&(b.issued_at, &b.id)));
        held.into_iter().map(|c| c.id.clone()).collect()
    }

    /// Agents that a signal names directly or through a credential or workload, sorted.
    pub fn agents_named_by(&self, signal: &Signal) -> Vec<Rc<AgentState>> {
        let mut named: Vec<Rc<AgentState>> = Vec::new();
        let tenant = signal.tenant.as_str();
        if let Some(id) = &signal.agent_id {
            named.extend(self.agents.peek(&key(tenant, id)));
        }
        if let Some(cred) = signal.credential_id.as_ref().and_then(|id| self.credentials.head(&key(tenant, id))) {
            named.extend(self.agents.peek(&cred.agent));
        }
        if let (SignalKind::WorkloadCompromised, Some(workload)) = (signal.kind, &signal.workload_id) {
            let hash = name_hash(workload);
            named.extend(
                self.agents
                    .heads()
                    .filter(|(_, a)| a.workload == hash)
                    .filter_map(|(k, _)| self.agents.peek(&k))
                    .filter(|a| &a.workload_id == workload),
            );
        }
        named.sort_by(|a, b| (&a.tenant, &a.agent_id).cmp(&(&b.tenant, &b.agent_id)));
        named.dedup_by(|a, b| a.agent_id == b.agent_id && a.tenant == b.tenant);
        named
    }

    /// Tasks whose deadline is at or before `now` and that are still active,
    /// oldest deadline first. Callers mark them with [`State::expire_task`].
    pub fn due_deadlines(&self, now: Timestamp) -> Vec<Overdue> {
        self.deadlines
            .iter()
            .take_while(|(deadline, _)| *deadline < now)
            .filter_map(|(_, task_key)| {
                let task = self.tasks.peek(task_key)?;
                let deadline = task.deadline?;
                let workload_id = self
                    .agents
                    .peek(&key(&task.tenant, &task.agent_id))
                    .map(|a| a.workload_id.clone())
                    .unwrap_or_default();
                Some(Overdue {
                    live_credentials: self.live_credentials(&task.tenant, &task.agent_id, Some(&task.task_id), deadline),
                    task,
                    workload_id,
                })
            })
            .collect()
    }

    pub fn expire_task(&mut self, tenant: &str, task_id: &str) {
        let task_key = key(tenant, task_id);
        self.keep(Entry::Task(task_key));
        if let Some(task) = self.tasks.get_mut(&task_key) {
            self.dirty.insert(Entry::Task(task_key));
            if let Some(deadline) = task.deadline {
                self.deadlines.remove(&(deadline, task_key));
                task.status = TaskStatus::Expired;
                task.ended_at = Some(deadline);
            }
        }
    }

    /// The encoded value of one entry, `None` if it no longer exists.
    pub fn encode_entry(&self, entry: Entry) -> Option<Vec<u8>> {
        match entry {
            Entry::Agent(k) => self.agents.encode(&k),
            Entry::Task(k) => self.tasks.encode(&k),
            Entry::Credential(k) => self.credentials.encode(&k),
            Entry::Threats => table::seal(&(), &self.threats),
            Entry::Clock => table::seal(&(), &(self.watermark, self.last_sweep)),
        }
    }

    /// What changed since the last call, each to the partition its entry
    /// lives in; the clock, and the threats when they changed, go to every
    /// one of `partitions`. Sorted, so changelogs are reproducible.
    pub fn take_changes(&mut self, partitions: &[i32]) -> Vec<Change> {
        let mut dirty: Vec<Entry> = self.dirty.entries.drain().collect();
        dirty.sort_unstable();
        let mut changes = Vec::with_capacity(dirty.len() + 2 * partitions.len());
        let mut threats = false;
        for entry in dirty {
            if matches!(entry, Entry::Threats | Entry::Clock) {
                threats |= entry == Entry::Threats;
                continue;
            }
            let value = self.encode_entry(entry);
            let home = match value {
                Some(_) => self.home_of(entry),
                // Gone: its tombstone goes where its value went, if it ever did.
                None => {
                    self.keep_home(entry);
                    self.forget_home(entry)
                }
            };
            if let Some(partition) = home {
                changes.push(Change { partition, key: entry.to_bytes(), value });
            }
        }
        let globals = if threats { &[Entry::Threats, Entry::Clock][..] } else { &[Entry::Clock][..] };
        for &partition in partitions {
            for &entry in globals {
                changes.push(Change { partition, key: entry.to_bytes(), value: self.encode_entry(entry) });
            }
        }
        changes
    }

    /// The partition of a live entry: where it already lives, else its agent's.
    fn home_of(&mut self, entry: Entry) -> Option<i32> {
        if let Some(home) = self.home(entry) {
            return Some(home);
        }
        let owner = match entry {
            Entry::Agent(_) => entry,
            Entry::Task(k) => self.tasks.peek(&k).map(|t| Entry::Agent(key(&t.tenant, &t.agent_id)))?,
            Entry::Credential(k) => self.credentials.head(&k).map(|c| Entry::Agent(c.agent))?,
            Entry::Threats | Entry::Clock => return None,
        };
        let home = self.home(owner).unwrap_or(self.placing);
        self.keep_home(entry);
        self.set_home(entry, home);
        Some(home)
    }

    /// Every entry, for a full snapshot, all in `partition`. Clears the change set.
    pub fn snapshot(&mut self, partition: i32) -> Vec<Change> {
        self.dirty.entries.clear();
        let mut entries: Vec<Entry> = self
            .agents
            .keys()
            .map(|k| Entry::Agent(*k))
            .chain(self.tasks.keys().map(|k| Entry::Task(*k)))
            .chain(self.credentials.keys().map(|k| Entry::Credential(*k)))
            .chain([Entry::Threats, Entry::Clock])
            .collect();
        entries.sort_unstable();
        entries
            .into_iter()
            .filter_map(|e| Some(Change { partition, key: e.to_bytes(), value: Some(self.encode_entry(e)?) }))
            .collect()
    }

    /// Rebuilds a state from stored entries (any order).
    pub fn restore(config: StateConfig, entries: Vec<(Vec<u8>, Vec<u8>)>) -> Result<State, RestoreError> {
        let mut state = State::new(config);
        state.absorb(0, entries)?;
        Ok(state)
    }

    /// Adds the stored entries of `partition` (a partition this state did
    /// not hold) to the state: its agents, tasks and credentials; threats are
    /// merged and the clock is the later of the two. Every entry is checked
    /// first, and a bad one refuses the whole partition and leaves the state
    /// as it was; agents, tasks and credentials are then kept as their bytes
    /// until first used. Between batches only: this is not journaled, so
    /// [`State::mark`] the state afterwards.
    pub fn absorb(&mut self, partition: i32, entries: Vec<(Vec<u8>, Vec<u8>)>) -> Result<usize, RestoreError> {
        let checked = check_all(&entries)?;
        let (mut agents, mut tasks, mut credentials) = (Vec::new(), Vec::new(), Vec::new());
        let mut deadlines = Vec::new();
        for (checked, (_, bytes)) in checked.into_iter().zip(entries) {
            let bytes = bytes.into_boxed_slice();
            match checked {
                Checked::Agent(k) => agents.push((k, bytes)),
                Checked::Task(k, deadline) => {
                    deadlines.extend(deadline.map(|deadline| (deadline, k)));
                    tasks.push((k, bytes));
                }
                Checked::Credential(k) => credentials.push((k, bytes)),
                Checked::Threats(threats) => {
                    for (subject, threat) in threats {
                        self.threats.entry(subject).or_insert(threat);
                    }
                }
                Checked::Clock((watermark, last_sweep)) => {
                    self.watermark = self.watermark.max(watermark);
                    self.last_sweep = self.last_sweep.max(last_sweep);
                }
            }
        }
        let count = agents.len() + tasks.len() + credentials.len();
        self.agents.extend_cold(agents, partition);
        self.tasks.extend_cold(tasks, partition);
        self.credentials.extend_cold(credentials, partition);
        // Built in one go: sorted, then merged in.
        let mut deadlines: BTreeSet<(Timestamp, Key)> = deadlines.into_iter().collect();
        self.deadlines.append(&mut deadlines);
        Ok(count)
    }

    /// Lets go of every entry living in one of `partitions` (revoked: their
    /// next owner rebuilds them from the changelog). Returns how many.
    /// Between batches only, like [`State::absorb`].
    pub fn release(&mut self, partitions: &[i32]) -> usize {
        let gone: Vec<Entry> = (self.agents.living_in(partitions).into_iter().map(Entry::Agent))
            .chain(self.tasks.living_in(partitions).into_iter().map(Entry::Task))
            .chain(self.credentials.living_in(partitions).into_iter().map(Entry::Credential))
            .collect();
        for entry in &gone {
            self.dirty.entries.remove(entry);
            match *entry {
                Entry::Agent(k) => drop(self.agents.remove(&k)),
                Entry::Task(k) => {
                    if let Some(deadline) = self.tasks.remove(&k).and_then(|t| t.head()).and_then(|t| t.deadline) {
                        self.deadlines.remove(&(deadline, k));
                    }
                }
                Entry::Credential(k) => drop(self.credentials.remove(&k)),
                Entry::Threats | Entry::Clock => {}
            }
            self.forget_home(*entry);
        }
        gone.len()
    }

    /// Moves the watermark and, every `sweep_every_s`, drops what is forgotten.
    fn advance(&mut self, now: Timestamp) {
        if now <= self.watermark {
            return;
        }
        self.watermark = now;
        if now < self.last_sweep.plus_secs(self.config.sweep_every_s as i64) {
            return;
        }
        self.last_sweep = now;
        self.sweep(now);
    }

    /// Forgets what has been idle too long. It reads heads only, so the
    /// entries a restore left undecoded stay so.
    fn sweep(&mut self, now: Timestamp) {
        let config = &self.config;
        let forgotten: Vec<Key> = self
            .agents
            .heads()
            .filter(|(_, a)| State::agent_is_forgotten(config, a.last_seen, now))
            .map(|(k, _)| k)
            .collect();
        for agent_key in forgotten {
            self.keep(Entry::Agent(agent_key));
            self.agents.remove(&agent_key);
            self.dirty.insert(Entry::Agent(agent_key));
        }
        // Windows only matter for an hour; an idle agent drops them.
        let quiet: Vec<Key> = self
            .agents
            .heads()
            .filter(|(_, a)| a.windows && now > a.last_seen.plus_secs(3600))
            .map(|(k, _)| k)
            .collect();
        for agent_key in quiet {
            self.keep(Entry::Agent(agent_key));
            if let Some(agent) = self.agents.get_mut(&agent_key) {
                agent.windows = None;
                self.dirty.insert(Entry::Agent(agent_key));
            }
        }
        let config = &self.config;
        let forgotten: Vec<(Key, Option<Timestamp>)> = self
            .tasks
            .heads()
            .filter(|(_, t)| State::task_is_forgotten(config, t, now))
            .map(|(k, t)| (k, t.deadline))
            .collect();
        for (task_key, deadline) in forgotten {
            self.keep(Entry::Task(task_key));
            self.dirty.insert(Entry::Task(task_key));
            self.tasks.remove(&task_key);
            if let Some(deadline) = deadline {
                self.deadlines.remove(&(deadline, task_key));
            }
        }
        let retention = self.config.task_retention_s as i64;
        let forgotten: Vec<Key> = self
            .credentials
            .heads()
            .filter(|(_, c)| now > c.expires_at.unwrap_or(c.last_seen).max(c.last_seen).plus_secs(retention))
            .map(|(k, _)| k)
            .collect();
        for cred_key in forgotten {
            self.keep(Entry::Credential(cred_key));
            self.credentials.remove(&cred_key);
            self.dirty.insert(Entry::Credential(cred_key));
        }
    }
}

/// Keeps `live`'s entry for `k` in `kept` (or that there was none), the
/// first time only: the entry as of the last mark.
fn keep<T: Stored>(kept: &mut KeyMap<Key, Option<Lazy<T>>>, live: &Table<T>, k: Key) {
    kept.entry(k).or_insert_with(|| live.lazy(&k));
}

/// Puts the kept entries back into `live`, removing what had none.
fn put_back<T: Stored>(live: &mut Table<T>, kept: &mut KeyMap<Key, Option<Lazy<T>>>) {
    for (k, old) in kept.drain() {
        live.put(k, old);
    }
}

/// One stored entry, checked: what a restore needs of it before its
/// bytes are kept (a task's deadline while active; the global entries whole).
enum Checked {
    Agent(Key),
    Task(Key, Option<Timestamp>),
    Credential(Key),
    Threats(HashMap<String, Threat>),
    Clock((Timestamp, Timestamp)),
}

fn check_one(k: &[u8], v: &[u8]) -> Result<Checked, RestoreError> {
    let entry = Entry::from_bytes(k).ok_or_else(|| RestoreError::UnknownKey(hex::encode(k)))?;
    let corrupt = |reason: String| RestoreError::Corrupt { key: hex::encode(k), reason };
    Ok(match entry {
        Entry::Agent(key) => table::check::<AgentState>(v).map(|_| Checked::Agent(key)).map_err(corrupt)?,
        Entry::Task(key) => {
            let head = table::check::<TaskState>(v).map_err(corrupt)?;
            Checked::Task(key, head.active_deadline())
        }
        Entry::Credential(key) => table::check::<CredentialState>(v).map(|_| Checked::Credential(key)).map_err(corrupt)?,
        Entry::Threats => Checked::Threats(table::open(v).map_err(corrupt)?),
        Entry::Clock => Checked::Clock(table::open(v).map_err(corrupt)?),
    })
}

/// Checks every entry, on every core: checksums over hundreds of
/// megabytes. The cores take blocks in turn and the blocks come back in
/// order; the first bad entry refuses them all.
fn check_all(entries: &[(Vec<u8>, Vec<u8>)]) -> Result<Vec<Checked>, RestoreError> {
    const BLOCK: usize = 8192;
    let check = |block: &[(Vec<u8>, Vec<u8>)]| block.iter().map(|(k, v)| check_one(k, v)).collect::<Result<Vec<_>, _>>();
    let blocks: Vec<&[(Vec<u8>, Vec<u8>)]> = entries.chunks(BLOCK).collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8).min(blocks.len());
    if threads <= 1 {
        return Ok(blocks.into_iter().map(check).collect::<Result<Vec<_>, _>>()?.into_iter().flatten().collect());
    }
    let next = AtomicUsize::new(0);
    let mut done: Vec<(usize, Result<Vec<Checked>, RestoreError>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let at = next.fetch_add(1, Ordering::Relaxed);
                        let Some(block) = blocks.get(at) else { break done };
                        done.push((at, check(block)));
                    }
                })
            })
            .collect();
        workers.into_iter().flat_map(|worker| worker.join().unwrap_or_default()).collect()
    });
    if done.len() != blocks.len() {
        return Err(RestoreError::Corrupt { key: String::new(), reason: "a checking thread panicked".into() });
    }
    done.sort_unstable_by_key(|(at, _)| *at);
    let mut checked = Vec::with_capacity(entries.len());
    for (_, block) in done {
        checked.extend(block?);
    }
    Ok(checked)
}

/// `asked_approval`: the decision sent a step-up to a human (a repeat while
/// one is pending does not count again).
fn fold_agent(agent: &mut AgentState, event: &ActivityEvent, depth: u32, decision: &Decision, asked_approval: bool, capacity: usize) {
    let now = event.time;
    agent.last_seen = agent.last_seen.max(now);
    if agent.workload_id != event.workload_id {
        agent.workload_id = event.workload_id.clone();
    }
    let tally = Tally {
        actions: 1,
        step_ups: u32::from(asked_approval),
        denials: u32::from(decision.decision >= Verdict::Deny),
        bytes: event.bytes,
        egress: if event.kind == EventKind::NetworkEgress { event.bytes } else { 0 },
    };
    agent.windows.get_or_insert_with(|| Box::new(Windows::default())).add(now, &tally);
    if let Some(target) = &event.target {
        agent.targets.insert(target, capacity);
        if event.kind == EventKind::NetworkEgress {
            agent.destinations.insert(target, capacity);
        }
    }
    if let Some(tool) = &event.tool {
        agent.tools.insert(tool, capacity);
    }
    let call = call_signature(event);
    agent.repeats = if call == agent.last_call { agent.repeats.saturating_add(1) } else { 1 };
    agent.last_call = call;
    if let (Some(class), Some(target)) = (event.data_class, &event.target) {
        let reads = matches!(event.kind, EventKind::DataAccess | EventKind::ToolCall)
            && event.operation.as_deref().is_none_or(|op| op == "read");
        if reads && class.is_sensitive() {
            agent.last_sensitive_read = Some(SensitiveRead { time: now, target: target.clone(), data_class: class });
        }
    }
    agent.chain.push_back((name_hash(&event.event_id), depth));
    if agent.chain.len() > CHAIN_MEMORY {
        agent.chain.pop_front();
    }
    let counts = &mut agent.decisions;
    match decision.decision {
        Verdict::Allow => counts.allow += 1,
        Verdict::StepUp => counts.step_up += 1,
        Verdict::Deny => counts.deny += 1,
        Verdict::Revoke => counts.revoke += 1,
    }
}

/// What makes two calls "the same call" for repeat detection.
pub fn call_signature(event: &ActivityEvent) -> u64 {
    let parts = [Some(event.kind.as_str()), event.tool.as_deref(), event.target.as_deref(), event.operation.as_deref()]
        .map(|part| part.unwrap_or(""));
    crate::digest::xxh3_64_terminated(&parts, 0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_are_the_streaming_digest() {
        let long = "x".repeat(300);
        for (tenant, id) in [("acme", "agent-1"), ("", ""), ("acme", long.as_str())] {
            let mut hasher = xxhash_rust::xxh3::Xxh3::new();
            hasher.update(tenant.as_bytes());
            hasher.update(&[0]);
            hasher.update(id.as_bytes());
            assert_eq!(super::key(tenant, id), hasher.digest128());
        }
    }

    /// Stored in snapshots as an agent's last call, so its value must not
    /// change between versions.
    #[test]
    fn call_signatures_are_the_streaming_digest() {
        let line = r#"{"event_id":"e1","time":"2026-11-28T10:00:00Z","agent_id":"a1","workload_id":"spiffe://acme.org/a1",
            "kind":"tool_call","tool":"sql.query","target":"crm/customers"}"#;
        let Ok(crate::event::Input::Activity(event)) = crate::decode::decode_json(line.as_bytes()) else {
            unreachable!("a valid event")
        };
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        for part in ["tool_call", "sql.query", "crm/customers", ""] {
            hasher.update(part.as_bytes());
            hasher.update(&[0]);
        }
        assert_eq!(super::call_signature(&event), hasher.digest());
    }

    /// A state that keeps no change set folds and decides exactly as one
    /// that does; it only has no changed entries to give.
    #[test]
    fn a_state_without_changes_decides_the_same_and_gives_none() {
        use crate::pipeline::{Outputs, Pipeline};
        use crate::rules::{RuleHost, RulesetSource};
        use crate::source::Record;
        let compile = || match RulesetSource::shipped().map(RuleHost::compile) {
            Ok(Ok(host)) => host,
            _ => unreachable!("the shipped rules compile"),
        };
        let mut tracked = Pipeline::new(compile(), super::StateConfig::default());
        let mut untracked = Pipeline::new(compile(), super::StateConfig::default()).without_changes();
        let (mut a, mut b) = (Outputs::default(), Outputs::default());
        for line in crate::workload::generate(&crate::workload::WorkloadSpec::default()) {
            let record = Record { payload: line.into_bytes(), ..Record::default() };
            a.clear();
            b.clear();
            tracked.process(&record, &mut a);
            untracked.process(&record, &mut b);
            assert_eq!(a.decisions, b.decisions);
            assert_eq!(a.commands, b.commands);
        }
        // Every agent, task and credential, and the clock; then the clock alone.
        assert!(tracked.state.take_changes(&[0]).len() > 100);
        assert_eq!(untracked.state.take_changes(&[0]).len(), 1);
    }
}
