//! Comparing what the baseline and the candidate said about one record.

use std::collections::BTreeSet;

use vigil::event::Timestamp;
use vigil::verdict::{ControlCommand, Decision, Verdict};

use crate::tally::{verdict_index, ChangedDecision, CommandKey, Tally, EXAMPLES_PER_TRANSITION};

/// Which side of the comparison a decision or command came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Baseline = 0,
    Candidate = 1,
}

fn minute_of(time: &str) -> Option<i64> {
    Timestamp::parse_rfc3339(time).map(|t| t.millis().div_euclid(60_000))
}

/// Counts a decision, by its time and verdict, in the timeline of its side.
pub fn count_in_timeline(tally: &mut Tally, side: Side, time: &str, verdict: Verdict) {
    if let Some(minute) = minute_of(time) {
        tally.timeline.entry(minute).or_default()[side as usize][verdict_index(verdict)] += 1;
    }
}

/// Counts a pair that agrees in verdict and in the rules behind it, in
/// order: the common case, which needs no more of the baseline than that.
/// False when the pair needs `decisions`.
pub fn agree<'r>(
    tally: &mut Tally,
    before: Verdict,
    before_rules: impl IntoIterator<Item = &'r str>,
    after: &Decision,
) -> bool {
    let mut rules = before_rules.into_iter();
    let same = before == after.decision
        && after.reasons.iter().all(|r| rules.next() == Some(r.rule.as_str()))
        && rules.next().is_none();
    if same {
        let i = verdict_index(before);
        tally.matrix[i][i] += 1;
    }
    same
}

fn rule_set(d: &Decision) -> BTreeSet<&str> {
    d.reasons.iter().map(|r| r.rule.as_str()).collect()
}

/// Compares two decisions on the same event; returns the diff line when the
/// verdict changed. `tool` is the event's, which a decision does not carry.
pub fn decisions(
    tally: &mut Tally,
    line: i64,
    tool: Option<&str>,
    before: &Decision,
    after: &Decision,
) -> Option<ChangedDecision> {
    if agree(tally, before.decision, before.reasons.iter().map(|r| r.rule.as_str()), after) {
        return None;
    }
    let (b, a) = (verdict_index(before.decision), verdict_index(after.decision));
    tally.matrix[b][a] += 1;
    let changed = b != a;
    let (rules_before, rules_after) = (rule_set(before), rule_set(after));
    let added: Vec<String> = rules_after.difference(&rules_before).map(|r| (*r).to_owned()).collect();
    let removed: Vec<String> = rules_before.difference(&rules_after).map(|r| (*r).to_owned()).collect();
    if !changed && added.is_empty() && removed.is_empty() {
        return None;
    }
    for rule in &added {
        let e = tally.rules.entry(rule.clone()).or_default();
        e.added += 1;
        e.changed_decisions += u64::from(changed);
    }
    for rule in &removed {
        let e = tally.rules.entry(rule.clone()).or_default();
        e.removed += 1;
        e.changed_decisions += u64::from(changed);
    }
    if !changed {
        tally.reasons_changed += 1;
        return None;
    }
    let tool = tool.map(str::to_owned);
    *tally.by_agent.entry((after.tenant.clone(), after.agent_id.clone())).or_default() += 1;
    *tally.by_tenant.entry(after.tenant.clone()).or_default() += 1;
    *tally.by_tool.entry(tool.clone().unwrap_or_else(|| "(none)".to_owned())).or_default() += 1;
    let diff = ChangedDecision {
        line,
        event_id: after.event_id.clone(),
        time: after.time.clone(),
        tenant: after.tenant.clone(),
        agent_id: after.agent_id.clone(),
        tool,
        before: before.decision,
        after: after.decision,
        score_before: before.score,
        score_after: after.score,
        rules_added: added,
        rules_removed: removed,
        reasons_before: before.reasons.clone(),
        reasons_after: after.reasons.clone(),
    };
    let examples = tally.examples.entry((before.decision, after.decision)).or_default();
    if examples.len() < EXAMPLES_PER_TRANSITION {
        examples.push(diff.clone());
    }
    Some(diff)
}

fn command_key(c: &ControlCommand) -> CommandKey {
    let mut credential_ids = c.credential_ids.clone();
    credential_ids.sort();
    CommandKey { command: c.command, tenant: c.tenant.clone(), agent_id: c.agent_id.clone(), credential_ids }
}

/// Adds the commands one record caused on each side; only a net difference
/// is kept, so the common case (both sides agree) costs no memory.
pub fn commands(tally: &mut Tally, before: &[ControlCommand], after: &[ControlCommand]) {
    if before.is_empty() && after.is_empty() {
        return;
    }
    let mut net: Vec<(CommandKey, i64)> = Vec::with_capacity(before.len() + after.len());
    for (list, delta) in [(before, -1), (after, 1)] {
        for c in list {
            let key = command_key(c);
            match net.iter_mut().find(|(k, _)| *k == key) {
                Some((_, n)) => *n += delta,
                None => net.push((key, delta)),
            }
        }
    }
    for (key, delta) in net {
        if delta != 0 {
            tally.add_command(key, delta);
        }
    }
}
