//! Hostile plugins (reliability scenarios 14–17), written as WAT core modules and turned into
//! components against the real WIT: an infinite loop, a memory bomb, traps, deep recursion, a
//! huge return value, out-of-range variants, forbidden imports. Each fails cleanly, the fail
//! policy holds, nothing poisons the next call, and a plugin that keeps failing is quarantined.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tidegate_config::FailPolicy;
use tidegate_plugins::{
    CallError, Chain, ChainEntry, Keys, LoadError, PluginSpec, Principal, Runtime, Settings,
    Statement, StatementKind, Verdict,
};

use tidegate_plugins::testing::{component, deterministic_component};

fn settings() -> Settings {
    Settings {
        call_timeout: Duration::from_millis(20),
        memory_limit: 16 << 20,
        max_file_bytes: 10 << 20,
        quarantine_after: 5,
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write plugin");
    path
}

fn temp_dir() -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let d = std::env::temp_dir().join(format!(
        "tidegate-plugins-{}-{}",
        std::process::id(),
        N.fetch_add(1, Relaxed)
    ));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn spec(path: PathBuf) -> PluginSpec {
    PluginSpec {
        name: "evil".into(),
        path,
        config_json: "{}".into(),
        keys: Arc::new(Keys::default()),
        keys_digest: String::new(),
        settings: settings(),
    }
}

fn statement() -> Statement {
    Statement {
        principal: Arc::new(Principal {
            user: "app".into(),
            role: "app".into(),
            roles: vec![],
            database: "postgres".into(),
        }),
        sql: "INSERT INTO t VALUES (1)".into(),
        fingerprint: 7,
        kind: StatementKind::Write,
        read_only: false,
        tables: vec![],
        prepared: false,
    }
}

async fn load(rt: &Arc<Runtime>, body: &str, extra: &str) -> Arc<tidegate_plugins::LoadedPlugin> {
    let dir = temp_dir();
    let path = write(&dir, "p.wasm", &component(body, extra));
    rt.load(spec(path)).await.expect("loads")
}

fn chain(plugin: Arc<tidegate_plugins::LoadedPlugin>, fail: FailPolicy) -> Chain {
    Chain::new(vec![ChainEntry {
        name: "evil".into(),
        fail,
        databases: vec![],
        users: vec![],
        current: arc_swap::ArcSwap::new(plugin),
        stats: Default::default(),
    }])
}

const ALLOW: &str = "(i32.const 1200)";

/// Scenario 14: an infinite loop is cut at the deadline; the event loop keeps running
/// meanwhile (the call yields every tick); the fail-closed policy denies.
#[tokio::test(flavor = "current_thread")]
async fn an_infinite_loop_hits_the_deadline_without_blocking_the_loop() {
    let rt = Runtime::new(&settings()).expect("runtime");
    let p = load(&rt, "(loop $l (br $l)) (i32.const 1200)", "").await;
    // A ticker task on the same single-threaded runtime: it only runs if the plugin yields.
    let ticks = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let worst = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let ticker = {
        let (ticks, worst) = (ticks.clone(), worst.clone());
        tokio::spawn(async move {
            loop {
                let t = Instant::now();
                tokio::time::sleep(Duration::from_millis(1)).await;
                let drift = t.elapsed().as_micros() as u64;
                worst.fetch_max(drift, Relaxed);
                ticks.fetch_add(1, Relaxed);
            }
        })
    };
    tokio::task::yield_now().await;
    let start = Instant::now();
    let err = p
        .on_statement(&statement())
        .await
        .expect_err("must time out");
    let took = start.elapsed();
    ticker.abort();
    assert_eq!(err, CallError::Timeout("evil".into()));
    assert!(took >= Duration::from_millis(15), "{took:?}");
    assert!(
        ticks.load(Relaxed) >= 5,
        "the event loop ran during the call"
    );
    eprintln!(
        "loop interrupted after {took:?}; worst 1 ms sleep took {} µs",
        worst.load(Relaxed)
    );
    // Fail closed: the chain denies with 58000 and names the plugin.
    let c = chain(p.clone(), FailPolicy::Closed);
    match c.on_statement(&statement()).await {
        Verdict::Deny(d) => {
            assert_eq!(d.sqlstate, "58000");
            assert!(d.reason.contains("evil"), "{}", d.reason);
        }
        other => panic!("expected a denial, got {other:?}"),
    }
    // Fail open: skipped.
    let open = chain(p, FailPolicy::Open);
    assert_eq!(open.on_statement(&statement()).await, Verdict::Allow);
}

/// The epoch ticker sleeps while no plugin is called; a loop that starts after a quiet spell
/// wakes it and still hits its deadline, every time.
#[tokio::test]
async fn a_loop_after_a_quiet_spell_still_hits_the_deadline() {
    let rt = Runtime::new(&settings()).expect("runtime");
    let p = load(&rt, "(loop $l (br $l)) (i32.const 1200)", "").await;
    for _ in 0..3 {
        // Well past the ticker's 10 quiet ticks: it is asleep when the call starts.
        // (Were it not woken, the loop would never be interrupted and this test would hang
        // until nextest's timeout ends it.)
        tokio::time::sleep(Duration::from_millis(150)).await;
        let err = p
            .on_statement(&statement())
            .await
            .expect_err("must time out");
        assert_eq!(err, CallError::Timeout("evil".into()));
    }
}

/// Scenario 15: a plugin that grows memory without end traps at the limit; the next call
/// gets a fresh instance.
#[tokio::test]
async fn a_memory_bomb_traps_at_the_limit() {
    let rt = Runtime::new(&settings()).expect("runtime");
    let p = load(
        &rt,
        "(loop $l (drop (memory.grow (i32.const 16))) (br $l)) (i32.const 1200)",
        "",
    )
    .await;
    for _ in 0..3 {
        let err = p.on_statement(&statement()).await.expect_err("traps");
        assert!(matches!(err, CallError::Trap(..)), "{err:?}");
    }
}

/// Scenario 16: unreachable and stack overflow trap; the trapped instance is never reused;
/// after five failures in a row the plugin is quarantined and its fail policy applies.
#[tokio::test]
async fn traps_and_recursion_fail_cleanly_and_lead_to_quarantine() {
    let rt = Runtime::new(&settings()).expect("runtime");
    let p = load(&rt, "unreachable", "").await;
    let err = p.on_statement(&statement()).await.expect_err("traps");
    assert!(
        matches!(&err, CallError::Trap(_, why) if why.contains("unreachable")),
        "{err:?}"
    );

    let deep = load(
        &rt,
        "(call $down (i32.const 0))",
        "(func $down (param i32) (result i32) (call $down (i32.add (local.get 0) (i32.const 1))))",
    )
    .await;
    let err = deep
        .on_statement(&statement())
        .await
        .expect_err("overflows");
    assert!(
        matches!(&err, CallError::Trap(_, why) if why.contains("stack")),
        "{err:?}"
    );

    let c = chain(p.clone(), FailPolicy::Closed);
    for _ in 0..5 {
        assert!(matches!(
            c.on_statement(&statement()).await,
            Verdict::Deny(_)
        ));
    }
    assert!(
        p.is_quarantined(),
        "quarantined after {} failures",
        p.failures()
    );
    let calls = p.calls.load(Relaxed);
    assert!(
        matches!(c.on_statement(&statement()).await, Verdict::Deny(d) if d.reason.contains("quarantined"))
    );
    assert_eq!(
        p.calls.load(Relaxed),
        calls,
        "a quarantined plugin is not called"
    );
}

/// Scenario 16, the other half: a trap does not poison later calls of a healthy plugin that
/// fails only sometimes (odd calls trap, even calls allow).
#[tokio::test]
async fn a_trap_never_poisons_the_next_call() {
    let rt = Runtime::new(&settings()).expect("runtime");
    let p = load(
        &rt,
        "(global.set $n (i32.add (global.get $n) (i32.const 1)))
         (if (i32.and (global.get $n) (i32.const 1)) (then unreachable))
         (i32.const 1200)",
        "(global $n (mut i32) (i32.const 0))",
    )
    .await;
    // Each trapped instance is replaced by a fresh one (whose counter starts again at 0), so
    // every call on a fresh instance traps and a reused one would allow: all calls trap.
    for _ in 0..4 {
        assert!(p.on_statement(&statement()).await.is_err());
    }
    let ok = load(&rt, ALLOW, "").await;
    for _ in 0..100 {
        assert_eq!(
            ok.on_statement(&statement()).await,
            Ok(tidegate_plugins::PluginDecision::Allow)
        );
    }
}

/// Scenario 17 (b) and (c): a return over 1 MiB and an out-of-range variant are validation
/// errors, never panics.
#[tokio::test]
async fn huge_and_malformed_returns_are_rejected() {
    let rt = Runtime::new(&settings()).expect("runtime");
    // A rewrite whose text is 2 MiB of zeros (memory grown to hold it).
    let huge = load(
        &rt,
        "(drop (memory.grow (i32.const 40)))
         (i32.store8 (i32.const 1300) (i32.const 2))
         (i32.store (i32.const 1304) (i32.const 65536))
         (i32.store (i32.const 1308) (i32.const 2097152))
         (i32.const 1300)",
        "",
    )
    .await;
    let err = huge.on_statement(&statement()).await.expect_err("too big");
    assert!(
        matches!(&err, CallError::Invalid(_, why) if why.contains("1 MiB"))
            || matches!(&err, CallError::Trap(..)),
        "{err:?}"
    );
    // A variant discriminant the WIT does not have.
    let bad = load(
        &rt,
        "(i32.store8 (i32.const 1400) (i32.const 9)) (i32.const 1400)",
        "",
    )
    .await;
    let err = bad.on_statement(&statement()).await.expect_err("invalid");
    assert!(matches!(err, CallError::Trap(..)), "{err:?}");
    // A denial with a malformed SQLSTATE.
    let sqlstate = load(
        &rt,
        "(i32.store8 (i32.const 1500) (i32.const 1))
         (i32.store (i32.const 1504) (i32.const 2048)) (i32.store (i32.const 1508) (i32.const 4))
         (i32.store (i32.const 1512) (i32.const 2048)) (i32.store (i32.const 1516) (i32.const 4))
         (i32.store8 (i32.const 1520) (i32.const 0))
         (i32.const 1500)",
        "",
    )
    .await;
    let err = sqlstate
        .on_statement(&statement())
        .await
        .expect_err("invalid SQLSTATE");
    assert!(
        matches!(&err, CallError::Invalid(_, why) if why.contains("SQLSTATE")),
        "{err:?}"
    );
}

/// Scenario 17 (b): a million log calls are capped (the call itself is bounded by the deadline).
#[tokio::test]
async fn log_floods_are_capped() {
    let rt = Runtime::new(&settings()).expect("runtime");
    let p = load(
        &rt,
        "(local $i i32)
         (loop $l
           (call $log (i32.const 2) (i32.const 2048) (i32.const 4))
           (local.set $i (i32.add (local.get $i) (i32.const 1)))
           (br_if $l (i32.lt_u (local.get $i) (i32.const 1000000))))
         (i32.const 1200)",
        "",
    )
    .await;
    // Either it finishes (lines past 100 dropped) or the deadline cuts it: never a hang.
    let start = Instant::now();
    let _ = p.on_statement(&statement()).await;
    assert!(start.elapsed() < Duration::from_secs(5));
}

/// Scenario 17 (a): imports outside the plugin world are refused at load, naming the import;
/// so are files over the size cap and files that are not components.
#[tokio::test]
async fn forbidden_imports_and_bad_files_are_refused_at_load() {
    let rt = Runtime::new(&settings()).expect("runtime");
    let dir = temp_dir();
    let sockets = wat::parse_str(r#"(component (import "wasi:sockets/tcp@0.2.6" (instance)))"#)
        .expect("component WAT");
    let err = rt
        .load(spec(write(&dir, "sockets.wasm", &sockets)))
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(&err, LoadError::Invalid { message, .. } if message.contains("wasi:sockets/tcp@0.2.6")),
        "{err}"
    );
    let unknown = wat::parse_str(r#"(component (import "tidegate:evil/launch@1.0.0" (instance)))"#)
        .expect("component WAT");
    let err = rt
        .load(spec(write(&dir, "unknown.wasm", &unknown)))
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("tidegate:evil/launch"), "{err}");
    let err = rt
        .load(spec(write(&dir, "junk.wasm", b"\0asm junk")))
        .await
        .err()
        .expect("refused");
    assert!(matches!(err, LoadError::Invalid { .. }), "{err}");
    let mut small = spec(write(&dir, "big.wasm", &vec![0u8; 4096]));
    small.settings.max_file_bytes = 1024;
    let err = rt.load(small).await.err().expect("refused");
    assert!(err.to_string().contains("limit"), "{err}");
    // A module with no plugin exports does not fit the world.
    let empty = wat::parse_str("(component)").expect("component WAT");
    assert!(rt
        .load(spec(write(&dir, "empty.wasm", &empty)))
        .await
        .is_err());
}

/// Scenario 15, pool exhaustion: with many calls in flight at once every one ends with an
/// answer or a clean error (busy, timeout), never a panic.
#[tokio::test(flavor = "current_thread")]
async fn concurrent_calls_end_cleanly() {
    let rt = Runtime::new(&settings()).expect("runtime");
    let slow = load(&rt, "(loop $l (br $l)) (i32.const 1200)", "").await;
    let mut tasks = Vec::new();
    for _ in 0..300 {
        let p = slow.clone();
        tasks.push(tokio::spawn(
            async move { p.on_statement(&statement()).await },
        ));
    }
    let (mut timeouts, mut busy) = (0, 0);
    for t in tasks {
        match t.await.expect("no panic") {
            Err(CallError::Timeout(_)) => timeouts += 1,
            Err(CallError::Busy(_)) => busy += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(timeouts + busy, 300);
    assert!(timeouts > 0);
    eprintln!("{timeouts} timed out, {busy} refused as busy");
    // Afterwards a well-behaved plugin works as before.
    let ok = load(&rt, ALLOW, "").await;
    assert!(ok.on_statement(&statement()).await.is_ok());
}

/// What a session's memo of settled statements relies on: a verdict is settled only when every
/// hook that gave it is deterministic and none failed, and the chain's stamp changes when a
/// plugin is swapped or quarantined.
#[tokio::test]
async fn settled_verdicts_and_the_stamp_that_ends_them() {
    let rt = Runtime::new(&settings()).expect("runtime");
    let stmt = statement();
    let dir = temp_dir();
    let det = |name: &str, body: &str| {
        let path = write(&dir, name, &deterministic_component(body, ""));
        rt.load(spec(path))
    };
    let allow = det("allow.wasm", ALLOW).await.expect("loads");
    assert!(allow.deterministic);
    let c = chain(allow, FailPolicy::Closed);
    let (verdict, settled) = c.on_statement_settled(&stmt).await;
    assert_eq!((verdict, settled), (Verdict::Allow, true));
    // Answered from the decision cache the second time: still settled.
    assert_eq!(c.on_statement_settled(&stmt).await, (Verdict::Allow, true));
    let stamp = c.hooks("app", "postgres").stamp;
    assert_eq!(
        c.hooks("app", "postgres").stamp,
        stamp,
        "stable while nothing changes"
    );

    // A new version of the same plugin: a new stamp.
    let again = det("again.wasm", ALLOW).await.expect("loads");
    c.entries[0].swap(again);
    let swapped = c.hooks("app", "postgres").stamp;
    assert_ne!(swapped, stamp);

    // A deterministic plugin that traps: never settled, and its quarantine moves the stamp.
    let trap = det("trap.wasm", "unreachable").await.expect("loads");
    c.entries[0].swap(trap.clone());
    let before = c.hooks("app", "postgres").stamp;
    let (verdict, settled) = c.on_statement_settled(&stmt).await;
    assert!(matches!(verdict, Verdict::Deny(_)) && !settled);
    for _ in 0..100 {
        if trap.is_quarantined() {
            break;
        }
        let _ = c.on_statement(&stmt).await;
    }
    assert!(trap.is_quarantined());
    assert_ne!(
        c.hooks("app", "postgres").stamp,
        before,
        "quarantine changes the stamp"
    );

    // A plugin that does not declare itself deterministic never settles a verdict.
    let plain = load(&rt, ALLOW, "").await;
    let c = chain(plain, FailPolicy::Closed);
    assert_eq!(c.on_statement_settled(&stmt).await, (Verdict::Allow, false));
}

/// The decision cache keeps a deterministic verdict per database: the same text (the same
/// fingerprint, the same user) may name other tables in another database, so a verdict given
/// for one database never answers for another.
#[tokio::test]
async fn a_cached_verdict_never_answers_for_another_database() {
    let rt = Runtime::new(&settings()).expect("runtime");
    // Denies (42501) when the principal's database name is six bytes long ("secret"): the
    // statement record is passed by pointer, and `principal.database` is its fourth string
    // (pointer at +24, length at +28).
    let body = "(if (result i32) (i32.eq (i32.load offset=28 (local.get $stmt)) (i32.const 6))
         (then
           (i32.store8 (i32.const 1500) (i32.const 1))
           (i32.store (i32.const 1504) (i32.const 2048)) (i32.store (i32.const 1508) (i32.const 4))
           (i32.store (i32.const 1512) (i32.const 2100)) (i32.store (i32.const 1516) (i32.const 5))
           (i32.store8 (i32.const 1520) (i32.const 0))
           (i32.const 1500))
         (else (i32.const 1200)))";
    let dir = temp_dir();
    let path = write(
        &dir,
        "by_db.wasm",
        &deterministic_component(body, r#"(data (i32.const 2100) "42501")"#),
    );
    let plugin = rt.load(spec(path)).await.expect("loads");
    assert!(plugin.deterministic);
    let c = chain(plugin, FailPolicy::Closed);
    let open = statement();
    let mut secret = statement();
    secret.principal = Arc::new(Principal {
        database: "secret".into(),
        ..(*open.principal).clone()
    });
    assert_eq!(secret.fingerprint, open.fingerprint);
    // Twice, so the second answer for `postgres` comes from the decision cache.
    assert_eq!(c.on_statement_settled(&open).await, (Verdict::Allow, true));
    assert_eq!(c.on_statement_settled(&open).await, (Verdict::Allow, true));
    let hits = c.entries[0].stats.cache_hits.load(Relaxed);
    assert!(hits >= 1, "the repeat was a cache hit ({hits})");
    // (A denial is never "settled": the session asks again each time.)
    for _ in 0..2 {
        match c.on_statement(&secret).await {
            Verdict::Deny(d) => assert_eq!(d.sqlstate, "42501"),
            other => panic!("the same statement in database secret: {other:?}"),
        }
    }
    assert!(
        c.entries[0].stats.cache_hits.load(Relaxed) > hits,
        "the repeated denial came from the cache"
    );
    // And the other way round: the denial cached for `secret` does not leak back.
    assert_eq!(c.on_statement_settled(&open).await, (Verdict::Allow, true));
}
