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
