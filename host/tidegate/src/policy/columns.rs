//! The columns that row and write hooks declared (`schema.table.column` or `table.column`),
//! found in each database's catalog: which result fields (table OID, attribute number) they
//! are, and every column of their tables (an INSERT without a column list writes by position).
//!
//! Resolved through `sqlx` on a small pool of the broker's own, when a statement first touches
//! such a table; cached per database; forgotten after DDL through the broker and on reload.

use sqlx::{PgPool, Row as _};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tidegate_config::Config;
use tidegate_plugins::{Column, TableRef};

/// A declared column name, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    /// Schema, when given.
    pub schema: Option<String>,
    /// Table.
    pub table: String,
    /// Column.
    pub column: String,
}

impl Declared {
    /// Reads `schema.table.column` or `table.column`.
    pub fn parse(s: &str) -> Option<Declared> {
        let parts: Vec<&str> = s.split('.').collect();
        match parts.as_slice() {
            [t, c] => Some(Declared {
                schema: None,
                table: (*t).to_owned(),
                column: (*c).to_owned(),
            }),
            [s, t, c] => Some(Declared {
                schema: Some((*s).to_owned()),
                table: (*t).to_owned(),
                column: (*c).to_owned(),
            }),
            _ => None,
        }
    }

    fn matches(&self, schema: &str, table: &str, column: &str) -> bool {
        self.table == table
            && self.column == column
            && self.schema.as_deref().is_none_or(|s| s == schema)
    }
}

/// Relations whose rewrite rules (views, at any depth) depend on the tables named `$1`.
const DEPENDENTS: &str = "\
WITH RECURSIVE dep(oid) AS ( \
    SELECT c.oid FROM pg_catalog.pg_class c WHERE c.relname = ANY($1) \
    UNION \
    SELECT r.ev_class FROM pg_catalog.pg_rewrite r \
    JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass \
         AND d.objid = r.oid AND d.refclassid = 'pg_catalog.pg_class'::regclass \
    JOIN dep ON d.refobjid = dep.oid \
    WHERE r.ev_class <> dep.oid) \
SELECT DISTINCT c.relname::text FROM pg_catalog.pg_class c JOIN dep ON dep.oid = c.oid \
WHERE c.relname <> ALL($1)";

/// One table holding declared columns.
#[derive(Debug, Clone)]
pub struct TableColumns {
    /// Its schema.
    pub schema: String,
    /// Its name.
    pub table: String,
    /// Its OID.
    pub oid: u32,
    /// Every column: (attribute number, name, type), in attribute order.
    pub columns: Vec<(i16, String, String)>,
}

/// What one database's catalog says about the declared columns.
#[derive(Debug, Default)]
pub struct DbColumns {
    tables: Vec<TableColumns>,
    declared: Vec<Declared>,
    /// Declared tables that were not found (looked up again after a while).
    missing: bool,
    at: Option<Instant>,
    /// Views (at any depth) and other rule-bearing relations over a declared table: a write
    /// through one stores values no hook sees.
    dependents: Vec<String>,
}

impl DbColumns {
    /// Whether `name` is a view (or rule) over a table with declared columns.
    pub fn reaches_declared(&self, name: &str) -> bool {
        self.dependents.iter().any(|d| d == name)
    }

    /// The declared column at (table OID, attribute number) of a RowDescription.
    pub fn result_column(&self, oid: u32, attnum: i16) -> Option<Column> {
        let t = self.tables.iter().find(|t| t.oid == oid)?;
        let (_, name, ty) = t.columns.iter().find(|(n, _, _)| *n == attnum)?;
        self.is_declared(&t.schema, &t.table, name)
            .then(|| column(t, name, ty))
    }

    /// The table a statement names (`schema` absent: `public` first, else any).
    pub fn table(&self, schema: Option<&str>, name: &str) -> Option<&TableColumns> {
        let mut found = self.tables.iter().filter(|t| t.table == name);
        match schema {
            Some(s) => found.find(|t| t.schema == s),
            None => {
                let all: Vec<&TableColumns> = found.collect();
                all.iter()
                    .find(|t| t.schema == "public")
                    .or_else(|| all.first())
                    .copied()
            }
        }
    }

    /// Whether `schema.table.column` is declared.
    pub fn is_declared(&self, schema: &str, table: &str, column: &str) -> bool {
        self.declared
            .iter()
            .any(|d| d.matches(schema, table, column))
    }

    /// The declared column `name` (or the `position`-th column) of `t`, if declared.
    pub fn target(&self, t: &TableColumns, name: Option<&str>, position: usize) -> Option<Column> {
        let (_, n, ty) = match name {
            Some(name) => t.columns.iter().find(|(_, n, _)| n == name)?,
            None => t.columns.get(position)?,
        };
        self.is_declared(&t.schema, &t.table, n)
            .then(|| column(t, n, ty))
    }
}

fn column(t: &TableColumns, name: &str, ty: &str) -> Column {
    Column {
        table: Some(TableRef {
            schema: Some(t.schema.clone()),
            name: t.table.clone(),
        }),
        name: name.to_owned(),
        type_name: ty.to_owned(),
    }
}

/// Declared tables are looked up again at most this often while some are missing.
const RETRY_MISSING: Duration = Duration::from_secs(1);

/// The per-database lookups, shared by every session.
pub struct ColumnResolver {
    pools: crate::upstream::own_db::DbPools,
    cache: Mutex<HashMap<String, Arc<DbColumns>>>,
}

impl Default for ColumnResolver {
    fn default() -> Self {
        ColumnResolver {
            pools: crate::upstream::own_db::DbPools::new("tidegate-catalog", 1),
            cache: Mutex::default(),
        }
    }
}

impl ColumnResolver {
    /// Forgets every database's columns (after a reload).
    pub fn clear(&self) {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.pools.clear();
    }

    /// Forgets `database`'s columns (after DDL there).
    pub fn invalidate(&self, database: &str) {
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(database);
    }

    /// `database`'s view of the `declared` columns, looked up if not known (or if some
    /// table was missing a while ago). `None` if the lookup fails.
    pub async fn get(
        &self,
        config: &Config,
        database: &str,
        declared: &[String],
    ) -> Option<Arc<DbColumns>> {
        let declared: Vec<Declared> = declared.iter().filter_map(|d| Declared::parse(d)).collect();
        if let Some(c) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(database)
        {
            let fresh = !c.missing || c.at.is_some_and(|t| t.elapsed() < RETRY_MISSING);
            if fresh && c.declared == declared {
                return Some(c.clone());
            }
        }
        let pool = self.pool(config, database);
        let mut names: Vec<&str> = declared.iter().map(|d| d.table.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        let rows = sqlx::query(
            "SELECT c.oid::int8, a.attnum, n.nspname::text, c.relname::text, a.attname::text, \
                    format_type(a.atttypid, a.atttypmod) \
             FROM pg_catalog.pg_attribute a \
             JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relname = ANY($1) AND c.relkind IN ('r', 'p', 'v', 'm', 'f') \
               AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY c.oid, a.attnum",
        )
        .bind(&names)
        .fetch_all(&pool)
        .await;
        let rows = match rows {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(database, error = %e, "could not look up the declared columns");
                return None;
            }
        };
        let mut tables: Vec<TableColumns> = Vec::new();
        for r in rows {
            let oid = r.get::<i64, _>(0) as u32;
            let entry = (
                r.get::<i16, _>(1),
                r.get::<String, _>(4),
                r.get::<String, _>(5),
            );
            match tables.last_mut() {
                Some(t) if t.oid == oid => t.columns.push(entry),
                _ => tables.push(TableColumns {
                    oid,
                    schema: r.get(2),
                    table: r.get(3),
                    columns: vec![entry],
                }),
            }
        }
        let dependents = match sqlx::query_scalar::<_, String>(DEPENDENTS)
            .bind(&names)
            .fetch_all(&pool)
            .await
        {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(database, error = %e, "could not look up the views over declared tables");
                return None;
            }
        };
        let missing = declared.iter().any(|d| {
            !tables.iter().any(|t| {
                d.matches(&t.schema, &t.table, &d.column)
                    && t.columns.iter().any(|(_, n, _)| *n == d.column)
            })
        });
        let db = Arc::new(DbColumns {
            tables,
            declared,
            missing,
            at: Some(Instant::now()),
            dependents,
        });
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(database.to_owned(), db.clone());
        Some(db)
    }

    fn pool(&self, config: &Config, database: &str) -> PgPool {
        self.pools.get(config, database)
    }
}
