//! `tidegate timescale plan | apply | status` against a real TimescaleDB (skipped, saying so,
//! where the extension is not installed): the declared lifecycle is shown as a plan, applied
//! idempotently under an advisory lock, and reported.
//!
//! The data set of the first test is scaled down for CI from 30 days × 1,000 series at one
//! minute (43.2M rows) to 30 days × 100 series at one minute (4.32M rows); the others use 30
//! days × 50 series at ten minutes (216,000 rows).

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tidegate_tests::{base_config, fresh_dir, tidegate_bin, Postgres};

/// Rows of the small data set ([`load`]).
const ROWS: i64 = 30 * 144 * 50;

/// No policy job runs by itself: the tests see the catalog as `apply` left it.
const QUIET: &[(&str, &str)] = &[("timescaledb.max_background_workers", "0")];

/// The seed's table, loaded with 30 days of data ending now: 50 series at ten minutes.
fn load(pg: &Postgres) {
    load_with(pg, 50, 10);
}

/// 30 days of `series` series every `minutes` minutes, ending now.
fn load_with(pg: &Postgres, series: u32, minutes: u32) {
    pg.sql(
        "postgres",
        &format!(
            "CREATE TABLE public.time_series_data (time timestamptz NOT NULL, series_id int NOT NULL, \
               value float8); \
             INSERT INTO public.time_series_data \
               SELECT t, s, (s * 7 + extract(epoch FROM t)::int8 % 97)::float8 \
               FROM generate_series(date_trunc('minute', now()) - interval '30 days' + interval '{minutes} minutes', \
                                    date_trunc('minute', now()), interval '{minutes} minutes') t, \
                    generate_series(1, {series}) s"
        ),
    );
}

fn declared(aggregates: &str, compress_after: &str) -> String {
    format!(
        r#"
[[timescale.hypertables]]
table = "public.time_series_data"
time_column = "time"
chunk_interval = "1d"
space = {{ column = "series_id", partitions = 4 }}
compression = {{ after = "{compress_after}", segment_by = ["series_id"], order_by = "time DESC" }}
retention = {{ drop_after = "20d" }}
[[timescale.hypertables.continuous_aggregates]]
name = "public.time_series_hourly"
bucket = "1h"
group_by = ["series_id"]
aggregates = {{ value = {aggregates} }}
refresh = {{ start_offset = "3d", end_offset = "1h", every = "30m" }}
retention = {{ drop_after = "2y" }}
"#
    )
}

fn write_config(dir: &Path, pg: &Postgres, timescale: &str) -> PathBuf {
    let path = dir.join("tidegate.toml");
    std::fs::write(&path, base_config(pg, timescale)).expect("write config");
    path
}

fn tidegate(args: &[&str], config: &Path) -> Output {
    tidegate_tests::tidegate_with(args, config)
}

fn text(out: &Output) -> String {
    tidegate_tests::output_text(out)
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exit status")
}

fn count(pg: &Postgres, sql: &str) -> i64 {
    pg.sql("postgres", sql).parse().expect(sql)
}

#[test]
fn the_declared_lifecycle_is_planned_applied_once_and_reported() {
    let Some(pg) = Postgres::start_timescale_with(QUIET) else {
        return;
    };
    // 30 days × 100 series × one minute.
    const ROWS: i64 = 30 * 1_440 * 100;
    load_with(&pg, 100, 1);
    let dir = fresh_dir().expect("dir");
    let config = write_config(&dir, &pg, &declared(r#"["avg", "min", "max"]"#, "7d"));

    // The plan names every change and why, and exits 2 (a difference).
    let plan = tidegate(&["timescale", "plan"], &config);
    let shown = text(&plan);
    assert_eq!(code(&plan), 2, "{shown}");
    for expected in [
        &format!("migrate_data moves its {ROWS} rows into chunks"),
        "SELECT create_hypertable('\"public\".\"time_series_data\"', 'time', partitioning_column => 'series_id', number_partitions => 4, chunk_time_interval => INTERVAL '1 day', migrate_data => true);",
        "timescaledb.compress_segmentby = 'series_id'",
        "add_compression_policy('\"public\".\"time_series_data\"', compress_after => INTERVAL '7 days')",
        "add_retention_policy('\"public\".\"time_series_data\"', drop_after => INTERVAL '20 days')",
        "CREATE MATERIALIZED VIEW \"public\".\"time_series_hourly\" WITH (timescaledb.continuous",
        "add_continuous_aggregate_policy('\"public\".\"time_series_hourly\"', start_offset => INTERVAL '3 days', end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '30 minutes')",
        "add_retention_policy('\"public\".\"time_series_hourly\"', drop_after => INTERVAL '2 years')",
    ] {
        assert!(shown.contains(expected), "plan lacks {expected}:\n{shown}");
    }
    // Planning changed nothing.
    assert_eq!(
        count(
            &pg,
            "SELECT count(*) FROM timescaledb_information.hypertables"
        ),
        0
    );

    let apply = tidegate(&["timescale", "apply"], &config);
    assert_eq!(code(&apply), 0, "{}", text(&apply));
    assert!(
        text(&apply).contains("7 change(s) applied"),
        "{}",
        text(&apply)
    );

    // The catalog is as declared, and no row was lost moving into chunks.
    assert_eq!(
        count(&pg, "SELECT count(*) FROM public.time_series_data"),
        ROWS
    );
    assert_eq!(
        pg.sql(
            "postgres",
            "SELECT string_agg(column_name || ':' || coalesce(time_interval::text, num_partitions::text), ',' ORDER BY dimension_number) \
             FROM timescaledb_information.dimensions WHERE hypertable_name = 'time_series_data'"
        ),
        "time:1 day,series_id:4"
    );
    assert_eq!(
        pg.sql(
            "postgres",
            "SELECT string_agg(proc_name || '@' || hypertable_name, ',' ORDER BY proc_name, hypertable_name) \
             FROM timescaledb_information.jobs WHERE job_id >= 1000"
        ),
        "policy_compression@time_series_data,policy_refresh_continuous_aggregate@time_series_hourly,\
         policy_retention@time_series_data,policy_retention@time_series_hourly"
    );

    // A second plan is empty and exits 0; a second apply changes nothing.
    let again = tidegate(&["timescale", "plan"], &config);
    assert_eq!(code(&again), 0, "{}", text(&again));
    assert!(text(&again).contains("in sync, nothing to change"));
    let again = tidegate(&["timescale", "apply"], &config);
    assert!(
        text(&again).contains("0 change(s) applied"),
        "{}",
        text(&again)
    );

    // Compress what the policy would, materialize the aggregate, then read the status.
    pg.sql(
        "postgres",
        "SELECT count(compress_chunk(c)) FROM show_chunks('time_series_data', older_than => interval '7 days') c",
    );
    pg.sql(
        "postgres",
        "CALL refresh_continuous_aggregate('time_series_hourly', NULL, now() - interval '1 hour')",
    );
    let status = tidegate(&["timescale", "status", "--json"], &config);
    assert_eq!(code(&status), 0, "{}", text(&status));
    let s: Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    let h = &s["hypertables"][0];
    assert_eq!(h["name"], "\"public\".\"time_series_data\"");
    let chunks = count(&pg, "SELECT count(*) FROM show_chunks('time_series_data')");
    assert_eq!(h["chunks"].as_i64(), Some(chunks));
    assert!(h["compressed_chunks"].as_i64().unwrap_or(0) > 0, "{h}");
    let direct: f64 = pg
        .sql(
            "postgres",
            "SELECT sum(before_compression_total_bytes)::float8 / sum(after_compression_total_bytes) \
             FROM hypertable_compression_stats('time_series_data')",
        )
        .parse()
        .expect("ratio");
    let ratio = h["compression_ratio"].as_f64().expect("ratio");
    assert!((ratio - direct).abs() < 1e-9, "{ratio} vs {direct}");
    assert!(ratio > 1.0, "{ratio}");
    let c = &s["continuous_aggregates"][0];
    assert_eq!(c["name"], "\"public\".\"time_series_hourly\"");
    assert!(c["watermark"].is_string(), "{c}");
    assert!(
        c["lag_seconds"]
            .as_f64()
            .is_some_and(|l| (0.0..7200.0).contains(&l)),
        "{c}"
    );
    assert_eq!(s["jobs"].as_array().map(Vec::len), Some(4));
    let human = tidegate(&["timescale", "status"], &config);
    assert!(text(&human).contains("ratio"), "{}", text(&human));

    // A changed aggregate definition is never applied silently.
    let changed = write_config(
        &dir,
        &pg,
        &declared(r#"["avg", "min", "max", "sum"]"#, "5d"),
    );
    let plan = tidegate(&["timescale", "plan"], &changed);
    assert_eq!(code(&plan), 2);
    let rows = count(&pg, "SELECT count(*) FROM time_series_hourly");
    assert!(
        text(&plan).contains(&format!("drop and recreate, {rows} rows to re-materialize")),
        "{}",
        text(&plan)
    );
    assert!(
        text(&plan).contains("remove_compression_policy"),
        "{}",
        text(&plan)
    );
    let refused = tidegate(&["timescale", "apply"], &changed);
    assert_eq!(code(&refused), 1);
    assert!(
        text(&refused).contains("--allow-recreate"),
        "{}",
        text(&refused)
    );
    assert_eq!(
        count(
            &pg,
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'time_series_hourly' AND column_name = 'value_sum'"
        ),
        0,
        "nothing changed without --allow-recreate"
    );
    let apply = tidegate(&["timescale", "apply", "--allow-recreate"], &changed);
    assert_eq!(code(&apply), 0, "{}", text(&apply));
    let plan = tidegate(&["timescale", "plan"], &changed);
    assert_eq!(code(&plan), 0, "{}", text(&plan));
    assert_eq!(
        pg.sql(
            "postgres",
            "SELECT config->>'compress_after' FROM timescaledb_information.jobs WHERE proc_name = 'policy_compression'"
        ),
        "5 days"
    );
}

#[test]
fn two_applies_at_once_make_the_declared_state_once() {
    let Some(pg) = Postgres::start_timescale_with(QUIET) else {
        return;
    };
    load(&pg);
    let dir = fresh_dir().expect("dir");
    let config = write_config(&dir, &pg, &declared(r#"["avg"]"#, "7d"));
    let spawn = || {
        Command::new(tidegate_bin())
            .args(["timescale", "apply", "--config"])
            .arg(&config)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn")
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (
        a.wait_with_output().expect("a"),
        b.wait_with_output().expect("b"),
    );
    assert_eq!(code(&a), 0, "{}", text(&a));
    assert_eq!(code(&b), 0, "{}", text(&b));
    // One made every change; the other waited for it and found nothing left to do.
    let applied: Vec<bool> = [&a, &b]
        .iter()
        .map(|o| text(o).contains(" 0 change(s) applied"))
        .collect();
    assert!(
        applied == [true, false] || applied == [false, true],
        "{}\n{}",
        text(&a),
        text(&b)
    );
    assert_eq!(
        count(
            &pg,
            "SELECT count(*) FROM timescaledb_information.jobs WHERE job_id >= 1000"
        ),
        4
    );
    assert_eq!(
        count(
            &pg,
            "SELECT count(*) FROM timescaledb_information.continuous_aggregates"
        ),
        1
    );
    assert_eq!(code(&tidegate(&["timescale", "plan"], &config)), 0);
}

#[test]
fn a_declaration_naming_what_does_not_exist_is_refused_before_any_change() {
    let Some(pg) = Postgres::start_timescale() else {
        return;
    };
    pg.sql(
        "postgres",
        "CREATE TABLE readings (ts timestamptz NOT NULL, v float8)",
    );
    let dir = fresh_dir().expect("dir");
    let config = write_config(
        &dir,
        &pg,
        r#"
[[timescale.hypertables]]
table = "readings"
time_column = "ts"
compression = { after = "7d", segment_by = ["device"] }
[[timescale.hypertables]]
table = "public.missing"
time_column = "time"
"#,
    );
    let plan = tidegate(&["timescale", "plan"], &config);
    assert_eq!(code(&plan), 1, "{}", text(&plan));
    assert!(
        text(&plan).contains("\"public\".\"readings\" has no column \"device\""),
        "{}",
        text(&plan)
    );
    assert!(
        text(&plan).contains("\"public\".\"missing\" does not exist"),
        "{}",
        text(&plan)
    );
    let apply = tidegate(&["timescale", "apply"], &config);
    assert_eq!(code(&apply), 1);
    assert!(
        text(&apply).contains("cannot be applied"),
        "{}",
        text(&apply)
    );
    assert_eq!(
        count(
            &pg,
            "SELECT count(*) FROM timescaledb_information.hypertables"
        ),
        0,
        "nothing was applied"
    );
}

/// Without the extension (this runs on every machine): v6 partitioned `time_series_data`
/// natively; `plan` and `apply` keep its daily partitions a week ahead — a missing one is
/// created and the rows of its range move out of the default partition — and say what only
/// TimescaleDB does; `status` and the TimescaleDB-only commands say it is not installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_timescaledb_native_partitions_are_kept_ahead() {
    let pg = Postgres::start();
    tidegate_tests::migrate(&pg).await;
    let dir = fresh_dir().expect("dir");
    let config = write_config(&dir, &pg, &declared(r#"["avg"]"#, "7d"));
    let plan = tidegate(&["timescale", "plan"], &config);
    assert_eq!(code(&plan), 0, "{}", text(&plan));
    assert!(
        text(&plan).contains(
            "TimescaleDB is not installed: space partitions, compression, a retention policy \
             (`tidegate cleanup` applies retention), continuous aggregates not applied"
        ),
        "{}",
        text(&plan)
    );
    for cmd in [
        &["timescale", "status"][..],
        &["compress"],
        &["chunks", "time_series_data"],
    ] {
        let out = tidegate(cmd, &config);
        assert_eq!(code(&out), 1, "{cmd:?}: {}", text(&out));
        assert!(
            text(&out).contains("TimescaleDB is not installed in database \"postgres\""),
            "{cmd:?}: {}",
            text(&out)
        );
    }

    // Tomorrow's partition gone, a row for tomorrow lands in the default partition.
    let tomorrow = pg.sql(
        "postgres",
        "SELECT to_char((now() AT TIME ZONE 'UTC')::date + 1, 'YYYYMMDD')",
    );
    let part = format!("time_series_data_p{tomorrow}_000000");
    pg.sql(
        "postgres",
        &format!(
            "DROP TABLE {part}; \
             INSERT INTO time_series_data VALUES ((now() AT TIME ZONE 'UTC')::date + 1 + interval '1 hour', 1, 1, NULL), \
                                                 ('2001-01-01', 1, 1, NULL)"
        ),
    );
    let where_rows =
        "SELECT string_agg(tableoid::regclass::text, ',' ORDER BY time) FROM time_series_data";
    assert_eq!(
        pg.sql("postgres", where_rows),
        "time_series_data_default,time_series_data_default"
    );
    let plan = tidegate(&["timescale", "plan"], &config);
    assert_eq!(code(&plan), 2, "{}", text(&plan));
    assert!(
        text(&plan).contains(&format!("ATTACH PARTITION \"public\".\"{part}\"")),
        "{}",
        text(&plan)
    );
    let apply = tidegate(&["timescale", "apply"], &config);
    assert_eq!(code(&apply), 0, "{}", text(&apply));
    assert!(
        text(&apply).contains("1 change(s) applied"),
        "{}",
        text(&apply)
    );
    assert_eq!(
        pg.sql("postgres", where_rows),
        format!("time_series_data_default,{part}")
    );
    assert_eq!(code(&tidegate(&["timescale", "plan"], &config)), 0);
}

fn json(out: &Output) -> Value {
    assert_eq!(code(out), 0, "{}", text(out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)))
}

/// A checksum of every row, in a stable order.
const CHECKSUM: &str = "SELECT md5(string_agg(time::text || ':' || series_id || ':' || value, ',' \
                        ORDER BY time, series_id)) FROM public.time_series_data";

#[test]
fn retention_compression_aggregates_chunks_and_jobs_as_commands() {
    let Some(pg) = Postgres::start_timescale_with(QUIET) else {
        return;
    };
    load(&pg);
    let dir = fresh_dir().expect("dir");
    let config = write_config(&dir, &pg, &declared(r#"["avg"]"#, "7d"));
    assert_eq!(code(&tidegate(&["timescale", "apply"], &config)), 0);

    // Retention: the dry run reports exactly the chunks and rows the real run removes.
    let before = count(&pg, "SELECT count(*) FROM public.time_series_data");
    let table = "public.time_series_data";
    let dry = json(&tidegate(
        &["retention", "apply", table, "--dry-run", "--json"],
        &config,
    ));
    let real = json(&tidegate(&["retention", "apply", table, "--json"], &config));
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["tables"][0]["chunks"], real["tables"][0]["chunks"]);
    assert_eq!(dry["tables"][0]["rows"], real["tables"][0]["rows"]);
    let removed = real["tables"][0]["rows"].as_i64().expect("rows");
    assert!(removed > 0, "{real}");
    assert_eq!(
        before - count(&pg, "SELECT count(*) FROM public.time_series_data"),
        removed
    );
    assert_eq!(
        count(
            &pg,
            "SELECT count(*) FROM public.time_series_data WHERE time < now() - interval '21 days'"
        ),
        0
    );
    let chunks = real["tables"][0]["chunks"]
        .as_array()
        .expect("chunks")
        .len() as i64;
    assert!(chunks >= 9, "{real}");

    // Compression leaves every row as it was and reports the ratio TimescaleDB measures.
    let sum = pg.sql("postgres", CHECKSUM);
    let dry = json(&tidegate(&["compress", "--dry-run", "--json"], &config));
    let done = json(&tidegate(&["compress", "--json"], &config));
    assert_eq!(dry["tables"][0]["chunks"], done["tables"][0]["chunks"]);
    let n = done["tables"][0]["chunks"].as_array().map_or(0, Vec::len) as i64;
    assert!(n >= 12, "{done}");
    assert_eq!(
        count(
            &pg,
            "SELECT count(*) FROM timescaledb_information.chunks WHERE is_compressed"
        ),
        n
    );
    let ratio = done["tables"][0]["ratio"].as_f64().expect("ratio");
    let direct: f64 = pg
        .sql(
            "postgres",
            "SELECT sum(before_compression_total_bytes)::float8 / sum(after_compression_total_bytes) \
             FROM chunk_compression_stats('time_series_data') WHERE compression_status = 'Compressed'",
        )
        .parse()
        .expect("ratio");
    assert!(
        (ratio - direct).abs() < 1e-9 && ratio > 1.0,
        "{ratio} vs {direct}"
    );
    assert_eq!(
        pg.sql("postgres", CHECKSUM),
        sum,
        "compression changed no row"
    );
    // A second run finds nothing left to compress.
    let again = json(&tidegate(&["compress", "--json"], &config));
    assert_eq!(
        again["tables"][0]["chunks"].as_array().map(Vec::len),
        Some(0)
    );
    let out = tidegate(
        &[
            "decompress",
            table,
            "--from",
            &pg.sql("postgres", "SELECT (now() - interval '12 days')::text"),
            "--to",
            &pg.sql("postgres", "SELECT (now() - interval '10 days')::text"),
        ],
        &config,
    );
    assert!(text(&out).contains("decompressed"), "{}", text(&out));
    assert!(
        count(
            &pg,
            "SELECT count(*) FROM timescaledb_information.chunks WHERE is_compressed"
        ) < n
    );
    assert_eq!(pg.sql("postgres", CHECKSUM), sum);

    // Chunks as TimescaleDB lists them.
    let listed = json(&tidegate(&["chunks", table, "--json"], &config));
    assert_eq!(
        listed.as_array().map(Vec::len) as Option<usize>,
        Some(count(&pg, "SELECT count(*) FROM show_chunks('time_series_data')") as usize)
    );

    // Aggregates: refresh sets the watermark; drop, then create from the declaration.
    let view = "public.time_series_hourly";
    let out = tidegate(&["caggs", "refresh", view], &config);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let list = json(&tidegate(&["caggs", "list", "--json"], &config));
    assert!(list[0]["watermark"].is_string(), "{list}");
    assert_eq!(
        count(&pg, "SELECT count(*) FROM time_series_hourly"),
        count(
            &pg,
            "SELECT count(DISTINCT (time_bucket('1 hour', time), series_id)) FROM time_series_data"
        )
    );
    let out = tidegate(&["caggs", "drop", view], &config);
    assert!(
        text(&out).contains("the next `timescale apply` creates it again"),
        "{}",
        text(&out)
    );
    assert_eq!(code(&tidegate(&["timescale", "plan"], &config)), 2);
    let out = tidegate(&["caggs", "create", view], &config);
    assert!(text(&out).contains("3 change(s) applied"), "{}", text(&out));
    assert_eq!(code(&tidegate(&["timescale", "plan"], &config)), 0);

    // Jobs: listed, run by hand, errors listed.
    let jobs = json(&tidegate(&["jobs", "--json"], &config));
    let jobs = jobs.as_array().expect("jobs");
    assert_eq!(jobs.len(), 4, "{jobs:?}");
    let compression = jobs
        .iter()
        .find(|j| j["proc"] == "policy_compression")
        .and_then(|j| j["id"].as_i64())
        .expect("compression job");
    let id = compression.to_string();
    let out = tidegate(&["jobs", "run", &id], &config);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let failed = json(&tidegate(&["jobs", "--failed", "--json"], &config));
    assert_eq!(failed.as_array().map(Vec::len), Some(0), "{failed}");
}

/// `cleanup` on a plain table (no TimescaleDB needed): the rows one `DELETE … WHERE time < X`
/// removes, in batches no larger than configured, and a run killed half way is finished by
/// the next without losing a row that should stay.
#[test]
fn cleanup_of_a_plain_table_deletes_in_batches_and_survives_a_kill() {
    let pg = Postgres::start();
    pg.sql(
        "postgres",
        "CREATE TABLE readings (ts timestamptz NOT NULL, sensor int, v float8); \
         INSERT INTO readings SELECT now() - interval '5 minutes' - k * interval '10 minutes', s, k \
           FROM generate_series(0, 30 * 144 - 1) k, generate_series(1, 10) s; \
         CREATE TABLE expected AS SELECT * FROM readings; \
         DELETE FROM expected WHERE ts < now() - interval '20 days'; \
         CREATE TABLE batches (n int8); \
         CREATE FUNCTION log_batch() RETURNS trigger LANGUAGE plpgsql AS $$ \
           BEGIN INSERT INTO batches SELECT count(*) FROM gone; PERFORM pg_sleep(0.01); RETURN NULL; END $$; \
         CREATE TRIGGER log_batch AFTER DELETE ON readings REFERENCING OLD TABLE AS gone \
           FOR EACH STATEMENT EXECUTE FUNCTION log_batch()",
    );
    let dir = fresh_dir().expect("dir");
    let config = write_config(
        &dir,
        &pg,
        r#"
[timescale]
cleanup_batch_rows = 100
[[timescale.hypertables]]
table = "readings"
time_column = "ts"
retention = { drop_after = "20d" }
"#,
    );
    let to_remove =
        count(&pg, "SELECT count(*) FROM readings") - count(&pg, "SELECT count(*) FROM expected");
    assert_eq!(to_remove, 10 * 144 * 10);
    let dry = json(&tidegate(&["cleanup", "--dry-run", "--json"], &config));
    assert_eq!(dry["tables"][0]["rows"].as_i64(), Some(to_remove));
    assert_eq!(dry["tables"][0]["method"], "batched delete");
    assert_eq!(
        count(&pg, "SELECT count(*) FROM batches"),
        0,
        "a dry run deletes nothing"
    );

    // Killed after a few batches: those stay committed.
    let mut child = Command::new(tidegate_bin())
        .args(["cleanup", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let start = std::time::Instant::now();
    while count(&pg, "SELECT count(*) FROM batches") < 5 {
        assert!(start.elapsed().as_secs() < 60, "cleanup made no progress");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().expect("kill");
    child.wait().expect("wait");
    let left =
        count(&pg, "SELECT count(*) FROM readings") - count(&pg, "SELECT count(*) FROM expected");
    assert!(
        left > 0 && left < to_remove,
        "killed half way: {left} of {to_remove} left"
    );

    let rerun = json(&tidegate(&["cleanup", "--json"], &config));
    assert_eq!(rerun["tables"][0]["rows"].as_i64(), Some(left));
    // Exactly the rows of one DELETE … WHERE ts < now() - 20 days are gone.
    assert_eq!(
        count(
            &pg,
            "SELECT count(*) FROM ((SELECT * FROM readings EXCEPT ALL SELECT * FROM expected) \
                    UNION ALL (SELECT * FROM expected EXCEPT ALL SELECT * FROM readings)) d"
        ),
        0
    );
    assert_eq!(count(&pg, "SELECT max(n) FROM batches WHERE n > 0"), 100);
    assert_eq!(count(&pg, "SELECT sum(n) FROM batches"), to_remove);
}

/// The rows of a simple query through the broker, as text.
async fn broker_value(c: &tokio_postgres::Client, sql: &str) -> String {
    c.simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .unwrap_or_default()
}

async fn cache_hits(c: &tokio_postgres::Client) -> u64 {
    c.simple_query("SHOW tidegate.cache")
        .await
        .expect("SHOW tidegate.cache")
        .into_iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("hits") => {
                r.get(1).and_then(|v| v.parse().ok())
            }
            _ => None,
        })
        .expect("hits counter")
}

/// After a refresh — run by `tidegate caggs refresh` or by TimescaleDB's own job (seen in
/// `job_stats`) — a cached read of the aggregate returns the new value, long before any TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refreshed_aggregate_is_never_served_stale_from_the_cache() {
    // The scheduler runs: its job runs are what the broker must notice.
    let Some(pg) = Postgres::start_timescale() else {
        return;
    };
    pg.sql(
        "postgres",
        "CREATE TABLE metrics (time timestamptz NOT NULL, host int NOT NULL, v float8); \
         INSERT INTO metrics SELECT t, 1, 1 FROM generate_series(now() - interval '2 days', \
           now() - interval '1 day', interval '1 minute') t",
    );
    let extra = r#"
[cache]
enabled = true
ttl = "10m"
short_ttl = "10m"
long_ttl = "10m"
allow_views = ["metrics_hourly"]
[timescale]
watch_interval = "200ms"
[[timescale.hypertables]]
table = "metrics"
time_column = "time"
chunk_interval = "1d"
[[timescale.hypertables.continuous_aggregates]]
name = "metrics_hourly"
bucket = "1h"
group_by = ["host"]
aggregates = { v = ["sum"] }
refresh = { start_offset = "7d", end_offset = "1h", every = "1h" }
"#;
    let dir = fresh_dir().expect("dir");
    let config = write_config(&dir, &pg, extra);
    assert_eq!(code(&tidegate(&["timescale", "apply"], &config)), 0);
    assert_eq!(
        code(&tidegate(&["caggs", "refresh", "metrics_hourly"], &config)),
        0
    );
    // The policy's first run (right after apply) is over before anything is cached; the next
    // is an hour away.
    let job = pg.sql(
        "postgres",
        "SELECT job_id FROM timescaledb_information.jobs WHERE proc_name = 'policy_refresh_continuous_aggregate'",
    );
    let runs =
        format!("SELECT total_runs FROM timescaledb_information.job_stats WHERE job_id = {job}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while pg.sql("postgres", &runs).parse::<i64>().unwrap_or(0) < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the refresh policy never ran"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    let broker = tidegate_tests::Broker::start(&pg, extra).await;
    let c = broker.connect("postgres").await;
    let q = "SELECT sum(v_sum)::int8 FROM metrics_hourly";
    let direct = |pg: &Postgres| pg.sql("postgres", q);
    let first = broker_value(&c, q).await;
    assert_eq!(first, direct(&pg));
    let hits = cache_hits(&c).await;
    assert_eq!(broker_value(&c, q).await, first);
    assert_eq!(cache_hits(&c).await, hits + 1, "the second read is a hit");

    // Raw rows written outside TideGate into materialized buckets: invisible until a refresh.
    let add =
        "INSERT INTO metrics SELECT t, 1, 100 FROM generate_series(now() - interval '36 hours', \
               now() - interval '35 hours', interval '1 minute') t";
    pg.sql("postgres", add);
    assert_eq!(direct(&pg), first);
    assert_eq!(
        code(&tidegate(&["caggs", "refresh", "metrics_hourly"], &config)),
        0
    );
    let refreshed = direct(&pg);
    assert_ne!(refreshed, first);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while broker_value(&c, q).await != refreshed {
        assert!(
            std::time::Instant::now() < deadline,
            "the refresh by tidegate never reached the cache"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // Cached again: the next reads are hits, also after raw rows arrive below the watermark.
    let hits = cache_hits(&c).await;
    assert_eq!(broker_value(&c, q).await, refreshed);
    pg.sql("postgres", add);
    assert_eq!(broker_value(&c, q).await, refreshed);
    assert_eq!(cache_hits(&c).await, hits + 2, "served from the cache");

    // The same through TimescaleDB's own refresh job, which the scheduler runs now. (With
    // TimescaleDB 2.28.3 on PostgreSQL 15.20 every scheduled job ends with "cannot drop portal
    // while it is being set up" after committing its work: the run counts as failed, the
    // aggregate is refreshed all the same. The broker counts any finished run.)
    let ended = format!(
        "SELECT coalesce(total_successes, 0) + coalesce(total_failures, 0) \
         FROM timescaledb_information.job_stats WHERE job_id = {job}"
    );
    let before: i64 = pg.sql("postgres", &ended).parse().expect("runs");
    pg.sql(
        "postgres",
        &format!("SELECT alter_job({job}, next_start => now())"),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while pg.sql("postgres", &ended).parse::<i64>().unwrap_or(0) <= before {
        assert!(
            std::time::Instant::now() < deadline,
            "the scheduler never ran the job"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let by_job = direct(&pg);
    assert_ne!(by_job, refreshed);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while broker_value(&c, q).await != by_job {
        assert!(
            std::time::Instant::now() < deadline,
            "the job's refresh never reached the cache"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    broker.shutdown().await;
}

/// The same plan, apply and status as JSON under the admin HTTP API, for `http.admin_users`
/// only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_http_api_plans_applies_and_reports() {
    use tidegate_tests::{send_json, Api, ApiAuth};
    let Some(pg) = Postgres::start_timescale_with(QUIET) else {
        return;
    };
    load(&pg);
    let extra = format!(
        "[http]\nadmin_users = [\"app\"]\n{}\n[[users]]\nname = \"other\"\npassword = \"other\"\n",
        declared(r#"["avg"]"#, "7d")
    );
    let (broker, addr) = tidegate_tests::Broker::start_http(&pg, &extra).await;
    let admin = Api::app(addr);
    let other = Api::new(addr, ApiAuth::Basic("other".into(), "other".into()));
    for path in ["/admin/timescale/plan", "/admin/timescale/status"] {
        let (s, v) = send_json(other.get(path)).await;
        assert_eq!(s, 403, "{path}: {v}");
    }
    let (s, _) = send_json(other.post("/admin/timescale/apply")).await;
    assert_eq!(s, 403);
    assert_eq!(
        count(
            &pg,
            "SELECT count(*) FROM timescaledb_information.hypertables"
        ),
        0
    );

    let (s, plan) = send_json(admin.get("/admin/timescale/plan")).await;
    assert_eq!(s, 200, "{plan}");
    assert_eq!(plan["changes"].as_array().map(Vec::len), Some(7), "{plan}");
    assert!(plan["changes"][0]["why"]
        .as_str()
        .is_some_and(|w| w.contains(&format!("moves its {ROWS} rows"))));
    let (s, applied) = send_json(admin.post("/admin/timescale/apply")).await;
    assert_eq!(s, 200, "{applied}");
    assert_eq!(applied["changes"].as_array().map(Vec::len), Some(7));
    let (_, plan) = send_json(admin.get("/admin/timescale/plan")).await;
    assert_eq!(plan["changes"].as_array().map(Vec::len), Some(0), "{plan}");
    let (s, status) = send_json(admin.get("/admin/timescale/status")).await;
    assert_eq!(s, 200, "{status}");
    assert_eq!(
        status["hypertables"][0]["name"],
        "\"public\".\"time_series_data\""
    );
    assert_eq!(status["jobs"].as_array().map(Vec::len), Some(4));
    broker.shutdown().await;
}
