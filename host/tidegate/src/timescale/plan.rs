//! The plan: what `apply` would change to make the live catalog ([`Live`]) what the
//! configuration declares, as SQL statements with one line of why each. A pure function of the
//! two, so every rule is unit-tested without a server.

mod cagg;
mod native;
mod policy;

use super::live::{self, Live, Name};
use policy::{reconcile, Wanted, COMPRESSION, RETENTION};
use serde::Serialize;
use tidegate_config::{order_by_terms, qualified, Compression, Hypertable, Retention, Timescale};
use tidegate_sql::quote_ident as quote;

pub use cagg::{create_cagg, definition_comment};
pub use native::NATIVE_AHEAD;

/// What `apply` would do.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Plan {
    /// The changes, in the order they run.
    pub changes: Vec<Change>,
    /// What the declared state cannot make so and leaves alone (said, never silent).
    pub notes: Vec<String>,
    /// Why the declared state cannot be applied at all (an unknown table or column).
    pub errors: Vec<String>,
}

/// One object's change: its statements run in one transaction.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// The table or aggregate it changes.
    pub object: String,
    /// Why, in one line.
    pub why: String,
    /// The statements.
    pub statements: Vec<String>,
    /// Whether it drops and recreates a continuous aggregate (needs `--allow-recreate`).
    pub recreate: bool,
}

impl Plan {
    /// Whether applying it would change nothing.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// The plan for people: one block per change.
    pub fn human(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        for e in &self.errors {
            let _ = writeln!(out, "error: {e}");
        }
        write_changes(&mut out, &self.changes, &self.notes);
        let _ = match self.changes.len() {
            0 if self.errors.is_empty() => writeln!(out, "timescale: in sync, nothing to change"),
            0 => writeln!(out, "timescale: cannot plan"),
            n => writeln!(out, "timescale: {n} change(s) to make"),
        };
        out
    }
}

/// The changes as SQL, each after a `-- object: why` line, then the notes.
pub fn write_changes(out: &mut String, changes: &[Change], notes: &[String]) {
    use std::fmt::Write as _;
    for c in changes {
        let _ = writeln!(out, "-- {}: {}", c.object, c.why);
        for s in &c.statements {
            let _ = writeln!(out, "{s};");
        }
    }
    for n in notes {
        let _ = writeln!(out, "note: {n}");
    }
}

/// `"schema"."name"`
pub fn qname(name: &Name) -> String {
    format!("{}.{}", quote(&name.0), quote(&name.1))
}

/// A string literal.
pub(super) fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Two intervals in seconds are the same (PostgreSQL's epoch arithmetic is exact enough).
pub(super) fn same(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < 0.5)
}

/// The plan that makes `live` what `decl` declares.
pub fn plan(decl: &Timescale, live: &Live) -> Plan {
    let mut p = Plan::default();
    for h in &decl.hypertables {
        let Some(name) = qualified(&h.table) else {
            continue;
        };
        hypertable(&mut p, h, &name, live);
    }
    p
}

fn hypertable(p: &mut Plan, h: &Hypertable, name: &Name, live: &Live) {
    let object = qname(name);
    let Some(table) = live.tables.get(name) else {
        p.errors.push(format!(
            "{object} does not exist: create the table first (a migration), then apply"
        ));
        return;
    };
    let missing: Vec<String> = columns_used(h)
        .into_iter()
        .filter(|c| !table.columns.iter().any(|t| t == c))
        .collect();
    if !missing.is_empty() {
        p.errors.push(format!(
            "{object} has no column {}",
            missing
                .iter()
                .map(|c| format!("{c:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        return;
    }
    if !live.timescaledb || table.native.is_some() {
        native::partitions(p, h, name, table, live);
        return;
    }
    let reg = literal(&object);
    match &table.hypertable {
        None => {
            let rows = table.rows.unwrap_or(0);
            let mut args = vec![reg.clone(), literal(&h.time_column)];
            if let Some(s) = &h.space {
                args.push(format!("partitioning_column => {}", literal(&s.column)));
                args.push(format!("number_partitions => {}", s.partitions));
            }
            args.push(format!("chunk_time_interval => {}", h.chunk_interval.sql()));
            args.push(format!("migrate_data => {}", rows > 0));
            p.changes.push(Change {
                object: object.clone(),
                why: if rows > 0 {
                    format!("a plain table: becomes a hypertable; migrate_data moves its {rows} rows into chunks")
                } else {
                    "a plain table: becomes a hypertable".into()
                },
                statements: vec![format!("SELECT create_hypertable({})", args.join(", "))],
                recreate: false,
            });
        }
        Some(live_h) => {
            if live_h.time_column != h.time_column {
                p.errors.push(format!(
                    "{object} is a hypertable on {:?}, declared on {:?}: its time dimension cannot change",
                    live_h.time_column, h.time_column
                ));
                return;
            }
            if !same(live_h.chunk_seconds, h.chunk_interval.seconds()) {
                p.changes.push(Change {
                    object: object.clone(),
                    why: format!(
                        "chunk interval is {}, declared {} (new chunks only)",
                        seconds_text(live_h.chunk_seconds),
                        h.chunk_interval
                    ),
                    statements: vec![format!(
                        "SELECT set_chunk_time_interval({reg}, {})",
                        h.chunk_interval.sql()
                    )],
                    recreate: false,
                });
            }
            space(p, h, &object, live_h);
        }
    }
    let live_h = table.hypertable.as_ref();
    compression(p, h.compression.as_ref(), name, live_h, live);
    retention(p, h.retention.as_ref(), name, live);
    for a in &h.continuous_aggregates {
        cagg::reconcile(p, h, name, a, live);
    }
}

/// Every column the declaration names on the table.
fn columns_used(h: &Hypertable) -> Vec<String> {
    let mut cols = vec![h.time_column.clone()];
    if let Some(s) = &h.space {
        cols.push(s.column.clone());
    }
    if let Some(c) = &h.compression {
        cols.extend(c.segment_by.iter().cloned());
        if let Some(o) = &c.order_by {
            cols.extend(
                order_by_terms(o)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|t| t.0),
            );
        }
    }
    for a in &h.continuous_aggregates {
        cols.extend(a.group_by.iter().cloned());
        cols.extend(a.aggregates.keys().cloned());
    }
    cols.dedup();
    cols
}

fn seconds_text(s: Option<f64>) -> String {
    match s {
        None => "not a time interval".into(),
        Some(s) if s % 86_400.0 == 0.0 => format!("{} day(s)", s / 86_400.0),
        Some(s) if s % 3_600.0 == 0.0 => format!("{} hour(s)", s / 3_600.0),
        Some(s) => format!("{s} s"),
    }
}

fn space(p: &mut Plan, h: &Hypertable, object: &str, live_h: &live::Hypertable) {
    let reg = literal(object);
    match (&h.space, live_h.space.first()) {
        (None, None) => {}
        (None, Some((col, _))) => p.notes.push(format!(
            "{object} is space-partitioned on {col:?}, which is not declared: a dimension cannot be removed, it stays"
        )),
        (Some(s), None) => p.changes.push(Change {
            object: object.into(),
            why: format!(
                "no space partitioning: add {} hash partitions on {:?} (new chunks only)",
                s.partitions, s.column
            ),
            statements: vec![format!(
                "SELECT add_dimension({reg}, by_hash({}, {}))",
                literal(&s.column),
                s.partitions
            )],
            recreate: false,
        }),
        (Some(s), Some((col, n))) if *col == s.column => {
            if i64::from(*n) != i64::from(s.partitions) {
                p.changes.push(Change {
                    object: object.into(),
                    why: format!(
                        "{n} hash partitions on {col:?}, declared {} (new chunks only)",
                        s.partitions
                    ),
                    statements: vec![format!(
                        "SELECT set_number_partitions({reg}, {}, {})",
                        s.partitions,
                        literal(col)
                    )],
                    recreate: false,
                });
            }
        }
        (Some(s), Some((col, _))) => p.errors.push(format!(
            "{object} is space-partitioned on {col:?}, declared on {:?}: a dimension cannot be changed",
            s.column
        )),
    }
}

/// The declared `order_by` as `(column, descending, nulls first)`.
fn order_by(o: &str) -> Vec<(String, bool, bool)> {
    order_by_terms(o)
        .unwrap_or_default()
        .into_iter()
        .map(|(col, rest)| {
            let desc = rest.starts_with("DESC");
            let nulls_first = if rest.ends_with("NULLS FIRST") {
                true
            } else if rest.ends_with("NULLS LAST") {
                false
            } else {
                desc
            };
            (col, desc, nulls_first)
        })
        .collect()
}

fn compression(
    p: &mut Plan,
    decl: Option<&Compression>,
    name: &Name,
    live_h: Option<&live::Hypertable>,
    live: &Live,
) {
    let object = qname(name);
    let Some(c) = decl else {
        reconcile(p, &COMPRESSION, name, live, None);
        if live_h.is_some_and(|h| h.compression) {
            p.notes.push(format!(
                "{object} has compression enabled but none declared: compressed chunks stay compressed, the setting stays"
            ));
        }
        return;
    };
    let settings_differ = match live_h {
        None => true,
        Some(h) => {
            !h.compression
                || h.segment_by != c.segment_by
                || c.order_by
                    .as_deref()
                    .is_some_and(|o| order_by(o) != h.order_by)
        }
    };
    if settings_differ {
        let mut opts = vec![
            "timescaledb.compress".to_owned(),
            format!(
                "timescaledb.compress_segmentby = {}",
                literal(&c.segment_by.join(", "))
            ),
        ];
        if let Some(o) = &c.order_by {
            opts.push(format!("timescaledb.compress_orderby = {}", literal(o)));
        }
        p.changes.push(Change {
            object: object.clone(),
            why: match live_h {
                Some(h) if h.compression => {
                    "compression settings differ from the declared segment_by / order_by".into()
                }
                _ => "compression is not enabled".into(),
            },
            statements: vec![format!("ALTER TABLE {object} SET ({})", opts.join(", "))],
            recreate: false,
        });
    }
    // After the settings: a policy needs compression enabled.
    let wanted = Wanted {
        after: c.after,
        refresh: None,
    };
    reconcile(p, &COMPRESSION, name, live, Some(wanted));
}

fn retention(p: &mut Plan, decl: Option<&Retention>, name: &Name, live: &Live) {
    let wanted = decl.map(|r| Wanted {
        after: r.drop_after,
        refresh: None,
    });
    reconcile(p, &RETENTION, name, live, wanted);
}
