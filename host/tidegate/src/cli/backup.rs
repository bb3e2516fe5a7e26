//! `tidegate backup` / `tidegate restore` (the seed's `backup_restore --backup`,
//! `--restore PATH`): `pg_dump` in directory format with a manifest — PostgreSQL, TimescaleDB
//! and TideGate schema versions, every table's rows, every hypertable's chunks, continuous
//! aggregates, jobs, a SHA-256 of every file — and a restore that checks all of it: a file
//! that does not match is refused before anything is restored, a TimescaleDB version other
//! than the dump's is refused, `timescaledb_pre_restore()` / `timescaledb_post_restore()`
//! surround `pg_restore` (post runs even when the restore fails), and the counts are compared
//! afterwards. `backup --verify DIR` restores into a scratch database and drops it.

use crate::config::Config;
use crate::upstream::own_db;
use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::postgres::PgConnection;
use sqlx::{ConnectOptions as _, Connection as _, Row as _};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `tidegate backup`
#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    /// Configuration file (the database is `upstream.primary.database`).
    #[arg(long, short)]
    pub config: PathBuf,
    /// Where the backup goes (a new directory).
    #[arg(long, default_value = "tidegate-backup")]
    pub out: PathBuf,
    /// Parallel `pg_dump` jobs.
    #[arg(long, default_value_t = 2)]
    pub jobs: u32,
    /// Instead of a backup: restore DIR into a scratch database, compare, drop it.
    #[arg(long, value_name = "DIR")]
    pub verify: Option<PathBuf>,
}

/// `tidegate restore`
#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// A backup directory (or a plain `.sql` file).
    pub path: PathBuf,
    /// The database to create and restore into.
    #[arg(long)]
    pub database: String,
    /// Configuration file (the server is `upstream.primary`'s).
    #[arg(long, short)]
    pub config: PathBuf,
}

/// What a backup holds, written beside the dump as `manifest.json`.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// `server_version`.
    pub postgresql: String,
    /// TimescaleDB's version in the database, if installed.
    pub timescaledb: Option<String>,
    /// The highest TideGate migration applied.
    pub schema_version: Option<i64>,
    /// Rows per table (`schema.table`; hypertables as a whole, not their chunks).
    pub rows: BTreeMap<String, i64>,
    /// Chunks per hypertable.
    pub chunks: BTreeMap<String, i64>,
    /// Continuous aggregates (`schema.view`).
    pub continuous_aggregates: Vec<String>,
    /// Policy jobs: `proc_name on schema.object`.
    pub jobs: Vec<String>,
    /// SHA-256 of every file of the dump, by path relative to the backup directory.
    pub files: BTreeMap<String, String>,
}

/// The state compared before and after: everything in the manifest but the files.
#[derive(Debug, PartialEq)]
struct Counts {
    rows: BTreeMap<String, i64>,
    chunks: BTreeMap<String, i64>,
    continuous_aggregates: Vec<String>,
    jobs: Vec<String>,
}

async fn connect(config: &Config, database: &str) -> anyhow::Result<PgConnection> {
    let opts = own_db::options(config, database, "tidegate-backup").disable_statement_logging();
    PgConnection::connect_with(&opts)
        .await
        .with_context(|| format!("connecting to database {database:?}"))
}

/// `CREATE DATABASE name` (refused when it exists: a restore never writes into a database
/// that holds anything).
async fn create_database(admin: &mut PgConnection, name: &str) -> anyhow::Result<()> {
    sqlx::query(&format!(
        "CREATE DATABASE {}",
        tidegate_sql::quote_ident(name)
    ))
    .execute(admin)
    .await
    .with_context(|| format!("creating database {name:?}"))?;
    Ok(())
}

/// libpq's environment for `pg_dump` / `pg_restore` / `psql` (the password never on the
/// command line).
fn pg_env(cmd: &mut Command, config: &Config, database: &str) {
    let p = &config.upstream.primary;
    cmd.env("PGHOST", &p.host)
        .env("PGPORT", p.port.to_string())
        .env("PGUSER", &p.user)
        .env("PGDATABASE", database)
        .env(
            "PGSSLMODE",
            match p.sslmode {
                crate::config::SslMode::Disable => "disable",
                crate::config::SslMode::Prefer => "prefer",
                crate::config::SslMode::Require => "require",
                crate::config::SslMode::VerifyFull => "verify-full",
            },
        );
    if let Some(pw) = &p.password {
        cmd.env("PGPASSWORD", pw);
    }
    if let Some(ca) = &p.sslrootcert {
        cmd.env("PGSSLROOTCERT", ca);
    }
}

/// The PostgreSQL client program `name`, from the server's own bin directory when it is there.
fn program(name: &str) -> PathBuf {
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()).join(name));
    match from_pg_config {
        Some(p) if p.exists() => p,
        _ => PathBuf::from(name),
    }
}

fn run(mut cmd: Command, what: &str) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

async fn counts(conn: &mut PgConnection) -> anyhow::Result<Counts> {
    let tsdb = crate::timescale::live::extension(conn).await?.is_some();
    let tables: Vec<(String, String)> = sqlx::query_as(
        "SELECT n.nspname::text, c.relname::text FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition \
           AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
           AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname NOT LIKE '\\_timescaledb%' \
           AND n.nspname NOT LIKE 'timescaledb\\_%' \
         ORDER BY 1, 2",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut rows = BTreeMap::new();
    for name in tables {
        let n = crate::timescale::live::count(conn, &name).await?;
        rows.insert(format!("{}.{}", name.0, name.1), n);
    }
    let (mut chunks, mut caggs, mut jobs) = (BTreeMap::new(), Vec::new(), Vec::new());
    if tsdb {
        for r in sqlx::query(
            "SELECT h.hypertable_schema || '.' || h.hypertable_name, count(k.chunk_name) \
             FROM timescaledb_information.hypertables h \
             LEFT JOIN timescaledb_information.chunks k \
               ON k.hypertable_schema = h.hypertable_schema AND k.hypertable_name = h.hypertable_name \
             WHERE h.hypertable_schema NOT LIKE '\\_timescaledb%' GROUP BY 1",
        )
        .fetch_all(&mut *conn)
        .await?
        {
            chunks.insert(r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?);
        }
        caggs = sqlx::query_scalar(
            "SELECT view_schema || '.' || view_name FROM timescaledb_information.continuous_aggregates ORDER BY 1",
        )
        .fetch_all(&mut *conn)
        .await?;
        jobs = sqlx::query_scalar(
            "SELECT proc_name || ' on ' || hypertable_schema || '.' || hypertable_name \
             FROM timescaledb_information.jobs WHERE hypertable_name IS NOT NULL ORDER BY 1",
        )
        .fetch_all(&mut *conn)
        .await?;
    }
    Ok(Counts {
        rows,
        chunks,
        continuous_aggregates: caggs,
        jobs,
    })
}

fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(hex(&Sha256::digest(&bytes)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every file below `dir`, relative to `base`.
fn files(base: &Path, dir: &Path, out: &mut BTreeMap<String, String>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            files(base, &path, out)?;
        } else {
            let rel = path
                .strip_prefix(base)
                .unwrap_or(&path)
                .display()
                .to_string();
            out.insert(rel, sha256_file(&path)?);
        }
    }
    Ok(())
}

/// Runs `tidegate backup`: the dump, then the manifest. Progress on standard error.
pub async fn backup(config: &Config, out: &Path, jobs: u32) -> anyhow::Result<Manifest> {
    if out.exists() {
        bail!(
            "{} exists: a backup goes into a new directory",
            out.display()
        );
    }
    let database = &config.upstream.primary.database;
    let mut conn = connect(config, database).await?;
    let postgresql: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&mut conn)
        .await?;
    let timescaledb = crate::timescale::live::extension(&mut conn).await?;
    let migrated: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(&mut conn)
        .await?;
    let schema_version: Option<i64> = if migrated {
        sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(&mut conn)
            .await?
    } else {
        None
    };
    eprintln!("backup: counting rows, chunks, aggregates and jobs of {database:?}");
    let before = counts(&mut conn).await?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    eprintln!("backup: pg_dump --format=directory --jobs={jobs}");
    let mut dump = Command::new(program("pg_dump"));
    dump.args(["--format=directory", "--no-owner"])
        .arg(format!("--jobs={}", jobs.max(1)))
        .arg("--file")
        .arg(out.join("dump"));
    pg_env(&mut dump, config, database);
    run(dump, "pg_dump")?;
    if !config.audit.checkpoint_file.is_empty() {
        let from = Path::new(&config.audit.checkpoint_file);
        if from.exists() {
            std::fs::copy(from, out.join("audit.checkpoints"))
                .with_context(|| format!("copying {}", from.display()))?;
        }
    }
    let mut hashes = BTreeMap::new();
    files(out, out, &mut hashes)?;
    let manifest = Manifest {
        postgresql,
        timescaledb,
        schema_version,
        rows: before.rows,
        chunks: before.chunks,
        continuous_aggregates: before.continuous_aggregates,
        jobs: before.jobs,
        files: hashes,
    };
    std::fs::write(
        out.join("manifest.json"),
        serde_json::to_string_pretty(&manifest)?,
    )?;
    let _ = conn.close().await;
    Ok(manifest)
}

/// What a restore found.
#[derive(Debug, Serialize)]
pub struct Restored {
    /// The database restored into.
    pub database: String,
    /// Tables, hypertables, aggregates and jobs whose counts differ from the manifest.
    pub differences: Vec<String>,
    /// The audit chain's verdict, when an audit table and key are configured.
    pub audit: Option<String>,
}

/// Checks every file of `dir` against its manifest; the manifest.
pub fn check_files(dir: &Path) -> anyhow::Result<Manifest> {
    let text = std::fs::read_to_string(dir.join("manifest.json"))
        .with_context(|| format!("{}: no manifest.json", dir.display()))?;
    let manifest: Manifest = serde_json::from_str(&text).context("manifest.json is malformed")?;
    let mut found = BTreeMap::new();
    files(dir, dir, &mut found)?;
    found.remove("manifest.json");
    for (file, sum) in &manifest.files {
        match found.get(file) {
            None => bail!("{file} is missing from the backup: nothing was restored"),
            Some(s) if s != sum => {
                bail!("{file} does not match its checksum in manifest.json: nothing was restored")
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = found.keys().find(|f| !manifest.files.contains_key(*f)) {
        bail!("{extra} is not in manifest.json: nothing was restored");
    }
    Ok(manifest)
}

/// Runs `tidegate restore PATH --database NAME`.
pub async fn restore(config: &Config, path: &Path, database: &str) -> anyhow::Result<Restored> {
    if path.is_file() {
        return restore_sql(config, path, database).await;
    }
    let manifest = check_files(path)?;
    let mut admin = connect(config, &config.upstream.primary.database).await?;
    if let Some(version) = &manifest.timescaledb {
        let available: Vec<String> = sqlx::query_scalar(
            "SELECT version::text FROM pg_available_extension_versions WHERE name = 'timescaledb'",
        )
        .fetch_all(&mut admin)
        .await?;
        if !available.contains(version) {
            bail!(
                "the backup was taken with TimescaleDB {version}; this server offers {}: restore \
                 onto a server with TimescaleDB {version} (pg_dump/pg_restore do not cross \
                 extension versions)",
                if available.is_empty() {
                    "none".to_owned()
                } else {
                    available.join(", ")
                }
            );
        }
    }
    eprintln!("restore: creating database {database:?}");
    create_database(&mut admin, database).await?;
    let _ = admin.close().await;
    let mut conn = connect(config, database).await?;
    if let Some(version) = &manifest.timescaledb {
        sqlx::query(&format!(
            "CREATE EXTENSION timescaledb VERSION '{}'",
            version.replace('\'', "")
        ))
        .execute(&mut conn)
        .await?;
        sqlx::query("SELECT timescaledb_pre_restore()")
            .execute(&mut conn)
            .await?;
    }
    eprintln!("restore: pg_restore");
    let mut cmd = Command::new(program("pg_restore"));
    // Serial: a parallel restore of TimescaleDB's catalog is not known to be safe.
    cmd.args(["--no-owner", "--dbname", database])
        .arg(path.join("dump"));
    pg_env(&mut cmd, config, database);
    let restored = run(cmd, "pg_restore");
    if manifest.timescaledb.is_some() {
        // Always, so the background workers run again even after a failed restore.
        sqlx::query("SELECT timescaledb_post_restore()")
            .execute(&mut conn)
            .await?;
    }
    restored?;
    let after = counts(&mut conn).await?;
    let _ = conn.close().await;
    let mut differences = Vec::new();
    let before = Counts {
        rows: manifest.rows,
        chunks: manifest.chunks,
        continuous_aggregates: manifest.continuous_aggregates,
        jobs: manifest.jobs,
    };
    diff("rows", &before.rows, &after.rows, &mut differences);
    diff("chunks", &before.chunks, &after.chunks, &mut differences);
    if before.continuous_aggregates != after.continuous_aggregates {
        differences.push(format!(
            "continuous aggregates: {:?} in the backup, {:?} restored",
            before.continuous_aggregates, after.continuous_aggregates
        ));
    }
    if before.jobs != after.jobs {
        differences.push(format!(
            "jobs: {:?} in the backup, {:?} restored",
            before.jobs, after.jobs
        ));
    }
    let audit = audit(config, path, database).await;
    Ok(Restored {
        database: database.to_owned(),
        differences,
        audit,
    })
}

fn diff(
    what: &str,
    before: &BTreeMap<String, i64>,
    after: &BTreeMap<String, i64>,
    out: &mut Vec<String>,
) {
    for (k, v) in before {
        match after.get(k) {
            Some(a) if a == v => {}
            Some(a) => out.push(format!("{what} of {k}: {v} in the backup, {a} restored")),
            None => out.push(format!("{k}: in the backup, not restored")),
        }
    }
    for k in after.keys().filter(|k| !before.contains_key(*k)) {
        out.push(format!("{k}: restored, not in the backup"));
    }
}

/// The audit chain of the restored database, when an audit key is configured and the audit
/// table lives in the backed-up database.
async fn audit(config: &Config, dir: &Path, database: &str) -> Option<String> {
    let audit_db = &config.audit.database;
    if config.audit.key.is_empty()
        || !(audit_db.is_empty() || *audit_db == config.upstream.primary.database)
    {
        return None;
    }
    let mut restored = config.clone();
    restored.audit.database = database.to_owned();
    let checkpoints = dir.join("audit.checkpoints");
    let file = checkpoints.exists().then_some(checkpoints.as_path());
    Some(match crate::audit::verify::verify(&restored, file).await {
        Ok(crate::audit::verify::Outcome::Intact {
            records,
            checkpoints,
        }) => format!("intact: {records} records, {checkpoints} checkpoints"),
        Ok(crate::audit::verify::Outcome::Broken(b)) => {
            format!("broken at record {}: {}", b.seq, b.reason)
        }
        Err(e) => format!("not verified: {e:#}"),
    })
}

/// A plain SQL file, as the seed's usage shows: into a new database with `psql`.
async fn restore_sql(config: &Config, file: &Path, database: &str) -> anyhow::Result<Restored> {
    let mut admin = connect(config, &config.upstream.primary.database).await?;
    create_database(&mut admin, database).await?;
    let _ = admin.close().await;
    let mut cmd = Command::new(program("psql"));
    cmd.args([
        "--no-psqlrc",
        "--set",
        "ON_ERROR_STOP=1",
        "--quiet",
        "--file",
    ])
    .arg(file);
    pg_env(&mut cmd, config, database);
    run(cmd, "psql")?;
    Ok(Restored {
        database: database.to_owned(),
        differences: Vec::new(),
        audit: None,
    })
}

/// `backup --verify DIR`: restore into a scratch database, compare, drop it.
pub async fn verify(config: &Config, dir: &Path) -> anyhow::Result<Restored> {
    let scratch = format!("tidegate_verify_{}", std::process::id());
    let result = restore(config, dir, &scratch).await;
    if let Ok(mut admin) = connect(config, &config.upstream.primary.database).await {
        let _ = sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            tidegate_sql::quote_ident(&scratch)
        ))
        .execute(&mut admin)
        .await;
    }
    result
}

/// Runs `tidegate backup` (or `--verify`); the exit status (0 done and equal, 1 not).
pub fn run_backup(args: BackupArgs) -> i32 {
    let Some((config, rt)) = crate::cli::setup(&args.config) else {
        return 1;
    };
    if let Some(dir) = &args.verify {
        return report(rt.block_on(verify(&config, dir)));
    }
    match rt.block_on(backup(&config, &args.out, args.jobs)) {
        Ok(m) => {
            println!(
                "backup {}: {} tables ({} rows), {} chunks, {} continuous aggregates, {} jobs, \
                 {} files; PostgreSQL {}, TimescaleDB {}, schema v{}",
                args.out.display(),
                m.rows.len(),
                m.rows.values().sum::<i64>(),
                m.chunks.values().sum::<i64>(),
                m.continuous_aggregates.len(),
                m.jobs.len(),
                m.files.len(),
                m.postgresql,
                m.timescaledb.as_deref().unwrap_or("not installed"),
                m.schema_version.map_or("-".to_owned(), |v| v.to_string()),
            );
            0
        }
        Err(e) => {
            eprintln!("tidegate backup: {e:#}");
            1
        }
    }
}

/// Runs `tidegate restore`; the exit status (0 restored and equal, 1 not).
pub fn run_restore(args: RestoreArgs) -> i32 {
    let Some((config, rt)) = crate::cli::setup(&args.config) else {
        return 1;
    };
    report(rt.block_on(restore(&config, &args.path, &args.database)))
}

fn report(result: anyhow::Result<Restored>) -> i32 {
    match result {
        Ok(r) => {
            let mut code = 0;
            if r.differences.is_empty() {
                println!(
                    "restored into {}: every count equal to the backup's",
                    r.database
                );
            } else {
                code = 1;
                for d in &r.differences {
                    println!("differs: {d}");
                }
            }
            if let Some(a) = &r.audit {
                println!("audit chain: {a}");
                if !a.starts_with("intact") {
                    code = 1;
                }
            }
            code
        }
        Err(e) => {
            eprintln!("tidegate restore: {e:#}");
            1
        }
    }
}
