//! The result cache through the PostgreSQL wire protocol (scenarios 11, 12 and 13), in Redis and
//! in process: hits are served without PostgreSQL, writes through any TideGate invalidate what
//! they touch (only after commit), a key never crosses roles or settings, a Redis outage costs
//! no client an error and leaves no stale entry behind, identical concurrent misses run once,
//! and writes at known times keep cached ranges they do not touch.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tidegate_tests::redis::Redis;
use tidegate_tests::{sqlstate, Broker, Postgres};
use tokio_postgres::{Client, SimpleQueryMessage};

fn cache_config(redis_url: &str, extra: &str) -> String {
    format!(
        r#"
[cache]
enabled = true
redis_url = "{redis_url}"
{extra}
"#
    )
}

/// The rows of a simple query, as text.
async fn rows(c: &Client, sql: &str) -> Vec<Vec<Option<String>>> {
    try_rows(c, sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

async fn try_rows(
    c: &Client,
    sql: &str,
) -> Result<Vec<Vec<Option<String>>>, tokio_postgres::Error> {
    Ok(c.simple_query(sql)
        .await?
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect())
            }
            _ => None,
        })
        .collect())
}

/// `SHOW tidegate.cache`, as a map.
async fn counters(c: &Client) -> HashMap<String, String> {
    rows(c, "SHOW tidegate.cache")
        .await
        .into_iter()
        .map(|r| {
            (
                r[0].clone().unwrap_or_default(),
                r[1].clone().unwrap_or_default(),
            )
        })
        .collect()
}

async fn count(c: &Client, name: &str) -> u64 {
    counters(c).await[name].parse().expect("a counter")
}

/// Runs `sql` and reports whether it was answered from the cache.
async fn was_hit(c: &Client, sql: &str) -> (bool, Vec<Vec<Option<String>>>) {
    let before = count(c, "hits").await;
    let r = rows(c, sql).await;
    (count(c, "hits").await > before, r)
}

fn direct_rows(pg: &Postgres, sql: &str) -> String {
    pg.sql("postgres", sql)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_are_served_and_committed_writes_invalidate_in_both_backends() {
    let pg = Postgres::start();
    pg.sql(
        "postgres",
        "CREATE TABLE t (k int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a')",
    );
    let redis = Redis::start();
    for url in [String::new(), redis.url()] {
        let broker = Broker::start(&pg, &cache_config(&url, "max_result_bytes = 4096")).await;
        let c = broker.connect("postgres").await;
        let backend = &counters(&c).await["backend"];
        assert_eq!(backend, if url.is_empty() { "memory" } else { "redis" });
        let q = "SELECT k, v FROM t ORDER BY k";
        let (hit, first) = was_hit(&c, q).await;
        assert!(!hit, "{backend}: the first read misses");
        let (hit, second) = was_hit(&c, q).await;
        assert!(hit, "{backend}: the second read is served from the cache");
        assert_eq!(first, second);

        // Writes through TideGate, simple and extended protocol, invalidate.
        c.simple_query("INSERT INTO t VALUES (2, 'b')")
            .await
            .unwrap();
        let (hit, r) = was_hit(&c, q).await;
        assert!(!hit && r.len() == 2, "{backend}: fresh after INSERT: {r:?}");
        c.execute("UPDATE t SET v = $1 WHERE k = $2", &[&"c", &2i32])
            .await
            .unwrap();
        let (hit, r) = was_hit(&c, q).await;
        assert!(!hit && r[1][1].as_deref() == Some("c"), "{backend}: {r:?}");

        // A rolled-back transaction invalidates nothing; a committed one does, at COMMIT.
        assert!(was_hit(&c, q).await.0);
        c.batch_execute("BEGIN; INSERT INTO t VALUES (3, 'x'); ROLLBACK")
            .await
            .unwrap();
        assert!(was_hit(&c, q).await.0, "{backend}: rollback kept the entry");
        c.batch_execute("BEGIN").await.unwrap();
        c.simple_query("INSERT INTO t VALUES (3, 'x')")
            .await
            .unwrap();
        // Inside the transaction the cache is bypassed: the client sees its own write.
        let (hit, r) = was_hit(&c, q).await;
        assert!(!hit && r.len() == 3, "{backend}: {r:?}");
        c.batch_execute("COMMIT").await.unwrap();
        let other = broker.connect("postgres").await;
        let (hit, r) = was_hit(&other, q).await;
        assert!(!hit && r.len() == 3, "{backend}: fresh after COMMIT: {r:?}");

        // Replies over max_result_bytes are not kept.
        let small = "SELECT repeat(v, 10) FROM t";
        rows(&c, small).await;
        assert!(
            was_hit(&c, small).await.0,
            "{backend}: a small reply is kept"
        );
        let big = "SELECT repeat(v, 3000) FROM t";
        rows(&c, big).await;
        assert!(
            !was_hit(&c, big).await.0,
            "{backend}: a reply over the cap is not"
        );

        // Never cached: volatile functions.
        let a = rows(&c, "SELECT random()").await;
        let b = rows(&c, "SELECT random()").await;
        assert_ne!(a, b);

        assert_eq!(
            rows(&c, q)
                .await
                .iter()
                .map(|r| format!("{}|{}", r[0].clone().unwrap(), r[1].clone().unwrap()))
                .collect::<Vec<_>>()
                .join("\n"),
            direct_rows(&pg, q)
        );
        pg.sql(
            "postgres",
            "DELETE FROM t WHERE k > 1; UPDATE t SET v = 'a'",
        );
        broker.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_never_cross_roles_settings_or_revoked_grants() {
    let pg = Postgres::start();
    pg.sql(
        "postgres",
        "CREATE ROLE alice LOGIN; CREATE ROLE bob LOGIN;
         CREATE TABLE secret (x int); INSERT INTO secret VALUES (42);
         GRANT SELECT ON secret TO alice;
         CREATE SCHEMA a; CREATE SCHEMA b;
         CREATE TABLE a.t (x int); INSERT INTO a.t VALUES (1);
         CREATE TABLE b.t (x int); INSERT INTO b.t VALUES (2);
         CREATE TABLE tz (t timestamptz); INSERT INTO tz VALUES ('2024-01-01 00:00+00');
         CREATE TABLE r (owner text, x int); INSERT INTO r VALUES ('alice', 1), ('bob', 2);
         ALTER TABLE r ENABLE ROW LEVEL SECURITY;
         CREATE POLICY mine ON r USING (owner = current_user);
         GRANT SELECT ON r, tz TO alice, bob;",
    );
    let users = r#"
[[users]]
name = "alice"
password = "alice"
role = "alice"
[[users]]
name = "bob"
password = "bob"
role = "bob"
"#;
    let broker = Broker::start(&pg, &cache_config("", users)).await;
    let alice = tidegate_tests::connect(&broker.url("alice", "alice", "postgres"))
        .await
        .unwrap();
    let bob = tidegate_tests::connect(&broker.url("bob", "bob", "postgres"))
        .await
        .unwrap();
    let app = broker.connect("postgres").await;
    let q = "SELECT x FROM secret";

    // The MaxScale case: bob never gets alice's cached rows.
    assert!(!was_hit(&alice, q).await.0);
    let (hit, r) = was_hit(&alice, q).await;
    assert!(hit && r[0][0].as_deref() == Some("42"));
    let e = bob.simple_query(q).await.expect_err("bob has no grant");
    assert_eq!(sqlstate(&e).as_deref(), Some("42501"));

    // SET ROLE and SET SESSION AUTHORIZATION change the key.
    for switch in ["SET ROLE bob", "SET SESSION AUTHORIZATION bob"] {
        let c = broker.connect("postgres").await;
        rows(&c, q).await;
        assert!(was_hit(&c, q).await.0, "the superuser's read is cached");
        c.simple_query(switch).await.unwrap();
        let e = c.simple_query(q).await.expect_err(switch);
        assert_eq!(sqlstate(&e).as_deref(), Some("42501"), "{switch}");
    }

    // search_path and TimeZone are part of the key.
    let one = broker.connect("postgres").await;
    let two = broker.connect("postgres").await;
    one.simple_query("SET search_path = a, public")
        .await
        .unwrap();
    two.simple_query("SET search_path = b, public")
        .await
        .unwrap();
    for _ in 0..2 {
        assert_eq!(
            rows(&one, "SELECT x FROM t").await[0][0].as_deref(),
            Some("1")
        );
        assert_eq!(
            rows(&two, "SELECT x FROM t").await[0][0].as_deref(),
            Some("2")
        );
    }
    one.simple_query("SET TimeZone = 'UTC'").await.unwrap();
    two.simple_query("SET TimeZone = 'Asia/Tokyo'")
        .await
        .unwrap();
    for _ in 0..2 {
        assert_eq!(
            rows(&one, "SELECT t FROM tz").await[0][0].as_deref(),
            Some("2024-01-01 00:00:00+00")
        );
        assert_eq!(
            rows(&two, "SELECT t FROM tz").await[0][0].as_deref(),
            Some("2024-01-01 09:00:00+09")
        );
    }

    // Tables with row-level security are never cached.
    let bypasses = count(&app, "bypasses").await;
    for _ in 0..2 {
        assert_eq!(
            rows(&alice, "SELECT x FROM r").await,
            vec![vec![Some("1".into())]]
        );
        assert_eq!(
            rows(&bob, "SELECT x FROM r").await,
            vec![vec![Some("2".into())]]
        );
    }
    assert!(count(&app, "bypasses").await >= bypasses + 4);

    // A REVOKE rolled back invalidates nothing; a REVOKE invalidates.
    assert!(was_hit(&alice, q).await.0);
    app.batch_execute("BEGIN; REVOKE SELECT ON secret FROM alice; ROLLBACK")
        .await
        .unwrap();
    assert!(
        was_hit(&alice, q).await.0,
        "the rolled-back REVOKE kept the entry"
    );
    app.simple_query("REVOKE SELECT ON secret FROM alice")
        .await
        .unwrap();
    let e = alice.simple_query(q).await.expect_err("revoked");
    assert_eq!(sqlstate(&e).as_deref(), Some("42501"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_one_instance_refreshes_the_other() {
    let pg = Postgres::start();
    pg.sql(
        "postgres",
        "CREATE TABLE t (k int, v int); INSERT INTO t VALUES (1, 1)",
    );
    let redis = Redis::start();
    let a = Broker::start(&pg, &cache_config(&redis.url(), "")).await;
    let b = Broker::start(&pg, &cache_config(&redis.url(), "")).await;
    let ca = a.connect("postgres").await;
    let cb = b.connect("postgres").await;
    let q = "SELECT sum(v) FROM t";
    // Each instance's first read in a database starts its LISTEN for outside writes.
    rows(&ca, "SELECT 1").await;
    rows(&cb, q).await;
    let (hit, r) = was_hit(&cb, q).await;
    assert!(hit && r[0][0].as_deref() == Some("1"));
    // A reads B's entry from the shared Redis.
    assert!(was_hit(&ca, q).await.0);
    ca.simple_query("INSERT INTO t VALUES (2, 10)")
        .await
        .unwrap();
    let (hit, r) = was_hit(&cb, q).await;
    assert!(!hit, "B's next read is fresh");
    assert_eq!(r[0][0].as_deref(), Some("11"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outages_cost_no_client_error_and_leave_nothing_stale() {
    let pg = Postgres::start();
    pg.sql(
        "postgres",
        "CREATE TABLE m (k int PRIMARY KEY, v bigint);
         INSERT INTO m SELECT g, 0 FROM generate_series(1, 20) g",
    );
    let mut redis = Redis::start();
    let broker = Arc::new(Broker::start(&pg, &cache_config(&redis.url(), "")).await);
    let c = broker.connect("postgres").await;
    let q = "SELECT k, v FROM m WHERE k = 1";

    // A hung Redis (SIGSTOP) keeps its entries; a write made meanwhile must not let them be
    // served once it answers again.
    rows(&c, q).await;
    assert!(was_hit(&c, q).await.0);
    redis.freeze(true);
    let started = Instant::now();
    c.simple_query("UPDATE m SET v = 7 WHERE k = 1")
        .await
        .unwrap();
    for _ in 0..10 {
        assert_eq!(rows(&c, q).await[0][1].as_deref(), Some("7"));
    }
    println!(
        "10 reads and a write with Redis hung: {:?}",
        started.elapsed()
    );
    redis.freeze(false);
    tokio::time::sleep(Duration::from_millis(1200)).await; // past the breaker's retry
    for _ in 0..3 {
        assert_eq!(
            rows(&c, q).await[0][1].as_deref(),
            Some("7"),
            "no stale read after Redis came back"
        );
    }

    // 30 s of mixed reads and writes; Redis killed at 10 s and back at 20 s.
    let stop = Instant::now() + Duration::from_secs(30);
    let mut tasks = Vec::new();
    for worker in 0..6u64 {
        let broker = broker.clone();
        tasks.push(tokio::spawn(async move {
            let c = broker.connect("postgres").await;
            let (mut ops, mut errors) = (0u64, Vec::new());
            let mut n = worker;
            while Instant::now() < stop {
                n = n
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let k = 1 + (n >> 33) % 20;
                let sql = if (n >> 20) % 5 == 0 {
                    format!("UPDATE m SET v = v + 1 WHERE k = {k}")
                } else {
                    format!("SELECT k, v FROM m WHERE k = {k}")
                };
                if let Err(e) = c.simple_query(&sql).await {
                    errors.push(format!("{sql}: {e}"));
                }
                ops += 1;
            }
            (ops, errors)
        }));
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    redis.kill();
    tokio::time::sleep(Duration::from_secs(10)).await;
    redis.restart();
    let mut total = 0;
    for t in tasks {
        let (ops, errors) = t.await.unwrap();
        assert!(errors.is_empty(), "client errors: {errors:?}");
        total += ops;
    }
    let stats = counters(&c).await;
    println!("{total} operations, 0 errors; cache counters: {stats:?}");
    assert!(
        stats["errors"].parse::<u64>().unwrap() > 0,
        "the outage was seen"
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for k in 1..=20 {
        let sql = format!("SELECT k, v FROM m WHERE k = {k}");
        for _ in 0..2 {
            let r = rows(&c, &sql).await;
            let got = format!("{}|{}", r[0][0].clone().unwrap(), r[0][1].clone().unwrap());
            assert_eq!(got, direct_rows(&pg, &sql), "k = {k}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_identical_misses_run_once() {
    let pg = Postgres::start_with(&[("shared_preload_libraries", "pg_stat_statements")]);
    pg.sql(
        "postgres",
        "CREATE EXTENSION pg_stat_statements;
         CREATE TABLE big AS SELECT g FROM generate_series(1, 1000000) g; ANALYZE big",
    );
    let broker = Broker::start(&pg, &cache_config("", "")).await;
    let mut clients = Vec::new();
    for _ in 0..100 {
        clients.push(broker.connect("postgres").await);
    }
    pg.sql("postgres", "SELECT pg_stat_statements_reset()");
    let q = "SELECT count(*) FROM big a JOIN big b USING (g)";
    let barrier = Arc::new(tokio::sync::Barrier::new(100));
    let mut tasks = Vec::new();
    for c in clients {
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            rows(&c, q).await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), vec![vec![Some("1000000".to_owned())]]);
    }
    let calls = pg.sql(
        "postgres",
        "SELECT sum(calls) FROM pg_stat_statements WHERE query LIKE '%big a JOIN big b%'",
    );
    assert_eq!(calls, "1", "100 identical concurrent misses ran once");
}

async fn time_aware(pg: &Postgres, extra: &str) {
    let broker = Broker::start(pg, &cache_config("", extra)).await;
    let c = broker.connect("postgres").await;
    let january = "SELECT count(*), sum(v) FROM readings \
                   WHERE time >= '2024-01-01 00:00+00' AND time < '2024-01-03 00:00+00'";
    let june = "SELECT count(*), sum(v) FROM readings \
                WHERE time >= '2024-06-01 00:00+00' AND time < '2024-06-03 00:00+00'";
    for q in [january, june] {
        rows(&c, q).await;
        assert!(was_hit(&c, q).await.0, "{q}");
    }
    c.simple_query("INSERT INTO readings (time, v) VALUES ('2024-01-02 12:00+00', 5)")
        .await
        .expect("insert");
    let (hit, r) = was_hit(&c, january).await;
    assert!(!hit, "the write at 2024-01-02 invalidates January");
    assert_eq!(r[0][0].as_deref(), Some("3"));
    let (hit, r) = was_hit(&c, june).await;
    assert!(hit, "and keeps June");
    assert_eq!(r[0][0].as_deref(), Some("2"));
    // A write whose time is unknown invalidates every range.
    c.simple_query("UPDATE readings SET v = v + 1 WHERE v = 1")
        .await
        .expect("update");
    assert!(!was_hit(&c, june).await.0);
}

const READINGS: &str = "CREATE TABLE readings (time timestamptz NOT NULL, v int);
    INSERT INTO readings VALUES ('2024-01-01 10:00+00', 1), ('2024-01-02 10:00+00', 2),
      ('2024-06-01 10:00+00', 1), ('2024-06-02 10:00+00', 2)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_aware_invalidation_on_a_plain_table() {
    let pg = Postgres::start();
    pg.sql("postgres", READINGS);
    time_aware(&pg, "time_columns = [\"readings.time\"]").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_aware_invalidation_on_a_hypertable() {
    let Some(pg) = Postgres::start_timescale() else {
        return;
    };
    pg.sql("postgres", READINGS);
    pg.sql(
        "postgres",
        "SELECT create_hypertable('readings', 'time', migrate_data => true)",
    );
    time_aware(&pg, "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_are_cached_per_parameter_value() {
    let pg = Postgres::start();
    pg.sql(
        "postgres",
        "CREATE TABLE t (k int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a'), (2, 'b')",
    );
    let broker = Broker::start(&pg, &cache_config("", "")).await;
    let c = broker.connect("postgres").await;
    let st = c
        .prepare("SELECT k, v FROM t WHERE k = $1")
        .await
        .expect("prepare");
    let read = |k: i32| {
        let (c, st) = (&c, &st);
        async move {
            let before = count(c, "hits").await;
            let rows = c.query(st, &[&k]).await.expect("query");
            let v: Vec<(i32, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
            (count(c, "hits").await > before, v)
        }
    };
    assert_eq!(read(1).await, (false, vec![(1, "a".to_owned())]));
    assert_eq!(read(1).await, (true, vec![(1, "a".to_owned())]));
    assert_eq!(
        read(2).await,
        (false, vec![(2, "b".to_owned())]),
        "another value, another key"
    );
    assert_eq!(read(2).await, (true, vec![(2, "b".to_owned())]));
    // A prepared write invalidates at each execution.
    let up = c
        .prepare("UPDATE t SET v = $1 WHERE k = $2")
        .await
        .expect("prepare");
    c.execute(&up, &[&"z", &1i32]).await.expect("update");
    assert_eq!(read(1).await, (false, vec![(1, "z".to_owned())]));
    c.execute(&up, &[&"y", &1i32]).await.expect("update");
    assert_eq!(read(1).await, (false, vec![(1, "y".to_owned())]));

    // pgbench's prepared and extended modes run unchanged with the cache on.
    tidegate_tests::pgbench_init(&broker.app_url("postgres")).await;
    for mode in ["prepared", "extended", "simple"] {
        let out = tidegate_tests::run_tool(
            "pgbench",
            &[
                "-n",
                "-S",
                "-M",
                mode,
                "-c",
                "4",
                "-t",
                "200",
                &broker.app_url("postgres"),
            ],
            &[],
        )
        .await;
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{mode}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(tidegate_tests::pgbench_failed(&report), 0, "{mode}");
    }
    let stats = counters(&c).await;
    println!("after pgbench: {stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_made_outside_tidegate_reach_the_cache_through_the_trigger_or_ttl() {
    let pg = Postgres::start();
    pg.sql(
        "postgres",
        "CREATE TABLE t (v int); INSERT INTO t VALUES (1);
         CREATE TABLE u (v int); INSERT INTO u VALUES (1)",
    );
    let extra = "[[cache.rules]]\ntable = \"u\"\nttl = \"1s\"\n";
    let text = tidegate_tests::base_config(&pg, &cache_config("", extra));
    let dir = tidegate_tests::fresh_dir().expect("temp dir");
    let path = dir.join("tidegate.toml");
    std::fs::write(&path, &text).expect("write config");
    let out = tidegate_tests::run_tool(
        tidegate_tests::tidegate_bin().to_str().expect("path"),
        &[
            "cache",
            "trigger",
            "--config",
            path.to_str().expect("path"),
            "t",
        ],
        &[],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let broker = Broker::start(&pg, &cache_config("", extra)).await;
    let c = broker.connect("postgres").await;
    rows(&c, "SELECT v FROM t").await;
    assert!(was_hit(&c, "SELECT v FROM t").await.0);
    rows(&c, "SELECT v FROM u").await;
    pg.sql("postgres", "UPDATE t SET v = 2; UPDATE u SET v = 2");
    // t has the trigger: its NOTIFY invalidates within moments.
    let deadline = Instant::now() + Duration::from_secs(5);
    while rows(&c, "SELECT v FROM t").await[0][0].as_deref() != Some("2") {
        assert!(
            Instant::now() < deadline,
            "the trigger's notice never invalidated t"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // u has none: its reads may be stale for up to their TTL, never longer.
    let stale = rows(&c, "SELECT v FROM u").await;
    println!("u right after the outside write: {stale:?}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        rows(&c, "SELECT v FROM u").await[0][0].as_deref(),
        Some("2")
    );
}

/// An instance that cannot reach Redis cannot bump the counters its write invalidates: it tells
/// the other instances through PostgreSQL, and they drop their entries before serving again
/// (the local flag alone would leave them serving the stale reply until its TTL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_one_instance_loses_reaches_the_others() {
    let pg = Postgres::start();
    pg.sql(
        "postgres",
        "CREATE TABLE t (k int, v int); INSERT INTO t VALUES (1, 1)",
    );
    let redis = Redis::start();
    // Nothing listens on this port: A's every Redis operation fails.
    let dead = format!("redis://127.0.0.1:{}", tidegate_tests::free_port());
    let a = Broker::start(&pg, &cache_config(&dead, "timeout = \"20ms\"")).await;
    let b = Broker::start(&pg, &cache_config(&redis.url(), "")).await;
    let ca = a.connect("postgres").await;
    let cb = b.connect("postgres").await;
    let q = "SELECT sum(v) FROM t";
    rows(&ca, "SELECT 1").await; // A listens in the database too.
    rows(&cb, q).await;
    let (hit, r) = was_hit(&cb, q).await;
    assert!(
        hit && r[0][0].as_deref() == Some("1"),
        "B serves from Redis"
    );
    ca.simple_query("UPDATE t SET v = 2")
        .await
        .expect("write through A");
    // The notice travels through PostgreSQL; B must not answer from the old entry meanwhile
    // for long, and never after it arrived.
    let mut fresh = false;
    for _ in 0..50 {
        if rows(&cb, q).await[0][0].as_deref() == Some("2") {
            fresh = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(fresh, "B still serves the reply A's write invalidated");
    let (_, r) = was_hit(&cb, q).await;
    assert_eq!(r[0][0].as_deref(), Some("2"));
}

/// `cache.admission = "adaptive"` (the default): a statement shape whose lookups never hit —
/// a point read with a fresh key each time — stops costing a lookup and a store after a window
/// of misses (counted as `unadmitted`); its answers stay right, and a shape that does repeat is
/// still served from the cache. With `always`, every read is looked up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shape_that_never_hits_stops_paying_for_lookups() {
    let pg = Postgres::start();
    pg.sql(
        "postgres",
        "CREATE TABLE acc (id int PRIMARY KEY, v int);
         INSERT INTO acc SELECT g, g * 2 FROM generate_series(1, 2000) g",
    );
    for (admission, expect_unadmitted) in [("adaptive", true), ("always", false)] {
        let redis = Redis::start();
        let broker = Broker::start(
            &pg,
            &cache_config(&redis.url(), &format!("admission = \"{admission}\"")),
        )
        .await;
        let c = broker.connect("postgres").await;
        let misses = count(&c, "misses").await;
        for id in 1..=1000 {
            let r = rows(&c, &format!("SELECT v FROM acc WHERE id = {id}")).await;
            assert_eq!(r[0][0].as_deref(), Some((id * 2).to_string().as_str()));
        }
        let unadmitted = count(&c, "unadmitted").await;
        let looked_up = count(&c, "misses").await - misses;
        println!("{admission}: {looked_up} lookups, {unadmitted} reads not looked up");
        if expect_unadmitted {
            assert!(
                unadmitted >= 700,
                "unique keys stop being looked up: {unadmitted}"
            );
            assert!(looked_up <= 300, "lookups: {looked_up}");
        } else {
            assert_eq!(unadmitted, 0);
            assert_eq!(looked_up, 1000);
        }
        // A repeated read of another shape is still cached.
        let q = "SELECT count(*) FROM acc WHERE v > 10";
        rows(&c, q).await;
        let (hit, r) = was_hit(&c, q).await;
        assert!(hit, "{admission}: a repeated read is served from the cache");
        assert_eq!(r[0][0].as_deref(), Some("1995"));
        broker.shutdown().await;
    }
}

/// The commonest time-series aggregate on plain PostgreSQL is cached: `date_trunc` on a
/// `timestamptz` is STABLE only because it reads TimeZone, which every cache key holds — and a
/// session with another TimeZone gets its own entry, with its own buckets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_date_trunc_aggregate_is_cached_per_time_zone() {
    let pg = Postgres::start();
    pg.sql(
        "postgres",
        "CREATE TABLE m (time timestamptz, v float8);
         INSERT INTO m SELECT '2024-01-01 00:00+00'::timestamptz + g * interval '1 minute', g
         FROM generate_series(0, 299) g",
    );
    let redis = Redis::start();
    let broker = Broker::start(&pg, &cache_config(&redis.url(), "")).await;
    let c = broker.connect("postgres").await;
    let q = "SELECT date_trunc('hour', time)::text AS h, avg(v) FROM m GROUP BY 1 ORDER BY 1";
    rows(&c, "SET TimeZone = 'UTC'").await;
    let utc = rows(&c, q).await;
    let (hit, again) = was_hit(&c, q).await;
    assert!(hit, "the date_trunc aggregate is served from the cache");
    assert_eq!(again, utc);
    assert_eq!(utc[0][0].as_deref(), Some("2024-01-01 00:00:00+00"));
    // Another time zone: its own entry, its own answer.
    let other = broker.connect("postgres").await;
    rows(&other, "SET TimeZone = 'Asia/Kolkata'").await;
    let (hit, kolkata) = was_hit(&other, q).await;
    assert!(
        !hit,
        "a session in another time zone does not get the UTC entry"
    );
    assert_eq!(kolkata[0][0].as_deref(), Some("2024-01-01 05:00:00+05:30"));
}

/// Redis killed under `pgbench -S -c 4` with the cache on, and started again: no client
/// aborts and no transaction fails (the cache is bypassed, never an error).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_under_pgbench_fails_no_transaction() {
    let pg = Postgres::start();
    let mut redis = Redis::start();
    let broker = Broker::start(&pg, &cache_config(&redis.url(), "")).await;
    tidegate_tests::pgbench_init(&pg.url("postgres")).await;
    let url = broker.app_url("postgres");
    let bench = tokio::spawn(async move {
        tidegate_tests::run_tool("pgbench", &["-n", "-S", "-c", "4", "-T", "9", &url], &[]).await
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    redis.kill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    redis.restart();
    let out = bench.await.unwrap();
    let report = tidegate_tests::output_text(&out);
    assert!(out.status.success(), "{report}");
    assert!(!report.contains("aborted"), "{report}");
    assert_eq!(tidegate_tests::pgbench_failed(&report), 0, "{report}");
    let processed = tidegate_tests::pgbench_processed(&report);
    assert!(processed > 1000, "{report}");
    println!("pgbench -S across a Redis kill: {processed} transactions, 0 failed");
}
