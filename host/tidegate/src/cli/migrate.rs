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
