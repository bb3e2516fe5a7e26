//! Server restarts and lost server connections that clients do not notice, or notice once
//! and carry on (client-fidelity issue, item 5; server-restart issue): a pooled connection
//! that dies idle is never lent, a statement whose server said FATAL before anything runs
//! again on a fresh connection, a transaction lost with its connection fails with 40001 and
//! the session stays usable, and a primary restarting is waited for within the connect
//! timeout.

use std::sync::Arc;
use std::time::Duration;
use tidegate_tests::{first_value, run_tool, sqlstate, Broker, Postgres};

/// Terminates (directly, as a superuser) the server connections in `state` running `like`.
fn terminate(pg: &Postgres, state: &str, like: &str) -> usize {
    pg.sql(
        "postgres",
        &format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() \
             AND state = '{state}' AND query LIKE '{like}'"
        ),
    )
    .trim()
    .parse()
    .expect("a count")
}

/// Waits until a server connection in `state` runs `like`.
async fn wait_for_backend(pg: &Postgres, state: &str, like: &str) {
    let sql = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE state = '{state}' AND query LIKE '{like}' \
         AND pid <> pg_backend_pid()"
    );
    let seen = tidegate_tests::wait_for(Duration::from_secs(10), || {
        pg.sql("postgres", &sql).trim() != "0"
    })
    .await;
    assert!(seen, "no server connection is {state} with {like}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_transaction_fails_once_and_the_session_goes_on() {
    let pg = Postgres::start();
    pg.sql("postgres", "CREATE TABLE t (a int)");
    let broker = Broker::start(&pg, "").await;
    let c = Arc::new(broker.connect("postgres").await);

    // Idle in a transaction when its server connection is terminated: the next statement
    // fails with 40001 (rolled back, retry), the next with 25P02 (PostgreSQL's own answer in
    // a failed transaction, from a fresh connection), and ROLLBACK ends it.
    c.batch_execute("BEGIN; INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    assert_eq!(terminate(&pg, "idle in transaction", "%INSERT%"), 1);
    let e = c
        .query("SELECT 1", &[])
        .await
        .expect_err("the transaction is gone");
    assert_eq!(sqlstate(&e).as_deref(), Some("40001"), "{e:?}");
    let e = c.query("SELECT 2", &[]).await.expect_err("still failed");
    assert_eq!(sqlstate(&e).as_deref(), Some("25P02"), "{e:?}");
    c.batch_execute("ROLLBACK").await.expect("ROLLBACK ends it");
    assert_eq!(first_value(&c, "SELECT count(*) FROM t").await, "0");

    // A statement running in a transaction: the client waiting on it gets 40001 at once;
    // COMMIT of the failed transaction answers ROLLBACK, as PostgreSQL does, with no server.
    c.batch_execute("BEGIN; INSERT INTO t VALUES (2)")
        .await
        .unwrap();
    let sleeper = {
        let c = c.clone();
        tokio::spawn(async move { c.query("SELECT pg_sleep(30)", &[]).await })
    };
    wait_for_backend(&pg, "active", "SELECT pg_sleep(30)").await;
    assert_eq!(terminate(&pg, "active", "SELECT pg_sleep(30)"), 1);
    let e = sleeper.await.unwrap().expect_err("the transaction is gone");
    assert_eq!(sqlstate(&e).as_deref(), Some("40001"), "{e:?}");
    let tag = c
        .simple_query("COMMIT")
        .await
        .expect("COMMIT of a failed transaction");
    assert!(
        matches!(
            tag.last(),
            Some(tokio_postgres::SimpleQueryMessage::CommandComplete(0))
        ),
        "{tag:?}"
    );
    assert_eq!(first_value(&c, "SELECT count(*) FROM t").await, "0");

    // Outside a transaction, after rows reached the client: one error with the server's
    // SQLSTATE, and the session goes on.
    let sql =
        "SELECT repeat('x', 20000) FROM generate_series(1, 100) g WHERE pg_sleep(0.05) IS NOT NULL";
    let stream = c
        .query_raw(sql, std::iter::empty::<i32>())
        .await
        .expect("rows start");
    let mut stream = Box::pin(stream);
    use futures_util::StreamExt;
    let first = stream.next().await.expect("a row").expect("a row");
    assert_eq!(first.get::<_, String>(0).len(), 20000);
    assert_eq!(terminate(&pg, "active", "SELECT repeat%"), 1);
    let mut error = None;
    while let Some(r) = stream.next().await {
        if let Err(e) = r {
            error = Some(e);
            break;
        }
    }
    let e = error.expect("the rest of the result is lost");
    assert_eq!(sqlstate(&e).as_deref(), Some("57P01"), "{e:?}");
    assert_eq!(first_value(&c, "SELECT 40 + 2").await, "42");

    // Outside a transaction, before any reply: the server's FATAL came first, so the
    // statement never ran there and runs again on a fresh connection.
    let sleeper = {
        let c = c.clone();
        tokio::spawn(async move { c.query_one("SELECT 7 FROM pg_sleep(1)", &[]).await })
    };
    wait_for_backend(&pg, "active", "SELECT 7 FROM pg_sleep(1)").await;
    assert_eq!(terminate(&pg, "active", "SELECT 7 FROM pg_sleep(1)"), 1);
    let row = sleeper
        .await
        .unwrap()
        .expect("run again on a fresh connection");
    assert_eq!(row.get::<_, i32>(0), 7);
    assert!(!c.is_closed());
}

/// `TIDEGATE_RESTART_ROUNDS` (default 5) restarts of each kind.
fn rounds() -> usize {
    std::env::var("TIDEGATE_RESTART_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

/// 50 idle clients; the primary restarted with `-m fast`, stopped with `-m immediate` and
/// started, and its postmaster killed with SIGKILL and started; each client's next statement sent while it restarts: every one succeeds
/// (waiting for the server within the connect timeout), no client connection is lost, and
/// every write is in the database exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_clients_do_not_notice_primary_restarts() {
    let pg = Arc::new(Postgres::start());
    pg.sql("postgres", "CREATE TABLE w (client int, round int)");
    let broker = Broker::start(
        &pg,
        "[pool]\nsize = 10\nconnect_timeout = \"10s\"\ncheckout_timeout = \"20s\"\n",
    )
    .await;
    let mut clients = Vec::new();
    for _ in 0..50 {
        let c = broker.connect("postgres").await;
        assert_eq!(first_value(&c, "SELECT 1").await, "1");
        clients.push(Arc::new(c));
    }
    let rounds = rounds();
    let mut round = 0;
    for mode in ["fast", "immediate", "kill -9"] {
        for _ in 0..rounds {
            round += 1;
            let started_before = pg.sql("postgres", "SELECT pg_postmaster_start_time()");
            let restart = {
                let pg = pg.clone();
                match mode {
                    "fast" => tokio::task::spawn_blocking(move || pg.restart_with(mode)),
                    // A crash: what a statement in flight did is unknown (a write is not run
                    // twice, so it fails), so the clients' next statements follow the crash.
                    "immediate" => {
                        pg.stop_immediate();
                        tokio::task::spawn_blocking(move || pg.restart())
                    }
                    _ => {
                        pg.kill_postmaster();
                        tokio::task::spawn_blocking(move || pg.restart_after_kill())
                    }
                }
            };
            // The statements go out while the server stops (fast: every backend says FATAL
            // first), is down, or starts — a different moment each round.
            tokio::time::sleep(Duration::from_millis(10 + 60 * (round as u64 % 5))).await;
            let mut tasks = Vec::new();
            for (i, c) in clients.iter().enumerate() {
                let c = c.clone();
                tasks.push(tokio::spawn(async move {
                    if i % 2 == 0 {
                        c.execute("INSERT INTO w VALUES ($1, $2)", &[&(i as i32), &round])
                            .await
                            .map(|_| ())
                    } else {
                        c.simple_query("SELECT count(*) FROM w").await.map(|_| ())
                    }
                }));
            }
            let mut failed = Vec::new();
            for (i, t) in tasks.into_iter().enumerate() {
                if let Err(e) = t.await.unwrap() {
                    failed.push(format!("client {i}: {e:?}"));
                }
            }
            restart.await.unwrap();
            assert!(failed.is_empty(), "{mode}, round {round}: {failed:#?}");
            assert_ne!(
                pg.sql("postgres", "SELECT pg_postmaster_start_time()"),
                started_before,
                "the server restarted"
            );
        }
        println!("{mode}: {rounds} restarts, 50 idle clients, 0 failed statements");
    }
    assert!(
        clients.iter().all(|c| !c.is_closed()),
        "no client connection lost"
    );
    let direct = pg.connect("postgres").await;
    let row = direct
        .query_one(
            "SELECT count(*), count(DISTINCT (client, round)) FROM w",
            &[],
        )
        .await
        .unwrap();
    let expected = (25 * round) as i64;
    assert_eq!(row.get::<_, i64>(0), expected, "each write once");
    assert_eq!(row.get::<_, i64>(1), expected);
}

/// `pgbench -c 8` (TPC-B, simple protocol) across a `-m fast` restart of the primary: no
/// client aborts; the transactions in flight at the restart fail with 40001 (pgbench counts
/// them as failed and goes on); every acknowledged transaction is in the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_tpcb_survives_a_primary_restart() {
    let pg = Arc::new(Postgres::start());
    tidegate_tests::create_db(&pg, "bench");
    tidegate_tests::pgbench_init(&pg.url("bench")).await;
    let broker = Broker::start(&pg, "[pool]\nconnect_timeout = \"10s\"\n").await;
    let url = broker.app_url("bench");
    // TIDEGATE_TPCB_SECONDS: the run's length (12 s by default; the restart comes at 4 s).
    let seconds = std::env::var("TIDEGATE_TPCB_SECONDS").unwrap_or_else(|_| "12".into());
    let bench = tokio::spawn(async move {
        run_tool(
            "pgbench",
            &["-n", "-c", "8", "-j", "2", "-T", &seconds, &url],
            &[],
        )
        .await
    });
    tokio::time::sleep(Duration::from_secs(4)).await;
    let restart = {
        let pg = pg.clone();
        tokio::task::spawn_blocking(move || pg.restart_with("fast"))
    };
    restart.await.unwrap();
    let out = bench.await.unwrap();
    let report = tidegate_tests::output_text(&out);
    assert!(out.status.success(), "pgbench failed:\n{report}");
    assert!(!report.contains("aborted"), "a client aborted:\n{report}");
    let processed = tidegate_tests::pgbench_processed(&report);
    let failed = tidegate_tests::pgbench_failed(&report);
    println!("pgbench TPC-B across -m fast: {processed} transactions, {failed} failed (in flight at the restart)");
    assert!(processed > 100, "{report}");
    assert!(
        failed <= 8,
        "only the transactions in flight fail:\n{report}"
    );
    let history: u64 = pg
        .sql("bench", "SELECT count(*) FROM pgbench_history")
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        history, processed,
        "every acknowledged transaction, and only those"
    );
}

const AUDIT_KEY: &str = "YXVkaXQtY2hhaW4ta2V5LWZvci10ZXN0cy0zMmJ5dGU=";

/// The audit writer rides out primary restarts under load (`audit.outage_grace`): with 8
/// clients inserting throughout, two `-m fast` restarts refuse no statement and fail none
/// (each statement whose server said FATAL first runs again); two crashes (`-m immediate`)
/// fail only the statements in flight (08006: their outcome is unknown). Every acknowledged
/// insert is in the table, every statement that ran has its audit record, and `tidegate audit
/// verify` finds the chain intact after each restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_rides_out_primary_restarts() {
    let pg = Arc::new(Postgres::start());
    pg.sql("postgres", "CREATE TABLE a (client int, i int)");
    let dir = tidegate_tests::plugin_dir_with(&["audit.wasm"]);
    let file = dir.join("tidegate.toml");
    let extra = format!(
        r#"
[pool]
connect_timeout = "10s"
[plugins]
dir = "{dir}"
[[plugins.keys]]
name = "audit"
id = 1
secret = "{AUDIT_KEY}"
[[plugins.chain]]
name = "audit"
file = "audit.wasm"
kind = "audit"
[audit]
key = "audit"
checkpoint_file = "{dir}/checkpoints.jsonl"
checkpoint_interval = "100ms"
flush_interval = "20ms"
"#,
        dir = dir.display()
    );
    std::fs::write(&file, tidegate_tests::base_config(&pg, &extra)).expect("write config");
    let broker = Broker::start_file(&file).await;
    // The writer starts with the first audited statement.
    let first = broker.connect("postgres").await;
    assert_eq!(first_value(&first, "SELECT 1").await, "1");
    let sink = broker.shared.audit.get().expect("audit writer").clone();
    assert!(
        sink.wait_ready(Duration::from_secs(20)).await,
        "audit table ready"
    );

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for client in 0..8i32 {
        let c = broker.connect("postgres").await;
        let stop = stop.clone();
        clients.push(tokio::spawn(async move {
            let (mut acked, mut errors) = (0u64, Vec::new());
            let mut i = 0i32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                match c
                    .execute("INSERT INTO a VALUES ($1, $2)", &[&client, &i])
                    .await
                {
                    Ok(_) => acked += 1,
                    Err(e) => errors.push(sqlstate(&e).unwrap_or_else(|| e.to_string())),
                }
            }
            assert!(!c.is_closed(), "client {client} kept its connection");
            (acked, errors)
        }));
    }
    for mode in ["fast", "immediate", "fast", "immediate"] {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let pg2 = pg.clone();
        tokio::task::spawn_blocking(move || {
            if mode == "fast" {
                pg2.restart_with("fast");
            } else {
                pg2.stop_immediate();
                pg2.restart();
            }
        })
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(700)).await;
        let (code, text) = verify(&file).await;
        assert_eq!(code, 0, "after -m {mode}: {text}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut acked, mut errors) = (0, Vec::new());
    for c in clients {
        let (a, e) = c.await.unwrap();
        acked += a;
        errors.extend(e);
    }
    assert!(
        sink.flush(Duration::from_secs(20)).await,
        "every record written"
    );
    println!("audit across 2 fast restarts and 2 crashes: {acked} inserts acknowledged, errors {errors:?}");
    assert!(acked > 100);
    assert!(
        errors.iter().all(|e| e == "08006") && errors.len() <= 16,
        "only statements in flight at a crash fail: {errors:?}"
    );
    let rows: u64 = pg
        .sql("postgres", "SELECT count(*) FROM a")
        .trim()
        .parse()
        .unwrap();
    assert!(
        rows >= acked && rows <= acked + errors.len() as u64,
        "{rows} rows for {acked} acknowledged inserts"
    );
    let records: u64 = pg
        .sql(
            "postgres",
            "SELECT count(*) FROM tidegate_audit.events WHERE username = 'app' AND kind = 'write' AND sqlstate IS NULL",
        )
        .trim()
        .parse()
        .unwrap();
    assert!(
        records >= acked,
        "{records} audit records for {acked} statements that ran"
    );
    let (code, text) = verify(&file).await;
    assert_eq!(code, 0, "{text}");
}

async fn verify(file: &std::path::Path) -> (i32, String) {
    tidegate_tests::audit_verify(file).await
}
