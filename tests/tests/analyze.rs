//! `tidegate analyze --out report.html` on a time-series data set (a TimescaleDB hypertable
//! with compressed chunks where the extension is installed, a plain table otherwise) while a
//! workload runs through the broker; the page is opened in headless Chromium, which must report
//! no console error, and whose DOM must hold every section with its verdict and every plot
//! drawn (the page's own check sets `data-check="ok"`). Markdown and JSON carry the same.

use std::path::Path;
use std::process::Command;
use std::time::Duration;
use tidegate_tests::{base_config, fresh_dir, output_text, tidegate_with, Broker, Postgres};

use tidegate::cli::analyze::SECTIONS;

/// 30 days × 20 series every 10 minutes, ending now (86,400 rows), as a hypertable with its
/// older chunks compressed when TimescaleDB is there.
fn load(pg: &Postgres, timescale: bool) {
    pg.sql(
        "postgres",
        "CREATE TABLE time_series_data (time timestamptz NOT NULL, series_id int NOT NULL, \
         value double precision, tag int); CREATE INDEX ON time_series_data (tag)",
    );
    if timescale {
        pg.sql(
            "postgres",
            "SELECT create_hypertable('time_series_data', 'time', chunk_time_interval => interval '1 day')",
        );
    }
    pg.sql(
        "postgres",
        "INSERT INTO time_series_data \
         SELECT t, s, random() * 100, s % 5 \
         FROM generate_series(now() - interval '30 days', now(), interval '10 minutes') t, \
              generate_series(1, 20) s; \
         CREATE TABLE accounts AS SELECT g AS id, g % 997 AS owner FROM generate_series(1, 200000) g; \
         ANALYZE",
    );
    if timescale {
        pg.sql(
            "postgres",
            "ALTER TABLE time_series_data SET (timescaledb.compress, timescaledb.compress_segmentby = 'series_id'); \
             SELECT count(compress_chunk(c)) FROM show_chunks('time_series_data', older_than => interval '7 days') c",
        );
    }
}

fn chromium(page: &Path) -> (String, String) {
    let profile = fresh_dir().expect("profile dir");
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .env("HOME", &profile)
        .output()
        .expect("chromium runs (scripts/deps.sh installs it)");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_opens_in_a_browser_with_every_section_and_plot() {
    let settings = [("shared_preload_libraries", "pg_stat_statements")];
    let timescale = tidegate_tests::timescaledb_installed();
    let pg = if timescale {
        Postgres::start_timescale_with(&[(
            "shared_preload_libraries",
            "timescaledb,pg_stat_statements",
        )])
        .expect("TimescaleDB")
    } else {
        println!(
            "note: TimescaleDB not installed: the hypertables section is expected as not measured"
        );
        Postgres::start_with(&settings)
    };
    pg.sql(
        "postgres",
        "CREATE EXTENSION IF NOT EXISTS pg_stat_statements",
    );
    load(&pg, timescale);
    // The statements that matter are the workload's, not the loading.
    pg.sql("postgres", "SELECT pg_stat_statements_reset()");

    let extra = "[cache]\nenabled = true\n";
    let b = Broker::start(&pg, extra).await;
    let dir = fresh_dir().expect("dir");
    let config = dir.join("tidegate.toml");
    std::fs::write(&config, base_config(&pg, extra)).expect("config");

    // A workload through the broker while analyze samples: cached dashboard reads, an
    // unindexed scan, writes.
    let c = b.connect("postgres").await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                c.simple_query(
                    "SELECT series_id, avg(value) FROM time_series_data \
                     WHERE time > '2020-01-01' AND time < '2020-01-02' GROUP BY 1",
                )
                .await
                .expect("dashboard read");
                c.simple_query(&format!(
                    "SELECT count(*) FROM accounts WHERE owner = {}",
                    i % 997
                ))
                .await
                .expect("scan");
                c.simple_query(&format!(
                    "INSERT INTO time_series_data VALUES (now(), {}, 1, 1)",
                    i % 20
                ))
                .await
                .expect("write");
            }
            i
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let page = dir.join("report.html");
    let metrics = format!("http://{}/metrics", b.http);
    let args: Vec<String> = [
        "analyze",
        "--out",
        page.to_str().expect("path"),
        "--sample-seconds",
        "3",
        "--metrics",
        metrics.as_str(),
    ]
    .map(str::to_owned)
    .to_vec();
    let cfg = config.clone();
    let out = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        tidegate_with(&args, &cfg)
    })
    .await
    .expect("analyze");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let ran = load.await.expect("workload");
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(ran > 0);

    let html = std::fs::read_to_string(&page).expect("report");
    assert!(
        !html.contains(" src=") && !html.contains("<link"),
        "self-contained"
    );
    let (dom, log) = chromium(&page);
    assert!(
        dom.contains("data-check=\"ok\""),
        "the page's check failed:\n{log}\n{dom}"
    );
    for line in log.lines() {
        assert!(
            !(line.contains("CONSOLE") || line.contains("Uncaught")),
            "console output from the page: {line}\n{log}"
        );
    }
    for id in SECTIONS {
        assert!(
            dom.contains(&format!("<section id=\"{id}\"")),
            "{id} in the DOM"
        );
    }
    let charts: usize = dom
        .split("data-charts=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .and_then(|n| n.parse().ok())
        .expect("data-charts");
    // Statements, latency, cache, pool waits, sizes, missing indexes, bloat, buffer hits, and
    // hypertables with TimescaleDB: each drew its plot.
    assert!(charts >= if timescale { 8 } else { 7 }, "{charts} charts");
    let verdict = |id: &str| {
        dom.split(&format!("<section id=\"{id}\""))
            .nth(1)
            .and_then(|r| r.split("data-verdict=\"").nth(1))
            .and_then(|r| r.split('"').next())
            .unwrap_or("")
            .to_owned()
    };
    assert_eq!(verdict("top-statements"), "warn", "the scan dominates");
    assert_ne!(
        verdict("cache"),
        "unknown",
        "the broker's metrics were read"
    );
    assert_ne!(verdict("latency"), "unknown");
    assert_eq!(verdict("missing-indexes"), "warn", "accounts is scanned");
    if timescale {
        assert_ne!(verdict("hypertables"), "unknown");
        assert!(
            dom.contains("public.time_series_data"),
            "the hypertable is listed"
        );
    } else {
        assert_eq!(verdict("hypertables"), "unknown");
    }

    let md = tidegate_with(
        &["analyze", "--format", "markdown", "--sample-seconds", "1"],
        &config,
    );
    let text = output_text(&md);
    assert!(md.status.success(), "{text}");
    assert!(
        text.contains("## Top statements by total time") && text.contains("| table |"),
        "{text}"
    );
    let json = tidegate_with(
        &["analyze", "--format", "json", "--sample-seconds", "1"],
        &config,
    );
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    assert_eq!(v["sections"].as_array().map(Vec::len), Some(SECTIONS.len()));
}
