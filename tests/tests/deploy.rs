//! The Grafana dashboard (`deploy/grafana/tidegate.json`) and the Prometheus alert rules
//! (`deploy/prometheus/alerts.yml`) use only metric names a real `/metrics` scrape has: a broker
//! with the cache, an access-control and an audit plugin serves a few statements (one of them
//! failing), and every
//! `tidegate_*` name in the two files must be among the scraped series.

use std::collections::BTreeSet;
use std::path::Path;
use tidegate_tests::{base_config, plugin_dir_with, send_text, Api, ApiAuth, Broker, Postgres};

const KEY: &str = "YXVkaXQtY2hhaW4ta2V5LWZvci10ZXN0cy0zMmJ5dGU=";

/// Every `tidegate_…` identifier in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("tidegate_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let boundary = i == 0 || !rest.as_bytes()[i - 1].is_ascii_alphanumeric();
        if boundary && name.len() > "tidegate_".len() {
            out.insert(name.to_owned());
        }
        rest = &tail[end.max(1)..];
    }
    out
}

fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_alerts_use_only_scraped_metric_names() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("deploy/grafana/tidegate.json")).expect("dashboard"),
    )
    .expect("the dashboard is JSON");
    let mut queries = Vec::new();
    exprs(&dashboard, &mut queries);
    assert!(queries.len() >= 20, "{queries:?}");
    let alerts =
        std::fs::read_to_string(root.join("deploy/prometheus/alerts.yml")).expect("alerts");
    let alert_text: String = alerts
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    for alert in [
        "TideGateDown",
        "TideGatePoolSaturated",
        "TideGateReplicaLagging",
        "TideGatePluginQuarantined",
        "TideGateAuditFailing",
        "TideGateCacheBreakerOpen",
    ] {
        assert!(alert_text.contains(&format!("alert: {alert}")), "{alert}");
    }
    let mut used = metric_names(&queries.join("\n"));
    used.extend(metric_names(&alert_text));

    let pg = Postgres::start();
    tidegate_tests::migrate(&pg).await;
    let dir = plugin_dir_with(&["access_control.wasm", "audit.wasm"]);
    let extra = format!(
        r#"
[cache]
enabled = true
[plugins]
dir = "{dir}"
[[plugins.keys]]
name = "audit"
id = 1
secret = "{KEY}"
[[plugins.chain]]
name = "access-control"
file = "access_control.wasm"
kind = "access_control"
[plugins.chain.config]
deny_by_default = false
[[plugins.chain]]
name = "audit"
file = "audit.wasm"
kind = "audit"
[audit]
key = "audit"
checkpoint_file = "{dir}/checkpoints.jsonl"
"#,
        dir = dir.display()
    );
    let cfg = tidegate_config::Config::from_toml(&base_config(&pg, &extra)).expect("config");
    let broker = Broker::start_config(cfg).await;
    let c = broker.connect("postgres").await;
    c.simple_query("CREATE TABLE d (x int)").await.expect("ddl");
    c.simple_query("INSERT INTO d VALUES (1)")
        .await
        .expect("write");
    for _ in 0..2 {
        c.simple_query("SELECT x FROM d").await.expect("read");
    }
    // Errors by class exist once a client has seen one.
    c.simple_query("SELECT 1/0")
        .await
        .expect_err("division by zero");
    let api = Api::new(broker.http, ApiAuth::None);
    let (status, _) = send_text(api.get("/healthz")).await;
    assert_eq!(status, 200);
    let (status, scrape) = send_text(api.get("/metrics")).await;
    assert_eq!(status, 200, "{scrape}");
    let scraped: BTreeSet<String> = scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect();
    let missing: Vec<&String> = used.iter().filter(|n| !scraped.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "names in deploy/ that no scrape has: {missing:?}\nscraped: {scraped:?}"
    );
    assert!(used.len() >= 20, "{used:?}");
    broker.shutdown().await;
}
