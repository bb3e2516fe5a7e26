//! Generated SQL: exact text for a plain table, and for hostile names (reliability scenario
//! 21) exactly one statement of the expected kind, whose identifiers are the names given.

use super::*;
use proptest::prelude::*;
use sqlparser::ast::{Statement, Visit, Visitor};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use std::ops::ControlFlow;

fn info(table: &str, time: &str, series: &str, value: &str, timescaledb: bool) -> TableInfo {
    TableInfo {
        schema: "public".into(),
        name: table.into(),
        columns: vec![
            (time.into(), "timestamp with time zone".into()),
            (series.into(), "integer".into()),
            (value.into(), "double precision".into()),
        ],
        primary_key: Vec::new(),
        series: Some(SeriesInfo {
            time: time.into(),
            series: series.into(),
            values: vec![value.into()],
            metadata: None,
        }),
        timescaledb,
    }
}

#[test]
fn range_sql_is_exact() {
    let i = info("m", "time", "series_id", "value", false);
    let q = RangeQuery {
        series_id: Some("1,2".into()),
        limit: Some(10),
        ..Default::default()
    };
    let s = range_sql(&i, &q).expect("sql");
    assert_eq!(
        s.sql,
        "SELECT \"time\", \"series_id\", \"value\" FROM \"public\".\"m\" WHERE \"time\" >= $1::timestamptz \
         AND \"time\" < $2::timestamptz AND \"series_id\" = ANY ($3) ORDER BY \"time\" ASC, \"series_id\" LIMIT $4::bigint"
    );
    assert_eq!(
        s.params,
        vec![
            Some("-infinity".into()),
            Some("infinity".into()),
            Some("{\"1\",\"2\"}".into()),
            Some("10".into())
        ]
    );
}

#[test]
fn aggregate_uses_time_bucket_or_date_bin() {
    let q = AggQuery {
        from: Some("2024-01-01".into()),
        to: Some("2024-01-02".into()),
        interval: Some("5m".into()),
        agg: Some("value:avg,value:last".into()),
        ..Default::default()
    };
    let ts = aggregate_sql(&info("m", "time", "series_id", "value", true), &q).expect("sql");
    assert!(
        ts.sql.contains("time_bucket($3::interval, \"time\")"),
        "{}",
        ts.sql
    );
    assert!(ts
        .sql
        .contains("last(\"value\", \"time\") AS \"value_last\""));
    assert_eq!(ts.params[2].as_deref(), Some("300000 milliseconds"));
    let pg = aggregate_sql(&info("m", "time", "series_id", "value", false), &q).expect("sql");
    assert!(pg
        .sql
        .contains("date_bin($3::interval, \"time\", TIMESTAMPTZ '2000-01-03 00:00:00+00')"));
    assert!(pg
        .sql
        .contains("(array_agg(\"value\" ORDER BY \"time\" DESC))[1] AS \"value_last\""));
}

#[test]
fn aggregate_refuses_unknown_columns_and_functions() {
    let i = info("m", "time", "series_id", "value", false);
    let mut q = AggQuery {
        from: Some("a".into()),
        to: Some("b".into()),
        agg: Some("secret:avg".into()),
        ..Default::default()
    };
    assert_eq!(
        aggregate_sql(&i, &q).err().map(|e| e.status.as_u16()),
        Some(400)
    );
    q.agg = Some("value:pg_sleep".into());
    assert_eq!(
        aggregate_sql(&i, &q).err().map(|e| e.status.as_u16()),
        Some(400)
    );
    q.agg = Some("value:avg".into());
    q.interval = Some("1; DROP TABLE m".into());
    assert_eq!(
        aggregate_sql(&i, &q).err().map(|e| e.status.as_u16()),
        Some(400)
    );
}

#[test]
fn url_table_names_are_checked() {
    assert_eq!(table_name("t").expect("ok"), ("public".into(), "t".into()));
    assert_eq!(table_name("s.t").expect("ok"), ("s".into(), "t".into()));
    assert!(table_name("a\0b").is_err());
    assert!(table_name(&"x".repeat(64)).is_err());
    assert!(table_name(&"x".repeat(63)).is_ok());
    assert!(table_name(".t").is_err());
}

/// Every identifier in a statement.
struct Idents(Vec<String>);

impl Visitor for Idents {
    type Break = ();
    fn pre_visit_expr(&mut self, e: &sqlparser::ast::Expr) -> ControlFlow<()> {
        match e {
            sqlparser::ast::Expr::Identifier(i) => self.0.push(i.value.clone()),
            sqlparser::ast::Expr::CompoundIdentifier(p) => {
                self.0.extend(p.iter().map(|i| i.value.clone()))
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
    fn pre_visit_relation(&mut self, r: &sqlparser::ast::ObjectName) -> ControlFlow<()> {
        self.0.extend(
            r.0.iter()
                .filter_map(|p| p.as_ident().map(|i| i.value.clone())),
        );
        ControlFlow::Continue(())
    }
}

fn one_query(sql: &str) -> Vec<String> {
    let stmts =
        Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap_or_else(|e| panic!("{e}: {sql}"));
    assert_eq!(stmts.len(), 1, "{sql}");
    assert!(matches!(stmts[0], Statement::Query(_)), "{sql}");
    let mut v = Idents(Vec::new());
    let _ = stmts[0].visit(&mut v);
    v.0
}

fn hostile_name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z_\"';\\-/*$ ()\u{e9}\u{4e2d}\u{1f600}]{1,20}",
        Just("select".to_owned()),
        Just("x\"; DROP TABLE t; --".to_owned()),
        Just("a/*b".to_owned()),
        Just("$$".to_owned()),
        Just("'".to_owned()),
    ]
    .prop_filter("distinct, non-empty, <= 63 bytes", |s| {
        !s.is_empty() && s.len() <= 63
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn hostile_names_stay_identifiers(
        table in hostile_name(), time in hostile_name(), series in hostile_name(), value in hostile_name(),
        ts in any::<bool>(),
    ) {
        prop_assume!(time != series && time != value && series != value);
        let i = info(&table, &time, &series, &value, ts);
        let range = range_sql(&i, &RangeQuery { series_id: Some("1".into()), ..Default::default() }).expect("sql");
        let idents = one_query(&range.sql);
        for name in [&table, &time, &series, &value] {
            prop_assert!(idents.contains(name), "{name:?} not an identifier in {}", range.sql);
        }
        let agg = aggregate_sql(&i, &AggQuery {
            from: Some("a".into()), to: Some("b".into()), agg: Some(format!("{value}:max")),
            fill: Some(true), ..Default::default()
        }).expect("sql");
        one_query(&agg.sql);
        let latest = latest_sql(&i, &LatestQuery::default()).expect("sql");
        let idents = one_query(&latest.sql);
        prop_assert!(idents.contains(&table));
        let latest = latest_sql(&i, &LatestQuery { series_id: Some("1,2".into()), limit: Some(3) }).expect("sql");
        one_query(&latest.sql);
    }
}
