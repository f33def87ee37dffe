//! One replay worker: its own pipelines (a `Pipeline` holds `Rc` state and a
//! Rhai engine, so it is built on the thread that uses it), fed batches of
//! records over a bounded channel.
//!
//! Each record is decoded once with the engine's decoders: here, for a JSON
//! activity event the reader could route by its ids alone (nearly all of
//! them), so that the event is built, read and freed on one thread; on the
//! reader for anything else. It then goes through `Pipeline::step` once per
//! ruleset, which is what `Pipeline::process` does after decoding, so the
//! decisions are the live engine's. A record that did not decode is a dead
//! letter, as it would be in a live run.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::ops::Range;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use vigil::checkpoint::{CheckpointError, Snapshot};
use vigil::decode::{self, DecodeError};
use vigil::event::Input;
use vigil::pipeline::{Outputs, Pipeline};
use vigil::rules::{RuleHost, RulesetSource};
use vigil::state::StateConfig;
use vigil::verdict::{Decision, DecisionBrief};

use crate::compare::{self, Side};
use crate::tally::{verdict_index, Tally};
use crate::ReplayError;

/// Records on their way to one worker, with the bytes they carry.
#[derive(Debug, Default)]
pub struct Batch {
    pub jobs: Vec<Job>,
    /// The jobs' JSON events and recorded decisions, one after another: a
    /// batch is two allocations, not one or two per record.
    pub bytes: Vec<u8>,
}

impl Batch {
    pub fn with_capacity(jobs: usize, bytes: usize) -> Batch {
        Batch { jobs: Vec::with_capacity(jobs), bytes: Vec::with_capacity(bytes) }
    }

    /// Keeps `bytes` in the batch; where they are kept.
    pub fn keep(&mut self, bytes: &[u8]) -> Range<usize> {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(bytes);
        start..self.bytes.len()
    }
}

/// One input record, as the reader hands it over.
#[derive(Debug)]
pub enum Record {
    /// Decoded by the reader, which needed the whole record to route it.
    Decoded(Result<Input, DecodeError>),
    /// A JSON activity event routed by its ids alone, kept in the batch's
    /// bytes; the worker decodes it.
    Json(Range<usize>),
}

/// One input record on its way to a worker.
#[derive(Debug)]
pub struct Job {
    /// The record's position in the input (its line in a JSON Lines file):
    /// its position in every output.
    pub line: i64,
    pub record: Record,
    /// The recorded decision for this record's event, when comparing with
    /// one: where the batch keeps it.
    pub recorded: Option<Range<usize>>,
    /// Whether this worker counts the record (a signal sent to every worker
    /// is counted once).
    pub counted: bool,
}

#[derive(Debug)]
pub struct WorkerSpec {
    pub candidate: RulesetSource,
    /// `None` when the baseline is recorded decisions.
    pub baseline: Option<RulesetSource>,
    pub state: StateConfig,
    /// The checkpoint both pipelines start from: every partition's entries,
    /// since any agent may be routed here.
    pub snapshot: Option<Arc<Snapshot>>,
    /// Where this worker writes its changed decisions, in input order.
    pub diff_part: PathBuf,
}

fn write_error(path: &std::path::Path) -> impl Fn(std::io::Error) -> ReplayError + '_ {
    move |error| ReplayError::Write { path: path.display().to_string(), error }
}

/// The baseline's side of one record, as far as the comparison needs it.
enum Before<'a> {
    /// No baseline decision: a signal, a dead letter, none recorded, or an
    /// unreadable one.
    Missing,
    /// A recorded decision that, read in brief, agrees with the candidate's:
    /// already counted.
    Agrees,
    Whole(&'a Decision),
}

/// Counts a recorded decision and reads it whole only when it differs from
/// the candidate's: most agree, and for those the brief read (verdict, time,
/// rule ids, borrowed from the line) is all a comparison needs. A decision
/// read whole is kept in `whole`.
fn recorded<'a>(
    tally: &mut Tally,
    bytes: &[u8],
    after: Option<&Decision>,
    whole: &'a mut Option<Decision>,
) -> Before<'a> {
    let Ok(brief) = DecisionBrief::read(bytes) else {
        tally.baseline_unreadable += 1;
        return Before::Missing;
    };
    if !tally.baseline_versions.contains(&*brief.ruleset) {
        tally.baseline_versions.insert(brief.ruleset.clone().into_owned());
    }
    compare::count_in_timeline(tally, Side::Baseline, &brief.time, brief.decision);
    let rules = brief.reasons.iter().map(|r| &*r.rule);
    if after.is_some_and(|a| compare::agree(tally, brief.decision, rules, a)) {
        return Before::Agrees;
    }
    match serde_json::from_slice::<Decision>(bytes) {
        Ok(decision) => Before::Whole(whole.insert(decision)),
        Err(_) => {
            tally.baseline_unreadable += 1;
            Before::Missing
        }
    }
}

/// Runs until the channel closes; returns what it counted.
pub fn run(spec: WorkerSpec, batches: Receiver<Batch>) -> Result<Tally, ReplayError> {
    // A replay compares decisions and commands; it never reads alerts, and
    // its state is never checkpointed. The rules both rulesets have share
    // their memos: the same events walk the same trees.
    let mut rules = RuleHost::compile(spec.candidate)?;
    let baseline_rules = spec.baseline.map(RuleHost::compile).transpose()?;
    if let Some(baseline) = &baseline_rules {
        rules.share_memos(baseline);
    }
    let mut candidate = Pipeline::new(rules, spec.state.clone()).without_alerts().without_changes();
    let mut baseline =
        baseline_rules.map(|rules| Pipeline::new(rules, spec.state).without_alerts().without_changes());
    if let Some(snapshot) = &spec.snapshot {
        for pipeline in std::iter::once(&mut candidate).chain(baseline.as_mut()) {
            for (partition, entries) in &snapshot.partitions {
                pipeline.state.absorb(*partition, entries.clone()).map_err(CheckpointError::from)?;
            }
        }
    }
    let file = File::create(&spec.diff_part).map_err(write_error(&spec.diff_part))?;
    let mut diff = BufWriter::with_capacity(1 << 16, file);
    let mut tally = Tally::default();
    let (mut after, mut before) = (Outputs::default(), Outputs::default());
    for Batch { jobs, bytes } in batches {
        for job in jobs {
            after.clear();
            before.clear();
            if job.counted {
                tally.records += 1;
            }
            let mut tool = None;
            let input = match job.record {
                Record::Decoded(input) => input,
                // As the reader decodes a file record: JSON, no Avro schemas.
                Record::Json(at) => decode::decode(&bytes[at], None),
            };
            match input {
                Ok(input) => {
                    if let Input::Activity(event) = &input {
                        tool.clone_from(&event.tool);
                    }
                    if job.counted {
                        let is_event = matches!(input, Input::Activity(_));
                        tally.events += u64::from(is_event);
                        tally.signals += u64::from(!is_event);
                    }
                    match (baseline.as_mut(), input) {
                        // Both rulesets decide the one decoded event.
                        (Some(pipeline), Input::Activity(event)) => {
                            let event = Rc::from(event);
                            candidate.step_event(Rc::clone(&event), &mut after);
                            pipeline.step_event(event, &mut before);
                        }
                        (Some(pipeline), input) => {
                            candidate.step(input.clone(), &mut after);
                            pipeline.step(input, &mut before);
                        }
                        (None, input) => candidate.step(input, &mut after),
                    }
                }
                Err(error) if job.counted => {
                    *tally.dead_letters.entry(error.label().to_owned()).or_default() += 1;
                }
                Err(_) => {}
            }
            let after_decision = after.decisions.first();
            if let Some(a) = after_decision {
                compare::count_in_timeline(&mut tally, Side::Candidate, &a.time, a.decision);
            }
            let mut recorded_whole = None;
            let before_side = match baseline.as_ref() {
                Some(_) => {
                    compare::commands(&mut tally, &before.commands, &after.commands);
                    match before.decisions.first() {
                        Some(b) => {
                            compare::count_in_timeline(&mut tally, Side::Baseline, &b.time, b.decision);
                            Before::Whole(b)
                        }
                        None => Before::Missing,
                    }
                }
                None => match job.recorded {
                    Some(at) => recorded(&mut tally, &bytes[at], after_decision, &mut recorded_whole),
                    None => Before::Missing,
                },
            };
            match (before_side, after_decision) {
                (Before::Whole(b), Some(a)) => {
                    if let Some(changed) = compare::decisions(&mut tally, job.line, tool.as_deref(), b, a) {
                        write!(diff, "{}\t", job.line).map_err(write_error(&spec.diff_part))?;
                        serde_json::to_writer(&mut diff, &changed)
                            .map_err(|e| ReplayError::Encode(e.to_string()))?;
                        diff.write_all(b"\n").map_err(write_error(&spec.diff_part))?;
                    }
                }
                (Before::Whole(b), None) => tally.only_baseline[verdict_index(b.decision)] += 1,
                (Before::Missing, Some(a)) => tally.only_candidate[verdict_index(a.decision)] += 1,
                (Before::Missing, None) | (Before::Agrees, _) => {}
            }
        }
    }
    diff.flush().map_err(write_error(&spec.diff_part))?;
    Ok(tally)
}
