//! TideGate in front of TimescaleDB (skipped, saying so, where the extension is not
//! installed): the optimizer plugin rejects an unbounded read of a hypertable with 54000 and a
//! hint through the PostgreSQL wire protocol while bounded reads run, and the audit table is a
//! hypertable.

use std::time::Duration;
use tidegate_tests::{plugin_dir_with, sqlstate, wait_for, Broker, Postgres};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unbounded_hypertable_read_is_rejected_with_a_hint() {
    let Some(pg) = Postgres::start_timescale() else {
        return;
    };
    pg.sql(
        "postgres",
        "CREATE TABLE metrics (time timestamptz NOT NULL, host text, cpu float8); \
         SELECT create_hypertable('metrics', 'time'); \
         INSERT INTO metrics SELECT t, 'h1', 0.5 FROM generate_series(now() - interval '2 hours', now(), interval '1 minute') t",
    );
    let dir = plugin_dir_with(&["optimizer.wasm", "audit.wasm"]);
    let broker = Broker::start(
        &pg,
        &format!(
            r#"
[plugins]
dir = "{dir}"
call_timeout = "200ms"
[[plugins.keys]]
name = "audit"
id = 1
secret = "YXVkaXQtY2hhaW4ta2V5LWZvci10ZXN0cy0zMmJ5dGU="
[[plugins.chain]]
name = "optimizer"
file = "optimizer.wasm"
kind = "optimizer"
[plugins.chain.config]
hypertables = ["metrics"]
unbounded = "reject"
[[plugins.chain]]
name = "audit"
file = "audit.wasm"
kind = "audit"
[audit]
key = "audit"
"#,
            dir = dir.display()
        ),
    )
    .await;
    let c = broker.connect("postgres").await;
    let err = c
        .simple_query("SELECT avg(cpu) FROM metrics")
        .await
        .expect_err("unbounded");
    assert_eq!(sqlstate(&err).as_deref(), Some("54000"));
    let db = err.as_db_error().expect("db error");
    assert!(
        db.message().contains("unbounded scan of hypertable"),
        "{}",
        db.message()
    );
    assert!(
        db.hint().is_some_and(|h| h.contains("time >")),
        "{:?}",
        db.hint()
    );
    let err = c
        .query("SELECT * FROM metrics WHERE host = $1", &[&"h1"])
        .await
        .expect_err("unbounded, extended protocol");
    assert_eq!(sqlstate(&err).as_deref(), Some("54000"));
    let rows = c
        .query(
            "SELECT count(*) FROM metrics WHERE time > now() - interval '1 hour'",
            &[],
        )
        .await
        .expect("bounded read runs");
    assert!(rows[0].get::<_, i64>(0) >= 59);

    // The audit table became a hypertable, and records the rejections.
    let sink = broker.shared.audit.get().expect("audit writer");
    assert!(
        wait_for(Duration::from_secs(10), || sink
            .written
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 3)
        .await
    );
    assert_eq!(
        pg.sql(
            "postgres",
            "SELECT count(*) FROM timescaledb_information.hypertables WHERE hypertable_name = 'events'"
        ),
        "1"
    );
    assert_eq!(
        pg.sql(
            "postgres",
            "SELECT count(*) FROM tidegate_audit.events WHERE decision = 'deny' AND decided_by = 'optimizer' AND sqlstate = '54000'"
        ),
        "2"
    );
    broker.shutdown().await;
}

/// The broker reads the continuous aggregates from TimescaleDB's catalog and hands them to the
/// optimizer, which rewrites a matching `time_bucket` aggregate over the raw hypertable to read
/// the aggregate — at start, and for an aggregate created later (`plugins.cagg_refresh`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucket_aggregates_are_rewritten_to_discovered_continuous_aggregates() {
    let Some(pg) = Postgres::start_timescale() else {
        return;
    };
    pg.sql(
        "postgres",
        "CREATE TABLE metrics (time timestamptz NOT NULL, host text, cpu float8); \
         SELECT create_hypertable('metrics', 'time'); \
         INSERT INTO metrics SELECT t, 'h1', 1 FROM generate_series('2024-01-01 00:00+00'::timestamptz, '2024-01-01 05:59+00', interval '1 minute') t",
    );
    let cagg = |name: &str, func: &str| {
        pg.sql(
            "postgres",
            &format!(
                "CREATE MATERIALIZED VIEW {name} WITH (timescaledb.continuous, timescaledb.materialized_only = true) AS \
                 SELECT time_bucket('1 hour', time) AS bucket, host, {func}(cpu) AS v \
                 FROM metrics GROUP BY bucket, host WITH DATA"
            ),
        );
    };
    cagg("metrics_hourly_avg", "avg");
    // Rows the aggregates have not materialised: the raw table and the aggregate now differ.
    pg.sql(
        "postgres",
        "INSERT INTO metrics SELECT t, 'h1', 100 FROM generate_series('2024-01-01 00:00:30+00'::timestamptz, '2024-01-01 05:59:30+00', interval '1 minute') t",
    );
    let dir = plugin_dir_with(&["optimizer.wasm"]);
    let broker = Broker::start(
        &pg,
        &format!(
            r#"
[plugins]
dir = "{dir}"
call_timeout = "200ms"
cagg_refresh = "300ms"
[[plugins.chain]]
name = "optimizer"
file = "optimizer.wasm"
kind = "optimizer"
[plugins.chain.config]
hypertables = ["metrics"]
"#,
            dir = dir.display()
        ),
    )
    .await;
    let c = broker.connect("postgres").await;
    let query = |func: &str| {
        format!(
            "SELECT time_bucket('1 hour', time) AS b, host, {func}(cpu) FROM metrics \
             WHERE time >= '2024-01-01 00:00+00' AND time < '2024-01-01 06:00+00' \
             GROUP BY b, host ORDER BY b"
        )
    };
    let first = |rows: Vec<tokio_postgres::SimpleQueryMessage>| {
        rows.into_iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(2).map(str::to_owned),
                _ => None,
            })
            .expect("a row")
    };
    // Raw: (60 × 1 + 60 × 100) / 120 = 50.5; the aggregate holds only the first 60 rows: 1.
    assert_eq!(
        pg.sql(
            "postgres",
            &format!(
                "SELECT v FROM ({}) q LIMIT 1",
                query("avg").replace("(cpu)", "(cpu) AS v")
            )
        ),
        "50.5"
    );
    let through = first(c.simple_query(&query("avg")).await.expect("avg"));
    assert_eq!(through, "1", "rewritten to metrics_hourly_avg");

    // An aggregate created while the broker runs is picked up by the refresh.
    assert_eq!(
        first(c.simple_query(&query("max")).await.expect("max")),
        "100"
    );
    cagg("metrics_hourly_max", "max");
    // It materialised max = 100; rows of 1000 arrive after it did.
    pg.sql(
        "postgres",
        "INSERT INTO metrics SELECT t, 'h1', 1000 FROM generate_series('2024-01-01 00:00:45+00'::timestamptz, '2024-01-01 05:59:45+00', interval '1 minute') t",
    );
    assert_eq!(
        pg.sql(
            "postgres",
            &format!(
                "SELECT v FROM ({}) q LIMIT 1",
                query("max").replace("(cpu)", "(cpu) AS v")
            )
        ),
        "1000"
    );
    let rewritten = wait_for_async(Duration::from_secs(10), || async {
        first(c.simple_query(&query("max")).await.expect("max")) == "100"
    })
    .await;
    assert!(
        rewritten,
        "max(cpu) rewritten to metrics_hourly_max after the refresh"
    );
    broker.shutdown().await;
}

async fn wait_for_async<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}
