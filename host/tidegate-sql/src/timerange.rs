//! Resolving a classification's time-bound shape against one statement text and its
//! parameters.

use crate::classify::{Classification, TableName};
use crate::lexer::{literals, LiteralKind};
use crate::timebound::BoundOp;
use crate::timestamp::parse_timestamp;

/// `(from, to)` as they narrow.
type Ends = (Option<i64>, Option<i64>);

/// The rows a query can see on one column: `[from, to)` in microseconds since 1970-01-01 UTC;
/// `None` is open on that side.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimeRange {
    /// The column's table, as in [`TimeBound::table`](crate::TimeBound::table).
    pub table: Option<TableName>,
    /// Column name, lower-cased unless quoted.
    pub column: String,
    /// Inclusive lower end.
    pub from: Option<i64>,
    /// Exclusive upper end; never below `from` (a contradictory predicate gives an empty
    /// range, `from == to`).
    pub to: Option<i64>,
}

/// The time ranges `sql` restricts its rows to, one per bounded (table, column), sorted.
///
/// `class` is the classification of `sql` or of any statement with the same fingerprint (e.g.
/// from a [`ClassCache`](crate::ClassCache)): the values are read from `sql` itself, and `$n`
/// from `params[n - 1]` (text format; `None` for NULL or binary). Untyped constants and
/// parameters are read as `timestamptz`; a zone-less value takes `default_offset_secs`, the
/// session time zone's offset in seconds east of UTC. When the session's zone has no fixed
/// offset (daylight saving time), pass [`NO_DEFAULT_OFFSET`](crate::NO_DEFAULT_OFFSET): only
/// values that name their zone are read then.
///
/// A bound whose value cannot be read exactly is left out (the range stays open on that side),
/// so the result never excludes a row the query can return. Columns without any readable bound
/// are not listed. Which columns are time columns is the caller's choice.
pub fn time_range(
    sql: &str,
    class: &Classification,
    params: &[Option<&str>],
    default_offset_secs: i32,
) -> Vec<TimeRange> {
    if class.time_bounds.is_empty() {
        return Vec::new();
    }
    let lits = literals(sql);
    // Few columns per query: a vector beats a map.
    let mut ranges: Vec<((Option<&TableName>, &str), Ends)> = Vec::new();
    for b in &class.time_bounds {
        let Some(lit) = lits.get(b.literal) else {
            continue;
        };
        let value = match lit.kind {
            LiteralKind::Param(n) => n
                .checked_sub(1)
                .and_then(|i| params.get(i).copied().flatten())
                .and_then(|text| parse_timestamp(text, b.cast, default_offset_secs)),
            _ => lit
                .string_value()
                .and_then(|text| parse_timestamp(&text, b.cast, default_offset_secs)),
        };
        let Some(v) = value else {
            continue;
        };
        let (from, to) = match b.op {
            BoundOp::Lower { inclusive: true } => (Some(v), None),
            BoundOp::Lower { inclusive: false } => (v.checked_add(1), None),
            BoundOp::Upper { inclusive: true } => (None, v.checked_add(1)),
            BoundOp::Upper { inclusive: false } => (None, Some(v)),
            BoundOp::Eq => (Some(v), v.checked_add(1)),
        };
        if from.is_none() && to.is_none() {
            continue;
        }
        let key = (b.table.as_ref(), b.column.as_str());
        let i = match ranges.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                ranges.push((key, (None, None)));
                ranges.len() - 1
            }
        };
        let r = &mut ranges[i].1;
        r.0 = r.0.max(from);
        r.1 = match (r.1, to) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    ranges.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    ranges
        .into_iter()
        .map(|((table, column), (from, to))| TimeRange {
            table: table.cloned(),
            column: column.to_owned(),
            from,
            to: match (from, to) {
                (Some(f), Some(t)) => Some(t.max(f)),
                _ => to,
            },
        })
        .collect()
}
