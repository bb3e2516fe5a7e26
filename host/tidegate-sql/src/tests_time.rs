//! Time-bound shapes, timestamp input and time ranges, including ranges read from a cached
//! classification of another statement text of the same shape.

use super::*;
use proptest::prelude::*;

const S: i64 = 1_000_000;
const H: i64 = 3600 * S;
/// 2024-01-01 00:00 UTC.
const JAN1: i64 = 1_704_067_200 * S;
/// 2024-01-02 00:00 UTC.
const JAN2: i64 = 1_704_153_600 * S;

/// `(table as "schema.name" or "name" or "-", column, from, to)`.
type Row = (&'static str, &'static str, Option<i64>, Option<i64>);

fn rows(ranges: &[TimeRange]) -> Vec<(String, String, Option<i64>, Option<i64>)> {
    ranges
        .iter()
        .map(|r| {
            let table = match &r.table {
                None => "-".to_owned(),
                Some(TableName {
                    schema: Some(s),
                    name,
                }) => format!("{s}.{name}"),
                Some(TableName { schema: None, name }) => name.clone(),
            };
            (table, r.column.clone(), r.from, r.to)
        })
        .collect()
}

fn ranges_of(sql: &str, params: &[Option<&str>], offset: i32) -> Vec<TimeRange> {
    time_range(sql, &classify(sql, &NoLookup), params, offset)
}

const M: &str = "SELECT avg(value) FROM metrics WHERE ";

/// (WHERE clause after `M`, expected ranges), with no parameters and a UTC session.
const CASES: &[(&str, &[Row])] = &[
    (
        "time >= '2024-01-01' AND time < '2024-01-02'",
        &[("metrics", "time", Some(JAN1), Some(JAN2))],
    ),
    (
        "time > '2024-01-01' AND time <= '2024-01-02'",
        &[("metrics", "time", Some(JAN1 + 1), Some(JAN2 + 1))],
    ),
    (
        "time BETWEEN '2024-01-01' AND '2024-01-02'",
        &[("metrics", "time", Some(JAN1), Some(JAN2 + 1))],
    ),
    (
        "time NOT BETWEEN '2024-01-01' AND '2024-01-02'",
        &[],
    ),
    (
        "time = '2024-01-01 12:00'",
        &[("metrics", "time", Some(JAN1 + 12 * H), Some(JAN1 + 12 * H + 1))],
    ),
    ("time >= '2024-01-01' OR time < '2024-01-02'", &[]),
    (
        "NOT (time >= '2024-01-01') AND time < '2024-01-02'",
        &[("metrics", "time", None, Some(JAN2))],
    ),
    (
        "(time >= '2024-01-01' AND device = 'a') AND (time < '2024-01-02')",
        &[("metrics", "time", Some(JAN1), Some(JAN2))],
    ),
    (
        "time >= '2024-01-01' AND (time < '2024-01-02' OR device = 'x')",
        &[("metrics", "time", Some(JAN1), None)],
    ),
    (
        "'2024-01-01' <= time AND '2024-01-02' > time",
        &[("metrics", "time", Some(JAN1), Some(JAN2))],
    ),
    // Casts and typed constants.
    (
        "time >= '2024-01-01'::timestamptz AND time < TIMESTAMPTZ '2024-01-02'",
        &[("metrics", "time", Some(JAN1), Some(JAN2))],
    ),
    (
        "time >= timestamp '2024-01-01' AND time < CAST('2024-01-02' AS timestamp with time zone)",
        &[("metrics", "time", Some(JAN1), Some(JAN2))],
    ),
    (
        "time >= DATE '2024-01-01' AND time < '2024-01-02'::date",
        &[("metrics", "time", Some(JAN1), Some(JAN2))],
    ),
    // A date constant with a time of day is refused rather than guessed.
    ("time >= '2024-01-01 12:00'::date", &[]),
    // A timestamp-without-time-zone constant ignores a written zone, as PostgreSQL does.
    (
        "time >= timestamp '2024-01-01 00:00+05' AND time < '2024-01-02 00:00+05'::timestamptz",
        &[("metrics", "time", Some(JAN1), Some(JAN2 - 5 * H))],
    ),
    // Casts to other types, double casts and expressions give no bound.
    ("time >= '2024-01-01'::text", &[]),
    ("time >= '2024-01-01'::timestamp::timestamptz", &[]),
    ("time >= '2024-01-01'::timestamptz + interval '1 day'", &[]),
    ("time > now() - interval '1 hour'", &[]),
    (
        "time > now() - interval '1 hour' AND time < '2024-01-02'",
        &[("metrics", "time", None, Some(JAN2))],
    ),
    ("time >= 5", &[]),
    ("time >= -5", &[]),
    ("time >= 'yesterday' AND time < 'infinity'", &[]),
    ("time >= '2024-13-01' AND time < '2024-02-30'", &[]),
    // Zones and precision.
    (
        "time >= '2024-01-01 00:00:00+02' AND time < '2024-01-01T00:00:00Z'",
        &[("metrics", "time", Some(JAN1 - 2 * H), Some(JAN1))],
    ),
    (
        "time >= '2024-01-01 05:30:00+05:30' AND time < '2024-01-01 00:00-0130'",
        &[("metrics", "time", Some(JAN1), Some(JAN1 + 90 * 60 * S))],
    ),
    (
        "time >= '2024-01-01 00:00:00.5 UTC' AND time < '2024-01-01 24:00'",
        &[("metrics", "time", Some(JAN1 + S / 2), Some(JAN2))],
    ),
    ("time >= '2024-01-01 00:00:00.1234567'", &[]),
    ("time >= timestamptz(0) '2024-01-01 00:00:00.5'", &[]),
    (
        "time >= timestamptz(3) '2024-01-01 00:00:00.125'",
        &[("metrics", "time", Some(JAN1 + S / 8), None)],
    ),
    ("time >= '2024-01-01 Europe/Paris'", &[]),
    // Constants whose text the lexer and PostgreSQL might split differently give no bound.
    ("time >= '2024-01-01'\n' 12:00'", &[]),
    ("time >= U&'2024-01-01'", &[]),
    ("time >= '2024-01-01' COLLATE \"C\"", &[]),
    (
        "(time) >= ('2024-01-01') AND ((time < ('2024-01-02'::timestamptz)))",
        &[("metrics", "time", Some(JAN1), Some(JAN2))],
    ),
    // Contradictions give an empty range, never from > to.
    (
        "time > '2024-01-02' AND time < '2024-01-01'",
        &[("metrics", "time", Some(JAN2 + 1), Some(JAN2 + 1))],
    ),
    (
        "time >= '2024-01-01' AND time >= '2024-01-01 12:00' AND time < '2024-01-03' AND time <= '2024-01-02'",
        &[("metrics", "time", Some(JAN1 + 12 * H), Some(JAN2 + 1))],
    ),
    // Other string constants, escapes and quotes.
    (
        "time >= E'2024-01-01' AND time < $$2024-01-02$$",
        &[("metrics", "time", Some(JAN1), Some(JAN2))],
    ),
    (
        "\"Time\" >= '2024-01-01' AND device = '2024-01-02'",
        &[
            ("metrics", "Time", Some(JAN1), None),
            ("metrics", "device", Some(JAN2), Some(JAN2 + 1)),
        ],
    ),
    (
        "device = 'a' AND value > -1.5e3 AND metrics.time >= '2024-01-01'",
        &[("metrics", "time", Some(JAN1), None)],
    ),
];

#[test]
fn time_ranges_of_single_selects() {
    let mut wrong = Vec::new();
    for (clause, want) in CASES {
        let sql = format!("{M}{clause}");
        let got = rows(&ranges_of(&sql, &[], 0));
        let want: Vec<_> = want
            .iter()
            .map(|(t, c, f, to)| (t.to_string(), c.to_string(), *f, *to))
            .collect();
        if got != want {
            wrong.push(format!("{sql}\n    got  {got:?}\n    want {want:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn tables_come_from_qualifiers_aliases_and_the_only_relation() {
    let cases: &[(&str, &[Row])] = &[
        (
            "SELECT * FROM metrics m JOIN devices d ON m.device_id = d.id \
             WHERE m.time >= '2024-01-01' AND d.created < '2024-01-02'",
            &[
                ("devices", "created", None, Some(JAN2)),
                ("metrics", "time", Some(JAN1), None),
            ],
        ),
        (
            "SELECT * FROM metrics m JOIN devices d ON m.device_id = d.id WHERE time >= '2024-01-01'",
            &[("-", "time", Some(JAN1), None)],
        ),
        (
            "SELECT * FROM public.metrics WHERE public.metrics.time >= '2024-01-01' \
             AND metrics.time < '2024-01-02'",
            &[("public.metrics", "time", Some(JAN1), Some(JAN2))],
        ),
        (
            "SELECT * FROM public.metrics AS x WHERE x.time >= '2024-01-01'",
            &[("public.metrics", "time", Some(JAN1), None)],
        ),
        // The alias hides the table name.
        ("SELECT * FROM metrics x WHERE metrics.time >= '2024-01-01'", &[]),
        (
            "WITH x AS (SELECT * FROM metrics) SELECT * FROM x WHERE time >= '2024-01-01'",
            &[("-", "time", Some(JAN1), None)],
        ),
        ("SELECT * FROM (SELECT * FROM metrics) s WHERE s.time >= '2024-01-01'", &[]),
        ("SELECT * FROM metrics WHERE other.time >= '2024-01-01'", &[]),
        (
            "SELECT * FROM (metrics m JOIN devices d ON true) WHERE m.time >= '2024-01-01'",
            &[("metrics", "time", Some(JAN1), None)],
        ),
        // Only the top-level SELECT of a single statement has bounds.
        ("SELECT * FROM (SELECT * FROM metrics WHERE time >= '2024-01-01') s", &[]),
        ("UPDATE metrics SET v = 1 WHERE time >= '2024-01-01'", &[]),
        ("DELETE FROM metrics WHERE time >= '2024-01-01'", &[]),
        (
            "SELECT * FROM metrics WHERE time >= '2024-01-01' UNION SELECT * FROM m2 WHERE time >= '2024-01-01'",
            &[],
        ),
        ("SELECT * FROM metrics WHERE time >= '2024-01-01'; SELECT 1", &[]),
        ("EXPLAIN SELECT * FROM metrics WHERE time >= '2024-01-01'", &[]),
    ];
    for (sql, want) in cases {
        let want: Vec<_> = want
            .iter()
            .map(|(t, c, f, to)| (t.to_string(), c.to_string(), *f, *to))
            .collect();
        assert_eq!(rows(&ranges_of(sql, &[], 0)), want, "{sql}");
    }
}

#[test]
fn shapes_are_recorded_without_values() {
    let c = classify(
        "SELECT * FROM metrics WHERE 'x' = 'x' AND time > $2::timestamp AND time <= DATE '2024-01-01'",
        &NoLookup,
    );
    let table = Some(TableName {
        schema: None,
        name: "metrics".into(),
    });
    assert_eq!(
        c.time_bounds,
        vec![
            TimeBound {
                table: table.clone(),
                column: "time".into(),
                op: BoundOp::Lower { inclusive: false },
                literal: 2,
                cast: TimeCast::Timestamp { precision: None },
            },
            TimeBound {
                table,
                column: "time".into(),
                op: BoundOp::Upper { inclusive: true },
                literal: 3,
                cast: TimeCast::Date,
            },
        ]
    );
}

#[test]
fn parameters_resolve_from_the_bind_values() {
    let sql = "SELECT * FROM metrics WHERE device = $1 AND time >= $2 AND time < $3::timestamptz";
    let got = rows(&ranges_of(
        sql,
        &[Some("2023-01-01"), Some("2024-01-01"), Some("2024-01-02")],
        0,
    ));
    assert_eq!(
        got,
        vec![
            (
                "metrics".into(),
                "device".into(),
                Some(1_672_531_200 * S),
                Some(1_672_531_200 * S + 1)
            ),
            ("metrics".into(), "time".into(), Some(JAN1), Some(JAN2)),
        ]
    );
    // NULL or binary values, missing values and `$0` leave the bound open.
    let got = rows(&ranges_of(sql, &[None, None, Some("2024-01-02")], 0));
    assert_eq!(
        got,
        vec![("metrics".into(), "time".into(), None, Some(JAN2))]
    );
    assert!(ranges_of(sql, &[], 0).is_empty());
    assert!(ranges_of("SELECT * FROM m WHERE time >= $0", &[Some("2024-01-01")], 0).is_empty());
    assert!(ranges_of(
        "SELECT * FROM m WHERE time >= $99999999999999999999999",
        &[Some("2024-01-01")],
        0
    )
    .is_empty());
}

#[test]
fn naive_values_take_the_session_offset() {
    let sql = "SELECT * FROM metrics WHERE time >= '2024-01-01' AND time < '2024-01-02 00:00Z' AND t2 = DATE '2024-01-01'";
    let got = rows(&ranges_of(sql, &[], 3600));
    assert_eq!(
        got,
        vec![
            (
                "metrics".into(),
                "t2".into(),
                Some(JAN1 - H),
                Some(JAN1 - H + 1)
            ),
            ("metrics".into(), "time".into(), Some(JAN1 - H), Some(JAN2)),
        ]
    );
    // Without a fixed session offset only values naming their zone are read.
    for offset in [NO_DEFAULT_OFFSET, 16 * 3600, -16 * 3600, i32::MAX] {
        assert_eq!(
            rows(&ranges_of(sql, &[], offset)),
            vec![("metrics".into(), "time".into(), None, Some(JAN2))]
        );
    }
}

#[test]
fn timestamp_input_forms() {
    let tz = TimeCast::Untyped;
    let cases: &[(&str, Option<i64>)] = &[
        ("2024-01-01", Some(JAN1)),
        ("  2024-1-1  ", Some(JAN1)),
        ("2024-01-01 00:00", Some(JAN1)),
        ("2024-01-01T01:02:03", Some(JAN1 + H + 2 * 60 * S + 3 * S)),
        ("2024-01-01t01:02:03.000004z", Some(JAN1 + H + 123 * S + 4)),
        ("2024-01-01 00:00:00.123456", Some(JAN1 + 123_456)),
        ("2024-01-01 00:00:00+01", Some(JAN1 - H)),
        ("2024-01-01 00:00:00 +01:30", Some(JAN1 - H - 30 * 60 * S)),
        ("2024-01-01 00:00:00-0130", Some(JAN1 + H + 30 * 60 * S)),
        ("2024-01-01 00:00:00+01:00:30", Some(JAN1 - H - 30 * S)),
        ("2024-01-01 00:00 GMT", Some(JAN1)),
        ("\t2024-01-01 00:00Z \n", Some(JAN1)),
        ("2024-01-01 00:00 utc ", Some(JAN1)),
        ("2024-01-01 23:59:60", Some(JAN2)),
        ("2024-02-29", Some(1_709_164_800 * S)),
        ("2000-03-01", Some(951_868_800 * S)),
        ("1900-03-01", Some(-2_203_891_200 * S)),
        ("1969-12-31", Some(-86_400 * S)),
        ("2100-12-31 23:59:59", Some(4_133_980_799 * S)),
        ("2023-02-29", None),
        ("1900-02-29", None),
        ("2024-00-01", None),
        ("2024-01-32", None),
        ("24-01-01", None),
        ("02024-01-01", None),
        ("0000-01-01", None),
        ("2024-01-01 25:00", None),
        ("2024-01-01 24:00:01", None),
        ("2024-01-01 12:60", None),
        ("2024-01-01 12:5", None),
        ("2024-01-01 1200", None),
        ("2024-01-01 00:00:00.", None),
        ("2024-01-01 00:00:00+16", None),
        ("2024-01-01 00:00:00+0160", None),
        ("2024-01-01 00:00:00+123", None),
        ("2024-01-01 00:00 BC", None),
        ("2024-01-01 00:00 America/New_York", None),
        ("2024-01-01+01", None),
        ("2024-01-01x", None),
        ("20240101", None),
        ("epoch", None),
        ("now", None),
        ("-infinity", None),
        ("", None),
        ("294276-01-01", None),
        ("294277-01-01", None),
        ("294247-01-11", None),
        ("294247-01-01", Some(9_223_371_244_800 * S)),
        ("294246-01-01", Some(9_223_339_708_800 * S)),
    ];
    for (input, want) in cases {
        assert_eq!(parse_timestamp(input, tz, 0), *want, "{input:?}");
    }
}

fn reference_micros(
    (y, mo, d): (i64, u32, u32),
    (h, mi, s, us): (u32, u32, u32, u32),
    off: i32,
) -> i64 {
    // Counts days one year and one month at a time: slow, obviously right.
    let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let mut days: i64 = 0;
    if y >= 1970 {
        for yy in 1970..y {
            days += if leap(yy) { 366 } else { 365 };
        }
    } else {
        for yy in y..1970 {
            days -= if leap(yy) { 366 } else { 365 };
        }
    }
    let month_days = [
        31,
        if leap(y) { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    days += month_days[..(mo - 1) as usize].iter().sum::<i64>() + d as i64 - 1;
    let secs = days * 86_400 + h as i64 * 3600 + mi as i64 * 60 + s as i64 - off as i64;
    secs * S + us as i64
}

fn timestamp_text() -> impl Strategy<Value = String> {
    (
        1950i64..2100,
        1u32..=12,
        1u32..=28,
        0u32..24,
        0u32..60,
        0u32..60,
        0u32..1_000_000,
        0u8..6,
    )
        .prop_map(|(y, mo, d, h, mi, s, us, form)| match form {
            0 => format!("{y:04}-{mo:02}-{d:02}"),
            1 => format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}"),
            2 => format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z"),
            3 => format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}+05:30"),
            4 => format!("{y:04}-{mo:02}-{d:02} {h}:{mi:02}:{s:02}-0800"),
            _ => "not a time".to_owned(),
        })
}

fn filler() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("'x'".to_owned()),
        Just("'it''s'".to_owned()),
        Just("E'a\\'b'".to_owned()),
        Just("$q$ '2030-01-01' $q$".to_owned()),
        Just("42".to_owned()),
        Just("1.5e3".to_owned()),
        Just("'ü日本'".to_owned()),
        Just("'2030-01-01'".to_owned()),
    ]
}

fn comment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(" ".to_owned()),
        Just(" /* '2030-01-01' */ ".to_owned()),
        Just(" -- it's\n ".to_owned()),
        Just("\n\t".to_owned()),
        Just(" /* a /* 'nested' */ b */ ".to_owned()),
    ]
}

/// A statement of a fixed shape (the `u8`s and column choices) with random values: values may
/// be constants or parameters (the fingerprint does not tell them apart).
fn build(
    shape: &[(u8, u8, u8)],
    values: &[(String, bool)],
    fillers: &[String],
    gap: &str,
) -> (String, Vec<String>) {
    let columns = ["time", "m.time", "created", "device"];
    let ops = [">=", ">", "<", "<=", "="];
    let mut params = Vec::new();
    let mut sql = format!(
        "SELECT {}, avg(value){gap}FROM metrics m WHERE",
        fillers.join(", ")
    );
    for (i, ((col, op, typing), (value, as_param))) in shape.iter().zip(values).enumerate() {
        let v = if *as_param {
            params.push(value.clone());
            format!("${}", params.len())
        } else {
            format!("'{value}'")
        };
        let v = match typing % 4 {
            0 => v,
            1 => format!("{v}::timestamptz"),
            2 => format!("{v}::timestamp"),
            _ => format!("CAST({v} AS timestamptz)"),
        };
        let and = if i == 0 { " " } else { " AND " };
        sql.push_str(&format!(
            "{and}{}{gap}{}{gap}{v}",
            columns[*col as usize % columns.len()],
            ops[*op as usize % ops.len()]
        ));
    }
    (sql, params)
}

proptest! {
    #[test]
    fn timestamps_match_a_slow_reference(
        y in 1i64..3000, mo in 1u32..=12, d in 1u32..=31, h in 0u32..24, mi in 0u32..60,
        s in 0u32..60, us in 0u32..1_000_000, off in -15i32 * 3600..15 * 3600, session in -12i32..12,
    ) {
        let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let dim = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        let d = d.min(dim[mo as usize - 1]);
        let sign = if off < 0 { '-' } else { '+' };
        let a = off.unsigned_abs();
        let text = format!(
            "{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}{sign}{:02}:{:02}:{:02}",
            a / 3600, a / 60 % 60, a % 60
        );
        prop_assert_eq!(
            parse_timestamp(&text, TimeCast::Untyped, session * 3600),
            Some(reference_micros((y, mo, d), (h, mi, s, us), off)),
            "{}", text
        );
        let naive = format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}");
        prop_assert_eq!(
            parse_timestamp(&naive, TimeCast::Timestamptz { precision: None }, session * 3600),
            Some(reference_micros((y, mo, d), (h, mi, s, us), session * 3600))
        );
        prop_assert_eq!(
            parse_timestamp(&text, TimeCast::Timestamp { precision: Some(6) }, session * 3600),
            Some(reference_micros((y, mo, d), (h, mi, s, us), session * 3600))
        );
    }

    #[test]
    fn cached_shapes_give_the_same_ranges_as_fresh_classification(
        shape in proptest::collection::vec((0u8..4, 0u8..5, 0u8..4), 1..5),
        first in proptest::collection::vec((timestamp_text(), any::<bool>()), 5),
        second in proptest::collection::vec((timestamp_text(), any::<bool>()), 5),
        fillers_a in proptest::collection::vec(filler(), 1..4),
        fillers_b in proptest::collection::vec(filler(), 4),
        gap_a in comment(),
        gap_b in comment(),
        offset in -14i32..14,
    ) {
        let fillers_b = &fillers_b[..fillers_a.len()];
        // Literal-or-parameter choices may differ between the two texts: same fingerprint.
        let (a, _) = build(&shape, &first, &fillers_a, &gap_a);
        let (b, params_b) = build(&shape, &second, fillers_b, &gap_b);
        prop_assert_eq!(fingerprint(a.as_bytes()), fingerprint(b.as_bytes()), "{} / {}", a, b);
        let cache = ClassCache::new(8);
        let cached_a = cache.classify(&a, &NoLookup);
        prop_assert!(!cached_a.time_bounds.is_empty(), "{}", a);
        let cached = cache.classify(&b, &NoLookup);
        prop_assert_eq!(cache.len(), 1);
        let params: Vec<Option<&str>> = params_b.iter().map(|p| Some(p.as_str())).collect();
        let from_cache = time_range(&b, &cached, &params, offset * 3600);
        let fresh = time_range(&b, &classify(&b, &NoLookup), &params, offset * 3600);
        prop_assert_eq!(&from_cache, &fresh, "{} after {}", b, a);
        for r in &fresh {
            if let (Some(f), Some(t)) = (r.from, r.to) {
                prop_assert!(f <= t, "{:?} from {}", r, b);
            }
        }
    }

    #[test]
    fn ranges_never_run_backwards(
        values in proptest::collection::vec((timestamp_text(), 0u8..5), 1..6),
    ) {
        let ops = [">=", ">", "<", "<=", "="];
        let clause: Vec<String> = values
            .iter()
            .map(|(v, op)| format!("time {} '{v}'", ops[*op as usize]))
            .collect();
        let sql = format!("SELECT * FROM metrics WHERE {}", clause.join(" AND "));
        for r in ranges_of(&sql, &[], 0) {
            if let (Some(f), Some(t)) = (r.from, r.to) {
                prop_assert!(f <= t, "{:?} from {}", r, sql);
            }
        }
    }

    #[test]
    fn time_range_never_panics_on_other_text(s in ".{0,120}", offset in any::<i32>()) {
        let class = classify(
            "SELECT * FROM m WHERE time >= '2024-01-01' AND time < $1 AND x = 'a'",
            &NoLookup,
        );
        let _ = time_range(&s, &class, &[Some(s.as_str())], offset);
        let _ = parse_timestamp(&s, TimeCast::Untyped, offset);
    }
}

#[test]
fn one_cached_shape_serves_many_texts() {
    let cache = ClassCache::new(16);
    let texts = [
        (
            "SELECT 'a', 7 FROM metrics WHERE device = 'x' AND time >= '2024-01-01' AND time < '2024-01-02'",
            vec![],
            (Some(JAN1), Some(JAN2)),
        ),
        (
            "SELECT E'it\\'s', 7e-1 FROM metrics WHERE device = $$y'$$ /* '1999-01-01' */ AND time >= '2024-01-01 12:00' AND time < '2024-01-01 13:00'",
            vec![],
            (Some(JAN1 + 12 * H), Some(JAN1 + 13 * H)),
        ),
        (
            "select 'ü',\n 8 from metrics where device = '2024-06-01' -- it's\n and time >= $1 and time < '2024-01-02'",
            vec![Some("2024-01-01 06:00")],
            (Some(JAN1 + 6 * H), Some(JAN2)),
        ),
        (
            "SELECT $1, $2 FROM metrics WHERE device = $3 AND time >= $4 AND time < $5",
            vec![Some("x"), Some("1"), Some("2024-01-01"), Some("2024-01-01"), Some("2024-01-01 00:30")],
            (Some(JAN1), Some(JAN1 + H / 2)),
        ),
    ];
    for (sql, params, (from, to)) in &texts {
        let class = cache.classify(sql, &NoLookup);
        let ranges = time_range(sql, &class, params, 0);
        let time: Vec<_> = ranges.iter().filter(|r| r.column == "time").collect();
        assert_eq!(time.len(), 1, "{sql}");
        assert_eq!((time[0].from, time[0].to), (*from, *to), "{sql}");
        assert_eq!(
            ranges,
            time_range(sql, &classify(sql, &NoLookup), params, 0),
            "{sql}"
        );
    }
    assert_eq!(cache.len(), 1);
}

#[test]
fn days_from_civil_matches_known_days() {
    use crate::timestamp::days_from_civil;
    assert_eq!(days_from_civil(1970, 1, 1), 0);
    assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    assert_eq!(days_from_civil(2024, 1, 1), 19_723);
    assert_eq!(days_from_civil(1969, 12, 31), -1);
    assert_eq!(days_from_civil(1, 1, 1), -719_162);
}

#[test]
fn casts_decide_how_zones_and_the_session_offset_apply() {
    let zoned = "2024-01-01 00:00+01";
    let naive = "2024-01-01";
    let tz = TimeCast::Timestamptz { precision: None };
    let ts = TimeCast::Timestamp { precision: None };
    let cases: &[(&str, TimeCast, i32, Option<i64>)] = &[
        (zoned, TimeCast::Untyped, 0, Some(JAN1 - H)),
        (zoned, tz, 7200, Some(JAN1 - H)),
        (zoned, ts, 7200, Some(JAN1 - 2 * H)),
        (zoned, TimeCast::Date, 0, None),
        (naive, TimeCast::Date, -3600, Some(JAN1 + H)),
        (naive, ts, 3600, Some(JAN1 - H)),
        (zoned, tz, NO_DEFAULT_OFFSET, Some(JAN1 - H)),
        (zoned, ts, NO_DEFAULT_OFFSET, None),
        (naive, TimeCast::Untyped, NO_DEFAULT_OFFSET, None),
        (naive, TimeCast::Date, NO_DEFAULT_OFFSET, None),
        (
            "2024-01-01 00:00:00.12",
            TimeCast::Timestamptz { precision: Some(2) },
            0,
            Some(JAN1 + 120_000),
        ),
        (
            "2024-01-01 00:00:00.123",
            TimeCast::Timestamp { precision: Some(2) },
            0,
            None,
        ),
        (
            "2024-01-01 00:00:00",
            TimeCast::Timestamp { precision: Some(0) },
            0,
            Some(JAN1),
        ),
    ];
    for (input, cast, offset, want) in cases {
        assert_eq!(
            parse_timestamp(input, *cast, *offset),
            *want,
            "{input} {cast:?} {offset}"
        );
    }
}
