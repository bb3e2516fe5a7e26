//! What the classifier knows about each database's functions, and its verdicts.
//!
//! Function volatility lives in each database's `pg_proc`, so each database gets a
//! [`DbCatalog`]: the volatilities read once from the primary (STABLE and IMMUTABLE are
//! read-only; VOLATILE may write), the configured `read_only_functions`/`primary_functions`
//! on top, and a classification cache that goes with them. Catalogs belong to a topology, so a
//! reload reads them afresh. Until a database's `pg_proc` is read, its catalog knows only the
//! built-in table and the configured lists: unknown functions go to the primary.

use crate::upstream::backend::Pool;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tidegate_config::Config;
use tidegate_sql::{CatalogLookup, ClassCache};

/// Shapes cached per database.
const CLASS_CACHE_SHAPES: usize = 10_000;

/// The function catalog and classification cache of one database.
pub struct DbCatalog {
    /// Function volatilities and overrides.
    pub lookup: CatalogLookup,
    /// Classifications by fingerprint, made with `lookup`.
    pub classes: ClassCache,
    /// `pg_proc` was read (else only built-ins and overrides are known).
    pub complete: bool,
}

/// The catalogs of every database seen under one topology.
pub struct Catalogs {
    /// The configured lists (validated in [`Catalogs::new`]).
    allow: Vec<String>,
    deny: Vec<String>,
    partial: Arc<DbCatalog>,
    loaded: Mutex<HashMap<String, Arc<DbCatalog>>>,
    loading: Mutex<HashSet<String>>,
}

/// A malformed entry in a function list of `[routing]`.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {source}")]
pub struct CatalogError {
    /// `routing.read_only_functions` or `routing.primary_functions`.
    pub setting: &'static str,
    /// The entry.
    #[source]
    pub source: tidegate_sql::BadFunctionName,
}

impl Catalogs {
    /// Catalogs with `config`'s function lists; `Err` names a malformed entry.
    pub fn new(config: &Config) -> Result<Catalogs, CatalogError> {
        let r = &config.routing;
        let bad = |setting| move |source| CatalogError { setting, source };
        let overrides = CatalogLookup::new()
            .with_allow(&r.read_only_functions)
            .map_err(bad("routing.read_only_functions"))?
            .with_deny(&r.primary_functions)
            .map_err(bad("routing.primary_functions"))?;
        Ok(Catalogs {
            partial: Arc::new(DbCatalog {
                lookup: overrides.clone(),
                classes: ClassCache::new(CLASS_CACHE_SHAPES),
                complete: false,
            }),
            allow: r.read_only_functions.clone(),
            deny: r.primary_functions.clone(),
            loaded: Mutex::new(HashMap::new()),
            loading: Mutex::new(HashSet::new()),
        })
    }

    /// The catalog of `database` if its `pg_proc` was read.
    pub fn get(&self, database: &str) -> Option<Arc<DbCatalog>> {
        self.loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(database)
            .cloned()
    }

    /// The catalog to use before `pg_proc` is read: built-ins and overrides only.
    pub fn partial(&self) -> Arc<DbCatalog> {
        self.partial.clone()
    }

    /// Reads `database`'s `pg_proc` over a connection from `pool` (its primary pool), unless
    /// another task is already at it. On failure the database stays partial; a later call
    /// tries again.
    pub async fn load(&self, database: &str, pool: &Pool) -> Arc<DbCatalog> {
        if let Some(c) = self.get(database) {
            return c;
        }
        if !self
            .loading
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(database.to_owned())
        {
            return self.partial();
        }
        let result = read_pg_proc(pool).await;
        self.loading
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(database);
        let Some(rows) = result else {
            return self.partial();
        };
        // The lists were validated when the topology was built, so this cannot fail.
        let Ok(lookup) = CatalogLookup::from_pg_proc(rows)
            .with_allow(&self.allow)
            .and_then(|l| l.with_deny(&self.deny))
        else {
            return self.partial();
        };
        tracing::debug!(
            database,
            functions = lookup.functions(),
            "function volatility read from pg_proc"
        );
        let catalog = Arc::new(DbCatalog {
            lookup,
            classes: ClassCache::new(CLASS_CACHE_SHAPES),
            complete: true,
        });
        self.loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(database.to_owned(), catalog.clone());
        catalog
    }
}

async fn read_pg_proc(pool: &Pool) -> Option<Vec<(String, String, char)>> {
    let mut b = pool.checkout().await.ok()?;
    let sql = "SELECT n.nspname, p.proname, p.provolatile::text \
               FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace";
    let rows =
        match tokio::time::timeout(Duration::from_secs(10), b.query_rows(sql, 1_000_000)).await {
            Ok(Ok(rows)) => {
                pool.checkin(b);
                rows?
            }
            _ => return None, // The connection is in an unknown state: dropped.
        };
    Some(
        rows.into_iter()
            .filter_map(|r| {
                let mut it = r.into_iter();
                let (Some(Some(schema)), Some(Some(name)), Some(Some(v))) =
                    (it.next(), it.next(), it.next())
                else {
                    return None;
                };
                Some((schema, name, v.chars().next()?))
            })
            .collect(),
    )
}
