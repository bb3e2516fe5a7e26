//! The optimizer's configuration, and its checked form.

use crate::cagg::{self, Cagg};
use serde::Deserialize;
use tidegate_plugin_sdk::prelude::*;
use tidegate_plugin_sdk::TableRef;

/// The plugin's configuration (`[plugins.optimizer.config]`; TideGate adds
/// `continuous_aggregates` from the catalog).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The hypertables to guard: `"schema.table"` or `"table"` (any schema).
    pub hypertables: Vec<String>,
    /// Their time column: one name for all (default `"time"`), or a map from hypertable (as
    /// written in `hypertables`) to name, with `"time"` for the others.
    pub time_column: Option<TimeColumn>,
    /// A read of a hypertable with no condition on its time column is denied (`"reject"`, the
    /// default) or allowed with a log line (`"allow"`).
    pub unbounded: Unbounded,
    /// If set, a single plain SELECT reading a hypertable without LIMIT gets `LIMIT max_rows`.
    pub max_rows: Option<u64>,
    /// Whether to rewrite queries to continuous aggregates (default true).
    pub cagg_rewrite: Option<bool>,
    /// Continuous aggregates queries may be rewritten to.
    pub continuous_aggregates: Vec<cagg::Config>,
}

/// A time column for all hypertables, or per hypertable.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum TimeColumn {
    /// The same column for all.
    All(String),
    /// Per hypertable; `"time"` for those not listed.
    Each(BTreeMap<String, String>),
}

/// What happens to an unbounded read of a hypertable.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Unbounded {
    /// Deny it.
    #[default]
    Reject,
    /// Allow it, and log a hint.
    Allow,
}

/// The default time column.
pub const DEFAULT_TIME_COLUMN: &str = "time";

/// A table name from the configuration: `schema.table` or `table`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    /// The schema, if given.
    pub schema: Option<String>,
    /// The table.
    pub name: String,
}

impl TableName {
    /// Reads `schema.table` or `table`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.split('.').collect();
        match parts.as_slice() {
            [name] if !name.is_empty() => Ok(TableName {
                schema: None,
                name: (*name).to_owned(),
            }),
            [schema, name] if !schema.is_empty() && !name.is_empty() => Ok(TableName {
                schema: Some((*schema).to_owned()),
                name: (*name).to_owned(),
            }),
            _ => Err(format!("{text:?} is not \"schema.table\" or \"table\"")),
        }
    }

    /// Whether a reference to `table` may be this table: same name, and same schema when both
    /// name one (an unqualified reference may be any schema's table).
    pub fn matches(&self, schema: Option<&str>, name: &str) -> bool {
        self.name == name
            && match (&self.schema, schema) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }

    /// Whether a [`TableRef`] may be this table.
    pub fn matches_ref(&self, table: &TableRef) -> bool {
        self.matches(table.schema.as_deref(), &table.name)
    }
}

impl core::fmt::Display for TableName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match &self.schema {
            Some(s) => write!(f, "{s}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// A guarded hypertable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hypertable {
    /// Its name.
    pub table: TableName,
    /// Its time column.
    pub time_column: String,
}

/// A checked configuration.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The guarded hypertables.
    pub hypertables: Vec<Hypertable>,
    /// What happens to unbounded reads.
    pub unbounded: Unbounded,
    /// The LIMIT added to plain SELECTs.
    pub max_rows: Option<u64>,
    /// The continuous aggregates to rewrite to (empty with `cagg_rewrite = false`).
    pub caggs: Vec<Cagg>,
    time_columns: TimeColumn,
}

impl Policy {
    /// Checks a configuration.
    pub fn new(config: Config) -> Result<Self, String> {
        let time_columns = config
            .time_column
            .unwrap_or_else(|| TimeColumn::All(DEFAULT_TIME_COLUMN.to_owned()));
        match &time_columns {
            TimeColumn::All(c) if c.is_empty() => {
                return Err("time_column: empty column name".to_owned())
            }
            TimeColumn::Each(map) => {
                for (table, column) in map {
                    TableName::parse(table).map_err(|e| format!("time_column: {e}"))?;
                    if column.is_empty() {
                        return Err(format!("time_column.{table}: empty column name"));
                    }
                }
            }
            TimeColumn::All(_) => {}
        }
        let mut policy = Policy {
            hypertables: Vec::new(),
            unbounded: config.unbounded,
            max_rows: config.max_rows,
            caggs: Vec::new(),
            time_columns,
        };
        for text in &config.hypertables {
            let table = TableName::parse(text).map_err(|e| format!("hypertables: {e}"))?;
            let time_column = policy.time_column_of(text, &table);
            policy.hypertables.push(Hypertable { table, time_column });
        }
        if policy.max_rows == Some(0) {
            return Err("max_rows: must be at least 1 (or unset)".to_owned());
        }
        if config.cagg_rewrite.unwrap_or(true) {
            for (i, c) in config.continuous_aggregates.into_iter().enumerate() {
                let hypertable = TableName::parse(&c.hypertable)
                    .map_err(|e| format!("continuous_aggregates[{i}].hypertable: {e}"))?;
                let time_column = policy.time_column_of(&c.hypertable, &hypertable);
                let cagg = Cagg::new(c, hypertable, time_column)
                    .map_err(|e| format!("continuous_aggregates[{i}]: {e}"))?;
                policy.caggs.push(cagg);
            }
        }
        Ok(policy)
    }

    /// The time column of a hypertable named `text` in the configuration.
    fn time_column_of(&self, text: &str, table: &TableName) -> String {
        match &self.time_columns {
            TimeColumn::All(c) => c.clone(),
            TimeColumn::Each(map) => map
                .get(text)
                .or_else(|| {
                    map.iter()
                        .find(|(k, _)| TableName::parse(k).is_ok_and(|k| k == *table))
                        .map(|(_, v)| v)
                })
                .cloned()
                .unwrap_or_else(|| DEFAULT_TIME_COLUMN.to_owned()),
        }
    }

    /// The guarded hypertables among `tables`.
    pub fn hypertables_in<'a>(&'a self, tables: &[TableRef]) -> Vec<&'a Hypertable> {
        self.hypertables
            .iter()
            .filter(|h| tables.iter().any(|t| h.table.matches_ref(t)))
            .collect()
    }
}
