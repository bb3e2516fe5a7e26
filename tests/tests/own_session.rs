//! A pooled session that looks to its client like its own PostgreSQL session: process ids
//! that mean something, its own prepared statements, users PostgreSQL knows (auth_query).

use tidegate_tests::{connect, fixture, run_tool, sqlstate, Broker, Postgres};

/// psycopg and psycopg_pool, as an application would use them (tests/fixtures/psycopg_session.py
/// asserts each step): broker pids, LISTEN/NOTIFY, a pool's health check after
/// pg_terminate_backend, pg_cancel_backend, the signal permission, pg_prepared_statements and
/// client_encoding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_and_its_pool_see_their_own_session() {
    let pg = Postgres::start();
    pg.sql("postgres", "CREATE ROLE other LOGIN");
    // One server connection per node: every client's statements share it.
    let broker = Broker::start(
        &pg,
        "[pool]\nsize = 2\n[[users]]\nname = \"other\"\npassword = \"other\"\nrole = \"other\"\n",
    )
    .await;
    let url = broker.app_url("postgres");
    let other = broker.url("other", "other", "postgres");
    let script = fixture("psycopg_session.py");
    let out = run_tool(
        "python3",
        &[script.to_str().expect("utf-8 path"), &url, &other],
        &[],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.trim_end().ends_with("all checks passed"),
        "{stdout}\n{stderr}"
    );
}

/// tokio-postgres and psql: `pg_backend_pid()` is the same broker pid over the simple and the
/// extended protocol; a real backend's pid passes through to the server (false, as there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_pids_are_the_broker_sessions_own() {
    let pg = Postgres::start();
    let broker = Broker::start(&pg, "").await;
    let c = broker.connect("postgres").await;
    let simple = tidegate_tests::first_value(&c, "SELECT pg_backend_pid()").await;
    let extended: i32 = c
        .query_one("SELECT pg_backend_pid() WHERE $1", &[&true])
        .await
        .expect("extended")
        .get(0);
    assert_eq!(simple, extended.to_string());
    assert!(extended > 1 << 22, "{extended}");
    // Another client terminates this one by that pid; the next statement fails with 57P01.
    let killer = broker.connect("postgres").await;
    let t: bool = killer
        .query_one("SELECT pg_terminate_backend($1)", &[&extended])
        .await
        .expect("terminate")
        .get(0);
    assert!(t);
    let err = c.simple_query("SELECT 1").await.expect_err("terminated");
    assert!(
        sqlstate(&err).as_deref() == Some("57P01") || c.is_closed(),
        "{err:?}"
    );
    // A real server pid is the server's business: PostgreSQL answers as it would.
    let direct = pg.connect("postgres").await;
    let real: i32 = direct
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0);
    let out = run_tool(
        "psql",
        &[
            "-X",
            "-A",
            "-t",
            "-d",
            &broker.app_url("postgres"),
            "-c",
            &format!("SELECT pg_cancel_backend({real})"),
        ],
        &[],
    )
    .await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "t");
    assert!(!direct.is_closed(), "a cancel is not a termination");
}

/// `auth_query`: a role PostgreSQL knows logs in through TideGate with its PostgreSQL
/// password (SCRAM, pass-through to the server as that role), and after `ALTER ROLE … PASSWORD`
/// on PostgreSQL, the new password works and the old one does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_from_postgresql_log_in_with_their_current_password() {
    let pg = Postgres::start();
    pg.sql(
        "postgres",
        "SET password_encryption = 'scram-sha-256'; CREATE ROLE alice LOGIN PASSWORD 'old'; \
         CREATE TABLE secrets (v int); CREATE TABLE open (v int); GRANT SELECT ON open TO alice",
    );
    // PostgreSQL itself asks alice for her password: the broker must prove it, as alice.
    pg.require_scram_for("alice");
    let broker = Broker::start(
        &pg,
        "[auth]\nauth_query = \"SELECT usename, passwd FROM pg_shadow WHERE usename = $1\"\n\
         auth_cache = \"200ms\"\n",
    )
    .await;
    let alice = connect(&broker.url("alice", "old", "postgres"))
        .await
        .expect("alice logs in with her PostgreSQL password");
    assert_eq!(
        tidegate_tests::first_value(&alice, "SELECT current_user").await,
        "alice"
    );
    // PostgreSQL's GRANTs stand: alice's statements run as alice.
    alice
        .simple_query("SELECT * FROM open")
        .await
        .expect("granted");
    let denied = alice
        .simple_query("SELECT * FROM secrets")
        .await
        .expect_err("not granted");
    assert_eq!(sqlstate(&denied).as_deref(), Some("42501"));
    let wrong = connect(&broker.url("alice", "nope", "postgres"))
        .await
        .expect_err("wrong password");
    assert_eq!(sqlstate(&wrong).as_deref(), Some("28P01"));
    let nobody = connect(&broker.url("mallory", "x", "postgres"))
        .await
        .expect_err("unknown role");
    assert_eq!(sqlstate(&nobody).as_deref(), Some("28P01"));

    pg.sql("postgres", "ALTER ROLE alice PASSWORD 'new'");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let renewed = connect(&broker.url("alice", "new", "postgres"))
        .await
        .expect("the new password works at the next login");
    // A fresh server connection (the old ones may be pooled) logs in with the new keys.
    renewed
        .simple_query("SELECT pg_sleep(0.1)")
        .await
        .expect("runs");
    let stale = connect(&broker.url("alice", "old", "postgres"))
        .await
        .expect_err("the old password no longer works");
    assert_eq!(sqlstate(&stale).as_deref(), Some("28P01"));
    // Config users still win over PostgreSQL's.
    broker.connect("postgres").await;
}
