//! Session behaviour through TideGate: authentication, GRANTs, cancel, prepared statements
//! across pooled connections, and session state that must not leak between clients.

use std::time::{Duration, Instant};
use tidegate_tests::raw::{self, Raw};
use tidegate_tests::{connect, sqlstate, Broker, Postgres};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_rejects_bad_passwords_and_unknown_users_alike() {
    let pg = Postgres::start();
    let broker = Broker::start(&pg, "").await;
    let ok = connect(&broker.app_url("postgres"))
        .await
        .expect("right password");
    assert_eq!(
        ok.query_one("SELECT 1", &[])
            .await
            .expect("query")
            .get::<_, i32>(0),
        1
    );
    let wrong = connect(&broker.url("app", "nope", "postgres"))
        .await
        .expect_err("wrong password");
    let unknown = connect(&broker.url("mallory", "nope", "postgres"))
        .await
        .expect_err("unknown user");
    assert_eq!(sqlstate(&wrong).as_deref(), Some("28P01"));
    assert_eq!(sqlstate(&unknown).as_deref(), Some("28P01"));
    let (w, u) = (wrong.to_string(), unknown.to_string());
    assert_eq!(
        w.replace("\"app\"", "U"),
        u.replace("\"mallory\"", "U"),
        "same message shape"
    );
    // An unknown database is PostgreSQL's own error, passed through.
    let nodb = connect(&broker.app_url("no_such_db"))
        .await
        .expect_err("no database");
    assert_eq!(sqlstate(&nodb).as_deref(), Some("3D000"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_and_gss_requests_get_a_clean_no() {
    let pg = Postgres::start();
    let broker = Broker::start(&pg, "[auth]\nmethod = \"trust\"\n").await;
    let mut c = Raw::connect(broker.addr).await;
    c.send(&[0, 0, 0, 8, 4, 210, 22, 47]).await; // SSLRequest
    assert_eq!(c.recv_byte().await, Some(b'N'));
    c.send(&[0, 0, 0, 8, 4, 210, 22, 48]).await; // GSSENCRequest
    assert_eq!(c.recv_byte().await, Some(b'N'));
    let greeting = c.startup("app", "postgres").await;
    assert_eq!(
        greeting.last().map(|m| m.tag),
        Some(b'Z'),
        "{}",
        raw::tags(&greeting)
    );
    assert!(greeting.iter().any(|m| m.tag == b'K'), "BackendKeyData");
    assert!(
        greeting.iter().filter(|m| m.tag == b'S').count() >= 10,
        "ParameterStatus"
    );
    // psql with sslmode=require is refused cleanly: no TLS configured.
    let out = tidegate_tests::run_tool(
        "psql",
        &[
            "-X",
            "-d",
            &format!("{}?sslmode=require", broker.app_url("postgres")),
            "-c",
            "select 1",
        ],
        &[],
    )
    .await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("SSL"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_mapped_to_a_role_without_insert_gets_42501() {
    let pg = Postgres::start();
    pg.sql(
        "postgres",
        "CREATE ROLE limited LOGIN; CREATE TABLE t (a int); GRANT SELECT ON t TO limited; INSERT INTO t VALUES (1)",
    );
    let broker = Broker::start(
        &pg,
        "[[users]]\nname = \"reader\"\npassword = \"reader\"\nrole = \"limited\"\n",
    )
    .await;
    let c = connect(&broker.url("reader", "reader", "postgres"))
        .await
        .expect("login");
    let who = c
        .query_one("SELECT current_user::text", &[])
        .await
        .expect("whoami");
    assert_eq!(who.get::<_, String>(0), "limited");
    assert_eq!(
        c.query_one("SELECT count(*) FROM t", &[])
            .await
            .expect("select")
            .get::<_, i64>(0),
        1
    );
    let e = c
        .execute("INSERT INTO t VALUES (2)", &[])
        .await
        .expect_err("insert must fail");
    assert_eq!(sqlstate(&e).as_deref(), Some("42501"));
    let e = c
        .batch_execute("INSERT INTO t VALUES (2)")
        .await
        .expect_err("simple query too");
    assert_eq!(sqlstate(&e).as_deref(), Some("42501"));
    // The app user (acting as the upstream superuser) still can.
    let app = broker.connect("postgres").await;
    app.execute("INSERT INTO t VALUES (3)", &[])
        .await
        .expect("insert as app");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_through_tidegate_stops_the_query_and_forged_keys_do_nothing() {
    let pg = Postgres::start();
    let broker = Broker::start(&pg, "").await;
    let c = broker.connect("postgres").await;
    let token = c.cancel_token();
    let started = Instant::now();
    let sleeper = tokio::spawn(async move { c.simple_query("SELECT pg_sleep(30)").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    token
        .cancel_query(tokio_postgres::NoTls)
        .await
        .expect("send cancel");
    let e = sleeper.await.expect("join").expect_err("cancelled");
    assert_eq!(sqlstate(&e).as_deref(), Some("57014"));
    assert!(
        started.elapsed() < Duration::from_millis(1300),
        "took {:?}",
        started.elapsed()
    );

    // A forged key cancels nothing.
    let c = broker.connect("postgres").await;
    let sleeper =
        tokio::spawn(async move { c.simple_query("SELECT pg_sleep(1.5)").await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(200)).await;
    for (pid, secret) in [(1, 1), (12345, -99), (i32::MAX, 0)] {
        let mut r = Raw::connect(broker.addr).await;
        let mut pkt = vec![0, 0, 0, 16, 4, 210, 22, 46];
        pkt.extend_from_slice(&i32::to_be_bytes(pid));
        pkt.extend_from_slice(&i32::to_be_bytes(secret));
        r.send(&pkt).await;
        assert!(r.closed().await);
    }
    sleeper
        .await
        .expect("join")
        .expect("a forged cancel must not cancel");
}

/// A cancel reaches only the statement it was issued for. PostgreSQL signals its server
/// process asynchronously, so a cancel sent just as a client's statement ends can land after
/// the connection went back to the pool: with one server connection shared by two clients, a
/// client that cancels its own short statements again and again must never cancel the other
/// client's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_cancel_never_reaches_the_next_clients_statement() {
    let pg = Postgres::start();
    let broker = Broker::start(&pg, "[pool]\nsize = 1\n").await;
    let canceller = broker.connect("postgres").await;
    let victim = broker.connect("postgres").await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let victim_task = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let (mut ran, mut cancelled) = (0u32, 0u32);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match victim.simple_query("SELECT pg_sleep(0.005)").await {
                    Ok(_) => ran += 1,
                    Err(e) if sqlstate(&e).as_deref() == Some("57014") => cancelled += 1,
                    Err(e) => panic!("victim: {e}"),
                }
            }
            (ran, cancelled)
        })
    };
    let token = canceller.cancel_token();
    let mut own_cancelled = 0;
    for i in 0..200u64 {
        // The cancel leaves 0 to 14 ms after a 10 ms statement: some land during it, some
        // just after it ended, when the connection may already serve the other client.
        let (done, sent) = tokio::join!(canceller.simple_query("SELECT pg_sleep(0.01)"), async {
            tokio::time::sleep(Duration::from_micros(i % 15 * 1000)).await;
            token.cancel_query(tokio_postgres::NoTls).await
        });
        sent.expect("send cancel");
        match done {
            Ok(_) => {}
            Err(e) if sqlstate(&e).as_deref() == Some("57014") => own_cancelled += 1,
            Err(e) => panic!("canceller: {e}"),
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ran, cancelled) = victim_task.await.expect("join");
    println!("canceller: {own_cancelled}/200 of its own statements cancelled; victim ran {ran}");
    assert!(ran > 0, "the victim ran statements meanwhile");
    assert_eq!(
        cancelled, 0,
        "the victim's statements cancelled by another client's cancel"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_survive_moving_between_server_connections() {
    let pg = Postgres::start();
    let broker = Broker::start(&pg, "[pool]\nsize = 3\n").await;
    let mut clients = Vec::new();
    for _ in 0..6 {
        let c = std::sync::Arc::new(broker.connect("postgres").await);
        let s = c
            .prepare("SELECT $1::int * 2, inet_client_port(), pg_sleep(0.02)::text")
            .await
            .expect("prepare");
        clients.push((c, s));
    }
    let mut pids = std::collections::HashSet::new();
    for round in 0..10i32 {
        let mut tasks = Vec::new();
        for (c, s) in &clients {
            let (c, s) = (c.clone(), s.clone());
            tasks.push(tokio::spawn(
                async move { c.query_one(&s, &[&round]).await },
            ));
        }
        for t in tasks {
            let row = t
                .await
                .expect("join")
                .expect("execute a statement prepared on another connection");
            assert_eq!(row.get::<_, i32>(0), round * 2);
            pids.insert(row.get::<_, i32>(1));
        }
    }
    assert!(
        pids.len() > 1,
        "statements ran on several server connections"
    );
    assert!(pids.len() <= 3, "never more than the pool size");
    // Closing a statement and re-preparing under the same name works.
    let c = &clients[0].0;
    let s = c.prepare("SELECT 'one'").await.expect("prepare");
    drop(s);
    let s = c.prepare("SELECT 'two'").await.expect("prepare again");
    assert_eq!(
        c.query_one(&s, &[]).await.expect("run").get::<_, String>(0),
        "two"
    );
    // A statement the server rejects is reported at Parse.
    let e = c
        .prepare("SELECT * FROM no_such_table")
        .await
        .expect_err("bad statement");
    assert_eq!(sqlstate(&e).as_deref(), Some("42P01"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_state_is_pinned_and_never_leaks_to_the_next_client() {
    let pg = Postgres::start();
    let broker = Broker::start(&pg, "[pool]\nsize = 1\n").await;
    {
        let a = broker.connect("postgres").await;
        a.batch_execute(
            "SET search_path = leak; SET statement_timeout = 1234; PREPARE p AS SELECT 1; \
             CREATE TEMP TABLE mine (x int); SELECT pg_advisory_lock(77); LISTEN chan",
        )
        .await
        .expect("session state");
        // Pinned: the temp table is still there on the next statement.
        a.query("SELECT * FROM mine", &[])
            .await
            .expect("temp table persists");
    }
    // The only server connection comes back clean.
    let b = broker.connect("postgres").await;
    let wait_clean = async {
        loop {
            match b.query_one("SHOW search_path", &[]).await {
                Ok(r) => return r.get::<_, String>(0),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    };
    let sp = tokio::time::timeout(Duration::from_secs(10), wait_clean)
        .await
        .expect("pool freed");
    assert_eq!(sp, "\"$user\", public");
    assert_eq!(
        b.query_one("SHOW statement_timeout", &[])
            .await
            .expect("show")
            .get::<_, String>(0),
        "0"
    );
    b.batch_execute("PREPARE p AS SELECT 2")
        .await
        .expect("no leftover prepared statement");
    assert!(
        b.query("SELECT * FROM mine", &[]).await.is_err(),
        "no leftover temp table"
    );
    let locks = b
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'",
            &[],
        )
        .await
        .expect("locks");
    assert_eq!(locks.get::<_, i64>(0), 0, "no leftover advisory lock");
    let ch = b
        .query_one("SELECT count(*) FROM pg_listening_channels()", &[])
        .await
        .expect("listen");
    assert_eq!(ch.get::<_, i64>(0), 0, "no leftover LISTEN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_parameters_follow_the_client_across_connections() {
    let pg = Postgres::start();
    let broker = Broker::start(&pg, "[pool]\nsize = 1\n").await;
    let a = connect(&format!(
        "{}?options=-c%20TimeZone%3DAsia/Kolkata&application_name=alpha",
        broker.app_url("postgres")
    ))
    .await
    .expect("a");
    let b = connect(&format!(
        "{}?application_name=beta",
        broker.app_url("postgres")
    ))
    .await
    .expect("b");
    for _ in 0..5 {
        let ra = a
            .query_one(
                "SELECT current_setting('TimeZone'), current_setting('application_name')",
                &[],
            )
            .await
            .expect("a");
        let rb = b
            .query_one(
                "SELECT current_setting('TimeZone'), current_setting('application_name')",
                &[],
            )
            .await
            .expect("b");
        assert_eq!(
            (ra.get::<_, String>(0), ra.get::<_, String>(1)),
            ("Asia/Kolkata".into(), "alpha".into())
        );
        assert_eq!(rb.get::<_, String>(1), "beta");
        assert_ne!(rb.get::<_, String>(0), "Asia/Kolkata");
    }
    let _ = raw::sync;
}
