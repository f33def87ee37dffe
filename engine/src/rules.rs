//! The Rhai host: one engine per worker, a compiled ruleset, and the
//! evaluation of every rule against one event.
//!
//! A rule is a script that reads `event`, `agent`, `task` and `cred` (see
//! `rules/README.md`) and ends with `finding(score, message)` when it fires,
//! or `()` when it does not. Rules are isolated from each other: each runs
//! in the same scope, rewound after it, with the views as constants.
//!
//! A rule is a pure function of the values it reads: the same reads in the
//! same order give the same outcome. Each rule therefore keeps a `Memo`, a
//! tree of the read sequences it has been seen to make, ending in what it
//! decided. When the current event's values walk the tree to a leaf, that
//! outcome (finding, evidence or fault) is the one Rhai would compute, and
//! the script does not run.

pub mod board;
pub mod cases;
mod load;
mod memo;
pub mod view;
pub mod watch;

use std::cell::RefCell;
use std::rc::Rc;

use rhai::{Dynamic, Engine, ImmutableString, Scope, AST};

pub use load::{
    line_of, FailMode, Limits, RuleError, RuleMeta, RuleSource, RulesetConfig, RulesetError, RulesetSource, Thresholds,
    CONFIG_FILE,
};
use memo::{Memo, Outcome};
use view::{Frame, SharedFrame};

use crate::event::ActivityEvent;
use crate::state::Context;
use crate::verdict::{Reason, RuleFault};

/// What `finding(score, message)` returns to the host.
#[derive(Debug, Clone)]
pub struct Finding {
    score: i64,
    message: ImmutableString,
}

#[derive(Debug)]
struct CompiledRule {
    meta: RuleMeta,
    ast: AST,
    /// Bit `k` set when the rule runs on `EventKind::ALL[k]`.
    kinds: u16,
    /// Shared with the same rule of another host by [`RuleHost::share_memos`].
    memo: Rc<RefCell<Memo>>,
}

/// The outcome of all rules on one event.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Evaluation {
    pub reasons: Vec<Reason>,
    pub faults: Vec<RuleFault>,
}

/// A compiled ruleset with the engine that runs it. Not `Send`: build one
/// per worker thread from a [`RulesetSource`].
pub struct RuleHost {
    engine: Engine,
    rules: Vec<CompiledRule>,
    source: RulesetSource,
    /// The four views as constants; they stay for the host's life and see
    /// whatever event `frame` holds.
    scope: Scope<'static>,
    frame: SharedFrame,
}

impl std::fmt::Debug for RuleHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleHost").field("version", &self.source.version).field("rules", &self.rules.len()).finish()
    }
}

fn new_engine(limits: &Limits) -> Engine {
    let mut engine = Engine::new();
    engine
        .set_max_operations(limits.max_operations)
        .set_max_call_levels(limits.max_call_levels)
        .set_max_string_size(limits.max_string_size)
        .set_max_array_size(limits.max_array_size)
        .set_max_map_size(limits.max_map_size)
        .set_max_expr_depths(limits.max_expr_depth, limits.max_expr_depth)
        .set_strict_variables(true)
        .set_fail_on_invalid_map_property(true);
    engine.on_print(|_| {});
    engine.on_debug(|_, _, _| {});
    view::register(&mut engine);
    engine
        .register_type_with_name::<Finding>("Finding")
        .register_fn("finding", |score: i64, message: ImmutableString| Finding { score, message })
        .register_fn("finding", |score: i64| Finding { score, message: ImmutableString::new() });
    engine
}

/// Names the views have in a rule's scope, in push order.
const VIEW_NAMES: [&str; 4] = ["event", "agent", "task", "cred"];

/// Words that let a script reach beyond its reads (the wall clock, files,
/// code built at run time). A rule that mentions one, even in a comment,
/// always runs its script.
const NOT_MEMOIZED: [&str; 5] = ["timestamp", "elapsed", "import", "eval", "Fn"];

impl RuleHost {
    /// Compiles every rule; any error names its file and line.
    pub fn compile(source: RulesetSource) -> Result<RuleHost, RulesetError> {
        let engine = new_engine(&source.config.limits);
        let mut scope = Scope::new();
        for name in VIEW_NAMES {
            scope.push_constant(name, ());
        }
        let mut rules = Vec::new();
        let mut errors = Vec::new();
        for rule in &source.rules {
            match engine.compile_with_scope(&scope, &rule.text) {
                Ok(ast) => {
                    let kinds = if rule.meta.kinds.is_empty() {
                        u16::MAX
                    } else {
                        rule.meta.kinds.iter().map(|k| 1u16 << kind_index(*k)).fold(0, |a, b| a | b)
                    };
                    let pure = !NOT_MEMOIZED.iter().any(|word| rule.text.contains(word));
                    rules.push(CompiledRule {
                        meta: rule.meta.clone(),
                        ast,
                        kinds,
                        memo: Rc::new(RefCell::new(Memo::new(pure))),
                    });
                }
                Err(e) => errors.push(RuleError {
                    file: rule.file.clone(),
                    line: e.1.line().unwrap_or(0),
                    message: e.0.to_string(),
                }),
            }
        }
        if !errors.is_empty() {
            return Err(RulesetError(errors));
        }
        let frame: SharedFrame = Rc::new(RefCell::new(Frame::default()));
        let (e, a, t, c) = view::views(&frame);
        scope.clear();
        scope.push_constant(VIEW_NAMES[0], e);
        scope.push_constant(VIEW_NAMES[1], a);
        scope.push_constant(VIEW_NAMES[2], t);
        scope.push_constant(VIEW_NAMES[3], c);
        Ok(RuleHost { engine, rules, source, scope, frame })
    }

    pub fn source(&self) -> &RulesetSource {
        &self.source
    }

    pub fn version(&self) -> &str {
        &self.source.version
    }

    pub fn config(&self) -> &RulesetConfig {
        &self.source.config
    }

    pub fn metas(&self) -> impl Iterator<Item = &RuleMeta> {
        self.rules.iter().map(|r| &r.meta)
    }

    /// Lets each rule that `with` also has (the same text, header and
    /// limits) use `with`'s memo. An outcome depends only on the script and
    /// its reads, so one tree serves both; two rulesets deciding the same
    /// events (a replay's candidate and baseline) then walk one tree per
    /// common rule, the second walk on memory the first has just touched,
    /// and each learns from the other's scripts.
    pub fn share_memos(&mut self, with: &RuleHost) {
        if self.config().limits != with.config().limits {
            return;
        }
        // `rules` and `source.rules` are in the same order: compile keeps it.
        let RuleHost { rules, source, .. } = self;
        for (rule, text) in rules.iter_mut().zip(&source.rules) {
            let same = with.rules.iter().zip(&with.source.rules).find(|(r, t)| t.text == text.text && r.meta == rule.meta);
            if let Some((shared, _)) = same {
                rule.memo = Rc::clone(&shared.memo);
            }
        }
    }

    /// Runs every rule that applies to `event.kind` on the state in `ctx`.
    pub fn evaluate(&mut self, event: &Rc<ActivityEvent>, ctx: &Context, out: &mut Evaluation) {
        out.reasons.clear();
        out.faults.clear();
        let bit = 1u16 << kind_index(event.kind);
        let RuleHost { engine, rules, scope, frame, .. } = self;
        frame.borrow_mut().fill(event, ctx);
        for rule in rules.iter_mut().filter(|r| r.kinds & bit != 0) {
            let mut memo = rule.memo.borrow_mut();
            if let Some(outcome) = memo.recall(&frame.borrow()) {
                emit(&rule.meta.id, outcome, out);
                continue;
            }
            drop(memo);
            let outcome = run(engine, scope, frame, rule);
            emit(&rule.meta.id, &outcome, out);
        }
        frame.borrow_mut().release();
    }
}

fn emit(rule: &str, outcome: &Outcome, out: &mut Evaluation) {
    match outcome {
        Outcome::Quiet => {}
        Outcome::Fired { score, message, evidence } => out.reasons.push(Reason {
            rule: rule.to_owned(),
            score: *score,
            message: message.clone(),
            evidence: evidence.clone(),
        }),
        Outcome::Fault(error) => out.faults.push(RuleFault { rule: rule.to_owned(), error: error.clone() }),
    }
}

/// Runs `rule`'s script on the event in `frame` and teaches its memo.
fn run(engine: &Engine, scope: &mut Scope<'static>, frame: &SharedFrame, rule: &mut CompiledRule) -> Outcome {
    frame.borrow_mut().trace.clear();
    let result = engine.eval_ast_with_scope::<Dynamic>(scope, &rule.ast);
    scope.rewind(VIEW_NAMES.len());
    let frame = frame.borrow();
    let outcome = match result.map_err(|e| e.to_string()).and_then(finding_of) {
        Ok(None) => Outcome::Quiet,
        Ok(Some(f)) => Outcome::Fired {
            score: f.score.clamp(0, 100) as u32,
            message: if f.message.is_empty() { rule.meta.title.clone() } else { f.message.to_string() },
            evidence: frame.evidence(),
        },
        Err(error) => Outcome::Fault(error),
    };
    rule.memo.borrow_mut().learn(&frame.trace, &outcome);
    outcome
}

/// `()`, `false` and a zero score are "did not fire".
fn finding_of(value: Dynamic) -> Result<Option<Finding>, String> {
    if value.is_unit() || value.as_bool() == Ok(false) {
        return Ok(None);
    }
    if let Ok(score) = value.as_int() {
        return Ok((score > 0).then(|| Finding { score, message: ImmutableString::new() }));
    }
    match value.try_cast::<Finding>() {
        Some(f) if f.score > 0 => Ok(Some(f)),
        Some(_) => Ok(None),
        None => Err("rule returned neither `finding(..)`, an integer score nor `()`".to_owned()),
    }
}

fn kind_index(kind: crate::event::EventKind) -> usize {
    crate::event::EventKind::ALL.iter().position(|k| *k == kind).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::decode::decode_json;
    use crate::event::Input;
    use crate::state::{State, StateConfig};

    fn host(rules: &[(&str, &str)]) -> Result<RuleHost, RulesetError> {
        let texts = rules.iter().map(|(f, t)| ((*f).to_owned(), (*t).to_owned())).collect();
        RuleHost::compile(RulesetSource::from_texts(Path::new("rules"), None, texts)?)
    }

    /// On the whole demo (every scenario, thousands of events), outcomes
    /// answered from the memo are the scripts' own: a pipeline whose rules
    /// always run their scripts decides every event the same.
    #[test]
    fn the_memo_changes_no_decision_on_the_demo() {
        use crate::pipeline::{Outputs, Pipeline};
        use crate::source::Record;
        let Ok(source) = RulesetSource::shipped() else { unreachable!("the shipped rules load") };
        let (Ok(remembering), Ok(mut scripted)) = (RuleHost::compile(source.clone()), RuleHost::compile(source)) else {
            unreachable!("the shipped rules compile")
        };
        for rule in &mut scripted.rules {
            rule.memo = Rc::new(RefCell::new(Memo::new(false)));
        }
        let mut remembering = Pipeline::new(remembering, StateConfig::default());
        let mut scripted = Pipeline::new(scripted, StateConfig::default());
        let (mut a, mut b) = (Outputs::default(), Outputs::default());
        let lines = crate::workload::generate(&crate::workload::WorkloadSpec::default());
        for line in &lines {
            let record = Record { payload: line.clone().into_bytes(), ..Record::default() };
            a.clear();
            b.clear();
            remembering.process(&record, &mut a);
            scripted.process(&record, &mut b);
            assert_eq!(a.decisions, b.decisions, "{line}");
            assert_eq!(a.commands, b.commands, "{line}");
        }
        let answered: u64 = remembering.rules().rules.iter().map(|r| r.memo.borrow().answered).sum();
        let asked = lines.len() as u64 * remembering.rules().rules.len() as u64;
        assert!(answered > asked / 4, "the memo answered only {answered} of about {asked} evaluations");
        assert_eq!(scripted.rules().rules.iter().map(|r| r.memo.borrow().answered).sum::<u64>(), 0);
    }

    /// A candidate that changes one shipped rule's body (same header) and
    /// shares memos with the shipped rules: it shares only the rules whose
    /// text is the same, and both decide every demo event as they do alone.
    #[test]
    fn rules_sharing_memos_decide_as_they_do_alone() {
        use crate::pipeline::{Outputs, Pipeline};
        use crate::source::Record;
        let Ok(shipped) = RulesetSource::shipped() else { unreachable!("the shipped rules load") };
        let changed = "scope_drift.rhai";
        let texts = shipped
            .rules
            .iter()
            .map(|r| {
                let text = if r.file.ends_with(changed) { r.text.replace("30 * outside", "31 * outside") } else { r.text.clone() };
                (r.file.clone(), text)
            })
            .collect();
        let Ok(candidate) = RulesetSource::from_texts(Path::new("rules"), None, texts) else { unreachable!("the changed rules load") };
        assert_ne!(candidate.version, shipped.version);
        let compile = |source: &RulesetSource| match RuleHost::compile(source.clone()) {
            Ok(host) => host,
            Err(e) => unreachable!("{e}"),
        };
        let (baseline, mut sharing) = (compile(&shipped), compile(&candidate));
        sharing.share_memos(&baseline);
        for (mine, theirs) in sharing.rules.iter().zip(&baseline.rules) {
            assert_eq!(Rc::ptr_eq(&mine.memo, &theirs.memo), mine.meta.id != "scope_drift", "{}", mine.meta.id);
        }
        let mut pipelines = [baseline, sharing, compile(&shipped), compile(&candidate)]
            .map(|host| Pipeline::new(host, StateConfig::default()));
        let mut outs: [Outputs; 4] = Default::default();
        let mut differ = 0;
        for line in crate::workload::generate(&crate::workload::WorkloadSpec::default()) {
            let record = Record { payload: line.into_bytes(), ..Record::default() };
            for (pipeline, out) in pipelines.iter_mut().zip(&mut outs) {
                out.clear();
                pipeline.process(&record, out);
            }
            assert_eq!((&outs[0].decisions, &outs[0].commands), (&outs[2].decisions, &outs[2].commands));
            assert_eq!((&outs[1].decisions, &outs[1].commands), (&outs[3].decisions, &outs[3].commands));
            differ += usize::from(outs[0].decisions.first().map(|d| d.score) != outs[1].decisions.first().map(|d| d.score));
        }
        assert!(differ > 0, "the changed rule changed no decision, so the test shows nothing");
    }

    fn run(host: &mut RuleHost) -> Evaluation {
        let text = r#"{"event_id":"e1","time":"2026-11-28T10:00:00Z","agent_id":"a1","workload_id":"spiffe://acme.org/a1",
            "kind":"tool_call","tool":"sql.query","target":"crm/customers","data_class":"pii"}"#;
        let Ok(Input::Activity(event)) = decode_json(text.as_bytes()) else { unreachable!("valid event") };
        let event = Rc::new(*event);
        let mut state = State::new(StateConfig::default());
        let ctx = state.context(&event);
        let mut out = Evaluation::default();
        host.evaluate(&event, &ctx, &mut out);
        out
    }

    #[test]
    fn a_rule_fires_with_its_evidence() {
        let rule = "// id: new_target\nif agent.is_new_target(event.target) && agent.count(\"10m\") == 0 { finding(40, `new: ${event.target}`) }";
        let mut host = host(&[("new_target.rhai", rule)]).map_err(|e| e.to_string());
        let Ok(host) = host.as_mut() else { unreachable!("{host:?}") };
        let out = run(host);
        assert_eq!(out.faults, vec![]);
        assert_eq!(out.reasons.len(), 1);
        assert_eq!(out.reasons[0].message, "new: crm/customers");
        assert_eq!(out.reasons[0].evidence.len(), 2);
        assert_eq!(out.reasons[0].evidence["agent.is_new_target(crm/customers)"], true);
    }

    /// The yes/no reads answer what a rule comparing the values they stand
    /// for would: `count_over` counts this event too, and `matches_*`
    /// compare the credential's owner with the event's, false for an
    /// unknown credential. Each answers both ways over the events.
    #[test]
    fn yes_no_reads_answer_as_the_values_they_stand_for() {
        use crate::pipeline::{Outputs, Pipeline};
        use crate::source::Record;
        let probe = r#"// id: probe
let over = agent.count_over("1m", 1);
let workload = cred.matches_workload;
let agent_ = cred.matches_agent;
let count = agent.count("1m") + 1 > 1;
let same_workload = cred.exists && cred.workload_id == event.workload_id;
let same_agent = cred.exists && cred.agent_id == event.agent_id;
finding(1, `${over}=${count} ${workload}=${same_workload} ${agent_}=${same_agent}`)"#;
        let Ok(host) = host(&[("probe.rhai", probe)]) else { unreachable!("the probe compiles") };
        let mut pipeline = Pipeline::new(host, StateConfig::default());
        let event = |n: u32, agent: &str, workload: &str, kind: &str, cred: &str| {
            let credential = if cred.is_empty() { String::new() } else { format!(r#","credential":{{"id":"{cred}","ttl_s":3600}}"#) };
            format!(
                r#"{{"event_id":"e{n}","time":"2026-11-28T10:00:0{n}Z","agent_id":"{agent}","workload_id":"spiffe://acme.org/{workload}","kind":"{kind}","tool":"sql.query","target":"crm/customers"{credential}}}"#
            )
        };
        let lines = [
            event(1, "a1", "w1", "credential_issued", "c1"),
            event(2, "a1", "w1", "tool_call", "c1"),
            event(3, "a2", "w1", "tool_call", "c1"),
            event(4, "a1", "w2", "tool_call", "c1"),
            event(5, "a2", "w1", "tool_call", "c9"),
        ];
        let mut answers = Vec::new();
        for line in &lines {
            let mut out = Outputs::default();
            pipeline.process(&Record { payload: line.clone().into_bytes(), ..Record::default() }, &mut out);
            let message = out.decisions.first().and_then(|d| d.reasons.iter().find(|r| r.rule == "probe")).map(|r| r.message.clone());
            let Some(message) = message else { unreachable!("the probe fires on every event: {line}") };
            answers.push(message);
        }
        for (line, message) in lines.iter().zip(&answers) {
            for pair in message.split(' ') {
                let (new, old) = pair.split_once('=').unwrap_or_default();
                assert_eq!(new, old, "{message} on {line}");
            }
        }
        for read in 0..3 {
            let values: Vec<&str> = answers.iter().filter_map(|m| m.split(' ').nth(read)?.split('=').next()).collect();
            assert!(values.contains(&"true") && values.contains(&"false"), "read {read} answered {values:?}");
        }
    }

    #[test]
    fn an_endless_loop_is_a_fault_not_a_hang() {
        let mut host = host(&[("spin.rhai", "// id: spin\nloop { }"), ("ok.rhai", "// id: ok\nfinding(10)")]);
        let Ok(host) = host.as_mut() else { unreachable!() };
        let out = run(host);
        assert_eq!(out.faults.len(), 1);
        assert_eq!(out.faults[0].rule, "spin");
        assert!(out.faults[0].error.contains("Too many operations"), "{}", out.faults[0].error);
        assert_eq!(out.reasons.len(), 1, "the other rule still runs");
    }

    #[test]
    fn a_remembered_outcome_is_the_scripts_own() {
        let rules = [
            ("fires.rhai", "// id: fires\nif agent.count(\"10m\") == 0 && event.tool == \"sql.query\" { finding(40, `new: ${event.target}`) }"),
            ("quiet.rhai", "// id: quiet\nif task.exists { finding(10) }"),
            ("window.rhai", "// id: window\nagent.count(\"2d\")"),
            ("clock.rhai", "// id: clock\nlet t = timestamp(); finding(5)"),
        ];
        let mut host = host(&rules);
        let Ok(host) = host.as_mut() else { unreachable!() };
        let first = run(host);
        assert_eq!(first.reasons.len(), 2);
        assert_eq!(first.faults.len(), 1);
        assert!(first.faults[0].error.contains("unknown window"), "{:?}", first.faults);
        for _ in 0..3 {
            assert_eq!(run(host), first);
        }
    }

    #[test]
    fn compile_errors_carry_file_and_line() {
        let err = host(&[("bad.rhai", "// id: bad\n\nlet x = ;\n")]).err().map(|e| e.to_string());
        assert!(err.as_deref().is_some_and(|e| e.starts_with("rules/bad.rhai:3:") || e.starts_with("bad.rhai:3:")), "{err:?}");
        let unknown = host(&[("typo.rhai", "// id: typo\nevnt.tool")]).err().map(|e| e.to_string());
        assert!(unknown.is_some_and(|e| e.contains("evnt")));
    }

    #[test]
    fn rules_cannot_change_the_views() {
        let mut host = host(&[("w.rhai", "// id: w\nevent = 5; finding(10)"), ("r.rhai", "// id: r\nfinding(5)")]);
        let Ok(host) = host.as_mut() else { unreachable!() };
        let out = run(host);
        assert_eq!(out.faults.len(), 1);
        assert_eq!(out.reasons.len(), 1);
    }
}

mod shipped {
    include!(concat!(env!("OUT_DIR"), "/shipped_rules.rs"));
}

impl RulesetSource {
    /// The ruleset shipped in `rules/`, embedded at build time.
    pub fn shipped() -> Result<RulesetSource, RulesetError> {
        let rules = shipped::SHIPPED_RULES.iter().map(|(name, text)| (format!("rules/{name}"), (*text).to_owned())).collect();
        RulesetSource::from_texts(std::path::Path::new("rules"), Some(shipped::SHIPPED_CONFIG), rules)
    }
}
