//! pgbench and COPY through TideGate: initialization with COPY, every query mode, a pool of 4
//! backend connections for 16 clients, no failed transactions and consistent balances.

use tidegate_tests::{create_db, run_tool, Broker, Postgres};

fn duration() -> String {
    // The acceptance run is 30 s per mode; TIDEGATE_PGBENCH_SECONDS shortens local runs.
    std::env::var("TIDEGATE_PGBENCH_SECONDS").unwrap_or_else(|_| "30".into())
}

async fn pgbench(url: &str, args: &[&str]) -> String {
    let mut all = vec![url];
    all.extend_from_slice(args);
    let out = run_tool("pgbench", &all, &[]).await;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "pgbench {args:?} failed:\n{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_every_mode_over_a_pool_of_four() {
    let pg = Postgres::start();
    create_db(&pg, "bench");
    let broker = Broker::start(&pg, "[pool]\nsize = 4\n").await;
    let url = broker.app_url("bench");
    // Initialization loads pgbench_accounts with COPY through the broker.
    pgbench(&url, &["-i", "-s", "10", "-q"]).await;
    assert_eq!(
        pg.sql("bench", "SELECT count(*) FROM pgbench_accounts"),
        "1000000"
    );
    let t = duration();
    for mode in ["simple", "extended", "prepared"] {
        for select_only in [true, false] {
            let mut args = vec!["-n", "-c", "16", "-j", "2", "-T", &t, "-M", mode];
            if select_only {
                args.push("-S");
            }
            let report = pgbench(&url, &args).await;
            assert_eq!(
                tidegate_tests::pgbench_failed(&report),
                0,
                "{mode} -S={select_only}:\n{report}"
            );
            assert!(tidegate_tests::pgbench_processed(&report) > 0, "{report}");
        }
    }
    // TPC-B keeps every balance total equal to the sum of history deltas.
    let sums = pg.sql(
        "bench",
        "SELECT (SELECT sum(abalance) FROM pgbench_accounts) = (SELECT sum(delta) FROM pgbench_history) \
         AND (SELECT sum(bbalance) FROM pgbench_branches) = (SELECT sum(delta) FROM pgbench_history) \
         AND (SELECT sum(tbalance) FROM pgbench_tellers) = (SELECT sum(delta) FROM pgbench_history) \
         AND (SELECT count(*) FROM pgbench_history) > 0",
    );
    assert_eq!(sums, "t", "balances are inconsistent");
    // The broker never opened more than its pool size.
    let max_conns = pg.sql(
        "postgres",
        "SELECT count(*) FROM pg_stat_activity WHERE datname = 'bench' AND backend_type = 'client backend'",
    );
    if max_conns != "4" {
        eprintln!(
            "{}",
            pg.sql(
                "postgres",
                "SELECT pid, state, backend_start, state_change, left(query, 60) FROM pg_stat_activity WHERE datname = 'bench'"
            )
        );
    }
    assert!(
        max_conns.parse::<u32>().expect("count") <= 4,
        "{max_conns} connections"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_a_million_rows_in_and_out_is_lossless() {
    let pg = Postgres::start();
    create_db(&pg, "copy");
    let broker = Broker::start(&pg, "").await;
    let dir = pg.dir.join("copy");
    std::fs::create_dir_all(&dir).expect("dir");
    let src = dir.join("in.tsv");
    let mut data = String::with_capacity(40 << 20);
    for i in 0..1_000_000u32 {
        use std::fmt::Write;
        let _ = writeln!(
            data,
            "{i}\t{}\tvalue-{}\\t\\\\{}\t{}",
            i as f64 * 0.5,
            i % 977,
            i % 13,
            if i % 10 == 0 { "\\N" } else { "x" }
        );
    }
    std::fs::write(&src, &data).expect("write");
    let url = broker.app_url("copy");
    pg.sql("copy", "CREATE TABLE t (id int, f float8, s text, n text)");
    let load = run_tool(
        "psql",
        &[
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            &url,
            "-c",
            &format!("\\copy t FROM '{}'", src.display()),
        ],
        &[],
    )
    .await;
    assert!(
        load.status.success(),
        "{}",
        String::from_utf8_lossy(&load.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&load.stdout).trim(), "COPY 1000000");
    let out_tg = dir.join("out-tg.tsv");
    let out_direct = dir.join("out-direct.tsv");
    for (u, f) in [(&url, &out_tg), (&pg.url("copy"), &out_direct)] {
        let r = run_tool(
            "psql",
            &[
                "-X",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                u,
                "-c",
                &format!("\\copy (SELECT * FROM t ORDER BY id) TO '{}'", f.display()),
            ],
            &[],
        )
        .await;
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    }
    let a = std::fs::read(&out_tg).expect("read");
    let b = std::fs::read(&out_direct).expect("read");
    assert_eq!(a.len(), data.len());
    assert!(
        a == data.as_bytes(),
        "COPY out through TideGate differs from what went in"
    );
    assert!(a == b, "COPY out through TideGate differs from direct");
}
