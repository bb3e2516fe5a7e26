//! Graceful shutdown (scenario 27's data-plane part): the listener closes, idle clients get
//! 57P01, an open transaction may still commit within the drain time, the rest are cut off.

use std::time::{Duration, Instant};
use tidegate_tests::raw::{self, Raw};
use tidegate_tests::{sqlstate, Broker, Postgres};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_open_transactions_and_closes_idle_clients() {
    let pg = Postgres::start();
    pg.sql("postgres", "CREATE TABLE t (a int)");
    let mut broker = Broker::start(
        &pg,
        "[limits]\nshutdown_timeout = \"3s\"\n[auth]\nmethod = \"trust\"\n",
    )
    .await;
    let addr = broker.addr;
    let mut idle = Raw::connect(addr).await;
    idle.startup("app", "postgres").await;
    let in_tx = broker.connect("postgres").await;
    in_tx
        .batch_execute("BEGIN; INSERT INTO t VALUES (1)")
        .await
        .expect("begin");
    let mut stuck = Raw::connect(addr).await;
    stuck.startup("app", "postgres").await;
    stuck.send(&raw::query("BEGIN")).await;
    stuck.until_ready().await;

    let started = Instant::now();
    let done = broker.begin_shutdown();
    // Idle clients are told at once.
    let m = idle.recv().await.expect("57P01 for the idle client");
    assert_eq!(m.sqlstate().as_deref(), Some("57P01"));
    assert!(idle.closed().await);
    // No new connections.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener closed"
    );
    // The open transaction commits, and its data is there.
    in_tx
        .batch_execute("INSERT INTO t VALUES (2); COMMIT")
        .await
        .expect("commit during drain");
    assert_eq!(pg.sql("postgres", "SELECT count(*) FROM t"), "2");
    // After COMMIT the client is idle, so it is closed too.
    let e = in_tx
        .batch_execute("SELECT 1")
        .await
        .expect_err("closed after its transaction");
    assert!(sqlstate(&e).is_none_or(|c| c == "57P01"), "{e:?}");
    // The transaction that never finishes is cut off at the drain timeout.
    let m = stuck.recv().await.expect("57P01 at the drain timeout");
    assert_eq!(m.sqlstate().as_deref(), Some("57P01"));
    done.await.expect("server task");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(8),
        "{took:?}"
    );
    // Its transaction was rolled back, not committed.
    assert_eq!(pg.sql("postgres", "SELECT count(*) FROM t"), "2");
}
