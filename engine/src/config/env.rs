//! Environment overrides: `VIGIL_<KEY>` sets a top-level key, and `__`
//! descends into a table, so `VIGIL_TOPICS__ACTIVITY=agents.in` is
//! `[topics] activity = "agents.in"`. A value is read as TOML when it parses
//! as a TOML value (`2`, `true`, `"quoted"`), as a plain string otherwise.
//!
//! Only variables whose first key is a configuration key are overrides, so
//! the other `VIGIL_…` variables a deployment may carry are left alone; an
//! unknown key *under* a known one is an error naming the variable.

use toml::{Table, Value};

pub const PREFIX: &str = "VIGIL_";
pub const NESTING: &str = "__";

/// Every top-level key of [`super::KafkaConfig`].
pub const TOP_LEVEL_KEYS: [&str; 18] = [
    "brokers",
    "group_id",
    "instance_id",
    "delivery",
    "commit_interval",
    "commit_interval_max",
    "commit_max_records",
    "workers",
    "topics",
    "create_topics",
    "avro",
    "signing",
    "acks",
    "checkpoint",
    "properties",
    "consumer_properties",
    "producer_properties",
    "http",
];

/// One override: the variable it came from, the key path and the value.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    pub variable: String,
    pub path: Vec<String>,
    pub value: Value,
}

impl Override {
    /// The override as a table of its own, `{a = {b = value}}`.
    pub fn table(&self) -> Table {
        let mut value = self.value.clone();
        for key in self.path.iter().skip(1).rev() {
            let mut table = Table::new();
            table.insert(key.clone(), value);
            value = Value::Table(table);
        }
        let mut table = Table::new();
        table.insert(self.path[0].clone(), value);
        table
    }

    /// Writes the value into `table`, creating the tables on its path.
    pub fn apply(&self, table: &mut Table) {
        let mut at = table;
        for key in &self.path[..self.path.len() - 1] {
            let entry = at.entry(key.clone()).or_insert_with(|| Value::Table(Table::new()));
            if !entry.is_table() {
                *entry = Value::Table(Table::new());
            }
            let Value::Table(next) = entry else { return };
            at = next;
        }
        at.insert(self.path[self.path.len() - 1].clone(), self.value.clone());
    }
}

fn parse_value(text: &str) -> Value {
    match toml::from_str::<Table>(&format!("v = {text}")) {
        Ok(mut table) => table.remove("v").unwrap_or_else(|| Value::String(text.to_owned())),
        Err(_) => Value::String(text.to_owned()),
    }
}

/// The overrides among `vars`, sorted by variable name so that they apply in
/// the same order everywhere.
pub fn overrides(vars: impl IntoIterator<Item = (String, String)>) -> Vec<Override> {
    let mut found: Vec<Override> = vars
        .into_iter()
        .filter_map(|(variable, text)| {
            let rest = variable.strip_prefix(PREFIX)?;
            let path: Vec<String> = rest.split(NESTING).map(str::to_ascii_lowercase).collect();
            if path.iter().any(String::is_empty) || !TOP_LEVEL_KEYS.contains(&path[0].as_str()) {
                return None;
            }
            Some(Override { variable, path, value: parse_value(&text) })
        })
        .collect();
    found.sort_by(|a, b| a.variable.cmp(&b.variable));
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn known_keys_become_overrides_with_typed_values() {
        let found = overrides(vars(&[
            ("VIGIL_WORKERS", "2"),
            ("VIGIL_TOPICS__ACTIVITY", "agents.in"),
            ("VIGIL_TEST_BROKERS", "127.0.0.1:1"),
            ("HOME", "/"),
            ("VIGIL_TOPICS__", "x"),
        ]));
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].path, ["topics", "activity"]);
        assert_eq!(found[0].value, Value::String("agents.in".into()));
        assert_eq!(found[1].value, Value::Integer(2));

        let mut table = Table::new();
        for o in &found {
            o.apply(&mut table);
        }
        assert_eq!(table["topics"]["activity"].as_str(), Some("agents.in"));
        assert_eq!(found[0].table()["topics"]["activity"].as_str(), Some("agents.in"));
    }

    #[test]
    fn the_key_list_names_every_field() {
        let Ok(Value::Table(table)) = Value::try_from(super::super::KafkaConfig::default()) else {
            unreachable!("the configuration serializes to a table")
        };
        for key in table.keys() {
            assert!(TOP_LEVEL_KEYS.contains(&key.as_str()), "`{key}` is missing from TOP_LEVEL_KEYS");
        }
    }
}
