//! Failure scenarios from ../shared/guide/reliability.md owned by the data plane:
//! 1 (primary killed mid-transaction), 2 (client vanishes mid-transaction), 8 (timeouts),
//! 9 (connection storm, scaled to this machine) and 10 (pool exhaustion with the extended
//! protocol).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tidegate_tests::raw::{self, Raw};
use tidegate_tests::{connect, sqlstate, Broker, Postgres};

/// Scenario 1: the client gets an error, never a COMMIT acknowledgement; nothing is replayed;
/// once the primary is back, a new statement succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_killed_mid_transaction() {
    let pg = Postgres::start();
    pg.sql("postgres", "CREATE TABLE t (a int)");
    let broker = Broker::start(&pg, "[pool]\nconnect_timeout = \"1s\"\n").await;
    let c = broker.connect("postgres").await;
    c.batch_execute("BEGIN; INSERT INTO t VALUES (1)")
        .await
        .expect("begin");
    pg.stop_immediate();
    let e = c
        .batch_execute("COMMIT")
        .await
        .expect_err("no COMMIT acknowledgement");
    // 40001: the transaction was rolled back with the server (the session goes on).
    let code = sqlstate(&e);
    assert!(
        code.as_deref()
            .is_none_or(|c| c.starts_with("08") || c == "57P01" || c == "40001"),
        "unexpected error {e:?}"
    );
    // While the primary is down, new clients get a clear error within the connect timeout.
    let started = Instant::now();
    let down = connect(&broker.app_url("postgres")).await;
    if let Ok(c2) = down {
        c2.simple_query("SELECT 1")
            .await
            .expect_err("primary is down");
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "no hang: {:?}",
        started.elapsed()
    );
    pg.restart();
    let started = Instant::now();
    let c3 = broker.connect("postgres").await;
    let n = c3
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .expect("works after restart");
    assert_eq!(n.get::<_, i64>(0), 0, "the transaction was not replayed");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

/// Scenario 2: exactly one ROLLBACK reaches the server and the connection is reused clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_vanishes_mid_transaction() {
    let pg = Postgres::start_with(&[("log_statement", "all")]);
    pg.sql(
        "postgres",
        "CREATE TABLE t (a int); CREATE ROLE x; GRANT ALL ON t TO x",
    );
    let broker = Broker::start(&pg, "[pool]\nsize = 1\n").await;
    {
        let mut c = Raw::connect(broker.addr).await;
        let greeting = c.startup_scram("app", "app", "postgres").await;
        assert_eq!(greeting.last().map(|m| m.tag), Some(b'Z'));
        for sql in [
            "BEGIN",
            "SET ROLE x",
            "PREPARE p AS SELECT 1",
            "UPDATE t SET a = 2",
        ] {
            c.send(&raw::query(sql)).await;
            let r = c.until_ready().await;
            assert!(!r.iter().any(|m| m.tag == b'E'), "{sql}: {:?}", r);
        }
        // Dropped here: the socket closes mid-transaction.
    }
    let c = broker.connect("postgres").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match c.batch_execute("PREPARE p AS SELECT 2").await {
            Ok(()) => break,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("next client's PREPARE p failed: {e}"),
        }
    }
    let who = c
        .query_one("SELECT current_user::text", &[])
        .await
        .expect("whoami");
    assert_eq!(who.get::<_, String>(0), "postgres", "no leftover role");
    let rollbacks = pg.log().matches("statement: ROLLBACK").count();
    assert_eq!(rollbacks, 1, "exactly one ROLLBACK:\n{}", pg.log());
}

/// Scenario 8: query timeout, idle-in-transaction timeout, client idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts() {
    let pg = Postgres::start();
    let broker = Broker::start(&pg, "[pool]\nquery_timeout = \"1s\"\n").await;
    // query_timeout: cancelled at about 1 s, and the session goes on.
    let c = broker.connect("postgres").await;
    let started = Instant::now();
    let e = c
        .simple_query("SELECT pg_sleep(5)")
        .await
        .expect_err("timed out");
    assert_eq!(sqlstate(&e).as_deref(), Some("57014"));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "{took:?}"
    );
    assert_eq!(
        c.query_one("SELECT 7", &[])
            .await
            .expect("still usable")
            .get::<_, i32>(0),
        7
    );

    let broker = Broker::start(
        &pg,
        "[pool]\nidle_transaction_timeout = \"2s\"\nclient_idle_timeout = \"2s\"\n",
    )
    .await;
    // A statement running 2.5 s inside a transaction is busy, not idle: it must not be killed.
    let busy = broker.connect("postgres").await;
    busy.batch_execute("BEGIN").await.expect("begin");
    busy.batch_execute("SELECT pg_sleep(2.5)")
        .await
        .expect("long statement in a transaction");
    busy.batch_execute("COMMIT").await.expect("commit");

    // Idle inside a transaction for longer than 2 s: disconnected with 25P03.
    let idle_tx = broker.connect("postgres").await;
    idle_tx.batch_execute("BEGIN").await.expect("begin");
    tokio::time::sleep(Duration::from_millis(2600)).await;
    assert!(
        idle_tx.batch_execute("SELECT 1").await.is_err(),
        "closed after idle in transaction"
    );

    // Idle outside a transaction for longer than 2 s: disconnected.
    let idle = broker.connect("postgres").await;
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert!(
        idle.batch_execute("SELECT 1").await.is_err(),
        "closed after client idle timeout"
    );
}

/// Scenario 9, scaled: clients beyond the limit get 53300 at once; backends stay within the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_storm() {
    let pg = Postgres::start();
    let broker = Broker::start(
        &pg,
        "[pool]\nsize = 10\n[limits]\nmax_client_connections = 100\n[auth]\nmethod = \"trust\"\n",
    )
    .await;
    // Warm up first, so one-time costs (code first run, pool connections, allocator arenas)
    // are not counted as per-client memory.
    for _ in 0..20 {
        let mut c = Raw::connect(broker.addr).await;
        c.startup("app", "postgres").await;
        c.send(&raw::query("SELECT 1")).await;
        c.until_ready().await;
    }
    let rss_before = rss_kib();
    let admitted = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    let started = Instant::now();
    let (hold_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    for _ in 0..300 {
        let (addr, admitted, refused) = (broker.addr, admitted.clone(), refused.clone());
        let mut hold = hold_tx.subscribe();
        tasks.push(tokio::spawn(async move {
            let mut c = Raw::connect(addr).await;
            let greeting = c.startup("app", "postgres").await;
            match greeting.last() {
                Some(m) if m.tag == b'Z' => {
                    admitted.fetch_add(1, Ordering::SeqCst);
                    c.send(&raw::query("SELECT 1")).await;
                    let r = c.until_ready().await;
                    assert_eq!(raw::tags(&r), "TDCZ");
                    let _ = hold.recv().await;
                }
                Some(m) if m.tag == b'E' => {
                    assert_eq!(m.sqlstate().as_deref(), Some("53300"));
                    refused.fetch_add(1, Ordering::SeqCst);
                }
                other => panic!("unexpected greeting {other:?}"),
            }
        }));
    }
    // Everyone has an answer quickly: no hang.
    assert!(
        tidegate_tests::wait_for(Duration::from_secs(20), || {
            admitted.load(Ordering::SeqCst) + refused.load(Ordering::SeqCst) == 300
        })
        .await
    );
    let elapsed = started.elapsed();
    // The broker runs in this process, so this bounds its growth (client sides included).
    let grown = rss_kib().saturating_sub(rss_before);
    assert!(
        grown < 100 * 50,
        "RSS grew {grown} KiB for 100 held clients (budget 50 KiB each)"
    );
    assert_eq!(admitted.load(Ordering::SeqCst), 100);
    assert_eq!(refused.load(Ordering::SeqCst), 200);
    let backends = pg.sql(
        "postgres",
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
    );
    assert!(
        backends.parse::<u32>().expect("count") <= 10,
        "{backends} backends"
    );
    let _ = hold_tx.send(());
    for t in tasks {
        t.await.expect("client task");
    }
    // After the storm everything works again.
    let mut recovered = None;
    for _ in 0..100 {
        if let Ok(c) = connect(&broker.url("app", "", "postgres")).await {
            recovered = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let c = recovered.expect("admitted again once the storm's clients left");
    c.simple_query("SELECT 1").await.expect("recovered");
    eprintln!("storm of 300 answered in {elapsed:?}; RSS grew {grown} KiB");
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// Scenario 10: with one backend connection busy, interleaved simple and extended requests get
/// well-formed replies — results or a checkout-timeout error, never stray messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_exhaustion_keeps_the_protocol_in_order() {
    let pg = Postgres::start();
    let broker = Broker::start(
        &pg,
        "[pool]\nsize = 1\ncheckout_timeout = \"300ms\"\n[auth]\nmethod = \"trust\"\n",
    )
    .await;
    let mut sleepers = Vec::new();
    for _ in 0..5 {
        let url = broker.url("app", "", "postgres");
        sleepers.push(tokio::spawn(async move {
            let c = connect(&url).await.expect("sleeper");
            for _ in 0..3 {
                let _ = c.simple_query("SELECT pg_sleep(1)").await;
            }
        }));
    }
    let mut c = Raw::connect(broker.addr).await;
    c.startup("app", "postgres").await;
    let until = Instant::now() + Duration::from_secs(6);
    let (mut ok, mut timeouts) = (0, 0);
    let mut i = 0;
    while Instant::now() < until {
        i += 1;
        let extended = i % 2 == 0;
        if extended {
            let mut batch = raw::parse("", "SELECT 42");
            batch.extend(raw::bind("", ""));
            batch.extend(raw::execute(""));
            batch.extend(raw::sync());
            c.send(&batch).await;
        } else {
            c.send(&raw::query("SELECT 42")).await;
        }
        let reply = c.until_ready().await;
        let tags = raw::tags(&reply);
        match tags.as_str() {
            "TDCZ" | "12DCZ" => ok += 1,
            "EZ" => {
                assert_eq!(reply[0].sqlstate().as_deref(), Some("53300"), "{reply:?}");
                timeouts += 1;
            }
            other => panic!("out-of-order or unexpected reply {other} (extended: {extended})"),
        }
    }
    for s in sleepers {
        s.await.expect("sleeper");
    }
    assert!(ok + timeouts >= 6, "ok {ok}, timeouts {timeouts}");
    assert!(timeouts > 0, "the pool was exhausted at least once");
    // And the session is still in sync afterwards.
    c.send(&raw::query("SELECT 1")).await;
    assert_eq!(raw::tags(&c.until_ready().await), "TDCZ");
}
