//! Rules changed on a running Kafka engine: a candidate in shadow writes to
//! the shadow topic and never commands; promotion makes it enforce from the
//! next record on; a broken edit is refused and decisions go on unchanged.
//! The engine's outputs must be the bytes an in-process pipeline gives when
//! the same changes happen at the same records.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use support::{config, deadline, Broker, Collector, Engine, Input, TestProducer};
use vigil::config::Delivery;
use vigil::control::RuleControl;
use vigil::kafka::Work;
use vigil::pipeline::{Outputs, Pipeline};
use vigil::rules::board::RuleBoard;
use vigil::rules::{RuleHost, RulesetSource};
use vigil::source::{Origin, Record};
use vigil::state::StateConfig;
use vigil::verdict::{Mode, Verdict};
use vigil::workload::{generate, WorkloadSpec};

const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../rules");
const NO_MAIL: &str =
    "// id: no_mail\n// kinds: tool_call\nif event.target == \"mail/outbox\" { return finding(70, \"mail is off limits\"); }\n()\n";

fn copy_rules(to: &Path) {
    for sub in ["", "tests"] {
        std::fs::create_dir_all(to.join(sub)).unwrap();
        for entry in std::fs::read_dir(Path::new(SHIPPED).join(sub)).unwrap().flatten() {
            if entry.path().is_file() {
                std::fs::copy(entry.path(), to.join(sub).join(entry.file_name())).unwrap();
            }
        }
    }
}

/// What a single in-process pipeline writes when the candidate is promoted
/// before record `promote_at`: decisions, shadow decisions, command count.
fn expected(lines: &[String], enforcing: &RulesetSource, candidate: &RulesetSource, promote_at: usize) -> (Vec<Vec<u8>>, Vec<Vec<u8>>, usize, Pipeline) {
    let mut pipeline = Pipeline::new(RuleHost::compile(enforcing.clone()).unwrap(), StateConfig::default())
        .with_shadow(RuleHost::compile(candidate.clone()).unwrap());
    let (mut decisions, mut shadow, mut commands) = (Vec::new(), Vec::new(), 0);
    let mut out = Outputs::default();
    for (i, line) in lines.iter().enumerate() {
        if i == promote_at {
            assert!(pipeline.promote_shadow());
        }
        out.clear();
        pipeline.process(&Record { payload: line.clone().into_bytes(), origin: Origin::default() }, &mut out);
        decisions.extend(out.decisions.iter().map(|d| serde_json::to_vec(d).unwrap()));
        shadow.extend(out.shadow_decisions.iter().map(|d| serde_json::to_vec(d).unwrap()));
        commands += out.commands.len();
    }
    (decisions, shadow, commands, pipeline)
}

#[test]
fn shadow_then_promotion_then_a_refused_edit_on_a_running_engine() {
    let broker = Broker::shared();
    let config = config(&broker.brokers, "rules", 1, Delivery::ExactlyOnce);
    let (enforcing_dir, candidate_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    copy_rules(enforcing_dir.path());
    copy_rules(candidate_dir.path());
    std::fs::write(candidate_dir.path().join("no_mail.rhai"), NO_MAIL).unwrap();
    let enforcing = RulesetSource::load(enforcing_dir.path()).unwrap();
    let candidate = RulesetSource::load(candidate_dir.path()).unwrap();

    let lines = generate(&WorkloadSpec {
        tenants: 1,
        agents_per_tenant: 6,
        tasks_per_agent: 2,
        actions_per_task: 20,
        attacks: false,
        ..WorkloadSpec::default()
    });
    let (promote_at, break_at) = (lines.len() / 3, 2 * lines.len() / 3);
    let (want_decisions, want_shadow, want_commands, want) = expected(&lines, &enforcing, &candidate, promote_at);
    assert_eq!(want_shadow.len(), promote_at, "one shadow decision per event before the promotion");
    let diverged = want.stats.shadow_transitions.get(&(Verdict::Allow, Verdict::Deny)).copied().unwrap_or(0);
    assert!(diverged > 0, "the candidate denies mail the enforcing rules allow");

    let board = Arc::new(RuleBoard::new(enforcing.clone(), Some(candidate.clone())));
    let mut control = RuleControl::new(Arc::clone(&board), Some(enforcing_dir.path()), Some(candidate_dir.path()));
    let engine = Engine::start(
        &config,
        Work::Decide { rules: Arc::clone(&board), state: StateConfig::default(), mode: Mode::Enforce },
    );
    let producer = TestProducer::new(&broker.brokers);
    let mut decisions = Collector::new(&broker.brokers, &config.topics.decisions);
    let mut shadow = Collector::new(&broker.brokers, &config.topics.shadow);
    let mut commands = Collector::new(&broker.brokers, &config.topics.control);
    let until = deadline(120);
    let send = |range: std::ops::Range<usize>| {
        producer.send(&config.topics.activity, &lines[range].iter().map(|l| Input::keyed_json(l)).collect::<Vec<_>>());
        producer.flush();
    };

    // Before the promotion every record is decided (no malformed lines in
    // this workload) by the enforcing rules and by the candidate.
    send(0..promote_at);
    decisions.until_count(until, promote_at);
    assert!(control.promote());

    // After it, the candidate enforces; its folder is the watched one now,
    // and a broken edit there is refused.
    send(promote_at..break_at);
    decisions.until_count(until, break_at);
    std::fs::write(candidate_dir.path().join("broken.rhai"), "// id: broken\nif event.tool == {\n").unwrap();
    control.reload();
    assert_eq!(control.counts.rejections.load(Ordering::Relaxed), 1);
    assert_eq!(board.published().1.enforcing.version, candidate.version, "the running rules stay");

    send(break_at..lines.len());
    decisions.until_count(until, lines.len());
    let reports = engine.stop();
    for collector in [&mut decisions, &mut shadow, &mut commands] {
        collector.drain(until);
    }

    let text = |payloads: Vec<Vec<u8>>| payloads.into_iter().map(|p| String::from_utf8(p).unwrap()).collect::<Vec<_>>();
    assert_eq!(text(decisions.payloads()), text(want_decisions), "enforcing decisions differ from the in-process run");
    assert_eq!(text(shadow.payloads()), text(want_shadow), "shadow decisions differ from the in-process run");
    assert!(shadow.records.iter().all(|r| r.json()["mode"] == "shadow"));
    assert_eq!(commands.records.len(), want_commands, "the shadow ruleset commanded something");
    let total = vigil::kafka::total(&reports);
    assert_eq!(total.shadow_transitions, want.stats.shadow_transitions);
    assert_eq!(total.shadow_rules, want.stats.shadow_rules);

    let version_at = |i: usize| decisions.records[i].json()["ruleset"].as_str().unwrap().to_owned();
    assert_eq!(version_at(promote_at - 1), enforcing.version);
    assert_eq!(version_at(promote_at), candidate.version, "the promotion takes effect at the next record");
    assert_eq!(version_at(lines.len() - 1), candidate.version);
}
