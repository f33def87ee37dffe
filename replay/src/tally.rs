//! What a replay counts. Each worker keeps its own [`Tally`]; the tallies of
//! all workers are merged at the end. Every field merges by addition (or by
//! keeping the earliest input positions), so the merged tally does not depend
//! on how the records were spread over the workers.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use vigil::verdict::{CommandKind, Reason, Verdict};

/// Examples kept per transition, the earliest in the input.
pub const EXAMPLES_PER_TRANSITION: usize = 5;

/// The index of a verdict in [`Verdict::ALL`].
pub fn verdict_index(v: Verdict) -> usize {
    match v {
        Verdict::Allow => 0,
        Verdict::StepUp => 1,
        Verdict::Deny => 2,
        Verdict::Revoke => 3,
    }
}

/// Counts per verdict, in [`Verdict::ALL`] order.
pub type VerdictCounts = [u64; 4];

/// How one rule's findings moved between the baseline and the candidate.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RuleChange {
    /// Decisions where the rule fires under the candidate only.
    pub added: u64,
    /// Decisions where the rule fires under the baseline only.
    pub removed: u64,
    /// Of those, the decisions whose verdict changed.
    pub changed_decisions: u64,
}

/// A control command compared by what it does, not by its id or time.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct CommandKey {
    pub command: CommandKind,
    pub tenant: String,
    pub agent_id: String,
    pub credential_ids: Vec<String>,
}

/// One decision whose verdict changed: a line of `diff.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChangedDecision {
    /// The record's line in the input.
    pub line: i64,
    pub event_id: String,
    pub time: String,
    pub tenant: String,
    pub agent_id: String,
    pub tool: Option<String>,
    pub before: Verdict,
    pub after: Verdict,
    pub score_before: u32,
    pub score_after: u32,
    pub rules_added: Vec<String>,
    pub rules_removed: Vec<String>,
    pub reasons_before: Vec<Reason>,
    pub reasons_after: Vec<Reason>,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Tally {
    pub records: u64,
    pub events: u64,
    pub signals: u64,
    pub dead_letters: BTreeMap<String, u64>,
    /// `matrix[before][after]`, for decisions present on both sides.
    pub matrix: [[u64; 4]; 4],
    /// Candidate decisions with no recorded decision for their event.
    pub only_candidate: VerdictCounts,
    /// Recorded decisions with no event in the input.
    pub only_baseline: VerdictCounts,
    /// Recorded lines that are not decisions.
    pub baseline_unreadable: u64,
    /// The `ruleset` field of the recorded decisions.
    pub baseline_versions: BTreeSet<String>,
    /// Same verdict, but a different set of rules fired.
    pub reasons_changed: u64,
    pub rules: BTreeMap<String, RuleChange>,
    pub by_agent: BTreeMap<(String, String), u64>,
    pub by_tool: BTreeMap<String, u64>,
    pub by_tenant: BTreeMap<String, u64>,
    /// Candidate count minus baseline count, kept only where it is not zero.
    pub commands: BTreeMap<CommandKey, i64>,
    pub examples: BTreeMap<(Verdict, Verdict), Vec<ChangedDecision>>,
    /// Per minute of event time: verdict counts under the baseline and the candidate.
    pub timeline: BTreeMap<i64, [VerdictCounts; 2]>,
}

fn add_map<K: Ord + Clone>(into: &mut BTreeMap<K, u64>, from: BTreeMap<K, u64>) {
    for (k, n) in from {
        *into.entry(k).or_default() += n;
    }
}

impl Tally {
    pub fn baseline_counts(&self) -> VerdictCounts {
        let mut counts = self.only_baseline;
        for (before, row) in self.matrix.iter().enumerate() {
            counts[before] += row.iter().sum::<u64>();
        }
        counts
    }

    pub fn candidate_counts(&self) -> VerdictCounts {
        let mut counts = self.only_candidate;
        for row in &self.matrix {
            for (after, n) in row.iter().enumerate() {
                counts[after] += n;
            }
        }
        counts
    }

    pub fn changed(&self) -> u64 {
        let mut n = 0;
        for (i, row) in self.matrix.iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                if i != j {
                    n += v;
                }
            }
        }
        n
    }

    pub fn add_command(&mut self, key: CommandKey, delta: i64) {
        let entry = self.commands.entry(key);
        match entry {
            std::collections::btree_map::Entry::Occupied(mut e) => {
                *e.get_mut() += delta;
                if *e.get() == 0 {
                    e.remove();
                }
            }
            std::collections::btree_map::Entry::Vacant(e) => {
                if delta != 0 {
                    e.insert(delta);
                }
            }
        }
    }

    pub fn merge(&mut self, other: Tally) {
        self.records += other.records;
        self.events += other.events;
        self.signals += other.signals;
        add_map(&mut self.dead_letters, other.dead_letters);
        for i in 0..4 {
            for j in 0..4 {
                self.matrix[i][j] += other.matrix[i][j];
            }
            self.only_candidate[i] += other.only_candidate[i];
            self.only_baseline[i] += other.only_baseline[i];
        }
        self.baseline_unreadable += other.baseline_unreadable;
        self.baseline_versions.extend(other.baseline_versions);
        self.reasons_changed += other.reasons_changed;
        for (rule, c) in other.rules {
            let e = self.rules.entry(rule).or_default();
            e.added += c.added;
            e.removed += c.removed;
            e.changed_decisions += c.changed_decisions;
        }
        add_map(&mut self.by_agent, other.by_agent);
        add_map(&mut self.by_tool, other.by_tool);
        add_map(&mut self.by_tenant, other.by_tenant);
        for (key, delta) in other.commands {
            self.add_command(key, delta);
        }
        for (transition, mut examples) in other.examples {
            let mine = self.examples.entry(transition).or_default();
            mine.append(&mut examples);
            mine.sort_by_key(|e| e.line);
            mine.truncate(EXAMPLES_PER_TRANSITION);
        }
        for (minute, sides) in other.timeline {
            let mine = self.timeline.entry(minute).or_default();
            for side in 0..2 {
                for v in 0..4 {
                    mine[side][v] += sides[side][v];
                }
            }
        }
    }
}
