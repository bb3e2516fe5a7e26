//! Native range partitions, where TimescaleDB is not installed (or the table is partitioned
//! natively): kept ahead of time as wide as the declared chunk interval.

use super::{literal, qname, Change, Plan};
use crate::timescale::live::{self, Live, Name};
use tidegate_config::{Hypertable, IntervalUnit};
use tidegate_sql::quote_ident as quote;

/// Partitions kept ahead of time on a natively partitioned table: from one interval before
/// now to this many after.
pub const NATIVE_AHEAD: u32 = 7;

/// Without TimescaleDB (or on a table partitioned natively): the declared chunk interval is
/// the width of native range partitions, which `apply` keeps from one interval before now to
/// [`NATIVE_AHEAD`] after, aligned to the epoch in UTC and named `<table>_pYYYYMMDD_HHMMSS`.
/// What only TimescaleDB can do is said in a note.
pub(super) fn partitions(
    p: &mut Plan,
    h: &Hypertable,
    name: &Name,
    table: &live::Table,
    live: &Live,
) {
    let object = qname(name);
    let needs: Vec<&str> = [
        h.space.as_ref().map(|_| "space partitions"),
        h.compression.as_ref().map(|_| "compression"),
        h.retention
            .as_ref()
            .map(|_| "a retention policy (`tidegate cleanup` applies retention)"),
        (!h.continuous_aggregates.is_empty()).then_some("continuous aggregates"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !live.timescaledb && !needs.is_empty() {
        p.notes.push(format!(
            "{object}: TimescaleDB is not installed: {} not applied",
            needs.join(", ")
        ));
    }
    let Some(native) = &table.native else {
        p.notes.push(format!(
            "{object} is a plain table and TimescaleDB is not installed: nothing to partition \
             (a table made with PARTITION BY RANGE ({}) gets its partitions kept ahead)",
            h.time_column
        ));
        return;
    };
    if live.timescaledb {
        p.errors.push(format!(
            "{object} is partitioned natively: TimescaleDB cannot make it a hypertable"
        ));
        return;
    }
    if native.key != h.time_column {
        p.errors.push(format!(
            "{object} is partitioned on {:?}, declared on {:?}",
            native.key, h.time_column
        ));
        return;
    }
    let width = h.chunk_interval.seconds();
    if matches!(
        h.chunk_interval.unit,
        IntervalUnit::Month | IntervalUnit::Year
    ) {
        p.errors.push(format!(
            "{object}: native partitions need a fixed-length chunk_interval (s, m, h, d or w), not {}",
            h.chunk_interval
        ));
        return;
    }
    let first = (live.now / width).floor() * width - width;
    for k in 0..=NATIVE_AHEAD + 1 {
        let from = first + f64::from(k) * width;
        let to = from + width;
        if native.ranges.iter().any(|(_, f, t)| *f < to && *t > from) {
            continue;
        }
        let part_name = format!("{}_p{}", name.1, utc(from, true));
        if part_name.len() > 63 {
            p.errors.push(format!(
                "{object}: the partition name {part_name:?} would be longer than 63 bytes"
            ));
            return;
        }
        let part = qname(&(name.0.clone(), part_name));
        let (a, b) = (literal(&utc(from, false)), literal(&utc(to, false)));
        let key = quote(&native.key);
        let statements = match &native.default {
            // Rows of the range already in the default partition move into the new one
            // (attaching over them would fail).
            Some(default) => vec![
                format!(
                    "CREATE TABLE {part} (LIKE {object} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
                ),
                format!(
                    "WITH moved AS (DELETE FROM {} WHERE {key} >= {a} AND {key} < {b} RETURNING *) \
                     INSERT INTO {part} SELECT * FROM moved",
                    qname(&(name.0.clone(), default.clone()))
                ),
                format!(
                    "ALTER TABLE {object} ATTACH PARTITION {part} FOR VALUES FROM ({a}) TO ({b})"
                ),
            ],
            None => vec![format!(
                "CREATE TABLE {part} PARTITION OF {object} FOR VALUES FROM ({a}) TO ({b})"
            )],
        };
        p.changes.push(Change {
            object: object.clone(),
            why: format!(
                "no partition for [{}, {}): partitions are kept {NATIVE_AHEAD} intervals ahead",
                utc(from, false),
                utc(to, false)
            ),
            statements,
            recreate: false,
        });
    }
}

/// Seconds since the epoch as UTC: `2026-12-05 00:00:00+00`, or `20261205_000000` for a name.
fn utc(secs: f64, compact: bool) -> String {
    tidegate_sql::utc_text(secs as i64, compact)
}
