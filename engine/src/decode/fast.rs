//! A direct reader for the JSON records nearly every producer writes, in
//! front of serde_json.
//!
//! Decoding is the largest single stage of an event's path, and most of
//! serde's cost there is generality this input does not need. This reader
//! knows [`RawRecord`]'s fields and accepts a strict subset of JSON:
//! strings without escapes, integers without fraction or exponent, each
//! field at most once. Anything else (an escape, a float, a duplicate, a
//! syntax error, nesting past a small depth) makes it answer `None`, and
//! serde_json decodes the record as before, with its own error message. So
//! whatever this reader accepts, serde_json accepts with the same value;
//! the tests hold it to that.

use super::raw::{RawApproval, RawCredential, RawIdentity, RawRecord, RawScope};
use crate::json::Cursor;

/// The record in `text`, if it is in the subset this reader takes.
pub(super) fn parse(text: &str) -> Option<RawRecord<'_>> {
    let mut c = Cursor::new(text);
    let mut r = RawRecord::default();
    c.object(|c, key| {
        match key {
            "event_id" => c.put(&mut r.event_id, Cursor::string),
            "signal_id" => c.put(&mut r.signal_id, Cursor::string),
            "time" => c.put(&mut r.time, Cursor::borrowed),
            "tenant" => c.put(&mut r.tenant, Cursor::string),
            "agent_id" => c.put(&mut r.agent_id, Cursor::string),
            "workload_id" => c.put(&mut r.workload_id, Cursor::string),
            "identity" => c.put(&mut r.identity, identity),
            "task_id" => c.put(&mut r.task_id, Cursor::string),
            "kind" => c.put(&mut r.kind, Cursor::borrowed),
            "tool" => c.put(&mut r.tool, Cursor::string),
            "target" => c.put(&mut r.target, Cursor::string),
            "operation" => c.put(&mut r.operation, Cursor::string),
            "data_class" => c.put(&mut r.data_class, Cursor::borrowed),
            "bytes" => c.put(&mut r.bytes, Cursor::int),
            "parent_event_id" => c.put(&mut r.parent_event_id, Cursor::string),
            "trust_boundary" => c.put(&mut r.trust_boundary, Cursor::string),
            "scope" => c.put(&mut r.scope, scope),
            "credential" => c.put(&mut r.credential, credential),
            "approval" => c.put(&mut r.approval, approval),
            "attributes" => c.put(&mut r.attributes, Cursor::string_map),
            "severity" => c.put(&mut r.severity, Cursor::borrowed),
            "credential_id" => c.put(&mut r.credential_id, Cursor::string),
            _ => c.skip(0),
        }
    })?;
    c.end()?;
    Some(r)
}

/// The ids of an activity event in the subset, borrowed; the other fields
/// are walked over, so the whole record is held to the subset.
pub(super) fn activity_key(text: &str) -> Option<super::ActivityKey<'_>> {
    let mut c = Cursor::new(text);
    let (mut event_id, mut signal_id, mut tenant, mut agent_id, mut credential) = (None, None, None, None, None);
    let mut time = None;
    c.object(|c, key| match key {
        "event_id" => c.put(&mut event_id, Cursor::str),
        "time" => c.put(&mut time, Cursor::str),
        "signal_id" => c.put(&mut signal_id, Cursor::str),
        "tenant" => c.put(&mut tenant, Cursor::str),
        "agent_id" => c.put(&mut agent_id, Cursor::str),
        "credential" => c.put(&mut credential, credential_id),
        _ => c.skip(0),
    })?;
    c.end()?;
    if signal_id.is_some() {
        return None;
    }
    Some(super::ActivityKey {
        event_id: event_id?,
        tenant: tenant?,
        agent_id: agent_id?,
        credential_id: credential.flatten(),
        time,
    })
}

fn credential_id<'a>(c: &mut Cursor<'a>) -> Option<Option<&'a str>> {
    let mut id = None;
    c.object(|c, key| match key {
        "id" => c.put(&mut id, Cursor::str),
        _ => c.skip(0),
    })?;
    Some(id)
}

fn identity<'a>(c: &mut Cursor<'a>) -> Option<RawIdentity<'a>> {
    let mut r = RawIdentity::default();
    c.object(|c, key| match key {
        "method" => c.put(&mut r.method, Cursor::borrowed),
        "verified" => c.put(&mut r.verified, Cursor::bool),
        _ => c.skip(0),
    })?;
    Some(r)
}

fn scope(c: &mut Cursor) -> Option<RawScope> {
    let mut r = RawScope::default();
    c.object(|c, key| match key {
        "tools" => c.put(&mut r.tools, Cursor::strings),
        "targets" => c.put(&mut r.targets, Cursor::strings),
        "data_classes" => c.put(&mut r.data_classes, Cursor::strings),
        "max_duration_s" => c.put(&mut r.max_duration_s, Cursor::int),
        "egress_budget_bytes" => c.put(&mut r.egress_budget_bytes, Cursor::int),
        _ => c.skip(0),
    })?;
    Some(r)
}

fn credential(c: &mut Cursor) -> Option<RawCredential> {
    let mut r = RawCredential::default();
    c.object(|c, key| match key {
        "id" => c.put(&mut r.id, Cursor::string),
        "scopes" => c.put(&mut r.scopes, Cursor::strings),
        "ttl_s" => c.put(&mut r.ttl_s, Cursor::int),
        _ => c.skip(0),
    })?;
    Some(r)
}

fn approval(c: &mut Cursor) -> Option<RawApproval> {
    let mut r = RawApproval::default();
    c.object(|c, key| match key {
        "decision_id" => c.put(&mut r.decision_id, Cursor::string),
        "granted" => c.put(&mut r.granted, Cursor::bool),
        "approver" => c.put(&mut r.approver, Cursor::string),
        _ => c.skip(0),
    })?;
    Some(r)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{activity_key, parse};
    use crate::decode::ActivityKey;
    use crate::event::Input;
    use crate::decode::raw::{RawIdentity, RawRecord, RawScope};
    use crate::decode::shape::struct_fields;

    fn serde(text: &str) -> Option<RawRecord<'_>> {
        serde_json::from_str(text).ok()
    }

    /// Whatever the fast reader accepts, serde accepts with the same value.
    fn agrees(text: &str) -> Result<(), TestCaseError> {
        if let Some(fast) = parse(text) {
            prop_assert_eq!(Some(fast), serde(text), "{}", text);
        }
        Ok(())
    }

    /// Whatever ids and time the key reader finds, serde reads the same,
    /// from an activity event.
    fn key_agrees(text: &str) -> Result<(), TestCaseError> {
        let Some(key) = activity_key(text) else { return Ok(()) };
        let Some(raw) = serde(text) else { return Err(TestCaseError::fail(format!("serde refuses {text}"))) };
        prop_assert!(raw.signal_id.is_none(), "{}", text);
        prop_assert_eq!(raw.event_id.as_deref(), Some(key.event_id), "{}", text);
        prop_assert_eq!(raw.tenant.as_deref(), Some(key.tenant), "{}", text);
        prop_assert_eq!(raw.agent_id.as_deref(), Some(key.agent_id), "{}", text);
        let credential_id = raw.credential.and_then(|c| c.id);
        prop_assert_eq!(credential_id.as_deref(), key.credential_id, "{}", text);
        prop_assert_eq!(raw.time.as_deref(), key.time, "{}", text);
        Ok(())
    }

    fn demo_lines() -> &'static [String] {
        static LINES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
        LINES.get_or_init(|| crate::workload::generate(&crate::workload::WorkloadSpec::default()))
    }

    /// Every well-formed demo record without an escape is read here, the
    /// same as serde reads it; the demo's deliberately broken ones are not.
    #[test]
    fn the_demo_records_take_the_fast_path() {
        let mut fast = 0;
        for line in demo_lines() {
            match serde(line) {
                Some(expected) if !line.contains('\\') => {
                    assert_eq!(parse(line), Some(expected), "{line}");
                    fast += 1;
                }
                _ => assert_eq!(parse(line), None, "{line}"),
            }
        }
        assert!(fast * 100 > demo_lines().len() * 99, "{fast} of {}", demo_lines().len());
    }

    /// Every demo event without an escape is keyed by its decoded ids and
    /// time, and no signal is keyed.
    #[test]
    fn a_demo_event_is_keyed_by_its_own_ids() {
        let mut keyed = 0;
        for line in demo_lines() {
            let key = activity_key(line);
            match crate::decode::decode_json(line.as_bytes()) {
                Ok(Input::Activity(e)) if !line.contains('\\') => {
                    let credential_id = e.credential.as_ref().map(|c| c.id.as_str());
                    let ids = ActivityKey { event_id: &e.event_id, tenant: &e.tenant, agent_id: &e.agent_id, credential_id, time: key.and_then(|k| k.time) };
                    assert_eq!(key, Some(ids), "{line}");
                    let time = key.and_then(|k| k.time).and_then(crate::event::Timestamp::parse_rfc3339);
                    assert_eq!(time, Some(e.time), "{line}");
                    keyed += 1;
                }
                Ok(Input::Signal(_)) => assert_eq!(key, None, "{line}"),
                _ => {}
            }
        }
        assert!(keyed * 100 > demo_lines().len() * 95, "{keyed} of {}", demo_lines().len());
    }

    #[test]
    fn every_field_is_read_not_skipped() {
        let nested = [
            ("identity", struct_fields::<RawIdentity>()),
            ("scope", struct_fields::<RawScope>()),
            ("credential", struct_fields::<crate::decode::raw::RawCredential>()),
            ("approval", struct_fields::<crate::decode::raw::RawApproval>()),
        ];
        let samples = ["\"x\"", "7", "true", "[\"a\",\"b\"]", "{\"a\":\"b\"}"];
        let mut texts = Vec::new();
        for field in struct_fields::<RawRecord>() {
            texts.extend(samples.iter().map(|v| format!("{{\"{field}\":{v}}}")));
        }
        for (outer, fields) in nested {
            for field in fields {
                texts.extend(samples.iter().map(|v| format!("{{\"{outer}\":{{\"{field}\":{v}}}}}")));
            }
        }
        let mut read = 0;
        for text in &texts {
            if let Some(expected) = serde(text).filter(|r| *r != RawRecord::default()) {
                assert_eq!(parse(text), Some(expected), "{text}");
                read += 1;
            }
        }
        assert!(read >= 30, "only {read} samples had a typed value");
    }


    /// The fields that are only parsed are read in place, not copied.
    #[test]
    fn parse_only_fields_are_borrowed() {
        use std::borrow::Cow;
        let text = r#"{"time":"2026-11-28T09:00:00Z","kind":"tool_call","data_class":"pii","identity":{"method":"x509_svid"}}"#;
        let Some(r) = parse(text) else { unreachable!("a plain record takes the fast path") };
        let method = r.identity.as_ref().and_then(|i| i.method.as_ref());
        for field in [r.time.as_ref(), r.kind.as_ref(), r.data_class.as_ref(), method] {
            assert!(matches!(field, Some(Cow::Borrowed(_))), "{field:?}");
        }
        let Ok(owned) = serde_json::from_str::<RawRecord<'_>>(text) else { unreachable!("valid JSON") };
        assert_eq!(owned, r);
    }

    #[test]
    fn leaves_the_rest_to_serde() {
        for text in [
            r#"{"event_id":"a\"b"}"#,
            r#"{"bytes":1.5}"#,
            r#"{"bytes":1e3}"#,
            r#"{"bytes":01}"#,
            r#"{"bytes":99999999999999999999}"#,
            r#"{"event_id":"a","event_id":"b"}"#,
            r#"{"event_id":null,"event_id":"b"}"#,
            r#"{"event_id":"a"} x"#,
            r#"{"event_id":"a",}"#,
            r#"{"extra":[1,{"x":2.5}]}"#,
            "[1]",
        ] {
            assert_eq!(parse(text), None, "{text}");
        }
        assert!(parse(r#" { "extra" : [1, {"x": [true, null]}], "event_id" : "e" } "#).is_some());
    }

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            "\"[a-z:/ \\\\\"\t.-]{0,6}\"",
            "-?[0-9]{1,3}(\\.[0-9])?",
            Just("99999999999999999999".to_owned()),
            Just("true".to_owned()),
            Just("null".to_owned()),
            Just("[\"a\", \"b\"]".to_owned()),
            Just("[1, null]".to_owned()),
            Just("{\"method\":\"x509_svid\",\"verified\":true}".to_owned()),
            Just("{\"id\":\"c\",\"scopes\":[\"s\"],\"ttl_s\":60}".to_owned()),
            Just("{\"a\":\"b\",\"a\":\"c\"}".to_owned()),
        ]
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            proptest::sample::select(struct_fields::<RawRecord>()),
            Just("extra".to_owned()),
            Just("method".to_owned()),
            Just("ttl_s".to_owned()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn accepts_nothing_serde_reads_otherwise(
            fields in proptest::collection::vec((key(), value()), 0..6),
            space in "[ \t\n]{0,2}",
        ) {
            let body: Vec<String> = fields.iter().map(|(k, v)| format!("{space}\"{k}\"{space}:{space}{v}")).collect();
            let text = format!("{{{}}}{space}", body.join(","));
            agrees(&text)?;
            key_agrees(&text)?;
        }

        #[test]
        fn a_garbled_record_is_never_read_differently(cut in 0usize..400, byte in any::<u8>()) {
            let lines = demo_lines();
            let mut bytes = lines[cut % lines.len()].clone().into_bytes();
            let at = cut % bytes.len();
            bytes[at] = byte;
            if let Ok(text) = std::str::from_utf8(&bytes) {
                agrees(text)?;
                key_agrees(text)?;
            }
        }
    }
}
