//! Slow-query analysis on a real PostgreSQL with `pg_stat_statements` loaded: a deliberately
//! slow statement (an unindexed scan, run through the broker) comes first in `tidegate
//! slow-queries`, with TideGate's fingerprint — the same one the broker's `SHOW SLOW` and
//! `/admin/slow-queries` key it by — its counts and an EXPLAIN finding in plain words.

use tidegate_tests::{
    base_config, fresh_dir, output_text, send_json, tidegate_with, Api, Broker, Postgres,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slow_statement_comes_first_with_its_fingerprint_and_a_finding() {
    let pg = Postgres::start_with(&[("shared_preload_libraries", "pg_stat_statements")]);
    pg.sql(
        "postgres",
        "CREATE EXTENSION pg_stat_statements; \
         CREATE TABLE slow_t AS SELECT g AS id, g % 1000 AS v FROM generate_series(1, 300000) g; \
         ANALYZE slow_t; SELECT pg_stat_statements_reset()",
    );
    let extra = "[admin]\nusers = [\"app\"]\n";
    let b = Broker::start(&pg, extra).await;
    let c = b.connect("postgres").await;
    for i in 0..10 {
        c.simple_query(&format!("SELECT count(*) FROM slow_t WHERE v = {i}"))
            .await
            .expect("scan");
    }
    for i in 0..50 {
        c.simple_query(&format!("SELECT {i}")).await.expect("fast");
    }

    let dir = fresh_dir().expect("dir");
    let path = dir.join("tidegate.toml");
    std::fs::write(&path, base_config(&pg, extra)).expect("config");
    let out = tidegate_with(&["slow-queries", "--top", "5", "--json"], &path);
    assert!(out.status.success(), "{}", output_text(&out));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let first = &list[0];
    assert_eq!(
        first["query"], "SELECT count(*) FROM slow_t WHERE v = $1",
        "{list:#}"
    );
    assert_eq!(first["calls"], 10, "{first}");
    assert!(first["total_ms"].as_f64().unwrap() > 0.0);
    assert!(
        first["shared_blks_hit"].as_i64().unwrap() + first["shared_blks_read"].as_i64().unwrap()
            > 0
    );
    let findings = first["findings"].to_string();
    assert!(
        findings.contains("sequential scan of public.slow_t filtering on")
            && findings.contains("index"),
        "{findings}"
    );

    // The broker keys the same statement by the same fingerprint.
    let api = Api::app(b.http);
    let (status, broker) = send_json(api.get("/admin/slow-queries?top=50")).await;
    assert_eq!(status, 200, "{broker}");
    let mine = broker
        .as_array()
        .expect("array")
        .iter()
        .find(|q| q["query"] == "SELECT count(*) FROM slow_t WHERE v = ?")
        .unwrap_or_else(|| panic!("the scan in {broker:#}"));
    assert_eq!(mine["fingerprint"], first["fingerprint"]);
    assert_eq!(mine["calls"], 10);
    assert!(mine["p95_ms"].as_f64().unwrap() >= mine["p50_ms"].as_f64().unwrap());

    // Text output too; and a clear error without the extension.
    let out = tidegate_with(&["slow-queries", "--top", "3"], &path);
    let text = output_text(&out);
    assert!(out.status.success() && text.contains(" 1. "), "{text}");
    pg.sql("postgres", "DROP EXTENSION pg_stat_statements");
    let out = tidegate_with(&["slow-queries"], &path);
    assert!(!out.status.success());
    assert!(
        output_text(&out).contains("pg_stat_statements is not installed"),
        "{}",
        output_text(&out)
    );
}
