//! The broker's own connections to the primary — audit writes, declared-column lookups, the
//! admin commands — through `sqlx`, as the upstream user, the way the broker's pools connect
//! (no TLS to the upstream, no `.pgpass`: the configuration is the only source).

use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::PgPool;
use std::time::Duration;
use tidegate_config::Config;

/// Connection options for `database` on `upstream.primary`, named `application` in
/// `pg_stat_activity`.
pub fn options(config: &Config, database: &str, application: &str) -> PgConnectOptions {
    let p = &config.upstream.primary;
    let opts = PgConnectOptions::new_without_pgpass()
        .host(&p.host)
        .port(p.port)
        .username(&p.user)
        .database(database)
        .ssl_mode(PgSslMode::Disable)
        .application_name(application);
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
