use super::*;
use proptest::prelude::*;
use std::borrow::Cow;

/// (statement, replica-safe, kind)
const CASES: &[(&str, bool, Kind)] = &[
    // Plain reads.
    ("SELECT 1", true, Kind::Read),
    ("select 1", true, Kind::Read),
    ("SELECT abalance FROM pgbench_accounts WHERE aid = 42", true, Kind::Read),
    ("SELECT abalance FROM pgbench_accounts WHERE aid = $1", true, Kind::Read),
    ("SELECT * FROM public.t WHERE a > 5 ORDER BY b LIMIT 10", true, Kind::Read),
    ("SELECT a, count(*) FROM t GROUP BY a HAVING count(*) > 1", true, Kind::Read),
    ("SELECT * FROM a JOIN b ON a.id = b.id LEFT JOIN c USING (id)", true, Kind::Read),
    ("SELECT * FROM t WHERE id IN (SELECT id FROM u)", true, Kind::Read),
    ("SELECT * FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.id = t.id)", true, Kind::Read),
    ("SELECT 1 UNION ALL SELECT 2", true, Kind::Read),
    ("SELECT a FROM t INTERSECT SELECT a FROM u", true, Kind::Read),
    ("SELECT a FROM t EXCEPT SELECT a FROM u", true, Kind::Read),
    ("WITH x AS (SELECT * FROM t) SELECT * FROM x", true, Kind::Read),
    ("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 10) SELECT * FROM r", true, Kind::Read),
    ("VALUES (1, 'a'), (2, 'b')", true, Kind::Read),
    // sqlparser cannot parse `TABLE`: it is read as the `SELECT * FROM` it stands for.
    ("TABLE t", true, Kind::Read),
    ("TABLE ONLY s.t ORDER BY a LIMIT 3", true, Kind::Read),
    ("SELECT lower(name), upper(name), length(name) FROM users", true, Kind::Read),
    ("SELECT coalesce(a, 0) + greatest(b, c) FROM t", true, Kind::Read),
    ("SELECT now()", true, Kind::Read),
    ("SELECT current_timestamp", true, Kind::Read),
    ("SELECT current_user", true, Kind::Read),
    ("SELECT random()", true, Kind::Read),
    ("SELECT pg_is_in_recovery()", true, Kind::Read),
    ("SELECT version()", true, Kind::Read),
    ("SELECT count(*) FROM pg_stat_activity", true, Kind::Read),
    ("SELECT * FROM pg_catalog.pg_class WHERE relname = 'x'", true, Kind::Read),
    ("SELECT * FROM information_schema.tables", true, Kind::Read),
    ("SELECT row_number() OVER (PARTITION BY a ORDER BY b) FROM t", true, Kind::Read),
    ("SELECT sum(x) FILTER (WHERE x > 0) FROM t", true, Kind::Read),
    ("SELECT CASE WHEN a > 1 THEN 'x' ELSE 'y' END FROM t", true, Kind::Read),
    ("SELECT a::text, b::int, c::timestamptz FROM t", true, Kind::Read),
    ("SELECT * FROM t WHERE ts >= '2024-01-01' AND ts < '2024-02-01'", true, Kind::Read),
    ("SELECT * FROM t WHERE ts > now() - interval '1 day'", true, Kind::Read),
    ("SELECT jsonb_build_object('a', 1)", true, Kind::Read),
    ("SELECT data->>'name' FROM docs WHERE data @> '{\"a\": 1}'", true, Kind::Read),
    ("SELECT * FROM generate_series(1, 10)", true, Kind::Read),
    ("SELECT DISTINCT ON (a) a, b FROM t ORDER BY a, b", true, Kind::Read),
    ("SELECT * FROM t TABLESAMPLE SYSTEM (10)", true, Kind::Read),
    ("SELECT * FROM t; SELECT * FROM u", true, Kind::Read),
    ("EXPLAIN SELECT * FROM t", true, Kind::Read),
    ("EXPLAIN ANALYZE SELECT * FROM t", true, Kind::Read),
    ("SHOW search_path", true, Kind::Read),
    ("SHOW ALL", true, Kind::Read),
    ("COPY t TO STDOUT", true, Kind::Read),
    ("COPY (SELECT * FROM t) TO STDOUT WITH (FORMAT csv)", true, Kind::Read),
    ("SELECT 'DELETE FROM t' AS text_not_statement", true, Kind::Read),
    ("SELECT \"Mixed\".\"Case\" FROM \"Mixed\"", true, Kind::Read),
    ("SELECT * FROM t WHERE a = ANY($1)", true, Kind::Read),
    ("SELECT * FROM t FETCH FIRST 5 ROWS ONLY", true, Kind::Read),
    ("SELECT * FROM t OFFSET 10", true, Kind::Read),
    // TimescaleDB reads.
    ("SELECT time_bucket('5 minutes', time) AS b, avg(value) FROM metrics GROUP BY b", true, Kind::Read),
    ("SELECT time_bucket_gapfill('1 hour', time) AS b, locf(avg(v)) FROM m WHERE time > now() - interval '1 day' AND time < now() GROUP BY b", true, Kind::Read),
    ("SELECT first(value, time), last(value, time) FROM metrics", true, Kind::Read),
    ("SELECT histogram(value, 0, 100, 10) FROM metrics", true, Kind::Read),
    ("SELECT * FROM show_chunks('metrics')", true, Kind::Read),
    ("SELECT hypertable_size('metrics')", true, Kind::Read),
    ("SELECT date_bin('15 minutes', time, TIMESTAMPTZ '2024-01-01') FROM m", true, Kind::Read),
    // Writes.
    ("INSERT INTO t VALUES (1)", false, Kind::Write),
    ("INSERT INTO t (a, b) SELECT a, b FROM u", false, Kind::Write),
    ("INSERT INTO t VALUES (1) ON CONFLICT (a) DO NOTHING", false, Kind::Write),
    ("INSERT INTO t VALUES (1) ON CONFLICT (a) DO UPDATE SET b = excluded.b", false, Kind::Write),
    ("INSERT INTO t VALUES (1) RETURNING *", false, Kind::Write),
    ("UPDATE pgbench_accounts SET abalance = abalance + 5 WHERE aid = 3", false, Kind::Write),
    ("UPDATE t SET a = u.a FROM u WHERE t.id = u.id", false, Kind::Write),
    ("DELETE FROM t WHERE a = 1", false, Kind::Write),
    ("DELETE FROM t USING u WHERE t.id = u.id RETURNING t.*", false, Kind::Write),
    ("MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN UPDATE SET a = u.a WHEN NOT MATCHED THEN INSERT VALUES (u.id, u.a)", false, Kind::Write),
    ("COPY t FROM STDIN", false, Kind::Write),
    ("COPY t (a, b) FROM STDIN WITH (FORMAT csv)", false, Kind::Write),
    ("TRUNCATE t", false, Kind::Write),
    ("TRUNCATE TABLE t, u RESTART IDENTITY CASCADE", false, Kind::Write),
    ("INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 2, 3, 4, CURRENT_TIMESTAMP)", false, Kind::Write),
    // Data-modifying CTEs at any depth.
    ("WITH x AS (INSERT INTO t VALUES (1) RETURNING *) SELECT * FROM x", false, Kind::Write),
    ("WITH x AS (UPDATE t SET a = 1 RETURNING *) SELECT * FROM x", false, Kind::Write),
    ("WITH x AS (DELETE FROM t RETURNING *) SELECT count(*) FROM x", false, Kind::Write),
    ("WITH a AS (SELECT 1), b AS (DELETE FROM t RETURNING id) SELECT * FROM a, b", false, Kind::Write),
    ("WITH a AS (WITH b AS (INSERT INTO t VALUES (1) RETURNING id) SELECT * FROM b) SELECT * FROM a", false, Kind::Write),
    ("SELECT * FROM (WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x) s", false, Kind::Write),
    // Locking reads.
    ("SELECT * FROM t FOR UPDATE", false, Kind::Write),
    ("SELECT * FROM t WHERE a = 1 FOR SHARE", false, Kind::Write),
    ("SELECT * FROM t FOR NO KEY UPDATE", false, Kind::Unknown),
    ("SELECT * FROM t FOR KEY SHARE", false, Kind::Unknown),
    ("SELECT * FROM t FOR UPDATE SKIP LOCKED", false, Kind::Write),
    ("SELECT * FROM t FOR UPDATE NOWAIT", false, Kind::Write),
    ("SELECT * FROM (SELECT * FROM t FOR UPDATE) s", false, Kind::Write),
    // SELECT INTO.
    ("SELECT * INTO new_t FROM t", false, Kind::Write),
    ("SELECT a INTO TEMP tt FROM t", false, Kind::Write),
    // Functions with side effects or unknown volatility.
    ("SELECT nextval('s')", false, Kind::Write),
    ("SELECT setval('s', 10)", false, Kind::Write),
    ("SELECT currval('s')", false, Kind::Write),
    ("SELECT pg_advisory_lock(1)", false, Kind::Write),
    ("SELECT pg_try_advisory_lock(1)", false, Kind::Write),
    ("SELECT pg_advisory_xact_lock(1)", false, Kind::Write),
    ("SELECT pg_advisory_unlock(1)", false, Kind::Write),
    ("SELECT set_config('a.b', 'c', false)", false, Kind::Write),
    ("SELECT pg_notify('chan', 'x')", false, Kind::Write),
    ("SELECT txid_current()", false, Kind::Write),
    ("SELECT my_function(1)", false, Kind::Write),
    ("SELECT myschema.f()", false, Kind::Write),
    ("SELECT * FROM my_srf(1)", false, Kind::Write),
    ("SELECT a, f(a) FROM t", false, Kind::Write),
    ("SELECT * FROM t WHERE a = (SELECT nextval('s'))", false, Kind::Write),
    ("SELECT count(*) FROM t WHERE g(a)", false, Kind::Write),
    ("SELECT lo_import('/etc/passwd')", false, Kind::Write),
    ("SELECT dblink_exec('host=x', 'DELETE FROM t')", false, Kind::Write),
    ("SELECT 1; INSERT INTO t VALUES (1)", false, Kind::Write),
    ("INSERT INTO t VALUES (1); SELECT 1", false, Kind::Write),
    ("SELECT 1; SELECT nextval('s')", false, Kind::Write),
    ("EXPLAIN ANALYZE INSERT INTO t VALUES (1)", false, Kind::Write),
    // TimescaleDB administration.
    ("SELECT create_hypertable('metrics', 'time')", false, Kind::Write),
    ("SELECT create_hypertable('metrics', by_range('time'))", false, Kind::Write),
    ("SELECT add_retention_policy('metrics', INTERVAL '30 days')", false, Kind::Write),
    ("SELECT add_compression_policy('metrics', INTERVAL '7 days')", false, Kind::Write),
    ("SELECT add_continuous_aggregate_policy('m_hourly', start_offset => INTERVAL '3 days', end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '1 hour')", false, Kind::Write),
    ("CALL refresh_continuous_aggregate('m_hourly', NULL, NULL)", false, Kind::Unknown),
    ("SELECT compress_chunk(c) FROM show_chunks('metrics', older_than => INTERVAL '7 days') c", false, Kind::Write),
    ("SELECT drop_chunks('metrics', INTERVAL '90 days')", false, Kind::Write),
    ("SELECT timescaledb_pre_restore()", false, Kind::Write),
    // DDL and privileges.
    ("CREATE TABLE t (a int)", false, Kind::Ddl),
    ("CREATE TABLE IF NOT EXISTS s.t (a int PRIMARY KEY, b text NOT NULL)", false, Kind::Ddl),
    ("CREATE TEMP TABLE t (a int)", false, Kind::Ddl),
    ("CREATE UNLOGGED TABLE t (a int)", false, Kind::Ddl),
    ("CREATE TABLE t AS SELECT * FROM u", false, Kind::Ddl),
    ("CREATE INDEX ON t (a)", false, Kind::Ddl),
    ("CREATE INDEX CONCURRENTLY i ON t USING gin (data)", false, Kind::Ddl),
    ("CREATE VIEW v AS SELECT * FROM t", false, Kind::Ddl),
    ("CREATE MATERIALIZED VIEW m AS SELECT * FROM t", false, Kind::Ddl),
    ("CREATE SCHEMA s", false, Kind::Ddl),
    ("CREATE SEQUENCE s", false, Kind::Ddl),
    ("CREATE EXTENSION IF NOT EXISTS timescaledb", false, Kind::Ddl),
    ("CREATE ROLE r LOGIN", false, Kind::Ddl),
    ("CREATE FUNCTION f() RETURNS int AS $$ SELECT 1 $$ LANGUAGE sql", false, Kind::Ddl),
    ("CREATE TYPE mood AS ENUM ('a', 'b')", false, Kind::Ddl),
    ("ALTER TABLE t ADD COLUMN b int", false, Kind::Ddl),
    ("ALTER TABLE t SET (timescaledb.compress, timescaledb.compress_segmentby = 'device')", false, Kind::Ddl),
    ("ALTER ROLE r SET search_path = x", false, Kind::Ddl),
    ("DROP TABLE t", false, Kind::Ddl),
    ("DROP TABLE IF EXISTS t, u CASCADE", false, Kind::Ddl),
    ("DROP INDEX i", false, Kind::Ddl),
    ("DROP FUNCTION f()", false, Kind::Ddl),
    ("COMMENT ON TABLE t IS 'x'", false, Kind::Ddl),
    ("GRANT SELECT ON t TO r", false, Kind::Ddl),
    ("GRANT ALL ON ALL TABLES IN SCHEMA public TO r", false, Kind::Ddl),
    ("REVOKE INSERT ON t FROM r", false, Kind::Ddl),
    ("GRANT r TO u", false, Kind::Ddl),
    ("REFRESH MATERIALIZED VIEW m", false, Kind::Utility),
    ("VACUUM t", false, Kind::Utility),
    ("ANALYZE t", false, Kind::Utility),
    // Transaction control.
    ("BEGIN", false, Kind::Transaction),
    ("BEGIN READ ONLY", false, Kind::Transaction),
    ("START TRANSACTION ISOLATION LEVEL SERIALIZABLE", false, Kind::Transaction),
    ("COMMIT", false, Kind::Transaction),
    ("END", false, Kind::Transaction),
    ("ROLLBACK", false, Kind::Transaction),
    ("SAVEPOINT s", false, Kind::Transaction),
    ("RELEASE SAVEPOINT s", false, Kind::Transaction),
    ("ROLLBACK TO SAVEPOINT s", false, Kind::Transaction),
    ("SET TRANSACTION READ ONLY", false, Kind::Transaction),
    // Session state.
    ("SET search_path = x", false, Kind::Session),
    ("SET LOCAL statement_timeout = 5", false, Kind::Session),
    ("SET TIME ZONE 'UTC'", false, Kind::Session),
    ("SET tidegate.route = 'primary'", false, Kind::Session),
    ("RESET ALL", false, Kind::Session),
    ("DISCARD ALL", false, Kind::Session),
    ("PREPARE p AS SELECT 1", false, Kind::Session),
    ("EXECUTE p", false, Kind::Unknown),
    ("DEALLOCATE p", false, Kind::Session),
    ("LISTEN chan", false, Kind::Session),
    ("UNLISTEN *", false, Kind::Session),
    ("NOTIFY chan, 'payload'", false, Kind::Write),
    ("DECLARE c CURSOR FOR SELECT 1", false, Kind::Session),
    ("FETCH 10 FROM c", false, Kind::Session),
    ("CLOSE c", false, Kind::Session),
    // Procedural and other utilities.
    ("DO $$ BEGIN PERFORM 1; END $$", false, Kind::Unknown),
    ("CALL p(1)", false, Kind::Unknown),
    ("LOCK TABLE t IN ACCESS EXCLUSIVE MODE", false, Kind::Write),
    // Not parsable: always the primary.
    ("SELEC 1", false, Kind::Unknown),
    ("", false, Kind::Unknown),
    ("SELECT FROM WHERE", false, Kind::Unknown),
    ("\\d t", false, Kind::Unknown),
];

#[test]
fn every_case_classifies_as_expected() {
    assert!(CASES.len() >= 150, "{} cases", CASES.len());
    let mut wrong = Vec::new();
    for (sql, read_only, kind) in CASES {
        let c = classify(sql, &NoLookup);
        if c.read_only != *read_only || c.kind != *kind {
            wrong.push(format!(
                "{sql}\n    got read_only={} kind={:?} ({:?})",
                c.read_only, c.kind, c.reason
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} misclassified:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[test]
fn deep_nesting_is_a_parse_error_not_a_stack_overflow() {
    let deep = format!("SELECT {}1{}", "(".repeat(10_000), ")".repeat(10_000));
    let c = classify(&deep, &NoLookup);
    assert!(!c.read_only);
    assert_eq!(c.kind, Kind::Unknown);
    let subqueries = format!(
        "SELECT * FROM {}t{}",
        "(SELECT * FROM ".repeat(5_000),
        ") s".repeat(5_000)
    );
    assert!(!classify(&subqueries, &NoLookup).read_only);
}

#[test]
fn tables_are_schema_qualified_and_deduplicated() {
    let c = classify("SELECT * FROM public.a JOIN b ON true JOIN \"Quoted\".\"T\" ON true WHERE x IN (SELECT y FROM b)", &NoLookup);
    let names: Vec<String> = c
        .tables
        .iter()
        .map(|t| format!("{}.{}", t.schema.as_deref().unwrap_or("-"), t.name))
        .collect();
    assert_eq!(names, vec!["-.b", "Quoted.T", "public.a"]);
}

#[test]
fn transaction_control_is_reported() {
    assert_eq!(
        classify("BEGIN READ ONLY", &NoLookup).tx,
        Some(TxControl::Begin { read_only: true })
    );
    assert_eq!(
        classify("BEGIN", &NoLookup).tx,
        Some(TxControl::Begin { read_only: false })
    );
    assert_eq!(
        classify("START TRANSACTION READ ONLY", &NoLookup).tx,
        Some(TxControl::Begin { read_only: true })
    );
    assert_eq!(
        classify("SET TRANSACTION READ ONLY", &NoLookup).tx,
        Some(TxControl::SetReadOnly)
    );
    assert_eq!(classify("COMMIT", &NoLookup).tx, Some(TxControl::Commit));
    assert_eq!(
        classify("ROLLBACK", &NoLookup).tx,
        Some(TxControl::Rollback)
    );
    assert_eq!(classify("BEGIN; SELECT 1", &NoLookup).tx, None);
}

#[test]
fn cacheability_excludes_time_randomness_catalogs_and_locks() {
    let cacheable = [
        "SELECT * FROM t WHERE a = 1",
        "SELECT time_bucket('1h', time), avg(v) FROM m GROUP BY 1",
        "SELECT lower(a) FROM t",
    ];
    for sql in cacheable {
        assert!(classify(sql, &NoLookup).cacheable, "{sql}");
    }
    let not = [
        "SELECT now()",
        "SELECT random()",
        "SELECT current_user",
        "SELECT nextval('s')",
        "SELECT * FROM t FOR UPDATE",
        "SELECT * FROM pg_class",
        "SELECT * FROM pg_catalog.pg_class",
        "SELECT * FROM information_schema.tables",
        "SELECT * FROM t TABLESAMPLE SYSTEM (1)",
        "INSERT INTO t VALUES (1)",
        "SELECT f(a) FROM t",
    ];
    for sql in not {
        assert!(!classify(sql, &NoLookup).cacheable, "{sql}");
    }
}

#[test]
fn a_lookup_can_vouch_for_user_functions() {
    struct Pg;
    impl FunctionLookup for Pg {
        fn volatility(&self, _: Option<&str>, name: &str) -> Option<Volatility> {
            match name {
                "safe_fn" => Some(Volatility::Stable),
                "pure_fn" => Some(Volatility::Immutable),
                _ => None,
            }
        }
    }
    assert!(classify("SELECT safe_fn(1)", &Pg).read_only);
    assert!(!classify("SELECT safe_fn(1)", &Pg).cacheable);
    assert!(classify("SELECT pure_fn(1)", &Pg).cacheable);
    assert!(!classify("SELECT other_fn(1)", &Pg).read_only);
    // The built-in table wins for known side effects.
    assert!(!classify("SELECT nextval('s'), safe_fn(1)", &Pg).read_only);
}

#[test]
fn fingerprints_ignore_constants_whitespace_case_and_comments() {
    let same = [
        (
            "SELECT abalance FROM pgbench_accounts WHERE aid = 1;",
            "select  abalance\nfrom pgbench_accounts where aid = 99999;",
        ),
        (
            "SELECT * FROM t WHERE a = 'x' AND b = 1.5e3",
            "SELECT * FROM t WHERE a = 'it''s' AND b = 42",
        ),
        ("SELECT $1, $2", "SELECT 5, 'x'"),
        ("SELECT $$body$$", "SELECT $tag$other body$tag$"),
        ("SELECT 1 -- trailing", "SELECT /* c */ 2"),
        ("SELECT E'a\\'b'", "SELECT 'c'"),
        ("SELECT B'101', X'ff'", "SELECT B'1', X'00'"),
    ];
    for (a, b) in same {
        assert_eq!(
            fingerprint(a.as_bytes()),
            fingerprint(b.as_bytes()),
            "{a} ~ {b}"
        );
    }
    let different = [
        ("SELECT * FROM t", "SELECT * FROM u"),
        ("SELECT a FROM t", "SELECT b FROM t"),
        ("SELECT \"A\" FROM t", "SELECT \"a\" FROM t"),
        ("SELECT 1", "SELECT 1; SELECT 2"),
        ("SELECT * FROM t", "SELECT * FROM t FOR UPDATE"),
        ("SELECT f(1)", "SELECT g(1)"),
    ];
    for (a, b) in different {
        assert_ne!(
            fingerprint(a.as_bytes()),
            fingerprint(b.as_bytes()),
            "{a} vs {b}"
        );
    }
}

#[test]
fn literals_are_numbered_in_text_order() {
    let sql = "SELECT 'a''b', E'c\\'d', N'n', B'101', X'ff', $t$ 'x' $t$, 1.5e-3, .5, $12 -- '1'\n/* '2' /* '3' */ */ FROM \"q'\"";
    let lits: Vec<(LiteralKind, &str)> = literals(sql).iter().map(|l| (l.kind, l.text)).collect();
    assert_eq!(
        lits,
        vec![
            (LiteralKind::String, "'a''b'"),
            (LiteralKind::EscapeString, "E'c\\'d'"),
            (LiteralKind::NationalString, "N'n'"),
            (LiteralKind::BitString, "B'101'"),
            (LiteralKind::BitString, "X'ff'"),
            (LiteralKind::DollarQuoted, "$t$ 'x' $t$"),
            (LiteralKind::Number, "1.5e-3"),
            (LiteralKind::Number, ".5"),
            (LiteralKind::Param(12), "$12"),
        ]
    );
    let values: Vec<Option<String>> = literals(sql)
        .iter()
        .map(|l| l.string_value().map(|v| v.into_owned()))
        .collect();
    assert_eq!(values[0].as_deref(), Some("a'b"));
    assert_eq!(values[1].as_deref(), Some("c'd"));
    assert_eq!(values[2].as_deref(), Some("n"));
    assert_eq!(values[5].as_deref(), Some(" 'x' "));
    assert!(matches!(
        literals(sql)[5].string_value(),
        Some(Cow::Borrowed(_))
    ));
    assert!(matches!(
        literals(sql)[0].string_value(),
        Some(Cow::Owned(_))
    ));
    assert_eq!(values[3], None);
    assert_eq!(values[8], None);
    // Unterminated and unusual escapes give no value rather than a wrong one.
    assert_eq!(literals("SELECT 'abc")[0].string_value(), None);
    assert_eq!(literals("SELECT E'a\\nb'")[0].string_value(), None);
    assert_eq!(literals("SELECT $x$abc")[0].string_value(), None);
}

fn writes() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("INSERT INTO t VALUES (1)".to_owned()),
        Just("UPDATE t SET a = 1".to_owned()),
        Just("DELETE FROM t".to_owned()),
        Just("SELECT nextval('s')".to_owned()),
        Just("SELECT * FROM t FOR UPDATE".to_owned()),
        Just("SELECT pg_advisory_lock(1)".to_owned()),
        Just("SELECT unknown_fn()".to_owned()),
        Just("TRUNCATE t".to_owned()),
        Just("COPY t FROM STDIN".to_owned()),
        Just("SELECT 1 INTO x".to_owned()),
    ]
}

fn reads() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("SELECT 1".to_owned()),
        Just("SELECT * FROM t WHERE a = 5".to_owned()),
        Just("SELECT count(*) FROM u".to_owned()),
        Just("VALUES (1)".to_owned()),
    ]
}

/// Wraps a write so that it is nested inside an otherwise read-only statement, when the SQL
/// grammar allows it.
fn nest(write: &str, how: u8) -> String {
    let dml =
        write.starts_with("INSERT") || write.starts_with("UPDATE") || write.starts_with("DELETE");
    match how % 4 {
        0 if dml => format!("WITH w AS ({write} RETURNING *) SELECT * FROM w"),
        1 if dml => format!("WITH r AS (SELECT 1), w AS ({write} RETURNING 1) SELECT * FROM r, w"),
        2 if write.starts_with("SELECT") && !write.contains(" INTO ") => {
            format!("SELECT * FROM ({write}) s")
        }
        _ => write.to_owned(),
    }
}

proptest! {
    #[test]
    fn no_statement_containing_a_write_is_replica_safe(
        before in proptest::collection::vec(reads(), 0..3),
        write in writes(),
        after in proptest::collection::vec(reads(), 0..3),
        how in any::<u8>(),
    ) {
        let mut parts = before;
        parts.push(nest(&write, how));
        parts.extend(after);
        let sql = parts.join("; ");
        let c = classify(&sql, &NoLookup);
        prop_assert!(!c.read_only, "{} was classified replica-safe", sql);
    }

    #[test]
    fn fingerprint_never_panics(s in ".*") {
        let _ = fingerprint(s.as_bytes());
    }

    #[test]
    fn classify_never_panics(s in ".{0,200}") {
        let _ = classify(&s, &NoLookup);
    }
}

// ---- Lexer / fingerprint: one lexer truth (issue 18). Texts PostgreSQL (or sqlparser) reads
// as different token sequences never share a fingerprint; keep these together. ----

fn fp(s: &str) -> Fingerprint {
    fingerprint(s.as_bytes())
}

fn assert_distinct(pairs: &[(&str, &str)]) {
    for (a, b) in pairs {
        assert_ne!(
            fp(a),
            fp(b),
            "{a:?} must not share a fingerprint with {b:?}"
        );
    }
}

fn assert_same(pairs: &[(&str, &str)]) {
    for (a, b) in pairs {
        assert_eq!(fp(a), fp(b), "{a:?} should share a fingerprint with {b:?}");
    }
}

#[test]
fn dash_comments_end_at_carriage_return() {
    assert_distinct(&[
        (
            "SELECT 1 --\r; DELETE FROM acct",
            "SELECT 1 --x; DELETE FROM acct",
        ),
        ("SELECT 1 --\r; DELETE FROM acct", "SELECT 1"),
        ("SELECT 1 -- c\r\nFROM t", "SELECT 1 -- c FROM t"),
    ]);
    assert_same(&[("SELECT 1 -- a\rFROM t", "SELECT 2 -- b\nFROM t")]);
    let lits = literals("SELECT 1 --\r, '2'");
    assert_eq!(lits.len(), 2);
}

#[test]
fn block_comments_nest() {
    assert_distinct(&[
        (
            "SELECT 1 /* /* */ ; DELETE FROM acct */",
            "SELECT 1 /* /* */ */ ; DELETE FROM acct",
        ),
        ("SELECT 1 /* /* */ */ ; DELETE FROM acct", "SELECT 1"),
        // Unterminated: PostgreSQL rejects it.
        ("SELECT 1 /* /* */", "SELECT 1"),
    ]);
    assert_same(&[("SELECT 1 /* a /* b */ c */ FROM t", "SELECT 2 FROM t")]);
    assert_eq!(block_comment_end(b"/* /* */ x */ y", 0), 13);
    assert_eq!(literals("SELECT /* '1' /* '2' */ '3' */ 4")[0].text, "4");
}

#[test]
fn escape_strings_honour_backslashes() {
    assert_distinct(&[
        // `\'` does not end the string: all of it is one constant.
        (
            r"SELECT E'\'; DELETE FROM acct; --'",
            r"SELECT E'x'; DELETE FROM acct; --'",
        ),
        (
            r"SELECT E'\\'; DELETE FROM acct; --'",
            r"SELECT E'\'; DELETE FROM acct; --'",
        ),
    ]);
    assert_same(&[(r"SELECT E'\'' FROM t", "SELECT 'x' FROM t")]);
    let lits = literals(r"SELECT E'a\'b', e'\\', 1");
    assert_eq!(lits.len(), 3);
    assert_eq!(lits[0].string_value().as_deref(), Some("a'b"));
    assert_eq!(lits[1].string_value().as_deref(), Some("\\"));
}

#[test]
fn dollar_quotes_match_their_own_tag() {
    assert_distinct(&[
        // `$b$` does not end a `$a$` quote.
        (
            "SELECT $a$ $b$; DELETE FROM acct; $a$",
            "SELECT $a$x$a$; DELETE FROM acct",
        ),
        ("SELECT $a$ x $a$", "SELECT $a$ x $b$ y $b$"),
        // A non-ASCII tag (PostgreSQL takes any byte >= 0x80, sqlparser only alphanumerics).
        (
            "SELECT $€$ ' $€$; DELETE FROM acct; --'",
            "SELECT $€$ ' $€$; SELECT 1; --'",
        ),
        // `$1` is a parameter, `$1$` no tag; `$1abc` junk to PostgreSQL, one token to sqlparser.
        (
            "SELECT $1$ ' $1$; DELETE FROM acct; --'",
            "SELECT $1$ ' $1$; SELECT 1; --'",
        ),
        ("SELECT $1abc", "SELECT 'x'abc"),
        ("SELECT $1abc", "SELECT $2abc"),
        // Identifiers may contain `$`: `a$b$` is a name, not a quote.
        ("SELECT a$b$ FROM t", "SELECT a FROM t"),
    ]);
    assert_same(&[
        ("SELECT $a$ x $b$ y $a$, $1", "SELECT $$z$$, 'q'"),
        (
            "SELECT a$b FROM t WHERE c = $2",
            "SELECT A$B FROM t WHERE c = 5",
        ),
    ]);
    let lits = literals("SELECT $a$ $b$ $a$, a$b, $3");
    let texts: Vec<&str> = lits.iter().map(|l| l.text).collect();
    assert_eq!(texts, ["$a$ $b$ $a$", "$3"]);
    assert_eq!(lits[1].kind, LiteralKind::Param(3));
}

#[test]
fn unicode_escapes_and_uescape() {
    assert_distinct(&[
        // The escape character decides which table a U&"…" identifier names.
        (
            r#"SELECT * FROM U&"!0061cct" UESCAPE '!'"#,
            r#"SELECT * FROM U&"!0061cct" UESCAPE '#'"#,
        ),
        (r#"SELECT * FROM U&"acct""#, r#"SELECT * FROM "acct""#),
        (r#"SELECT U&"a" FROM t"#, r#"SELECT U & "a" FROM t"#),
        ("SELECT U&'a' UESCAPE '!'", "SELECT U&'a' UESCAPE '#'"),
        ("SELECT U&'a'", "SELECT U & 'a'"),
    ]);
    assert_same(&[("SELECT U&'d\\0061t\\+000061'", "SELECT u&'x'")]);
    let lits = literals("SELECT U&'a''b', xU");
    assert_eq!(lits.len(), 1);
    assert_eq!(lits[0].kind, LiteralKind::UnicodeString);
    assert_eq!(lits[0].text, "U&'a''b'");
    assert_eq!(lits[0].string_value(), None);
}

#[test]
fn quoted_identifiers_double_their_quotes() {
    assert_distinct(&[
        (
            r#"SELECT "a""; DELETE FROM acct; --""#,
            r#"SELECT "a"; DELETE FROM acct; --""#,
        ),
        (r#"SELECT "a""b" FROM t"#, r#"SELECT "a" "b" FROM t"#),
        (r#"SELECT "acct"#, "SELECT"),
    ]);
    assert_eq!(literals(r#"SELECT "it''s", '1'"#).len(), 1);
}

#[test]
fn bit_strings_end_at_the_first_quote_and_continuations_join() {
    assert_distinct(&[
        // PostgreSQL: B'1' then '0'; sqlparser: one B'1''0'.
        ("SELECT B'1''0'", "SELECT B'1'"),
        ("SELECT B'1''0'", "SELECT '1''0'"),
        (
            r"SELECT X'\''; DELETE FROM acct; --'",
            r"SELECT X'0''; DELETE FROM acct; --'",
        ),
        // A newline between two strings makes one constant (PostgreSQL), a space does not.
        ("SELECT 'a'\n'b'", "SELECT 'a' 'b'"),
        ("SELECT 'a'\n'b'", "SELECT 'a'"),
        // Continued E'…' parts keep backslash escapes in PostgreSQL, not in sqlparser.
        (
            "SELECT E'x'\n'\\''; DELETE FROM acct; --'",
            "SELECT E'x'\n'y'; DELETE FROM acct; --'",
        ),
    ]);
    assert_eq!(literals("SELECT B'1''0'").len(), 0);
    let lits = literals("SELECT 'a' -- c\n  'b', 'c' /* */ 'd'");
    // The continued constant is hashed byte for byte: only the last two are placeholders.
    assert_eq!(lits.len(), 2);
}

#[test]
fn numbers_follow_postgresql_and_glued_constants_keep_their_kind() {
    assert_distinct(&[
        // `1from` is `1 FROM` to sqlparser (and PostgreSQL before 15).
        ("SELECT 1from acct", "SELECT 1 acct"),
        ("SELECT 1abc", "SELECT 'x'abc"),
        ("SELECT 1..2", "SELECT 1.5..2"),
        ("SELECT 1_000", "SELECT 1"),
        ("SELECT 0x1F", "SELECT 1"),
        ("SELECT 1.2.3", "SELECT 1.2"),
        // `?` the operator is not a constant.
        ("SELECT a ? b FROM t", "SELECT a 1 b FROM t"),
        ("SELECT 'x' FROM t", "SELECT 'x' FROM t\x00"),
    ]);
    assert_same(&[
        ("SELECT 1e5, .5, 1.5e-3, 2.", "SELECT 2, 3, 4, 5"),
        (
            "SELECT a FROM t WHERE b = 1.5",
            "SELECT a FROM t WHERE b = $1",
        ),
    ]);
}

#[test]
fn standard_conforming_strings_are_assumed_on() {
    // With `standard_conforming_strings = off`, '\'' would be an escaped quote; the broker
    // refuses that setting, so a backslash is an ordinary character here.
    let lits = literals(r"SELECT '\', 1");
    assert_eq!(lits.len(), 2);
    assert_eq!(lits[0].string_value().as_deref(), Some("\\"));
    assert_distinct(&[(r"SELECT '\'; DELETE FROM acct; --'", r"SELECT 'x'")]);
}

#[test]
fn ordinary_fingerprints_are_unchanged() {
    // Configured rules name fingerprints: the encoding of ordinary statements must not move.
    assert_eq!(
        fp("SELECT abalance FROM pgbench_accounts WHERE aid = 1"),
        fp("select abalance from pgbench_accounts where aid = $1")
    );
}

#[test]
fn comment_starts_glued_to_operators_and_dollar_names_are_hashed_exactly() {
    // sqlparser reads `</*` as one operator and then `' */ 2; DELETE …'` as a string;
    // PostgreSQL reads `<`, a comment, `2` and a DELETE.
    assert_distinct(&[
        (
            "SELECT 1 WHERE 1 </* ' */ 2; DELETE FROM acct; --'",
            "SELECT 1 WHERE 1 </* ' */ 2; SELECT 1 FROM t; --'",
        ),
        ("SELECT a <-- x\n b", "SELECT a <-- y\n b"),
        // `$u&'x'` is one placeholder `$u` to sqlparser.
        ("SELECT $u&'x'", "SELECT $N'n'"),
    ]);
    assert_same(&[("SELECT a < /* x */ 1", "SELECT a < /* y */ 2")]);
}
