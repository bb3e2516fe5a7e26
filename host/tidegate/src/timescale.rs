//! The time-series lifecycle as declared, reconciled state (`[timescale]` in the
//! configuration): [`plan`] compares the declaration with the live catalog ([`live`]),
//! [`apply`] makes the catalog so under an advisory lock, one object per transaction, and
//! [`status`] reports chunks, compression, aggregates' watermarks and jobs.

pub mod live;
pub mod objects;
pub mod ops;
pub mod plan;
pub mod status;

use crate::upstream::own_db;
use sqlx::postgres::PgConnection;
use sqlx::{ConnectOptions as _, Connection as _};
use std::time::{Duration, Instant};
use tidegate_config::Config;

pub use plan::{Change, Plan};
pub use status::Status;

/// Serializes `apply` across brokers and operators (`pg_advisory_lock`).
pub const LOCK_KEY: i64 = 0x7469_6465_7473_6462; // "tidetsdb"

/// Why a lifecycle command could not run.
#[derive(Debug, thiserror::Error)]
pub enum TimescaleError {
    /// The database could not be reached.
    #[error("connecting to database {database:?}: {source}")]
    Connect {
        /// The database.
        database: String,
        /// The cause.
        source: sqlx::Error,
    },
    /// The extension is not installed there.
    #[error("TimescaleDB is not installed in database {0:?} (CREATE EXTENSION timescaledb)")]
    NotInstalled(String),
    /// Reading the catalog failed.
    #[error("reading the catalog: {0}")]
    Catalog(#[from] sqlx::Error),
    /// The declaration names what does not exist, or asks for what cannot be.
    #[error("the declared state cannot be applied:\n  {}", .0.join("\n  "))]
    Invalid(Vec<String>),
    /// A continuous aggregate would be dropped and recreated without `--allow-recreate`.
    #[error("{} would be dropped and recreated (its rows re-materialized): run apply with --allow-recreate to do so", .0.join(", "))]
    RecreateRefused(Vec<String>),
    /// A statement failed; the changes before it stay applied.
    #[error("{object}: {statement}: {source}")]
    Statement {
        /// The object changed.
        object: String,
        /// The statement.
        statement: String,
        /// The server's error.
        source: sqlx::Error,
    },
}

/// A connection as the upstream user to the declared objects' database, and the extension's
/// version there (`None`: not installed).
pub async fn connect_any(
    config: &Config,
) -> Result<(PgConnection, Option<String>), TimescaleError> {
    let database = config
        .timescale
        .database(&config.upstream.primary.database)
        .to_owned();
    let mut conn = PgConnection::connect_with(
        // Chunk compression and aggregate refreshes are slow by nature: no slow-statement
        // warnings for them.
        &own_db::options(config, &database, "tidegate-timescale").disable_statement_logging(),
    )
    .await
    .map_err(|source| TimescaleError::Connect {
        database: database.clone(),
        source,
    })?;
    let version = live::extension(&mut conn).await?;
    Ok((conn, version))
}

/// [`connect_any`] where the extension is required.
pub async fn connect(config: &Config) -> Result<PgConnection, TimescaleError> {
    connect_versioned(config).await.map(|(conn, _)| conn)
}

/// [`connect`], and the extension's version.
async fn connect_versioned(config: &Config) -> Result<(PgConnection, String), TimescaleError> {
    match connect_any(config).await? {
        (conn, Some(version)) => Ok((conn, version)),
        (_, None) => Err(TimescaleError::NotInstalled(
            config
                .timescale
                .database(&config.upstream.primary.database)
                .to_owned(),
        )),
    }
}

/// The plan for `config`'s declared state against the live catalog.
pub async fn plan_on(
    conn: &mut PgConnection,
    config: &Config,
    timescaledb: bool,
) -> Result<Plan, TimescaleError> {
    let live = live::read(conn, &config.timescale, timescaledb).await?;
    Ok(plan::plan(&config.timescale, &live))
}

/// What [`apply`] did.
#[derive(Debug, serde::Serialize)]
pub struct Applied {
    /// The changes made, in order.
    pub changes: Vec<Change>,
    /// What the declaration leaves alone.
    pub notes: Vec<String>,
    /// Time waited for another apply to finish.
    #[serde(serialize_with = "millis")]
    pub waited: Duration,
    /// Time taken, lock wait included.
    #[serde(serialize_with = "millis")]
    pub took: Duration,
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

impl Applied {
    /// The report for people.
    pub fn human(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        plan::write_changes(&mut out, &self.changes, &self.notes);
        let _ = writeln!(
            out,
            "timescale apply: {} change(s) applied in {} ms{}",
            self.changes.len(),
            self.took.as_millis(),
            if self.waited > Duration::from_millis(50) {
                format!(" (waited {} ms for another apply)", self.waited.as_millis())
            } else {
                String::new()
            }
        );
        out
    }
}

/// Makes the catalog what `config` declares: under [`LOCK_KEY`] (a concurrent apply waits,
/// then finds nothing left to do), the plan made after the lock is taken, one object's
/// statements per transaction. Refuses, before changing anything, a plan with errors or one
/// that recreates an aggregate unless `allow_recreate`.
pub async fn apply(config: &Config, allow_recreate: bool) -> Result<Applied, TimescaleError> {
    apply_to(config, allow_recreate, None).await
}

/// [`apply`] limited to the changes of one object (`"schema"."name"`), e.g. `tidegate caggs
/// create NAME`.
pub async fn apply_to(
    config: &Config,
    allow_recreate: bool,
    only: Option<&str>,
) -> Result<Applied, TimescaleError> {
    let start = Instant::now();
    let (mut conn, version) = connect_any(config).await?;
    lock(&mut conn, "pg_advisory_lock").await?;
    let waited = start.elapsed();
    let result = apply_locked(&mut conn, config, version.is_some(), allow_recreate, only).await;
    // Closing the connection would release the lock too; unlock explicitly all the same.
    let _ = lock(&mut conn, "pg_advisory_unlock").await;
    let _ = conn.close().await;
    let (changes, notes) = result?;
    Ok(Applied {
        changes,
        notes,
        waited,
        took: start.elapsed(),
    })
}

async fn apply_locked(
    conn: &mut PgConnection,
    config: &Config,
    timescaledb: bool,
    allow_recreate: bool,
    only: Option<&str>,
) -> Result<(Vec<Change>, Vec<String>), TimescaleError> {
    let mut plan = plan_on(conn, config, timescaledb).await?;
    if let Some(only) = only {
        plan.changes.retain(|c| c.object == only);
    }
    if !plan.errors.is_empty() {
        return Err(TimescaleError::Invalid(plan.errors));
    }
    let recreate: Vec<String> = plan
        .changes
        .iter()
        .filter(|c| c.recreate)
        .map(|c| c.object.clone())
        .collect();
    if !recreate.is_empty() && !allow_recreate {
        return Err(TimescaleError::RecreateRefused(recreate));
    }
    for change in &plan.changes {
        tracing::info!(object = %change.object, why = %change.why, "timescale apply");
        run_in_transaction(conn, change).await?;
    }
    Ok((plan.changes, plan.notes))
}

/// The plan for `config` (connects, reads the catalog, changes nothing).
pub async fn plan(config: &Config) -> Result<Plan, TimescaleError> {
    let (mut conn, version) = connect_any(config).await?;
    let plan = plan_on(&mut conn, config, version.is_some()).await;
    let _ = conn.close().await;
    plan
}

/// The live status of the declared objects' database.
pub async fn status(config: &Config) -> Result<Status, TimescaleError> {
    let (mut conn, version) = connect_versioned(config).await?;
    let status = status::read(&mut conn, version).await?;
    let _ = conn.close().await;
    Ok(status)
}

#[cfg(test)]
mod plan_tests;

/// Runs one change's statements in one transaction (rolled back on the first failure).
async fn run_in_transaction(
    conn: &mut PgConnection,
    change: &Change,
) -> Result<(), TimescaleError> {
    sqlx::query("BEGIN").execute(&mut *conn).await?;
    for statement in &change.statements {
        if let Err(source) = sqlx::query(statement).execute(&mut *conn).await {
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
            return Err(TimescaleError::Statement {
                object: change.object.clone(),
                statement: statement.clone(),
                source,
            });
        }
    }
    sqlx::query("COMMIT").execute(&mut *conn).await?;
    Ok(())
}

/// `SELECT pg_advisory_lock(LOCK_KEY)` (or `_unlock`).
async fn lock(conn: &mut PgConnection, function: &str) -> Result<(), sqlx::Error> {
    let sql = format!("SELECT {function}({LOCK_KEY})");
    sqlx::query(&sql).execute(conn).await.map(drop)
}
