//! The plan: what `apply` would change to make the live catalog ([`Live`]) what the
//! configuration declares, as SQL statements with one line of why each. A pure function of the
//! two, so every rule is unit-tested without a server.

use super::live::{self, Live, Name};
use serde::Serialize;
use std::collections::BTreeMap;
use tidegate_config::{
    order_by_terms, qualified, Compression, ContinuousAggregate, Hypertable, Interval,
    IntervalUnit, Retention, Timescale,
};
use tidegate_sql::quote_ident as quote;

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
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Two intervals in seconds are the same (PostgreSQL's epoch arithmetic is exact enough).
fn same(a: Option<f64>, b: f64) -> bool {
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
        native_partitions(p, h, name, table, live);
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
        cagg(p, h, name, a, live);
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

/// One kind of policy job: its procedure and the functions that add and remove it.
struct PolicyKind {
    /// `timescaledb_information.jobs.proc_name`
    proc: &'static str,
    /// The function adding it, and the name of its interval argument.
    add: &'static str,
    after_arg: &'static str,
    /// The function removing it.
    remove: &'static str,
    /// How the plan names it.
    what: &'static str,
}

const COMPRESSION: PolicyKind = PolicyKind {
    proc: live::COMPRESSION,
    add: "add_compression_policy",
    after_arg: "compress_after",
    remove: "remove_compression_policy",
    what: "compression",
};

const RETENTION: PolicyKind = PolicyKind {
    proc: live::RETENTION,
    add: "add_retention_policy",
    after_arg: "drop_after",
    remove: "remove_retention_policy",
    what: "retention",
};

const REFRESH: PolicyKind = PolicyKind {
    proc: live::REFRESH,
    add: "add_continuous_aggregate_policy",
    after_arg: "start_offset",
    remove: "remove_continuous_aggregate_policy",
    what: "refresh",
};

/// What a declared policy's job must hold: its interval, and for a refresh policy the end
/// offset and schedule.
struct Wanted {
    after: Interval,
    refresh: Option<(Interval, Interval)>,
}

/// Makes `object`'s policy of `kind` what is declared: added when missing, removed and added
/// again when its intervals differ, removed when none is declared.
fn reconcile(p: &mut Plan, kind: &PolicyKind, object: &Name, live: &Live, wanted: Option<Wanted>) {
    let job = live
        .jobs
        .iter()
        .find(|j| j.proc == kind.proc && j.object == *object);
    let name = qname(object);
    let remove = format!("SELECT {}({})", kind.remove, literal(&name));
    let (why, statements) = match (wanted, job) {
        (None, None) => return,
        (None, Some(j)) => (
            format!("a {} policy (job {}) that is not declared", kind.what, j.id),
            vec![remove],
        ),
        (Some(w), job) => {
            let mut add = format!(
                "SELECT {}({}, {} => {}",
                kind.add,
                literal(&name),
                kind.after_arg,
                w.after.sql()
            );
            if let Some((end, every)) = w.refresh {
                add.push_str(&format!(
                    ", end_offset => {}, schedule_interval => {}",
                    end.sql(),
                    every.sql()
                ));
            }
            add.push(')');
            let Some(j) = job else {
                p.changes.push(Change {
                    object: name,
                    why: format!("no {} policy", kind.what),
                    statements: vec![add],
                    recreate: false,
                });
                return;
            };
            let differs = !same(j.after_seconds, w.after.seconds())
                || w.refresh.is_some_and(|(end, every)| {
                    !same(j.end_seconds, end.seconds())
                        || !same(Some(j.schedule_seconds), every.seconds())
                });
            if !differs {
                return;
            }
            (
                format!(
                    "the {} policy (job {}) differs from the declared one",
                    kind.what, j.id
                ),
                vec![remove, add],
            )
        }
    };
    p.changes.push(Change {
        object: name,
        why,
        statements,
        recreate: false,
    });
}

/// The declared definition, as recorded in the aggregate's comment.
#[derive(Serialize)]
struct Definition<'a> {
    hypertable: String,
    time_column: &'a str,
    bucket: String,
    group_by: &'a [String],
    aggregates: &'a BTreeMap<String, Vec<String>>,
}

/// The comment TideGate puts on an aggregate it creates: the definition it was made from.
pub fn definition_comment(h: &Hypertable, table: &Name, a: &ContinuousAggregate) -> String {
    let d = Definition {
        hypertable: qname(table),
        time_column: &h.time_column,
        bucket: a.bucket.pg(),
        group_by: &a.group_by,
        aggregates: &a.aggregates,
    };
    format!(
        "tidegate: {}",
        serde_json::to_string(&d).unwrap_or_default()
    )
}

/// `CREATE MATERIALIZED VIEW … WITH (timescaledb.continuous)` for `a` over `table`. Columns:
/// `bucket`, the group-by columns, then `<column>_<function>` per aggregate.
pub fn create_cagg(h: &Hypertable, table: &Name, view: &Name, a: &ContinuousAggregate) -> String {
    let time = quote(&h.time_column);
    let mut cols = vec![format!("time_bucket({}, {time}) AS bucket", a.bucket.sql())];
    cols.extend(a.group_by.iter().map(|g| quote(g)));
    for (col, fns) in &a.aggregates {
        for f in fns {
            let arg = match f.as_str() {
                "first" | "last" => format!("{}, {time}", quote(col)),
                _ => quote(col),
            };
            cols.push(format!("{f}({arg}) AS {}", quote(&format!("{col}_{f}"))));
        }
    }
    let mut group = vec!["bucket".to_owned()];
    group.extend(a.group_by.iter().map(|g| quote(g)));
    format!(
        "CREATE MATERIALIZED VIEW {} WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS \
         SELECT {} FROM {} GROUP BY {} WITH NO DATA",
        qname(view),
        cols.join(", "),
        qname(table),
        group.join(", ")
    )
}

fn cagg(p: &mut Plan, h: &Hypertable, table: &Name, a: &ContinuousAggregate, live: &Live) {
    let Some(view) = qualified(&a.name) else {
        return;
    };
    let object = qname(&view);
    if let Some(kind) = live.squatters.get(&view) {
        p.errors.push(format!(
            "{object} exists and is not a continuous aggregate (relkind {kind}): rename or drop it"
        ));
        return;
    }
    let comment = definition_comment(h, table, a);
    let create = vec![
        create_cagg(h, table, &view, a),
        format!("COMMENT ON VIEW {object} IS {}", literal(&comment)),
    ];
    let mut fresh = true;
    match live.caggs.get(&view) {
        None => p.changes.push(Change {
            object: object.clone(),
            why: format!("no continuous aggregate: create it (over {})", qname(table)),
            statements: create,
            recreate: false,
        }),
        Some(c) if c.comment.as_deref() == Some(comment.as_str()) => fresh = false,
        Some(c) => {
            let mut statements = vec![format!("DROP MATERIALIZED VIEW {object}")];
            statements.extend(create);
            let how = if c
                .comment
                .as_deref()
                .is_some_and(|t| t.starts_with("tidegate: "))
            {
                "its definition differs from the declared one"
            } else {
                "it was not created from this declaration (no TideGate definition recorded)"
            };
            p.changes.push(Change {
                object: object.clone(),
                why: format!(
                    "{how}: drop and recreate, {} rows to re-materialize",
                    c.rows
                ),
                statements,
                recreate: true,
            });
        }
    }
    // A created or recreated aggregate has no policies yet: every declared one is added.
    let none = Live::default();
    let jobs = if fresh { &none } else { live };
    let refresh = a.refresh.as_ref().map(|r| Wanted {
        after: r.start_offset,
        refresh: Some((r.end_offset, r.every)),
    });
    reconcile(p, &REFRESH, &view, jobs, refresh);
    let retention = a.retention.as_ref().map(|r| Wanted {
        after: r.drop_after,
        refresh: None,
    });
    reconcile(p, &RETENTION, &view, jobs, retention);
}

/// Partitions kept ahead of time on a natively partitioned table: from one interval before
/// now to this many after.
pub const NATIVE_AHEAD: u32 = 7;

/// Without TimescaleDB (or on a table partitioned natively): the declared chunk interval is
/// the width of native range partitions, which `apply` keeps from one interval before now to
/// [`NATIVE_AHEAD`] after, aligned to the epoch in UTC and named `<table>_pYYYYMMDD_HHMMSS`.
/// What only TimescaleDB can do is said in a note.
fn native_partitions(p: &mut Plan, h: &Hypertable, name: &Name, table: &live::Table, live: &Live) {
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
    let secs = secs as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (hh, mm, ss) = (rem / 3_600, rem % 3_600 / 60, rem % 60);
    if compact {
        format!("{y:04}{m:02}{d:02}_{hh:02}{mm:02}{ss:02}")
    } else {
        format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02}+00")
    }
}
