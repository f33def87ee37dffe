//! Avro in the Confluent wire format: magic byte 0, a 4-byte big-endian
//! schema id, then the Avro binary datum.
//!
//! Schema ids resolve through an id map to schema files (by default the four
//! shipped in `schemas/`, see [`shipped_ids`]) and, when a Schema Registry is
//! configured, through `GET {registry}/schemas/ids/{id}`. A resolved schema is
//! parsed once and cached for the life of the decoder.
//!
//! Records are decoded with the writer's schema into a [`RawRecord`], so the
//! validation that JSON gets (required fields, enum values, SPIFFE IDs) is the
//! same code for Avro.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use apache_avro::types::Value;
use apache_avro::Schema;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::{DecodeError, RawRecord};
use crate::event::{Input, Timestamp};
use crate::verdict::{ControlCommand, Decision, Mode, Reason, RuleFault, Verdict};

pub const ACTIVITY_EVENT_AVSC: &str = include_str!("../../../schemas/activity_event.avsc");
pub const SIGNAL_AVSC: &str = include_str!("../../../schemas/signal.avsc");
pub const DECISION_AVSC: &str = include_str!("../../../schemas/decision.avsc");
pub const CONTROL_COMMAND_AVSC: &str = include_str!("../../../schemas/control_command.avsc");

/// Schema ids of the shipped schemas when no Schema Registry assigns them.
/// A registry numbers schemas itself: with one, use
/// [`AvroDecoder::with_registry`] so that every id comes from it, and
/// [`AvroEncoder::with_ids`] with the ids it assigned.
pub const ACTIVITY_EVENT_ID: u32 = 1;
pub const SIGNAL_ID: u32 = 2;
pub const DECISION_ID: u32 = 3;
pub const CONTROL_COMMAND_ID: u32 = 4;

const HEADER_LEN: usize = 5;
const MAGIC: u8 = 0;

/// How long one registry request may take. A worker blocks on it, so a
/// registry that hangs must not hang the partition.
const REGISTRY_TIMEOUT: Duration = Duration::from_secs(5);
/// After a failed lookup, records with that id are refused with the same
/// error for a while instead of each paying for another request.
const RETRY_AFTER_UNKNOWN: Duration = Duration::from_secs(60);
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);
const MAX_REMEMBERED_FAILURES: usize = 1024;
/// A schema is a few kilobytes; anything near this is not a schema response.
const MAX_REGISTRY_RESPONSE: u64 = 4 * 1024 * 1024;
/// apache-avro allocates what a length or item count in the datum claims
/// before reading the items, up to a process-wide cap (512 MiB by default).
/// An array count is multiplied by the size of its in-memory values, so a
/// ten-byte record claiming 500 million items asks for gigabytes and aborts
/// the process where that much memory is not there. No event needs a string
/// or an array near this size.
pub const MAX_AVRO_ALLOCATION: usize = 16 * 1024 * 1024;

/// The shipped id map, for [`AvroDecoder::from_schema_dir`] on a copy of
/// `schemas/`: 1 = activity_event, 2 = signal, 3 = decision, 4 = control_command.
pub fn shipped_ids() -> BTreeMap<u32, String> {
    [
        (ACTIVITY_EVENT_ID, "activity_event.avsc"),
        (SIGNAL_ID, "signal.avsc"),
        (DECISION_ID, "decision.avsc"),
        (CONTROL_COMMAND_ID, "control_command.avsc"),
    ]
    .into_iter()
    .map(|(id, name)| (id, name.to_owned()))
    .collect()
}

/// Setting up Avro schemas or encoding a value failed.
#[derive(Debug, Error)]
pub enum AvroError {
    #[error("cannot read schema file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("invalid avro schema {name}: {reason}")]
    Schema { name: String, reason: String },
    #[error("schema registry: {0}")]
    Registry(String),
    #[error("value does not fit schema {schema_id}: {reason}")]
    Encode { schema_id: u32, reason: String },
}

/// Resolves schema ids to parsed schemas and decodes datums.
///
/// The cache sits behind a lock so that a lookup can be made through `&self`;
/// the decoder normally lives on one worker thread and the lock is uncontended.
#[derive(Debug)]
pub struct AvroDecoder {
    schemas: Mutex<BTreeMap<u32, Arc<Schema>>>,
    registry: Option<Registry>,
}

#[derive(Debug)]
struct Registry {
    base: String,
    agent: ureq::Agent,
    /// Ids whose lookup failed: until when to keep refusing, and with what.
    failed: Mutex<BTreeMap<u32, (Instant, DecodeError)>>,
}

impl Default for AvroDecoder {
    /// A decoder that knows no schema: every id is unknown.
    fn default() -> AvroDecoder {
        AvroDecoder::from_schemas(BTreeMap::new())
    }
}

impl AvroDecoder {
    fn from_schemas(schemas: BTreeMap<u32, Arc<Schema>>) -> AvroDecoder {
        // The cap is process-wide and the first caller sets it, apache-avro's
        // own first decode included: set it before any datum is read.
        apache_avro::util::max_allocation_bytes(MAX_AVRO_ALLOCATION);
        AvroDecoder { schemas: Mutex::new(schemas), registry: None }
    }

    /// The four shipped schemas under their default ids
    /// (1 = activity_event, 2 = signal, 3 = decision, 4 = control_command).
    pub fn shipped() -> Result<AvroDecoder, AvroError> {
        let mut schemas = BTreeMap::new();
        for (id, name, text) in [
            (ACTIVITY_EVENT_ID, "activity_event.avsc", ACTIVITY_EVENT_AVSC),
            (SIGNAL_ID, "signal.avsc", SIGNAL_AVSC),
            (DECISION_ID, "decision.avsc", DECISION_AVSC),
            (CONTROL_COMMAND_ID, "control_command.avsc", CONTROL_COMMAND_AVSC),
        ] {
            schemas.insert(id, Arc::new(parse_schema(name, text)?));
        }
        Ok(AvroDecoder::from_schemas(schemas))
    }

    /// Schemas read from `dir`, one file per id: `ids` maps a schema id to a
    /// file name in `dir`, such as `activity_event.avsc` (see [`shipped_ids`]).
    pub fn from_schema_dir(dir: &Path, ids: &BTreeMap<u32, String>) -> Result<AvroDecoder, AvroError> {
        let mut schemas = BTreeMap::new();
        for (&id, name) in ids {
            let path = dir.join(name);
            let text = std::fs::read_to_string(&path).map_err(|source| AvroError::Io { path: path.clone(), source })?;
            schemas.insert(id, Arc::new(parse_schema(&path.display().to_string(), &text)?));
        }
        Ok(AvroDecoder::from_schemas(schemas))
    }

    /// A decoder that resolves every id through the Schema Registry at `url`.
    pub fn with_registry(url: &str) -> Result<AvroDecoder, AvroError> {
        AvroDecoder::default().and_registry(url)
    }

    /// Ids this decoder does not know are looked up in the Schema Registry at
    /// `url`; ids it already knows (from a schema directory) are not.
    pub fn and_registry(mut self, url: &str) -> Result<AvroDecoder, AvroError> {
        let base = url.trim().trim_end_matches('/');
        if base.starts_with("https://") {
            return Err(AvroError::Registry(format!(
                "{base}: https is not supported by this build; use an http:// url (for example a local proxy)"
            )));
        }
        if !base.starts_with("http://") || base.len() <= "http://".len() {
            return Err(AvroError::Registry(format!("`{url}` is not an http:// url")));
        }
        let config =
            ureq::Agent::config_builder().timeout_global(Some(REGISTRY_TIMEOUT)).http_status_as_error(false).build();
        self.registry = Some(Registry {
            base: base.to_owned(),
            agent: ureq::Agent::new_with_config(config),
            failed: Mutex::new(BTreeMap::new()),
        });
        Ok(self)
    }

    /// Decodes one wire-format record into its raw fields. The caller has
    /// checked the magic byte; a record that is only a header, or has bytes
    /// left over after the datum, is refused.
    pub fn decode(&self, bytes: &[u8]) -> Result<RawRecord<'static>, DecodeError> {
        let (id, value) = self.datum(bytes)?;
        raw_fields(value)
            .map_err(|e| DecodeError::Avro(format!("schema {id} is not an event or signal: {}", lower_first(&e))))
    }

    /// Reads a decision the engine published with [`AvroEncoder::decision`]
    /// back into the [`Decision`] it encoded: each evidence value's JSON
    /// text is parsed again, so the decision writes the JSON a JSON output
    /// would have carried.
    pub fn decision(&self, bytes: &[u8]) -> Result<Decision, DecodeError> {
        let (id, value) = self.datum(bytes)?;
        let not_a_decision = |reason: String| DecodeError::Avro(format!("schema {id} is not a decision: {reason}"));
        let record: DecisionDatum =
            apache_avro::from_value(&value).map_err(|e| not_a_decision(lower_first(&e)))?;
        let decision = Verdict::parse(&record.decision)
            .ok_or_else(|| not_a_decision(format!("unknown decision `{}`", record.decision)))?;
        let mode = match record.mode.as_str() {
            "enforce" => Mode::Enforce,
            "shadow" => Mode::Shadow,
            other => return Err(not_a_decision(format!("unknown mode `{other}`"))),
        };
        let count = |what: &str, n: i32| u32::try_from(n).map_err(|_| not_a_decision(format!("{what} {n} is negative")));
        let mut reasons = Vec::with_capacity(record.reasons.len());
        for reason in record.reasons {
            let mut evidence = BTreeMap::new();
            for (name, text) in reason.evidence {
                let value = serde_json::from_str(&text).map_err(|e| {
                    not_a_decision(format!("evidence `{name}` of rule `{}` is not JSON text: {e}", reason.rule))
                })?;
                evidence.insert(name, value);
            }
            let score = count("a reason's score", reason.score)?;
            reasons.push(Reason { rule: reason.rule, score, message: reason.message, evidence });
        }
        Ok(Decision {
            decision_id: record.decision_id,
            event_id: record.event_id,
            time: record.time,
            tenant: record.tenant,
            agent_id: record.agent_id,
            workload_id: record.workload_id,
            task_id: record.task_id,
            decision,
            score: count("score", record.score)?,
            reasons,
            faults: record.faults,
            ruleset: record.ruleset,
            mode,
        })
    }

    /// The schema id and datum of one wire-format record, read whole with
    /// the writer's schema.
    fn datum(&self, bytes: &[u8]) -> Result<(u32, Value), DecodeError> {
        if bytes.len() < HEADER_LEN {
            return Err(DecodeError::Avro(format!(
                "record is {} bytes, shorter than the {HEADER_LEN}-byte wire-format header",
                bytes.len()
            )));
        }
        if bytes[0] != MAGIC {
            return Err(DecodeError::Avro(format!("magic byte is {:#04x}, not 0", bytes[0])));
        }
        let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
        let schema = self.schema(id)?;
        let mut datum = Datum::new(&bytes[HEADER_LEN..]);
        let value = apache_avro::from_avro_datum(&schema, &mut datum, None);
        if datum.overran {
            return Err(DecodeError::Avro(format!("datum of schema {id} is truncated")));
        }
        let value =
            value.map_err(|e| DecodeError::Avro(format!("datum does not match schema {id}: {}", lower_first(&e))))?;
        let left = datum.bytes.len() - datum.read;
        if left > 0 {
            return Err(DecodeError::Avro(format!("{left} trailing bytes after the datum of schema {id}")));
        }
        Ok((id, value))
    }

    /// The parsed schema for `id`, fetched from the registry on first use.
    fn schema(&self, id: u32) -> Result<Arc<Schema>, DecodeError> {
        if let Some(schema) = lock(&self.schemas).get(&id) {
            return Ok(Arc::clone(schema));
        }
        let Some(registry) = &self.registry else {
            return Err(DecodeError::UnknownSchema(id));
        };
        // The lock is not held across the request: a slow registry must not
        // block lookups of ids that are already cached.
        let schema = Arc::new(registry.fetch(id)?);
        lock(&self.schemas).insert(id, Arc::clone(&schema));
        Ok(schema)
    }
}

impl Registry {
    fn fetch(&self, id: u32) -> Result<Schema, DecodeError> {
        if let Some((until, error)) = lock(&self.failed).get(&id) {
            if Instant::now() < *until {
                return Err(error.clone());
            }
        }
        let result = self.request(id);
        let mut failed = lock(&self.failed);
        match &result {
            Err((error, retry_after)) => {
                let now = Instant::now();
                // Garbage ids in a stream of bad records must not grow this forever.
                if failed.len() >= MAX_REMEMBERED_FAILURES {
                    failed.retain(|_, (until, _)| *until > now);
                }
                failed.insert(id, (now + *retry_after, error.clone()));
            }
            Ok(_) => {
                failed.remove(&id);
            }
        }
        result.map_err(|(error, _)| error)
    }

    fn request(&self, id: u32) -> Result<Schema, (DecodeError, Duration)> {
        let url = format!("{}/schemas/ids/{id}", self.base);
        let failure =
            |reason: String| (DecodeError::Avro(format!("schema registry, id {id}: {reason}")), RETRY_AFTER_FAILURE);
        let mut response = self
            .agent
            .get(&url)
            .header("Accept", "application/vnd.schemaregistry.v1+json, application/json")
            .call()
            .map_err(|e| failure(format!("GET {url}: {e}")))?;
        let status = response.status().as_u16();
        if status == 404 {
            return Err((DecodeError::UnknownSchema(id), RETRY_AFTER_UNKNOWN));
        }
        if status != 200 {
            return Err(failure(format!("GET {url}: http status {status}")));
        }
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_REGISTRY_RESPONSE)
            .read_to_string()
            .map_err(|e| failure(format!("reading the response: {e}")))?;
        let reply: RegistryReply =
            serde_json::from_str(&body).map_err(|e| failure(format!("response is not a schema: {e}")))?;
        if let Some(kind) = reply.schema_type.filter(|k| !k.eq_ignore_ascii_case("AVRO")) {
            return Err(failure(format!("schema is {kind}, not avro")));
        }
        Schema::parse_str(&reply.schema).map_err(|e| failure(format!("invalid schema: {}", lower_first(&e))))
    }
}

/// Validates a datum already decoded with its writer's schema, as
/// [`AvroDecoder::decode`] does after reading a wire-format record; for
/// containers that carry the schema themselves (object container files).
/// Set apache-avro's allocation cap to [`MAX_AVRO_ALLOCATION`] before reading.
pub fn decode_value(value: Value) -> Result<Input, DecodeError> {
    raw_fields(value)
        .map_err(|e| DecodeError::Avro(format!("datum is not an event or signal: {}", lower_first(&e))))?
        .validate()
}

fn raw_fields(value: Value) -> Result<RawRecord<'static>, apache_avro::Error> {
    apache_avro::from_value::<RawRecord<'static>>(&optional_fields(value))
}

/// The datum being decoded, remembering whether the decoder asked for bytes
/// past its end. apache-avro reads a union index or a string body cut off by
/// the end of input as null rather than failing, so without this a truncated
/// record would decode as a shorter, valid one with its last fields missing.
/// Replay reads container files through it too.
pub struct Datum<'a> {
    bytes: &'a [u8],
    read: usize,
    overran: bool,
}

impl<'a> Datum<'a> {
    pub fn new(bytes: &'a [u8]) -> Datum<'a> {
        Datum { bytes, read: 0, overran: false }
    }

    /// Bytes the decoder took.
    pub fn consumed(&self) -> usize {
        self.read
    }

    /// Whether the decoder asked for more bytes than there were.
    pub fn overran(&self) -> bool {
        self.overran
    }
}

impl Read for Datum<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let rest = &self.bytes[self.read..];
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.read += n;
        if n < buf.len() {
            self.overran = true;
        }
        Ok(n)
    }
}

#[derive(serde::Deserialize)]
struct RegistryReply {
    schema: String,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
}

/// A poisoned lock only means another thread panicked mid-insert into a map
/// of immutable schemas; the map itself is still sound.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn parse_schema(name: &str, text: &str) -> Result<Schema, AvroError> {
    Schema::parse_str(text).map_err(|e| AvroError::Schema { name: name.to_owned(), reason: lower_first(&e) })
}

/// apache-avro's messages start with a capital; ours do not.
fn lower_first(error: &impl std::fmt::Display) -> String {
    let text = error.to_string();
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

/// Readies a decoded value for `from_value::<RawRecord>`.
///
/// Every field of [`RawRecord`] and its nested records is an `Option`, and
/// apache-avro's deserializer only accepts a union value for an `Option`: a
/// field declared plain `"string"` (every required field) would be refused.
/// Wrapping each record field that is not a union in one makes both shapes
/// decode alike. Timestamps written with a logical type become RFC 3339
/// text, the form [`RawRecord`] expects, so registry schemas that use
/// `timestamp-millis` for `time` also decode.
fn optional_fields(value: Value) -> Value {
    match value {
        Value::Record(fields) => {
            Value::Record(fields.into_iter().map(|(name, field)| (name, as_union(field))).collect())
        }
        Value::Union(index, inner) => Value::Union(index, Box::new(optional_fields(*inner))),
        Value::TimestampMillis(ms) | Value::LocalTimestampMillis(ms) => Value::String(Timestamp(ms).to_rfc3339()),
        Value::TimestampMicros(us) | Value::LocalTimestampMicros(us) => {
            Value::String(Timestamp(us.div_euclid(1_000)).to_rfc3339())
        }
        Value::TimestampNanos(ns) | Value::LocalTimestampNanos(ns) => {
            Value::String(Timestamp(ns.div_euclid(1_000_000)).to_rfc3339())
        }
        other => other,
    }
}

fn as_union(value: Value) -> Value {
    match value {
        union @ Value::Union(..) => optional_fields(union),
        other => Value::Union(1, Box::new(optional_fields(other))),
    }
}

/// Encodes `value` with `schema` in the Confluent wire format under `schema_id`.
///
/// The value goes through serde into an Avro value and is resolved against
/// the schema, so a struct's `Option` fields land in `["null", T]` unions
/// whatever the branch order, and missing fields take the schema's defaults.
pub fn encode_wire(schema_id: u32, schema: &Schema, value: &impl Serialize) -> Result<Vec<u8>, AvroError> {
    let fail = |e: apache_avro::Error| AvroError::Encode { schema_id, reason: lower_first(&e) };
    let value = apache_avro::to_value(value).map_err(fail)?.resolve(schema).map_err(fail)?;
    let datum = apache_avro::to_avro_datum(schema, value).map_err(fail)?;
    let mut out = Vec::with_capacity(HEADER_LEN + datum.len());
    out.push(MAGIC);
    out.extend_from_slice(&schema_id.to_be_bytes());
    out.extend_from_slice(&datum);
    Ok(out)
}

/// Encodes the engine's outputs with the shipped `decision` and
/// `control_command` schemas.
#[derive(Debug)]
pub struct AvroEncoder {
    decision: (u32, Schema),
    control_command: (u32, Schema),
}

impl AvroEncoder {
    /// The shipped schemas under their default ids (3 = decision, 4 = control_command).
    pub fn shipped() -> Result<AvroEncoder, AvroError> {
        AvroEncoder::with_ids(DECISION_ID, CONTROL_COMMAND_ID)
    }

    /// The shipped schemas under ids a Schema Registry assigned to them.
    pub fn with_ids(decision_id: u32, control_command_id: u32) -> Result<AvroEncoder, AvroError> {
        Ok(AvroEncoder {
            decision: (decision_id, parse_schema("decision.avsc", DECISION_AVSC)?),
            control_command: (control_command_id, parse_schema("control_command.avsc", CONTROL_COMMAND_AVSC)?),
        })
    }

    /// Evidence values, free-form JSON in a [`Decision`], become their JSON text.
    pub fn decision(&self, decision: &Decision) -> Result<Vec<u8>, AvroError> {
        let (id, schema) = &self.decision;
        encode_wire(*id, schema, &DecisionRecord::from(decision))
    }

    pub fn control_command(&self, command: &ControlCommand) -> Result<Vec<u8>, AvroError> {
        let (id, schema) = &self.control_command;
        encode_wire(*id, schema, command)
    }
}

/// A [`Decision`] in the shape of `decision.avsc`.
#[derive(Serialize)]
struct DecisionRecord<'a> {
    decision_id: &'a str,
    event_id: &'a str,
    time: &'a str,
    tenant: &'a str,
    agent_id: &'a str,
    workload_id: &'a str,
    task_id: Option<&'a str>,
    decision: Verdict,
    score: u32,
    reasons: Vec<ReasonRecord<'a>>,
    faults: &'a [RuleFault],
    ruleset: &'a str,
    mode: Mode,
}

#[derive(Serialize)]
struct ReasonRecord<'a> {
    rule: &'a str,
    score: u32,
    message: &'a str,
    evidence: BTreeMap<&'a str, String>,
}

/// A decision as `decision.avsc` holds it, read back; also what the tests
/// read the encoder's output as, as any Avro consumer would.
#[derive(Debug, Deserialize)]
struct DecisionDatum {
    decision_id: String,
    event_id: String,
    time: String,
    tenant: String,
    agent_id: String,
    workload_id: String,
    task_id: Option<String>,
    decision: String,
    score: i32,
    reasons: Vec<ReasonDatum>,
    faults: Vec<RuleFault>,
    ruleset: String,
    mode: String,
}

#[derive(Debug, Deserialize)]
struct ReasonDatum {
    rule: String,
    score: i32,
    message: String,
    evidence: BTreeMap<String, String>,
}

impl<'a> From<&'a Decision> for DecisionRecord<'a> {
    fn from(d: &'a Decision) -> DecisionRecord<'a> {
        DecisionRecord {
            decision_id: &d.decision_id,
            event_id: &d.event_id,
            time: &d.time,
            tenant: &d.tenant,
            agent_id: &d.agent_id,
            workload_id: &d.workload_id,
            task_id: d.task_id.as_deref(),
            decision: d.decision,
            score: d.score,
            reasons: d
                .reasons
                .iter()
                .map(|r| ReasonRecord {
                    rule: &r.rule,
                    score: r.score,
                    message: &r.message,
                    evidence: r.evidence.iter().map(|(k, v)| (k.as_str(), v.to_string())).collect(),
                })
                .collect(),
            faults: &d.faults,
            ruleset: &d.ruleset,
            mode: d.mode,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::collections::BTreeSet;
    use std::io::Write;
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use serde::de::DeserializeOwned;
    use crate::decode::shape::struct_fields;
    use serde_json::json;

    use super::*;
    use crate::decode::raw::{RawApproval, RawCredential, RawIdentity, RawScope};
    use crate::decode::{decode, decode_json};
    use crate::event::Input;
    use crate::verdict::{CommandKind, Reason};

    /// The activity event fields in the order of the SPEC §3 table.
    const SPEC_ACTIVITY_FIELDS: &[&str] = &[
        "event_id",
        "time",
        "tenant",
        "agent_id",
        "workload_id",
        "identity",
        "task_id",
        "kind",
        "tool",
        "target",
        "operation",
        "data_class",
        "bytes",
        "parent_event_id",
        "trust_boundary",
        "scope",
        "credential",
        "approval",
        "attributes",
    ];
    /// The signal fields of SPEC §3; `tenant` is there because signals follow
    /// "the same JSON conventions" as activity events.
    const SPEC_SIGNAL_FIELDS: &[&str] =
        &["signal_id", "time", "tenant", "kind", "severity", "credential_id", "agent_id", "workload_id", "target"];
    const SPEC_IDENTITY_FIELDS: &[&str] = &["method", "verified"];
    const SPEC_SCOPE_FIELDS: &[&str] = &["tools", "targets", "data_classes", "max_duration_s", "egress_budget_bytes"];
    const SPEC_CREDENTIAL_FIELDS: &[&str] = &["id", "scopes", "ttl_s"];
    const SPEC_APPROVAL_FIELDS: &[&str] = &["decision_id", "granted", "approver"];
    const REQUIRED_ACTIVITY_FIELDS: &[&str] = &["event_id", "time", "agent_id", "workload_id", "kind"];

    fn full_event() -> serde_json::Value {
        json!({
            "event_id": "e-1",
            "time": "2026-11-28T10:00:00.250+01:00",
            "tenant": "acme",
            "agent_id": "agent-7",
            "workload_id": "spiffe://acme.org/agent/7",
            "identity": {"method": "x509_svid", "verified": true},
            "task_id": "t-1",
            "kind": "task_started",
            "tool": "sql.query",
            "target": "crm/customers",
            "operation": "read",
            "data_class": "pii",
            "bytes": 4096,
            "parent_event_id": "e-0",
            "trust_boundary": "corp",
            "scope": {
                "tools": ["sql.query", "http.*"],
                "targets": ["crm/*"],
                "data_classes": ["pii", "internal"],
                "max_duration_s": 600,
                "egress_budget_bytes": 10_000_000_000_i64
            },
            "credential": {"id": "c-1", "scopes": ["crm.read"], "ttl_s": 300},
            "approval": {"decision_id": "d-1", "granted": true, "approver": "alice"},
            "attributes": {"ticket": "INC-1", "model": "m-2"}
        })
    }

    fn full_signal() -> serde_json::Value {
        json!({
            "signal_id": "s-1",
            "time": "2026-11-28T10:05:00Z",
            "tenant": "acme",
            "kind": "credential_leaked",
            "severity": "critical",
            "credential_id": "c-1",
            "agent_id": "agent-7",
            "workload_id": "spiffe://acme.org/agent/7",
            "target": "api.stripe.com"
        })
    }

    /// `json` written as a datum of `schema_text` by apache-avro alone, in
    /// the wire format under `id`.
    fn wire(id: u32, schema_text: &str, json: &serde_json::Value) -> Vec<u8> {
        let schema = Schema::parse_str(schema_text).unwrap();
        let value = Value::from(json.clone()).resolve(&schema).unwrap();
        let mut out = vec![0];
        out.extend_from_slice(&id.to_be_bytes());
        out.extend(apache_avro::to_avro_datum(&schema, value).unwrap());
        out
    }

    fn avro_input(decoder: &AvroDecoder, bytes: &[u8]) -> Result<Input, DecodeError> {
        decoder.decode(bytes)?.validate()
    }

    fn json_input(json: &serde_json::Value) -> Input {
        decode_json(json.to_string().as_bytes()).unwrap()
    }

    fn avro_message(result: Result<RawRecord, DecodeError>) -> String {
        match result {
            Err(DecodeError::Avro(message)) => message,
            other => panic!("expected a malformed avro error, got {other:?}"),
        }
    }

    fn schema_json(text: &str) -> serde_json::Value {
        serde_json::from_str(text).unwrap()
    }

    fn field_names(record: &serde_json::Value) -> Vec<String> {
        record["fields"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap().to_owned()).collect()
    }

    /// The record type of `field`, looking inside unions and arrays.
    fn nested<'a>(record: &'a serde_json::Value, field: &str) -> &'a serde_json::Value {
        let ty = &record["fields"].as_array().unwrap().iter().find(|f| f["name"] == field).unwrap()["type"];
        let candidates: Vec<&serde_json::Value> = match ty {
            serde_json::Value::Array(branches) => branches.iter().collect(),
            other => vec![other],
        };
        candidates
            .into_iter()
            .map(|t| if t["type"] == "array" { &t["items"] } else { t })
            .find(|t| t["type"] == "record")
            .unwrap()
    }


    fn set<S: AsRef<str>>(names: &[S]) -> BTreeSet<String> {
        names.iter().map(|n| n.as_ref().to_owned()).collect()
    }

    fn keys(json: &serde_json::Value) -> BTreeSet<String> {
        json.as_object().unwrap().keys().cloned().collect()
    }

    #[test]
    fn activity_event_round_trips_like_json() {
        let decoder = AvroDecoder::shipped().unwrap();
        let event = full_event();
        assert_eq!(keys(&event), set(SPEC_ACTIVITY_FIELDS), "the full event sets every field");
        let bytes = wire(ACTIVITY_EVENT_ID, ACTIVITY_EVENT_AVSC, &event);
        assert_eq!(avro_input(&decoder, &bytes), Ok(json_input(&event)));
        assert_eq!(decode(&bytes, Some(&decoder)), Ok(json_input(&event)));

        let minimal = json!({
            "event_id": "e-2", "time": "2026-11-28T10:00:00Z", "agent_id": "agent-7",
            "workload_id": "spiffe://acme.org/agent/7", "kind": "tool_call"
        });
        let bytes = wire(ACTIVITY_EVENT_ID, ACTIVITY_EVENT_AVSC, &minimal);
        assert_eq!(avro_input(&decoder, &bytes), Ok(json_input(&minimal)));
    }

    #[test]
    fn signal_round_trips_like_json() {
        let decoder = AvroDecoder::shipped().unwrap();
        let signal = full_signal();
        assert_eq!(keys(&signal), set(SPEC_SIGNAL_FIELDS));
        let bytes = wire(SIGNAL_ID, SIGNAL_AVSC, &signal);
        let input = avro_input(&decoder, &bytes);
        assert!(matches!(input, Ok(Input::Signal(_))));
        assert_eq!(input, Ok(json_input(&signal)));

        let minimal =
            json!({"signal_id": "s-2", "time": "2026-11-28T10:05:00Z", "kind": "agent_release", "agent_id": "a"});
        let bytes = wire(SIGNAL_ID, SIGNAL_AVSC, &minimal);
        assert_eq!(avro_input(&decoder, &bytes), Ok(json_input(&minimal)));
    }

    #[test]
    fn validation_errors_are_the_same_as_for_json() {
        let decoder = AvroDecoder::shipped().unwrap();
        let mut event = full_event();
        event["kind"] = json!("teleport");
        event["data_class"] = json!("top_secret");
        let bytes = wire(ACTIVITY_EVENT_ID, ACTIVITY_EVENT_AVSC, &event);
        let from_json = decode_json(event.to_string().as_bytes());
        assert!(matches!(from_json, Err(DecodeError::Invalid { field: "kind", .. })));
        assert_eq!(avro_input(&decoder, &bytes), from_json);
    }

    #[test]
    fn null_union_branches_decode_to_none() {
        let schema = Schema::parse_str(ACTIVITY_EVENT_AVSC).unwrap();
        let mut record = apache_avro::types::Record::new(&schema).unwrap();
        for (field, text) in [
            ("event_id", "e-3"),
            ("time", "2026-11-28T10:00:00Z"),
            ("agent_id", "agent-7"),
            ("workload_id", "spiffe://acme.org/agent/7"),
            ("kind", "data_access"),
        ] {
            record.put(field, text);
        }
        for field in SPEC_ACTIVITY_FIELDS.iter().filter(|f| !REQUIRED_ACTIVITY_FIELDS.contains(f)) {
            record.put(field, Value::Union(0, Box::new(Value::Null)));
        }
        let mut bytes = vec![0, 0, 0, 0, 1];
        bytes.extend(apache_avro::to_avro_datum(&schema, record).unwrap());

        let raw = AvroDecoder::shipped().unwrap().decode(&bytes).unwrap();
        assert_eq!(raw.event_id.as_deref(), Some("e-3"));
        assert!(raw.tenant.is_none() && raw.identity.is_none() && raw.task_id.is_none());
        assert!(raw.tool.is_none() && raw.target.is_none() && raw.operation.is_none());
        assert!(raw.data_class.is_none() && raw.bytes.is_none() && raw.parent_event_id.is_none());
        assert!(raw.trust_boundary.is_none() && raw.scope.is_none() && raw.credential.is_none());
        assert!(raw.approval.is_none() && raw.attributes.is_none() && raw.signal_id.is_none());
        let Ok(Input::Activity(event)) = raw.validate() else { panic!("a valid event") };
        assert_eq!((event.tenant.as_str(), event.bytes, event.identity.verified), ("default", 0, false));
    }

    #[test]
    fn unknown_schema_id_is_refused() {
        let mut bytes = wire(ACTIVITY_EVENT_ID, ACTIVITY_EVENT_AVSC, &full_event());
        bytes[1..5].copy_from_slice(&99u32.to_be_bytes());
        assert_eq!(AvroDecoder::shipped().unwrap().decode(&bytes).err(), Some(DecodeError::UnknownSchema(99)));
        assert_eq!(AvroDecoder::default().decode(&bytes).err(), Some(DecodeError::UnknownSchema(99)));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let decoder = AvroDecoder::shipped().unwrap();
        for event in
            [full_event(), json!({"event_id": "e", "time": "t", "agent_id": "a", "workload_id": "w", "kind": "k"})]
        {
            let bytes = wire(ACTIVITY_EVENT_ID, ACTIVITY_EVENT_AVSC, &event);
            for cut in HEADER_LEN..bytes.len() {
                assert_eq!(
                    avro_message(decoder.decode(&bytes[..cut])),
                    "datum of schema 1 is truncated",
                    "cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn short_headers_trailing_bytes_and_bad_magic_are_errors() {
        let decoder = AvroDecoder::shipped().unwrap();
        for short in [&[0u8][..], &[0, 0, 0, 1]] {
            assert!(avro_message(decoder.decode(short)).contains("shorter than the 5-byte wire-format header"));
        }
        let mut padded = wire(ACTIVITY_EVENT_ID, ACTIVITY_EVENT_AVSC, &full_event());
        padded.extend_from_slice(&[0, 0]);
        assert_eq!(avro_message(decoder.decode(&padded)), "2 trailing bytes after the datum of schema 1");
        assert_eq!(avro_message(decoder.decode(&[0x7b, 0, 0, 0, 1, 0])), "magic byte is 0x7b, not 0");
    }

    #[test]
    fn a_huge_claimed_length_is_refused_before_allocating() {
        let decoder = AvroDecoder::shipped().unwrap();
        let event = json!({"event_id": "e", "time": "t", "agent_id": "a", "workload_id": "w", "kind": "k", "scope": {"tools": []}});
        let mut bytes = wire(ACTIVITY_EVENT_ID, ACTIVITY_EVENT_AVSC, &event);
        // The datum ends with scope's and tools' union indexes, the empty
        // array's block count, and seven null union indexes.
        let at = bytes.len() - 8;
        assert_eq!(bytes[at - 2..], [2, 2, 0, 0, 0, 0, 0, 0, 0, 0]);
        let mut count: u64 = 500_000_000 << 1;
        let mut varint = Vec::new();
        while count >= 0x80 {
            varint.push((count & 0x7f) as u8 | 0x80);
            count >>= 7;
        }
        varint.push(count as u8);
        bytes.splice(at..=at, varint);
        let message = avro_message(decoder.decode(&bytes));
        assert!(message.starts_with("datum does not match schema 1"), "{message}");
    }

    #[test]
    fn input_schemas_carry_the_spec_fields() {
        let activity = schema_json(ACTIVITY_EVENT_AVSC);
        assert_eq!(field_names(&activity), SPEC_ACTIVITY_FIELDS);
        assert_eq!(field_names(nested(&activity, "identity")), SPEC_IDENTITY_FIELDS);
        assert_eq!(field_names(nested(&activity, "scope")), SPEC_SCOPE_FIELDS);
        assert_eq!(field_names(nested(&activity, "credential")), SPEC_CREDENTIAL_FIELDS);
        assert_eq!(field_names(nested(&activity, "approval")), SPEC_APPROVAL_FIELDS);
        assert_eq!(field_names(&schema_json(SIGNAL_AVSC)), SPEC_SIGNAL_FIELDS);

        for (text, required) in
            [(ACTIVITY_EVENT_AVSC, REQUIRED_ACTIVITY_FIELDS), (SIGNAL_AVSC, &["signal_id", "time", "kind"])]
        {
            for field in schema_json(text)["fields"].as_array().unwrap() {
                let name = field["name"].as_str().unwrap();
                if required.contains(&name) {
                    assert_eq!(field["type"], "string", "{name}");
                } else {
                    assert_eq!(field["type"][0], "null", "{name} is a union with null first");
                    assert!(field["default"].is_null() && field.get("default").is_some(), "{name} defaults to null");
                }
            }
        }
    }

    #[test]
    fn raw_record_has_exactly_the_schema_fields() {
        let activity = schema_json(ACTIVITY_EVENT_AVSC);
        let signal = schema_json(SIGNAL_AVSC);
        let schema_fields: BTreeSet<String> =
            set(&field_names(&activity)).union(&set(&field_names(&signal))).cloned().collect();
        assert_eq!(set(&struct_fields::<RawRecord>()), schema_fields);
        assert_eq!(set(&struct_fields::<RawIdentity>()), set(&field_names(nested(&activity, "identity"))));
        assert_eq!(set(&struct_fields::<RawScope>()), set(&field_names(nested(&activity, "scope"))));
        assert_eq!(set(&struct_fields::<RawCredential>()), set(&field_names(nested(&activity, "credential"))));
        assert_eq!(set(&struct_fields::<RawApproval>()), set(&field_names(nested(&activity, "approval"))));
    }

    fn sample_decision() -> Decision {
        Decision {
            decision_id: "dec-1".into(),
            event_id: "e-1".into(),
            time: "2026-11-28T09:00:00.250Z".into(),
            tenant: "acme".into(),
            agent_id: "agent-7".into(),
            workload_id: "spiffe://acme.org/agent/7".into(),
            task_id: Some("t-1".into()),
            decision: Verdict::StepUp,
            score: 70,
            reasons: vec![Reason {
                rule: "exfil.chain".into(),
                score: 70,
                message: "sensitive read then egress".into(),
                evidence: [
                    ("bytes_out".to_owned(), json!(12_000_000)),
                    ("target".to_owned(), json!("api.paste.io")),
                    ("classes".to_owned(), json!(["pii", "secret"])),
                    ("verified".to_owned(), json!(false)),
                    ("window".to_owned(), json!({"s": 60})),
                ]
                .into_iter()
                .collect(),
            }],
            faults: vec![RuleFault { rule: "broken.rule".into(), error: "out of operations".into() }],
            ruleset: "sha256:abc".into(),
            mode: Mode::Shadow,
        }
    }

    fn sample_command() -> ControlCommand {
        ControlCommand {
            command_id: "cmd-1".into(),
            issued_at: "2026-11-28T09:00:00.250Z".into(),
            command: CommandKind::RevokeCredentials,
            tenant: "acme".into(),
            agent_id: "agent-7".into(),
            workload_id: "spiffe://acme.org/agent/7".into(),
            task_id: None,
            credential_ids: vec!["c-1".into(), "c-2".into()],
            reason: "credential leaked".into(),
            decision_id: "sig-1".into(),
            expires_at: Some("2026-11-28T10:00:00.000Z".into()),
        }
    }

    #[test]
    fn output_schemas_carry_the_rust_fields() {
        let decision = serde_json::to_value(sample_decision()).unwrap();
        let schema = schema_json(DECISION_AVSC);
        assert_eq!(keys(&decision), set(&field_names(&schema)));
        assert_eq!(keys(&decision["reasons"][0]), set(&field_names(nested(&schema, "reasons"))));
        assert_eq!(keys(&decision["faults"][0]), set(&field_names(nested(&schema, "faults"))));
        assert_eq!(
            schema["fields"].as_array().unwrap().iter().find(|f| f["name"] == "faults").unwrap()["default"],
            json!([])
        );
        let command = serde_json::to_value(sample_command()).unwrap();
        assert_eq!(keys(&command), set(&field_names(&schema_json(CONTROL_COMMAND_AVSC))));
    }

    fn read_datum<T: DeserializeOwned>(bytes: &[u8], id: u32, schema_text: &str) -> T {
        assert_eq!(bytes[..HEADER_LEN], [0, 0, 0, 0, id as u8]);
        // Whichever decode runs first fixes apache-avro's allocation cap for
        // the process; keep it the decoder's so the huge-length test holds.
        apache_avro::util::max_allocation_bytes(MAX_AVRO_ALLOCATION);
        let schema = Schema::parse_str(schema_text).unwrap();
        let mut datum = &bytes[HEADER_LEN..];
        let value = apache_avro::from_avro_datum(&schema, &mut datum, None).unwrap();
        assert!(datum.is_empty(), "the whole datum is read");
        apache_avro::from_value(&value).unwrap()
    }

    #[test]
    fn decisions_encode_for_avro_readers() {
        let encoder = AvroEncoder::shipped().unwrap();
        let decision = sample_decision();
        let read: DecisionDatum = read_datum(&encoder.decision(&decision).unwrap(), DECISION_ID, DECISION_AVSC);
        assert_eq!(
            (&read.decision_id, &read.event_id, &read.time, &read.tenant, &read.agent_id, &read.workload_id),
            (
                &decision.decision_id,
                &decision.event_id,
                &decision.time,
                &decision.tenant,
                &decision.agent_id,
                &decision.workload_id
            )
        );
        assert_eq!(read.task_id, decision.task_id);
        assert_eq!((read.decision.as_str(), read.score, read.mode.as_str()), ("step_up", 70, "shadow"));
        assert_eq!((read.ruleset, read.faults), (decision.ruleset.clone(), decision.faults.clone()));
        let [reason] = &read.reasons[..] else { panic!("one reason") };
        let original = &decision.reasons[0];
        assert_eq!((&reason.rule, reason.score, &reason.message), (&original.rule, 70, &original.message));
        assert_eq!(reason.evidence["target"], r#""api.paste.io""#);
        let evidence: BTreeMap<String, serde_json::Value> =
            reason.evidence.iter().map(|(k, v)| (k.clone(), serde_json::from_str(v).unwrap())).collect();
        assert_eq!(evidence, original.evidence);

        let bare = Decision { task_id: None, reasons: vec![], faults: vec![], mode: Mode::Enforce, ..decision };
        let read: DecisionDatum = read_datum(&encoder.decision(&bare).unwrap(), DECISION_ID, DECISION_AVSC);
        assert_eq!((read.task_id, read.reasons.len(), read.faults.len(), read.mode.as_str()), (None, 0, 0, "enforce"));
    }

    #[test]
    fn a_published_decision_reads_back_as_the_decision_it_was() {
        let (encoder, decoder) = (AvroEncoder::shipped().unwrap(), AvroDecoder::shipped().unwrap());
        let decision = sample_decision();
        let bare = Decision { task_id: None, reasons: vec![], faults: vec![], mode: Mode::Enforce, ..decision.clone() };
        for original in [decision, bare] {
            let read = decoder.decision(&encoder.decision(&original).unwrap()).unwrap();
            assert_eq!(read, original);
            let (mut a, mut b) = (Vec::new(), Vec::new());
            read.write_json(&mut a);
            original.write_json(&mut b);
            assert_eq!(a, b, "the JSON a JSON output carries");
        }

        let command = encoder.control_command(&sample_command()).unwrap();
        let error = decoder.decision(&command).unwrap_err().to_string();
        assert!(error.contains("schema 4 is not a decision"), "{error}");
        let mut unknown = encoder.decision(&sample_decision()).unwrap();
        unknown[4] = 99;
        assert_eq!(decoder.decision(&unknown).unwrap_err(), DecodeError::UnknownSchema(99));
    }

    #[test]
    fn control_commands_encode_for_avro_readers() {
        #[derive(serde::Deserialize)]
        struct CommandRead {
            command: String,
            task_id: Option<String>,
            credential_ids: Vec<String>,
            expires_at: Option<String>,
            decision_id: String,
        }
        let encoder = AvroEncoder::with_ids(30, 40).unwrap();
        let command = sample_command();
        let read: CommandRead = read_datum(&encoder.control_command(&command).unwrap(), 40, CONTROL_COMMAND_AVSC);
        assert_eq!(read.command, "revoke_credentials");
        assert_eq!(
            (read.task_id, read.credential_ids, read.expires_at),
            (None, command.credential_ids, command.expires_at)
        );
        assert_eq!(read.decision_id, "sig-1");
        let decision_bytes = encoder.decision(&sample_decision()).unwrap();
        assert_eq!(decision_bytes[..HEADER_LEN], [0, 0, 0, 0, 30]);
    }

    #[test]
    fn encode_wire_reports_values_that_do_not_fit() {
        let schema = Schema::parse_str(SIGNAL_AVSC).unwrap();
        let err = encode_wire(2, &schema, &json!({"signal_id": 5})).unwrap_err();
        assert!(err.to_string().starts_with("value does not fit schema 2: "), "{err}");
    }

    #[test]
    fn schema_dirs_map_ids_to_files() {
        let dir = tempfile::tempdir().unwrap();
        // A producer's own schema: required fields without unions, an Avro
        // enum for `kind`, a logical timestamp for `time` and a field the
        // engine does not know.
        let custom = r#"{"type": "record", "name": "Act", "namespace": "com.example", "fields": [
            {"name": "event_id", "type": "string"},
            {"name": "time", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {"name": "agent_id", "type": "string"},
            {"name": "workload_id", "type": "string"},
            {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["tool_call", "data_access"]}},
            {"name": "bytes", "type": "long"},
            {"name": "identity", "type": {"type": "record", "name": "Id", "fields": [
                {"name": "method", "type": "string"}, {"name": "verified", "type": "boolean"}]}},
            {"name": "internal_note", "type": ["null", "string"], "default": null}
        ]}"#;
        std::fs::write(dir.path().join("custom.avsc"), custom).unwrap();
        let ids: BTreeMap<u32, String> = [(9, "custom.avsc".to_owned())].into_iter().collect();
        let decoder = AvroDecoder::from_schema_dir(dir.path(), &ids).unwrap();
        let bytes = wire(
            9,
            custom,
            &json!({"event_id": "e-9", "time": 1_795_856_400_250_i64, "agent_id": "a", "workload_id": "spiffe://acme.org/a",
                    "kind": "data_access", "bytes": 12, "identity": {"method": "jwt_svid", "verified": true},
                    "internal_note": "x"}),
        );
        let Ok(Input::Activity(event)) = avro_input(&decoder, &bytes) else { panic!("a valid event") };
        assert_eq!(event.time.to_rfc3339(), "2026-11-28T09:00:00.250Z");
        assert_eq!((event.kind.as_str(), event.bytes, event.identity.verified), ("data_access", 12, true));
        assert_eq!(
            decoder.decode(&wire(1, ACTIVITY_EVENT_AVSC, &full_event())).err(),
            Some(DecodeError::UnknownSchema(1))
        );

        let shipped_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas");
        let decoder = AvroDecoder::from_schema_dir(&shipped_dir, &shipped_ids()).unwrap();
        let bytes = wire(ACTIVITY_EVENT_ID, ACTIVITY_EVENT_AVSC, &full_event());
        assert_eq!(avro_input(&decoder, &bytes), Ok(json_input(&full_event())));

        let missing: BTreeMap<u32, String> = [(1, "nope.avsc".to_owned())].into_iter().collect();
        assert!(matches!(AvroDecoder::from_schema_dir(dir.path(), &missing), Err(AvroError::Io { .. })));
        std::fs::write(dir.path().join("bad.avsc"), r#"{"type": "record"}"#).unwrap();
        let bad: BTreeMap<u32, String> = [(1, "bad.avsc".to_owned())].into_iter().collect();
        assert!(matches!(AvroDecoder::from_schema_dir(dir.path(), &bad), Err(AvroError::Schema { .. })));
    }

    /// A one-route Schema Registry: `GET /schemas/ids/7` is the activity
    /// schema, anything else 404. Returns its url and a request counter.
    fn registry() -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&requests);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut request = Vec::new();
                let mut chunk = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&chunk[..n]),
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let request = String::from_utf8_lossy(&request);
                let path = request.split_whitespace().nth(1).unwrap_or_default();
                let (status, body) = if path == "/schemas/ids/7" {
                    ("200 OK", json!({"schema": ACTIVITY_EVENT_AVSC}).to_string())
                } else {
                    ("404 Not Found", json!({"error_code": 40403, "message": "Schema not found"}).to_string())
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Type: application/vnd.schemaregistry.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        (url, requests)
    }

    #[test]
    fn registry_schemas_are_fetched_once() {
        let (url, requests) = registry();
        let decoder = AvroDecoder::with_registry(&format!("{url}/")).unwrap();
        let bytes = wire(7, ACTIVITY_EVENT_AVSC, &full_event());
        assert_eq!(avro_input(&decoder, &bytes), Ok(json_input(&full_event())));
        assert_eq!(avro_input(&decoder, &bytes), Ok(json_input(&full_event())));
        assert_eq!(requests.load(Ordering::SeqCst), 1);

        let unknown = wire(8, ACTIVITY_EVENT_AVSC, &full_event());
        assert_eq!(decoder.decode(&unknown).err(), Some(DecodeError::UnknownSchema(8)));
        assert_eq!(decoder.decode(&unknown).err(), Some(DecodeError::UnknownSchema(8)));
        assert_eq!(requests.load(Ordering::SeqCst), 2, "an unknown id is not asked for again at once");
    }

    #[test]
    fn schema_dir_ids_take_precedence_over_the_registry() {
        let (url, requests) = registry();
        let decoder = AvroDecoder::shipped().unwrap().and_registry(&url).unwrap();
        let bytes = wire(ACTIVITY_EVENT_ID, ACTIVITY_EVENT_AVSC, &full_event());
        assert!(decoder.decode(&bytes).is_ok());
        assert!(decoder.decode(&wire(7, ACTIVITY_EVENT_AVSC, &full_event())).is_ok());
        assert_eq!(requests.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn an_unreachable_registry_is_a_decode_error() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let decoder = AvroDecoder::with_registry(&url).unwrap();
        let message = avro_message(decoder.decode(&wire(7, ACTIVITY_EVENT_AVSC, &full_event())));
        assert!(message.starts_with("schema registry, id 7: GET "), "{message}");
    }

    #[test]
    fn registry_urls_must_be_http() {
        assert!(matches!(AvroDecoder::with_registry("https://registry:8081"), Err(AvroError::Registry(_))));
        assert!(matches!(AvroDecoder::with_registry("registry:8081"), Err(AvroError::Registry(_))));
        assert!(matches!(AvroDecoder::with_registry("http://"), Err(AvroError::Registry(_))));
    }
}
