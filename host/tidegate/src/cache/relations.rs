//! What the cache must know about each relation name in a database: whether reads of it may be
//! cached, its time column (hypertables and configured tables), the other names a write to it
//! changes (partitions and parents), and the tables an allowed view reads.
//!
//! Relations are known by their unqualified name, merged over every schema that has one of
//! that name: invalidation is by name, so a write to `a.t` also invalidates reads of `b.t`
//! (never too little), and a name is cacheable only if every relation so named is.

use sqlx::{PgPool, Row as _};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tidegate_config::Config;

/// Snapshots are not re-read more often than this (an unknown name asks for a re-read).
const REFRESH_EVERY: Duration = Duration::from_secs(1);

/// One relation name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Relation {
    /// Why reads of it are never cached, if so.
    pub uncacheable: Option<&'static str>,
    /// The column whose values place rows in time, if it is time-aware.
    pub time_column: Option<String>,
    /// Every other name a write to this one changes (parents and partitions).
    pub family: Vec<String>,
    /// For a view: the relations it reads, at any depth (writes to them invalidate it).
    pub bases: Vec<String>,
    /// Other tables a write to this one may change: referencing tables whose foreign keys
    /// cascade (`ON DELETE/UPDATE CASCADE`, `SET NULL`, `SET DEFAULT`), transitively.
    pub cascades: Vec<String>,
    /// It has user triggers, whose writes TideGate cannot see: a write to it invalidates the
    /// whole database.
    pub triggers: bool,
}

/// One database's relations, by unqualified name.
#[derive(Debug, Default)]
pub struct DbRelations {
    /// Relations by name.
    pub by_name: HashMap<String, Relation>,
}

#[derive(Default)]
struct Slot {
    snapshot: Option<Arc<DbRelations>>,
    loading: bool,
    at: Option<Instant>,
}

/// The snapshots of every database, read through the broker's own `sqlx` pools.
pub struct Relations {
    dbs: Mutex<HashMap<String, Slot>>,
    pools: crate::upstream::own_db::DbPools,
}

impl Default for Relations {
    fn default() -> Self {
        Relations {
            dbs: Mutex::default(),
            pools: crate::upstream::own_db::DbPools::new("tidegate-cache", 1),
        }
    }
}

impl Relations {
    /// The snapshot of `database`, or `None` while it is being read for the first time.
    /// Starts a (re-)read in the background when there is none or `stale` asks for one.
    pub fn get(
        self: &Arc<Self>,
        config: &Arc<Config>,
        database: &str,
        stale: bool,
    ) -> Option<Arc<DbRelations>> {
        let mut dbs = self.dbs.lock().unwrap_or_else(|e| e.into_inner());
        // The common case, a known database and no re-read wanted, allocates nothing.
        if let Some(slot) = dbs.get(database) {
            if slot.snapshot.is_some() && !stale {
                return slot.snapshot.clone();
            }
        }
        let slot = dbs.entry(database.to_owned()).or_default();
        let due = slot.at.is_none_or(|t| t.elapsed() >= REFRESH_EVERY);
        if (slot.snapshot.is_none() || stale) && due && !slot.loading {
            slot.loading = true;
            let (me, config, db) = (self.clone(), config.clone(), database.to_owned());
            tokio::spawn(async move { me.load(&config, &db).await });
        }
        slot.snapshot.clone()
    }

    /// Forgets `database`'s snapshot after DDL through the broker; the next read re-reads it.
    pub fn invalidate(self: &Arc<Self>, config: &Arc<Config>, database: &str) {
        if let Some(slot) = self
            .dbs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(database)
        {
            slot.at = None;
        }
        self.get(config, database, true);
    }

    /// Reads `database`'s snapshot now (also used by tests and at the first statement).
    pub async fn load(&self, config: &Config, database: &str) -> Option<Arc<DbRelations>> {
        let pool = self.pools.get(config, database);
        let result = tokio::time::timeout(Duration::from_secs(10), read(&pool, config)).await;
        let mut dbs = self.dbs.lock().unwrap_or_else(|e| e.into_inner());
        let slot = dbs.entry(database.to_owned()).or_default();
        slot.loading = false;
        slot.at = Some(Instant::now());
        match result {
            Ok(Ok(r)) => {
                let r = Arc::new(r);
                slot.snapshot = Some(r.clone());
                Some(r)
            }
            Ok(Err(e)) => {
                tracing::warn!(database, error = %e, "cache: reading the relation catalog failed");
                None
            }
            Err(_) => {
                tracing::warn!(database, "cache: reading the relation catalog timed out");
                None
            }
        }
    }
}

/// Rows of `pg_class` the cache cares about (system schemas excluded: never cached).
const RELATIONS: &str = "\
SELECT c.relname::text, n.nspname::text, c.relkind::text, c.relpersistence::text, c.relrowsecurity, \
       ARRAY(SELECT p.relname::text FROM pg_catalog.pg_inherits i \
             JOIN pg_catalog.pg_class p ON p.oid = i.inhparent WHERE i.inhrelid = c.oid) \
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') \
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')";

/// The relations each view's rewrite rule depends on.
const VIEW_BASES: &str = "\
SELECT DISTINCT v.relname::text, t.relname::text \
FROM pg_catalog.pg_rewrite r \
JOIN pg_catalog.pg_class v ON v.oid = r.ev_class \
JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = r.oid \
     AND d.refclassid = 'pg_catalog.pg_class'::regclass \
JOIN pg_catalog.pg_class t ON t.oid = d.refobjid \
WHERE t.oid <> v.oid AND v.relkind = 'v'";

/// (table, referencing table) for every foreign key whose delete or update action changes
/// the referencing rows.
const CASCADES: &str = "\
SELECT DISTINCT p.relname::text, c.relname::text \
FROM pg_catalog.pg_constraint k \
JOIN pg_catalog.pg_class p ON p.oid = k.confrelid \
JOIN pg_catalog.pg_class c ON c.oid = k.conrelid \
WHERE k.contype = 'f' AND (k.confdeltype IN ('c', 'n', 'd') OR k.confupdtype IN ('c', 'n', 'd'))";

/// Tables with user (not internal) triggers.
const TRIGGERS: &str = "\
SELECT DISTINCT c.relname::text FROM pg_catalog.pg_trigger t \
JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid WHERE NOT t.tgisinternal";

const HYPERTABLE_TIME: &str = "\
SELECT hypertable_name::text, column_name::text FROM timescaledb_information.dimensions \
WHERE dimension_type = 'Time'";

async fn read(pool: &PgPool, config: &Config) -> Result<DbRelations, sqlx::Error> {
    let rows = sqlx::query(RELATIONS).fetch_all(pool).await?;
    let mut by_name: HashMap<String, Relation> = HashMap::new();
    let mut parents: HashMap<String, HashSet<String>> = HashMap::new();
    let mut chunk_parents: Vec<(String, Vec<String>)> = Vec::new();
    for row in rows {
        let (name, schema): (String, String) = (row.try_get(0)?, row.try_get(1)?);
        let (kind, persistence): (String, String) = (row.try_get(2)?, row.try_get(3)?);
        let rls: bool = row.try_get(4)?;
        let inherits: Vec<String> = row.try_get(5)?;
        let why = if schema.starts_with("_timescaledb") || schema.starts_with("pg_temp") {
            Some("internal or temporary schema")
        } else if persistence == "t" {
            Some("temporary table")
        } else if persistence == "u" {
            Some("unlogged table")
        } else if rls {
            Some("row-level security")
        } else if kind == "f" {
            Some("foreign table")
        } else if kind == "v" && !allowed_view(config, &schema, &name) {
            Some("view not in cache.allow_views")
        } else {
            None
        };
        let r = by_name.entry(name.clone()).or_default();
        r.uncacheable = r.uncacheable.or(why);
        if !schema.starts_with("_timescaledb") {
            parents.entry(name).or_default().extend(inherits);
        } else if !inherits.is_empty() {
            // A hypertable's chunk: a write to it changes the hypertable (upward only, so a
            // write to the hypertable does not name its thousands of chunks).
            chunk_parents.push((name, inherits));
        }
    }
    // Family: ancestors and descendants, transitively.
    let mut children: HashMap<&str, Vec<&str>> = HashMap::new();
    for (child, ps) in &parents {
        for p in ps {
            children.entry(p.as_str()).or_default().push(child.as_str());
        }
    }
    let mut families: Vec<(String, Vec<String>)> = Vec::new();
    for name in by_name.keys() {
        let mut seen: HashSet<&str> = HashSet::new();
        let mut todo = vec![name.as_str()];
        while let Some(n) = todo.pop() {
            let up = parents.get(n).into_iter().flatten().map(String::as_str);
            let down = children.get(n).into_iter().flatten().copied();
            for m in up.chain(down) {
                if m != name && seen.insert(m) {
                    todo.push(m);
                }
            }
        }
        if !seen.is_empty() {
            let mut f: Vec<String> = seen.into_iter().map(str::to_owned).collect();
            f.sort();
            families.push((name.clone(), f));
        }
    }
    for (name, f) in families {
        if let Some(r) = by_name.get_mut(&name) {
            r.family = f;
        }
    }
    for (chunk, hypertables) in chunk_parents {
        if let Some(r) = by_name.get_mut(&chunk) {
            r.family.extend(hypertables);
        }
    }
    let mut bases: HashMap<String, Vec<String>> = HashMap::new();
    for row in sqlx::query(VIEW_BASES).fetch_all(pool).await? {
        let (view, base): (String, String) = (row.try_get(0)?, row.try_get(1)?);
        bases.entry(view).or_default().push(base);
    }
    let mut referencing: HashMap<String, Vec<String>> = HashMap::new();
    for row in sqlx::query(CASCADES).fetch_all(pool).await? {
        let (table, child): (String, String) = (row.try_get(0)?, row.try_get(1)?);
        referencing.entry(table).or_default().push(child);
    }
    for row in sqlx::query(TRIGGERS).fetch_all(pool).await? {
        let table: String = row.try_get(0)?;
        if let Some(r) = by_name.get_mut(&table) {
            r.triggers = true;
        }
    }
    for (name, r) in by_name.iter_mut() {
        // Views over views: every relation underneath; cascades: every table they reach.
        r.bases = closure(name, &bases);
        r.cascades = closure(name, &referencing);
    }
    let mut time_columns: Vec<(String, String)> = Vec::new();
    if crate::upstream::own_db::has_timescaledb(pool).await? {
        for row in sqlx::query(HYPERTABLE_TIME).fetch_all(pool).await? {
            time_columns.push((row.try_get(0)?, row.try_get(1)?));
        }
    }
    for entry in &config.cache.time_columns {
        let parts: Vec<&str> = entry.split('.').collect();
        if let [.., table, column] = parts.as_slice() {
            time_columns.push(((*table).to_owned(), (*column).to_owned()));
        }
    }
    // A name whose relations disagree on the time column is not time-aware.
    let mut seen: HashMap<String, Option<String>> = HashMap::new();
    for (table, column) in time_columns {
        seen.entry(table)
            .and_modify(|c| {
                if c.as_deref() != Some(column.as_str()) {
                    *c = None;
                }
            })
            .or_insert(Some(column));
    }
    for (table, column) in seen {
        if let Some(r) = by_name.get_mut(&table) {
            r.time_column = column;
        }
    }
    Ok(DbRelations { by_name })
}

/// Every name reachable from `start` through `edges`, sorted, without `start`.
fn closure(start: &str, edges: &HashMap<String, Vec<String>>) -> Vec<String> {
    let mut seen: HashSet<&str> = HashSet::new();
    let mut todo = vec![start];
    while let Some(n) = todo.pop() {
        for m in edges.get(n).into_iter().flatten() {
            if m != start && seen.insert(m.as_str()) {
                todo.push(m.as_str());
            }
        }
    }
    let mut out: Vec<String> = seen.into_iter().map(str::to_owned).collect();
    out.sort();
    out
}

fn allowed_view(config: &Config, schema: &str, name: &str) -> bool {
    config
        .cache
        .allow_views
        .iter()
        .any(|v| match v.split_once('.') {
            Some((s, n)) => s == schema && n == name,
            None => v == name,
        })
}
