//! Fingerprint, cache-hit and cold-parse costs per statement shape.
#![allow(missing_docs)] // criterion_group! generates undocumented items.

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use tidegate_sql::{classify, fingerprint, ClassCache, NoLookup};

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

criterion_group!(classify_benches, benches);
criterion_main!(classify_benches);
