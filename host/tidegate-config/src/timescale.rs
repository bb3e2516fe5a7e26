//! `[timescale]`: the time-series lifecycle as declared state — hypertables with their chunk
//! interval, space partitions, compression and retention, and the continuous aggregates over
//! them. `tidegate timescale plan` compares it with the live catalog, `apply` makes the catalog
//! so, `status` reports the live state.
//!
//! Names are checked here for shape only (`schema.name` or `name`, meaning `public.name`);
//! whether they exist is checked against the catalog at plan time.

use serde::{Deserialize, Deserializer};
use std::collections::{BTreeMap, HashSet};
use std::fmt;

/// `[timescale]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Timescale {
    /// The database the declared objects live in (default: `upstream.primary.database`).
    pub database: Option<String>,
    /// `[[timescale.hypertables]]`
    pub hypertables: Vec<Hypertable>,
    /// Rows per batch of `tidegate cleanup`'s `DELETE` on plain tables.
    pub cleanup_batch_rows: u32,
    /// How often a caching broker reads TimescaleDB's job runs (`job_stats`): a finished
    /// refresh or retention run invalidates the cached reads of its aggregate or hypertable
    /// (0 = never).
    pub watch_interval: crate::Millis,
}

/// One declared hypertable.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Hypertable {
    /// `schema.table` (or `table`, in `public`).
    pub table: String,
    /// The time column (the first dimension).
    pub time_column: String,
    /// The time range one chunk covers.
    #[serde(default = "seven_days")]
    pub chunk_interval: Interval,
    /// Hash partitioning on a second column.
    #[serde(default)]
    pub space: Option<Space>,
    /// Native compression and its policy.
    #[serde(default)]
    pub compression: Option<Compression>,
    /// The retention policy: chunks older than this are dropped.
    #[serde(default)]
    pub retention: Option<Retention>,
    /// `[[timescale.hypertables.continuous_aggregates]]`
    #[serde(default)]
    pub continuous_aggregates: Vec<ContinuousAggregate>,
}

/// `space = { column, partitions }`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Space {
    /// The hash-partitioned column.
    pub column: String,
    /// The number of partitions (1 to 32767).
    pub partitions: u16,
}

/// `compression = { after, segment_by, order_by }`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Compression {
    /// Chunks older than this are compressed by the policy.
    pub after: Interval,
    /// Columns whose values each compressed batch shares.
    #[serde(default)]
    pub segment_by: Vec<String>,
    /// The order inside a batch: `"time DESC"`, `"a, b DESC NULLS LAST"`.
    #[serde(default)]
    pub order_by: Option<String>,
}

/// `retention = { drop_after }`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Chunks whose data is all older than this are dropped.
    pub drop_after: Interval,
}

/// One declared continuous aggregate over its hypertable.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ContinuousAggregate {
    /// `schema.view` (or `view`, in `public`).
    pub name: String,
    /// The `time_bucket` width.
    pub bucket: Interval,
    /// Columns grouped by besides the bucket.
    #[serde(default)]
    pub group_by: Vec<String>,
    /// `{column = ["avg", "min", …]}`: each becomes column `<column>_<function>`.
    pub aggregates: BTreeMap<String, Vec<String>>,
    /// The refresh policy.
    #[serde(default)]
    pub refresh: Option<Refresh>,
    /// A retention policy on the aggregate itself.
    #[serde(default)]
    pub retention: Option<Retention>,
}

/// `refresh = { start_offset, end_offset, every }`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Refresh {
    /// The window's start, this far before now.
    pub start_offset: Interval,
    /// The window's end, this far before now.
    pub end_offset: Interval,
    /// How often the policy runs.
    pub every: Interval,
}

/// The aggregate functions a continuous aggregate may declare. `first` and `last` take the
/// time column as their second argument.
pub const AGGREGATES: &[&str] = &[
    "avg", "min", "max", "sum", "count", "stddev", "variance", "first", "last",
];

/// A PostgreSQL interval written as a number and a unit: `"90s"`, `"30m"`, `"1h"`, `"1d"`,
/// `"2w"`, `"3mo"`, `"2y"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    /// How many units.
    pub count: u32,
    /// The unit.
    pub unit: IntervalUnit,
}

/// The units of an [`Interval`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntervalUnit {
    /// `s`
    Second,
    /// `m`, `min`
    Minute,
    /// `h`
    Hour,
    /// `d`
    Day,
    /// `w`
    Week,
    /// `mo`
    Month,
    /// `y`
    Year,
}

impl Interval {
    /// Parses `"1d"`, `"30m"`, `"2y"`.
    pub fn parse(s: &str) -> Result<Interval, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let count: u32 = num.parse().map_err(|_| {
            format!("invalid interval {s:?}: expected a number and a unit, e.g. \"1d\", \"30m\"")
        })?;
        let unit = match unit.trim() {
            "s" => IntervalUnit::Second,
            "m" | "min" => IntervalUnit::Minute,
            "h" => IntervalUnit::Hour,
            "d" => IntervalUnit::Day,
            "w" => IntervalUnit::Week,
            "mo" => IntervalUnit::Month,
            "y" => IntervalUnit::Year,
            other => {
                return Err(format!(
                    "invalid interval unit {other:?} in {s:?}: one of s, m, h, d, w, mo, y"
                ))
            }
        };
        if count == 0 {
            return Err(format!("interval {s:?} must be positive"));
        }
        Ok(Interval { count, unit })
    }

    /// The interval as PostgreSQL reads it: `INTERVAL '7 days'`.
    pub fn sql(&self) -> String {
        format!("INTERVAL '{}'", self.pg())
    }

    /// The interval's text: `7 days`.
    pub fn pg(&self) -> String {
        let unit = match self.unit {
            IntervalUnit::Second => "second",
            IntervalUnit::Minute => "minute",
            IntervalUnit::Hour => "hour",
            IntervalUnit::Day => "day",
            IntervalUnit::Week => "week",
            IntervalUnit::Month => "month",
            IntervalUnit::Year => "year",
        };
        let s = if self.count == 1 { "" } else { "s" };
        format!("{} {unit}{s}", self.count)
    }

    /// Seconds, as PostgreSQL's `extract(epoch FROM interval)` counts them (a month is 30 days,
    /// a year 365.25).
    pub fn seconds(&self) -> f64 {
        let unit = match self.unit {
            IntervalUnit::Second => 1.0,
            IntervalUnit::Minute => 60.0,
            IntervalUnit::Hour => 3_600.0,
            IntervalUnit::Day => 86_400.0,
            IntervalUnit::Week => 604_800.0,
            IntervalUnit::Month => 2_592_000.0,
            IntervalUnit::Year => 31_557_600.0,
        };
        f64::from(self.count) * unit
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.pg())
    }
}

impl<'de> Deserialize<'de> for Interval {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Interval::parse(&s).map_err(serde::de::Error::custom)
    }
}

fn seven_days() -> Interval {
    Interval {
        count: 7,
        unit: IntervalUnit::Day,
    }
}

/// `schema.name` from `name` or `schema.name`; `None` when it is not of that shape.
pub fn qualified(name: &str) -> Option<(String, String)> {
    let (schema, rel) = match name.split_once('.') {
        Some((s, r)) => (s, r),
        None => ("public", name),
    };
    (identifier(schema) && identifier(rel)).then(|| (schema.to_owned(), rel.to_owned()))
}

/// A plain identifier: letters, digits, `_` and `$`, not starting with a digit or `$`, at most
/// 63 bytes. (Quoted names with other characters are not supported in declared state.)
pub fn identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || c == '_' || c == '$')
        && s.len() <= 63
}

/// The columns of an `order_by`: `[(column, "DESC NULLS LAST")]`, or why it is malformed.
pub fn order_by_terms(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for term in s.split(',') {
        let words: Vec<&str> = term.split_whitespace().collect();
        let Some((col, rest)) = words.split_first() else {
            return Err(format!("empty term in {s:?}"));
        };
        if !identifier(col) {
            return Err(format!("{col:?} is not a column name"));
        }
        let rest: Vec<String> = rest.iter().map(|w| w.to_ascii_uppercase()).collect();
        let ok = matches!(
            rest.iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .as_slice(),
            [] | ["ASC"]
                | ["DESC"]
                | ["NULLS", "FIRST" | "LAST"]
                | ["ASC" | "DESC", "NULLS", "FIRST" | "LAST"]
        );
        if !ok {
            return Err(format!(
                "{term:?}: expected `column [ASC|DESC] [NULLS FIRST|LAST]`"
            ));
        }
        out.push((col.to_string(), rest.join(" ")));
    }
    Ok(out)
}

impl Timescale {
    /// Checks names, intervals and functions; `Err((key path, message))`.
    pub(crate) fn check(&self) -> Result<(), (String, String)> {
        if self.cleanup_batch_rows == 0 {
            return Err((
                "timescale.cleanup_batch_rows".into(),
                "must be at least 1".into(),
            ));
        }
        if let Some(db) = &self.database {
            if db.is_empty() {
                return Err(("timescale.database".into(), "must not be empty".into()));
            }
        }
        let mut tables = HashSet::new();
        let mut views = HashSet::new();
        for (i, h) in self.hypertables.iter().enumerate() {
            let at = |k: &str| format!("timescale.hypertables[{i}].{k}");
            let bad = |k: &str, m: String| Err((at(k), m));
            let Some(table) = qualified(&h.table) else {
                return bad(
                    "table",
                    format!("{:?} is not `schema.table` or `table`", h.table),
                );
            };
            if !tables.insert(table) {
                return bad("table", format!("{:?} is declared twice", h.table));
            }
            if !identifier(&h.time_column) {
                return bad(
                    "time_column",
                    format!("{:?} is not a column name", h.time_column),
                );
            }
            if let Some(s) = &h.space {
                if !identifier(&s.column) {
                    return bad("space", format!("{:?} is not a column name", s.column));
                }
                if s.partitions == 0 || s.partitions > 32_767 {
                    return bad("space", "partitions must be between 1 and 32767".into());
                }
            }
            if let Some(c) = &h.compression {
                if let Some(col) = c.segment_by.iter().find(|c| !identifier(c)) {
                    return bad(
                        "compression",
                        format!("segment_by: {col:?} is not a column name"),
                    );
                }
                if let Some(o) = &c.order_by {
                    order_by_terms(o).map_err(|m| (at("compression"), format!("order_by: {m}")))?;
                }
            }
            for (j, a) in h.continuous_aggregates.iter().enumerate() {
                let at =
                    |k: &str| format!("timescale.hypertables[{i}].continuous_aggregates[{j}].{k}");
                let bad = |k: &str, m: String| Err((at(k), m));
                let Some(view) = qualified(&a.name) else {
                    return bad(
                        "name",
                        format!("{:?} is not `schema.view` or `view`", a.name),
                    );
                };
                if !views.insert(view) {
                    return bad("name", format!("{:?} is declared twice", a.name));
                }
                if let Some(col) = a.group_by.iter().find(|c| !identifier(c)) {
                    return bad("group_by", format!("{col:?} is not a column name"));
                }
                if a.aggregates.is_empty() {
                    return bad(
                        "aggregates",
                        "declare at least one column and function".into(),
                    );
                }
                for (col, fns) in &a.aggregates {
                    if !identifier(col) {
                        return bad("aggregates", format!("{col:?} is not a column name"));
                    }
                    if fns.is_empty() {
                        return bad("aggregates", format!("{col:?}: no functions"));
                    }
                    if let Some(f) = fns.iter().find(|f| !AGGREGATES.contains(&f.as_str())) {
                        return bad(
                            "aggregates",
                            format!("{col:?}: {f:?} is not one of {}", AGGREGATES.join(", ")),
                        );
                    }
                }
                if let Some(r) = &a.refresh {
                    // TimescaleDB refuses a refresh window narrower than two buckets.
                    let window = r.start_offset.seconds() - r.end_offset.seconds();
                    if window < 2.0 * a.bucket.seconds() {
                        return bad(
                            "refresh",
                            format!(
                                "start_offset ({}) minus end_offset ({}) must cover at least two buckets of {}",
                                r.start_offset, r.end_offset, a.bucket
                            ),
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// The database the declared objects live in.
    pub fn database<'a>(&'a self, primary_database: &'a str) -> &'a str {
        self.database.as_deref().unwrap_or(primary_database)
    }
}

impl Default for Timescale {
    fn default() -> Self {
        Timescale {
            database: None,
            hypertables: Vec::new(),
            cleanup_batch_rows: 10_000,
            watch_interval: crate::Millis(5_000),
        }
    }
}
