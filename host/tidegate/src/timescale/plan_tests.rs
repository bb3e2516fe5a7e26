//! The plan's rules, on hand-made live states (no server).

use super::live::{self, Cagg, Job, Live, Table};
use super::plan::{definition_comment, plan};
use tidegate_config::Config;

fn declared(extra: &str) -> Config {
    Config::from_toml(&format!(
        r#"
[[users]]
name = "app"
password = "app"
[[timescale.hypertables]]
table = "metrics"
time_column = "time"
chunk_interval = "1d"
compression = {{ after = "7d", segment_by = ["host"], order_by = "time DESC" }}
retention = {{ drop_after = "90d" }}
{extra}
"#
    ))
    .expect("valid")
}

fn name(s: &str) -> (String, String) {
    ("public".into(), s.into())
}

fn columns() -> Vec<String> {
    ["time", "host", "cpu"].map(String::from).to_vec()
}

fn with_timescaledb() -> Live {
    Live {
        timescaledb: true,
        ..Live::default()
    }
}

/// `metrics` exactly as declared (without aggregates).
fn in_sync() -> Live {
    let mut live = with_timescaledb();
    live.tables.insert(
        name("metrics"),
        Table {
            columns: columns(),
            hypertable: Some(live::Hypertable {
                time_column: "time".into(),
                chunk_seconds: Some(86_400.0),
                space: vec![],
                compression: true,
                segment_by: vec!["host".into()],
                order_by: vec![("time".into(), true, true)],
                has_chunks: true,
            }),
            rows: None,
            native: None,
        },
    );
    for (id, proc, after) in [
        (1000, live::COMPRESSION, 7.0 * 86_400.0),
        (1001, live::RETENTION, 90.0 * 86_400.0),
    ] {
        live.jobs.push(Job {
            id,
            proc: proc.into(),
            object: name("metrics"),
            schedule_seconds: 43_200.0,
            after_seconds: Some(after),
            end_seconds: None,
        });
    }
    live
}

#[test]
fn a_catalog_as_declared_plans_nothing() {
    let p = plan(&declared("").timescale, &in_sync());
    assert!(p.is_empty(), "{}", p.human());
    assert!(p.errors.is_empty());
    assert!(p.human().contains("in sync, nothing to change"));
}

#[test]
fn a_plain_table_becomes_a_hypertable_moving_its_rows() {
    let mut live = with_timescaledb();
    live.tables.insert(
        name("metrics"),
        Table {
            columns: columns(),
            hypertable: None,
            rows: Some(1234),
            native: None,
        },
    );
    let p = plan(&declared("").timescale, &live);
    let first = &p.changes[0];
    assert!(first.why.contains("moves its 1234 rows"), "{}", first.why);
    assert!(first.statements[0].contains("migrate_data => true"));
    // Then the compression settings, the compression policy and the retention policy.
    let all = p.human();
    assert!(
        all.contains("timescaledb.compress_orderby = 'time DESC'"),
        "{all}"
    );
    assert!(all.contains("add_compression_policy"), "{all}");
    assert!(all.contains("add_retention_policy"), "{all}");
    assert_eq!(p.changes.len(), 4, "{all}");
}

#[test]
fn differences_become_changes_and_undeclared_policies_go() {
    let mut live = in_sync();
    let h = live
        .tables
        .get_mut(&name("metrics"))
        .and_then(|t| t.hypertable.as_mut());
    let h = h.expect("hypertable");
    h.chunk_seconds = Some(7.0 * 86_400.0);
    h.order_by = vec![("time".into(), false, false)];
    live.jobs[0].after_seconds = Some(3.0 * 86_400.0);
    let p = plan(&declared("").timescale, &live);
    let all = p.human();
    assert!(
        all.contains("set_chunk_time_interval('\"public\".\"metrics\"', INTERVAL '1 day')"),
        "{all}"
    );
    assert!(all.contains("compression settings differ"), "{all}");
    assert!(
        all.contains("SELECT remove_compression_policy('\"public\".\"metrics\"');\nSELECT add_compression_policy"),
        "{all}"
    );
    assert_eq!(p.changes.len(), 3, "{all}");

    // Retention no longer declared: its policy is removed.
    let mut decl = declared("").timescale;
    decl.hypertables[0].retention = None;
    let p = plan(&decl, &in_sync());
    assert_eq!(p.changes.len(), 1);
    assert!(p.changes[0].statements[0].starts_with("SELECT remove_retention_policy"));
}

const CAGG: &str = r#"
[[timescale.hypertables.continuous_aggregates]]
name = "metrics_hourly"
bucket = "1h"
group_by = ["host"]
aggregates = { cpu = ["avg", "last"] }
refresh = { start_offset = "3d", end_offset = "1h", every = "30m" }
"#;

#[test]
fn an_aggregate_is_created_then_recreated_only_when_its_definition_changes() {
    let config = declared(CAGG);
    let p = plan(&config.timescale, &in_sync());
    let all = p.human();
    assert!(
        all.contains(
            "CREATE MATERIALIZED VIEW \"public\".\"metrics_hourly\" WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS \
             SELECT time_bucket(INTERVAL '1 hour', \"time\") AS bucket, \"host\", avg(\"cpu\") AS \"cpu_avg\", last(\"cpu\", \"time\") AS \"cpu_last\" \
             FROM \"public\".\"metrics\" GROUP BY bucket, \"host\" WITH NO DATA"
        ),
        "{all}"
    );
    assert!(
        all.contains("COMMENT ON VIEW \"public\".\"metrics_hourly\" IS 'tidegate: {"),
        "{all}"
    );
    assert!(all.contains("add_continuous_aggregate_policy"), "{all}");
    assert!(p.changes.iter().all(|c| !c.recreate));

    // Created from this declaration, with its policy: nothing to do.
    let h = &config.timescale.hypertables[0];
    let a = &h.continuous_aggregates[0];
    let mut live = in_sync();
    live.caggs.insert(
        name("metrics_hourly"),
        Cagg {
            hypertable: name("metrics"),
            comment: Some(definition_comment(h, &name("metrics"), a)),
            rows: 42,
        },
    );
    live.jobs.push(Job {
        id: 1002,
        proc: live::REFRESH.into(),
        object: name("metrics_hourly"),
        schedule_seconds: 1_800.0,
        after_seconds: Some(3.0 * 86_400.0),
        end_seconds: Some(3_600.0),
    });
    assert!(plan(&config.timescale, &live).is_empty());

    // Another definition (or none recorded): drop and recreate, marked so.
    live.caggs
        .get_mut(&name("metrics_hourly"))
        .expect("cagg")
        .comment = None;
    let p = plan(&config.timescale, &live);
    let c = &p.changes[0];
    assert!(c.recreate);
    assert!(
        c.why
            .contains("drop and recreate, 42 rows to re-materialize"),
        "{}",
        c.why
    );
    assert!(c.statements[0].starts_with("DROP MATERIALIZED VIEW"));
    // The recreated aggregate gets its policy again.
    assert!(
        p.human().contains("add_continuous_aggregate_policy"),
        "{}",
        p.human()
    );
}

#[test]
fn unknown_tables_and_columns_are_errors_not_changes() {
    let mut live = with_timescaledb();
    let p = plan(&declared("").timescale, &live);
    assert!(p.is_empty());
    assert!(
        p.errors[0].contains("\"public\".\"metrics\" does not exist"),
        "{:?}",
        p.errors
    );
    live.tables.insert(
        name("metrics"),
        Table {
            columns: vec!["time".into()],
            hypertable: None,
            rows: Some(0),
            native: None,
        },
    );
    let p = plan(&declared("").timescale, &live);
    assert!(
        p.errors[0].contains("has no column \"host\""),
        "{:?}",
        p.errors
    );
}

/// 2026-12-05 12:00:00 UTC.
const NOON: f64 = 1_796_472_000.0;

#[test]
fn without_timescaledb_native_partitions_are_kept_ahead_and_the_rest_is_said() {
    let day = 86_400.0;
    let midnight = NOON - 12.0 * 3_600.0;
    let mut live = Live {
        now: NOON,
        ..Live::default()
    };
    live.tables.insert(
        name("metrics"),
        Table {
            columns: columns(),
            hypertable: None,
            rows: None,
            native: Some(live::Native {
                key: "time".into(),
                // Yesterday and today exist; a week ahead does not.
                ranges: vec![
                    ("metrics_p20261204_000000".into(), midnight - day, midnight),
                    ("metrics_p20261205_000000".into(), midnight, midnight + day),
                ],
                default: Some("metrics_default".into()),
            }),
        },
    );
    let p = plan(&declared("").timescale, &live);
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    assert_eq!(p.changes.len(), 7, "{}", p.human());
    let first = &p.changes[0];
    assert!(
        first
            .why
            .contains("[2026-12-06 00:00:00+00, 2026-12-07 00:00:00+00)"),
        "{}",
        first.why
    );
    assert_eq!(
        first.statements,
        [
            "CREATE TABLE \"public\".\"metrics_p20261206_000000\" (LIKE \"public\".\"metrics\" INCLUDING DEFAULTS INCLUDING CONSTRAINTS)",
            "WITH moved AS (DELETE FROM \"public\".\"metrics_default\" WHERE \"time\" >= '2026-12-06 00:00:00+00' AND \"time\" < '2026-12-07 00:00:00+00' RETURNING *) INSERT INTO \"public\".\"metrics_p20261206_000000\" SELECT * FROM moved",
            "ALTER TABLE \"public\".\"metrics\" ATTACH PARTITION \"public\".\"metrics_p20261206_000000\" FOR VALUES FROM ('2026-12-06 00:00:00+00') TO ('2026-12-07 00:00:00+00')",
        ]
    );
    assert!(
        p.changes[6].why.contains("[2026-12-12 00:00:00+00"),
        "{}",
        p.changes[6].why
    );
    // Compression and the retention policy need TimescaleDB: said, not planned.
    assert!(
        p.notes[0].contains("TimescaleDB is not installed: compression, a retention policy"),
        "{:?}",
        p.notes
    );

    // A plain table without TimescaleDB: nothing to do, and said so.
    live.tables
        .get_mut(&name("metrics"))
        .expect("metrics")
        .native = None;
    let p = plan(&declared("").timescale, &live);
    assert!(p.is_empty() && p.errors.is_empty());
    assert!(
        p.notes.iter().any(|n| n.contains("nothing to partition")),
        "{:?}",
        p.notes
    );
}

mod names {
    use super::*;
    use proptest::prelude::*;

    /// A TOML basic string holding `s`.
    fn toml_string(s: &str) -> String {
        let mut out = String::from("\"");
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }

    /// Names from the hostile end: quotes, semicolons, comments, dollar quotes, NUL, reserved
    /// words, 64-byte names, any Unicode.
    fn name() -> impl Strategy<Value = String> {
        prop_oneof![
            "\\PC{0,70}",
            "[a-z_][a-z0-9_$]{0,70}",
            Just("select".to_owned()),
            Just("table\"; DROP TABLE x; --".to_owned()),
            Just("a'b".to_owned()),
            Just("x\0y".to_owned()),
            Just("$$".to_owned()),
            Just("é_名前".to_owned()),
            Just("a".repeat(64)),
        ]
    }

    /// Declares the names; `Ok(false)` when the configuration refuses them, `Ok(true)` when
    /// they reach the generated DDL only quoted and each statement is exactly one statement.
    fn check(
        schema: &str,
        table: &str,
        time: &str,
        col: &str,
        view: &str,
    ) -> Result<bool, TestCaseError> {
        let src = format!(
            "[[users]]\nname = \"app\"\npassword = \"app\"\n\
             [[timescale.hypertables]]\ntable = {}\ntime_column = {}\n\
             compression = {{ after = \"7d\", segment_by = [{}], order_by = {} }}\n\
             retention = {{ drop_after = \"30d\" }}\n\
             [[timescale.hypertables.continuous_aggregates]]\nname = {}\nbucket = \"1h\"\n\
             group_by = [{}]\naggregates = {{ {} = [\"avg\", \"last\"] }}\n\
             refresh = {{ start_offset = \"3d\", end_offset = \"1h\", every = \"1h\" }}\n",
            toml_string(&format!("{schema}.{table}")),
            toml_string(time),
            toml_string(col),
            toml_string(&format!("{time} DESC")),
            toml_string(&format!("{schema}.{view}")),
            toml_string(col),
            toml_string(col),
        );
        let Ok(config) = Config::from_toml(&src) else {
            return Ok(false);
        };
        let mut live = with_timescaledb();
        live.tables.insert(
            (schema.to_owned(), table.to_owned()),
            Table {
                columns: vec![time.to_owned(), col.to_owned()],
                hypertable: None,
                rows: Some(5),
                native: None,
            },
        );
        let p = plan(&config.timescale, &live);
        prop_assert!(p.errors.is_empty(), "{:?}", p.errors);
        prop_assert_eq!(p.changes.len(), 6);
        for c in &p.changes {
            for s in &c.statements {
                let parts = tidegate_sql::split_statements(s);
                prop_assert!(parts.as_ref().is_some_and(|p| p.len() == 1), "{}", s);
                prop_assert!(
                    s.contains(&tidegate_sql::quote_ident(table))
                        || s.contains(&tidegate_sql::quote_ident(view)),
                    "{}",
                    s
                );
            }
        }
        Ok(true)
    }

    #[test]
    fn odd_but_valid_names_are_quoted_and_hostile_ones_refused() {
        let long = "a".repeat(63);
        for good in ["select", "é_名前", "a$b", "Mixed", long.as_str()] {
            let r = check("public", good, good, "v", "h");
            assert!(matches!(r, Ok(true)), "{good}: {r:?}");
        }
        let longer = "a".repeat(64);
        for bad in [
            "a\"b",
            "a'b",
            "x;y",
            "x\0y",
            "$$",
            "a b",
            "",
            "1a",
            longer.as_str(),
        ] {
            assert_eq!(
                check("public", bad, "time", "v", "h").ok(),
                Some(false),
                "{bad:?}"
            );
            assert_eq!(
                check("public", "t", bad, "v", "h").ok(),
                Some(false),
                "{bad:?}"
            );
        }
    }

    proptest! {
        /// Scenario 21: a declared name is refused by the configuration, or it reaches the
        /// generated DDL only quoted, and every generated statement is exactly one statement.
        #[test]
        fn declared_names_are_refused_or_quoted_into_single_statements(
            schema in name(), table in name(), time in name(), col in name(), view in name(),
        ) {
            check(&schema, &table, &time, &col, &view)?;
        }
    }
}
