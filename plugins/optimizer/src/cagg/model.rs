//! Continuous aggregates as configured, and their parsed form.

use super::normalize;
use crate::config::TableName;
use crate::scan::Scan;
use serde::Deserialize;
use tidegate_plugin_sdk::prelude::*;

/// A continuous aggregate, as configured (TideGate fills these in from the catalog).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The aggregate's view: `"schema.view"` or `"view"`.
    pub name: String,
    /// The hypertable it aggregates.
    pub hypertable: String,
    /// Its `time_bucket` width, e.g. `"1 hour"`.
    pub bucket: String,
    /// The aggregate's bucket column. Default `"bucket"`.
    #[serde(default = "default_bucket_column")]
    pub time_column: String,
    /// The hypertable's time column, if not the one the optimizer's `time_column` gives.
    #[serde(default)]
    pub hypertable_time_column: Option<String>,
    /// The columns it groups by besides the bucket (named the same in the aggregate).
    #[serde(default)]
    pub group_by: Vec<String>,
    /// Each aggregate expression over the hypertable (e.g. `"avg(cpu)"`) and the aggregate's
    /// column holding it (e.g. `"avg_cpu"`).
    #[serde(default)]
    pub aggregates: BTreeMap<String, String>,
}

fn default_bucket_column() -> String {
    "bucket".to_owned()
}

/// A bucket width, normalised so that equal widths compare equal within a unit family
/// (`'60 minutes'` = `'1 hour'`, `'1 week'` = `'7 days'`, `'1 year'` = `'12 months'`), but never
/// across them (`'1 day'` ≠ `'24 hours'`: time_bucket may treat them differently).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bucket {
    /// Microseconds, from microsecond … hour units.
    Micros(u128),
    /// Days, from day and week units.
    Days(u128),
    /// Months, from month and year units.
    Months(u128),
    /// Anything else (an integer width, or a form not parsed), lower-cased and with blanks
    /// collapsed.
    Other(String),
}

impl Bucket {
    /// Reads a width like `"1 hour"`, `"15min"`, `"1 hour 30 minutes"` or `"10"`.
    pub fn parse(text: &str) -> Self {
        let norm = text
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_ascii_lowercase();
        Self::units(&norm).unwrap_or(Bucket::Other(norm))
    }

    fn units(text: &str) -> Option<Self> {
        let b = text.as_bytes();
        let (mut micros, mut days, mut months) = (0u128, 0u128, 0u128);
        let mut i = 0;
        let mut any = false;
        while i < b.len() {
            while i < b.len() && b[i] == b' ' {
                i += 1;
            }
            let n_start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            let n: u128 = text.get(n_start..i)?.parse().ok()?;
            while i < b.len() && b[i] == b' ' {
                i += 1;
            }
            let u_start = i;
            while i < b.len() && b[i].is_ascii_alphabetic() {
                i += 1;
            }
            let unit = &text[u_start..i];
            let (family, scale): (u8, u128) = match unit {
                "microsecond" | "microseconds" | "us" | "usec" | "usecs" => (0, 1),
                "millisecond" | "milliseconds" | "ms" | "msec" | "msecs" => (0, 1_000),
                "second" | "seconds" | "s" | "sec" | "secs" => (0, 1_000_000),
                "minute" | "minutes" | "m" | "min" | "mins" => (0, 60_000_000),
                "hour" | "hours" | "h" | "hr" | "hrs" => (0, 3_600_000_000),
                "day" | "days" | "d" => (1, 1),
                "week" | "weeks" | "w" => (1, 7),
                "month" | "months" | "mon" | "mons" => (2, 1),
                "year" | "years" | "y" | "yr" | "yrs" => (2, 12),
                _ => return None,
            };
            let slot = match family {
                0 => &mut micros,
                1 => &mut days,
                _ => &mut months,
            };
            *slot = slot.checked_add(n.checked_mul(scale)?)?;
            any = true;
        }
        match (any, micros, days, months) {
            (true, m, 0, 0) if m > 0 => Some(Bucket::Micros(m)),
            (true, 0, d, 0) if d > 0 => Some(Bucket::Days(d)),
            (true, 0, 0, m) if m > 0 => Some(Bucket::Months(m)),
            _ => None,
        }
    }
}

/// A checked continuous aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cagg {
    /// Its view.
    pub name: TableName,
    /// The hypertable it aggregates.
    pub hypertable: TableName,
    /// The hypertable's time column.
    pub time_column: String,
    /// Its bucket width.
    pub bucket: Bucket,
    /// Its bucket column.
    pub bucket_column: String,
    /// Its group columns, sorted.
    pub group_by: Vec<String>,
    /// Normalised aggregate expressions and the columns holding them.
    pub aggregates: Vec<(String, String)>,
}

impl Cagg {
    /// Checks a configured aggregate of `hypertable`, whose time column is `time_column`
    /// unless the configuration names another.
    pub fn new(c: Config, hypertable: TableName, time_column: String) -> Result<Self, String> {
        let name = TableName::parse(&c.name).map_err(|e| format!("name: {e}"))?;
        if c.bucket.trim().is_empty() {
            return Err("bucket: empty".to_owned());
        }
        if c.time_column.is_empty() || c.group_by.iter().any(String::is_empty) {
            return Err("empty column name".to_owned());
        }
        let mut aggregates = Vec::new();
        for (expr, column) in &c.aggregates {
            let scan = Scan::new(expr).filter(|s| !s.is_empty());
            let norm = scan
                .and_then(|s| normalize(&s, 0, s.len(), &[]))
                .ok_or_else(|| format!("aggregates: cannot read {expr:?}"))?;
            if column.is_empty() {
                return Err(format!("aggregates.{expr}: empty column name"));
            }
            aggregates.push((norm, column.clone()));
        }
        let mut group_by = c.group_by;
        group_by.sort();
        group_by.dedup();
        Ok(Cagg {
            name,
            hypertable,
            time_column: c.hypertable_time_column.unwrap_or(time_column),
            bucket: Bucket::parse(&c.bucket),
            bucket_column: c.time_column,
            group_by,
            aggregates,
        })
    }
}
