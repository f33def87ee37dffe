//! Replay as an analyst meets it: a candidate ruleset against the shipped
//! one on the synthetic workload, checked against independent runs of the
//! engine's own loop.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use vigil::pipeline::{self, Outputs, Pipeline};
use vigil::rules::{RuleHost, RulesetSource};
use vigil::sink::jsonl::JsonlSink;
use vigil::sink::{Sink, SinkError};
use vigil::source::file::JsonlSource;
use vigil::source::Origin;
use vigil::state::StateConfig;
use vigil::verdict::{Decision, Verdict};
use vigil::workload::{generate, WorkloadSpec};
use vigil_replay::{replay, Baseline, ReplayConfig, ReplayInput, DIFF_FILE, REPORT_FILE, SUMMARY_FILE};

const NEW_RULE_ID: &str = "large_partner_post";
const NEW_RULE: &str = r#"// id: large_partner_post
// title: A large post to a partner API
// severity: medium
// kinds: network_egress
// description: Over 150 kB in one post asks for a human.

if event.tool == "http.post" && event.bytes > 150000 {
    return finding(35, `post of ${event.bytes} bytes to ${event.target}`);
}
()
"#;

fn shipped_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules")
}

/// The shipped rules plus one.
fn candidate_dir(dir: &Path) -> PathBuf {
    let candidate = dir.join("candidate-rules");
    std::fs::create_dir_all(&candidate).unwrap();
    for entry in std::fs::read_dir(shipped_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, candidate.join(path.file_name().unwrap())).unwrap();
        }
    }
    std::fs::write(candidate.join(format!("{NEW_RULE_ID}.rhai")), NEW_RULE).unwrap();
    candidate
}

fn workload(dir: &Path) -> PathBuf {
    let spec = WorkloadSpec { agents_per_tenant: 6, tasks_per_agent: 2, actions_per_task: 20, ..WorkloadSpec::default() };
    let path = dir.join("activity.jsonl");
    let mut text = generate(&spec).join("\n");
    text.push('\n');
    std::fs::write(&path, text).unwrap();
    path
}

fn config(input: &Path, candidate: &Path, baseline: Baseline, out: &Path, workers: usize) -> ReplayConfig {
    ReplayConfig {
        input: ReplayInput::File(input.to_path_buf()),
        candidate: RulesetSource::load(candidate).unwrap(),
        baseline,
        out: out.to_path_buf(),
        workers,
        state: StateConfig::default(),
        checkpoint: None,
        progress: false,
    }
}

fn shipped_baseline() -> Baseline {
    Baseline::Rules(RulesetSource::load(&shipped_dir()).unwrap())
}

struct Collect(Vec<Decision>);

impl Sink for Collect {
    fn write(&mut self, out: &Outputs, _: &Origin) -> Result<(), SinkError> {
        self.0.extend(out.decisions.iter().cloned());
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// One ruleset alone, through `pipeline::run` on one thread.
fn decisions_alone(input: &Path, rules: &Path) -> Vec<Decision> {
    let host = RuleHost::compile(RulesetSource::load(rules).unwrap()).unwrap();
    let mut pipeline = Pipeline::new(host, StateConfig::default());
    let mut source = JsonlSource::open(input.to_str().unwrap()).unwrap();
    let mut sink = Collect(Vec::new());
    pipeline::run(&mut source, &mut pipeline, &mut sink, &AtomicBool::new(false)).unwrap();
    sink.0
}

fn diff_lines(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join(DIFF_FILE))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn summary(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(out.join(SUMMARY_FILE)).unwrap()).unwrap()
}

fn bytes(out: &Path, file: &str) -> Vec<u8> {
    std::fs::read(out.join(file)).unwrap()
}

#[test]
fn one_added_rule_changes_exactly_the_decisions_it_should() {
    let dir = tempfile::tempdir().unwrap();
    let input = workload(dir.path());
    let candidate = candidate_dir(dir.path());
    let out = dir.path().join("out");
    replay(&config(&input, &candidate, shipped_baseline(), &out, 2)).unwrap();

    let before = decisions_alone(&input, &shipped_dir());
    let after = decisions_alone(&input, &candidate);
    assert_eq!(before.len(), after.len());
    let expected: Vec<(String, Verdict, Verdict)> = before
        .iter()
        .zip(&after)
        .inspect(|(b, a)| assert_eq!(b.event_id, a.event_id))
        .filter(|(b, a)| b.decision != a.decision)
        .map(|(b, a)| (a.event_id.clone(), b.decision, a.decision))
        .collect();
    assert!(expected.len() >= 10, "the new rule should change a fair number of decisions: {}", expected.len());

    let lines = diff_lines(&out);
    let got: Vec<(String, Verdict, Verdict)> = lines
        .iter()
        .map(|l| {
            let v = |k: &str| serde_json::from_value::<Verdict>(l[k].clone()).unwrap();
            (l["event_id"].as_str().unwrap().to_owned(), v("before"), v("after"))
        })
        .collect();
    assert_eq!(got, expected);
    // A change is the new rule firing, or a built-in obligation that follows
    // from an earlier change for the same agent (a step-up still pending).
    let mut stepped_up = std::collections::BTreeSet::new();
    for line in &lines {
        let added: Vec<&str> = line["rules_added"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
        let agent = (line["tenant"].as_str().unwrap(), line["agent_id"].as_str().unwrap());
        if added.contains(&NEW_RULE_ID) {
            assert!(line["reasons_after"].as_array().unwrap().iter().any(|r| r["rule"] == NEW_RULE_ID));
            stepped_up.insert(agent);
        } else {
            assert!(added.iter().all(|r| r.starts_with("builtin.")), "{line}");
            assert!(stepped_up.contains(&agent), "a consequence without a cause: {line}");
        }
    }
    assert!(!stepped_up.is_empty());

    let s = summary(&out);
    assert_eq!(s["changed"], expected.len());
    let fired = after.iter().filter(|d| d.reasons.iter().any(|r| r.rule == NEW_RULE_ID)).count();
    let rule = s["rules"].as_array().unwrap().iter().find(|r| r["rule"] == NEW_RULE_ID).unwrap();
    assert_eq!(rule["added"], fired);
    assert_eq!(rule["removed"], 0);
    let direct = lines.iter().filter(|l| l["rules_added"].as_array().unwrap().iter().any(|r| r == NEW_RULE_ID)).count();
    assert_eq!(rule["changed_decisions"], direct);
    for t in s["transitions"].as_array().unwrap() {
        let (b, a): (Verdict, Verdict) =
            (serde_json::from_value(t["before"].clone()).unwrap(), serde_json::from_value(t["after"].clone()).unwrap());
        let n = expected.iter().filter(|(_, eb, ea)| *eb == b && *ea == a).count();
        assert_eq!(t["count"], n, "{}", t["transition"]);
        assert!(a > b, "an added rule only raises verdicts: {}", t["transition"]);
    }
    let candidate_allow = after.iter().filter(|d| d.decision == Verdict::Allow).count();
    assert_eq!(s["candidate"]["decisions"]["allow"], candidate_allow);
}

#[test]
fn the_same_replay_gives_the_same_bytes_whatever_the_worker_count() {
    let dir = tempfile::tempdir().unwrap();
    let input = workload(dir.path());
    let candidate = candidate_dir(dir.path());
    let runs: Vec<PathBuf> = [(2, "a"), (2, "b"), (1, "c"), (3, "d")]
        .into_iter()
        .map(|(workers, name)| {
            let out = dir.path().join(name);
            replay(&config(&input, &candidate, shipped_baseline(), &out, workers)).unwrap();
            out
        })
        .collect();
    for other in &runs[1..] {
        assert!(bytes(&runs[0], SUMMARY_FILE) == bytes(other, SUMMARY_FILE), "summary.json differs in {other:?}");
        assert!(bytes(&runs[0], DIFF_FILE) == bytes(other, DIFF_FILE), "diff.jsonl differs in {other:?}");
    }
    assert!(summary(&runs[0])["run_hash"].as_str().unwrap().starts_with("sha256:"));
}

#[test]
fn gzip_input_replays_like_plain() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let input = workload(dir.path());
    let gz = dir.path().join("activity.jsonl.gz");
    let mut encoder = flate2::write::GzEncoder::new(std::fs::File::create(&gz).unwrap(), flate2::Compression::fast());
    encoder.write_all(&std::fs::read(&input).unwrap()).unwrap();
    encoder.finish().unwrap();
    let candidate = candidate_dir(dir.path());
    let (plain_out, gz_out) = (dir.path().join("plain"), dir.path().join("gz"));
    replay(&config(&input, &candidate, shipped_baseline(), &plain_out, 2)).unwrap();
    replay(&config(&gz, &candidate, shipped_baseline(), &gz_out, 2)).unwrap();
    assert!(bytes(&plain_out, SUMMARY_FILE) == bytes(&gz_out, SUMMARY_FILE));
    assert!(bytes(&plain_out, DIFF_FILE) == bytes(&gz_out, DIFF_FILE));
}

/// What `vigil run` records under the shipped rules: its `decisions.jsonl`.
fn record_shipped(input: &Path, dir: &Path) -> PathBuf {
    let recorded = dir.join("recorded");
    let host = RuleHost::compile(RulesetSource::load(&shipped_dir()).unwrap()).unwrap();
    let mut pipeline = Pipeline::new(host, StateConfig::default());
    let mut source = JsonlSource::open(input.to_str().unwrap()).unwrap();
    let mut sink = JsonlSink::create(&recorded).unwrap();
    pipeline::run(&mut source, &mut pipeline, &mut sink, &AtomicBool::new(false)).unwrap();
    recorded.join("decisions.jsonl")
}

#[test]
fn recorded_decisions_diff_like_the_ruleset_that_made_them() {
    let dir = tempfile::tempdir().unwrap();
    let input = workload(dir.path());
    let candidate = candidate_dir(dir.path());
    let recorded = record_shipped(&input, dir.path());

    let (by_rules, by_record) = (dir.path().join("rules"), dir.path().join("record"));
    replay(&config(&input, &candidate, shipped_baseline(), &by_rules, 2)).unwrap();
    replay(&config(&input, &candidate, Baseline::Recorded(recorded), &by_record, 2)).unwrap();
    assert!(bytes(&by_rules, DIFF_FILE) == bytes(&by_record, DIFF_FILE));
    let (a, b) = (summary(&by_rules), summary(&by_record));
    for key in ["changed", "compared", "transitions", "matrix", "rules", "examples", "timeline"] {
        assert_eq!(a[key], b[key], "{key}");
    }
    assert_eq!(b["only_candidate"], 0);
    assert_eq!(b["only_baseline"], 0);
    assert_eq!(b["baseline"]["kind"], "recorded");
    assert_eq!(b["baseline"]["rulesets"], a["baseline"]["rulesets"]);
}

/// The candidate is the ruleset that made the recording, so only what was
/// changed in the file can differ: one verdict edited, one reason's rule
/// renamed, two lines broken.
#[test]
fn edited_and_broken_recorded_decisions_are_what_the_diff_shows() {
    let dir = tempfile::tempdir().unwrap();
    let input = workload(dir.path());
    let recorded = record_shipped(&input, dir.path());
    let text = std::fs::read_to_string(&recorded).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let event_id = |line: &str| serde_json::from_str::<Decision>(line).unwrap().event_id;
    let allow = lines.iter().position(|l| l.contains("\"decision\":\"allow\"")).unwrap();
    let edited = event_id(&lines[allow]);
    lines[allow] = lines[allow].replace("\"decision\":\"allow\"", "\"decision\":\"deny\"");
    let with_rule = lines
        .iter()
        .position(|l| l.contains("\"rule\":\"scope_drift\"") && !l.contains("\"decision\":\"allow\""))
        .unwrap();
    lines[with_rule] = lines[with_rule].replace("\"rule\":\"scope_drift\"", "\"rule\":\"scope_drift_v0\"");
    // One line broken within its ids, one after them: the reader finds no
    // event id in the first, the worker no decision in the second.
    let allows: Vec<usize> = (0..lines.len()).filter(|&i| lines[i].contains("\"decision\":\"allow\"")).collect();
    let (early, late) = (allows[allows.len() - 2], allows[allows.len() - 1]);
    lines[early].truncate(40);
    let reasons = lines[late].find("\"reasons\"").unwrap();
    lines[late].truncate(reasons);
    std::fs::write(&recorded, lines.join("\n") + "\n").unwrap();

    let out = dir.path().join("out");
    replay(&config(&input, &shipped_dir(), Baseline::Recorded(recorded), &out, 2)).unwrap();
    let s = summary(&out);
    assert_eq!(s["changed"], 1);
    assert_eq!(s["reasons_changed"], 1);
    assert_eq!(s["baseline_unreadable"], 2);
    assert_eq!(s["only_candidate"], 2, "the broken lines' events have no baseline");
    assert_eq!(s["matrix"]["deny"]["allow"], 1);
    let rules: Vec<(&str, u64, u64)> = s["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["rule"].as_str().unwrap(), r["added"].as_u64().unwrap(), r["removed"].as_u64().unwrap()))
        .collect();
    assert_eq!(rules, [("scope_drift", 1, 0), ("scope_drift_v0", 0, 1)]);
    let diff = String::from_utf8(bytes(&out, DIFF_FILE)).unwrap();
    assert_eq!(diff.lines().count(), 1);
    assert!(diff.contains(&format!("\"event_id\":\"{edited}\"")), "{diff}");
}

/// A leak goes to the worker of the first *valid* event that carried its
/// credential. Here an invalid event of one agent carries the credential
/// first; another agent is then issued it, the leak quarantines that
/// agent, and its next action is denied. Replayed on two workers against
/// what one pipeline recorded, with the recording's own rules, no decision
/// may differ: a leak sent to the invalid event's worker would find no
/// credential there, and the action would be allowed.
#[test]
fn a_leak_follows_the_first_valid_event_with_its_credential() {
    let dir = tempfile::tempdir().unwrap();
    let mut lines = Vec::new();
    for i in 0..8 {
        let (bad, holder, cred, task) = (format!("bad-{i}"), format!("holder-{i}"), format!("cred-{i}"), format!("task-{i}"));
        let at = |s: u32| format!("2026-11-28T09:{i:02}:{s:02}Z");
        let event = |id: &str, agent: &str, workload: &str, s: u32, rest: &str| {
            format!(
                r#"{{"event_id":"{id}","time":"{}","tenant":"acme","agent_id":"{agent}","workload_id":"{workload}","identity":{{"method":"x509_svid","verified":true}},"task_id":"{task}",{rest}}}"#,
                at(s)
            )
        };
        let spiffe = format!("spiffe://acme.example/agents/{holder}");
        lines.push(event(&format!("e{i}-0"), &bad, "not-a-spiffe-id", 0, &format!(r#""kind":"tool_call","tool":"docs.search","credential":{{"id":"{cred}"}}"#)));
        lines.push(event(&format!("e{i}-1"), &holder, &spiffe, 1, r#""kind":"task_started","scope":{"tools":["docs.search"],"targets":["docs/*"],"data_classes":["internal"]}"#));
        lines.push(event(&format!("e{i}-2"), &holder, &spiffe, 2, &format!(r#""kind":"credential_issued","credential":{{"id":"{cred}","scopes":["docs/wiki:read"],"ttl_s":3600}}"#)));
        lines.push(format!(r#"{{"signal_id":"s{i}","time":"{}","tenant":"acme","kind":"credential_leaked","severity":"critical","credential_id":"{cred}"}}"#, at(3)));
        lines.push(event(&format!("e{i}-4"), &holder, &spiffe, 4, &format!(r#""kind":"tool_call","tool":"docs.search","target":"docs/wiki","operation":"read","data_class":"internal","credential":{{"id":"{cred}"}}"#)));
    }
    let input = dir.path().join("leaks.jsonl");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let recorded = record_shipped(&input, dir.path());
    let denied_after_leak = std::fs::read_to_string(&recorded)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Decision>(l).unwrap())
        .filter(|d| d.event_id.ends_with("-4") && d.decision == Verdict::Deny)
        .count();
    assert_eq!(denied_after_leak, 8, "every leak quarantines the holder in the recording");

    let out = dir.path().join("out");
    replay(&config(&input, &shipped_dir(), Baseline::Recorded(recorded), &out, 2)).unwrap();
    let s = summary(&out);
    assert_eq!(s["compared"], 24);
    assert_eq!(s["changed"], 0, "{}", String::from_utf8_lossy(&bytes(&out, DIFF_FILE)));
    assert_eq!(s["input"]["dead_letters"]["invalid_field"], 8);
}

/// Width and height from a PNG's header.
fn png_size(png: &[u8]) -> Option<(u32, u32)> {
    if png.len() < 24 || &png[..8] != b"\x89PNG\r\n\x1a\n" {
        return None;
    }
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    Some((be(&png[16..20]), be(&png[20..24])))
}

#[test]
fn the_report_is_self_contained_and_renders() {
    let dir = tempfile::tempdir().unwrap();
    let input = workload(dir.path());
    let candidate = candidate_dir(dir.path());
    let out = dir.path().join("out");
    replay(&config(&input, &candidate, shipped_baseline(), &out, 2)).unwrap();
    let html = String::from_utf8(bytes(&out, REPORT_FILE)).unwrap();
    for chart in ["id=\"timeline\"", "id=\"matrix\"", "id=\"rules\""] {
        assert!(html.contains(&format!("<svg class=\"chart\" {chart}")), "missing chart {chart}");
    }
    assert!(html.contains("<table id=\"examples\">"));
    assert!(html.contains(NEW_RULE_ID));
    assert!(html.matches("<tr>").count() > 10, "the example table has rows");
    assert!(!html.contains("<script"), "no scripts");
    for external in ["src=", "href=", "@import", "url("] {
        assert!(!html.contains(external), "nothing loaded from elsewhere: {external}");
    }

    if std::env::var_os("CI").is_none() && std::env::var_os("VIGIL_RENDER_TEST").is_none() {
        return;
    }
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/replay-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    std::fs::copy(out.join(REPORT_FILE), artifacts.join(REPORT_FILE)).unwrap();
    let png = artifacts.join("report.png");
    let _ = std::fs::remove_file(&png);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/render.sh");
    let status = std::process::Command::new("bash").arg(script).arg(out.join(REPORT_FILE)).arg(&png).status().unwrap();
    assert!(status.success(), "render.sh failed");
    let image = std::fs::read(&png).unwrap();
    assert_eq!(png_size(&image), Some((1280, 2000)));
    assert!(image.len() > 50_000, "a screenshot of charts and tables is not tiny: {} bytes", image.len());
}

/// The same records as JSON Lines and as an Avro object container file under
/// a union of the shipped activity and signal schemas. Lines that are not
/// JSON objects (the workload's one broken record) have no Avro form and are
/// left out of both.
fn jsonl_and_ocf(dir: &Path, codec: apache_avro::Codec, name: &str) -> (PathBuf, PathBuf) {
    use apache_avro::types::Value;
    use vigil::decode::avro::{ACTIVITY_EVENT_AVSC, SIGNAL_AVSC};
    let union = apache_avro::Schema::parse_str(&format!("[{ACTIVITY_EVENT_AVSC},{SIGNAL_AVSC}]")).unwrap();
    let branches =
        [apache_avro::Schema::parse_str(ACTIVITY_EVENT_AVSC).unwrap(), apache_avro::Schema::parse_str(SIGNAL_AVSC).unwrap()];
    let text = std::fs::read_to_string(workload(dir)).unwrap();
    let records: Vec<serde_json::Value> =
        text.lines().filter_map(|l| serde_json::from_str(l).ok()).filter(serde_json::Value::is_object).collect();
    assert!(records.len() + 1 == text.lines().count(), "only the broken line is left out");
    let jsonl = dir.join(format!("{name}.jsonl"));
    let lines: Vec<String> = records.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(&jsonl, lines.concat()).unwrap();
    let ocf = dir.join(format!("{name}.avro"));
    let mut writer = apache_avro::Writer::with_codec(&union, std::fs::File::create(&ocf).unwrap(), codec);
    for record in records {
        let branch = usize::from(record.get("signal_id").is_some());
        let value = Value::from(record).resolve(&branches[branch]).unwrap();
        writer.append(Value::Union(branch as u32, Box::new(value))).unwrap();
    }
    writer.into_inner().unwrap();
    (jsonl, ocf)
}

#[test]
fn avro_container_input_replays_like_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let deflate = apache_avro::Codec::Deflate(apache_avro::DeflateSettings::default());
    let (jsonl, ocf) = jsonl_and_ocf(dir.path(), deflate, "deflate");
    // Detected by the container magic, not by the name.
    let disguised = dir.path().join("activity.jsonl");
    std::fs::copy(&ocf, &disguised).unwrap();
    let candidate = candidate_dir(dir.path());
    let (json_out, ocf_out) = (dir.path().join("json"), dir.path().join("ocf"));
    replay(&config(&jsonl, &candidate, shipped_baseline(), &json_out, 2)).unwrap();
    replay(&config(&disguised, &candidate, shipped_baseline(), &ocf_out, 2)).unwrap();
    assert!(bytes(&json_out, DIFF_FILE) == bytes(&ocf_out, DIFF_FILE), "diff.jsonl differs");
    assert!(!diff_lines(&json_out).is_empty());
    let (a, b) = (summary(&json_out), summary(&ocf_out));
    assert!(a["input"]["records"].as_u64().unwrap() > 500);
    assert_eq!(a["input"]["dead_letters"], b["input"]["dead_letters"]);
    assert!(a["input"]["dead_letters"].as_object().is_some_and(|d| !d.is_empty()), "invalid events stay dead letters");
    for key in ["changed", "compared", "transitions", "matrix", "rules", "examples", "timeline", "commands", "candidate"] {
        assert_eq!(a[key], b[key], "{key}");
    }
    assert_eq!((&a["input"]["records"], &a["input"]["events"]), (&b["input"]["records"], &b["input"]["events"]));

    // The digest covers the decoded datums: another codec and sync marker,
    // the same run hash.
    let plain = dir.path().join("plain");
    std::fs::create_dir_all(&plain).unwrap();
    let (_, ocf_null) = jsonl_and_ocf(&plain, apache_avro::Codec::Null, "null");
    assert!(std::fs::read(&ocf_null).unwrap() != std::fs::read(&ocf).unwrap());
    let null_out = dir.path().join("ocf-null");
    replay(&config(&ocf_null, &candidate, shipped_baseline(), &null_out, 1)).unwrap();
    assert_eq!(summary(&null_out)["run_hash"], b["run_hash"]);
    assert!(bytes(&null_out, DIFF_FILE) == bytes(&ocf_out, DIFF_FILE));
}

#[test]
fn a_corrupt_avro_container_is_refused_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let (_, ocf) = jsonl_and_ocf(dir.path(), apache_avro::Codec::Null, "events");
    let mut damaged = std::fs::read(&ocf).unwrap();
    let len = damaged.len();
    damaged.truncate(len - 40);
    let cut = dir.path().join("cut.avro");
    std::fs::write(&cut, damaged).unwrap();
    let candidate = candidate_dir(dir.path());
    let err = replay(&config(&cut, &candidate, shipped_baseline(), &dir.path().join("out"), 1)).unwrap_err();
    assert!(err.to_string().contains("cut.avro"), "{err}");
}

/// Verdict counts as `summary.json` writes them.
fn counts(decisions: &[Decision]) -> serde_json::Value {
    let mut counts = serde_json::Map::new();
    for verdict in Verdict::ALL {
        let n = decisions.iter().filter(|d| d.decision == verdict).count();
        counts.insert(serde_json::to_value(verdict).unwrap().as_str().unwrap().to_owned(), n.into());
    }
    counts.into()
}

/// `rules` deciding `lines` through one pipeline on `state`.
fn decide_on(state: vigil::state::State, rules: &Path, lines: &[&str]) -> Vec<Decision> {
    let host = RuleHost::compile(RulesetSource::load(rules).unwrap()).unwrap();
    let mut pipeline = Pipeline::new(host, StateConfig::default());
    pipeline.state = state;
    let mut decisions = Vec::new();
    let mut out = Outputs::default();
    for line in lines {
        out.clear();
        pipeline.process(&vigil::source::Record { payload: line.as_bytes().to_vec(), ..Default::default() }, &mut out);
        decisions.extend(out.decisions.iter().cloned());
    }
    decisions
}

/// A live engine checkpoints halfway through the trace; replaying the
/// second half from that checkpoint decides it, on both sides, as pipelines
/// that start from the checkpoint's state do, and not as from nothing.
#[test]
fn a_replay_from_a_checkpoint_starts_both_rulesets_from_its_state() {
    use vigil::checkpoint::{self, RedbStore};
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(workload(dir.path())).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let (first, second) = lines.split_at(lines.len() / 2);
    let candidate = candidate_dir(dir.path());

    // The live engine: the shipped rules over the first half, then a checkpoint.
    let store_dir = dir.path().join("checkpoint");
    std::fs::create_dir_all(&store_dir).unwrap();
    let store_file = store_dir.join(vigil::kafka::STORE_FILE);
    {
        let host = RuleHost::compile(RulesetSource::load(&shipped_dir()).unwrap()).unwrap();
        let mut live = Pipeline::new(host, StateConfig::default());
        let mut out = Outputs::default();
        for line in first {
            out.clear();
            live.process(&vigil::source::Record { payload: line.as_bytes().to_vec(), ..Default::default() }, &mut out);
        }
        let store = RedbStore::open(&store_file).unwrap();
        checkpoint::checkpoint(&mut live.state, &store, &Default::default()).unwrap();
    }
    let restored = || checkpoint::restore(&RedbStore::open(&store_file).unwrap(), StateConfig::default()).unwrap().0;
    let expected_baseline = decide_on(restored(), &shipped_dir(), second);
    let expected_candidate = decide_on(restored(), &candidate, second);
    let from_nothing = decide_on(vigil::state::State::new(StateConfig::default()), &shipped_dir(), second);
    assert_ne!(counts(&expected_baseline), counts(&from_nothing), "the first half changes nothing, so the test shows nothing");

    let input = dir.path().join("second-half.jsonl");
    std::fs::write(&input, second.join("\n") + "\n").unwrap();
    let out = dir.path().join("from-checkpoint");
    let mut from_checkpoint = config(&input, &candidate, shipped_baseline(), &out, 2);
    from_checkpoint.checkpoint = Some(store_dir);
    replay(&from_checkpoint).unwrap();
    let s = summary(&out);
    assert_eq!(s["baseline"]["decisions"], counts(&expected_baseline));
    assert_eq!(s["candidate"]["decisions"], counts(&expected_candidate));
    assert_eq!(s["checkpoint"]["sha256"].as_str().map(str::len), Some(64));
    let report = String::from_utf8(bytes(&out, REPORT_FILE)).unwrap();
    assert!(report.contains(&format!("from checkpoint {}", s["checkpoint"]["sha256"].as_str().unwrap())));

    let plain = dir.path().join("from-nothing");
    replay(&config(&input, &candidate, shipped_baseline(), &plain, 2)).unwrap();
    assert_eq!(summary(&plain)["baseline"]["decisions"], counts(&from_nothing));
    assert!(summary(&plain).get("checkpoint").is_none());
    assert_ne!(s["run_hash"], summary(&plain)["run_hash"]);

    // A topic range from its earliest record would fold the checkpoint's
    // events again: refused, before any broker is asked.
    let range = vigil_replay::KafkaRange {
        brokers: "127.0.0.1:9".into(),
        topics: vec!["agent.activity".into()],
        from: vigil_replay::Bound::Edge,
        to: vigil_replay::Bound::Edge,
        properties: Default::default(),
        schema_registry: None,
    };
    let mut unstarted = config(&input, &candidate, shipped_baseline(), &dir.path().join("y"), 1);
    unstarted.input = ReplayInput::Kafka(range);
    unstarted.checkpoint = from_checkpoint.checkpoint.clone();
    let error = replay(&unstarted).unwrap_err().to_string();
    assert!(error.contains("needs a start"), "{error}");

    // A path with no store is refused by name, before any work.
    let mut missing = config(&input, &candidate, shipped_baseline(), &dir.path().join("x"), 1);
    missing.checkpoint = Some(dir.path().join("nowhere"));
    let error = replay(&missing).unwrap_err().to_string();
    assert!(error.contains("nowhere") && error.contains("no checkpoint store"), "{error}");
}
