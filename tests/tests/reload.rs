//! Configuration reload without a restart (scenario 25): replicas come and go and pools resize
//! under connected clients; a file that does not validate keeps the running configuration; a
//! reload that changes nothing closes no connection; a transaction open across a reload
//! finishes on its own connection; `tidegate reload` and SIGHUP drive the real binary.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tidegate_tests::{
    base_config, fresh_dir, save_by_rename, sqlstate, tidegate_bin, wait_for, Broker, Postgres,
};

fn config_file(pg: &Postgres, extra: &str) -> PathBuf {
    let path = fresh_dir().expect("temp dir").join("tidegate.toml");
    std::fs::write(&path, base_config(pg, extra)).expect("write config");
    path
}

async fn one(c: &tokio_postgres::Client, sql: &str) -> String {
    tidegate_tests::first_value(c, sql).await
}

/// The broker's connections to `pg` (every client backend but the asking one).
fn backend_pids(pg: &Postgres) -> Vec<String> {
    let out = pg.sql(
        "postgres",
        "SELECT string_agg(pid::text, ',' ORDER BY pid) FROM pg_stat_activity \
         WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
    );
    out.split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_join_and_leave_under_a_connected_client() {
    let primary = Postgres::start();
    let replica = primary.start_replica();
    replica.wait_caught_up(&primary);
    let fast = "[routing]\ncheck_interval = \"100ms\"\n";
    let path = config_file(&primary, fast);
    let broker = Broker::start_file(&path).await;
    let c = broker.connect("postgres").await;
    assert_eq!(one(&c, "SELECT pg_is_in_recovery()").await, "f");

    // Add the replica with an editor-style rename-save: the directory watch picks it up and
    // the same client's reads move to the replica without reconnecting.
    let with_replica = format!(
        "[upstream]\nreplicas = [\"127.0.0.1:{}\"]\n{fast}",
        replica.port
    );
    save_by_rename(&path, &base_config(&primary, &with_replica));
    let mut on_replica = false;
    for _ in 0..100 {
        if one(&c, "SELECT pg_is_in_recovery()").await == "t" {
            on_replica = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(on_replica, "reads reach the added replica");
    assert_eq!(broker.shared.stats.reloads.load(Relaxed), 1);
    assert!(!backend_pids(&replica).is_empty());

    // Remove it again: reads return to the primary and its pooled connections are closed.
    save_by_rename(&path, &base_config(&primary, fast));
    let mut back = false;
    for _ in 0..100 {
        if one(&c, "SELECT pg_is_in_recovery()").await == "f" {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(back, "reads leave the removed replica");
    assert!(
        wait_for(Duration::from_secs(5), || backend_pids(&replica).is_empty()).await,
        "the removed replica's connections are closed: {:?}",
        backend_pids(&replica)
    );
    // The client never noticed.
    assert_eq!(one(&c, "SELECT 1").await, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_file_keeps_the_running_configuration() {
    let pg = Postgres::start();
    let path = config_file(&pg, "");
    let good = std::fs::read_to_string(&path).expect("read");
    let broker = Broker::start_file(&path).await;
    let sh = broker.shared.clone();
    let c = broker.connect("postgres").await;
    assert_eq!(one(&c, "SELECT 1").await, "1");
    let dir = path.parent().expect("dir");
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "invalid TOML",
            good.replace("[upstream.primary]", "[upstream.primary"),
            "tidegate.toml:4:",
        ),
        (
            "unknown key",
            good.replace("[upstream.primary]", "[upstream.primary]\nhots = \"x\""),
            "unknown field `hots`",
        ),
        (
            "pool.size = 0",
            format!("{good}\n[pool]\nsize = 0\n"),
            "pool.size: must be at least 1",
        ),
        (
            "no primary",
            good.replace("host = \"127.0.0.1\"", "host = \"\""),
            "upstream.primary.host",
        ),
        (
            "duplicate backend",
            good.replace(
                "[upstream.primary]",
                &format!("[upstream]\nreplicas = [\"127.0.0.1:{}\"]\n[upstream.primary]", pg.port),
            ),
            "is listed twice",
        ),
        (
            "unreadable TLS key",
            format!(
                "{good}\n[tls]\nmode = \"allow\"\ncert = \"{d}/nope.crt\"\nkey = \"{d}/nope.key\"\n",
                d = dir.display()
            ),
            "nope.crt",
        ),
        (
            "partial write",
            good[..good.len() / 2].to_owned(),
            "tidegate.toml",
        ),
    ];
    for (i, (name, contents, expect)) in cases.iter().enumerate() {
        std::fs::write(&path, contents).expect("write");
        let err = tidegate::broker::reload::reload(&broker.control, &path)
            .await
            .expect_err(name)
            .to_string();
        assert!(err.contains(expect), "{name}: {err}");
        // The directory watch may have tried the same file too.
        assert!(sh.stats.reload_failures.load(Relaxed) > i as u64, "{name}");
        assert_eq!(sh.topology().generation, 1, "{name}: nothing applied");
        assert_eq!(one(&c, "SELECT 1").await, "1", "{name}: still serving");
        let fresh = broker.connect("postgres").await;
        assert_eq!(
            one(&fresh, "SELECT 2").await,
            "2",
            "{name}: still admitting"
        );
    }
    assert!(sh.stats.reload_failures.load(Relaxed) >= cases.len() as u64);
    // A config error names its line and column.
    std::fs::write(&path, good.replace("port = ", "port = \"x\" #")).expect("write");
    let err = tidegate::broker::reload::reload(&broker.control, &path)
        .await
        .expect_err("bad port")
        .to_string();
    assert!(err.contains("tidegate.toml:6:"), "{err}");
    // The good file again: applied.
    std::fs::write(&path, &good).expect("write");
    tidegate::broker::reload::reload(&broker.control, &path)
        .await
        .expect("good file");
    assert!(sh.topology().generation >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_changes_nothing_disconnects_no_backend() {
    let pg = Postgres::start();
    let path = config_file(&pg, "[pool]\nsize = 4\n");
    let broker = Broker::start_file(&path).await;
    let c: Vec<tokio_postgres::Client> = vec![
        broker.connect("postgres").await,
        broker.connect("postgres").await,
        broker.connect("postgres").await,
        broker.connect("postgres").await,
    ];
    // Four statements at once, so the pool holds four connections.
    let sleep = "SELECT pg_sleep(0.3)";
    let (a, b, d, e) = tokio::join!(
        c[0].simple_query(sleep),
        c[1].simple_query(sleep),
        c[2].simple_query(sleep),
        c[3].simple_query(sleep)
    );
    for r in [a, b, d, e] {
        r.expect("sleep");
    }
    let before = backend_pids(&pg);
    assert_eq!(before.len(), 4, "{before:?}");
    for _ in 0..3 {
        tidegate::broker::reload::reload(&broker.control, &path)
            .await
            .expect("same file");
    }
    for c in &c {
        assert_eq!(one(c, "SELECT 1").await, "1");
    }
    assert_eq!(
        backend_pids(&pg),
        before,
        "no backend was closed or replaced"
    );
    assert_eq!(broker.shared.topology().generation, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_open_across_a_reload_finishes_on_its_old_backend() {
    let pg = Postgres::start();
    pg.sql("postgres", "CREATE TABLE t (id int)");
    let replica = pg.start_replica();
    replica.wait_caught_up(&pg);
    let path = config_file(&pg, "[pool]\nsize = 1\ncheckout_timeout = \"300ms\"\n");
    let broker = Broker::start_file(&path).await;
    let c = broker.connect("postgres").await;
    c.batch_execute("BEGIN").await.expect("begin");
    let pid = one(&c, "SELECT inet_client_port()").await;
    // A pool one bigger and a new replica, applied while the transaction is open.
    let changed = format!(
        "[upstream]\nreplicas = [\"127.0.0.1:{}\"]\n[pool]\nsize = 2\ncheckout_timeout = \"300ms\"\n",
        replica.port
    );
    std::fs::write(&path, base_config(&pg, &changed)).expect("write");
    tidegate::broker::reload::reload(&broker.control, &path)
        .await
        .expect("valid change");
    // The larger pool lets a second client in while the first still holds its connection.
    let other = broker.connect("postgres").await;
    assert_eq!(one(&other, "SELECT 1").await, "1");
    assert_eq!(
        one(&c, "SELECT inet_client_port()").await,
        pid,
        "same backend"
    );
    c.batch_execute("INSERT INTO t VALUES (1); COMMIT")
        .await
        .expect("commit after the reload");
    assert_eq!(pg.sql("postgres", "SELECT count(*) FROM t"), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_smaller_pool_takes_effect_as_connections_return() {
    let pg = Postgres::start();
    let path = config_file(&pg, "[pool]\nsize = 2\ncheckout_timeout = \"300ms\"\n");
    let broker = Broker::start_file(&path).await;
    let a = broker.connect("postgres").await;
    let b = broker.connect("postgres").await;
    let (ra, rb) = tokio::join!(
        a.simple_query("SELECT pg_sleep(0.5)"),
        b.simple_query("SELECT pg_sleep(0.5)")
    );
    ra.expect("a");
    rb.expect("b");
    std::fs::write(
        &path,
        base_config(&pg, "[pool]\nsize = 1\ncheckout_timeout = \"300ms\"\n"),
    )
    .expect("write");
    tidegate::broker::reload::reload(&broker.control, &path)
        .await
        .expect("valid");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (ra, rb) = tokio::join!(
        a.simple_query("SELECT pg_sleep(0.6)"),
        b.simple_query("SELECT pg_sleep(0.6)")
    );
    let refused = [ra, rb]
        .into_iter()
        .filter_map(|r| r.err())
        .map(|e| sqlstate(&e))
        .collect::<Vec<_>>();
    assert_eq!(
        refused,
        vec![Some("53300".to_owned())],
        "one of two waits out a pool of one"
    );
}

/// The binary: `tidegate reload` refuses an invalid file (with line:col) and the broker keeps
/// serving; a valid file is applied on `tidegate reload` and on a plain SIGHUP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_reloads_on_command_and_on_sighup() {
    let pg = Postgres::start();
    let dir = fresh_dir().expect("dir");
    let port = tidegate_tests::free_port();
    let pid_file = dir.join("tidegate.pid");
    let cfg = |extra: &str| {
        base_config(&pg, extra).replace("127.0.0.1:0", &format!("127.0.0.1:{port}"))
            + &format!(
                "[runtime]\npid_file = \"{}\"\nwatch_config = false\n",
                pid_file.display()
            )
    };
    let path = dir.join("tidegate.toml");
    std::fs::write(&path, cfg("")).expect("write");
    let log = std::fs::File::create(dir.join("tidegate.log")).expect("log");
    let mut child = tokio::process::Command::new(tidegate_bin())
        .args(["serve", "--config"])
        .arg(&path)
        // No HTTP listener: its default port would be shared by concurrent tests.
        .env("TIDEGATE__LISTEN__HTTP", "off")
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("start tidegate");
    assert!(
        wait_for(Duration::from_secs(10), || pid_file.exists()).await,
        "pid file written"
    );
    let url = |user: &str| format!("postgresql://{user}:{user}@127.0.0.1:{port}/postgres");
    let app = connect_retry(&url("app")).await;
    assert_eq!(one(&app, "SELECT 1").await, "1");
    let reload = |p: &Path| {
        std::process::Command::new(tidegate_bin())
            .args(["reload", "--config"])
            .arg(p)
            .output()
            .expect("tidegate reload")
    };

    // Invalid: refused before anything is signalled, with a location.
    std::fs::write(&path, cfg("[pool]\nsize = 0\n")).expect("write");
    let out = reload(&path);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("tidegate.toml:") && stderr.contains("pool.size"),
        "{stderr}"
    );
    // The same file by SIGHUP: logged, and the broker keeps serving.
    let pid = std::fs::read_to_string(&pid_file).expect("pid");
    let hup = |pid: &str| {
        std::process::Command::new("kill")
            .args(["-HUP", pid.trim()])
            .status()
            .expect("kill")
    };
    assert!(hup(&pid).success());
    let log_path = dir.join("tidegate.log");
    assert!(
        wait_for(Duration::from_secs(5), || std::fs::read_to_string(
            &log_path
        )
        .unwrap_or_default()
        .contains("configuration reload failed"))
        .await
    );
    assert!(child.try_wait().expect("status").is_none(), "still running");
    assert_eq!(one(&app, "SELECT 1").await, "1");

    // Valid, adding a user: `tidegate reload` applies it.
    let second = "[[users]]\nname = \"second\"\npassword = \"second\"\n";
    std::fs::write(&path, cfg(second)).expect("write");
    let out = reload(&path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let c = connect_retry(&url("second")).await;
    assert_eq!(one(&c, "SELECT 2").await, "2");

    // Removing the user by SIGHUP: new logins are refused, the open session keeps working.
    std::fs::write(&path, cfg("")).expect("write");
    assert!(hup(&pid).success());
    let mut refused = false;
    for _ in 0..100 {
        if tidegate_tests::connect(&url("second")).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused, "the removed user can no longer log in");
    assert_eq!(one(&c, "SELECT 3").await, "3");
    drop((app, c));
    let _ = std::process::Command::new("kill")
        .args(["-TERM", pid.trim()])
        .status();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits")
        .expect("status");
    assert!(status.success());
    assert!(!pid_file.exists(), "pid file removed at exit");
}

async fn connect_retry(url: &str) -> tokio_postgres::Client {
    for _ in 0..100 {
        if let Ok(c) = tidegate_tests::connect(url).await {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("cannot connect to {url}");
}

/// Kubernetes mounts a ConfigMap as `file -> ..data/file` with `..data -> ..<timestamp>/`, and
/// updates it by pointing `..data` at a new directory (a rename of a new link over the old).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_style_link_swap_is_picked_up() {
    use std::os::unix::fs::symlink;
    let pg = Postgres::start();
    let mount = fresh_dir().expect("dir");
    let v1 = mount.join("..2026_11_26_v1");
    std::fs::create_dir(&v1).expect("v1");
    std::fs::write(v1.join("tidegate.toml"), base_config(&pg, "")).expect("write v1");
    symlink("..2026_11_26_v1", mount.join("..data")).expect("..data");
    symlink("..data/tidegate.toml", mount.join("tidegate.toml")).expect("file link");
    let path = mount.join("tidegate.toml");
    let broker = Broker::start_file(&path).await;
    let second = "[[users]]\nname = \"second\"\npassword = \"second\"\n";
    let v2 = mount.join("..2026_11_26_v2");
    std::fs::create_dir(&v2).expect("v2");
    std::fs::write(v2.join("tidegate.toml"), base_config(&pg, second)).expect("write v2");
    symlink("..2026_11_26_v2", mount.join("..data_tmp")).expect("..data_tmp");
    std::fs::rename(mount.join("..data_tmp"), mount.join("..data")).expect("swap");
    let sh = broker.shared.clone();
    assert!(
        wait_for(Duration::from_secs(5), || sh.topology().generation == 2).await,
        "the swap was reloaded"
    );
    let c = tidegate_tests::connect(&broker.url("second", "second", "postgres"))
        .await
        .expect("the new user logs in");
    assert_eq!(one(&c, "SELECT 1").await, "1");
}
