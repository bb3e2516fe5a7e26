use super::*;

const MIN: &str = r#"
[[users]]
name = "app"
password = "app"
"#;

fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn defaults_match_the_documented_ones() {
    let c = Config::from_toml(MIN).expect("valid");
    assert_eq!(c.listen.sql.to_string(), "127.0.0.1:6543");
    assert_eq!(c.upstream.primary.host, "127.0.0.1");
    assert_eq!(c.upstream.primary.port, 5432);
    assert_eq!(c.upstream.primary.user, "postgres");
    assert_eq!(c.upstream.primary.database, "postgres");
    assert!(c.upstream.primary.password.is_none());
    assert_eq!(c.users[0].role(&c.upstream.primary), "postgres");
    assert!(c.users[0].verifier.is_some());
}

#[test]
fn env_overrides_nest_with_double_underscores() {
    let c = Config::from_toml_with_env(
        MIN,
        "t.toml",
        vars(&[
            ("TIDEGATE__LISTEN__SQL", "127.0.0.1:7000"),
            ("TIDEGATE__UPSTREAM__PRIMARY__PORT", "5499"),
            ("TIDEGATE__POOL__QUERY_TIMEOUT", "2s"),
            ("UNRELATED", "x"),
        ]),
    )
    .expect("valid");
    assert_eq!(c.listen.sql.to_string(), "127.0.0.1:7000");
    assert_eq!(c.upstream.primary.port, 5499);
    assert_eq!(c.pool.query_timeout, Millis(2000));
}

#[test]
fn syntax_errors_carry_line_and_column() {
    let src = "[listen]\nsql = \"127.0.0.1:1\"\n[pool]\nsize = = 3\n";
    let e = Config::from_toml_with_env(src, "bad.toml", vec![]).unwrap_err();
    let s = e.to_string();
    assert!(s.starts_with("bad.toml:4:"), "{s}");
}

#[test]
fn unknown_keys_are_rejected() {
    let src = format!("{MIN}\n[pool]\nsise = 3\n");
    let e = Config::from_toml_with_env(&src, "bad.toml", vec![])
        .unwrap_err()
        .to_string();
    assert!(e.contains("sise"), "{e}");
    assert!(e.starts_with("bad.toml:"), "{e}");
}

#[test]
fn semantic_errors_point_at_the_key() {
    let src = format!("{MIN}\n[pool]\nsize = 0\n");
    let e = Config::from_toml_with_env(&src, "bad.toml", vec![])
        .unwrap_err()
        .to_string();
    assert_eq!(e, "bad.toml:7:1: pool.size: must be at least 1");
}

#[test]
fn duplicate_users_and_missing_secrets_are_rejected() {
    let dup = format!("{MIN}{MIN}");
    assert!(Config::from_toml(&dup)
        .unwrap_err()
        .to_string()
        .contains("duplicate user"));
    let nosecret = "[[users]]\nname = \"x\"\n";
    assert!(Config::from_toml(nosecret)
        .unwrap_err()
        .to_string()
        .contains("needs scram"));
    let trust = "[auth]\nmethod = \"trust\"\n[[users]]\nname = \"x\"\n";
    assert!(Config::from_toml(trust).is_ok());
}

#[test]
fn scram_verifier_round_trips_and_matches_postgres() {
    // Verifier produced by PostgreSQL 15 for password 'app' with this salt.
    let v = ScramVerifier::derive("app", b"0123456789abcdef", 4096);
    let parsed = ScramVerifier::parse(&v.to_pg_string()).expect("parse");
    assert_eq!(parsed, v);
    assert!(ScramVerifier::parse("md5abc").is_err());
    assert!(format!("{v:?}").contains(".."));
}

#[test]
fn durations_parse() {
    assert_eq!(parse_duration("250ms"), Ok(Millis(250)));
    assert_eq!(parse_duration("5s"), Ok(Millis(5000)));
    assert_eq!(parse_duration("2m"), Ok(Millis(120_000)));
    assert!(parse_duration("5 parsecs").is_err());
}

#[test]
fn the_example_config_is_valid() {
    let src = include_str!("../../../config/tidegate.example.toml");
    let c = Config::from_toml_with_env(src, "tidegate.example.toml", vec![]).expect("valid");
    let app = c.user("app").expect("app user");
    assert_eq!(app.role(&c.upstream.primary), c.upstream.primary.user);
}

#[test]
fn replicas_come_from_a_list_or_a_comma_separated_env_value() {
    let src = format!("{MIN}\n[upstream]\nreplicas = [\"10.0.0.2:5433\", \"db3:5434\"]\n");
    let c = Config::from_toml(&src).expect("valid");
    assert_eq!(c.upstream.replicas.len(), 2);
    assert_eq!(
        c.upstream.replicas[1],
        Replica {
            host: "db3".into(),
            port: 5434
        }
    );
    let c = Config::from_toml_with_env(
        MIN,
        "t.toml",
        vars(&[(
            "TIDEGATE__UPSTREAM__REPLICAS",
            "127.0.0.1:5433,127.0.0.1:5434",
        )]),
    )
    .expect("valid");
    assert_eq!(
        c.upstream
            .replicas
            .iter()
            .map(|r| r.port)
            .collect::<Vec<_>>(),
        vec![5433, 5434]
    );
    let dup = format!("{MIN}\n[upstream]\nreplicas = [\"127.0.0.1:5432\"]\n");
    assert!(Config::from_toml(&dup)
        .unwrap_err()
        .to_string()
        .contains("listed twice"));
    let bad = format!("{MIN}\n[upstream]\nreplicas = [\"nohost\"]\n");
    assert!(Config::from_toml(&bad)
        .unwrap_err()
        .to_string()
        .contains("host:port"));
}

#[test]
fn a_plugin_may_not_hold_the_audit_chain_key() {
    // A plugin holding the audit chain's key could forge records the verifier accepts.
    let src = |audit_key: &str, plugin_keys: &str| {
        format!(
            r#"{MIN}
[[plugins.keys]]
name = "audit"
id = 1
secret = "ZGV2LW9ubHktYXVkaXQtY2hhaW4ta2V5LTMyYnl0ZXM="
[[plugins.keys]]
name = "pii"
id = 1
secret = "ZGV2ZWxvcG1lbnQtb25seS1rZXktMzItYnl0ZXMhISE="
[[plugins.chain]]
name = "enc"
file = "encryption.wasm"
kind = "encryption"
keys = {plugin_keys}
[audit]
key = "{audit_key}"
"#
        )
    };
    let e = Config::from_toml_with_env(&src("audit", r#"["pii", "audit"]"#), "bad.toml", vec![])
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("bad.toml:18:1: plugins.chain[0].keys: "),
        "{e}"
    );
    assert!(e.contains("audit.key"), "{e}");
    // Whatever the chain key is called.
    let e = Config::from_toml(&src("pii", r#"["pii"]"#))
        .unwrap_err()
        .to_string();
    assert!(e.contains("plugins.chain[0].keys"), "{e}");
    // Through an environment override of audit.key too.
    let e = Config::from_toml_with_env(
        &src("audit", r#"["pii"]"#),
        "t.toml",
        vars(&[("TIDEGATE__AUDIT__KEY", "pii")]),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("plugins.chain[0].keys"), "{e}");
    // Other keys are fine.
    Config::from_toml(&src("audit", r#"["pii"]"#)).expect("valid");
}

#[test]
fn the_audit_table_is_the_one_the_migrations_create() {
    let with_table = |t: &str| format!("{MIN}\n[audit]\ntable = \"{t}\"\n");
    let c = Config::from_toml(&with_table("tidegate_audit.events")).expect("the default");
    assert_eq!(c.audit.table_parts(), ("tidegate_audit", "events"));
    assert_eq!(
        Config::from_toml(MIN).expect("valid").audit.table,
        Audit::TABLE
    );
    for other in [
        "tidegate_audit.other",
        "audit.events",
        "events",
        "Tidegate_audit.events",
    ] {
        let e = Config::from_toml(&with_table(other))
            .unwrap_err()
            .to_string();
        assert!(e.contains("audit.table"), "{other}: {e}");
        assert!(e.contains("migrations"), "{other}: {e}");
    }
    let e = Config::from_toml_with_env(MIN, "t.toml", vars(&[("TIDEGATE__AUDIT__TABLE", "a.b")]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("audit.table"), "{e}");
}

#[test]
fn verifiers_match_their_password_only() {
    let v = ScramVerifier::derive("app", b"0123456789abcdef", 64);
    assert!(v.matches("app"));
    assert!(!v.matches("app2"));
    assert!(!v.matches(""));
    let (a, mut b) = ([7u8; 32], [7u8; 32]);
    assert!(constant_time_eq(&a, &b));
    b[31] = 8;
    assert!(!constant_time_eq(&a, &b));
    b[0] = 0;
    assert!(!constant_time_eq(&a, &b));
}

#[test]
fn verify_full_needs_the_ca_certificates() {
    let base = format!("{MIN}[upstream.primary]\nhost = \"db\"\n");
    let e = Config::from_toml(&format!("{base}sslmode = \"verify-full\"\n"))
        .expect_err("no sslrootcert");
    assert!(e.to_string().contains("sslrootcert"), "{e}");
    let c = Config::from_toml(&format!(
        "{base}sslmode = \"verify-full\"\nsslrootcert = \"/etc/ca.pem\"\n"
    ))
    .expect("valid");
    assert_eq!(c.upstream.primary.sslmode, SslMode::VerifyFull);
    assert_eq!(
        Config::from_toml(&base)
            .expect("valid")
            .upstream
            .primary
            .sslmode,
        SslMode::Prefer
    );
}

const TIMESCALE: &str = r#"
[[timescale.hypertables]]
table = "public.time_series_data"
time_column = "time"
chunk_interval = "1d"
space = { column = "series_id", partitions = 4 }
compression = { after = "7d", segment_by = ["series_id"], order_by = "time DESC" }
retention = { drop_after = "90d" }
[[timescale.hypertables.continuous_aggregates]]
name = "public.time_series_hourly"
bucket = "1h"
group_by = ["series_id"]
aggregates = { value = ["avg", "min", "max"] }
refresh = { start_offset = "3d", end_offset = "1h", every = "30m" }
retention = { drop_after = "2y" }

[[timescale.hypertables]]
table = "metrics"
time_column = "ts"
"#;

#[test]
fn the_declared_timescale_lifecycle_parses() {
    let c = Config::from_toml(&format!("{MIN}{TIMESCALE}")).expect("valid");
    let t = &c.timescale;
    assert_eq!(t.hypertables.len(), 2);
    let h = &t.hypertables[0];
    assert_eq!(h.chunk_interval.sql(), "INTERVAL '1 day'");
    assert_eq!(h.space.as_ref().map(|s| s.partitions), Some(4));
    let a = &h.continuous_aggregates[0];
    assert_eq!(a.aggregates["value"], ["avg", "min", "max"]);
    assert_eq!(
        a.retention.as_ref().map(|r| r.drop_after.pg()).as_deref(),
        Some("2 years")
    );
    assert_eq!(a.refresh.as_ref().map(|r| r.every.seconds()), Some(1800.0));
    // The default chunk interval is TimescaleDB's: seven days.
    assert_eq!(t.hypertables[1].chunk_interval.pg(), "7 days");
    assert_eq!(t.database(&c.upstream.primary.database), "postgres");
}

#[test]
fn timescale_mistakes_are_reported_at_their_line() {
    let src = format!("{MIN}{TIMESCALE}");
    let line_of = |needle: &str| src[..src.find(needle).expect(needle)].lines().count() + 1;
    let check = |bad: &str, good: &str, message: &str, line: usize| {
        let text = src.replacen(good, bad, 1);
        let e = Config::from_toml_with_env(&text, "ts.toml", vec![])
            .expect_err(bad)
            .to_string();
        assert!(e.contains(message), "{bad}: {e}");
        assert!(e.starts_with(&format!("ts.toml:{line}:")), "{bad}: {e}");
    };
    // An unknown key, a bad unit and a bad function name, each at its own line.
    check(
        "chunk_interval = \"1d\"\nchunk_size = 3",
        "chunk_interval = \"1d\"",
        "unknown field `chunk_size`",
        line_of("chunk_interval") + 1,
    );
    check(
        "bucket = \"1 hour\"",
        "bucket = \"1h\"",
        "invalid interval unit",
        line_of("bucket ="),
    );
    check(
        "aggregates = { value = [\"median\"] }",
        "aggregates = { value = [\"avg\", \"min\", \"max\"] }",
        "\"median\" is not one of",
        line_of("aggregates ="),
    );
    // A refresh window of less than two buckets; a name that is no identifier; the second
    // hypertable's time column.
    check(
        "refresh = { start_offset = \"1h\", end_offset = \"1h\", every = \"30m\" }",
        "refresh = { start_offset = \"3d\", end_offset = \"1h\", every = \"30m\" }",
        "at least two buckets",
        line_of("refresh ="),
    );
    check(
        "name = \"public.time series\"",
        "name = \"public.time_series_hourly\"",
        "is not `schema.view`",
        line_of("name = \"public.time_series_hourly\""),
    );
    check(
        "time_column = \"ts; drop\"",
        "time_column = \"ts\"",
        "is not a column name",
        line_of("time_column = \"ts\""),
    );
    check(
        "order_by = \"time DESC; DROP TABLE x\"",
        "order_by = \"time DESC\"",
        "order_by",
        line_of("compression ="),
    );
}
