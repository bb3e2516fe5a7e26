//! `tidegate backup` / `tidegate restore` on a real TimescaleDB (skipped, saying so, where it
//! is not installed; reliability scenario 28): a hypertable with compressed chunks, a
//! compression and a retention policy, a continuous aggregate with its refresh policy and a
//! plain table go through `pg_dump` and `pg_restore` into a new database with every count
//! equal; a TimescaleDB version mismatch and a corrupted file are refused before anything is
//! restored; `backup --verify` restores into a scratch database and drops it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tidegate_tests::{base_config, fresh_dir, Postgres};

fn tidegate(args: &[&str], config: &Path) -> Output {
    tidegate_tests::tidegate_with(args, config)
}

fn text(out: &Output) -> String {
    tidegate_tests::output_text(out)
}

fn copy(from: &Path, to: &Path) {
    let ok = Command::new("cp")
        .arg("-r")
        .arg(from)
        .arg(to)
        .status()
        .expect("cp");
    assert!(ok.success());
}

/// The state a restore must reproduce, read in `db`.
fn state(pg: &Postgres, db: &str) -> String {
    [
        "SELECT count(*) FROM m",
        "SELECT count(*) FROM plain",
        "SELECT count(*) FROM show_chunks('m')",
        "SELECT count(*) FROM timescaledb_information.chunks WHERE is_compressed",
        "SELECT count(*) FROM m_hourly",
        "SELECT string_agg(proc_name || ':' || hypertable_name, ',' ORDER BY proc_name, hypertable_name) \
         FROM timescaledb_information.jobs WHERE hypertable_name IS NOT NULL",
        "SELECT sum(v)::text FROM m",
    ]
    .iter()
    .map(|q| pg.sql(db, q))
    .collect::<Vec<_>>()
    .join(" | ")
}

#[test]
fn a_backup_restores_with_every_count_equal_and_refuses_what_does_not_match() {
    let Some(pg) = Postgres::start_timescale_with(&[("timescaledb.max_background_workers", "0")])
    else {
        return;
    };
    pg.sql(
        "postgres",
        "CREATE TABLE m (time timestamptz NOT NULL, host int, v float8); \
         SELECT create_hypertable('m', by_range('time', INTERVAL '1 day')); \
         INSERT INTO m SELECT t, h, h * 1.5 FROM generate_series(now() - interval '10 days', now(), \
           interval '5 minutes') t, generate_series(1, 5) h; \
         ALTER TABLE m SET (timescaledb.compress, timescaledb.compress_segmentby = 'host'); \
         SELECT add_compression_policy('m', INTERVAL '3 days'); \
         SELECT add_retention_policy('m', INTERVAL '30 days'); \
         CREATE TABLE plain (id int); INSERT INTO plain SELECT generate_series(1, 100)",
    );
    pg.sql(
        "postgres",
        "SELECT count(compress_chunk(c)) FROM show_chunks('m', older_than => interval '3 days') c",
    );
    pg.sql(
        "postgres",
        "CREATE MATERIALIZED VIEW m_hourly WITH (timescaledb.continuous) AS \
         SELECT time_bucket('1 hour', time) AS bucket, host, avg(v) FROM m GROUP BY 1, 2 WITH NO DATA",
    );
    pg.sql(
        "postgres",
        "CALL refresh_continuous_aggregate('m_hourly', NULL, NULL)",
    );
    pg.sql(
        "postgres",
        "SELECT add_continuous_aggregate_policy('m_hourly', INTERVAL '3 days', INTERVAL '1 hour', INTERVAL '1 hour')",
    );
    let original = state(&pg, "postgres");
    let dir = fresh_dir().expect("dir");
    let config = dir.join("tidegate.toml");
    std::fs::write(&config, base_config(&pg, "")).expect("config");
    let backup: PathBuf = dir.join("backup");

    let out = tidegate(
        &["backup", "--out", backup.to_str().expect("path")],
        &config,
    );
    assert!(out.status.success(), "{}", text(&out));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(backup.join("manifest.json")).expect("manifest"))
            .expect("json");
    assert_eq!(manifest["rows"]["public.plain"], 100, "{manifest}");
    assert!(manifest["chunks"]["public.m"]
        .as_i64()
        .is_some_and(|n| n >= 10));
    assert_eq!(manifest["continuous_aggregates"][0], "public.m_hourly");
    assert!(manifest["files"].as_object().is_some_and(|f| !f.is_empty()));

    let out = tidegate(
        &[
            "restore",
            backup.to_str().expect("path"),
            "--database",
            "restored",
        ],
        &config,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("every count equal"), "{}", text(&out));
    assert_eq!(state(&pg, "restored"), original);

    // A backup from another TimescaleDB version is refused before a database is made.
    let other = dir.join("other-version");
    copy(&backup, &other);
    let m = std::fs::read_to_string(other.join("manifest.json")).expect("manifest");
    let version = manifest["timescaledb"].as_str().expect("version");
    std::fs::write(
        other.join("manifest.json"),
        m.replace(&format!("\"{version}\""), "\"2.0.0\""),
    )
    .expect("write");
    let out = tidegate(
        &["restore", other.to_str().expect("path"), "--database", "r2"],
        &config,
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("taken with TimescaleDB 2.0.0"),
        "{}",
        text(&out)
    );
    assert_eq!(
        pg.sql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'r2'"
        ),
        "0"
    );

    // A corrupted file is caught by its checksum before anything is restored.
    let corrupt = dir.join("corrupt");
    copy(&backup, &corrupt);
    let toc = corrupt.join("dump").join("toc.dat");
    let mut bytes = std::fs::read(&toc).expect("toc");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&toc, bytes).expect("write");
    let out = tidegate(
        &[
            "restore",
            corrupt.to_str().expect("path"),
            "--database",
            "r3",
        ],
        &config,
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("dump/toc.dat does not match its checksum"),
        "{}",
        text(&out)
    );
    assert_eq!(
        pg.sql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'r3'"
        ),
        "0"
    );

    // --verify restores into a scratch database, compares, and drops it.
    let out = tidegate(
        &["backup", "--verify", backup.to_str().expect("path")],
        &config,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("every count equal"), "{}", text(&out));
    assert_eq!(
        pg.sql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'tidegate_verify%'"
        ),
        "0"
    );
}
