//! TideGate's schema migrations (`migrations/` at the workspace root), embedded in the binary
//! and applied with sqlx's migrator: the only place TideGate's tables are defined. `tidegate
//! migrate` (and `serve` with `[migrations] on_start`) applies them to the migrations database;
//! the audit writer applies them to the audit database before it writes (`audit::store`).
//!
//! The SQL is compiled into the binary, so a deployed broker needs no migrations directory.
//! sqlx's `migrate!` macro would do that too, but needs sqlx's `macros` feature; the
//! [`Migrator`] is built here at run time from the same files, with the same versions,
//! descriptions and checksums `sqlx migrate run` would compute from the directory.
//!
//! Runs are serialized by sqlx's advisory lock (per database): when several brokers start at
//! once, one applies what is pending and the others find nothing left to do. Each migration
//! runs in its own transaction with its `_sqlx_migrations` row, so a failed one leaves no
//! trace: no row, no partial schema.

use super::own_db;
use sqlx::migrate::{
    Migrate, MigrateError as SqlxMigrateError, Migration, MigrationType, Migrator,
};
use sqlx::{Connection, PgConnection};
use std::borrow::Cow;
use std::collections::HashMap;
use std::time::Duration;
use tidegate_config::Config;

/// The table sqlx records applied migrations in.
pub const TABLE: &str = "_sqlx_migrations";

macro_rules! migration {
    ($version:literal, $description:literal, $file:literal) => {
        (
            $version,
            $description,
            $file,
            include_str!(concat!("../../../../migrations/", $file)),
        )
    };
}

/// Every migration: (version, description, file name, SQL), in version order. Version and
/// description are those sqlx derives from the file name (checked by a test).
const MIGRATIONS: [(i64, &str, &str, &str); 6] = [
    migration!(1, "initial schema", "0001_initial_schema.sql"),
    migration!(2, "indexes", "0002_indexes.sql"),
    migration!(3, "partitioning", "0003_partitioning.sql"),
    migration!(4, "audit indexes", "0004_audit_indexes.sql"),
    migration!(5, "audit chain head", "0005_audit_chain_head.sql"),
    migration!(6, "native partitioning", "0006_native_partitioning.sql"),
];

/// Why migrations could not be applied or inspected. Messages never carry the password.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The primary could not be reached or refused the login.
    #[error("cannot connect to {target}: {source}")]
    Connect {
        /// `user@host:port/database`.
        target: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// Connecting took longer than allowed (`user@host:port/database`, the limit).
    #[error("cannot connect to {0}: no answer within {secs} s", secs = .1.as_secs())]
    ConnectTimeout(String, Duration),
    /// An applied migration's SQL differs from this build's.
    #[error(
        "migration {0} was changed after it was applied: its checksum differs from the one \
         recorded in {TABLE}; restore the original file or repair the database by hand"
    )]
    Changed(i64),
    /// The database records a migration this build does not have.
    #[error(
        "migration {0} is recorded in {TABLE} but unknown to this tidegate build \
         (applied by a newer version?)"
    )]
    Unknown(i64),
    /// A migration failed; its transaction was rolled back.
    #[error(
        "migration {version} ({description}) failed: {detail}; it was rolled back and is not \
         recorded in {TABLE}"
    )]
    Failed {
        /// Its version.
        version: i64,
        /// Its description.
        description: &'static str,
        /// The database's message and SQLSTATE.
        detail: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// `_sqlx_migrations` records a failed (`success = false`) migration.
    #[error(
        "migration {0} is recorded as failed in {TABLE}; repair the schema and delete that row"
    )]
    Dirty(i64),
    /// Locking, reading or writing `_sqlx_migrations` failed.
    #[error("migration bookkeeping failed: {0}")]
    Database(#[from] sqlx::Error),
    /// Any other error sqlx's migrator reports.
    #[error("{0}")]
    Other(SqlxMigrateError),
}

/// A migration applied by [`run`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Its version.
    pub version: i64,
    /// Its description.
    pub description: &'static str,
    /// How long it took (as recorded in `_sqlx_migrations`).
    pub duration: Duration,
}

/// One known migration's state in the database, from [`status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Its version.
    pub version: i64,
    /// Its description.
    pub description: &'static str,
    /// When it was applied (UTC, RFC 3339), or `None` when pending.
    pub applied_at: Option<String>,
    /// Applied, but with SQL other than this build's.
    pub checksum_mismatch: bool,
}

impl std::fmt::Display for Status {
    /// `1 initial schema  applied 2026-01-01T00:00:00Z` or `2 indexes  pending`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}  ", self.version, self.description)?;
        match &self.applied_at {
            None => write!(f, "pending"),
            Some(at) if self.checksum_mismatch => {
                write!(f, "applied {at}, CHANGED since (checksum mismatch)")
            }
            Some(at) => write!(f, "applied {at}"),
        }
    }
}

/// The migrations, as sqlx's migrator (advisory-locked, each in a transaction).
pub fn migrator() -> Migrator {
    Migrator {
        migrations: Cow::Owned(MIGRATIONS.iter().map(migration).collect()),
        ignore_missing: false,
        locking: true,
        no_tx: false,
    }
}

fn migration(
    &(version, description, _, sql): &(i64, &'static str, &str, &'static str),
) -> Migration {
    Migration::new(
        version,
        Cow::Borrowed(description),
        MigrationType::Simple,
        Cow::Borrowed(sql),
        // sqlx's own rule for a file opting out of the transaction.
        sql.starts_with("-- no-transaction"),
    )
}

fn description_of(version: i64) -> &'static str {
    MIGRATIONS
        .iter()
        .find(|m| m.0 == version)
        .map_or("?", |m| m.1)
}

/// Applies every pending migration to `database` on the primary (connecting as
/// `application`, giving up after `connect_timeout`), in order, and returns those this call
/// applied (none when another process applied them first). Stops at the first failure.
pub async fn run(
    config: &Config,
    database: &str,
    application: &str,
    connect_timeout: Duration,
) -> Result<Vec<Applied>, MigrateError> {
    let mut conn = connect(config, database, application, connect_timeout).await?;
    let result = apply(&mut conn).await;
    // Closing ends the session, which releases the advisory lock even when sqlx returned
    // early with an error (it unlocks only on success).
    let _ = conn.close().await;
    result
}

/// Applies every pending migration on `conn`, in order, and returns those this call applied.
/// On an error sqlx may still hold its advisory lock: close the connection (ending the session
/// releases it) rather than use it again.
pub async fn apply(conn: &mut PgConnection) -> Result<Vec<Applied>, MigrateError> {
    let migrator = migrator();
    // Held around sqlx's own (re-entrant: a session may take an advisory lock again) lock, so
    // that "what was applied before" and "what is applied after" bracket exactly this run.
    conn.lock().await.map_err(from_sqlx)?;
    let before = applied_versions(conn).await?;
    migrator.run_direct(conn).await.map_err(from_sqlx)?;
    let after: Vec<(i64, i64)> =
        sqlx::query_as("SELECT version, execution_time FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&mut *conn)
            .await?;
    conn.unlock().await.map_err(from_sqlx)?;
    Ok(after
        .into_iter()
        .filter(|(v, _)| !before.contains(v))
        .map(|(version, nanos)| Applied {
            version,
            description: description_of(version),
            duration: Duration::from_nanos(u64::try_from(nanos).unwrap_or(0)),
        })
        .collect())
}

/// The versions `_sqlx_migrations` records (none when the table does not exist yet: sqlx
/// creates it).
async fn applied_versions(conn: &mut PgConnection) -> Result<Vec<i64>, MigrateError> {
    if !table_exists(conn).await? {
        return Ok(Vec::new());
    }
    Ok(sqlx::query_scalar("SELECT version FROM _sqlx_migrations")
        .fetch_all(&mut *conn)
        .await?)
}

async fn table_exists(conn: &mut PgConnection) -> Result<bool, MigrateError> {
    Ok(
        sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
            .fetch_one(&mut *conn)
            .await?,
    )
}

/// Every known migration's state in `database`, without changing anything (not even creating
/// `_sqlx_migrations`).
pub async fn status(
    config: &Config,
    database: &str,
    application: &str,
    connect_timeout: Duration,
) -> Result<Vec<Status>, MigrateError> {
    let mut conn = connect(config, database, application, connect_timeout).await?;
    let result = status_on(&mut conn).await;
    let _ = conn.close().await;
    result
}

async fn status_on(conn: &mut PgConnection) -> Result<Vec<Status>, MigrateError> {
    let rows: Vec<(i64, Vec<u8>, String)> = if table_exists(conn).await? {
        sqlx::query_as(
            "SELECT version, checksum, \
             to_char(installed_on AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') \
             FROM _sqlx_migrations WHERE success",
        )
        .fetch_all(&mut *conn)
        .await?
    } else {
        Vec::new()
    };
    let applied: HashMap<i64, (Vec<u8>, String)> =
        rows.into_iter().map(|(v, c, at)| (v, (c, at))).collect();
    Ok(migrator()
        .iter()
        .map(|m| {
            let row = applied.get(&m.version);
            Status {
                version: m.version,
                description: description_of(m.version),
                applied_at: row.map(|(_, at)| at.clone()),
                checksum_mismatch: row.is_some_and(|(c, _)| c[..] != m.checksum[..]),
            }
        })
        .collect())
}

async fn connect(
    config: &Config,
    database: &str,
    application: &str,
    timeout: Duration,
) -> Result<PgConnection, MigrateError> {
    let p = &config.upstream.primary;
    let target = format!("{}@{}:{}/{database}", p.user, p.host, p.port);
    let options = own_db::options(config, database, application);
    match tokio::time::timeout(timeout, PgConnection::connect_with(&options)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(source)) => Err(MigrateError::Connect { target, source }),
        Err(_) => Err(MigrateError::ConnectTimeout(target, timeout)),
    }
}

fn from_sqlx(e: SqlxMigrateError) -> MigrateError {
    match e {
        SqlxMigrateError::ExecuteMigration(source, version) => MigrateError::Failed {
            version,
            description: description_of(version),
            detail: detail(&source),
            source,
        },
        SqlxMigrateError::Execute(e) => MigrateError::Database(e),
        SqlxMigrateError::VersionMismatch(v) => MigrateError::Changed(v),
        SqlxMigrateError::VersionMissing(v) => MigrateError::Unknown(v),
        SqlxMigrateError::Dirty(v) => MigrateError::Dirty(v),
        other => MigrateError::Other(other),
    }
}

/// The database's own message and SQLSTATE, or the driver's message.
fn detail(e: &sqlx::Error) -> String {
    match e.as_database_error() {
        Some(db) => match db.code() {
            Some(code) => format!("{} (SQLSTATE {code})", db.message()),
            None => db.message().to_owned(),
        },
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The versions and descriptions are those sqlx derives from the file names
    /// (`<VERSION>_<DESCRIPTION>.sql`, underscores read as spaces), and every file in
    /// `migrations/` is embedded.
    #[test]
    fn names_follow_sqlx_and_every_file_is_embedded() {
        for (version, description, file, _) in MIGRATIONS {
            let (v, rest) = file.split_once('_').expect("VERSION_DESCRIPTION.sql");
            assert_eq!(v.parse::<i64>().expect("numeric version"), version);
            let d = rest.strip_suffix(".sql").expect(".sql").replace('_', " ");
            assert_eq!(d, description);
        }
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .expect("migrations directory")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        on_disk.sort();
        let embedded: Vec<&str> = MIGRATIONS.iter().map(|m| m.2).collect();
        assert_eq!(on_disk, embedded);
    }

    #[test]
    fn versions_ascend_and_run_in_transactions() {
        let m = migrator();
        let versions: Vec<i64> = m.iter().map(|m| m.version).collect();
        assert_eq!(versions, [1, 2, 3, 4, 5, 6]);
        assert!(m.iter().all(|m| !m.no_tx));
        assert!(m.locking);
    }

    #[test]
    fn a_mismatch_names_the_version() {
        let e = MigrateError::Changed(2);
        assert!(e
            .to_string()
            .starts_with("migration 2 was changed after it was applied"));
        let s = Status {
            version: 2,
            description: "indexes",
            applied_at: None,
            checksum_mismatch: false,
        };
        assert_eq!(s.to_string(), "2 indexes  pending");
    }
}
