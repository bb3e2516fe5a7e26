//! What the plugin chain costs per statement: the four first-party plugins (built for
//! wasm32-wasip2 by the test command) on warm instances — `on-statement` for a pgbench-style
//! read through access-control (cached decision and fresh) and the optimizer, `on-audit`
//! through the audit plugin, and `on-rows` / `on-write-values` through encryption.
//!
//! `cargo bench -p tidegate-plugins --bench chain` (after building the plugins).

#![allow(missing_docs)] // criterion_group! generates undocumented items.

use criterion::{criterion_group, criterion_main, Criterion};
use std::path::PathBuf;
use std::sync::Arc;
use tidegate_config::FailPolicy;
use tidegate_plugins::{
    AuditEvent, BoundValue, Chain, ChainEntry, Column, Keys, LoadedPlugin, PluginSpec, Principal,
    Runtime, Settings, Statement, StatementKind, TableRef,
};

fn plugin_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../plugins/target/wasm32-wasip2/release")
}

fn settings() -> Settings {
    Settings {
        call_timeout: std::time::Duration::from_millis(50),
        memory_limit: 16 << 20,
        max_file_bytes: 10 << 20,
        quarantine_after: 5,
    }
}

fn keys() -> Arc<Keys> {
    let mut k = Keys::default();
    k.insert("pii", 1, [7; 32]);
    Arc::new(k)
}

async fn load(rt: &Arc<Runtime>, name: &str, file: &str, config: &str) -> Arc<LoadedPlugin> {
    rt.load(PluginSpec {
        name: name.into(),
        path: plugin_dir().join(file),
        config_json: config.into(),
        keys: keys(),
        keys_digest: String::new(),
        settings: settings(),
    })
    .await
    .unwrap_or_else(|e| panic!("{file}: {e} (build the plugins first)"))
}

fn entry(name: &str, plugin: Arc<LoadedPlugin>) -> ChainEntry {
    ChainEntry {
        name: name.into(),
        fail: FailPolicy::Closed,
        databases: vec![],
        users: vec![],
        current: arc_swap::ArcSwap::new(plugin),
        stats: Default::default(),
    }
}

fn principal() -> Arc<Principal> {
    Arc::new(Principal {
        user: "app".into(),
        role: "app".into(),
        roles: vec!["admin".into()],
        database: "bench".into(),
    })
}

fn select(fingerprint: u128) -> Statement {
    Statement {
        principal: principal(),
        sql: "SELECT abalance FROM pgbench_accounts WHERE aid = 42".into(),
        fingerprint,
        kind: StatementKind::Read,
        read_only: true,
        tables: vec![TableRef {
            schema: None,
            name: "pgbench_accounts".into(),
        }],
        prepared: false,
    }
}

fn ssn() -> Column {
    Column {
        table: Some(TableRef {
            schema: Some("public".into()),
            name: "patients".into(),
        }),
        name: "ssn".into(),
        type_name: "text".into(),
    }
}

fn bench(c: &mut Criterion) {
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let rt = Runtime::new(&settings()).expect("engine");
    let acl_cfg = r#"{"deny_by_default":true,"roles":{"admin":[{"kinds":["*"],"tables":["*"]}]}}"#;
    let opt_cfg = r#"{"hypertables":["metrics"],"max_rows":10000}"#;
    let enc_cfg = r#"{"columns":{"public.patients.ssn":{"key":"pii","readers":["admin"]}}}"#;
    let (acl, opt, audit, enc) = tokio.block_on(async {
        (
            load(&rt, "access-control", "access_control.wasm", acl_cfg).await,
            load(&rt, "optimizer", "optimizer.wasm", opt_cfg).await,
            load(&rt, "audit", "audit.wasm", r#"{"labels":{"env":"bench"}}"#).await,
            load(&rt, "encryption", "encryption.wasm", enc_cfg).await,
        )
    });
    let chain = Chain::new(vec![
        entry("access-control", acl.clone()),
        entry("optimizer", opt.clone()),
        entry("encryption", enc.clone()),
        entry("audit", audit.clone()),
    ]);
    let stmt = select(1);
    let mut g = c.benchmark_group("chain");
    g.bench_function("on_statement, 4 plugins, cached ACL decision", |b| {
        b.iter(|| tokio.block_on(chain.on_statement(&stmt)))
    });
    let mut fp = 10u128;
    g.bench_function("access-control on_statement, warm, uncached", |b| {
        b.iter(|| {
            fp += 1;
            tokio.block_on(acl.on_statement(&select(fp))).expect("call")
        })
    });
    g.bench_function("optimizer on_statement, warm", |b| {
        b.iter(|| tokio.block_on(opt.on_statement(&stmt)).expect("call"))
    });
    let event = AuditEvent {
        principal: principal(),
        fingerprint: format!("{:032x}", 1u128).into(),
        kind: StatementKind::Read,
        tables: stmt.tables.as_slice().into(),
        decision: "allow".into(),
        decided_by: None,
        rows: 1,
        duration_us: 120,
        sqlstate: None,
        at_us: 1_700_000_000_000_000,
    };
    g.bench_function("audit on_audit, warm", |b| {
        b.iter(|| tokio.block_on(audit.on_audit(&event)).expect("call"))
    });
    // What the audit writer does per record: the chain over a batch of 100 events, each
    // alike but for rows/duration/time — the deterministic audit plugin's answer is reused.
    let batch: Vec<AuditEvent> = (0..100u64)
        .map(|i| AuditEvent {
            rows: i,
            duration_us: 100 + i,
            at_us: event.at_us + i as i64,
            ..event.clone()
        })
        .collect();
    let audit_chain = Chain::new(vec![entry("audit", audit.clone())]);
    g.bench_function("audit chain, batch of 100 events (per batch)", |b| {
        b.iter(|| tokio.block_on(audit_chain.on_audit(&batch)))
    });
    let write = vec![BoundValue {
        column: ssn(),
        value: Some(b"123-45-6789".to_vec()),
    }];
    g.bench_function("encryption on_write_values, 1 value", |b| {
        b.iter(|| {
            tokio
                .block_on(enc.on_write_values(&stmt, &write))
                .expect("call")
                .expect("encrypted")
        })
    });
    let stored = tokio
        .block_on(enc.on_write_values(&stmt, &write))
        .expect("call")
        .expect("encrypted");
    let columns = vec![ssn()];
    let rows: Vec<Vec<_>> = (0..100).map(|_| stored.clone()).collect();
    g.bench_function("encryption on_rows, 100 rows decrypted", |b| {
        b.iter(|| {
            tokio
                .block_on(enc.on_rows(&stmt, &columns, &rows))
                .expect("call")
                .expect("decrypted")
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
