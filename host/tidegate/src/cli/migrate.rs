//! `tidegate migrate`: TideGate's schema migrations ([`crate::upstream::migrations`], the
//! embedded `migrations/`) applied to the primary's migrations database (`[migrations]
//! database`, default the upstream database), as the upstream user, then `tidegate roles
//! sync`.

use std::time::Duration;
use tidegate_config::Config;

pub use crate::upstream::migrations::{Applied, MigrateError, Status};

/// How long connecting to the primary may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The name the connection has in `pg_stat_activity`.
const APPLICATION: &str = "tidegate-migrate";

/// Applies every pending migration to the migrations database, in order, and returns those
/// this call applied (none when another process applied them first). Stops at the first
/// failure.
pub async fn run(config: &Config) -> Result<Vec<Applied>, MigrateError> {
    let database = config.migrations_database();
    crate::upstream::migrations::run(config, database, APPLICATION, CONNECT_TIMEOUT).await
}

/// Every known migration's state in the migrations database, without changing anything (not
/// even creating `_sqlx_migrations`).
pub async fn status(config: &Config) -> Result<Vec<Status>, MigrateError> {
    let database = config.migrations_database();
    crate::upstream::migrations::status(config, database, APPLICATION, CONNECT_TIMEOUT).await
}

/// The step `tidegate migrate` runs after the migrations: `tidegate roles sync` for the chain's
/// access-control plugin (`None` when there is none), so the PostgreSQL roles broker users act
/// as hold exactly what their access-control roles imply. Not run by `serve`'s `on_start`.
pub async fn sync_roles(
    config: &Config,
) -> anyhow::Result<Option<crate::cli::admin::roles::Report>> {
    crate::cli::admin::roles::sync_for_migrate(config).await
}

/// What v3 and v6 made of `public.time_series_data` in the migrations database: a hypertable
/// (with TimescaleDB), native range partitions (without), or a plain table — one line for
/// `tidegate migrate` to print.
pub async fn time_series_layout(config: &Config) -> Result<String, sqlx::Error> {
    use sqlx::Connection as _;
    let opts = crate::upstream::own_db::options(config, config.migrations_database(), APPLICATION);
    let mut conn = sqlx::postgres::PgConnection::connect_with(&opts).await?;
    let kind: Option<String> = sqlx::query_scalar(
        "SELECT relkind::text FROM pg_class WHERE oid = to_regclass('public.time_series_data')",
    )
    .fetch_optional(&mut conn)
    .await?;
    let tsdb: Option<String> = sqlx::query_scalar(
        "SELECT extversion::text FROM pg_extension WHERE extname = 'timescaledb'",
    )
    .fetch_optional(&mut conn)
    .await?;
    let line = match (kind.as_deref(), &tsdb) {
        (None, _) => "time_series_data: absent".to_owned(),
        (Some(_), Some(v)) => {
            let dims: Vec<String> = sqlx::query_scalar(
                "SELECT CASE WHEN dimension_type = 'Time' \
                   THEN column_name || ' by ' || time_interval::text \
                   ELSE column_name || ' in ' || num_partitions || ' hash partitions' END \
                 FROM timescaledb_information.dimensions \
                 WHERE hypertable_schema = 'public' AND hypertable_name = 'time_series_data' \
                 ORDER BY dimension_number",
            )
            .fetch_all(&mut conn)
            .await?;
            if dims.is_empty() {
                format!("time_series_data: a plain table (TimescaleDB {v} is installed, but it is no hypertable)")
            } else {
                format!(
                    "time_series_data: a hypertable (TimescaleDB {v}), partitioned on {}",
                    dims.join(", ")
                )
            }
        }
        (Some("p"), None) => {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_inherits WHERE inhparent = 'public.time_series_data'::regclass",
            )
            .fetch_one(&mut conn)
            .await?;
            format!(
                "time_series_data: natively partitioned by range on time ({n} partitions, the default one included; TimescaleDB is not installed)"
            )
        }
        (Some(_), None) => {
            "time_series_data: a plain table (TimescaleDB is not installed)".to_owned()
        }
    };
    let _ = conn.close().await;
    Ok(line)
}
