use crate::cagg::{normalize, rewrite, Bucket, Cagg};
use crate::config::{Config, Policy, TableName};
use crate::policy::{decide, Outcome, SQLSTATE_UNBOUNDED};
use crate::scan::{quote_ident, Scan};
use crate::Optimizer;
use tidegate_plugin_sdk::prelude::*;
use tidegate_plugin_sdk::testing::{principal, statement};
use tidegate_plugin_sdk::{parse_config, Decision, Hooks, Plugin, StatementKind};

const CONFIG: &str = r#"{
    "hypertables": ["public.metrics", "events"],
    "time_column": {"events": "ts"},
    "unbounded": "reject",
    "max_rows": 1000,
    "continuous_aggregates": [{
        "name": "public.metrics_hourly",
        "hypertable": "public.metrics",
        "bucket": "1 hour",
        "time_column": "bucket",
        "group_by": ["host"],
        "aggregates": {"avg(cpu)": "avg_cpu", "max(cpu)": "max_cpu", "count(*)": "n"}
    }]
}"#;

fn policy(json: &str) -> Policy {
    Policy::new(parse_config::<Config>(json).unwrap()).unwrap()
}

fn caggs() -> Vec<Cagg> {
    policy(CONFIG).caggs
}

fn read(sql: &str, tables: &[&str]) -> Outcome {
    decide(
        &policy(CONFIG),
        &statement(principal("u", &[]), sql, StatementKind::Read, tables),
    )
}

const HOURLY: &str = "SELECT bucket AS b, host, avg_cpu AS avg FROM metrics_hourly";

/// (query, rewritten) pairs the recognizer must rewrite exactly so.
const REWRITES: &[(&str, &str)] = &[
    // the canonical shape
    (
        "SELECT time_bucket('1 hour', time) AS b, host, avg(cpu) FROM metrics \
         WHERE time > now() - interval '1 day' GROUP BY b, host",
        "SELECT bucket AS b, host, avg_cpu AS avg FROM metrics_hourly \
         WHERE bucket > now() - interval '1 day'",
    ),
    // with ORDER BY, LIMIT and a trailing semicolon and comment
    (
        "select time_bucket('1 hour', time) as b, host, avg(cpu) from metrics \
         where time >= '2024-01-01' and time < '2024-01-02' group by b, host \
         order by b desc, host limit 100; -- dashboard",
        "SELECT bucket AS b, host, avg_cpu AS avg FROM metrics_hourly \
         WHERE bucket >= '2024-01-01' and bucket < '2024-01-02' \
         ORDER BY b desc, host limit 100",
    ),
    // no WHERE; GROUP BY ordinals; ORDER BY ordinal
    (
        "SELECT time_bucket('1 hour', time) AS b, host, avg(cpu) FROM metrics GROUP BY 1, 2 ORDER BY 1",
        "SELECT bucket AS b, host, avg_cpu AS avg FROM metrics_hourly ORDER BY 1",
    ),
    // GROUP BY the bucket expression; equal widths in other words
    (
        "SELECT time_bucket(INTERVAL '60 minutes', time), host, avg(cpu) FROM metrics \
         GROUP BY time_bucket(INTERVAL '60 minutes', time), host",
        "SELECT bucket AS time_bucket, host, avg_cpu AS avg FROM metrics_hourly",
    ),
    (
        "SELECT time_bucket('1h'::interval, time) b, host, avg(cpu) FROM metrics GROUP BY b, host",
        HOURLY,
    ),
    // schema-qualified table: the aggregate's name is qualified too
    (
        "SELECT time_bucket('1 hour', time) AS b, host, avg(cpu) FROM public.metrics GROUP BY b, host",
        "SELECT bucket AS b, host, avg_cpu AS avg FROM public.metrics_hourly",
    ),
    // an alias, qualified columns, aliases on every item, several aggregates in any order
    (
        "SELECT max(m.cpu) AS peak, m.host AS h, time_bucket('1 hour', m.time) AS hour, \
         avg(m.cpu) mean, count(*) FROM metrics AS m \
         WHERE m.time BETWEEN $1 AND $2 AND host = $3 \
         GROUP BY hour, h ORDER BY peak DESC NULLS LAST, avg(m.cpu), m.host",
        "SELECT max_cpu AS peak, host AS h, bucket AS hour, avg_cpu AS mean, \
         n AS count FROM metrics_hourly m \
         WHERE bucket BETWEEN $1 AND $2 AND host = $3 \
         ORDER BY peak DESC NULLS LAST, avg_cpu, host",
    ),
    // keywords, casts, typed literals, functions and AT TIME ZONE in the WHERE clause
    (
        "SELECT time_bucket('1 hour', time) AS b, host, avg(cpu) FROM metrics \
         WHERE time >= '2024-01-01'::timestamp with time zone \
         AND time < timestamptz '2024-01-02' AND host IN ('a', 'b') AND host IS NOT NULL \
         AND time > now() AT TIME ZONE 'UTC' GROUP BY b, host OFFSET 5 ROWS",
        "SELECT bucket AS b, host, avg_cpu AS avg FROM metrics_hourly \
         WHERE bucket >= '2024-01-01'::timestamp with time zone \
         AND bucket < timestamptz '2024-01-02' AND host IN ('a', 'b') AND host IS NOT NULL \
         AND bucket > now() AT TIME ZONE 'UTC' OFFSET 5 ROWS",
    ),
    // reversed comparisons; a comment inside becomes a space
    (
        "SELECT time_bucket('1 hour', time) AS b, host, avg(cpu) FROM metrics \
         WHERE $1 <= time/* from */AND time < $2 GROUP BY b, host",
        "SELECT bucket AS b, host, avg_cpu AS avg FROM metrics_hourly \
         WHERE $1 <= bucket AND bucket < $2",
    ),
    // case and quoting of names fold like PostgreSQL
    (
        "SELECT TIME_BUCKET('1 hour', \"time\") AS \"B\", HOST, AVG(CPU) FROM Metrics GROUP BY \"B\", Host",
        "SELECT bucket AS \"B\", host, avg_cpu AS avg FROM metrics_hourly",
    ),
];

/// Queries the recognizer must leave alone.
const LEFT_ALONE: &[&str] = &[
    // another bucket width, or one time_bucket cannot be trusted to treat alike
    "SELECT time_bucket('1 day', time) AS b, host, avg(cpu) FROM metrics GROUP BY b, host",
    "SELECT time_bucket('1 hour', time, '2024-01-01') AS b, host, avg(cpu) FROM metrics GROUP BY b, host",
    "SELECT time_bucket(E'1 hour', time) AS b, host, avg(cpu) FROM metrics GROUP BY b, host",
    "SELECT time_bucket($1, time) AS b, host, avg(cpu) FROM metrics GROUP BY b, host",
    "SELECT time_bucket('1 hour', ts) AS b, host, avg(cpu) FROM metrics GROUP BY b, host",
    "SELECT date_trunc('hour', time) AS b, host, avg(cpu) FROM metrics GROUP BY b, host",
    // group columns other than the aggregate's
    "SELECT time_bucket('1 hour', time) AS b, avg(cpu) FROM metrics GROUP BY b",
    "SELECT time_bucket('1 hour', time) AS b, avg(cpu) FROM metrics GROUP BY b, host",
    "SELECT time_bucket('1 hour', time) AS b, host, region, avg(cpu) FROM metrics GROUP BY b, host, region",
    "SELECT time_bucket('1 hour', time) AS b, host, avg(cpu) FROM metrics GROUP BY b",
    "SELECT time_bucket('1 hour', time) AS b, host, avg(cpu) FROM metrics GROUP BY host",
    "SELECT time_bucket('1 hour', time) AS b, host, avg(cpu) FROM metrics GROUP BY b, host, cpu",
    "SELECT time_bucket('1 hour', time) AS b, host, avg(cpu) FROM metrics GROUP BY 1, 3",
    "SELECT time_bucket('1 hour', time) AS b, host, avg(cpu) FROM metrics GROUP BY 1, 9",
    "SELECT time_bucket('1 hour', time) AS b, host, avg(cpu) FROM metrics GROUP BY ROLLUP(b, host)",
    // an alias GROUP BY would read as the time column
    "SELECT time_bucket('1 hour', time) AS time, host, avg(cpu) FROM metrics GROUP BY time, host",
    // aggregates the aggregate does not store, or other expressions
    "SELECT time_bucket('1 hour', time) AS b, host, min(cpu) FROM metrics GROUP BY b, host",
    "SELECT time_bucket('1 hour', time) AS b, host, avg(mem) FROM metrics GROUP BY b, host",
    "SELECT time_bucket('1 hour', time) AS b, host, avg(cpu) * 2 FROM metrics GROUP BY b, host",
    "SELECT time_bucket('1 hour', time) AS b, host, avg(DISTINCT cpu) FROM metrics GROUP BY b, host",
    "SELECT time_bucket('1 hour', time) AS b, host, avg(cpu) FILTER (WHERE cpu > 0) FROM metrics GROUP BY b, host",
    "SELECT time_bucket('1 hour', time) AS b, host, avg(cpu) OVER () FROM metrics GROUP BY b, host",
    "SELECT time_bucket('1 hour', time) AS b, host, avg(x.cpu) FROM metrics GROUP BY b, host",
    "SELECT time_bucket('1 hour', time) AS b, host, cpu FROM metrics GROUP BY b, host",
    "SELECT time_bucket('1 hour', time) AS b, host, 1 FROM metrics GROUP BY b, host",
    "SELECT time_bucket('1 hour', time) AS b, time_bucket('1 hour', time) AS c, host, avg(cpu) FROM metrics GROUP BY b, c, host",
    "SELECT * FROM metrics GROUP BY host",
    // conditions the aggregate cannot evaluate, or time compared other than by a range
    "SELECT time_bucket('1 hour', time) AS b, host, avg(cpu) FROM metrics WHERE cpu > 50 GROUP BY b, host",
    "SELECT time_bucket('1 hour', time) AS b, host, avg(cpu) FROM metrics WHERE time = $1 GROUP BY b, host",
    "SELECT time_bucket('1 hour', time) AS b, host, avg(cpu) FROM metrics WHERE time IN ($1) GROUP BY b, host",
    "SELECT time_bucket('1 hour', time) AS b, host, avg(cpu) FROM metrics WHERE time::date = $1 GROUP BY b, host",
    "SELECT time_bucket('1 hour', time) AS b, host, avg(cpu) FROM metrics WHERE date_trunc('day', time) > $1 GROUP BY b, host",
    "SELECT time_bucket('1 hour', time) AS b, host, avg(cpu) FROM metrics WHERE time NOT BETWEEN $1 AND $2 GROUP BY b, host",
    "SELECT time_bucket('1 hour', time) AS b, host, avg(cpu) FROM metrics WHERE host IN (SELECT host FROM hosts) GROUP BY b, host",
    "SELECT time_bucket('1 hour', time) AS b, host, avg(cpu) FROM metrics WHERE EXISTS (SELECT 1) GROUP BY b, host",
    "SELECT time_bucket('1 hour', time) AS b, host, avg(cpu) FROM metrics WHERE (r).x > 1 GROUP BY b, host",
    "SELECT time_bucket('1 hour', time) AS b, host, avg(cpu) FROM metrics WHERE other.time > $1 GROUP BY b, host",
    "SELECT time_bucket('1 hour', time) AS b, host, avg(cpu) FROM metrics WHERE b > $1 GROUP BY b, host",
    // other clauses and shapes
    "SELECT DISTINCT time_bucket('1 hour', time) AS b, host, avg(cpu) FROM metrics GROUP BY b, host",
    "SELECT time_bucket('1 hour', time) AS b, host, avg(cpu) FROM metrics GROUP BY b, host HAVING avg(cpu) > 1",
    "SELECT time_bucket('1 hour', time) AS b, host, avg(cpu) FROM metrics GROUP BY b, host ORDER BY cpu",
    "SELECT time_bucket('1 hour', time) AS b, host, avg(cpu) FROM metrics GROUP BY b, host ORDER BY b USING <",
    "SELECT time_bucket('1 hour', time) AS b, host, avg(cpu) FROM metrics GROUP BY b, host ORDER BY 7",
    "SELECT time_bucket('1 hour', time) AS b, host, avg(cpu) FROM metrics GROUP BY b, host FOR UPDATE",
    "SELECT time_bucket('1 hour', time) AS b, host, avg(cpu) FROM metrics GROUP BY b, host LIMIT $1 + 1",
    "SELECT time_bucket('1 hour', time) AS b, host, avg(cpu) FROM metrics GROUP BY b, host FETCH FIRST 1 ROW ONLY",
    "SELECT time_bucket('1 hour', time) AS b, host, avg(cpu) FROM metrics GROUP BY b, host UNION SELECT 1, 2, 3",
    "SELECT time_bucket('1 hour', time) AS b, host, avg(cpu) FROM metrics GROUP BY b, host; SELECT 1",
    "SELECT time_bucket('1 hour', time) AS b, host, avg(cpu) FROM metrics m JOIN hosts h ON h.id = m.host GROUP BY b, host",
    "SELECT time_bucket('1 hour', time) AS b, host, avg(cpu) FROM metrics, hosts GROUP BY b, host",
    "SELECT time_bucket('1 hour', time) AS b, host, avg(cpu) FROM ONLY metrics GROUP BY b, host",
    "SELECT time_bucket('1 hour', time) AS b, host, avg(cpu) FROM metrics TABLESAMPLE SYSTEM (1) GROUP BY b, host",
    "SELECT time_bucket('1 hour', time) AS b, host, avg(cpu) FROM other.metrics GROUP BY b, host",
    "SELECT time_bucket('1 hour', time) AS b, host, avg(cpu) FROM metrics_hourly GROUP BY b, host",
    "SELECT time_bucket('1 hour', time) AS b, host, avg(cpu) FROM (SELECT * FROM metrics) s GROUP BY b, host",
    "WITH x AS (SELECT 1) SELECT time_bucket('1 hour', time) AS b, host, avg(cpu) FROM metrics GROUP BY b, host",
    "SELECT time_bucket('1 hour', time) AS b, host, avg(cpu) FROM metrics WHERE note = 'it''s GROUP BY' GROUP BY b, host",
    "SELECT time_bucket('1 hour', time) AS b, host, avg(cpu) FROM metrics GROUP BY b, host ORDER BY 'unterminated",
    "SELECT time_bucket('1 hour', time AS b, host, avg(cpu) FROM metrics GROUP BY b, host",
    "SELECT time_bucket('1 hour', time) AS b, host, avg(cpu) FROM metrics GROUP BY b, host,",
    "SELECT , FROM metrics GROUP BY b",
    "SELECT FROM metrics GROUP BY",
    "",
];

#[test]
fn rewrites_exactly_the_recognised_shape() {
    let caggs = caggs();
    let mut wrong = Vec::new();
    for (sql, want) in REWRITES {
        let got = rewrite(sql, &caggs);
        if got.as_deref() != Some(*want) {
            wrong.push(format!("{sql}\n  got  {got:?}\n  want {want:?}"));
        }
    }
    for sql in LEFT_ALONE {
        if let Some(got) = rewrite(sql, &caggs) {
            wrong.push(format!("{sql}\n  should be left alone, got {got}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn rewritten_queries_lex_and_are_left_alone_the_second_time() {
    let caggs = caggs();
    for (sql, _) in REWRITES {
        let once = rewrite(sql, &caggs).unwrap();
        assert!(Scan::new(&once).is_some(), "{once}");
        assert_eq!(rewrite(&once, &caggs), None, "{once}");
    }
}

#[test]
fn the_aggregate_name_follows_the_query_s_qualification() {
    let other_schema = policy(
        r#"{"continuous_aggregates": [{"name": "rollups.metrics_hourly", "hypertable": "public.metrics",
            "bucket": "1 hour", "group_by": ["host"], "aggregates": {"avg(cpu)": "avg_cpu"}}]}"#,
    );
    let sql =
        "SELECT time_bucket('1 hour', time) AS b, host, avg(cpu) FROM metrics GROUP BY b, host";
    assert_eq!(
        rewrite(sql, &other_schema.caggs).unwrap(),
        "SELECT bucket AS b, host, avg_cpu AS avg FROM rollups.metrics_hourly"
    );
    let bare = policy(
        r#"{"continuous_aggregates": [{"name": "Hourly", "hypertable": "metrics",
            "bucket": "1h", "time_column": "Bucket Start", "aggregates": {"AVG( cpu )": "avg"}}]}"#,
    );
    let sql = "SELECT time_bucket('1 hour', time), avg(cpu) FROM tsdb.metrics GROUP BY 1";
    assert_eq!(
        rewrite(sql, &bare.caggs).unwrap(),
        "SELECT \"Bucket Start\" AS time_bucket, avg AS avg FROM \"Hourly\""
    );
}

#[test]
fn a_hypertable_time_column_other_than_time() {
    let p = policy(
        r#"{"time_column": "ts", "continuous_aggregates": [{"name": "m_1d", "hypertable": "m",
            "bucket": "1 day", "aggregates": {"sum(v)": "total"}},
           {"name": "n_1d", "hypertable": "n", "hypertable_time_column": "at",
            "bucket": "1 day", "aggregates": {"sum(v)": "total"}}]}"#,
    );
    assert_eq!(
        rewrite(
            "SELECT time_bucket('1 day', ts) d, sum(v) FROM m WHERE ts >= $1 GROUP BY d",
            &p.caggs
        )
        .unwrap(),
        "SELECT bucket AS d, total AS sum FROM m_1d WHERE bucket >= $1"
    );
    assert_eq!(
        rewrite(
            "SELECT time_bucket('1 day', at) d, sum(v) FROM n GROUP BY d",
            &p.caggs
        )
        .unwrap(),
        "SELECT bucket AS d, total AS sum FROM n_1d"
    );
    assert_eq!(
        rewrite(
            "SELECT time_bucket('1 day', time) d, sum(v) FROM m GROUP BY d",
            &p.caggs
        ),
        None
    );
}

#[test]
fn bucket_widths_compare_within_unit_families() {
    let same = [
        ("1 hour", "60 minutes"),
        ("1h", "1 HOUR"),
        ("1 hour 30 minutes", "90 min"),
        ("1 week", "7 days"),
        ("1 year", "12 months"),
        ("5 minutes", "300 s"),
        ("1 hour", "3600 seconds"),
        ("10", "10"),
        ("  1   hour ", "1 hour"),
    ];
    for (a, b) in same {
        assert_eq!(Bucket::parse(a), Bucket::parse(b), "{a} = {b}");
    }
    let different = [
        ("1 day", "24 hours"),
        ("1 month", "30 days"),
        ("1 hour", "2 hours"),
        ("10", "10 seconds"),
        ("01:00:00", "1 hour"),
    ];
    for (a, b) in different {
        assert_ne!(Bucket::parse(a), Bucket::parse(b), "{a} != {b}");
    }
    assert_eq!(Bucket::parse("1 hour"), Bucket::Micros(3_600_000_000));
    assert_eq!(Bucket::parse("0 hours"), Bucket::Other("0 hours".into()));
    assert_eq!(
        Bucket::parse("1 fortnight"),
        Bucket::Other("1 fortnight".into())
    );
}

#[test]
fn expressions_normalise() {
    let norm = |s: &str, quals: &[&str]| {
        let scan = Scan::new(s).unwrap();
        let quals: Vec<String> = quals.iter().map(|q| (*q).to_owned()).collect();
        normalize(&scan, 0, scan.len(), &quals)
    };
    assert_eq!(norm("AVG ( cpu )", &[]).as_deref(), Some("avg(cpu)"));
    assert_eq!(norm("avg(m.cpu)", &["m"]).as_deref(), Some("avg(cpu)"));
    assert_eq!(norm("avg(x.cpu)", &["m"]), None);
    assert_eq!(norm("count(*)", &[]).as_deref(), Some("count(*)"));
    assert_eq!(
        norm("count(DISTINCT host)", &[]).as_deref(),
        Some("count(distinct host)")
    );
    assert_eq!(norm("avg(\"Cpu\")", &[]).as_deref(), Some("avg(\"Cpu\")"));
    assert_eq!(norm("avg(\"cpu\")", &[]).as_deref(), Some("avg(cpu)"));
    assert_eq!(quote_ident("avg_cpu"), "avg_cpu");
    assert_eq!(quote_ident("bucket"), "bucket");
    assert_eq!(quote_ident("time"), "\"time\"");
    assert_eq!(quote_ident("Avg"), "\"Avg\"");
    assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    assert_eq!(quote_ident("1x"), "\"1x\"");
}

#[test]
fn unbounded_reads_of_hypertables_are_denied() {
    let o = read("SELECT * FROM metrics WHERE host = 'a'", &["metrics"]);
    match o.decision {
        Decision::Deny(d) => {
            assert_eq!(d.sqlstate, SQLSTATE_UNBOUNDED);
            assert_eq!(
                d.reason,
                "unbounded scan of hypertable public.metrics: no condition on its time column \
                 time (tidegate optimizer)"
            );
            assert_eq!(
                d.hint.as_deref(),
                Some("add a time range, e.g. WHERE time > now() - interval '1 day'")
            );
        }
        other => panic!("{other:?}"),
    }
    // the per-table time column
    match read("SELECT * FROM events WHERE time > $1", &["app.events"]).decision {
        Decision::Deny(d) => assert!(d.hint.unwrap().contains("WHERE ts >"), "{}", d.reason),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        read(
            "SELECT * FROM events WHERE ts > $1 LIMIT 5",
            &["app.events"]
        )
        .decision,
        Decision::Allow
    );
    // a join needs a bound on each guarded hypertable's time column
    assert!(matches!(
        read(
            "SELECT * FROM metrics m JOIN events e ON e.host = m.host WHERE m.time > $1",
            &["events", "metrics"]
        )
        .decision,
        Decision::Deny(d) if d.reason.contains("events")
    ));
}

#[test]
fn other_tables_schemas_and_kinds_are_left_alone() {
    let p = policy(CONFIG);
    for (sql, kind, tables) in [
        ("SELECT * FROM hosts", StatementKind::Read, &["hosts"][..]),
        (
            "SELECT * FROM other.metrics",
            StatementKind::Read,
            &["other.metrics"][..],
        ),
        (
            "DELETE FROM metrics",
            StatementKind::Write,
            &["metrics"][..],
        ),
        (
            "INSERT INTO metrics SELECT * FROM metrics",
            StatementKind::Write,
            &["metrics"][..],
        ),
        (
            "CREATE INDEX ON metrics (host)",
            StatementKind::Ddl,
            &["metrics"][..],
        ),
        ("SELECT 1", StatementKind::Read, &[][..]),
        (
            "SELECT * FROM metrics WHERE 'unterminated",
            StatementKind::Read,
            &["metrics"][..],
        ),
    ] {
        let o = decide(&p, &statement(principal("u", &[]), sql, kind, tables));
        assert_eq!(
            o,
            Outcome {
                decision: Decision::Allow,
                log: None
            },
            "{sql}"
        );
    }
}

#[test]
fn bounded_reads_get_a_limit() {
    assert_eq!(
        read("SELECT * FROM metrics WHERE time > $1", &["public.metrics"]).decision,
        Decision::Rewrite("SELECT * FROM metrics WHERE time > $1 LIMIT 1000".into())
    );
    assert_eq!(
        read(
            "SELECT * FROM metrics WHERE time > $1 LIMIT 10",
            &["metrics"]
        )
        .decision,
        Decision::Allow
    );
}

#[test]
fn caggs_rewrite_then_limit() {
    let o = read(
        "SELECT time_bucket('1 hour', time) AS b, host, avg(cpu) FROM metrics \
         WHERE time > now() - interval '1 day' GROUP BY b, host",
        &["metrics"],
    );
    assert_eq!(
        o.decision,
        Decision::Rewrite(
            "SELECT bucket AS b, host, avg_cpu AS avg FROM metrics_hourly \
             WHERE bucket > now() - interval '1 day' LIMIT 1000"
                .into()
        )
    );
    assert!(o
        .log
        .unwrap()
        .starts_with("rewrote a query on metrics to a continuous aggregate"));
    // an unbounded aggregate query is still denied first
    assert!(matches!(
        read(
            "SELECT time_bucket('1 hour', time) AS b, host, avg(cpu) FROM metrics GROUP BY b, host",
            &["metrics"]
        )
        .decision,
        Decision::Deny(_)
    ));
}

#[test]
fn unbounded_allow_logs_and_carries_on() {
    let p = policy(
        r#"{"hypertables": ["metrics"], "unbounded": "allow", "max_rows": 50,
            "continuous_aggregates": [{"name": "metrics_hourly", "hypertable": "metrics",
              "bucket": "1 hour", "group_by": ["host"], "aggregates": {"avg(cpu)": "avg_cpu"}}]}"#,
    );
    let o = decide(
        &p,
        &statement(
            principal("bob", &[]),
            "SELECT * FROM metrics",
            StatementKind::Read,
            &["metrics"],
        ),
    );
    assert_eq!(
        o.decision,
        Decision::Rewrite("SELECT * FROM metrics LIMIT 50".into())
    );
    assert_eq!(
        o.log.as_deref(),
        Some(
            "unbounded read of hypertable metrics by bob: add a time range, \
             e.g. WHERE time > now() - interval '1 day'"
        )
    );
    let o = decide(
        &p,
        &statement(
            principal("bob", &[]),
            "SELECT time_bucket('1 hour', time) AS b, host, avg(cpu) FROM metrics GROUP BY b, host",
            StatementKind::Read,
            &["metrics"],
        ),
    );
    assert_eq!(
        o.decision,
        Decision::Rewrite(
            "SELECT bucket AS b, host, avg_cpu AS avg FROM metrics_hourly LIMIT 50".into()
        )
    );
    let log = o.log.unwrap();
    assert!(
        log.contains("unbounded read") && log.contains("rewrote"),
        "{log}"
    );
}

#[test]
fn caggs_apply_without_guarding_and_can_be_turned_off() {
    let unguarded = policy(
        r#"{"continuous_aggregates": [{"name": "metrics_hourly", "hypertable": "metrics",
              "bucket": "1 hour", "group_by": ["host"], "aggregates": {"avg(cpu)": "avg_cpu"}}]}"#,
    );
    let sql =
        "SELECT time_bucket('1 hour', time) AS b, host, avg(cpu) FROM metrics GROUP BY b, host";
    let stmt = statement(principal("u", &[]), sql, StatementKind::Read, &["metrics"]);
    assert_eq!(
        decide(&unguarded, &stmt).decision,
        Decision::Rewrite(HOURLY.to_owned())
    );
    let off = policy(
        r#"{"cagg_rewrite": false, "continuous_aggregates": [{"name": "metrics_hourly",
              "hypertable": "metrics", "bucket": "1 hour", "group_by": ["host"],
              "aggregates": {"avg(cpu)": "avg_cpu"}}]}"#,
    );
    assert_eq!(decide(&off, &stmt).decision, Decision::Allow);
    // tables the host saw besides the hypertable: no rewrite
    let two = statement(
        principal("u", &[]),
        sql,
        StatementKind::Read,
        &["hosts", "metrics"],
    );
    assert_eq!(decide(&unguarded, &two).decision, Decision::Allow);
}

#[test]
fn config_defaults_and_errors() {
    let p = policy("{}");
    assert!(p.hypertables.is_empty() && p.caggs.is_empty() && p.max_rows.is_none());
    let p = policy(r#"{"hypertables": ["a", "s.b"], "time_column": {"s.b": "at"}}"#);
    let cols: Vec<_> = p
        .hypertables
        .iter()
        .map(|h| h.time_column.as_str())
        .collect();
    assert_eq!(cols, ["time", "at"]);
    assert_eq!(
        p.hypertables[1].table,
        TableName {
            schema: Some("s".into()),
            name: "b".into()
        }
    );
    for (json, needle) in [
        (r#"{"hypertables": ["a.b.c"]}"#, "hypertables"),
        (r#"{"hypertables": [""]}"#, "hypertables"),
        (r#"{"time_column": ""}"#, "time_column"),
        (r#"{"time_column": {"t": ""}}"#, "time_column.t"),
        (r#"{"max_rows": 0}"#, "max_rows"),
        (r#"{"max_rows": -1}"#, "invalid"),
        (r#"{"unbounded": "warn"}"#, "unknown variant"),
        (r#"{"hypertable": ["m"]}"#, "unknown field"),
        (
            r#"{"continuous_aggregates": [{"name": "x", "hypertable": "m", "bucket": " "}]}"#,
            "continuous_aggregates[0]: bucket",
        ),
        (
            r#"{"continuous_aggregates": [{"name": "x", "hypertable": "m", "bucket": "1h",
                "aggregates": {"avg('": "a"}}]}"#,
            "cannot read",
        ),
        (
            r#"{"continuous_aggregates": [{"name": "x", "hypertable": "m", "bucket": "1h",
                "aggregates": {"avg(x)": ""}}]}"#,
            "empty column name",
        ),
        (
            r#"{"continuous_aggregates": [{"name": "x", "hypertable": "", "bucket": "1h"}]}"#,
            "continuous_aggregates[0].hypertable",
        ),
        (
            r#"{"continuous_aggregates": [{"name": "x", "hypertable": "m", "bucket": "1h", "groupby": []}]}"#,
            "unknown field",
        ),
    ] {
        let err = parse_config::<Config>(json)
            .and_then(Policy::new)
            .unwrap_err();
        assert!(err.contains(needle), "{json}: {err}");
    }
}

#[test]
fn info_is_deterministic_only_without_rewrites() {
    let info = Optimizer(policy(CONFIG)).info();
    assert_eq!(info.name, "optimizer");
    assert_eq!(info.hooks, Hooks::STATEMENT);
    assert!(!info.deterministic);
    assert!(info.columns.is_empty());
    // The guard alone decides by shape: cacheable per fingerprint.
    let guard = Optimizer(policy(r#"{"hypertables": ["metrics"]}"#)).info();
    assert!(guard.deterministic);
}

/// A small deterministic generator (xorshift64*), to avoid a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const FRAGMENTS: &[&str] = &[
    "SELECT ",
    "select",
    " ",
    "\n",
    "time",
    "\"time\"",
    "(",
    ")",
    "'",
    "''",
    "'1 hour'",
    "\"",
    "$1",
    "$$",
    "$t$",
    "--",
    "/*",
    "*/",
    ",",
    ";",
    ".",
    "::",
    "<",
    "<=",
    ">",
    ">=",
    "=",
    "-",
    "+",
    "*",
    "WHERE ",
    "GROUP BY ",
    "ORDER BY ",
    "time_bucket",
    "host",
    "avg(cpu)",
    "cpu",
    " FROM ",
    "metrics",
    "public.metrics",
    " AS ",
    "b",
    " AND ",
    " OR ",
    "NOT ",
    "BETWEEN ",
    "IN ",
    " LIMIT ",
    "OFFSET ",
    "1",
    "1.5e3",
    ".",
    "é",
    "E'\\'",
    "\\",
    "U&",
    "interval",
    "now()",
    "DESC",
    "NULLS LAST",
    "AT TIME ZONE",
    "count(*)",
    "timestamptz",
    "[",
    "]",
];

#[test]
fn nothing_panics_on_arbitrary_text() {
    let p = policy(CONFIG);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..30_000 {
        let mut sql = String::new();
        let n = rng.below(40);
        for _ in 0..n {
            if round % 7 == 0 {
                // arbitrary characters, not just fragments
                sql.push(char::from_u32(rng.below(0x3000) as u32).unwrap_or('x'));
            } else {
                sql.push_str(FRAGMENTS[rng.below(FRAGMENTS.len())]);
            }
        }
        let stmt = statement(principal("u", &[]), &sql, StatementKind::Read, &["metrics"]);
        let outcome = decide(&p, &stmt);
        if let Decision::Rewrite(new) = &outcome.decision {
            // whatever is rewritten still lexes, and a second pass changes nothing more
            assert!(Scan::new(new).is_some(), "{sql:?} -> {new:?}");
        }
        let _ = rewrite(&sql, &p.caggs);
        let _ = crate::limit::add_limit(&sql, 5);
        if let Some(scan) = Scan::new(&sql) {
            let _ = crate::guard::bounded(&scan, "time");
        }
    }
}
