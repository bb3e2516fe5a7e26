//! The admin console over the PostgreSQL protocol, driven by psql unmodified: SHOW commands
//! with PgBouncer's column names, non-admins refused, PAUSE under a running pgbench then
//! RESUME with no failed transaction, KILL and RECONNECT, RELOAD and SHUTDOWN.

use std::time::Duration;
use tidegate_tests::{create_db, run_tool, sqlstate, Broker, Postgres};

const ADMIN: &str = "[admin]\nusers = [\"app\"]\n";

/// psql as `user`/`password` against the console (`-A -F '|'`: unaligned, header kept).
async fn psql(b: &Broker, user: &str, password: &str, db: &str, command: &str) -> (bool, String) {
    let port = b.addr.port().to_string();
    let out = run_tool(
        "psql",
        &[
            "-X",
            "-A",
            "-F",
            "|",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            user,
            "-d",
            db,
            "-c",
            command,
        ],
        &[("PGPASSWORD", password), ("PGCONNECT_TIMEOUT", "5")],
    )
    .await;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

async fn console(b: &Broker, command: &str) -> String {
    let (ok, text) = psql(b, "app", "app", "tidegate", command).await;
    assert!(ok, "{command} failed:\n{text}");
    text
}

/// The value of `column` in the first row whose `key_column` is `key`.
fn cell(table: &str, key_column: &str, key: &str, column: &str) -> Option<String> {
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next()?.split('|').collect();
    let k = header.iter().position(|h| *h == key_column)?;
    let c = header.iter().position(|h| *h == column)?;
    lines
        .map(|l| l.split('|').collect::<Vec<_>>())
        .find(|r| r.get(k) == Some(&key))
        .and_then(|r| r.get(c).map(|v| (*v).to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_commands_answer_psql_with_pgbouncer_columns() {
    let pg = Postgres::start();
    let b = Broker::start(
        &pg,
        &format!("{ADMIN}[[users]]\nname = \"other\"\npassword = \"other\"\n"),
    )
    .await;
    let c = b.connect("postgres").await;
    c.simple_query("SELECT 1").await.expect("select");
    c.simple_query("CREATE TABLE console_t (a int)")
        .await
        .expect("ddl");
    c.simple_query("INSERT INTO console_t VALUES (1), (2)")
        .await
        .expect("insert");
    let e = c
        .simple_query("SELECT * FROM no_such_table")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("42P01"));

    let pools = console(&b, "SHOW POOLS").await;
    for column in [
        "database",
        "user",
        "cl_active",
        "cl_waiting",
        "sv_active",
        "sv_idle",
        "sv_used",
        "sv_login",
        "maxwait",
        "maxwait_us",
        "pool_mode",
    ] {
        assert!(
            pools
                .lines()
                .next()
                .unwrap()
                .split('|')
                .any(|h| h == column),
            "{column}: {pools}"
        );
    }
    assert_eq!(
        cell(&pools, "database", "postgres", "cl_active").as_deref(),
        Some("1"),
        "{pools}"
    );
    assert_eq!(
        cell(&pools, "database", "postgres", "pool_mode").as_deref(),
        Some("transaction")
    );
    assert_eq!(
        cell(&pools, "database", "postgres", "sv_idle").as_deref(),
        Some("1"),
        "{pools}"
    );

    let clients = console(&b, "SHOW CLIENTS").await;
    assert_eq!(
        cell(&clients, "database", "postgres", "user").as_deref(),
        Some("app"),
        "{clients}"
    );
    assert_eq!(
        cell(&clients, "database", "postgres", "state").as_deref(),
        Some("idle")
    );

    let servers = console(&b, "SHOW SERVERS").await;
    assert_eq!(
        cell(&servers, "database", "postgres", "state").as_deref(),
        Some("idle"),
        "{servers}"
    );

    let stats = console(&b, "SHOW STATS").await;
    let xacts: u64 = cell(&stats, "database", "postgres", "total_xact_count")
        .and_then(|v| v.parse().ok())
        .expect("a postgres row");
    assert!(xacts >= 4, "{stats}");
    let queries: u64 = cell(&stats, "database", "*", "total_query_count")
        .and_then(|v| v.parse().ok())
        .expect("a * row");
    assert!(queries >= 4, "{stats}");

    let databases = console(&b, "SHOW DATABASES").await;
    assert_eq!(
        cell(&databases, "name", "postgres", "force_user").as_deref(),
        Some("postgres")
    );
    assert_eq!(
        cell(&databases, "name", "postgres", "paused").as_deref(),
        Some("0")
    );

    let config = console(&b, "SHOW CONFIG").await;
    assert_eq!(
        cell(&config, "key", "admin.users", "value").as_deref(),
        Some("app")
    );
    assert!(!config.contains("password"), "no secrets: {config}");

    let replicas = console(&b, "SHOW REPLICAS").await;
    assert_eq!(
        cell(&replicas, "role", "primary", "state").as_deref(),
        Some("unmonitored"),
        "no replicas, no monitor: {replicas}"
    );

    let slow = console(&b, "SHOW SLOW").await;
    assert!(
        slow.contains("INSERT INTO console_t VALUES (?), (?)"),
        "constants removed: {slow}"
    );
    assert!(!slow.contains("VALUES (1)"), "{slow}");
    assert!(console(&b, "SHOW PLUGINS").await.starts_with("name|"));
    assert!(console(&b, "SHOW CACHE").await.contains("enabled|false"));
    // Several commands in one query, as psql -c sends them.
    let two = console(&b, "SHOW POOLS; SHOW STATS").await;
    assert!(
        two.contains("cl_active") && two.contains("total_xact_count"),
        "{two}"
    );

    // Mistakes get SQLSTATEs; the session goes on.
    let (ok, text) = psql(&b, "app", "app", "tidegate", "SHOW NOTHING").await;
    assert!(!ok && text.contains("unknown SHOW subject"), "{text}");
    let (ok, text) = psql(&b, "app", "app", "tidegate", "DROP TABLE x").await;
    assert!(
        !ok && text.contains("unknown admin console command"),
        "{text}"
    );
    // Extended protocol: refused with 0A000, not a hang.
    let admin = tidegate_tests::connect(&b.url("app", "app", "tidegate"))
        .await
        .expect("console connection");
    let e = admin.query("SHOW POOLS", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("0A000"), "{e}");
    let rows = admin
        .simple_query("SHOW POOLS")
        .await
        .expect("simple still works");
    assert!(!rows.is_empty());

    // Users outside [admin] users are refused at login.
    let (ok, text) = psql(&b, "other", "other", "tidegate", "SHOW POOLS").await;
    assert!(
        !ok && text.contains("not allowed to use the admin console"),
        "{text}"
    );
    // The same tables as JSON over HTTP, for admins only.
    let api = tidegate_tests::Api::new(
        b.http,
        tidegate_tests::ApiAuth::Basic("app".into(), "app".into()),
    );
    let (status, pools) = tidegate_tests::send_json(api.get("/admin/pools")).await;
    assert_eq!(status, 200, "{pools}");
    assert!(pools[0]["cl_active"].is_string(), "{pools}");
    let (status, slow) = tidegate_tests::send_json(api.get("/admin/slow-queries?top=5")).await;
    assert_eq!(status, 200, "{slow}");
    assert!(slow[0]["p95_ms"].is_number(), "{slow}");
    let other = tidegate_tests::Api::new(
        b.http,
        tidegate_tests::ApiAuth::Basic("other".into(), "other".into()),
    );
    let (status, _) = tidegate_tests::send_json(other.get("/admin/pools")).await;
    assert_eq!(status, 403);
    let (status, _) = tidegate_tests::send_json(api.get("/admin/nothing")).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_under_pgbench_then_resume_loses_no_transaction() {
    let pg = Postgres::start();
    create_db(&pg, "bench");
    let b = Broker::start(
        &pg,
        &format!("{ADMIN}[pool]\nsize = 4\ncheckout_timeout = \"60s\"\n"),
    )
    .await;
    let url = b.app_url("bench");
    tidegate_tests::pgbench_init(&url).await;
    let bench = {
        let url = url.clone();
        tokio::spawn(async move {
            run_tool(
                "pgbench",
                &["-n", "-c", "8", "-j", "2", "-T", "8", &url],
                &[],
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let paused = console(&b, "PAUSE bench").await;
    assert!(paused.contains("PAUSE"), "{paused}");
    // Paused: nothing lent, clients held.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pools = console(&b, "SHOW POOLS").await;
    assert_eq!(
        cell(&pools, "database", "bench", "sv_active").as_deref(),
        Some("0"),
        "{pools}"
    );
    assert_eq!(
        cell(&pools, "database", "bench", "paused").as_deref(),
        Some("true"),
        "{pools}"
    );
    let waiting: u64 = cell(&pools, "database", "bench", "cl_waiting")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(waiting > 0, "pgbench clients wait while paused: {pools}");
    let before = pg.sql("bench", "SELECT count(*) FROM pgbench_history");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        pg.sql("bench", "SELECT count(*) FROM pgbench_history"),
        before,
        "no transaction ran while paused"
    );
    assert!(console(&b, "RESUME bench").await.contains("RESUME"));
    let out = bench.await.expect("pgbench task");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{report}");
    assert_eq!(tidegate_tests::pgbench_failed(&report), 0, "{report}");
    assert!(tidegate_tests::pgbench_processed(&report) > 0, "{report}");
    let after = pg.sql("bench", "SELECT count(*) FROM pgbench_history");
    assert!(after.parse::<u64>().unwrap() > before.parse::<u64>().unwrap());
    // PAUSE of a database with no pool is an error, not a hang.
    let (ok, text) = psql(&b, "app", "app", "tidegate", "PAUSE nodb").await;
    assert!(!ok && text.contains("no pool for database"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_reconnect_reload_and_shutdown() {
    let pg = Postgres::start();
    let dir = tidegate_tests::fresh_dir().expect("dir");
    let path = dir.join("tidegate.toml");
    let base = tidegate_tests::base_config(&pg, ADMIN);
    std::fs::write(&path, &base).expect("config");
    let b = Broker::start_file(&path).await;
    let c = b.connect("postgres").await;
    // A server connection is told by the broker's port on it (pg_backend_pid() is the
    // client's own, broker-issued id).
    let pid_before = tidegate_tests::first_value(&c, "SELECT inet_client_port()").await;

    // RECONNECT: the server connection is replaced; the client does not notice.
    assert!(console(&b, "RECONNECT").await.contains("RECONNECT"));
    let pid_after = tidegate_tests::first_value(&c, "SELECT inet_client_port()").await;
    assert_ne!(
        pid_before, pid_after,
        "a new server connection after RECONNECT"
    );

    // KILL: the database's clients are disconnected with 57P01; new ones get in.
    assert!(console(&b, "KILL postgres").await.contains("KILL"));
    let e = c.simple_query("SELECT 1").await.unwrap_err();
    assert!(
        sqlstate(&e).as_deref() == Some("57P01") || c.is_closed(),
        "killed: {e}"
    );
    let fresh = b.connect("postgres").await;
    fresh
        .simple_query("SELECT 1")
        .await
        .expect("new clients are served");

    // RELOAD reads the file again.
    let generation = b.shared.generation();
    std::fs::write(&path, format!("{base}\n[pool]\nsize = 7\n")).expect("config");
    assert!(console(&b, "RELOAD").await.contains("RELOAD"));
    assert!(b.shared.generation() > generation);
    assert_eq!(b.shared.config().pool.size, 7);
    std::fs::write(&path, "not toml [").expect("config");
    let (ok, text) = psql(&b, "app", "app", "tidegate", "RELOAD").await;
    assert!(
        !ok && text.contains("reload failed, nothing changed"),
        "{text}"
    );
    assert_eq!(b.shared.config().pool.size, 7);

    // SHUTDOWN drains the broker: new connections are refused.
    let mut b = b;
    let task = b.take_task();
    assert!(console(&b, "SHUTDOWN").await.contains("SHUTDOWN"));
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("the broker stops after SHUTDOWN")
        .expect("broker task");
    assert!(tidegate_tests::connect(&b.app_url("postgres"))
        .await
        .is_err());
}
