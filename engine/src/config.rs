//! The engine's configuration on Kafka, as read from a TOML file.
//!
//! Every field has a default, so a file only names what differs; unknown
//! fields are refused so that a typo is an error, not a silently ignored
//! setting.
//!
//! ```toml
//! brokers = "127.0.0.1:9092"
//! group_id = "vigil"
//! delivery = "exactly_once"      # or "at_least_once"
//! commit_interval = "50ms"
//! workers = 2
//! http = "127.0.0.1:9464"          # /metrics, /livez, /readyz
//!
//! [topics]
//! activity = "agent.activity"
//!
//! [signing]                      # signed control commands
//! key = "keys/signing-key.pem"
//! caep_topic = "vigil.caep"
//!
//! [properties]                   # any librdkafka property, for every client
//! "security.protocol" = "SASL_PLAINTEXT"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod env;
mod span;

pub use span::Span;

/// How outputs and consumed offsets are tied together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Outputs and consumed offsets commit in one Kafka transaction; a
    /// `read_committed` subscriber sees every output exactly once, one
    /// commit interval late.
    #[default]
    ExactlyOnce,
    /// Outputs are visible as soon as they are written; offsets are committed
    /// once the broker acknowledged them. After a failure a subscriber may see
    /// an output twice and deduplicates on `decision_id` / `command_id`.
    AtLeastOnce,
}

impl Delivery {
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::ExactlyOnce => "exactly_once",
            Delivery::AtLeastOnce => "at_least_once",
        }
    }

    pub fn parse(text: &str) -> Option<Delivery> {
        match text.trim().replace('-', "_").as_str() {
            "exactly_once" => Some(Delivery::ExactlyOnce),
            "at_least_once" => Some(Delivery::AtLeastOnce),
            _ => None,
        }
    }
}

/// Topic names (SPEC §2). Every output is keyed by `agent_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Topics {
    pub activity: String,
    pub signals: String,
    pub decisions: String,
    pub alerts: String,
    pub control: String,
    pub dlq: String,
    /// Decisions of a candidate ruleset in shadow (`mode: shadow`).
    pub shadow: String,
    /// Subscribers' acknowledgements of control commands.
    pub acks: String,
    /// The state's changes, compacted, one partition per activity partition.
    pub changelog: String,
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            activity: "agent.activity".into(),
            signals: "agent.signals".into(),
            decisions: "vigil.decisions".into(),
            alerts: "vigil.alerts".into(),
            control: "vigil.control".into(),
            dlq: "vigil.dlq".into(),
            shadow: "vigil.shadow".into(),
            acks: "vigil.acks".into(),
            changelog: "vigil.changelog".into(),
        }
    }
}

impl Topics {
    /// Every topic named `<prefix>.<role>`, so runs that share a broker
    /// (tests, load runs) cannot read each other's records.
    pub fn prefixed(prefix: &str) -> Topics {
        Topics {
            activity: format!("{prefix}.activity"),
            signals: format!("{prefix}.signals"),
            decisions: format!("{prefix}.decisions"),
            alerts: format!("{prefix}.alerts"),
            control: format!("{prefix}.control"),
            dlq: format!("{prefix}.dlq"),
            shadow: format!("{prefix}.shadow"),
            acks: format!("{prefix}.acks"),
            changelog: format!("{prefix}.changelog"),
        }
    }

    /// Every topic with the role it plays, inputs first.
    pub fn all(&self) -> [(&'static str, &str); 9] {
        [
            ("activity", &self.activity),
            ("signals", &self.signals),
            ("decisions", &self.decisions),
            ("alerts", &self.alerts),
            ("control", &self.control),
            ("dlq", &self.dlq),
            ("shadow", &self.shadow),
            ("acks", &self.acks),
            ("changelog", &self.changelog),
        ]
    }
}

/// How topics are created, by `vigil topics create` or at start-up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicCreation {
    /// Create missing topics when the engine starts.
    pub at_startup: bool,
    pub partitions: i32,
    pub replication: i32,
}

impl Default for TopicCreation {
    fn default() -> Self {
        TopicCreation { at_startup: true, partitions: 6, replication: 1 }
    }
}

/// Where Avro schema ids resolve. Without anything set, the schemas shipped
/// in `schemas/` answer ids 1 to 4. With `outputs`, decisions (also shadow
/// ones) and control commands are written as Avro in the Confluent wire
/// format instead of JSON, under `decision_id` and `control_command_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AvroSettings {
    /// A Schema Registry (`http://host:port`) for ids no local schema answers.
    pub registry: Option<String>,
    /// A folder of `.avsc` files, used with `ids` instead of the shipped schemas.
    pub schema_dir: Option<PathBuf>,
    /// Schema id to file name in `schema_dir`, e.g. `"1" = "activity_event.avsc"`.
    pub ids: BTreeMap<String, String>,
    /// Write decisions and control commands as Avro rather than JSON.
    pub outputs: bool,
    /// The schema id written before each Avro decision.
    pub decision_id: u32,
    /// The schema id written before each Avro control command.
    pub control_command_id: u32,
}

impl Default for AvroSettings {
    fn default() -> Self {
        AvroSettings {
            registry: None,
            schema_dir: None,
            ids: BTreeMap::new(),
            outputs: false,
            decision_id: crate::decode::avro::DECISION_ID,
            control_command_id: crate::decode::avro::CONTROL_COMMAND_ID,
        }
    }
}

/// Signed control commands (`[signing]`). With a `key`, every value on the
/// control topic is a compact JWS of the command, and with a `caep_topic`
/// every command is also written there as a signed CAEP Security Event
/// Token. Without a key, commands are plain JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Signing {
    /// The Ed25519 key, PKCS#8 PEM (`vigil keys generate`).
    pub key: Option<PathBuf>,
    /// `iss` of the CAEP tokens.
    pub issuer: String,
    /// `aud` of the CAEP tokens.
    pub audience: String,
    /// Where the CAEP form goes; nowhere when absent.
    pub caep_topic: Option<String>,
}

impl Default for Signing {
    fn default() -> Self {
        Signing { key: None, issuer: "https://vigil.local".into(), audience: "control-subscribers".into(), caep_topic: None }
    }
}

/// The closed loop on revocations (`[acks]`): every revocation, quarantine
/// or agent revocation waits for a subscriber's `enforced` on the acks
/// topic; one still waiting after `deadline` raises an OCSF alert and is
/// sent again, up to `max_reissues` times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AckTracking {
    pub track: bool,
    pub deadline: Span,
    pub max_reissues: u32,
    /// Commands older than this when the tracker starts are not waited for.
    pub lookback: Span,
}

impl Default for AckTracking {
    fn default() -> Self {
        AckTracking { track: false, deadline: Span::millis(30_000), max_reissues: 3, lookback: Span::millis(3_600_000) }
    }
}

/// The local checkpoint store (`[checkpoint]`): a cache of the changelog
/// that makes restarts read only its tail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Checkpoints {
    /// Where the store lives (one file for all workers); no local store
    /// when absent, and a restart reads the whole changelog.
    pub dir: Option<PathBuf>,
    /// How often each worker writes what changed since its last checkpoint;
    /// it also writes when partitions are revoked and at shutdown.
    pub interval: Span,
}

impl Default for Checkpoints {
    fn default() -> Self {
        Checkpoints { dir: None, interval: Span::millis(10_000) }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// `host:port[,host:port…]`.
    pub brokers: String,
    /// The consumer group of the activity topic; also the prefix of each
    /// worker's `transactional.id` (`<group_id>-<worker>`).
    pub group_id: String,
    /// Names this process among the instances of one group: part of each
    /// worker's `transactional.id` (`<group_id>-<instance_id>-<worker>`).
    /// Keep it stable across restarts, so a restarted instance fences its
    /// crashed predecessor, and different between instances.
    pub instance_id: Option<String>,
    pub delivery: Delivery,
    /// The longest an output waits for its transaction (exactly once) or its
    /// offset commit (at least once).
    pub commit_interval: Span,
    /// While a worker is saturated (it waited for input under a tenth of
    /// its last batch), each batch runs twice as long as the last, up to
    /// this: fewer commits and changelog records per event. The first batch
    /// that waits for input goes back to `commit_interval`. Equal to it (or
    /// shorter), batches have a fixed length.
    pub commit_interval_max: Span,
    /// A transaction also ends after this many input records.
    pub commit_max_records: usize,
    /// Independent group members in this process, one thread each.
    pub workers: usize,
    pub topics: Topics,
    pub create_topics: TopicCreation,
    pub avro: AvroSettings,
    pub signing: Signing,
    pub acks: AckTracking,
    pub checkpoint: Checkpoints,
    /// librdkafka properties for every client (consumers and producers).
    pub properties: BTreeMap<String, String>,
    /// librdkafka properties for the consumers only.
    pub consumer_properties: BTreeMap<String, String>,
    /// librdkafka properties for the producers only.
    pub producer_properties: BTreeMap<String, String>,
    /// Where to serve `/metrics`, `/livez` and `/readyz` (`host:port`);
    /// nowhere when absent.
    pub http: Option<String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            group_id: "vigil".into(),
            instance_id: None,
            delivery: Delivery::ExactlyOnce,
            commit_interval: Span::millis(50),
            commit_interval_max: Span::millis(200),
            commit_max_records: 20_000,
            workers: 1,
            topics: Topics::default(),
            create_topics: TopicCreation::default(),
            avro: AvroSettings::default(),
            signing: Signing::default(),
            acks: AckTracking::default(),
            checkpoint: Checkpoints::default(),
            properties: BTreeMap::new(),
            consumer_properties: BTreeMap::new(),
            producer_properties: BTreeMap::new(),
            http: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read `{path}`: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("`{path}`: {error}")]
    Parse { path: PathBuf, error: Box<toml::de::Error> },
    #[error("invalid configuration: {0}")]
    Invalid(String),
    #[error("environment variable `{variable}`: {error}")]
    Env { variable: String, error: String },
}

impl KafkaConfig {
    pub fn from_toml(text: &str) -> Result<KafkaConfig, ConfigError> {
        let config: KafkaConfig =
            toml::from_str(text).map_err(|error| ConfigError::Parse { path: PathBuf::new(), error: Box::new(error) })?;
        config.validate()?;
        Ok(config)
    }

    pub fn commit_interval(&self) -> Duration {
        self.commit_interval.0
    }

    /// The schema id map of `[avro] ids`, checked.
    pub fn avro_ids(&self) -> Result<BTreeMap<u32, String>, ConfigError> {
        self.avro
            .ids
            .iter()
            .map(|(id, file)| {
                id.trim()
                    .parse::<u32>()
                    .map(|id| (id, file.clone()))
                    .map_err(|_| ConfigError::Invalid(format!("avro schema id `{id}` is not a number")))
            })
            .collect()
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.brokers.trim().is_empty() {
            return invalid("`brokers` is empty".into());
        }
        for broker in self.brokers.split(',').map(str::trim) {
            let port = broker.rsplit_once(':').map(|(host, port)| (host.is_empty(), port.parse::<u16>()));
            if !matches!(port, Some((false, Ok(p))) if p > 0) {
                return invalid(format!("`brokers`: `{broker}` is not `host:port` with a port from 1 to 65535"));
            }
        }
        if self.group_id.trim().is_empty() {
            return invalid("`group_id` is empty".into());
        }
        if self.instance_id.as_ref().is_some_and(|id| id.trim().is_empty()) {
            return invalid("`instance_id` is empty".into());
        }
        if self.checkpoint.interval.0.is_zero() {
            return invalid("`checkpoint.interval` must be at least 1ms".into());
        }
        if self.workers == 0 {
            return invalid("`workers` must be at least 1".into());
        }
        if self.commit_interval.0.is_zero() {
            return invalid("`commit_interval` must be at least 1ms".into());
        }
        if self.commit_max_records == 0 {
            return invalid("`commit_max_records` must be at least 1".into());
        }
        for (role, name) in self.topics.all() {
            if name.trim().is_empty() {
                return invalid(format!("topic `{role}` has no name"));
            }
        }
        if self.topics.activity == self.topics.signals {
            return invalid(format!("activity and signals need two topics, both are `{}`", self.topics.activity));
        }
        if self.create_topics.partitions < 1 || self.create_topics.replication < 1 {
            return invalid("`create_topics` needs at least 1 partition and 1 replica".into());
        }
        if !self.avro.ids.is_empty() && self.avro.schema_dir.is_none() {
            return invalid("`avro.ids` needs `avro.schema_dir`".into());
        }
        self.avro_ids()?;
        if self.http.as_ref().is_some_and(|a| !a.contains(':')) {
            return invalid("`http` needs `host:port`, e.g. `127.0.0.1:9464`".into());
        }
        Ok(())
    }
}

/// librdkafka property names whose values are secrets.
const SECRET_WORDS: [&str; 3] = ["password", "secret", "ssl.key.pem"];

impl KafkaConfig {
    /// The file (or the defaults), then the `VIGIL_…` overrides among
    /// `vars` (see [`env`](mod@env)), then validation. Errors name the file and
    /// line, or the variable.
    pub fn resolve(
        file: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<KafkaConfig, ConfigError> {
        let path = file.map(Path::to_path_buf).unwrap_or_default();
        let text = match file {
            Some(path) => {
                std::fs::read_to_string(path).map_err(|error| ConfigError::Read { path: path.to_path_buf(), error })?
            }
            None => String::new(),
        };
        let parse = |error| ConfigError::Parse { path: path.clone(), error: Box::new(error) };
        // Parsed twice: as a table to merge into, and typed, so that a
        // mistake in the file is reported with its line.
        let mut table: toml::Table = toml::from_str(&text).map_err(parse)?;
        toml::from_str::<KafkaConfig>(&text).map_err(parse)?;
        for o in env::overrides(vars) {
            if let Err(error) = KafkaConfig::deserialize(toml::Value::Table(o.table())) {
                return Err(ConfigError::Env { variable: o.variable, error: error.to_string() });
            }
            o.apply(&mut table);
        }
        let config = KafkaConfig::deserialize(toml::Value::Table(table))
            .map_err(|error| ConfigError::Invalid(error.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// The configuration as TOML, with secret librdkafka properties
    /// replaced by `***`: what `vigil config check` prints.
    pub fn to_masked_toml(&self) -> String {
        let mut shown = self.clone();
        for map in [&mut shown.properties, &mut shown.consumer_properties, &mut shown.producer_properties] {
            for (key, value) in map.iter_mut() {
                if SECRET_WORDS.iter().any(|w| key.to_ascii_lowercase().contains(w)) {
                    *value = "***".into();
                }
            }
        }
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot print the configuration: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve_text(text: &str, vars: &[(&str, &str)]) -> Result<KafkaConfig, ConfigError> {
        let dir = tempfile::tempdir().map_err(|error| ConfigError::Read { path: PathBuf::new(), error })?;
        let path = dir.path().join("vigil.toml");
        std::fs::write(&path, text).map_err(|error| ConfigError::Read { path: path.clone(), error })?;
        KafkaConfig::resolve(Some(&path), vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())))
    }

    #[test]
    fn environment_overrides_the_file() {
        let config = resolve_text(
            "workers = 1\n[topics]\nactivity = \"a\"\n",
            &[("VIGIL_WORKERS", "3"), ("VIGIL_TOPICS__ACTIVITY", "from.env"), ("VIGIL_TEST_BROKERS", "ignored")],
        );
        let config = config.unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(config.workers, 3);
        assert_eq!(config.topics.activity, "from.env");
    }

    fn failure(result: Result<KafkaConfig, ConfigError>) -> String {
        result.err().map(|e| e.to_string()).unwrap_or_else(|| "accepted".into())
    }

    /// The shipped example names every key and parses to the defaults.
    #[test]
    fn the_example_file_documents_every_key() {
        let text = include_str!("../../vigil.example.toml");
        assert_eq!(KafkaConfig::from_toml(text).ok(), Some(KafkaConfig::default()));
        let Ok(toml::Value::Table(defaults)) = toml::Value::try_from(KafkaConfig::default()) else {
            unreachable!("the configuration serializes to a table")
        };
        let mut keys = Vec::new();
        for (key, value) in &defaults {
            keys.push(key.clone());
            if let toml::Value::Table(inner) = value {
                keys.extend(inner.keys().cloned());
            }
        }
        for optional in ["http", "registry", "schema_dir", "key", "caep_topic"] {
            keys.push(optional.into());
        }
        for key in keys {
            let named = [format!("{key} ="), format!("[{key}]"), format!(".{key}]")];
            assert!(named.iter().any(|n| text.contains(n.as_str())), "`{key}` is not in vigil.example.toml");
        }
    }

    #[test]
    fn mistakes_name_their_key_and_where_it_is() {
        let unknown = failure(resolve_text("brokers = \"h:1\"\n\nworkres = 2\n", &[]));
        assert!(unknown.contains("workres") && unknown.contains("line 3") && unknown.contains("vigil.toml"), "{unknown}");

        let env = failure(resolve_text("", &[("VIGIL_TOPICS__ACTIVTY", "x")]));
        assert!(env.contains("VIGIL_TOPICS__ACTIVTY") && env.contains("activty"), "{env}");

        let duration = failure(resolve_text("\ncommit_interval = \"10 minutes\"\n", &[]));
        assert!(duration.contains("commit_interval") && duration.contains("line 2") && duration.contains("10 minutes"), "{duration}");

        let typed = failure(resolve_text("", &[("VIGIL_WORKERS", "many")]));
        assert!(typed.contains("VIGIL_WORKERS"), "{typed}");

        for brokers in ["localhost", "host:port", ":9092", "h:0", "h:1,"] {
            let bad = failure(resolve_text(&format!("brokers = \"{brokers}\""), &[]));
            assert!(bad.contains("`brokers`"), "{brokers}: {bad}");
        }
    }

    #[test]
    fn printed_configuration_hides_secrets_and_reads_back() {
        let mut config = KafkaConfig::default();
        config.properties.insert("sasl.password".into(), "hunter2".into());
        config.properties.insert("sasl.username".into(), "vigil".into());
        let text = config.to_masked_toml();
        assert!(!text.contains("hunter2") && text.contains("***") && text.contains("vigil"), "{text}");
        let back = KafkaConfig::from_toml(&text).unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(back.properties["sasl.username"], "vigil");
    }

    #[test]
    fn an_empty_file_gives_the_spec_defaults() {
        let config = KafkaConfig::from_toml("").ok();
        assert_eq!(config, Some(KafkaConfig::default()));
        let topics = Topics::default();
        assert_eq!(topics.activity, "agent.activity");
        assert_eq!(topics.signals, "agent.signals");
        assert_eq!(topics.decisions, "vigil.decisions");
        assert_eq!(topics.alerts, "vigil.alerts");
        assert_eq!(topics.control, "vigil.control");
        assert_eq!(topics.dlq, "vigil.dlq");
        assert_eq!(KafkaConfig::default().delivery, Delivery::ExactlyOnce);
    }

    #[test]
    fn a_file_sets_what_it_names() {
        let text = r#"
            brokers = "kafka:9092"
            delivery = "at_least_once"
            workers = 3
            http = "0.0.0.0:9464"
            [topics]
            decisions = "out.decisions"
            [properties]
            "socket.keepalive.enable" = "true"
            [avro]
            schema_dir = "schemas"
            ids = { "7" = "activity_event.avsc" }
        "#;
        let config = KafkaConfig::from_toml(text);
        assert!(config.is_ok(), "{config:?}");
        let Ok(config) = config else { return };
        assert_eq!(config.brokers, "kafka:9092");
        assert_eq!(config.delivery, Delivery::AtLeastOnce);
        assert_eq!(config.workers, 3);
        assert_eq!(config.http.as_deref(), Some("0.0.0.0:9464"));
        assert_eq!(config.topics.decisions, "out.decisions");
        assert_eq!(config.topics.activity, "agent.activity");
        assert_eq!(config.properties.get("socket.keepalive.enable").map(String::as_str), Some("true"));
        assert_eq!(config.avro_ids().ok().and_then(|ids| ids.get(&7).cloned()).as_deref(), Some("activity_event.avsc"));
    }

    #[test]
    fn unknown_fields_and_bad_values_are_refused() {
        assert!(matches!(KafkaConfig::from_toml("broker = \"x\""), Err(ConfigError::Parse { .. })));
        assert!(matches!(KafkaConfig::from_toml("[topics]\nactivty = \"x\""), Err(ConfigError::Parse { .. })));
        assert!(matches!(KafkaConfig::from_toml("delivery = \"maybe\""), Err(ConfigError::Parse { .. })));
        assert!(matches!(KafkaConfig::from_toml("workers = 0"), Err(ConfigError::Invalid(_))));
        assert!(matches!(KafkaConfig::from_toml("http = \"9464\""), Err(ConfigError::Invalid(_))));
        assert!(matches!(KafkaConfig::from_toml("metrics = \"127.0.0.1:9464\""), Err(ConfigError::Parse { .. })));
        assert!(matches!(
            KafkaConfig::from_toml("[topics]\nsignals = \"agent.activity\""),
            Err(ConfigError::Invalid(_))
        ));
    }

    #[test]
    fn delivery_parses_both_spellings() {
        assert_eq!(Delivery::parse("exactly-once"), Some(Delivery::ExactlyOnce));
        assert_eq!(Delivery::parse("at_least_once"), Some(Delivery::AtLeastOnce));
        assert_eq!(Delivery::parse("sometimes"), None);
    }
}
