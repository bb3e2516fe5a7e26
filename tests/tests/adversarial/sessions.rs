//! Session state and the result cache: no cached reply crosses a search_path set over the
//! extended protocol or misses a write, and no backend carries a role, a setting, a prepared
//! statement, a temporary table (or a lock, a cursor, a LISTEN) to the next client.

use super::{client, client_with_options, rows, Env, Variant};
use std::time::Duration;
use tokio_postgres::Client;

async fn one(c: &Client, sql: &str) -> String {
    rows(c, sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .first()
        .and_then(|r| r[0].clone())
        .unwrap_or_else(|| panic!("{sql}: no row"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_set_search_path_changes_the_cache_key() {
    let env = Env::start_with(
        Variant {
            before: "CREATE SCHEMA a; CREATE SCHEMA b; \
                 CREATE TABLE a.t (x int); INSERT INTO a.t VALUES (1); \
                 CREATE TABLE b.t (x int); INSERT INTO b.t VALUES (2); \
                 ALTER ROLE postgres SET search_path = a, public",
            ..Variant::default()
        }
        .cache(),
    )
    .await;
    let first = env.client("app").await;
    assert_eq!(
        one(&first, "SELECT x FROM t").await,
        "1",
        "schema a by default"
    );
    assert_eq!(one(&first, "SELECT x FROM t").await, "1");
    // Changed behind the broker's back: a cached reply still says 1.
    env.direct("UPDATE a.t SET x = 10");
    assert_eq!(
        one(&first, "SELECT x FROM t").await,
        "1",
        "precondition: the example's cache (turned on) serves SELECT x FROM t"
    );

    // A second session sets search_path as a prepared statement (psycopg prepare=True).
    let second = env.client("app").await;
    let set = second
        .prepare("SET search_path TO b")
        .await
        .expect("prepare SET");
    second.execute(&set, &[]).await.expect("execute SET");
    let simple = one(&second, "SELECT x FROM t").await;
    let extended: i32 = second
        .query_one("SELECT x FROM t", &[])
        .await
        .expect("extended read")
        .get(0);
    assert_eq!(
        (simple.as_str(), extended),
        ("2", 2),
        "after a prepared SET search_path TO b, SELECT x FROM t (simple, extended) must read \
         b.t, not a.t's cached 1 (or a.t's 10)"
    );
    // The first session keeps its own.
    assert_eq!(one(&first, "SELECT x FROM t").await, "1");
}

/// The cache serves `TABLE acct` and a read after a multi-statement write only as they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_reads_see_table_statements_and_multi_statement_writes() {
    let env = Env::start_with(Variant::default().cache()).await;
    let app = env.client("app").await;
    let table = |rows: Vec<Vec<Option<String>>>| {
        rows.into_iter()
            .find(|r| r[0].as_deref() == Some("1"))
            .and_then(|r| r[2].clone())
            .expect("acct row 1")
    };
    for _ in 0..2 {
        assert_eq!(table(rows(&app, "TABLE acct").await.expect("TABLE")), "100");
    }
    // Precondition: reads of acct are cached (a change behind the broker's back is not seen).
    env.direct("UPDATE acct SET balance = 101 WHERE id = 1");
    assert_eq!(
        one(&app, "SELECT balance FROM acct WHERE id = 1").await,
        "101",
        "a first read is not cached"
    );
    assert_eq!(
        one(&app, "SELECT balance FROM acct WHERE id = 1").await,
        "101"
    );
    env.direct("UPDATE acct SET balance = 102 WHERE id = 1");
    assert_eq!(
        one(&app, "SELECT balance FROM acct WHERE id = 1").await,
        "101",
        "precondition: the example's cache (turned on) serves a repeated read"
    );
    app.simple_query("UPDATE acct SET balance = 12345 WHERE id = 1")
        .await
        .expect("app writes");
    assert_eq!(
        table(rows(&app, "TABLE acct").await.expect("TABLE")),
        "12345",
        "TABLE acct after acct changed"
    );

    let read = "SELECT balance FROM acct WHERE id = 2";
    for _ in 0..2 {
        assert_eq!(one(&app, read).await, "200");
    }
    app.simple_query("SELECT 1; UPDATE acct SET balance = 777 WHERE id = 2")
        .await
        .expect("a multi-statement write");
    assert_eq!(
        one(&app, read).await,
        "777",
        "a read cached before a multi-statement write to its table"
    );
}

/// Writes that reach a table only indirectly (a trigger, an ON DELETE CASCADE foreign key,
/// TRUNCATE … CASCADE, a partition) invalidate the cached reads of that table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indirect_writes_invalidate_cached_reads() {
    let env = Env::start_with(
        Variant {
            before: "CREATE TABLE parent (id int PRIMARY KEY); \
                     CREATE TABLE child (id int, parent int REFERENCES parent ON DELETE CASCADE); \
                     INSERT INTO parent VALUES (1), (2); INSERT INTO child VALUES (1, 1), (2, 2); \
                     CREATE TABLE events (id int); CREATE TABLE event_log (n int); \
                     CREATE FUNCTION log_event() RETURNS trigger LANGUAGE plpgsql AS \
                       $$BEGIN INSERT INTO event_log VALUES (NEW.id); RETURN NEW; END$$; \
                     CREATE TRIGGER log AFTER INSERT ON events FOR EACH ROW \
                       EXECUTE FUNCTION log_event(); \
                     CREATE TABLE parted (k int) PARTITION BY RANGE (k); \
                     CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (100); \
                     INSERT INTO parted VALUES (1); \
                     CREATE TABLE tparent (id int PRIMARY KEY); \
                     CREATE TABLE tchild (p int REFERENCES tparent); \
                     INSERT INTO tparent VALUES (1); INSERT INTO tchild VALUES (1)",
            ..Variant::default()
        }
        .cache()
        .no_encrypted_columns(),
    )
    .await;
    let app = env.client("app").await;
    let cases = [
        (
            "SELECT count(*) FROM child",
            "DELETE FROM parent WHERE id = 1",
            "ON DELETE CASCADE",
        ),
        (
            "SELECT count(*) FROM event_log",
            "INSERT INTO events VALUES (1)",
            "trigger",
        ),
        (
            "SELECT count(*) FROM parted",
            "INSERT INTO parted_1 VALUES (2)",
            "partition",
        ),
        (
            "SELECT count(*) FROM tchild",
            "TRUNCATE tparent CASCADE",
            "TRUNCATE … CASCADE",
        ),
    ];
    let mut stale = Vec::new();
    for (read, write, what) in cases {
        let before = one(&app, read).await;
        assert_eq!(one(&app, read).await, before);
        app.simple_query(write)
            .await
            .unwrap_or_else(|e| panic!("{write}: {e:?}"));
        let direct = env.direct(read);
        let through = one(&app, read).await;
        if through != direct {
            stale.push(format!(
                "{what}: after {write:?}, {read:?} answered {through} (PostgreSQL: {direct})"
            ));
        }
    }
    assert!(
        stale.is_empty(),
        "stale cached replies:\n  {}",
        stale.join("\n  ")
    );
}

/// What a new client of `app` sees of its session.
const PROBE: &str = "SELECT concat_ws(' | ', \
    'user=' || current_user, 'session_user=' || session_user, \
    'statement_timeout=' || current_setting('statement_timeout'), \
    'search_path=' || current_setting('search_path'), \
    'leak.simple=' || coalesce(current_setting('leak.simple', true), ''), \
    'leak.extended=' || coalesce(current_setting('leak.extended', true), ''), \
    'leak.function=' || coalesce(current_setting('leak.function', true), ''), \
    'prepared=' || (SELECT count(*) FROM pg_prepared_statements), \
    'temp tables=' || (SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema()), \
    'listening=' || (SELECT count(*) FROM pg_listening_channels()), \
    'advisory locks=' || (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' \
        AND pid = pg_backend_pid()), \
    'cursors=' || (SELECT count(*) FROM pg_cursors))";

/// With one backend in the pool (so the next client gets the same one unless the broker
/// throws it away), each way of leaving state behind, then three new clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_backend_state_reaches_the_next_client() {
    let env = Env::start_with(Variant::default().pool_size(1).no_encrypted_columns()).await;
    let clean = one(&env.client("app").await, PROBE).await;
    // (what, statements over the simple protocol, statements over the extended protocol)
    let leakers: [(&str, &[&str], &[&str]); 11] = [
        (
            "SET (simple)",
            &["SET statement_timeout = '4321ms'", "SET leak.simple = 'x'"],
            &[],
        ),
        (
            "SET (extended)",
            &[],
            &["SET leak.extended = 'x'", "SET search_path TO pg_catalog"],
        ),
        (
            "set_config",
            &["SELECT set_config('leak.function', 'x', false)"],
            &[],
        ),
        ("SET ROLE (simple)", &["SET ROLE r1"], &[]),
        ("SET ROLE (extended)", &[], &["SET ROLE r1"]),
        (
            "SET SESSION AUTHORIZATION (extended)",
            &[],
            &["SET SESSION AUTHORIZATION r1"],
        ),
        ("PREPARE", &["PREPARE leak_stmt AS SELECT 1"], &[]),
        (
            "temporary table",
            &["CREATE TEMP TABLE leak_tmp (x int)"],
            &[],
        ),
        ("LISTEN", &["LISTEN leak_chan"], &[]),
        ("advisory lock", &["SELECT pg_advisory_lock(4242)"], &[]),
        (
            "cursor WITH HOLD",
            &["BEGIN; DECLARE leak_cur CURSOR WITH HOLD FOR SELECT 1; COMMIT"],
            &[],
        ),
    ];
    let mut leaks = Vec::new();
    for (what, simple, extended) in leakers {
        {
            let c = env.client("app").await;
            for sql in simple {
                if let Err(e) = c.simple_query(sql).await {
                    println!("{what}: {sql} refused: {e}");
                }
            }
            for sql in extended {
                if let Err(e) = c.execute(*sql, &[]).await {
                    println!("{what}: {sql} refused: {e}");
                }
            }
        }
        // The client is gone; let the broker release its backend.
        tokio::time::sleep(Duration::from_millis(200)).await;
        for n in 1..=3 {
            let c = env.client("app").await;
            let seen = one(&c, PROBE).await;
            if seen != clean {
                leaks.push(format!("after {what}: client {n} saw\n      {seen}"));
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "a clean session sees\n      {clean}\n{}",
        leaks.join("\n")
    );
}

/// A client that logs in with `options=-c role=r1` must not leave the backend acting as r1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_option_role_does_not_leak_to_the_next_client() {
    let env = Env::start_with(Variant::default().pool_size(1)).await;
    let probe = "SELECT current_user || ',' || session_user";
    let clean = one(&env.client("app").await, probe).await;
    match client_with_options(&env.broker, "app", "-c role=r1").await {
        Ok(c) => match rows(&c, probe).await {
            Ok(r) => println!("the -c role=r1 client ran as {:?}", r[0][0]),
            Err(e) => println!("the -c role=r1 client was refused a statement: {e}"),
        },
        Err(e) => println!("the -c role=r1 client was refused: {e}"),
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        let c = client(&env.broker, "app").await;
        seen.push(one(&c, probe).await);
    }
    assert!(
        seen.iter().all(|s| *s == clean),
        "the next three clients of app ran as {seen:?}, not {clean:?}"
    );
}

/// A client cannot grow its session's named statements without bound: past the limit a Parse
/// gets 54000 and the session still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_statements_per_session_are_bounded() {
    let env = Env::start().await;
    let app = env.client("app").await;
    // tokio-postgres names every prepared statement (s0, s1, …).
    let mut kept = Vec::new();
    let mut refused = None;
    for i in 0..10_001 {
        match app.prepare(&format!("SELECT {i}::int")).await {
            Ok(s) => kept.push(s),
            Err(e) => {
                refused = Some((i, tidegate_tests::sqlstate(&e)));
                break;
            }
        }
    }
    assert_eq!(
        refused,
        Some((10_000, Some("54000".to_owned()))),
        "the 10,001st named statement"
    );
    assert_eq!(one(&app, "SELECT 'still usable'").await, "still usable");
    let stmt = &kept[7];
    let r = app
        .query_one(stmt, &[])
        .await
        .expect("an earlier statement runs");
    assert_eq!(r.get::<_, i32>(0), 7);
}

/// Nor its open portals: past the limit a Bind gets 54000, the transaction is aborted as any
/// error aborts it, and after it ends the session binds portals again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_portals_per_transaction_are_bounded() {
    let env = Env::start().await;
    let mut app = env.client("app").await;
    let stmt = app.prepare("SELECT 1::int").await.expect("prepare");
    let tx = app.transaction().await.expect("begin");
    // tokio-postgres names every portal it binds (p0, p1, …) and closes it when dropped.
    let mut open = Vec::new();
    let mut refused = None;
    for i in 0..10_001 {
        match tx.bind(&stmt, &[]).await {
            Ok(p) => open.push(p),
            Err(e) => {
                refused = Some((i, tidegate_tests::sqlstate(&e)));
                break;
            }
        }
    }
    assert_eq!(
        refused,
        Some((10_000, Some("54000".to_owned()))),
        "the 10,001st open portal"
    );
    let after = tx.query_one(&stmt, &[]).await.expect_err("aborted");
    assert_eq!(tidegate_tests::sqlstate(&after).as_deref(), Some("25P02"));
    drop(open);
    tx.rollback().await.expect("rollback");
    // A new transaction starts with none open.
    let tx = app.transaction().await.expect("begin");
    let mut portals = Vec::new();
    for _ in 0..3 {
        portals.push(tx.bind(&stmt, &[]).await.expect("bind"));
    }
    let rows = tx.query_portal(&portals[2], 0).await.expect("fetch");
    assert_eq!(rows[0].get::<_, i32>(0), 1);
    drop(portals);
    tx.commit().await.expect("commit");
}
