//! Audit through the PostgreSQL wire protocol (scenario 24): every statement leaves an
//! HMAC-chained record in the audit table — never its parameter values — and
//! `tidegate audit verify` finds the first broken record after a byte is flipped, a record
//! deleted, two swapped, one forged, or the newest removed (caught by the chain head, or by a
//! signed checkpoint when the head was moved back too); the chain continues across a restart,
//! and two brokers sharing the table extend one chain. While the table cannot be written,
//! statements are refused (fail closed) and no record is lost.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tidegate_tests::{
    base_config, first_value, pgbench_failed, pgbench_init, plugin_dir_with, run_tool, send_json,
    sqlstate, tidegate_bin, wait_for, Api, ApiAuth, Broker, Postgres,
};

const KEY: &str = "YXVkaXQtY2hhaW4ta2V5LWZvci10ZXN0cy0zMmJ5dGU=";

fn config(pg: &Postgres, dir: &Path) -> String {
    base_config(
        pg,
        &format!(
            r#"
[http]
admin_users = ["app"]
[plugins]
dir = "{dir}"
call_timeout = "200ms"
[[plugins.keys]]
name = "audit"
id = 1
secret = "{KEY}"
[[plugins.chain]]
name = "access-control"
file = "access_control.wasm"
kind = "access_control"
[plugins.chain.config]
deny_by_default = false
[plugins.chain.config.roles]
reader = [{{ kinds = ["read", "utility", "transaction"], tables = ["*"] }}]
[[plugins.chain]]
name = "audit"
file = "audit.wasm"
kind = "audit"
[plugins.chain.config]
labels = {{ env = "test" }}
[audit]
key = "audit"
checkpoint_file = "{dir}/checkpoints.jsonl"
checkpoint_every = 1000
checkpoint_interval = "100ms"
[[users]]
name = "reader"
password = "reader"
roles = ["reader"]
"#,
            dir = dir.display()
        ),
    )
}

fn setup() -> (Postgres, PathBuf, PathBuf) {
    let pg = Postgres::start();
    let dir = plugin_dir_with(&["access_control.wasm", "audit.wasm"]);
    let file = dir.join("tidegate.toml");
    std::fs::write(&file, config(&pg, &dir)).expect("write config");
    (pg, dir, file)
}

fn records(pg: &Postgres) -> u64 {
    pg.sql("postgres", "SELECT count(*) FROM tidegate_audit.events")
        .parse()
        .unwrap_or(0)
}

async fn written(broker: &Broker, n: u64) {
    let sink = broker.shared.audit.get().expect("audit writer running");
    assert!(
        wait_for(Duration::from_secs(20), || sink.written.load(Relaxed) >= n).await,
        "{} of {n} records written",
        sink.written.load(Relaxed)
    );
}

/// `tidegate audit verify`: (exit code, stdout + stderr).
async fn verify(file: &std::path::Path) -> (i32, String) {
    tidegate_tests::audit_verify(file).await
}

async fn assert_broken_at(file: &Path, seq: i64, case: &str) {
    let (code, text) = verify(file).await;
    assert_eq!(code, 1, "{case}: verify must fail: {text}");
    assert!(
        text.contains(&format!("BROKEN at record {seq}:")),
        "{case}: first broken record {seq}: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_statement_is_recorded_without_its_values() {
    let (pg, _dir, file) = setup();
    pg.sql("postgres", "CREATE TABLE t (id int, secret text)");
    let broker = Broker::start_file(&file).await;
    let app = broker.connect("postgres").await;
    app.execute("INSERT INTO t VALUES ($1, $2)", &[&1i32, &"hunter2-param"])
        .await
        .expect("insert");
    app.simple_query("SELECT * FROM t").await.expect("select");
    let reader = tidegate_tests::connect(&broker.url("reader", "reader", "postgres"))
        .await
        .expect("reader");
    let err = reader
        .simple_query("DELETE FROM t")
        .await
        .expect_err("denied");
    assert_eq!(sqlstate(&err).as_deref(), Some("42501"));
    assert!(app.simple_query("SELECT * FROM missing").await.is_err());
    written(&broker, 4).await;

    let rows = pg.sql(
        "postgres",
        "SELECT username || '|' || kind || '|' || tables || '|' || decision || '|' || \
         coalesce(decided_by, '-') || '|' || rows || '|' || coalesce(sqlstate, '-') || '|' || labels \
         FROM tidegate_audit.events ORDER BY seq",
    );
    let lines: Vec<&str> = rows.lines().collect();
    assert_eq!(lines.len(), 4, "{rows}");
    assert_eq!(lines[0], r#"app|write|t|allow|-|1|-|{"env":"test"}"#);
    assert_eq!(lines[1], r#"app|read|t|allow|-|1|-|{"env":"test"}"#);
    assert_eq!(
        lines[2],
        r#"reader|write|t|deny|access-control|0|42501|{"env":"test"}"#
    );
    assert!(
        lines[3].starts_with("app|read|missing|allow|-|0|42P01|"),
        "{}",
        lines[3]
    );
    let dump = pg.sql("postgres", "SELECT t::text FROM tidegate_audit.events t");
    assert!(!dump.contains("hunter2"), "a parameter value was recorded");
    assert_eq!(verify(&file).await.0, 0);

    // `audit logs` is the seed's get_logs: one user's records in a time range.
    let out = run_tool(
        tidegate_bin().to_str().expect("path"),
        &[
            "audit",
            "logs",
            "--config",
            file.to_str().expect("path"),
            "--user",
            "reader",
            "--from",
            "2000-01-01",
            "--to",
            "2999-01-01",
        ],
        &[],
    )
    .await;
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains(r#""decision":"deny""#), "{text}");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_is_found_at_the_first_broken_record() {
    let (pg, _dir, file) = setup();
    let broker = Broker::start_file(&file).await;
    let url = broker.app_url("postgres");
    pgbench_init(&pg.url("postgres")).await;
    // 10,000 statements through the broker (8 clients × 1,250 select-only transactions).
    let out = run_tool(
        "pgbench",
        &["-n", "-S", "-c", "8", "-j", "2", "-t", "1250", &url],
        &[],
    )
    .await;
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert_eq!(pgbench_failed(&report), 0);
    written(&broker, 10_000).await;
    tokio::time::sleep(Duration::from_millis(400)).await; // a checkpoint covers the newest
    broker.shutdown().await;
    let n: i64 = records(&pg) as i64;
    assert!(n >= 10_000, "{n} records");
    let (code, text) = verify(&file).await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains(&format!("{n} records")), "{text}");

    pg.sql(
        "postgres",
        "CREATE TABLE pristine AS SELECT * FROM tidegate_audit.events",
    );
    let restore = "TRUNCATE tidegate_audit.events; \
                   INSERT INTO tidegate_audit.events SELECT * FROM pristine";

    // (a) one byte flipped.
    pg.sql(
        "postgres",
        "UPDATE tidegate_audit.events SET rows = rows + 1 WHERE seq = 5000",
    );
    assert_broken_at(&file, 5000, "flipped byte").await;
    pg.sql("postgres", restore);
    pg.sql(
        "postgres",
        "UPDATE tidegate_audit.events SET hash = set_byte(hash, 0, get_byte(hash, 0) # 1) WHERE seq = 6000",
    );
    assert_broken_at(&file, 6000, "flipped hash byte").await;
    pg.sql("postgres", restore);

    // (b) one record deleted.
    pg.sql(
        "postgres",
        "DELETE FROM tidegate_audit.events WHERE seq = 4000",
    );
    assert_broken_at(&file, 4000, "deleted").await;
    pg.sql("postgres", restore);

    // (c) two records swapped (their contents trade places).
    pg.sql(
        "postgres",
        "UPDATE tidegate_audit.events e SET at = o.at, fingerprint = o.fingerprint, \
         duration_us = o.duration_us, hash = o.hash \
         FROM pristine o WHERE (e.seq, o.seq) IN ((3000, 3001), (3001, 3000))",
    );
    assert_broken_at(&file, 3000, "swapped").await;
    pg.sql("postgres", restore);

    // (d) a forged record inserted (the ones after it renumbered).
    pg.sql(
        "postgres",
        "UPDATE tidegate_audit.events SET seq = -seq WHERE seq >= 2000; \
         UPDATE tidegate_audit.events SET seq = -seq + 1 WHERE seq < 0; \
         INSERT INTO tidegate_audit.events SELECT 2000, at, plugin, 'mallory', role, database, \
         kind, tables, fingerprint, decision, decided_by, rows, duration_us, sqlstate, labels, \
         key_id, sha256('forged') FROM pristine WHERE seq = 1999",
    );
    assert_broken_at(&file, 2000, "forged").await;
    pg.sql("postgres", restore);

    // (e) the newest 100 records removed: the chain head still names the newest record.
    let truncate = format!("DELETE FROM tidegate_audit.events WHERE seq > {}", n - 100);
    pg.sql("postgres", &truncate);
    assert_broken_at(&file, n - 99, "truncated").await;
    pg.sql("postgres", restore);
    // ... and with the head moved back to match, only the signed checkpoint can tell.
    let head = pg.sql("postgres", "SELECT seq FROM tidegate_audit.events_head");
    assert_eq!(head, n.to_string(), "the head names the newest record");
    let move_head = |to: i64| {
        format!(
            "UPDATE tidegate_audit.events_head SET seq = {to}, \
             hash = (SELECT hash FROM pristine WHERE seq = {to})"
        )
    };
    pg.sql("postgres", &format!("{truncate}; {}", move_head(n - 100)));
    assert_broken_at(&file, n - 99, "truncated, head moved").await;
    pg.sql("postgres", &format!("{restore}; {}", move_head(n)));
    assert_eq!(verify(&file).await.0, 0, "restored");

    // A forged checkpoint line is refused, not believed.
    let cp = file.with_file_name("checkpoints.jsonl");
    let mut lines = std::fs::read_to_string(&cp).expect("checkpoints");
    lines.push_str(r#"{"seq":99999,"hash":"00","at_us":0,"key_id":1,"mac":"00"}"#);
    lines.push('\n');
    std::fs::write(&cp, &lines).expect("write");
    let (code, text) = verify(&file).await;
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("not signed"), "{text}");
    let good: Vec<&str> = lines.lines().filter(|l| !l.contains("99999")).collect();
    std::fs::write(&cp, good.join("\n") + "\n").expect("write");

    // (f) a restarted broker continues the same chain.
    let broker = Broker::start_file(&file).await;
    let app = broker.connect("postgres").await;
    for _ in 0..10 {
        app.simple_query("SELECT 1").await.expect("select");
    }
    written(&broker, 10).await;
    broker.shutdown().await;
    assert_eq!(records(&pg) as i64, n + 10);
    let (code, text) = verify(&file).await;
    assert_eq!(code, 0, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_brokers_sharing_the_audit_table_extend_one_chain() {
    let (pg, _dir, file) = setup();
    let cfg = || tidegate_config::Config::load(&file).expect("config");
    let brokers = [
        Broker::start_config(cfg()).await,
        Broker::start_config(cfg()).await,
    ];
    // Four clients on each broker; each broker's writer links its batches after the head it
    // last saw; a batch that finds the head moved by the other is linked again after it.
    let mut tasks = Vec::new();
    for broker in &brokers {
        for _ in 0..4 {
            let app = broker.connect("postgres").await;
            tasks.push(tokio::spawn(async move {
                for i in 0..250 {
                    app.simple_query(&format!("SELECT {i}"))
                        .await
                        .expect("select");
                }
            }));
        }
    }
    for t in tasks {
        t.await.expect("client");
    }
    let mut relinked = 0;
    for broker in &brokers {
        written(broker, 1000).await;
        relinked += broker
            .shared
            .audit
            .get()
            .expect("sink")
            .relinked
            .load(Relaxed);
    }
    // Both writers opened the chain at its genesis, so whichever wrote second found it moved.
    assert!(relinked >= 1, "no batch was linked again");
    for broker in brokers {
        broker.shutdown().await;
    }
    assert_eq!(records(&pg), 2000);
    assert_eq!(
        pg.sql(
            "postgres",
            "SELECT count(DISTINCT seq) || ':' || max(seq) || ':' || \
             (SELECT seq FROM tidegate_audit.events_head) FROM tidegate_audit.events"
        ),
        "2000:2000:2000"
    );
    let (code, text) = verify(&file).await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("2000 records"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_audit_table_refuses_statements_and_loses_nothing() {
    let (pg, _dir, file) = setup();
    let broker = Broker::start_file(&file).await;
    let app = broker.connect("postgres").await;
    app.simple_query("SELECT 1").await.expect("select");
    written(&broker, 1).await;
    // The audit table stops accepting rows.
    pg.sql(
        "postgres",
        "ALTER TABLE tidegate_audit.events ADD CONSTRAINT closed CHECK (false) NOT VALID",
    );
    for _ in 0..3 {
        app.simple_query("SELECT 2")
            .await
            .expect("ran before the failure was seen");
    }
    let sink = broker.shared.audit.get().expect("sink");
    assert!(
        wait_for(Duration::from_secs(10), || sink.available().is_err()).await,
        "the writer notices"
    );
    // A load balancer asking /readyz takes the broker out; operators see why.
    let http = broker.serve_http().await;
    let (code, ready) = send_json(Api::new(http, ApiAuth::None).get("/readyz")).await;
    assert_eq!(code, 503, "{ready}");
    assert_eq!(ready["audit"]["ready"], false, "{ready}");
    assert!(
        ready["audit"]["error"].is_null(),
        "no database error for anyone: {ready}"
    );
    let (code, status) = send_json(Api::app(http).get("/admin/status")).await;
    assert_eq!(code, 200, "{status}");
    assert_eq!(status["audit"]["ready"], false, "{status}");
    assert!(
        status["audit"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("closed")),
        "{status}"
    );
    assert!(
        status["audit"]["write_failures"].as_u64() >= Some(1),
        "{status}"
    );
    let err = app.simple_query("SELECT 3").await.expect_err("fail closed");
    assert_eq!(sqlstate(&err).as_deref(), Some("58000"));
    assert!(
        err.as_db_error()
            .expect("db error")
            .message()
            .contains("audit"),
        "{err}"
    );
    let other = broker.connect("postgres").await;
    assert!(
        other.simple_query("SELECT 4").await.is_err(),
        "everyone is refused"
    );
    // It recovers by itself, and the records that waited are all written.
    pg.sql(
        "postgres",
        "ALTER TABLE tidegate_audit.events DROP CONSTRAINT closed",
    );
    assert!(
        wait_for(Duration::from_secs(10), || sink.available().is_ok()).await,
        "recovered"
    );
    assert_eq!(first_value(&app, "SELECT 5").await, "5");
    written(&broker, 5).await;
    let (code, ready) = send_json(Api::new(http, ApiAuth::None).get("/readyz")).await;
    assert_eq!(code, 200, "{ready}");
    assert_eq!(ready["audit"]["ready"], true, "{ready}");
    broker.shutdown().await;
    assert_eq!(
        records(&pg),
        5,
        "1 + 3 + 1 records: none lost, refusals not recorded"
    );
    let (code, text) = verify(&file).await;
    assert_eq!(code, 0, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_applies_the_migrations_and_refuses_statements_when_it_cannot() {
    let (pg, _dir, file) = setup();
    // The writer brings its database up to date with TideGate's migrations, which alone
    // define the audit tables.
    let broker = Broker::start_file(&file).await;
    let app = broker.connect("postgres").await;
    assert_eq!(first_value(&app, "SELECT 1").await, "1");
    written(&broker, 1).await;
    let recorded = "SELECT string_agg(version || ':' || success, ',' ORDER BY version) \
                    FROM _sqlx_migrations";
    assert_eq!(
        pg.sql("postgres", recorded),
        "1:true,2:true,3:true,4:true,5:true,6:true"
    );
    // A chain head deleted by hand is put back at the newest record, and the chain goes on.
    pg.sql("postgres", "DELETE FROM tidegate_audit.events_head");
    assert_eq!(first_value(&app, "SELECT 2").await, "2");
    written(&broker, 2).await;
    broker.shutdown().await;
    assert_eq!(
        pg.sql(
            "postgres",
            "SELECT max(seq) || ':' || (SELECT seq FROM tidegate_audit.events_head) \
             FROM tidegate_audit.events"
        ),
        "2:2"
    );
    let (code, text) = verify(&file).await;
    assert_eq!(code, 0, "{text}");

    // A migration changed after it was applied: the writer cannot bring the tables up to
    // date, statements are refused, and the operator is told what to run.
    pg.sql(
        "postgres",
        "UPDATE _sqlx_migrations SET checksum = '\\x00' WHERE version = 2",
    );
    let broker = Broker::start_file(&file).await;
    let app = broker.connect("postgres").await;
    let err = app.simple_query("SELECT 3").await.expect_err("fail closed");
    assert_eq!(sqlstate(&err).as_deref(), Some("58000"));
    let sink = broker.shared.audit.get().expect("sink");
    let mut why = String::new();
    let told = wait_for(Duration::from_secs(10), || {
        why = sink.available().err().unwrap_or_default();
        why.contains("migration 2 was changed")
    })
    .await;
    assert!(told, "{why}");
    assert!(why.contains("run `tidegate migrate`"), "{why}");
    let err = app
        .simple_query("SELECT 4")
        .await
        .expect_err("still closed");
    assert_eq!(sqlstate(&err).as_deref(), Some("58000"));
    broker.shutdown().await;
    assert_eq!(records(&pg), 2);
}
