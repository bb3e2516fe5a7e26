//! Schema migrations (reliability scenario 29), run as the real `tidegate` binary against real
//! PostgreSQL: `tidegate migrate` applies v1–v6 once and `--status` reports them; three brokers
//! started at once with `[migrations] on_start = true` apply them exactly once between them
//! and all serve; a checksum mismatch and a failed migration stop both `migrate` and `serve`
//! with a message naming the version, leaving `_sqlx_migrations` consistent; with TimescaleDB
//! `time_series_data` becomes a compressed, space-partitioned hypertable, and without it a
//! natively partitioned table, saying so.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};
use tidegate_config::Config;
use tidegate_tests::{free_port, fresh_dir, run_tool, tidegate_bin, Postgres};

/// v3's notice on a server without TimescaleDB.
const NO_TIMESCALE: &str = "TimescaleDB is not installed: time_series_data stays a plain table \
                            (no hypertable, space partitioning or compression)";

/// v6's notice on a server without TimescaleDB.
const NATIVE: &str =
    "TimescaleDB is not installed: time_series_data is partitioned natively, by day";

/// A private directory for configuration files and logs, removed when dropped (unless
/// `TIDEGATE_KEEP_TEST_DIRS` is set, as for the harness's servers).
struct WorkDir(PathBuf);

impl WorkDir {
    fn new() -> WorkDir {
        WorkDir(fresh_dir().expect("dir"))
    }
}

impl std::ops::Deref for WorkDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if std::env::var_os("TIDEGATE_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A configuration file in `dir` for a broker on `listen` (HTTP off) in front of `pg`, with
/// `[migrations] on_start = true` and JSON logs.
fn write_config(pg: &Postgres, dir: &Path, name: &str, listen: u16) -> PathBuf {
    let text = format!(
        r#"[listen]
sql = "127.0.0.1:{listen}"
http = "off"

[upstream.primary]
host = "127.0.0.1"
port = {port}
user = "postgres"
database = "postgres"

[migrations]
on_start = true

[log]
format = "json"
level = "info"

[[users]]
name = "app"
password = "app"
"#,
        port = pg.port
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).expect("write config");
    path
}

/// `tidegate migrate --config FILE [args…]`.
async fn migrate(config: &Path, args: &[&str]) -> Output {
    let bin = tidegate_bin();
    let mut all = vec!["migrate", "--config", config.to_str().expect("utf-8 path")];
    all.extend_from_slice(args);
    run_tool(bin.to_str().expect("utf-8 path"), &all, &[]).await
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `tidegate migrate` on `config`, asserting success; its (stdout, stderr).
async fn migrate_ok(config: &Path, args: &[&str]) -> (String, String) {
    let out = migrate(config, args).await;
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "tidegate migrate {args:?} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    (stdout, stderr)
}

/// `_sqlx_migrations` as `version:success` pairs in version order.
fn recorded(pg: &Postgres) -> String {
    pg.sql(
        "postgres",
        "SELECT coalesce(string_agg(version || ':' || success, ',' ORDER BY version), '') \
         FROM _sqlx_migrations",
    )
}

/// A `tidegate serve` process, killed (and reaped) when dropped; its output goes to a file.
struct Served {
    child: Child,
    log: PathBuf,
    listen: u16,
}

impl Served {
    fn start(config: &Path, log: PathBuf, listen: u16) -> Served {
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(tidegate_bin())
            .args(["serve", "--config"])
            .arg(config)
            .env("TIDEGATE__LISTEN__HTTP", "off")
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("start tidegate serve");
        Served { child, log, listen }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the broker accepts connections; panics if it exits or takes over 60 s.
    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", self.listen)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("tidegate serve exited ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "the broker did not start listening:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the process to exit by itself (60 s at most).
    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "tidegate serve did not exit:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// How many migrations this instance says it applied (its JSON start-up log line).
    fn applied(&self) -> u64 {
        let log = self.log();
        let line = log
            .lines()
            .find(|l| l.contains("migrations are up to date"))
            .unwrap_or_else(|| panic!("no migrations line in:\n{log}"));
        let rest = line
            .split("\"applied\":")
            .nth(1)
            .unwrap_or_else(|| panic!("no applied field in {line}"));
        rest.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap_or_else(|_| panic!("applied is not a number in {line}"))
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tidegate serve` with on_start on `config` must exit non-zero, never listening, and say
/// `needle` in its log.
fn serve_refuses(config: &Path, dir: &Path, listen: u16, needle: &str) {
    let mut served = Served::start(config, dir.join("refused.log"), listen);
    let status = served.wait_exit();
    let log = served.log();
    assert!(!status.success(), "serve should fail, it exited 0:\n{log}");
    assert!(log.contains(needle), "serve's log lacks {needle:?}:\n{log}");
    assert!(
        log.contains("migrations failed; not starting"),
        "serve's log:\n{log}"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", listen)).is_err(),
        "nothing may listen on {listen}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_applies_once_reports_status_and_keeps_plain_tables_without_timescaledb() {
    let pg = Postgres::start();
    let dir = WorkDir::new();
    let config = write_config(&pg, &dir, "tidegate", free_port());

    let (stdout, stderr) = migrate_ok(&config, &[]).await;
    assert!(stdout.contains("6 applied by this run"), "{stdout}");
    for line in [
        "1 initial schema  applied ",
        "2 indexes  applied ",
        "3 partitioning  applied ",
        "4 audit indexes  applied ",
        "5 audit chain head  applied ",
        "6 native partitioning  applied ",
        "time_series_data: natively partitioned by range on time (10 partitions, the default one included; TimescaleDB is not installed)",
    ] {
        assert!(stdout.contains(line), "no {line:?} in:\n{stdout}");
    }
    // (f) Without TimescaleDB, v3 says what it did not do, and v6 partitions the table
    // natively: a partition per day from yesterday to a week ahead, and a default one.
    assert!(stderr.contains(NO_TIMESCALE), "stderr:\n{stderr}");
    assert!(stderr.contains(NATIVE), "stderr:\n{stderr}");
    assert_eq!(recorded(&pg), "1:true,2:true,3:true,4:true,5:true,6:true");
    assert_eq!(
        pg.sql(
            "postgres",
            "SELECT c.relkind::text || ':' || \
             (SELECT count(*) FROM pg_inherits WHERE inhparent = c.oid) || ':' || \
             (SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb') \
             FROM pg_class c WHERE c.oid = 'public.time_series_data'::regclass"
        ),
        "p:10:0"
    );
    // Today's rows go into today's partition; far-off times into the default one.
    pg.sql(
        "postgres",
        "INSERT INTO time_series_data VALUES (now(), 1, 1.5, NULL), ('2001-01-01', 1, 2, NULL)",
    );
    assert_eq!(
        pg.sql(
            "postgres",
            "SELECT string_agg(tableoid::regclass::text, ',' ORDER BY time) FROM time_series_data"
        ),
        format!(
            "time_series_data_default,time_series_data_p{}_000000",
            pg.sql(
                "postgres",
                "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYYMMDD')"
            )
        )
    );
    pg.sql("postgres", "DELETE FROM time_series_data");
    assert_eq!(
        pg.sql(
            "postgres",
            "SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes \
             WHERE tablename = 'time_series_data'"
        ),
        "time_series_data_metadata_gin_idx,time_series_data_series_id_time_idx"
    );
    assert_eq!(
        pg.sql(
            "postgres",
            "SELECT table_schema || '.' || table_name || ' ' || time_column || ' ' || \
             series_column || ' ' || value_columns::text || ' ' || metadata_column \
             FROM tidegate.series_tables"
        ),
        "public.time_series_data time series_id {value} metadata"
    );

    // `--status` changes nothing and lists all six as applied, then the table's layout.
    let (status, _) = migrate_ok(&config, &["--status"]).await;
    let lines: Vec<&str> = status.lines().collect();
    assert_eq!(lines.len(), 7, "{status}");
    assert!(
        lines[6].starts_with("time_series_data: natively partitioned"),
        "{status}"
    );
    for (line, prefix) in lines.iter().zip([
        "1 initial schema  applied 20",
        "2 indexes  applied 20",
        "3 partitioning  applied 20",
        "4 audit indexes  applied 20",
        "5 audit chain head  applied 20",
        "6 native partitioning  applied 20",
    ]) {
        assert!(line.starts_with(prefix), "{line:?} vs {prefix:?}");
    }

    // A second run applies nothing.
    let installed = pg.sql(
        "postgres",
        "SELECT string_agg(installed_on::text, ',') FROM _sqlx_migrations",
    );
    let (stdout, _) = migrate_ok(&config, &[]).await;
    assert!(stdout.contains("0 applied by this run"), "{stdout}");
    assert_eq!(recorded(&pg), "1:true,2:true,3:true,4:true,5:true,6:true");
    assert_eq!(
        pg.sql(
            "postgres",
            "SELECT string_agg(installed_on::text, ',') FROM _sqlx_migrations"
        ),
        installed
    );

    // The audit tables are exactly what the audit writer would create: ensure() adds nothing.
    // The events table has no index; its chain head starts at the genesis.
    let audit_schema = "SELECT (SELECT string_agg(tablename, ',' ORDER BY tablename) \
                               FROM pg_tables WHERE schemaname = 'tidegate_audit') || ' ' || \
                              (SELECT string_agg(indexname, ',' ORDER BY indexname) \
                               FROM pg_indexes WHERE schemaname = 'tidegate_audit') || ' ' || \
                              (SELECT string_agg(seq || ':' || encode(hash, 'hex'), ',') \
                               FROM tidegate_audit.events_head)";
    let genesis = format!("events,events_head events_head_pkey 0:{}", "0".repeat(64));
    assert_eq!(pg.sql("postgres", audit_schema), genesis);
    let cfg = Config::load(&config).expect("config");
    tidegate::audit::store::Store::new(&cfg)
        .ensure()
        .await
        .expect("ensure");
    assert_eq!(pg.sql("postgres", audit_schema), genesis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_brokers_starting_at_once_apply_migrations_once_and_all_serve() {
    let pg = Postgres::start();
    let dir = WorkDir::new();
    let mut brokers: Vec<Served> = (0..3)
        .map(|i| {
            let listen = free_port();
            let config = write_config(&pg, &dir, &format!("broker{i}"), listen);
            (config, listen)
        })
        .collect::<Vec<_>>()
        .into_iter()
        .enumerate()
        // Spawned back to back, after every file is written: they race for the lock.
        .map(|(i, (config, listen))| {
            Served::start(&config, dir.join(format!("broker{i}.log")), listen)
        })
        .collect();
    for b in &mut brokers {
        b.wait_listening();
    }
    assert_eq!(recorded(&pg), "1:true,2:true,3:true,4:true,5:true,6:true");
    assert_eq!(
        pg.sql(
            "postgres",
            "SELECT count(*) || ':' || count(DISTINCT version) FROM _sqlx_migrations"
        ),
        "6:6"
    );
    assert_eq!(
        pg.sql(
            "postgres",
            "SELECT to_regclass('public.time_series_data') IS NOT NULL \
             AND to_regclass('tidegate.series_tables') IS NOT NULL \
             AND to_regclass('tidegate_audit.events') IS NOT NULL"
        ),
        "t"
    );
    let applied: Vec<u64> = brokers.iter().map(Served::applied).collect();
    assert_eq!(applied.iter().sum::<u64>(), 6, "per instance: {applied:?}");
    assert!(
        applied.contains(&6),
        "one instance applied all: {applied:?}"
    );
    for b in &brokers {
        let url = format!("postgresql://app:app@127.0.0.1:{}/postgres", b.listen);
        let c = tidegate_tests::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("connect through {}: {e}\n{}", b.listen, b.log()));
        let one = tidegate_tests::first_value(&c, "SELECT 1").await;
        assert_eq!(one, "1");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_migration_stops_migrate_and_serve_naming_its_version() {
    let pg = Postgres::start();
    let dir = WorkDir::new();
    let listen = free_port();
    let config = write_config(&pg, &dir, "tidegate", listen);
    migrate_ok(&config, &[]).await;
    pg.sql(
        "postgres",
        "UPDATE _sqlx_migrations SET checksum = '\\x00' WHERE version = 2",
    );
    let needle = "migration 2 was changed after it was applied";

    let out = migrate(&config, &[]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains(needle), "stderr:\n{stderr}");

    let out = migrate(&config, &["--status"]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains(needle), "stderr:\n{stderr}");
    assert!(
        stdout.contains("2 indexes  applied ")
            && stdout.contains("CHANGED since (checksum mismatch)"),
        "stdout:\n{stdout}"
    );

    serve_refuses(&config, &dir, listen, needle);
    // Nothing was re-run or recorded anew.
    assert_eq!(recorded(&pg), "1:true,2:true,3:true,4:true,5:true,6:true");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_migration_is_rolled_back_unrecorded_and_the_broker_never_ready() {
    let pg = Postgres::start();
    // A time_series_data without series_id: v1's CREATE TABLE IF NOT EXISTS keeps it, and v2's
    // first index on (series_id, time DESC) fails.
    pg.sql(
        "postgres",
        "CREATE TABLE public.time_series_data (time timestamptz NOT NULL, \
         value double precision, metadata jsonb)",
    );
    let dir = WorkDir::new();
    let listen = free_port();
    let config = write_config(&pg, &dir, "tidegate", listen);

    let out = migrate(&config, &[]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains(
            "migration 2 (indexes) failed: column \"series_id\" does not exist (SQLSTATE 42703)"
        ),
        "stderr:\n{stderr}"
    );
    // sqlx runs each migration and its _sqlx_migrations row in one transaction: v1 is
    // recorded, v2 left no row (no `success = false` either) and no index, v3 never ran.
    assert_eq!(recorded(&pg), "1:true");
    assert_eq!(
        pg.sql(
            "postgres",
            "SELECT count(*) FROM pg_indexes WHERE tablename = 'time_series_data'"
        ),
        "0"
    );
    let (status, _) = migrate_ok(&config, &["--status"]).await;
    assert!(status.contains("1 initial schema  applied "), "{status}");
    assert!(status.contains("2 indexes  pending"), "{status}");
    assert!(status.contains("3 partitioning  pending"), "{status}");
    assert!(status.contains("4 audit indexes  pending"), "{status}");
    assert!(status.contains("5 audit chain head  pending"), "{status}");
    assert!(
        status.contains("6 native partitioning  pending"),
        "{status}"
    );

    serve_refuses(&config, &dir, listen, "migration 2 (indexes) failed");
    assert_eq!(recorded(&pg), "1:true");

    // Once the schema is repaired, the next run carries on from v2.
    pg.sql(
        "postgres",
        "ALTER TABLE public.time_series_data ADD COLUMN series_id integer NOT NULL",
    );
    let (stdout, _) = migrate_ok(&config, &[]).await;
    assert!(stdout.contains("5 applied by this run"), "{stdout}");
    assert_eq!(recorded(&pg), "1:true,2:true,3:true,4:true,5:true,6:true");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_timescaledb_time_series_data_is_a_compressed_space_partitioned_hypertable() {
    // Prints `skipped: TimescaleDB not installed` when it is not.
    let Some(pg) = Postgres::start_timescale() else {
        return;
    };
    let dir = WorkDir::new();
    let config = write_config(&pg, &dir, "tidegate", free_port());
    let (stdout, stderr) = migrate_ok(&config, &[]).await;
    assert!(stdout.contains("6 applied by this run"), "{stdout}");
    assert!(!stderr.contains(NO_TIMESCALE), "stderr:\n{stderr}");
    assert!(!stderr.contains(NATIVE), "stderr:\n{stderr}");
    assert!(
        stdout.contains("time_series_data: a hypertable (TimescaleDB 2."),
        "{stdout}"
    );
    assert!(
        stdout.contains("partitioned on time by 1 day, series_id in 4 hash partitions"),
        "{stdout}"
    );
    let q = |sql: &str| pg.sql("postgres", sql);
    assert_eq!(
        q(
            "SELECT hypertable_schema || '.' || hypertable_name || ':' || compression_enabled \
           FROM timescaledb_information.hypertables ORDER BY 1"
        ),
        "public.time_series_data:true\ntidegate_audit.events:false"
    );
    // v4, v5: the audit hypertable has no index (no default time index either: every index
    // costs CPU on every record); only its one-row chain head has a key.
    assert_eq!(
        q(
            "SELECT string_agg(tablename || '.' || indexname, ',' ORDER BY indexname) \
           FROM pg_indexes WHERE schemaname = 'tidegate_audit'"
        ),
        "events_head.events_head_pkey"
    );
    assert_eq!(
        q(
            "SELECT string_agg(column_name || ':' || dimension_type || ':' || \
           coalesce(time_interval::text, num_partitions::text), ',' ORDER BY dimension_number) \
           FROM timescaledb_information.dimensions \
           WHERE hypertable_schema = 'public' AND hypertable_name = 'time_series_data'"
        ),
        "time:Time:1 day,series_id:Space:4"
    );
    assert_eq!(
        q("SELECT segmentby || '|' || orderby \
           FROM timescaledb_information.hypertable_compression_settings \
           WHERE hypertable = 'public.time_series_data'::regclass"),
        // `time` is a keyword, so the view quotes it.
        "series_id|\"time\" DESC"
    );
    // Running again is a no-op, and rows go into chunks.
    let (stdout, _) = migrate_ok(&config, &[]).await;
    assert!(stdout.contains("0 applied by this run"), "{stdout}");
    q("INSERT INTO time_series_data VALUES (now(), 1, 1.5, '{\"k\": 1}')");
    assert_eq!(
        q("SELECT count(*) FROM timescaledb_information.chunks \
           WHERE hypertable_name = 'time_series_data'"),
        "1"
    );

    // A database without the extension yet (`[migrations] database`): v1 creates it, since the
    // server preloads TimescaleDB, and v3 then partitions.
    pg.sql("postgres", "CREATE DATABASE fresh");
    let text = std::fs::read_to_string(&config).expect("config");
    let fresh = dir.join("fresh.toml");
    std::fs::write(
        &fresh,
        text.replace("on_start = true", "on_start = true\ndatabase = \"fresh\""),
    )
    .expect("write config");
    let (stdout, _) = migrate_ok(&fresh, &[]).await;
    assert!(stdout.contains("6 applied by this run"), "{stdout}");
    assert_eq!(
        pg.sql(
            "fresh",
            "SELECT (SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb') || ':' || \
             (SELECT count(*) FROM timescaledb_information.hypertables)"
        ),
        "1:2"
    );
}
