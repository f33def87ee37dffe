//! Hot reload between events, and a candidate ruleset in shadow mode.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use vigil::pipeline::{self, Outputs, Pipeline};
use vigil::rules::watch::RuleWatch;
use vigil::rules::{RuleHost, RulesetSource};
use vigil::sink::{Sink, SinkError};
use vigil::source::file::MemorySource;
use vigil::source::{Origin, Record, Source, SourceError};
use vigil::state::StateConfig;
use vigil::verdict::{Decision, Verdict};
use vigil::workload::{generate, WorkloadSpec};

const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../rules");

fn copy_rules(to: &Path) {
    std::fs::create_dir_all(to.join("tests")).unwrap_or_default();
    for sub in ["", "tests"] {
        for entry in std::fs::read_dir(Path::new(SHIPPED).join(sub)).into_iter().flatten().flatten() {
            if entry.path().is_file() {
                let _ = std::fs::copy(entry.path(), to.join(sub).join(entry.file_name()));
            }
        }
    }
}

fn lines() -> Vec<String> {
    let spec = WorkloadSpec { tenants: 1, agents_per_tenant: 6, tasks_per_agent: 2, actions_per_task: 20, attacks: false, ..WorkloadSpec::default() };
    generate(&spec)
}

const NO_MAIL: &str = "// id: no_mail\n// kinds: tool_call\nif event.target == \"mail/outbox\" { return finding(70, \"mail is off limits\"); }\n()\n";

/// A source that changes the rules folder while the stream runs.
struct EditingSource<S> {
    inner: S,
    n: usize,
    edits: Vec<(usize, std::path::PathBuf, &'static str)>,
}

impl<S: Source> Source for EditingSource<S> {
    fn next_into(&mut self, record: &mut Record) -> Result<bool, SourceError> {
        self.n += 1;
        for (at, path, text) in &self.edits {
            if *at == self.n {
                std::fs::write(path, text).unwrap_or_default();
            }
        }
        self.inner.next_into(record)
    }
}

#[derive(Default)]
struct Collect {
    decisions: Vec<(i64, Decision)>,
    commands: usize,
    shadow: Vec<Decision>,
}

impl Sink for Collect {
    fn write(&mut self, out: &Outputs, origin: &Origin) -> Result<(), SinkError> {
        self.decisions.extend(out.decisions.iter().map(|d| (origin.offset, d.clone())));
        self.commands += out.commands.len();
        self.shadow.extend(out.shadow_decisions.iter().cloned());
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

fn host(dir: &Path) -> RuleHost {
    let source = RulesetSource::load(dir).unwrap_or_else(|e| unreachable!("{e}"));
    RuleHost::compile(source).unwrap_or_else(|e| unreachable!("{e}"))
}

#[test]
fn a_rule_change_on_disk_takes_effect_between_two_events_and_a_broken_one_is_refused() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| unreachable!("{e}"));
    copy_rules(dir.path());
    let lines = lines();
    let (swap_at, break_at) = (lines.len() / 3, 2 * lines.len() / 3);
    let mut pipeline = Pipeline::new(host(dir.path()), StateConfig::default())
        .with_watch(RuleWatch::new(dir.path(), Duration::ZERO));
    let before = pipeline.rules().version().to_owned();
    let mut source = EditingSource {
        inner: MemorySource::new("trace", lines.into_iter().map(String::into_bytes)),
        n: 0,
        edits: vec![
            (swap_at, dir.path().join("no_mail.rhai"), NO_MAIL),
            (break_at, dir.path().join("broken.rhai"), "// id: broken\nif event.tool == {\n"),
        ],
    };
    let mut sink = Collect::default();
    pipeline::run(&mut source, &mut pipeline, &mut sink, &AtomicBool::new(false)).unwrap_or_else(|e| unreachable!("{e}"));

    assert_eq!((pipeline.stats.rule_swaps, pipeline.stats.rule_rejections), (1, 1));
    let after = pipeline.rules().version().to_owned();
    assert_ne!(before, after);
    for (offset, d) in &sink.decisions {
        let expected = if (*offset as usize) < swap_at { &before } else { &after };
        assert_eq!(&d.ruleset, expected, "decision at record {offset}");
        let mail = d.reasons.iter().any(|r| r.rule == "no_mail");
        if (*offset as usize) < swap_at {
            assert!(!mail);
        }
    }
    let mail_after: Vec<&Decision> =
        sink.decisions.iter().filter(|(o, d)| *o as usize >= swap_at && d.reasons.iter().any(|r| r.rule == "no_mail")).map(|(_, d)| d).collect();
    assert!(!mail_after.is_empty(), "the new rule fires after the swap");
    assert!(mail_after.iter().all(|d| d.decision >= Verdict::Deny));
}

#[test]
fn a_ruleset_that_fails_its_own_cases_is_refused() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| unreachable!("{e}"));
    copy_rules(dir.path());
    let mut watch = RuleWatch::new(dir.path(), Duration::ZERO);
    let running = host(dir.path()).version().to_owned();
    // Breaks the near miss of scope_drift: everything now steps up.
    std::fs::write(dir.path().join("paranoid.rhai"), "// id: paranoid\nfinding(30)\n").unwrap_or_default();
    match watch.check_now(&running) {
        Some(vigil::rules::watch::Reload::Rejected(reason)) => assert!(reason.contains("failed"), "{reason}"),
        other => unreachable!("expected a rejection, got {other:?}"),
    }
    assert!(watch.check_now(&running).is_none(), "a refused edit is reported once");
}

#[test]
fn a_shadow_ruleset_diverges_without_commands_and_promotion_makes_it_enforce() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| unreachable!("{e}"));
    copy_rules(dir.path());
    std::fs::write(dir.path().join("no_mail.rhai"), NO_MAIL).unwrap_or_default();
    let lines = lines();
    let run = |shadow: bool| {
        let mut p = Pipeline::new(host(Path::new(SHIPPED)), StateConfig::default());
        if shadow {
            p = p.with_shadow(host(dir.path()));
        }
        let mut source = MemorySource::new("trace", lines.clone().into_iter().map(String::into_bytes));
        let mut sink = Collect::default();
        pipeline::run(&mut source, &mut p, &mut sink, &AtomicBool::new(false)).unwrap_or_else(|e| unreachable!("{e}"));
        (p, sink)
    };
    let (plain, plain_out) = run(false);
    let (shadowed, out) = run(true);

    // The enforcing outputs are exactly those of a run without a shadow.
    let strip = |v: &[(i64, Decision)]| v.iter().map(|(_, d)| d.clone()).collect::<Vec<_>>();
    assert_eq!(strip(&plain_out.decisions), strip(&out.decisions));
    assert_eq!(plain_out.commands, out.commands);
    assert_eq!(plain.stats.commands, shadowed.stats.commands);

    assert_eq!(out.shadow.len(), out.decisions.len());
    assert!(out.shadow.iter().all(|d| d.mode == vigil::verdict::Mode::Shadow));
    let mails = out.shadow.iter().filter(|d| d.reasons.iter().any(|r| r.rule == "no_mail")).count();
    assert!(mails > 0);
    let allow_to_deny = out
        .decisions
        .iter()
        .zip(&out.shadow)
        .filter(|((_, e), s)| e.decision == Verdict::Allow && s.decision == Verdict::Deny)
        .count();
    assert!(allow_to_deny > 0);
    assert_eq!(shadowed.stats.shadow_transitions.get(&(Verdict::Allow, Verdict::Deny)).copied().unwrap_or(0), allow_to_deny as u64);
    assert_eq!(shadowed.stats.shadow_rules.get("no_mail").copied().unwrap_or(0), mails as u64);

    // Promotion: the candidate enforces from the next event on.
    let mut p = Pipeline::new(host(Path::new(SHIPPED)), StateConfig::default()).with_shadow(host(dir.path()));
    let candidate = p.shadow_rules().map(|h| h.version().to_owned()).unwrap_or_default();
    let mut out = Outputs::default();
    let half = lines.len() / 2;
    let mut first_after: Option<Decision> = None;
    for (i, line) in lines.iter().enumerate() {
        if i == half {
            assert!(p.promote_shadow());
        }
        out.clear();
        p.process(&Record { payload: line.clone().into_bytes(), origin: Origin::default() }, &mut out);
        if i >= half {
            assert!(out.shadow_decisions.is_empty());
            if first_after.is_none() {
                first_after = out.decisions.iter().find(|d| d.reasons.iter().any(|r| r.rule == "no_mail")).cloned();
            }
        }
    }
    let first = first_after.unwrap_or_else(|| unreachable!("the promoted rule enforces"));
    assert_eq!(first.ruleset, candidate);
    assert_eq!(first.mode, vigil::verdict::Mode::Enforce);
    assert!(first.decision >= Verdict::Deny);
}
