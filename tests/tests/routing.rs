//! Read/write routing with a real primary and two streaming replicas started by the harness.

use std::collections::HashMap;
use tidegate_tests::{sqlstate, Broker, Postgres};

async fn in_recovery(c: &tokio_postgres::Client, sql: &str) -> bool {
    tidegate_tests::first_value(c, sql).await == "t"
}

/// `n` caught-up streaming replicas of `primary` and TideGate in front of them all, with
/// `extra` TOML after the replica list (sections such as `[routing]`).
async fn replicas_and_broker(primary: &Postgres, n: usize, extra: &str) -> (Vec<Postgres>, Broker) {
    let replicas: Vec<Postgres> = (0..n).map(|_| primary.start_replica()).collect();
    for r in &replicas {
        r.wait_caught_up(primary);
    }
    let list: Vec<String> = replicas
        .iter()
        .map(|r| format!("\"127.0.0.1:{}\"", r.port))
        .collect();
    let broker = Broker::start(
        primary,
        &format!("[upstream]\nreplicas = [{}]\n{extra}", list.join(", ")),
    )
    .await;
    (replicas, broker)
}

/// A primary with `setup` applied, one replica, and TideGate (see [`replicas_and_broker`]).
async fn primary_and_replica(setup: &str, extra: &str) -> (Postgres, Postgres, Broker) {
    let primary = Postgres::start();
    primary.sql("postgres", setup);
    let (mut replicas, broker) = replicas_and_broker(&primary, 1, extra).await;
    let r = replicas.remove(0);
    (primary, r, broker)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_to_replicas_and_everything_else_to_the_primary() {
    let primary = Postgres::start();
    primary.sql(
        "postgres",
        "CREATE TABLE t (id serial PRIMARY KEY, a int); CREATE SEQUENCE s; INSERT INTO t (a) VALUES (1)",
    );
    let (replicas, broker) =
        replicas_and_broker(&primary, 2, "[routing]\nread_your_writes = \"off\"\n").await;
    let (r1, r2) = (&replicas[0], &replicas[1]);
    let c = broker.connect("postgres").await;

    // Plain reads outside transactions: replicas, spread across both.
    let mut ports = HashMap::new();
    for _ in 0..20 {
        assert!(
            in_recovery(&c, "SELECT pg_is_in_recovery()").await,
            "a read on a replica"
        );
        let row = c
            .query_one("SELECT inet_server_port()", &[])
            .await
            .expect("port");
        *ports.entry(row.get::<_, i32>(0)).or_insert(0) += 1;
    }
    assert_eq!(ports.len(), 2, "both replicas serve reads: {ports:?}");
    // The extended protocol routes the same way (tokio-postgres: Parse/Describe, then Bind/Execute).
    let row = c
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .expect("extended");
    assert!(row.get::<_, bool>(0));

    // Primary: writes, nextval, writing CTEs, FOR UPDATE, transactions, hints.
    let primary_only = [
        "SELECT pg_is_in_recovery() FROM (SELECT nextval('s')) x",
        "WITH w AS (INSERT INTO t (a) VALUES (2) RETURNING id) SELECT pg_is_in_recovery() FROM w",
        "SELECT pg_is_in_recovery() FROM t WHERE id = 1 FOR UPDATE",
        "/* tidegate:primary */ SELECT pg_is_in_recovery()",
        "WITH w AS (UPDATE t SET a = a + 1 WHERE id = 1 RETURNING 1) SELECT pg_is_in_recovery() FROM w",
    ];
    for sql in primary_only {
        assert!(!in_recovery(&c, sql).await, "{sql} must run on the primary");
    }
    c.batch_execute("BEGIN").await.expect("begin");
    assert!(
        !in_recovery(&c, "SELECT pg_is_in_recovery()").await,
        "inside a transaction: primary"
    );
    c.batch_execute("COMMIT").await.expect("commit");
    // BEGIN READ ONLY: the whole transaction on a replica.
    c.batch_execute("BEGIN READ ONLY")
        .await
        .expect("begin read only");
    assert!(in_recovery(&c, "SELECT pg_is_in_recovery()").await);
    assert!(in_recovery(&c, "SELECT pg_is_in_recovery()").await);
    c.batch_execute("COMMIT").await.expect("commit");
    // Writes succeed (no 25006 from a read-only standby).
    c.execute("INSERT INTO t (a) VALUES (3)", &[])
        .await
        .expect("insert");
    let n: i64 = c
        .query_one("SELECT nextval('s')", &[])
        .await
        .expect("nextval")
        .get(0);
    assert!(n >= 2);
    let stmt = c
        .prepare("UPDATE t SET a = $1 WHERE id = 1")
        .await
        .expect("prepare");
    c.execute(&stmt, &[&7i32])
        .await
        .expect("update through a prepared statement");
    // A multi-statement string with a write goes to the primary as a whole.
    c.batch_execute("SELECT 1; INSERT INTO t (a) VALUES (4); SELECT 2")
        .await
        .expect("batch");
    // Unknown functions are not trusted on a replica.
    primary.sql(
        "postgres",
        "CREATE FUNCTION bump() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    );
    r1.wait_caught_up(&primary);
    r2.wait_caught_up(&primary);
    assert!(!in_recovery(&c, "SELECT pg_is_in_recovery() WHERE bump() = 1").await);
    // SET tidegate.route is the broker's: it steers reads without pinning the session.
    c.batch_execute("SET tidegate.route = 'primary'")
        .await
        .expect("route hint");
    assert!(
        !in_recovery(&c, "SELECT pg_is_in_recovery()").await,
        "tidegate.route = primary"
    );
    c.batch_execute("SET tidegate.route = 'any'")
        .await
        .expect("route hint");
    assert!(
        in_recovery(&c, "SELECT pg_is_in_recovery()").await,
        "tidegate.route = any"
    );
    // Session-pinned clients stay on the primary.
    c.batch_execute("SET application_name = 'pinned'")
        .await
        .expect("set");
    assert!(
        !in_recovery(&c, "SELECT pg_is_in_recovery()").await,
        "pinned session: primary"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_replica_is_banned_and_reads_fall_back() {
    let primary = Postgres::start();
    let r1 = primary.start_replica();
    r1.wait_caught_up(&primary);
    let dead_port = tidegate_tests::free_port();
    let broker = Broker::start(
        &primary,
        &format!(
            "[upstream]\nreplicas = [\"127.0.0.1:{}\", \"127.0.0.1:{dead_port}\"]\n[routing]\nban_time = \"30s\"\n[pool]\nconnect_timeout = \"1s\"\n",
            r1.port
        ),
    )
    .await;
    let c = broker.connect("postgres").await;
    for _ in 0..20 {
        let row = c.query_one("SELECT pg_is_in_recovery()", &[]).await;
        assert!(row
            .expect("no client error while a replica is down")
            .get::<_, bool>(0));
    }
    // Both replicas down: reads go to the primary without errors.
    r1.stop_immediate();
    let mut on_primary = 0;
    for _ in 0..10 {
        match c.query_one("SELECT pg_is_in_recovery()", &[]).await {
            Ok(r) => on_primary += usize::from(!r.get::<_, bool>(0)),
            Err(e) => {
                // The read in flight when the replica died may fail once.
                assert!(
                    sqlstate(&e).is_none_or(|s| s.starts_with("08") || s == "57P01"),
                    "{e:?}"
                );
            }
        }
    }
    assert!(
        on_primary >= 9,
        "reads fall back to the primary ({on_primary}/10)"
    );
}

/// A primary with table `t`, one replica applying WAL 300 ms late, and TideGate with `extra`
/// after the replica list.
async fn delayed_replica(extra: &str) -> (Postgres, Postgres, Broker) {
    let primary = Postgres::start();
    primary.sql("postgres", "CREATE TABLE t (id int PRIMARY KEY)");
    let r = primary.start_replica();
    r.wait_caught_up(&primary);
    r.sql(
        "postgres",
        "ALTER SYSTEM SET recovery_min_apply_delay = '300ms'",
    );
    r.sql("postgres", "SELECT pg_reload_conf()");
    let broker = Broker::start(
        &primary,
        &format!(
            "[upstream]\nreplicas = [\"127.0.0.1:{}\"]\n[routing]\ncheck_interval = \"200ms\"\n{extra}",
            r.port
        ),
    )
    .await;
    (primary, r, broker)
}

/// Inserts `n` rows starting at `from`, reading each back at once; returns the misses.
async fn write_then_read(c: &tokio_postgres::Client, from: i32, n: i32) -> usize {
    let mut misses = 0;
    for id in from..from + n {
        c.execute("INSERT INTO t VALUES ($1)", &[&id])
            .await
            .expect("insert");
        let found: i64 = c
            .query_one("SELECT count(*) FROM t WHERE id = $1", &[&id])
            .await
            .expect("read")
            .get(0);
        misses += usize::from(found != 1);
    }
    misses
}

/// Scenario 6 in the default `lsn` mode: 0 misses in 1,000 write-then-read pairs with a replica
/// 300 ms behind; the reads that could not use the replica are counted; once the replica has
/// replayed the client's last write, its reads return there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reads_its_own_writes_despite_a_delayed_replica() {
    let (_primary, _r, broker) = delayed_replica("").await;
    let c = broker.connect("postgres").await;
    assert!(
        in_recovery(&c, "SELECT pg_is_in_recovery()").await,
        "reads start on the replica"
    );
    assert_eq!(
        write_then_read(&c, 0, 1000).await,
        0,
        "reads missed the client's own writes"
    );
    let redirects = broker
        .shared
        .stats
        .ryw_redirects
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        redirects >= 900,
        "reads held back from the replica: {redirects}"
    );
    // Another client, which wrote nothing, reads from the replica (once the monitor has seen
    // it replay within max_lag again).
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let other = broker.connect("postgres").await;
    assert!(in_recovery(&other, "SELECT pg_is_in_recovery()").await);
    // The replica has replayed this client's last write by now: its reads go back there.
    let mut back = false;
    for _ in 0..40 {
        if in_recovery(&c, "SELECT pg_is_in_recovery()").await {
            back = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(back, "reads return to the replica once it has the write");
}

/// Read-your-writes waits for the commit itself: with `synchronous_commit = off` the commit
/// record is inserted into the WAL but not yet written when the client has its reply, so the
/// write position (`pg_current_wal_lsn()`) is behind it and a replica that replayed that far
/// lacks the commit. The insert position covers it: 0 misses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_your_writes_covers_an_asynchronous_commit() {
    let primary = Postgres::start();
    primary.sql("postgres", "CREATE TABLE t (id int PRIMARY KEY)");
    primary.sql("postgres", "ALTER SYSTEM SET synchronous_commit = off");
    // The WAL writer writes asynchronous commits at most this late (unless a page fills).
    primary.sql("postgres", "ALTER SYSTEM SET wal_writer_delay = '10s'");
    primary.sql("postgres", "SELECT pg_reload_conf()");
    let r = primary.start_replica();
    r.wait_caught_up(&primary);
    let broker = Broker::start(
        &primary,
        &format!(
            "[upstream]\nreplicas = [\"127.0.0.1:{}\"]\n[routing]\ncheck_interval = \"100ms\"\n",
            r.port
        ),
    )
    .await;
    let c = broker.connect("postgres").await;
    assert_eq!(
        tidegate_tests::first_value(&c, "SHOW synchronous_commit").await,
        "off",
        "precondition: commits are asynchronous"
    );
    let mut misses = 0;
    for id in 0..40 {
        // Let the monitor see the replica replay everything written so far.
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        misses += write_then_read(&c, id, 1).await;
    }
    assert_eq!(
        misses, 0,
        "reads missed the client's own asynchronous commits"
    );
}

/// Scenario 6 in `window` mode, and a user whose mode is `off` (who does read stale data).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_your_writes_modes_per_user() {
    let (_primary, _r, broker) = delayed_replica(
        // max_lag is generous: under load the 300 ms apply delay must not get the replica
        // skipped, or the `off` user would never read from it.
        "read_your_writes = \"window\"\nmax_lag = \"1h\"\n[[users]]\nname = \"loose\"\npassword = \"loose\"\nread_your_writes = \"off\"\n",
    )
    .await;
    let c = broker.connect("postgres").await;
    assert_eq!(
        write_then_read(&c, 0, 1000).await,
        0,
        "window mode missed a write"
    );
    // Once the window has passed, this client's reads go back to the replica.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert!(
        in_recovery(&c, "SELECT pg_is_in_recovery()").await,
        "reads return to the replica"
    );
    let loose = tidegate_tests::connect(&broker.url("loose", "loose", "postgres"))
        .await
        .expect("loose");
    let misses = write_then_read(&loose, 10_000, 20).await;
    assert!(
        misses > 0,
        "with read_your_writes = off, reads go to the late replica"
    );
}

/// Scenario 5: a replica whose replay is paused falls behind; reads stop going there within a
/// check interval, and return once it catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_replica_is_skipped_until_it_catches_up() {
    let (primary, r, broker) = primary_and_replica(
        "CREATE TABLE t (id int)",
        "[routing]\ncheck_interval = \"200ms\"\nmax_lag = \"500ms\"\nread_your_writes = \"off\"\n",
    )
    .await;
    let c = broker.connect("postgres").await;
    assert!(
        in_recovery(&c, "SELECT pg_is_in_recovery()").await,
        "healthy replica serves reads"
    );
    r.sql("postgres", "SELECT pg_wal_replay_pause()");
    let paused_at = std::time::Instant::now();
    // Keep writing so the primary moves ahead of the paused replica.
    let mut skipped_after = None;
    for i in 0..100 {
        primary.sql("postgres", &format!("INSERT INTO t VALUES ({i})"));
        if !in_recovery(&c, "SELECT pg_is_in_recovery()").await {
            skipped_after = Some(paused_at.elapsed());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let skipped_after = skipped_after.expect("reads left the lagging replica");
    assert!(
        skipped_after < std::time::Duration::from_millis(3000),
        "{skipped_after:?}"
    );
    let lag = broker.shared.topology().nodes[1]
        .health
        .lag_ms
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(lag > 500, "lag is measured: {lag} ms");
    r.sql("postgres", "SELECT pg_wal_replay_resume()");
    r.wait_caught_up(&primary);
    let mut back = false;
    for _ in 0..50 {
        if in_recovery(&c, "SELECT pg_is_in_recovery()").await {
            back = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(back, "the replica rejoins once caught up");
}

/// The primary dies and a replica is promoted: writes succeed through TideGate within 5 s,
/// without a restart, and never go to a node still in recovery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promoted_replica_takes_the_writes() {
    let (primary, r, broker) = primary_and_replica(
        "CREATE TABLE t (id int)",
        "[routing]\ncheck_interval = \"200ms\"\n[pool]\nconnect_timeout = \"1s\"\n",
    )
    .await;
    let c = broker.connect("postgres").await;
    c.execute("INSERT INTO t VALUES (1)", &[])
        .await
        .expect("write to the primary");
    primary.stop_immediate();
    r.promote();
    let promoted = std::time::Instant::now();
    let mut written = false;
    // The goal is 5 s (about 0.5 s when run alone: one 200 ms check); the bound leaves room
    // for a CI machine running several PostgreSQL servers on 2 cores.
    while promoted.elapsed() < std::time::Duration::from_secs(10) {
        // The session may have been cut with its old primary connection: reconnect as needed.
        if let Ok(c) = tidegate_tests::connect(&broker.app_url("postgres")).await {
            match c.execute("INSERT INTO t VALUES (2)", &[]).await {
                Ok(_) => {
                    written = true;
                    break;
                }
                Err(e) => assert_ne!(
                    sqlstate(&e).as_deref(),
                    Some("25006"),
                    "a write reached a standby"
                ),
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(written, "writes succeed within 10 s of the promotion");
    eprintln!(
        "writes resumed {:?} after the promotion",
        promoted.elapsed()
    );
    assert_eq!(r.sql("postgres", "SELECT count(*) FROM t"), "2");
    let _ = c;
}

/// Scenario 30: a random mix of reads, writes and traps for naive splitters, through TideGate
/// with a standby that also has `default_transaction_read_only = on`: the standby never sees a
/// write (0 × 25006), and reads still reach it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_write_ever_reaches_a_replica_in_a_random_mix() {
    let primary = Postgres::start();
    primary.sql(
        "postgres",
        "CREATE TABLE t (id serial PRIMARY KEY, a int); CREATE SEQUENCE s; \
         CREATE FUNCTION bump() RETURNS int LANGUAGE sql AS 'INSERT INTO t (a) VALUES (0) RETURNING 1'; \
         INSERT INTO t (a) SELECT g FROM generate_series(1, 10) g",
    );
    let r = primary.start_replica();
    r.sql(
        "postgres",
        "ALTER SYSTEM SET default_transaction_read_only = on",
    );
    r.sql("postgres", "SELECT pg_reload_conf()");
    r.wait_caught_up(&primary);
    let broker = Broker::start(
        &primary,
        &format!(
            "[upstream]\nreplicas = [\"127.0.0.1:{}\"]\n[routing]\nread_your_writes = \"off\"\n",
            r.port
        ),
    )
    .await;
    let c = broker.connect("postgres").await;
    let statements = [
        ("SELECT count(*) FROM t", true),
        ("SELECT a FROM t WHERE id = 3", true),
        ("SELECT max(a) FROM t", true),
        ("INSERT INTO t (a) VALUES (1)", false),
        ("UPDATE t SET a = a + 1 WHERE id = 2", false),
        ("DELETE FROM t WHERE id > 1000", false),
        ("SELECT nextval('s')", false),
        (
            "WITH x AS (INSERT INTO t (a) VALUES (5) RETURNING id) SELECT count(*) FROM x",
            false,
        ),
        (
            "WITH x AS (UPDATE t SET a = 0 WHERE id = 4 RETURNING 1) SELECT * FROM x",
            false,
        ),
        ("SELECT * FROM t WHERE id = 1 FOR UPDATE", false),
        ("SELECT bump()", false),
        ("SELECT pg_advisory_xact_lock(7)", false),
        ("SELECT 1; INSERT INTO t (a) VALUES (2)", false),
        ("SELECT pg_try_advisory_xact_lock(1)", false),
        ("CREATE TABLE IF NOT EXISTS other (a int)", false),
        ("SELECT count(*) FROM t TABLESAMPLE SYSTEM (50)", true),
        ("EXPLAIN SELECT * FROM t", true),
        // Statements that pin a session (SET, temporary tables) are covered elsewhere; here
        // they would keep everything on the primary.
    ];
    // A deterministic pseudo-random sequence (an LCG), so failures reproduce.
    let mut seed: u64 = 0x5eed;
    let mut reads_on_replica = 0;
    for _ in 0..300 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let (sql, read) = statements[(seed >> 33) as usize % statements.len()];
        let use_extended = (seed >> 20) & 1 == 1 && !sql.contains(';');
        let result = if use_extended {
            c.query(sql, &[]).await.map(|_| ())
        } else {
            c.batch_execute(sql).await
        };
        if let Err(e) = result {
            assert_ne!(
                sqlstate(&e).as_deref(),
                Some("25006"),
                "{sql} reached the read-only standby"
            );
            panic!("{sql}: {e}");
        }
        if read && in_recovery(&c, "SELECT pg_is_in_recovery()").await {
            reads_on_replica += 1;
        }
    }
    assert!(reads_on_replica > 0, "reads still go to the replica");
}

/// Scenario 3: 1 primary and 3 replicas; 2 replicas die during 1,000 reads. At most 2 reads
/// fail, the dead replicas serve nothing afterwards, the healthy ones share reads evenly before,
/// and a restarted replica is used again after its ban.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_failing_under_load_cost_at_most_one_read_each() {
    let primary = Postgres::start();
    let (replicas, broker) = replicas_and_broker(
        &primary,
        3,
        "[routing]\nban_time = \"1s\"\ncheck_interval = \"200ms\"\n[pool]\nconnect_timeout = \"1s\"\n",
    )
    .await;
    let c = broker.connect("postgres").await;
    let port_of = |rows: Vec<tokio_postgres::SimpleQueryMessage>| -> Option<u16> {
        rows.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0)?.parse().ok(),
            _ => None,
        })
    };
    let mut before: HashMap<u16, usize> = HashMap::new();
    let mut after: HashMap<u16, usize> = HashMap::new();
    let mut failed = 0;
    for i in 0..1000 {
        if i == 500 {
            replicas[0].stop_immediate();
            replicas[1].stop_immediate();
        }
        match c.simple_query("SELECT inet_server_port()").await {
            Ok(rows) => {
                let port = port_of(rows).expect("a port");
                *if i < 500 { &mut before } else { &mut after }
                    .entry(port)
                    .or_insert(0) += 1;
            }
            Err(_) => failed += 1,
        }
    }
    assert!(failed <= 2, "{failed} reads failed");
    let mean = 500.0 / 3.0;
    for r in &replicas {
        let n = *before.get(&r.port).unwrap_or(&0) as f64;
        assert!(
            (n - mean).abs() <= mean * 0.2,
            "uneven split before the failure: {before:?}"
        );
    }
    for dead in &replicas[..2] {
        // At most the one in-flight read at the moment of death.
        assert!(
            after.get(&dead.port).copied().unwrap_or(0) <= 1,
            "a dead replica served reads: {after:?}"
        );
    }
    assert!(
        after.get(&replicas[2].port).copied().unwrap_or(0) >= 490,
        "{after:?}"
    );
    // Recovery: a restarted replica is used again once its ban has expired.
    replicas[0].restart();
    replicas[0].wait_caught_up(&primary);
    let mut back = false;
    for _ in 0..100 {
        if let Ok(rows) = c.simple_query("SELECT inet_server_port()").await {
            if port_of(rows) == Some(replicas[0].port) {
                back = true;
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(back, "the restarted replica serves reads again");
}

/// A replica stopped with `-m immediate`, and one whose postmaster is killed with SIGKILL,
/// under `pgbench -S -c 8` through TideGate, for each protocol (simple, extended, prepared):
/// reads in flight are re-run elsewhere — what the dying replica sent (rows, its shutdown
/// WARNING) is held back until ReadyForQuery and dropped — so no client aborts and no
/// transaction fails (reliability scenario 3). `TIDEGATE_FAILOVER_ROUNDS` repeats the set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_survives_a_replica_crash() {
    let primary = Postgres::start();
    tidegate_tests::create_db(&primary, "bench");
    tidegate_tests::pgbench_init(&primary.url("bench")).await;
    let (replicas, broker) = replicas_and_broker(
        &primary,
        2,
        "[routing]\nban_time = \"1s\"\ncheck_interval = \"200ms\"\n[pool]\nconnect_timeout = \"1s\"\n",
    )
    .await;
    let rounds: usize = std::env::var("TIDEGATE_FAILOVER_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1);
    let url = broker.app_url("bench");
    for round in 0..rounds {
        for (i, protocol) in ["simple", "extended", "prepared"].into_iter().enumerate() {
            for kill in [false, true] {
                let victim = &replicas[(i + usize::from(kill)) % 2];
                let args = [
                    "-n", "-S", "-c", "8", "-j", "2", "-T", "4", "-M", protocol, &url,
                ]
                .map(str::to_owned);
                let bench = tokio::spawn(async move {
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    tidegate_tests::run_tool("pgbench", &args, &[]).await
                });
                tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
                if kill {
                    victim.kill_postmaster();
                } else {
                    victim.stop_immediate();
                }
                let out = bench.await.expect("pgbench task");
                let report = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                let what = format!(
                    "round {round}, -M {protocol}, {}",
                    if kill { "kill -9" } else { "-m immediate" }
                );
                let tail = report.lines().rev().take(30).collect::<Vec<_>>().join("\n");
                assert!(
                    !report.contains("aborted in command"),
                    "{what}: a client aborted:\n{tail}"
                );
                assert!(out.status.success(), "{what}:\n{tail}");
                assert_eq!(
                    tidegate_tests::pgbench_failed(&report),
                    0,
                    "{what}:\n{tail}"
                );
                let processed = tidegate_tests::pgbench_processed(&report);
                assert!(processed > 500, "{what}: {processed} transactions:\n{tail}");
                if kill {
                    victim.restart_after_kill();
                } else {
                    victim.restart();
                }
                victim.wait_caught_up(&primary);
                // Its ban ends: the next round starts with both replicas serving.
                tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
            }
        }
    }
}

/// `balance = "least_outstanding"`: while one replica is busy with a long read, reads from
/// other clients go to the idle one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_outstanding_avoids_the_busy_replica() {
    let primary = Postgres::start();
    let (replicas, broker) =
        replicas_and_broker(&primary, 2, "[routing]\nbalance = \"least_outstanding\"\n").await;
    let busy = broker.connect("postgres").await;
    let port_of = |rows: Vec<tokio_postgres::SimpleQueryMessage>| -> Option<i32> {
        rows.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0)?.parse().ok(),
            _ => None,
        })
    };
    let long = tokio::spawn(async move {
        let rows = busy
            .simple_query("SELECT inet_server_port() FROM pg_sleep(1.5)")
            .await
            .expect("long read");
        rows.iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0)?.parse::<i32>().ok(),
                _ => None,
            })
            .expect("port")
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let c = broker.connect("postgres").await;
    let mut seen = HashMap::new();
    for _ in 0..20 {
        let rows = c
            .simple_query("SELECT inet_server_port()")
            .await
            .expect("read");
        *seen.entry(port_of(rows).expect("port")).or_insert(0) += 1;
    }
    let busy_port = long.await.expect("long read task");
    assert!(
        replicas.iter().any(|r| i32::from(r.port) == busy_port),
        "the long read ran on a replica"
    );
    assert_eq!(seen.len(), 1, "all reads on one replica: {seen:?}");
    assert!(
        !seen.contains_key(&busy_port),
        "never the busy one: {seen:?}"
    );
}

/// Function calls: volatility comes from the database's `pg_proc` (STABLE → replica, VOLATILE
/// → primary); `read_only_functions` and `primary_functions` override it; a reload reads the
/// lists and the catalog afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_volatility_comes_from_pg_proc_and_config_lists() {
    let primary = Postgres::start();
    primary.sql(
        "postgres",
        "CREATE FUNCTION ro_fn() RETURNS int STABLE LANGUAGE sql AS 'SELECT 1'; \
         CREATE FUNCTION vol_fn() RETURNS int LANGUAGE sql AS 'SELECT 1'; \
         CREATE FUNCTION denied_fn() RETURNS int IMMUTABLE LANGUAGE sql AS 'SELECT 1'; \
         CREATE FUNCTION allowed_fn() RETURNS int VOLATILE LANGUAGE sql AS 'SELECT 1'",
    );
    let r = primary.start_replica();
    r.wait_caught_up(&primary);
    let lists = |extra: &str| {
        tidegate_tests::base_config(
            &primary,
            &format!(
                "[upstream]\nreplicas = [\"127.0.0.1:{}\"]\n[routing]\nread_your_writes = \"off\"\n\
                 read_only_functions = [\"allowed_fn\"]\nprimary_functions = [\"denied_fn\"{extra}]\n",
                r.port
            ),
        )
    };
    let path = tidegate_tests::fresh_dir()
        .expect("dir")
        .join("tidegate.toml");
    std::fs::write(&path, lists("")).expect("write");
    let broker = Broker::start_config(tidegate::config::Config::load(&path).expect("config")).await;
    let c = broker.connect("postgres").await;
    let on_replica = |f: &'static str| {
        let c = &c;
        async move { in_recovery(c, &format!("SELECT pg_is_in_recovery() WHERE {f}() = 1")).await }
    };
    assert!(on_replica("ro_fn").await, "STABLE in pg_proc: replica");
    assert!(
        on_replica("public.ro_fn").await,
        "qualified STABLE: replica"
    );
    assert!(!on_replica("vol_fn").await, "VOLATILE in pg_proc: primary");
    assert!(
        !on_replica("denied_fn").await,
        "primary_functions wins over IMMUTABLE"
    );
    assert!(
        on_replica("allowed_fn").await,
        "read_only_functions wins over VOLATILE"
    );
    // A reload that lists ro_fn for the primary takes effect for the same client.
    std::fs::write(&path, lists(", \"ro_fn\"")).expect("write");
    tidegate::broker::reload::reload(&broker.control, &path)
        .await
        .expect("reload");
    assert!(!on_replica("ro_fn").await, "reloaded primary_functions");
    // A malformed entry is refused with the key's name; the running lists stay.
    std::fs::write(&path, lists(", \"a.b.c\"")).expect("write");
    let err = tidegate::broker::reload::reload(&broker.control, &path)
        .await
        .expect_err("malformed function name")
        .to_string();
    assert!(err.contains("routing.primary_functions"), "{err}");
    assert!(!on_replica("ro_fn").await);
    assert!(on_replica("allowed_fn").await);
}
