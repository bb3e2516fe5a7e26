//! Policy plugins through the PostgreSQL wire protocol: the access-control plugin (built for
//! wasm32-wasip2 by the test command) denies a read-only user's writes with 42501 and the
//! plugin's reason, in and out of transactions and over the extended protocol; replacing the
//! plugin file under pgbench load fails no transaction, and a corrupt file keeps the old one.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tidegate_tests::{run_tool, send_json, sqlstate, Api, ApiAuth, Broker, Postgres};

/// A client of the HTTP endpoint that sends no credentials (`/readyz` needs none).
fn anonymous(http: std::net::SocketAddr) -> Api {
    Api::new(http, ApiAuth::None)
}

/// A private plugin directory holding a copy of the access-control plugin.
fn plugin_dir() -> PathBuf {
    tidegate_tests::plugin_dir_with(&["access_control.wasm"])
}

fn access_control(dir: &Path) -> String {
    format!(
        r#"
[http]
admin_users = ["app"]
[plugins]
dir = "{dir}"
call_timeout = "100ms"
[[plugins.chain]]
name = "access-control"
file = "access_control.wasm"
kind = "access_control"
[plugins.chain.config]
deny_by_default = true
[plugins.chain.config.roles]
reader = [{{ kinds = ["read", "utility"], tables = ["*"] }}]
admin = [{{ kinds = ["*"], tables = ["*"] }}]
[plugins.chain.config.users]
app = ["admin"]
[[users]]
name = "reader"
password = "reader"
roles = ["reader"]
"#,
        dir = dir.display()
    )
}

async fn reader(broker: &Broker) -> tokio_postgres::Client {
    tidegate_tests::connect(&broker.url("reader", "reader", "postgres"))
        .await
        .expect("reader connects")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_user_may_read_but_not_write() {
    let pg = Postgres::start();
    pg.sql(
        "postgres",
        "CREATE TABLE t (id int); INSERT INTO t VALUES (1)",
    );
    let dir = plugin_dir();
    let broker = Broker::start(&pg, &access_control(&dir)).await;
    let r = reader(&broker).await;

    // Simple protocol, outside a transaction: answered by the broker.
    let err = r
        .simple_query("INSERT INTO t VALUES (2)")
        .await
        .expect_err("denied");
    assert_eq!(sqlstate(&err).as_deref(), Some("42501"));
    let db = err.as_db_error().expect("server-style error");
    assert!(
        db.message().contains("reader") && db.message().contains("access-control"),
        "{}",
        db.message()
    );
    assert!(db.hint().is_some(), "the plugin's hint");
    let rows = r
        .query("SELECT id FROM t", &[])
        .await
        .expect("reads are allowed");
    assert_eq!(rows.len(), 1);

    // Extended protocol: the Parse is denied, the rest of the batch skipped.
    let err = r
        .execute("UPDATE t SET id = $1", &[&5i32])
        .await
        .expect_err("denied");
    assert_eq!(sqlstate(&err).as_deref(), Some("42501"));
    assert_eq!(r.query("SELECT 1", &[]).await.expect("in step").len(), 1);

    // Inside a transaction the denial aborts it, as PostgreSQL would.
    r.batch_execute("BEGIN").await.expect("begin");
    r.query("SELECT id FROM t", &[]).await.expect("read in tx");
    let err = r
        .simple_query("DELETE FROM t")
        .await
        .expect_err("denied in tx");
    assert_eq!(sqlstate(&err).as_deref(), Some("42501"));
    let err = r
        .simple_query("SELECT 1")
        .await
        .expect_err("transaction aborted");
    assert_eq!(sqlstate(&err).as_deref(), Some("25P02"));
    r.batch_execute("ROLLBACK").await.expect("rollback");

    // The same over the extended protocol: the denied Parse aborts the server's transaction
    // too, so later statements fail with 25P02 and COMMIT rolls back, as PostgreSQL would.
    r.batch_execute("BEGIN").await.expect("begin");
    r.query("SELECT id FROM t", &[]).await.expect("read in tx");
    let err = r
        .execute("DELETE FROM t WHERE id = $1", &[&1i32])
        .await
        .expect_err("denied in tx");
    assert_eq!(sqlstate(&err).as_deref(), Some("42501"));
    let err = r
        .query("SELECT 1", &[])
        .await
        .expect_err("transaction aborted");
    assert_eq!(sqlstate(&err).as_deref(), Some("25P02"));
    let rows = r.simple_query("COMMIT").await.expect("commit");
    assert!(
        rows.iter()
            .any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::CommandComplete(_))),
        "COMMIT of an aborted transaction completes (as ROLLBACK)"
    );
    assert_eq!(r.query("SELECT 1", &[]).await.expect("usable").len(), 1);

    // The admin may write; nothing the reader tried reached the table.
    let app = broker.connect("postgres").await;
    app.execute("INSERT INTO t VALUES (3)", &[])
        .await
        .expect("admin writes");
    assert_eq!(
        pg.sql(
            "postgres",
            "SELECT string_agg(id::text, ',' ORDER BY id) FROM t"
        ),
        "1,3"
    );

    // A session's own repeats are answered by its memo; another session of the same user
    // gets the decision from the chain's cache.
    let chain = broker.shared.topology().plugins.clone().expect("chain");
    let stats = &chain.entry("access-control").expect("entry").stats;
    let hits = stats.cache_hits.load(Relaxed);
    let r2 = reader(&broker).await;
    r2.query("SELECT id FROM t", &[]).await.expect("read");
    assert!(stats.denials.load(Relaxed) >= 3);
    assert!(
        stats.cache_hits.load(Relaxed) > hits,
        "deterministic decisions are cached"
    );
}

/// Appends a custom section: a different file (new digest) with the same behaviour.
fn touched(bytes: &[u8], tag: u8) -> Vec<u8> {
    let mut v = bytes.to_vec();
    let name = b"tidegate-test";
    let payload = [tag; 8];
    v.push(0); // custom section
    v.push((1 + name.len() + payload.len()) as u8);
    v.push(name.len() as u8);
    v.extend_from_slice(name);
    v.extend_from_slice(&payload);
    v
}

/// Scenario 18: the plugin file is replaced (twice) and then corrupted while pgbench -S runs
/// with 8 clients through TideGate: no transaction fails, new versions take over, the corrupt
/// file is refused and the last good version stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_the_plugin_under_load_fails_nothing() {
    let pg = Postgres::start();
    tidegate_tests::pgbench_init(&pg.url("postgres")).await;
    let dir = plugin_dir();
    let broker = Broker::start(&pg, &access_control(&dir)).await;
    // The broker watches the plugin directory itself (plugins.watch, on by default).
    assert!(broker.shared.config().plugins.watch);
    let port = broker.addr.port().to_string();
    let bench = tokio::spawn(async move {
        run_tool(
            "pgbench",
            &[
                "-n",
                "-S",
                "-c",
                "8",
                "-j",
                "2",
                "-T",
                "8",
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "reader",
                "postgres",
            ],
            &[("PGPASSWORD", "reader")],
        )
        .await
    });
    let original = std::fs::read(dir.join("access_control.wasm")).expect("read");
    let chain = broker.shared.topology().plugins.clone().expect("chain");
    let entry = chain.entry("access-control").expect("entry");
    let first = entry.current.load().version;
    for (i, tag) in [1u8, 2].into_iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // Editor-style: write a temp file, rename over the plugin.
        let tmp = dir.join("access_control.wasm.tmp");
        std::fs::write(&tmp, touched(&original, tag)).expect("write");
        std::fs::rename(&tmp, dir.join("access_control.wasm")).expect("rename");
        assert!(
            tidegate_tests::wait_for(Duration::from_secs(5), || entry.stats.swaps.load(Relaxed)
                > i as u64)
            .await,
            "swap {i} happened"
        );
    }
    let before_corrupt = entry.current.load().version;
    assert!(before_corrupt > first);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    std::fs::write(
        dir.join("access_control.wasm"),
        b"\0asm this is not a component",
    )
    .expect("corrupt");
    assert!(
        tidegate_tests::wait_for(Duration::from_secs(5), || entry
            .stats
            .load_failures
            .load(Relaxed)
            > 0)
        .await,
        "the corrupt file was tried and refused"
    );
    assert_eq!(
        entry.current.load().version,
        before_corrupt,
        "the last good version stays"
    );
    // Operators see it: /admin/status names the error, /readyz stays ready (the old version
    // serves) and reports the failed load.
    let http = broker.serve_http().await;
    let (code, status) = send_json(Api::app(http).get("/admin/status")).await;
    assert_eq!(code, 200, "{status}");
    let p = &status["plugins"][0];
    assert_eq!(p["name"], "access-control", "{status}");
    assert!(p["load_failures"].as_u64() >= Some(1), "{status}");
    assert!(p["last_load_error"].is_string(), "{status}");
    let (code, ready) = send_json(Api::app(http).get("/readyz")).await;
    assert_eq!(code, 200, "{ready}");
    assert!(
        ready["plugins"][0]["last_load_error"].is_string(),
        "{ready}"
    );
    let reader_api = Api::new(http, ApiAuth::Basic("reader".into(), "reader".into()));
    let (denied, _) = send_json(reader_api.get("/admin/status")).await;
    assert_eq!(denied, 403);
    let out = bench.await.expect("pgbench task");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let failed = tidegate_tests::pgbench_failed(&stdout);
    assert_eq!(failed, 0, "{stdout}");
    // Still enforcing after all that.
    let r = reader(&broker).await;
    let err = r
        .simple_query("DELETE FROM pgbench_accounts")
        .await
        .expect_err("denied");
    assert_eq!(sqlstate(&err).as_deref(), Some("42501"));
}

/// A session remembers the statements the chain settled (a deterministic allow) and does not
/// ask again for the next one of that shape; swapping the plugin for one that denies is seen
/// at the very next statement on the same connection, simple and extended alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swapped_plugin_decides_a_remembered_statement_again() {
    let pg = Postgres::start();
    let dir = plugin_dir();
    let broker = Broker::start(&pg, &access_control(&dir)).await;
    // The broker watches the plugin directory itself (plugins.watch, on by default).
    assert!(broker.shared.config().plugins.watch);
    let chain = broker.shared.topology().plugins.clone().expect("chain");
    let entry = chain.entry("access-control").expect("entry");
    assert!(entry.current.load().deterministic);
    let r = reader(&broker).await;
    for i in 0..3 {
        r.simple_query(&format!("SELECT {i}")).await.expect("read");
        let row = r.query_one("SELECT $1::int", &[&i]).await.expect("read");
        assert_eq!(row.get::<_, i32>(0), i);
    }
    let hits = entry.stats.cache_hits.load(Relaxed);
    // A plugin that denies everything with 42501, deterministically.
    let deny = tidegate_plugins::testing::deterministic_component(
        "(i32.store8 (i32.const 1500) (i32.const 1))
         (i32.store (i32.const 1504) (i32.const 2048)) (i32.store (i32.const 1508) (i32.const 4))
         (i32.store (i32.const 1512) (i32.const 2100)) (i32.store (i32.const 1516) (i32.const 5))
         (i32.store8 (i32.const 1520) (i32.const 0))
         (i32.const 1500)",
        r#"(data (i32.const 2100) "42501")"#,
    );
    let tmp = dir.join("access_control.wasm.tmp");
    std::fs::write(&tmp, deny).expect("write");
    std::fs::rename(&tmp, dir.join("access_control.wasm")).expect("rename");
    assert!(
        tidegate_tests::wait_for(Duration::from_secs(5), || entry.stats.swaps.load(Relaxed)
            > 0)
        .await,
        "the plugin was swapped"
    );
    assert!(entry.current.load().deterministic);
    let err = r.simple_query("SELECT 7").await.expect_err("denied now");
    assert_eq!(sqlstate(&err).as_deref(), Some("42501"), "{err}");
    let message = err.as_db_error().map(|d| d.message().to_owned());
    assert_eq!(message.as_deref(), Some("evil"), "the new plugin's reason");
    let err = r
        .query_one("SELECT $1::int", &[&7])
        .await
        .expect_err("denied now");
    assert_eq!(sqlstate(&err).as_deref(), Some("42501"), "{err}");
    // Each shape went to the plugin once; its repeats were answered by the session's memo,
    // not even by the decision cache.
    assert_eq!(hits, 0, "decision cache hits before the swap");
}

/// Scenario 16 through the broker: an optimizer plugin that traps on every statement fails
/// open (every statement still runs), is quarantined after `quarantine_after` failures in a
/// row, and `/readyz` turns 503 naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_plugin_is_quarantined_and_readyz_says_so() {
    let pg = Postgres::start();
    let dir = tidegate_tests::fresh_dir().expect("dir");
    std::fs::write(
        dir.join("trap.wasm"),
        tidegate_plugins::testing::component("unreachable", ""),
    )
    .expect("write plugin");
    let extra = format!(
        r#"
[plugins]
dir = "{}"
quarantine_after = 3
[[plugins.chain]]
name = "trap"
file = "trap.wasm"
kind = "optimizer"
[http]
admin_users = ["app"]
"#,
        dir.display()
    );
    let broker = Broker::start(&pg, &extra).await;
    let http = broker.serve_http().await;
    let (code, _) = send_json(anonymous(http).get("/readyz")).await;
    assert_eq!(code, 200, "ready before any failure");
    let c = broker.connect("postgres").await;
    for i in 0..5 {
        let rows = c
            .simple_query(&format!("SELECT {i}"))
            .await
            .expect("an optimizer that fails is skipped (fail open)");
        assert!(!rows.is_empty());
    }
    // The detail (which plugin, its counters) is for http.admin_users.
    let (code, body) = send_json(Api::app(http).get("/readyz")).await;
    assert_eq!(code, 503);
    assert_eq!(body["plugins"][0]["name"], "trap", "{body}");
    assert_eq!(body["plugins"][0]["quarantined"], true, "{body}");
    assert!(body["plugins"][0]["failures"].as_u64() >= Some(3), "{body}");
    assert_eq!(body["primary"], true, "{body}");
}
