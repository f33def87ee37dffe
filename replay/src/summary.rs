//! `summary.json` and the terminal summary, from the merged tally.
//!
//! Everything here is ordered explicitly (counts, then names), so the file is
//! byte-identical for the same input and rulesets.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use sha2::{Digest, Sha256};
use vigil::event::Timestamp;
use vigil::verdict::{CommandKind, Verdict};

use crate::tally::{ChangedDecision, RuleChange, Tally, VerdictCounts};

/// How many agents, tools and tenants the summary lists.
pub const TOP: usize = 20;

#[derive(Debug, Clone, Serialize)]
pub struct InputSummary {
    /// SHA-256 of the (decompressed) input bytes.
    pub sha256: String,
    pub records: u64,
    pub events: u64,
    pub signals: u64,
    pub dead_letters: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SideSummary {
    /// `rules` (a ruleset run in the same pass) or `recorded` (decisions from a file).
    pub kind: &'static str,
    /// The ruleset version(s) the decisions came from.
    pub rulesets: Vec<String>,
    /// SHA-256 of the recorded decisions file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    pub decisions: BTreeMap<Verdict, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TransitionRow {
    pub transition: String,
    pub before: Verdict,
    pub after: Verdict,
    pub count: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RuleRow {
    pub rule: String,
    #[serde(flatten)]
    pub change: RuleChange,
}

#[derive(Debug, Clone, Serialize)]
pub struct CountRow {
    pub name: String,
    pub changed: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CommandRow {
    pub command: CommandKind,
    pub tenant: String,
    pub agent_id: String,
    pub credential_ids: Vec<String>,
    pub count: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CommandChanges {
    /// Commands the candidate issues and the baseline does not.
    pub appeared: Vec<CommandRow>,
    /// Commands the baseline issues and the candidate does not.
    pub disappeared: Vec<CommandRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Timeline {
    /// Event time of the first bucket.
    pub start: String,
    pub bucket_s: i64,
    /// Verdict counts per bucket, in `allow, step_up, deny, revoke` order.
    pub baseline: Vec<VerdictCounts>,
    pub candidate: Vec<VerdictCounts>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// SHA-256 of the input digest, both sides' versions and the checkpoint's
    /// digest: the identity of this replay.
    pub run_hash: String,
    pub input: InputSummary,
    /// The checkpoint both sides started from, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<CheckpointFacts>,
    pub candidate: SideSummary,
    pub baseline: SideSummary,
    /// Events with a decision on both sides.
    pub compared: u64,
    /// Of those, the ones whose verdict changed (the lines of `diff.jsonl`).
    pub changed: u64,
    /// Same verdict, but a different set of rules fired.
    pub reasons_changed: u64,
    /// Candidate decisions with no recorded decision for their event.
    pub only_candidate: u64,
    /// Recorded decisions whose event is not in the input.
    pub only_baseline: u64,
    /// Recorded lines that are not decisions.
    pub baseline_unreadable: u64,
    pub transitions: Vec<TransitionRow>,
    /// `matrix[before][after]`, unchanged decisions on the diagonal.
    pub matrix: BTreeMap<Verdict, BTreeMap<Verdict, u64>>,
    pub rules: Vec<RuleRow>,
    pub top_agents: Vec<CountRow>,
    pub top_tools: Vec<CountRow>,
    pub top_tenants: Vec<CountRow>,
    /// `None` when the baseline is recorded decisions, which carry no commands.
    pub commands: Option<CommandChanges>,
    pub examples: BTreeMap<String, Vec<ChangedDecision>>,
    pub timeline: Timeline,
}

/// What the summary needs besides the tally.
#[derive(Debug, Clone)]
pub struct RunFacts {
    pub input_sha256: String,
    pub candidate_version: String,
    pub baseline: BaselineFacts,
    pub checkpoint: Option<CheckpointFacts>,
}

/// The checkpoint a replay started from.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointFacts {
    pub sha256: String,
    /// Each activity partition's next input offset when it was written.
    pub positions: BTreeMap<i32, i64>,
}

#[derive(Debug, Clone)]
pub enum BaselineFacts {
    Rules { version: String },
    Recorded { sha256: String },
}

fn by_verdict(counts: VerdictCounts) -> BTreeMap<Verdict, u64> {
    Verdict::ALL.into_iter().zip(counts).collect()
}

fn transition_name(before: Verdict, after: Verdict) -> String {
    format!("{before}→{after}")
}

fn top<K>(map: &BTreeMap<K, u64>, name: impl Fn(&K) -> String) -> Vec<CountRow> {
    let mut rows: Vec<CountRow> = map.iter().map(|(k, n)| CountRow { name: name(k), changed: *n }).collect();
    rows.sort_by(|a, b| b.changed.cmp(&a.changed).then_with(|| a.name.cmp(&b.name)));
    rows.truncate(TOP);
    rows
}

/// Buckets of a width that gives at most 96 bars, from minute counts.
fn timeline(tally: &Tally) -> Timeline {
    let (Some(first), Some(last)) = (tally.timeline.keys().next(), tally.timeline.keys().next_back()) else {
        return Timeline { start: String::new(), bucket_s: 60, baseline: Vec::new(), candidate: Vec::new() };
    };
    let span = last - first + 1;
    let widths = [1, 5, 10, 15, 30, 60, 180, 360, 720, 1440, 10080, 43200];
    let width = widths.into_iter().find(|w| span / w < 96).unwrap_or(525_600);
    let start = first.div_euclid(width) * width;
    let buckets = ((last - start) / width + 1) as usize;
    let (mut baseline, mut candidate) = (vec![[0; 4]; buckets], vec![[0; 4]; buckets]);
    for (minute, sides) in &tally.timeline {
        let i = ((minute - start) / width) as usize;
        for v in 0..4 {
            baseline[i][v] += sides[0][v];
            candidate[i][v] += sides[1][v];
        }
    }
    Timeline { start: Timestamp(start * 60_000).to_rfc3339(), bucket_s: width * 60, baseline, candidate }
}

fn command_rows(tally: &Tally, sign: i64) -> Vec<CommandRow> {
    let mut rows: Vec<CommandRow> = tally
        .commands
        .iter()
        .filter(|(_, n)| n.signum() == sign)
        .map(|(k, n)| CommandRow {
            command: k.command,
            tenant: k.tenant.clone(),
            agent_id: k.agent_id.clone(),
            credential_ids: k.credential_ids.clone(),
            count: n.unsigned_abs(),
        })
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.count));
    rows
}

pub fn build(tally: &Tally, facts: &RunFacts) -> Summary {
    let (baseline_id, baseline) = match &facts.baseline {
        BaselineFacts::Rules { version } => (
            version.clone(),
            SideSummary {
                kind: "rules",
                rulesets: vec![version.clone()],
                sha256: None,
                decisions: by_verdict(tally.baseline_counts()),
            },
        ),
        BaselineFacts::Recorded { sha256 } => (
            sha256.clone(),
            SideSummary {
                kind: "recorded",
                rulesets: tally.baseline_versions.iter().cloned().collect(),
                sha256: Some(sha256.clone()),
                decisions: by_verdict(tally.baseline_counts()),
            },
        ),
    };
    let mut hasher = Sha256::new();
    for part in [&facts.input_sha256, &facts.candidate_version, &baseline_id] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    // Absent, it leaves the hash of a replay from an empty state as it was.
    if let Some(checkpoint) = &facts.checkpoint {
        hasher.update(checkpoint.sha256.as_bytes());
        hasher.update([0]);
    }
    let mut transitions = Vec::new();
    let mut matrix = BTreeMap::new();
    for (i, before) in Verdict::ALL.into_iter().enumerate() {
        let row: &mut BTreeMap<Verdict, u64> = matrix.entry(before).or_default();
        for (j, after) in Verdict::ALL.into_iter().enumerate() {
            let count = tally.matrix[i][j];
            row.insert(after, count);
            if i != j && count > 0 {
                transitions.push(TransitionRow { transition: transition_name(before, after), before, after, count });
            }
        }
    }
    transitions.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| (a.before, a.after).cmp(&(b.before, b.after))));
    let mut rules: Vec<RuleRow> = tally.rules.iter().map(|(rule, c)| RuleRow { rule: rule.clone(), change: *c }).collect();
    rules.sort_by(|a, b| {
        (b.change.changed_decisions, b.change.added + b.change.removed)
            .cmp(&(a.change.changed_decisions, a.change.added + a.change.removed))
            .then_with(|| a.rule.cmp(&b.rule))
    });
    let commands = match facts.baseline {
        BaselineFacts::Rules { .. } => {
            Some(CommandChanges { appeared: command_rows(tally, 1), disappeared: command_rows(tally, -1) })
        }
        BaselineFacts::Recorded { .. } => None,
    };
    Summary {
        run_hash: format!("sha256:{}", hex::encode(hasher.finalize())),
        input: InputSummary {
            sha256: facts.input_sha256.clone(),
            records: tally.records,
            events: tally.events,
            signals: tally.signals,
            dead_letters: tally.dead_letters.clone(),
        },
        checkpoint: facts.checkpoint.clone(),
        candidate: SideSummary {
            kind: "rules",
            rulesets: vec![facts.candidate_version.clone()],
            sha256: None,
            decisions: by_verdict(tally.candidate_counts()),
        },
        baseline,
        compared: tally.matrix.iter().flatten().sum(),
        changed: tally.changed(),
        reasons_changed: tally.reasons_changed,
        only_candidate: tally.only_candidate.iter().sum(),
        only_baseline: tally.only_baseline.iter().sum(),
        baseline_unreadable: tally.baseline_unreadable,
        transitions,
        matrix,
        rules,
        top_agents: top(&tally.by_agent, |(tenant, agent)| format!("{tenant}/{agent}")),
        top_tools: top(&tally.by_tool, Clone::clone),
        top_tenants: top(&tally.by_tenant, Clone::clone),
        commands,
        examples: tally
            .examples
            .iter()
            .map(|((b, a), examples)| (transition_name(*b, *a), examples.clone()))
            .collect(),
        timeline: timeline(tally),
    }
}

/// The few lines printed when a replay ends.
pub fn terminal(summary: &Summary) -> String {
    let mut text = String::new();
    let i = &summary.input;
    let _ = writeln!(
        text,
        "replayed {} records ({} events, {} signals, {} dead letters)",
        i.records,
        i.events,
        i.signals,
        i.dead_letters.values().sum::<u64>()
    );
    if let Some(c) = &summary.checkpoint {
        let at: Vec<String> = c.positions.iter().map(|(p, o)| format!("{p}@{o}")).collect();
        let _ = writeln!(text, "  from checkpoint sha256:{} (input partition@offset: {})", c.sha256, at.join(" "));
    }
    let side = |s: &SideSummary| {
        Verdict::ALL
            .iter()
            .map(|v| format!("{} {}", v, s.decisions.get(v).copied().unwrap_or(0)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(text, "  baseline  {:<26} {}", summary.baseline.rulesets.join(","), side(&summary.baseline));
    let _ = writeln!(text, "  candidate {:<26} {}", summary.candidate.rulesets.join(","), side(&summary.candidate));
    let share = if summary.compared == 0 { 0.0 } else { summary.changed as f64 * 100.0 / summary.compared as f64 };
    let _ = writeln!(text, "{} of {} decisions changed ({share:.2}%)", summary.changed, summary.compared);
    for t in summary.transitions.iter().take(6) {
        let _ = writeln!(text, "  {:<18} {:>8}", t.transition, t.count);
    }
    for r in summary.rules.iter().filter(|r| r.change.changed_decisions > 0).take(5) {
        let _ = writeln!(
            text,
            "  rule {:<28} +{} -{} ({} verdicts changed)",
            r.rule, r.change.added, r.change.removed, r.change.changed_decisions
        );
    }
    if let Some(c) = &summary.commands {
        let n = |rows: &[CommandRow]| rows.iter().map(|r| r.count).sum::<u64>();
        let _ = writeln!(text, "commands: {} appear, {} disappear", n(&c.appeared), n(&c.disappeared));
    }
    if summary.only_candidate + summary.only_baseline + summary.baseline_unreadable > 0 {
        let _ = writeln!(
            text,
            "unmatched: {} events without a recorded decision, {} recorded decisions without an event, {} unreadable",
            summary.only_candidate, summary.only_baseline, summary.baseline_unreadable
        );
    }
    let _ = writeln!(text, "run hash {}", summary.run_hash);
    text
}
