//! The in-process decision path, one core: decode → state → full shipped
//! ruleset → decide → decision encode, over the demo's synthetic workload.
//!
//! The `rules` group times rule evaluation alone, on snapshots of the state
//! each event saw.
//!
//! `cargo bench -p vigil-benches --bench pipeline`

use std::hint::black_box;
use std::path::Path;
use std::rc::Rc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vigil::event::{ActivityEvent, Input};
use vigil::pipeline::Outputs;
use vigil::rules::{Evaluation, RuleHost, RulesetSource};
use vigil::source::Record;
use vigil::state::Context;
// The benches' crate also brings the binary's allocator (mimalloc).
use vigil_benches::{demo_records, pass, pipeline};

/// Every activity event with the state the rules saw before it, so rule
/// evaluation can be timed on its own.
fn snapshots(records: &[Record], rules: &RulesetSource) -> Vec<(Rc<ActivityEvent>, Context)> {
    let mut p = pipeline(rules.clone());
    let mut out = Outputs::default();
    let mut seen = Vec::new();
    for record in records {
        let Ok(input) = vigil::decode::decode_json(&record.payload) else { continue };
        if let Input::Activity(event) = &input {
            let event = Rc::new((**event).clone());
            let ctx = p.state.context(&event);
            seen.push((event, ctx));
        }
        out.clear();
        p.step(input, &mut out);
    }
    seen
}

/// Every shipped rule on every snapshot, with a freshly compiled host each
/// iteration so nothing learned in one pass speeds up the next.
fn evaluate_all(seen: &[(Rc<ActivityEvent>, Context)], rules: &RulesetSource, eval: &mut Evaluation) -> usize {
    let mut host = match RuleHost::compile(rules.clone()) {
        Ok(host) => host,
        Err(e) => unreachable!("the ruleset compiles: {e}"),
    };
    for (event, ctx) in seen {
        host.evaluate(event, ctx, eval);
        black_box(&*eval);
    }
    seen.len()
}

fn rules_only(c: &mut Criterion, records: &[Record], shipped: &RulesetSource) {
    let seen = snapshots(records, shipped);
    let mut group = c.benchmark_group("rules");
    group.throughput(Throughput::Elements(seen.len() as u64));
    group.sample_size(10);
    let mut eval = Evaluation::default();
    group.bench_function("shipped_ruleset", |b| b.iter(|| evaluate_all(&seen, shipped, &mut eval)));
    // One bench per rule, for rule authors: VIGIL_BENCH_EACH_RULE=1.
    if std::env::var_os("VIGIL_BENCH_EACH_RULE").is_some() {
        for rule in &shipped.rules {
            let one = RulesetSource { rules: vec![rule.clone()], ..shipped.clone() };
            group.bench_function(rule.meta.id.as_str(), |b| b.iter(|| evaluate_all(&seen, &one, &mut eval)));
        }
    }
    group.finish();
}

fn bench(c: &mut Criterion) {
    let records = demo_records();
    let shipped = match RulesetSource::shipped() {
        Ok(s) => s,
        Err(e) => unreachable!("the shipped ruleset loads: {e}"),
    };
    let empty = match RulesetSource::from_texts(Path::new("none"), None, Vec::new()) {
        Ok(s) => s,
        Err(e) => unreachable!("{e}"),
    };
    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(records.len() as u64));
    group.sample_size(10);
    let mut buf = Vec::with_capacity(1 << 16);
    group.bench_function("shipped_ruleset", |b| b.iter(|| pass(&records, &shipped, &mut buf)));
    let trivial = RulesetSource::from_texts(
        Path::new("trivial"),
        None,
        (0..13).map(|i| (format!("t{i}.rhai"), format!("// id: t{i}\n()\n"))).collect(),
    )
    .unwrap_or_else(|e| unreachable!("{e}"));
    group.bench_function("trivial_13_rules", |b| b.iter(|| pass(&records, &trivial, &mut buf)));
    group.bench_function("no_rules", |b| b.iter(|| pass(&records, &empty, &mut buf)));
    group.bench_function("decode_only", |b| {
        b.iter(|| {
            for r in &records {
                black_box(vigil::decode::decode_json(&r.payload).is_ok());
            }
        })
    });
    group.finish();
    rules_only(c, &records, &shipped);
}

criterion_group!(benches, bench);
criterion_main!(benches);
