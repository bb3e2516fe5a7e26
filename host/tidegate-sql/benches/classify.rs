//! Fingerprint, cache-hit and cold-parse costs per statement shape.
#![allow(missing_docs)] // criterion_group! generates undocumented items.

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use tidegate_sql::{classify, fingerprint, time_range, ClassCache, NoLookup};

const SHAPES: &[(&str, &str)] = &[
    ("pgbench_select", "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;"),
    ("pgbench_update", "UPDATE pgbench_accounts SET abalance = abalance + -2173 WHERE aid = 48213;"),
    ("pgbench_insert", "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (7, 1, 48213, -2173, CURRENT_TIMESTAMP);"),
    ("time_bucket", "SELECT time_bucket('5 minutes', time) AS bucket, device, avg(value), max(value) FROM metrics WHERE time > '2024-01-01' AND time < '2024-01-02' GROUP BY bucket, device ORDER BY bucket"),
    ("cte", "WITH recent AS (SELECT * FROM metrics WHERE time > now() - interval '1 hour') SELECT device, count(*) FROM recent GROUP BY device"),
];

fn benches(c: &mut Criterion) {
    for (name, sql) in SHAPES {
        c.bench_function(&format!("fingerprint/{name}"), |b| {
            b.iter(|| fingerprint(black_box(sql.as_bytes())))
        });
        c.bench_function(&format!("classify_cold/{name}"), |b| {
            b.iter(|| classify(black_box(sql), &NoLookup))
        });
        let cache = ClassCache::new(1024);
        cache.classify(sql, &NoLookup);
        c.bench_function(&format!("cache_hit/{name}"), |b| {
            b.iter(|| cache.classify(black_box(sql), &NoLookup))
        });
    }
}

/// A TSBS `double-groupby`-style query as the TimescaleDB query generator writes it.
const TSBS: &str = "SELECT time_bucket('3600 seconds', time) AS hour, hostname, avg(usage_user) AS mean_usage_user FROM cpu WHERE hostname IN ('host_1', 'host_7', 'host_9') AND time >= '2016-01-01 05:50:04.123456 +0000' AND time < '2016-01-01 17:50:04.123456 +0000' GROUP BY hour, hostname ORDER BY hour";

fn time_ranges(c: &mut Criterion) {
    let cache = ClassCache::new(1024);
    let class = cache.classify(TSBS, &NoLookup);
    assert_eq!(time_range(TSBS, &class, &[], 0).len(), 1);
    c.bench_function("time_range/tsbs", |b| {
        b.iter(|| time_range(black_box(TSBS), &class, &[], 0))
    });
    c.bench_function("cache_hit_and_time_range/tsbs", |b| {
        b.iter(|| {
            let class = cache.classify(black_box(TSBS), &NoLookup);
            time_range(TSBS, &class, &[], 0)
        })
    });
}

criterion_group!(classify_benches, benches, time_ranges);
criterion_main!(classify_benches);
