//! `GET /metrics` after a mixed workload — reads, a write, a cache hit, a statement the
//! access-control plugin denies, a failing statement, an optimizer plugin that traps — read
//! with a Prometheus text-format parser: each family is there with the values the workload
//! implies, labelled only by configuration and pools.

use prometheus_parse::{Sample, Scrape, Value};
use tidegate_tests::{built_plugins, send_text, sqlstate, Api, Broker, Postgres};

fn value(s: &Sample) -> f64 {
    match &s.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        Value::Histogram(_) | Value::Summary(_) => f64::NAN,
    }
}

/// The samples named `name`, as (labels, value).
fn samples<'a>(scrape: &'a Scrape, name: &str) -> Vec<(&'a Sample, f64)> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .map(|s| (s, value(s)))
        .collect()
}

fn total(scrape: &Scrape, name: &str) -> f64 {
    let found = samples(scrape, name);
    assert!(!found.is_empty(), "no {name} in the scrape");
    found.iter().map(|(_, v)| v).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_scraped_after_a_mixed_workload() {
    let pg = Postgres::start();
    pg.sql(
        "postgres",
        "CREATE TABLE t (id int); INSERT INTO t VALUES (1)",
    );
    let dir = tidegate_tests::fresh_dir().expect("dir");
    std::fs::copy(
        built_plugins().join("access_control.wasm"),
        dir.join("access_control.wasm"),
    )
    .expect("copy plugin");
    std::fs::write(
        dir.join("trap.wasm"),
        tidegate_plugins::testing::component("unreachable", ""),
    )
    .expect("write plugin");
    let extra = format!(
        r#"
[cache]
enabled = true
[plugins]
dir = "{dir}"
call_timeout = "500ms"
quarantine_after = 1000
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
reader = ["reader"]
[[plugins.chain]]
name = "trap"
file = "trap.wasm"
kind = "optimizer"
[[users]]
name = "reader"
password = "reader"
"#,
        dir = dir.display()
    );
    let (broker, addr) = Broker::start_http(&pg, &extra).await;
    let app = broker.connect("postgres").await;
    for _ in 0..2 {
        app.simple_query("SELECT id FROM t").await.expect("read");
    }
    app.simple_query("INSERT INTO t VALUES (2)")
        .await
        .expect("write");
    let reader = tidegate_tests::connect(&broker.url("reader", "reader", "postgres"))
        .await
        .expect("reader connects");
    let denied = reader
        .simple_query("DELETE FROM t")
        .await
        .expect_err("reader may not write");
    assert_eq!(sqlstate(&denied).as_deref(), Some("42501"));
    let failed = app
        .simple_query("SELECT 1/0")
        .await
        .expect_err("division by zero");
    assert_eq!(sqlstate(&failed).as_deref(), Some("22012"));

    let anonymous = Api::new(addr, tidegate_tests::ApiAuth::None);
    let (status, _) = send_text(anonymous.get("/healthz")).await;
    assert_eq!(status, 200);
    let response = anonymous.get("/metrics").send().await.expect("scrape");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap_or("")
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = response.text().await.expect("body");
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    assert!(
        !text.contains("SELECT") && !text.contains("DELETE"),
        "no SQL text: {text}"
    );
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parses");

    assert!(total(&scrape, "tidegate_clients") >= 2.0, "{text}");
    assert_eq!(total(&scrape, "tidegate_config_generation"), 1.0);
    assert_eq!(total(&scrape, "tidegate_reloads_total"), 0.0);
    assert!(total(&scrape, "tidegate_cache_hits_total") >= 1.0, "{text}");
    assert!(
        total(&scrape, "tidegate_cache_misses_total") >= 1.0,
        "{text}"
    );
    assert!(
        total(&scrape, "tidegate_cache_stores_total") >= 1.0,
        "{text}"
    );
    assert!(
        total(&scrape, "tidegate_cache_invalidations_total") >= 1.0,
        "{text}"
    );
    assert!(
        total(&scrape, "tidegate_node_writes_total") >= 1.0,
        "{text}"
    );
    assert!(total(&scrape, "tidegate_pool_size") >= 1.0, "{text}");
    let conns = samples(&scrape, "tidegate_pool_server_connections");
    assert!(
        conns
            .iter()
            .any(|(s, v)| s.labels.get("state") == Some("idle") && *v >= 1.0),
        "{text}"
    );
    assert!(conns
        .iter()
        .all(|(s, _)| s.labels.get("database") == Some("postgres")));
    let calls = samples(&scrape, "tidegate_plugin_calls_total");
    assert!(
        calls
            .iter()
            .any(|(s, v)| s.labels.get("plugin") == Some("access-control") && *v >= 1.0),
        "{text}"
    );
    assert!(
        total(&scrape, "tidegate_plugin_denials_total") >= 1.0,
        "{text}"
    );
    assert_eq!(total(&scrape, "tidegate_plugin_quarantined"), 0.0);
    let labelled = |name: &str, pairs: &[(&str, &str)]| {
        samples(&scrape, name)
            .iter()
            .filter(|(s, _)| pairs.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|(_, v)| *v)
            .sum::<f64>()
    };
    let statements = "tidegate_statements_total";
    assert!(
        labelled(statements, &[("kind", "read"), ("route", "primary")]) >= 1.0,
        "{text}"
    );
    assert!(
        labelled(statements, &[("kind", "read"), ("route", "cache")]) >= 1.0,
        "{text}"
    );
    assert!(
        labelled(statements, &[("kind", "write"), ("route", "primary")]) >= 1.0,
        "{text}"
    );
    assert!(
        labelled("tidegate_errors_total", &[("class", "42")]) >= 1.0,
        "denied: {text}"
    );
    assert!(
        labelled("tidegate_errors_total", &[("class", "22")]) >= 1.0,
        "1/0: {text}"
    );
    assert!(
        samples(&scrape, "tidegate_request_duration_seconds")
            .iter()
            .any(|(s, _)| s.labels.get("kind") == Some("read")
                && matches!(&s.value, Value::Histogram(h) if h.iter().any(|b| b.count >= 1.0))),
        "{text}"
    );
    assert!(
        labelled("tidegate_pool_clients", &[("state", "active")]) >= 2.0,
        "{text}"
    );
    assert!(
        total(&scrape, "tidegate_pool_transactions_total") >= 3.0,
        "{text}"
    );
    assert_eq!(total(&scrape, "tidegate_pool_paused"), 0.0);
    assert_eq!(total(&scrape, "tidegate_cache_breaker_open"), 0.0);
    assert!(
        labelled("tidegate_plugin_traps_total", &[("plugin", "trap")]) >= 1.0,
        "{text}"
    );
    assert!(
        labelled(
            "tidegate_http_requests_total",
            &[("route", "/healthz"), ("status", "200")]
        ) >= 1.0,
        "{text}"
    );
    for family in [
        "tidegate_http_connections",
        "tidegate_http_requests_in_flight",
        "tidegate_node_reads_total",
        "tidegate_node_bans_total",
        "tidegate_node_retries_total",
        "tidegate_replica_lag_seconds",
        "tidegate_replica_lag_bytes",
        "tidegate_node_writable",
        "tidegate_node_standby",
        "tidegate_plugin_failures_total",
        "tidegate_plugin_swaps_total",
        "tidegate_read_your_writes_redirects_total",
        "tidegate_no_healthy_replica_total",
        "tidegate_pool_wait_seconds",
        "tidegate_plugin_timeouts_total",
        "tidegate_plugin_quarantines_total",
        "tidegate_plugin_call_duration_seconds",
    ] {
        assert!(!samples(&scrape, family).is_empty(), "no {family}:\n{text}");
    }
    broker.shutdown().await;
}

/// `http.metrics = "admin"` restricts the scrape to `http.admin_users`; `"off"` removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_be_for_admins_only_or_off() {
    let pg = Postgres::start();
    let (broker, addr) = Broker::start_http(
        &pg,
        "[http]\nmetrics = \"admin\"\nadmin_users = [\"app\"]\n[[users]]\nname = \"other\"\npassword = \"other\"\n",
    )
    .await;
    let (status, _) =
        send_text(Api::new(addr, tidegate_tests::ApiAuth::None).get("/metrics")).await;
    assert_eq!(status, 401);
    let other = Api::new(
        addr,
        tidegate_tests::ApiAuth::Basic("other".into(), "other".into()),
    );
    assert_eq!(send_text(other.get("/metrics")).await.0, 403);
    let (status, text) = send_text(Api::app(addr).get("/metrics")).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("tidegate_clients"), "{text}");
    broker.shutdown().await;

    let (broker, addr) = Broker::start_http(&pg, "[http]\nmetrics = \"off\"\n").await;
    assert_eq!(send_text(Api::app(addr).get("/metrics")).await.0, 404);
    broker.shutdown().await;
}
