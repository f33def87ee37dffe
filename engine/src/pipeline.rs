//! The one place where the stages meet:
//! `source → decode → state → rules → decide → sink`.
//!
//! [`Pipeline::process`] takes one record through decode, state, rules and
//! decide; [`run`] is the loop that feeds it from a [`Source`] and hands what
//! it produced to a [`Sink`]. Replay, the demo and the Kafka engine all use
//! these two, so a decision means the same thing everywhere.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::decide::{self, ocsf};
use crate::decode::{self, avro::AvroDecoder, DecodeError};
use crate::event::{ActivityEvent, Input, Signal};
use crate::rules::board::RuleBoard;
use crate::rules::watch::{Reload, RuleWatch};
use crate::rules::{Evaluation, RuleHost};
use crate::sink::{Sink, SinkError};
use crate::source::{Origin, Record, Source, SourceError};
use crate::state::{State, StateConfig};
use crate::verdict::{CommandKind, ControlCommand, Decision, Mode, Verdict};

/// A record that could not be decoded: the original bytes and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub origin: Origin,
    pub payload: Vec<u8>,
    pub error: DecodeError,
}

/// What one input produced. Reused across records to avoid allocation.
#[derive(Debug, Default, Clone)]
pub struct Outputs {
    pub decisions: Vec<Decision>,
    /// OCSF findings, as JSON text (see [`ocsf::Finding`]).
    pub alerts: Vec<String>,
    pub commands: Vec<ControlCommand>,
    pub dead_letters: Vec<DeadLetter>,
    /// Decisions of the candidate ruleset (`mode: shadow`), if one runs.
    pub shadow_decisions: Vec<Decision>,
    /// The agent the outputs are keyed by (empty for a dead letter).
    pub agent_id: String,
}

impl Outputs {
    pub fn clear(&mut self) {
        self.decisions.clear();
        self.alerts.clear();
        self.commands.clear();
        self.dead_letters.clear();
        self.shadow_decisions.clear();
        self.agent_id.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.decisions.is_empty() && self.alerts.is_empty() && self.commands.is_empty() && self.dead_letters.is_empty()
    }
}

/// Running counts, for summaries and metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub records: u64,
    pub events: u64,
    pub signals: u64,
    pub decisions: BTreeMap<Verdict, u64>,
    pub commands: BTreeMap<CommandKind, u64>,
    pub alerts: u64,
    pub dead_letters: BTreeMap<&'static str, u64>,
    /// How often each rule fired (contributed a reason).
    pub rules_fired: BTreeMap<String, u64>,
    pub rule_faults: BTreeMap<String, u64>,
    /// Shadow decisions that differ from the enforcing ones, by transition
    /// (`allow→deny`) and by rule whose firing differs.
    pub shadow_transitions: BTreeMap<(Verdict, Verdict), u64>,
    pub shadow_rules: BTreeMap<String, u64>,
    pub rule_swaps: u64,
    pub rule_rejections: u64,
}

impl Stats {
    fn count(&mut self, out: &Outputs) {
        for d in &out.decisions {
            *self.decisions.entry(d.decision).or_default() += 1;
            for r in &d.reasons {
                if let Some(n) = self.rules_fired.get_mut(&r.rule) {
                    *n += 1;
                } else {
                    self.rules_fired.insert(r.rule.clone(), 1);
                }
            }
            for f in &d.faults {
                *self.rule_faults.entry(f.rule.clone()).or_default() += 1;
            }
        }
        for c in &out.commands {
            *self.commands.entry(c.command).or_default() += 1;
        }
        for (enforced, shadow) in out.decisions.iter().zip(&out.shadow_decisions) {
            if enforced.decision != shadow.decision {
                *self.shadow_transitions.entry((enforced.decision, shadow.decision)).or_default() += 1;
            }
            let fired = |d: &Decision, rule: &str| d.reasons.iter().any(|r| r.rule == rule);
            for r in enforced.reasons.iter().chain(&shadow.reasons) {
                if fired(enforced, &r.rule) != fired(shadow, &r.rule) && !r.rule.starts_with("builtin.") {
                    *self.shadow_rules.entry(r.rule.clone()).or_default() += 1;
                }
            }
        }
        self.alerts += out.alerts.len() as u64;
        for d in &out.dead_letters {
            *self.dead_letters.entry(d.error.label()).or_default() += 1;
        }
    }

    pub fn dead_letter_total(&self) -> u64 {
        self.dead_letters.values().sum()
    }
}

/// The decision path for one worker: its state, its rules, its decoder.
#[derive(Debug)]
pub struct Pipeline {
    pub state: State,
    rules: RuleHost,
    mode: Mode,
    avro: Option<AvroDecoder>,
    /// Whether this worker speaks for signal subjects it holds no state for.
    owns_unknown: bool,
    /// Whether non-allow decisions come with their OCSF alert.
    alerts: bool,
    /// Where the enforcing ruleset's evaluation time goes, if anywhere.
    rule_eval_seconds: Option<std::sync::Arc<crate::metrics::Histogram>>,
    /// A candidate ruleset evaluated on the same state, never enforcing.
    shadow: Option<RuleHost>,
    /// The enforcing ruleset's folder, watched for hot reload.
    watch: Option<RuleWatch>,
    /// Rules published for every worker, and the generation running here.
    board: Option<(Arc<RuleBoard>, u64)>,
    pub stats: Stats,
}

impl Pipeline {
    pub fn new(rules: RuleHost, state: StateConfig) -> Pipeline {
        Pipeline {
            state: State::new(state),
            rules,
            mode: Mode::Enforce,
            avro: None,
            owns_unknown: true,
            alerts: true,
            rule_eval_seconds: None,
            shadow: None,
            watch: None,
            board: None,
            stats: Stats::default(),
        }
    }

    /// Runs `candidate` beside the enforcing rules: its decisions come out as
    /// `shadow_decisions` with `mode: shadow` and never produce commands.
    /// The rules both have share their memos (see [`RuleHost::share_memos`]).
    pub fn with_shadow(mut self, mut candidate: RuleHost) -> Pipeline {
        candidate.share_memos(&self.rules);
        self.shadow = Some(candidate);
        self
    }

    /// Reloads the enforcing rules from `watch`'s folder when it changes.
    pub fn with_watch(mut self, watch: RuleWatch) -> Pipeline {
        self.watch = Some(watch);
        self
    }

    /// Follows `board` from `generation` on (what this pipeline was built
    /// with): a newer publication is swapped in between two records.
    pub fn with_board(mut self, board: Arc<RuleBoard>, generation: u64) -> Pipeline {
        self.board = Some((board, generation));
        self
    }

    pub fn shadow_rules(&self) -> Option<&RuleHost> {
        self.shadow.as_ref()
    }

    /// The candidate becomes the enforcing ruleset from the next event on.
    pub fn promote_shadow(&mut self) -> bool {
        match self.shadow.take() {
            Some(candidate) => {
                let old = self.replace_rules(candidate);
                tracing::info!(from = old.version(), to = self.rules.version(), "shadow ruleset promoted");
                true
            }
            None => false,
        }
    }

    pub fn drop_shadow(&mut self) -> bool {
        self.shadow.take().is_some()
    }

    /// Between two records: swaps in a changed ruleset that compiles and
    /// passes its cases, or logs why it was refused.
    pub fn reload_rules_if_changed(&mut self) {
        if let Some((board, seen)) = &self.board {
            if board.generation() != *seen {
                self.follow_board();
            }
        }
        let Some(watch) = self.watch.as_mut() else { return };
        match watch.check(self.rules.version()) {
            None => {}
            Some(Reload::Swapped(host)) => {
                self.stats.rule_swaps += 1;
                let old = self.replace_rules(*host);
                tracing::info!(from = old.version(), to = self.rules.version(), "ruleset swapped");
            }
            Some(Reload::Rejected(reason)) => {
                self.stats.rule_rejections += 1;
                tracing::warn!(running = self.rules.version(), %reason, "ruleset change rejected");
            }
        }
    }

    /// Compiles what the board publishes, where it differs from what runs.
    /// The board only takes rulesets that compiled, so a failure here is
    /// not expected; it is logged and the running rules stay.
    fn follow_board(&mut self) {
        let Some((board, seen)) = self.board.as_mut() else { return };
        let (generation, published) = board.published();
        *seen = generation;
        if published.enforcing.version != self.rules.version() {
            // A promotion: the candidate running in shadow here moves over.
            let promoted = self.shadow.take_if(|h| h.version() == published.enforcing.version);
            match promoted.map_or_else(|| RuleHost::compile(published.enforcing), Ok) {
                Ok(host) => {
                    let old = self.replace_rules(host);
                    tracing::info!(from = old.version(), to = self.rules.version(), "ruleset swapped");
                }
                Err(error) => tracing::error!(%error, "published ruleset does not compile here; keeping the running one"),
            }
        }
        let running_shadow = self.shadow.as_ref().map(|h| h.version().to_owned());
        match published.shadow {
            None => self.shadow = None,
            Some(candidate) if running_shadow.as_deref() != Some(candidate.version.as_str()) => {
                match RuleHost::compile(candidate) {
                    Ok(host) => {
                        tracing::info!(candidate = host.version(), "shadow ruleset started");
                        self.shadow = Some(host);
                    }
                    Err(error) => tracing::error!(%error, "published shadow ruleset does not compile here"),
                }
            }
            Some(_) => {}
        }
    }

    pub fn with_mode(mut self, mode: Mode) -> Pipeline {
        self.mode = mode;
        self
    }

    pub fn with_avro(mut self, avro: AvroDecoder) -> Pipeline {
        self.avro = Some(avro);
        self
    }

    pub fn with_owns_unknown(mut self, owns: bool) -> Pipeline {
        self.owns_unknown = owns;
        self
    }

    /// Builds no OCSF alerts, for a consumer of decisions that never reads
    /// them (a replay). Nothing else changes: an alert is made from the
    /// decision and the event after both are final.
    pub fn without_alerts(mut self) -> Pipeline {
        self.alerts = false;
        self
    }

    /// Keeps no set of changed state, for a pipeline whose state is never
    /// checkpointed or written to a changelog (a replay).
    pub fn without_changes(mut self) -> Pipeline {
        self.state = std::mem::take(&mut self.state).without_changes();
        self
    }

    /// Whether this pipeline speaks for agents and credentials no one holds
    /// state for (see [`decide::signal`]).
    pub fn set_owns_unknown(&mut self, owns: bool) {
        self.owns_unknown = owns;
    }

    /// Times each event's rule evaluation into `histogram` (for metrics;
    /// the time never reaches a decision).
    pub fn with_rule_eval_histogram(mut self, histogram: std::sync::Arc<crate::metrics::Histogram>) -> Pipeline {
        self.rule_eval_seconds = Some(histogram);
        self
    }

    pub fn rules(&self) -> &RuleHost {
        &self.rules
    }

    /// Forgets all state and counts (between rule test cases).
    pub fn reset_state(&mut self) {
        self.state = State::new(self.state.config.clone());
        self.stats = Stats::default();
    }

    /// Swaps the ruleset between two events; state is kept.
    pub fn replace_rules(&mut self, rules: RuleHost) -> RuleHost {
        std::mem::replace(&mut self.rules, rules)
    }

    /// Decodes and decides one record; a record that fails to decode
    /// becomes a dead letter and the pipeline carries on.
    pub fn process(&mut self, record: &Record, out: &mut Outputs) {
        self.stats.records += 1;
        self.state.place(record.origin.partition);
        match decode::decode(&record.payload, self.avro.as_ref()) {
            Ok(input) => self.step(input, out),
            Err(error) => out.dead_letters.push(DeadLetter {
                origin: record.origin.clone(),
                payload: record.payload.clone(),
                error,
            }),
        }
        self.stats.count(out);
    }

    /// Decides one decoded input and folds it into the state.
    pub fn step(&mut self, input: Input, out: &mut Outputs) {
        match input {
            Input::Activity(event) => self.step_event(Rc::from(event), out),
            Input::Signal(signal) => {
                self.expire_deadlines(signal.time, out);
                self.signal(&signal, out);
            }
        }
    }

    /// [`Pipeline::step`] for an activity event already shared, so that
    /// pipelines deciding the same events (a replay's two rulesets) need
    /// not each have a copy.
    pub fn step_event(&mut self, event: Rc<ActivityEvent>, out: &mut Outputs) {
        self.expire_deadlines(event.time, out);
        self.activity(event, out);
    }

    fn expire_deadlines(&mut self, now: crate::event::Timestamp, out: &mut Outputs) {
        if self.mode != Mode::Enforce {
            return;
        }
        for overdue in self.state.due_deadlines(now) {
            let task = overdue.task.clone();
            let command = decide::overdue(&overdue);
            drop(overdue);
            self.state.expire_task(&task.tenant, &task.task_id);
            if let Some(command) = command {
                self.state.apply_commands(std::slice::from_ref(&command), now);
                out.commands.push(command);
            }
        }
    }

    fn activity(&mut self, event: Rc<ActivityEvent>, out: &mut Outputs) {
        self.stats.events += 1;
        let ctx = self.state.context(&event);
        let started = self.rule_eval_seconds.as_ref().map(|_| std::time::Instant::now());
        // The evaluation moves into the decision: its reasons are not copied.
        let mut eval = Evaluation::default();
        self.rules.evaluate(&event, &ctx, &mut eval);
        if let (Some(histogram), Some(started)) = (&self.rule_eval_seconds, started) {
            histogram.observe(started.elapsed());
        }
        let rules = &self.rules;
        let outcome =
            decide::activity(&event, &ctx, eval, rules.config(), rules.version(), self.mode, &self.state);
        if let Some(shadow) = self.shadow.as_mut() {
            let mut eval = Evaluation::default();
            shadow.evaluate(&event, &ctx, &mut eval);
            let shadow = &*shadow;
            let candidate = decide::activity(
                &event,
                &ctx,
                eval,
                shadow.config(),
                shadow.version(),
                Mode::Shadow,
                &self.state,
            );
            out.shadow_decisions.push(candidate.decision);
        }
        let (keys, depth) = (ctx.keys, ctx.depth);
        drop(ctx);
        self.state.apply(&event, keys, depth, &outcome.decision, &outcome.commands);
        let rules = &self.rules;
        if let Some(alert) = self.alerts.then(|| ocsf::finding(&outcome.decision, &event, |id| rules.metas().find(|m| m.id == id))).flatten() {
            // Only strings and numbers: writing it cannot fail.
            out.alerts.push(serde_json::to_string(&alert).unwrap_or_default());
        }
        out.agent_id.clone_from(&event.agent_id);
        out.decisions.push(outcome.decision);
        out.commands.extend(outcome.commands);
    }

    fn signal(&mut self, signal: &Signal, out: &mut Outputs) {
        self.stats.signals += 1;
        let commands = if self.mode == Mode::Enforce {
            decide::signal(signal, &self.state, self.owns_unknown)
        } else {
            Vec::new()
        };
        self.state.apply_signal(signal, &commands);
        if let Some(agent) = signal.agent_id.as_ref().or(commands.first().map(|c| &c.agent_id)) {
            out.agent_id.clone_from(agent);
        }
        out.commands.extend(commands);
    }
}

/// Why a run stopped early.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Sink(#[from] SinkError),
}

/// Feeds every record of `source` through `pipeline` into `sink` until the
/// source ends or `shutdown` is set, then flushes the sink.
pub fn run(
    source: &mut dyn Source,
    pipeline: &mut Pipeline,
    sink: &mut dyn Sink,
    shutdown: &AtomicBool,
) -> Result<(), RunError> {
    let mut record = Record::default();
    let mut out = Outputs::default();
    while !shutdown.load(Ordering::Relaxed) {
        if !source.next_into(&mut record)? {
            break;
        }
        pipeline.reload_rules_if_changed();
        out.clear();
        pipeline.process(&record, &mut out);
        sink.write(&out, &record.origin)?;
    }
    sink.state_changes(&mut pipeline.state)?;
    sink.flush()?;
    Ok(())
}
