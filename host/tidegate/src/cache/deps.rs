//! Which generation counters a read depends on, and which a write bumps.
//!
//! Counters, per database `d` and relation name `T` (keys in the backend):
//! - `tg:epoch` — everything, everywhere (bumped after the backend was unreachable, and by
//!   DDL that touches no known table, e.g. role changes);
//! - `tg:d:{d}` — everything in one database (writes whose tables are unknown: a volatile
//!   function, an unparsable statement, SQL-level EXECUTE…);
//! - `tg:t:{d}:{T}` — every read of `T` (writes whose rows' times are unknown, DDL, GRANT…);
//! - `tg:a:{d}:{T}` — reads of `T` not bounded to a few time buckets;
//! - `tg:b:{d}:{T}:{k}` — reads of `T` whose time range overlaps bucket `k`.
//!
//! A read depends on `epoch`, `d`, and per table `t` plus either `a` or its buckets; a write
//! with known row times bumps `a` and the buckets, any other write bumps `t`. So every write
//! bumps at least one counter each affected read holds.

use super::relations::DbRelations;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tidegate_config::Cache as Config;
use tidegate_sql::{Classification, Kind, TableName, TimeCast, Written};

/// Reads bounded to more buckets than this depend on `a` instead.
const MAX_BUCKETS: i64 = 64;
/// Every time value is widened by this much each way: a zone-less literal's instant depends
/// on the session's TimeZone (at most ±15:59), and a `timestamp` column ignores zones.
const ZONE_SLACK_US: i64 = 16 * 3_600_000_000;

/// The global counter.
pub const EPOCH: &str = "tg:epoch";

/// Why a read is not cached.
pub type Bypass = &'static str;

/// What a cacheable read depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadDeps {
    /// Counter names, in a fixed order.
    pub gens: Vec<String>,
    /// How long the reply may be kept.
    pub ttl: Duration,
}

/// The dependencies of a read, or why it is not cached.
pub fn read_deps(
    cfg: &Config,
    database: &str,
    sql: &str,
    class: &Classification,
    rels: &DbRelations,
    params: &[Option<&str>],
    fingerprint: u128,
) -> Result<ReadDeps, Bypass> {
    let hint = hint(sql);
    if hint == Some(Hint::NoCache) {
        return Err("tidegate:nocache hint");
    }
    if !class.cacheable || class.statements != 1 {
        return Err("not a cacheable read");
    }
    let mut gens = vec![EPOCH.to_owned(), format!("tg:d:{database}")];
    let mut names: Vec<&str> = Vec::new();
    for t in &class.tables {
        let Some(r) = rels.by_name.get(&t.name) else {
            return Err("unknown relation");
        };
        if let Some(why) = r.uncacheable {
            return Err(why);
        }
        names.push(&t.name);
        names.extend(r.bases.iter().map(String::as_str));
    }
    names.sort_unstable();
    names.dedup();
    let ranges = tidegate_sql::time_range(sql, class, params, 0);
    let mut settled = None::<bool>;
    for name in names {
        gens.push(format!("tg:t:{database}:{name}"));
        let column = rels
            .by_name
            .get(name)
            .and_then(|r| r.time_column.as_deref());
        let range = column.and_then(|c| {
            ranges.iter().find(|r| {
                r.column == c
                    && match &r.table {
                        Some(t) => t.name == name,
                        None => class.tables.len() == 1,
                    }
            })
        });
        let bounded = range.and_then(|r| Some((r.from? - ZONE_SLACK_US, r.to? + ZONE_SLACK_US)));
        match bounded.and_then(|(from, to)| buckets(cfg, from, to)) {
            Some(ks) => gens.extend(ks.map(|k| format!("tg:b:{database}:{name}:{k}"))),
            None => gens.push(format!("tg:a:{database}:{name}")),
        }
        if column.is_some() {
            let done = range.and_then(|r| r.to).is_some_and(|to| {
                to + ZONE_SLACK_US < now_us() - cfg.settle_window.0 as i64 * 1000
            });
            settled = Some(settled.unwrap_or(true) && done);
        }
    }
    let ttl = match hint {
        // A hint cannot outlive the counters (see `keep_counters`).
        Some(Hint::Ttl(t)) => t.min(cfg.ttl.duration().max(cfg.long_ttl.duration())),
        _ => match rule_ttl(cfg, class, fingerprint) {
            Some(t) => t,
            None => match settled {
                Some(true) => cfg.long_ttl.duration(),
                Some(false) => cfg.short_ttl.duration(),
                None => cfg.ttl.duration(),
            },
        },
    };
    if ttl.is_zero() {
        return Err("TTL 0");
    }
    Ok(ReadDeps { gens, ttl })
}

/// The counters a statement that is not a provably read-only query bumps when its
/// transaction commits; empty for statements that change no data.
pub fn write_gens(
    cfg: &Config,
    database: &str,
    sql: &str,
    class: &Classification,
    rels: Option<&DbRelations>,
) -> Vec<String> {
    let mut gens = Vec::new();
    match class.kind {
        Kind::Read if class.read_only => return gens,
        Kind::Transaction => return gens,
        Kind::Session if changes_no_data(sql) => return gens,
        // SET/RESET ROLE and SESSION AUTHORIZATION: a privilege change for policy, no data
        // change for the cache (the role is part of every key).
        Kind::Ddl if class.reason == Some("role change") && class.statements == 1 => return gens,
        _ => {}
    }
    let by_function = matches!(
        class.reason,
        Some("function with side effects" | "function not known to be read-only")
    );
    // COPY's table is not among the classifier's tables: read it from the text.
    let copied = (class.reason == Some("COPY FROM") && class.tables.is_empty())
        .then(|| copy_table(sql))
        .flatten();
    let tables: &[TableName] = match &copied {
        Some(t) => std::slice::from_ref(t),
        None => &class.tables,
    };
    // What may reach beyond its named tables (a function, a cascade, unknown code) bumps
    // the whole database.
    if tables.is_empty()
        || by_function
        || class.every_table
        || matches!(class.kind, Kind::Session | Kind::Utility | Kind::Unknown)
    {
        if class.kind == Kind::Ddl {
            gens.push(EPOCH.to_owned());
            return gens;
        }
        gens.push(format!("tg:d:{database}"));
    }
    let timed = match tables {
        [one] if class.kind == Kind::Write && copied.is_none() => {
            inserted_times(cfg, sql, one, rels)
        }
        _ => None,
    };
    for t in tables {
        let rel = rels.and_then(|r| r.by_name.get(&t.name));
        let family = rel.map(|r| r.family.as_slice()).unwrap_or_default();
        if rel.is_some_and(|r| r.triggers) {
            // Its triggers may write anywhere.
            gens.push(format!("tg:d:{database}"));
        }
        for child in rel.map(|r| r.cascades.as_slice()).unwrap_or_default() {
            gens.push(format!("tg:t:{database}:{child}"));
        }
        for name in std::iter::once(&t.name).chain(family) {
            match &timed {
                Some(ks) => {
                    gens.push(format!("tg:a:{database}:{name}"));
                    gens.extend(ks.iter().map(|k| format!("tg:b:{database}:{name}:{k}")));
                }
                None => gens.push(format!("tg:t:{database}:{name}")),
            }
        }
    }
    gens.sort_unstable();
    gens.dedup();
    gens
}

/// The table of `COPY [schema.]table [(columns)] FROM …`.
fn copy_table(sql: &str) -> Option<TableName> {
    let mut words = sql.split_whitespace();
    if !words.next()?.eq_ignore_ascii_case("copy") {
        return None;
    }
    let name = words.next()?.split('(').next()?;
    let ident = |s: &str| match s.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        Some(q) => q.replace("\"\"", "\""),
        None => s.to_ascii_lowercase(),
    };
    let (schema, table) = match name.rsplit_once('.') {
        Some((s, t)) => (Some(ident(s)), ident(t)),
        None => (None, ident(name)),
    };
    (!table.is_empty()).then_some(TableName {
        schema,
        name: table,
    })
}

/// The buckets a single-table INSERT … VALUES writes into, when every row's time is a literal
/// of the table's time column.
fn inserted_times(
    cfg: &Config,
    sql: &str,
    table: &TableName,
    rels: Option<&DbRelations>,
) -> Option<Vec<i64>> {
    let column = rels?.by_name.get(&table.name)?.time_column.as_deref()?;
    let head = sql.trim_start().get(..6)?;
    // ON CONFLICT … DO UPDATE may change a row at any time.
    if !head.eq_ignore_ascii_case("insert")
        || tidegate_sql::session_state::contains_ci(sql.as_bytes(), b"on conflict")
    {
        return None;
    }
    let w = tidegate_sql::write_targets(sql)?;
    if w.opaque || w.table != table.name {
        return None;
    }
    let mut ks: Vec<i64> = Vec::new();
    let mut rows = 0;
    for t in &w.targets {
        match &t.column {
            tidegate_sql::TargetColumn::Named(c) if c == column => {}
            tidegate_sql::TargetColumn::Named(_) => continue,
            // Without the column order the time column cannot be told.
            tidegate_sql::TargetColumn::Position(_) => return None,
        }
        let Written::Literal { value, .. } = &t.value else {
            return None;
        };
        let us = tidegate_sql::parse_timestamp(value, TimeCast::Untyped, 0)?;
        ks.extend(buckets(cfg, us - ZONE_SLACK_US, us + ZONE_SLACK_US + 1)?);
        rows += 1;
    }
    // A row without the column takes its default (now(), say): unknown.
    let per_row = w.targets.len() / rows.max(1);
    if rows == 0 || per_row == 0 || w.targets.len() % rows != 0 {
        return None;
    }
    ks.sort_unstable();
    ks.dedup();
    (ks.len() as i64 <= MAX_BUCKETS).then_some(ks)
}

/// Bucket numbers covering `[from, to)` (µs), unless there are too many.
fn buckets(cfg: &Config, from: i64, to: i64) -> Option<std::ops::RangeInclusive<i64>> {
    let width = (cfg.time_bucket.0 as i64).max(1) * 1000;
    let (first, last) = (
        from.div_euclid(width),
        (to.max(from + 1) - 1).div_euclid(width),
    );
    (last - first < MAX_BUCKETS).then_some(first..=last)
}

fn rule_ttl(cfg: &Config, class: &Classification, fingerprint: u128) -> Option<Duration> {
    if cfg.rules.is_empty() {
        return None;
    }
    // The text the audit table and `tidegate` show a fingerprint as, which rules are written in.
    let fp = tidegate_plugins::fingerprint_hex(fingerprint);
    cfg.rules
        .iter()
        .find(|r| {
            (!r.fingerprint.is_empty() && r.fingerprint.eq_ignore_ascii_case(&fp))
                || (!r.table.is_empty()
                    && class.tables.iter().any(|t| match r.table.split_once('.') {
                        Some((s, n)) => t.schema.as_deref() == Some(s) && t.name == n,
                        None => t.name == r.table,
                    }))
        })
        .map(|r| r.ttl.duration())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hint {
    NoCache,
    Ttl(Duration),
}

/// `/* tidegate:nocache */` or `/* tidegate:cache ttl=60s */` anywhere in the text.
fn hint(sql: &str) -> Option<Hint> {
    let at = sql.find("tidegate:")?;
    let rest = &sql[at + "tidegate:".len()..];
    if rest.starts_with("nocache") {
        return Some(Hint::NoCache);
    }
    let rest = rest.strip_prefix("cache")?.trim_start();
    let v = rest.strip_prefix("ttl=")?;
    let end = v
        .find(|c: char| c.is_whitespace() || c == '*')
        .unwrap_or(v.len());
    tidegate_config::parse_duration(&v[..end])
        .ok()
        .map(|m| Hint::Ttl(m.duration()))
}

/// Session statements that leave the data alone (SQL-level EXECUTE and anything unknown may
/// not).
fn changes_no_data(sql: &str) -> bool {
    matches!(
        tidegate_sql::session_state::first_keyword(sql.as_bytes()).as_slice(),
        b"set"
            | b"reset"
            | b"show"
            | b"listen"
            | b"unlisten"
            | b"discard"
            | b"deallocate"
            | b"prepare"
            | b"declare"
            | b"fetch"
            | b"move"
            | b"close"
            | b"load"
    )
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

#[cfg(test)]
#[path = "deps_tests.rs"]
mod tests;
