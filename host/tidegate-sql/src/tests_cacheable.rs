//! Scenario 13's cacheability table: which reads the result cache may store, as far as the
//! statement text decides (relation properties — temporary, unlogged, row-level security,
//! views — are the catalog's part, and transactions the session's).
//!
//! Unlike Pgpool, constants typed `timestamptz` are cacheable: TimeZone is part of every cache
//! key, so two sessions share an entry only if they read such constants the same way.

use crate::{classify, NoLookup};

const CASES: &[(&str, bool)] = &[
    // Plain reads.
    ("SELECT * FROM t", true),
    ("SELECT a, b FROM s.t WHERE a = 1", true),
    (
        "SELECT count(*) FROM t GROUP BY a HAVING count(*) > 1",
        true,
    ),
    ("SELECT * FROM t JOIN u USING (id)", true),
    ("SELECT * FROM t WHERE id IN (SELECT id FROM u)", true),
    ("WITH x AS (SELECT * FROM t) SELECT * FROM x", true),
    ("SELECT * FROM t UNION ALL SELECT * FROM u", true),
    ("SELECT * FROM t ORDER BY a LIMIT 10 OFFSET 5", true),
    ("SELECT DISTINCT a FROM t", true),
    ("SELECT lower(a), abs(b), length(c) FROM t", true),
    ("SELECT a::text, b::numeric(10, 2) FROM t", true),
    (
        "SELECT * FROM t WHERE time >= '2024-01-01'::timestamptz",
        true,
    ),
    (
        "SELECT * FROM t WHERE time >= TIMESTAMPTZ '2024-01-01 00:00+00'",
        true,
    ),
    (
        "SELECT time_bucket('1 hour', time), avg(v) FROM m GROUP BY 1",
        true,
    ),
    ("SELECT coalesce(a, 0), greatest(a, b) FROM t", true),
    ("SELECT a, row_number() OVER (ORDER BY a) FROM t", true),
    ("SELECT 1", true),
    ("SELECT * FROM t WHERE a = $1", true),
    ("SELECT * FROM t WHERE a ~ '^x'", true),
    ("VALUES (1), (2)", true),
    // Time and randomness.
    ("SELECT now()", false),
    (
        "SELECT * FROM t WHERE time > now() - interval '1 hour'",
        false,
    ),
    ("SELECT current_timestamp", false),
    ("SELECT clock_timestamp()", false),
    ("SELECT statement_timestamp()", false),
    ("SELECT random()", false),
    ("SELECT * FROM t ORDER BY random() LIMIT 1", false),
    ("SELECT gen_random_uuid()", false),
    // Stable only through TimeZone/DateStyle, which every cache key holds: cacheable.
    ("SELECT extract(epoch FROM time) FROM t", true),
    ("SELECT time AT TIME ZONE 'UTC' FROM t", true),
    (
        "SELECT date_trunc('hour', time), avg(v) FROM m GROUP BY 1",
        true,
    ),
    (
        "SELECT date_part('dow', time), to_char(time, 'YYYY-MM') FROM t",
        true,
    ),
    ("SELECT age(b, a) FROM t", true),
    // age(x) measures from the current date: the clock.
    ("SELECT age(a) FROM t", false),
    ("SELECT date_trunc('day', now())", false),
    // Sequences, identity and settings.
    ("SELECT nextval('s')", false),
    ("SELECT currval('s')", false),
    ("SELECT current_user", false),
    ("SELECT session_user", false),
    ("SELECT current_setting('search_path')", false),
    ("SELECT txid_current()", false),
    // Locks and writes.
    ("SELECT * FROM t FOR UPDATE", false),
    ("SELECT * FROM t FOR SHARE", false),
    ("SELECT * FROM t FOR NO KEY UPDATE", false),
    ("SELECT * INTO new_t FROM t", false),
    (
        "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
        false,
    ),
    ("INSERT INTO t VALUES (1)", false),
    ("UPDATE t SET a = 1", false),
    ("DELETE FROM t", false),
    ("SELECT pg_advisory_lock(1)", false),
    // Catalogs and sampling.
    ("SELECT * FROM pg_class", false),
    ("SELECT * FROM pg_catalog.pg_stat_activity", false),
    ("SELECT * FROM information_schema.tables", false),
    ("SELECT * FROM t TABLESAMPLE SYSTEM (10)", false),
    (
        "SELECT * FROM t TABLESAMPLE BERNOULLI (10) REPEATABLE (1)",
        false,
    ),
    // Unknown functions, several statements, non-queries.
    ("SELECT my_function(a) FROM t", false),
    ("SELECT * FROM t; SELECT * FROM u", false),
    ("SHOW search_path", false),
    ("EXPLAIN SELECT * FROM t", false),
    ("SET search_path = a", false),
    ("BEGIN", false),
    ("not sql at all", false),
];

#[test]
fn the_cacheability_table_holds() {
    let wrong: Vec<String> = CASES
        .iter()
        .filter_map(|(sql, want)| {
            let c = classify(sql, &NoLookup);
            let got = c.cacheable && c.statements == 1;
            (got != *want).then(|| format!("{sql}: cacheable = {got}, want {want}"))
        })
        .collect();
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}
