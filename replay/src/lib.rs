//! `vigil replay`: the analyst's backtest. Recorded activity goes through the
//! engine's own [`Pipeline`](vigil::pipeline::Pipeline) under a candidate
//! ruleset, and every decision is compared with a baseline: a second ruleset
//! in the same pass, or the decisions a live run recorded.
//!
//! The layout follows the data:
//!
//! - [`input`] streams JSON Lines (plain or gzip), Avro object container
//!   files or a Kafka topic range, decodes all but JSON lines, and hashes
//!   what it reads;
//! - [`route`] spreads records over workers by `(tenant, agent_id)`;
//! - [`worker`] decodes what the reader did not, runs the pipelines and
//!   compares, with [`compare`], into a [`tally`];
//! - [`baseline`] joins recorded decisions to the input;
//! - [`diff_file`], [`summary`] and [`report`] write `diff.jsonl`,
//!   `summary.json` and `report.html`.
//!
//! Outputs are ordered by input position and never by thread timing, so the
//! same input and rulesets give the same bytes whatever the worker count.

pub mod baseline;
pub mod compare;
pub mod diff_file;
pub mod input;
pub mod progress;
pub mod report;
pub mod route;
pub mod summary;
pub mod tally;
pub mod worker;

use std::borrow::Cow;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vigil::checkpoint::Snapshot;
use vigil::event::Input;
use vigil::rules::{RuleHost, RulesetError, RulesetSource};
use vigil::source::SourceError;
use vigil::state::StateConfig;

pub use baseline::Baseline;
pub use input::kafka::{Bound, KafkaRange};
use baseline::{Reach, RecordedJoin};
use progress::ProgressBar;
use input::{Item, ReplaySource};
use route::{RecordIds, Route, Router};
use summary::{BaselineFacts, CheckpointFacts, RunFacts, Summary};
use tally::Tally;
use worker::{Batch, Job, Record, WorkerSpec};

/// The output files, in `--out DIR`.
pub const SUMMARY_FILE: &str = "summary.json";
pub const DIFF_FILE: &str = "diff.jsonl";
pub const REPORT_FILE: &str = "report.html";

/// Records per message to a worker: large enough that the channel costs
/// little per record, small enough to keep the workers evenly fed.
const BATCH: usize = 256;
/// Batches waiting per worker: this bounds the memory of a replay.
const QUEUE: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot read `{path}`: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("cannot write `{path}`: {error}")]
    Write { path: String, error: std::io::Error },
    #[error("ruleset refused:\n{0}")]
    Ruleset(#[from] RulesetError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("{0}")]
    Input(String),
    #[error("cannot encode output: {0}")]
    Encode(String),
    #[error("replay worker {0} stopped unexpectedly")]
    Worker(usize),
    #[error(transparent)]
    Checkpoint(#[from] vigil::checkpoint::CheckpointError),
}

/// The recorded activity to replay.
#[derive(Debug, Clone)]
pub enum ReplayInput {
    /// JSON Lines of activity events and signals (plain or gzip), or an Avro
    /// object container file of them, told apart by the file's first bytes.
    File(PathBuf),
    /// A range of Kafka topics, merged by event time.
    Kafka(KafkaRange),
}

impl ReplayInput {
    /// How the input is named in the report.
    pub fn describe(&self) -> String {
        match self {
            ReplayInput::File(path) => path.display().to_string(),
            ReplayInput::Kafka(range) => format!("kafka {} on {}", range.topics.join(","), range.brokers),
        }
    }

    fn open(&self) -> Result<Box<dyn ReplaySource>, ReplayError> {
        match self {
            ReplayInput::File(path) => input::open_file(path),
            ReplayInput::Kafka(range) => Ok(Box::new(input::kafka::KafkaInput::open(range)?)),
        }
    }
}

/// One replay: what to read, what to compare, where to write.
#[derive(Debug, Clone)]
pub struct ReplayConfig {
    pub input: ReplayInput,
    pub candidate: RulesetSource,
    pub baseline: Baseline,
    pub out: PathBuf,
    /// Worker threads (at least one).
    pub workers: usize,
    pub state: StateConfig,
    /// Start both rulesets from a live engine's checkpoint store (a
    /// `[checkpoint] dir` or its store file) instead of an empty state; the
    /// input is then what came after it.
    pub checkpoint: Option<PathBuf>,
    /// Draw a progress bar when stderr is a terminal.
    pub progress: bool,
}

#[derive(Debug, Clone)]
pub struct ReplayOutcome {
    pub summary: Summary,
    pub elapsed: Duration,
}

struct Workers {
    senders: Vec<SyncSender<Batch>>,
    batches: Vec<Batch>,
    handles: Vec<JoinHandle<Result<Tally, ReplayError>>>,
    parts: Vec<PathBuf>,
}

impl Workers {
    fn spawn(
        config: &ReplayConfig,
        baseline_rules: Option<&RulesetSource>,
        snapshot: Option<&Arc<Snapshot>>,
    ) -> Result<Workers, ReplayError> {
        let n = config.workers.max(1);
        let mut workers = Workers { senders: Vec::new(), batches: Vec::new(), handles: Vec::new(), parts: Vec::new() };
        for i in 0..n {
            let (tx, rx) = sync_channel(QUEUE);
            let part = config.out.join(format!(".diff.part-{i}"));
            let spec = WorkerSpec {
                candidate: config.candidate.clone(),
                baseline: baseline_rules.cloned(),
                state: config.state.clone(),
                snapshot: snapshot.cloned(),
                diff_part: part.clone(),
            };
            let handle = std::thread::Builder::new()
                .name(format!("replay-{i}"))
                .spawn(move || worker::run(spec, rx))
                .map_err(|_| ReplayError::Worker(i))?;
            workers.senders.push(tx);
            workers.batches.push(Batch::with_capacity(BATCH, 0));
            workers.handles.push(handle);
            workers.parts.push(part);
        }
        Ok(workers)
    }

    /// The batch being filled for worker `i`.
    fn batch(&mut self, i: usize) -> &mut Batch {
        &mut self.batches[i]
    }

    /// Queues a job; `false` when the worker has stopped (its error is
    /// collected by [`Workers::join`]).
    fn push(&mut self, i: usize, job: Job) -> bool {
        let batch = &mut self.batches[i];
        batch.jobs.push(job);
        if batch.jobs.len() < BATCH {
            return true;
        }
        // The next batch has room for as many bytes as this one grew to.
        let next = Batch::with_capacity(BATCH, batch.bytes.capacity());
        let full = std::mem::replace(batch, next);
        self.senders[i].send(full).is_ok()
    }

    fn join(mut self) -> Result<(Tally, Vec<PathBuf>), ReplayError> {
        for (tx, batch) in self.senders.iter().zip(self.batches.iter_mut()) {
            if !batch.jobs.is_empty() {
                let _ = tx.send(std::mem::take(batch));
            }
        }
        self.senders.clear();
        let mut tally = Tally::default();
        for (i, handle) in self.handles.into_iter().enumerate() {
            let part = handle.join().map_err(|_| ReplayError::Worker(i))??;
            tally.merge(part);
        }
        Ok((tally, self.parts))
    }
}

/// Keeps the recorded decision for `event_id`, if there is one, in `batch`.
fn keep_recorded(
    join: &mut Option<RecordedJoin>,
    event_id: &str,
    reach: Reach,
    batch: &mut Batch,
) -> Result<Option<Range<usize>>, ReplayError> {
    let Some(join) = join else { return Ok(None) };
    let start = batch.bytes.len();
    Ok(join.take(event_id, reach, &mut batch.bytes)?.then_some(start..batch.bytes.len()))
}

/// Routes one record to its worker, with its recorded decision if there is
/// one; `false` when the worker has stopped. A JSON activity event that its
/// ids route goes as it is, to be decoded there; anything else is decoded
/// here.
fn hand_over(
    item: Item<'_>,
    router: &mut Router,
    join: &mut Option<RecordedJoin>,
    workers: &mut Workers,
) -> Result<bool, ReplayError> {
    let line = item.position;
    let key = match &item.decoded {
        None => vigil::decode::activity_key(item.payload),
        Some(_) => None,
    };
    if let Some((key, i)) = key.and_then(|key| Some((key, router.route_key(&key)?))) {
        let batch = workers.batch(i);
        let record = Record::Json(batch.keep(item.payload));
        let recorded = keep_recorded(join, key.event_id, Reach::Window, batch)?;
        return Ok(workers.push(i, Job { line, record, recorded, counted: true }));
    }
    // As `Pipeline::process` decodes a file record: JSON, no Avro schemas.
    let decoded = match item.decoded {
        Some(decoded) => decoded,
        None => vigil::decode::decode(item.payload, None),
    };
    let event_id = match &decoded {
        Ok(Input::Activity(event)) => Some((Cow::Borrowed(event.event_id.as_str()), Reach::Window)),
        Ok(Input::Signal(_)) => None,
        // A live run sends it to the DLQ, but a recorded decision for it
        // (from another engine version) still meets its record.
        Err(_) => match RecordIds::parse(item.payload) {
            Some(RecordIds { event_id: Some(id), signal_id: None }) => Some((id, Reach::Next)),
            _ => None,
        },
    };
    match router.route(&decoded) {
        Route::One(i) => {
            let recorded = match &event_id {
                Some((id, reach)) => keep_recorded(join, id, *reach, workers.batch(i))?,
                None => None,
            };
            Ok(workers.push(i, Job { line, record: Record::Decoded(decoded), recorded, counted: true }))
        }
        Route::Every => {
            for i in 0..workers.senders.len() {
                let job = Job { line, record: Record::Decoded(decoded.clone()), recorded: None, counted: i == 0 };
                if !workers.push(i, job) {
                    return Ok(false);
                }
            }
            Ok(true)
        }
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), ReplayError> {
    std::fs::write(path, bytes).map_err(|error| ReplayError::Write { path: path.display().to_string(), error })
}

/// Runs one replay and writes `summary.json`, `diff.jsonl` and `report.html`.
pub fn replay(config: &ReplayConfig) -> Result<ReplayOutcome, ReplayError> {
    let started = Instant::now();
    // Compile once here so a broken ruleset is refused before any work starts.
    let candidate_version = RuleHost::compile(config.candidate.clone())?.version().to_owned();
    let (baseline_rules, mut join) = match &config.baseline {
        Baseline::Rules(rules) => {
            RuleHost::compile(rules.clone())?;
            (Some(rules), None)
        }
        Baseline::Recorded(path) => (None, Some(RecordedJoin::open(path)?)),
        Baseline::Published(range) => (None, Some(RecordedJoin::open_topic(range)?)),
    };
    let snapshot = config.checkpoint.as_deref().map(vigil::checkpoint::snapshot).transpose()?.map(Arc::new);
    // From the earliest record, a topic range would fold again what the
    // checkpoint's state already holds.
    if let (Some(snapshot), ReplayInput::Kafka(KafkaRange { from: Bound::Edge, .. })) = (&snapshot, &config.input) {
        let at: Vec<String> = snapshot.positions.iter().map(|(p, o)| format!("partition {p} at {o}")).collect();
        return Err(ReplayError::Input(format!(
            "from a checkpoint, a topic range needs a start (--from-offset or --from-time): the checkpoint's input stood at {}",
            if at.is_empty() { "no recorded position".to_owned() } else { at.join(", ") }
        )));
    }
    std::fs::create_dir_all(&config.out)
        .map_err(|error| ReplayError::Write { path: config.out.display().to_string(), error })?;
    let mut input = config.input.open()?;
    let mut workers = Workers::spawn(config, baseline_rules, snapshot.as_ref())?;
    let mut router = Router::new(workers.senders.len());
    let mut bar = ProgressBar::new(config.progress);
    let mut n: u64 = 0;
    loop {
        if n.is_multiple_of(4096) {
            let (done, total) = input.progress();
            bar.update(done, total, n);
        }
        let Some(item) = input.next()? else { break };
        n += 1;
        if !hand_over(item, &mut router, &mut join, &mut workers)? {
            break;
        }
    }
    bar.finish();
    let (mut tally, parts) = workers.join()?;
    let baseline = match join {
        Some(join) => {
            let (sha256, unreadable, unmatched) = join.finish()?;
            tally.baseline_unreadable += unreadable;
            for (mine, theirs) in tally.only_baseline.iter_mut().zip(unmatched) {
                *mine += theirs;
            }
            BaselineFacts::Recorded { sha256 }
        }
        None => BaselineFacts::Rules {
            version: baseline_rules.map(|r| r.version.clone()).unwrap_or_default(),
        },
    };
    let checkpoint = snapshot.map(|s| CheckpointFacts { sha256: s.sha256.clone(), positions: s.positions.clone() });
    let facts = RunFacts { input_sha256: input.digest(), candidate_version, baseline, checkpoint };
    let summary = summary::build(&tally, &facts);
    let mut json = serde_json::to_vec_pretty(&summary).map_err(|e| ReplayError::Encode(e.to_string()))?;
    json.push(b'\n');
    write_file(&config.out.join(SUMMARY_FILE), &json)?;
    diff_file::merge(&parts, &config.out.join(DIFF_FILE))?;
    let elapsed = started.elapsed();
    let described = config.input.describe();
    let context = report::Context { input: &described, elapsed, workers: config.workers.max(1) };
    write_file(&config.out.join(REPORT_FILE), report::html(&summary, &context).as_bytes())?;
    Ok(ReplayOutcome { summary, elapsed })
}
