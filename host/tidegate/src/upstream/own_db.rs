//! The broker's own connections to the primary — audit writes, declared-column lookups, the
//! admin commands — through `sqlx`, as the upstream user, the way the broker's pools connect
//! (`upstream.primary.sslmode` and `sslrootcert` as for the pools, no `.pgpass`: the
//! configuration is the only source).

use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tidegate_config::{Config, SslMode};

/// Connection options for `database` on `upstream.primary`, named `application` in
/// `pg_stat_activity`.
pub fn options(config: &Config, database: &str, application: &str) -> PgConnectOptions {
    let p = &config.upstream.primary;
    let opts = PgConnectOptions::new_without_pgpass()
        .host(&p.host)
        .port(p.port)
        .username(&p.user)
        .database(database)
        .ssl_mode(match p.sslmode {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require => PgSslMode::Require,
            SslMode::VerifyFull => PgSslMode::VerifyFull,
        })
        .application_name(application);
    let opts = match &p.sslrootcert {
        Some(ca) => opts.ssl_root_cert(ca),
        None => opts,
    };
    match &p.password {
        Some(pw) => opts.password(pw),
        None => opts,
    }
}

/// A pool of at most `max` connections with [`options`], connecting on first use.
pub fn lazy_pool(config: &Config, database: &str, application: &str, max: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(max)
        .idle_timeout(Duration::from_secs(60))
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(options(config, database, application))
}

/// The broker's own pools, one per database, made on first use: `max` connections each, named
/// `application`.
pub struct DbPools {
    application: &'static str,
    max: u32,
    map: Mutex<HashMap<String, PgPool>>,
}

impl DbPools {
    /// No pools yet.
    pub fn new(application: &'static str, max: u32) -> DbPools {
        DbPools {
            application,
            max,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// The pool for `database` under `config`.
    pub fn get(&self, config: &Config, database: &str) -> PgPool {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = map.get(database) {
            return p.clone();
        }
        let pool = lazy_pool(config, database, self.application, self.max);
        map.insert(database.to_owned(), pool.clone());
        pool
    }

    /// Forgets every pool (after a reload: the upstream may have changed).
    pub fn clear(&self) {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// Whether the TimescaleDB extension is installed in the pool's database.
pub async fn has_timescaledb(pool: &PgPool) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'timescaledb')",
    )
    .fetch_one(pool)
    .await
}
