//! The shipped ruleset passes its own cases, and every rule has a case where
//! it fires and a near miss where it does not.

use std::path::Path;

use vigil::rules::cases::{case_files, run_cases};
use vigil::rules::{RuleHost, RulesetSource};

fn rules_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../rules"))
}

#[test]
fn every_case_passes() {
    let source = RulesetSource::load(rules_dir()).unwrap_or_else(|e| unreachable!("{e}"));
    let results = run_cases(&source, &case_files(rules_dir())).unwrap_or_else(|e| unreachable!("{e:?}"));
    assert!(results.len() >= 26, "expected the full case set, got {}", results.len());
    let failed: Vec<String> = results
        .iter()
        .filter(|r| !r.passed)
        .map(|r| format!("{} / {}: {}", r.file, r.name, r.failures.join("; ")))
        .collect();
    assert!(failed.is_empty(), "failed cases:\n{}", failed.join("\n"));
}

#[test]
fn every_rule_fires_somewhere_and_misses_somewhere() {
    let source = RulesetSource::load(rules_dir()).unwrap_or_else(|e| unreachable!("{e}"));
    let cases: String = case_files(rules_dir()).iter().map(|f| std::fs::read_to_string(f).unwrap_or_default()).collect();
    let host = RuleHost::compile(source).unwrap_or_else(|e| unreachable!("{e}"));
    for meta in host.metas() {
        let fires = cases.lines().any(|l| l.contains("fired: [") && !l.contains("not_fired") && l.contains(&meta.id));
        let misses = cases.lines().any(|l| l.contains("not_fired: [") && l.contains(&meta.id));
        assert!(fires, "no case shows `{}` firing", meta.id);
        assert!(misses, "no near miss for `{}`", meta.id);
    }
}

#[test]
fn the_embedded_ruleset_is_the_shipped_folder() {
    let on_disk = RulesetSource::load(rules_dir()).map(|s| s.version);
    let embedded = RulesetSource::shipped().map(|s| s.version);
    assert_eq!(on_disk, embedded);
}
