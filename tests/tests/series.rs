//! The time-series API end to end: ingest as a JSON array, NDJSON and CSV (one transaction per
//! request, bad rows named by line); range, aggregate and latest reads equal to the same
//! questions asked of PostgreSQL directly over randomized data (date_bin on plain PostgreSQL,
//! time_bucket/first/last on TimescaleDB); and a broker killed with SIGKILL during ingest
//! leaves only whole, and all acknowledged, batches.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tidegate_tests::{
    first_value, free_port, fresh_dir, migrate, send_json, tidegate_bin, Api, ApiAuth, Broker,
    Postgres,
};

const POINTS: &str = "/v1/series/time_series_data/points";
const RANGE: &str = "/v1/series/time_series_data";
const AGGREGATE: &str = "/v1/series/time_series_data/aggregate";
const LATEST: &str = "/v1/series/time_series_data/latest";

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

/// A migrated PostgreSQL (plain, or with TimescaleDB) and a broker with HTTP in front of it.
async fn setup(pg: &Postgres) -> (Broker, Api) {
    migrate(pg).await;
    let (broker, addr) = Broker::start_http(pg, "").await;
    (broker, Api::app(addr))
}

/// POSTs `body` as `ctype` to the points endpoint.
async fn ingest(api: &Api, ctype: &str, body: String) -> (u16, Value) {
    send_json(api.post(POINTS).header("content-type", ctype).body(body)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_json_ndjson_and_csv_one_transaction_each() {
    let pg = Postgres::start();
    pg.sql(
        "postgres",
        "CREATE TABLE plain (time timestamptz, v float8)",
    );
    let (_broker, api) = setup(&pg).await;

    let array = json!([
        {"time": "2024-01-01T00:00:00Z", "series_id": 1, "value": 1.5, "metadata": {"src": "json"}},
        {"time": "2024-01-01T00:00:01Z", "series_id": 1, "value": -2},
        {"time": "2024-01-01T00:00:02+02:00", "series_id": 1, "value": null, "metadata": null},
    ]);
    let (s, v) = ingest(&api, "application/json", array.to_string()).await;
    assert_eq!((s, v), (200, json!({"inserted": 3})));

    let ndjson = "{\"time\":\"2024-01-01T00:00:00Z\",\"series_id\":2,\"value\":1}\n\
                  \n\
                  {\"time\":\"2024-01-01T00:00:01Z\",\"series_id\":2,\"value\":2,\"metadata\":{\"tab\":\"a\\tb\\\\\"}}\n\
                  {\"time\":\"2024-01-01T00:00:02Z\",\"series_id\":2,\"value\":3}\n\
                  {\"time\":\"2024-01-01T00:00:03Z\",\"series_id\":2,\"value\":4}";
    let (s, v) = ingest(&api, "application/x-ndjson", ndjson.into()).await;
    assert_eq!((s, v), (200, json!({"inserted": 4})));

    let csv = "series_id,time,value\n3,2024-01-01T00:00:00Z,7.25\n3,\"2024-01-01 00:00:01+00\",\n";
    let (s, v) = ingest(&api, "text/csv; charset=utf-8", csv.into()).await;
    assert_eq!((s, v), (200, json!({"inserted": 2})));

    assert_eq!(
        pg.sql(
            "postgres",
            "SELECT string_agg(series_id || ':' || count, ',' ORDER BY series_id) \
             FROM (SELECT series_id, count(*) FROM time_series_data GROUP BY 1) q"
        ),
        "1:3,2:4,3:2"
    );
    assert_eq!(
        pg.sql(
            "postgres",
            "SELECT string_agg(coalesce(value::text, 'NULL') || '/' || coalesce(metadata::text, '-'), \
             ' ' ORDER BY series_id, time) FROM time_series_data WHERE series_id IN (1, 3)"
        ),
        // 00:00:02+02 is the earliest of series 1.
        "NULL/- 1.5/{\"src\": \"json\"} -2/- 7.25/- NULL/-"
    );
    assert_eq!(
        pg.sql(
            "postgres",
            "SELECT metadata->>'tab' = E'a\\tb\\\\' FROM time_series_data WHERE value = 2 AND series_id = 2"
        ),
        "t"
    );
    assert_eq!(
        pg.sql(
            "postgres",
            "SELECT time = '2024-01-01 00:00:02+02' FROM time_series_data WHERE series_id = 1 AND value IS NULL"
        ),
        "t"
    );

    // A bad value on line 3: 422 naming it, and nothing from the request is written.
    let bad = "{\"time\":\"2024-02-01T00:00:00Z\",\"series_id\":9,\"value\":1}\n\
               {\"time\":\"2024-02-01T00:00:01Z\",\"series_id\":9,\"value\":2}\n\
               {\"time\":\"2024-02-01T00:00:02Z\",\"series_id\":9,\"value\":\"abc\"}\n\
               {\"time\":\"2024-02-01T00:00:03Z\",\"series_id\":9,\"value\":4}\n";
    let (s, v) = ingest(&api, "application/x-ndjson", bad.into()).await;
    assert_eq!(
        (s, code(&v), &v["error"]["line"]),
        (422, "22P02", &json!(3)),
        "{v}"
    );
    let csv_bad = "time,series_id,value\n2024-02-01T00:00:00Z,9,1\n2024-02-01T00:00:01Z,9,abc\n";
    let (s, v) = ingest(&api, "text/csv", csv_bad.into()).await;
    assert_eq!(
        (s, &v["error"]["line"]),
        (422, &json!(3)),
        "CSV lines count the header: {v}"
    );
    let array_bad = json!([
        {"time": "2024-02-01T00:00:00Z", "series_id": 9, "value": 1},
        {"time": "not a time", "series_id": 9, "value": 1},
    ]);
    let (s, v) = ingest(&api, "application/json", array_bad.to_string()).await;
    assert_eq!(
        (s, &v["error"]["line"]),
        (422, &json!(2)),
        "array elements: {v}"
    );
    let unknown = "{\"time\":\"2024-02-01T00:00:00Z\",\"series_id\":9}\n\
                   {\"time\":\"2024-02-01T00:00:01Z\",\"series_id\":9,\"bogus\":1}\n";
    let (s, v) = ingest(&api, "application/x-ndjson", unknown.into()).await;
    assert_eq!(
        (s, code(&v), &v["error"]["line"]),
        (422, "tidegate.invalid", &json!(2)),
        "{v}"
    );
    let (s, v) = ingest(&api, "application/x-ndjson", "{\"time\":\n".into()).await;
    assert_eq!((s, &v["error"]["line"]), (422, &json!(1)), "{v}");
    assert_eq!(
        pg.sql(
            "postgres",
            "SELECT count(*) FROM time_series_data WHERE series_id = 9"
        ),
        "0"
    );

    let (s, v) = ingest(&api, "text/plain", "x".into()).await;
    assert_eq!(
        (s, code(&v)),
        (415, "tidegate.unsupported_media_type"),
        "{v}"
    );
    let s = send_json(api.post("/v1/series/plain/points").json(&json!([])))
        .await
        .0;
    assert_eq!(
        s, 404,
        "a table that is not registered is not a series table"
    );
    assert_eq!(
        pg.sql("postgres", "SELECT count(*) FROM time_series_data"),
        "9"
    );
}

/// The seed for randomized data: `TIDEGATE_TEST_SEED`, or the clock (printed).
fn seed() -> u64 {
    let seed = std::env::var("TIDEGATE_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    println!("seed: {seed} (rerun with TIDEGATE_TEST_SEED={seed})");
    seed
}

/// Milliseconds since 2024-03-01T00:00:00Z as ISO-8601 (within March 2024).
fn iso(ms: u64) -> String {
    let s = ms / 1000;
    format!(
        "2024-03-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        1 + s / 86_400,
        s % 86_400 / 3600,
        s % 3600 / 60,
        s % 60,
        ms % 1000
    )
}

/// `per_series` points in each of series 1..=5 over three days, with distinct times within a
/// series, values that are multiples of 1/4 (some NULL) and some metadata; ingested as NDJSON,
/// one request per series.
async fn random_points(api: &Api, rng: &mut StdRng, per_series: usize) {
    for sid in 1..=5 {
        let mut times = BTreeSet::new();
        while times.len() < per_series {
            times.insert(rng.gen_range(0..3 * 86_400_000u64));
        }
        let mut body = String::new();
        for t in times {
            let value = if rng.gen_bool(0.02) {
                Value::Null
            } else {
                json!(f64::from(rng.gen_range(-4000i32..4000)) / 4.0)
            };
            let mut p = json!({"time": iso(t), "series_id": sid, "value": value});
            if rng.gen_bool(0.5) {
                p["metadata"] = json!({"k": rng.gen_range(0..3), "s": "x"});
            }
            body.push_str(&p.to_string());
            body.push('\n');
        }
        let (s, v) = ingest(api, "application/x-ndjson", body).await;
        assert_eq!((s, v), (200, json!({"inserted": per_series})));
    }
}

/// JSON values equal, floats within a relative 1e-9 (aggregation order may differ).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// Asserts the endpoint's rows equal PostgreSQL's, naming the first difference.
fn assert_rows(http: &Value, direct: &Value, what: &str, seed: u64) {
    let (h, d) = (
        http.as_array()
            .unwrap_or_else(|| panic!("{what}: no rows in {http}")),
        direct.as_array().expect("direct rows"),
    );
    for (i, (a, b)) in h.iter().zip(d).enumerate() {
        assert!(
            same(a, b),
            "{what} (seed {seed}): row {i}: HTTP {a} ≠ PostgreSQL {b}"
        );
    }
    assert_eq!(h.len(), d.len(), "{what} (seed {seed}): row counts");
}

/// Runs `sql` (one JSON text value) directly on PostgreSQL in UTC.
async fn direct(c: &tokio_postgres::Client, sql: &str) -> Value {
    let text = first_value(c, sql).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{sql}: {e}: {text}"))
}

/// The rows of a GET as JSON, asserting 200.
async fn rows(api: &Api, path: &str, query: &[(&str, &str)]) -> Value {
    let (s, v) = send_json(api.get(path).query(query)).await;
    assert_eq!(s, 200, "{path} {query:?}: {v}");
    v["rows"].clone()
}

/// The direct equivalent of an aggregate request: `bucket` is the bucketing expression,
/// `exprs` the aggregates; with `window`, they are window functions over each bucket.
fn direct_aggregate(bucket: &str, exprs: &[&str], window: bool, filter: &str) -> String {
    let names: Vec<String> = (0..exprs.len()).map(|i| format!("a{i}")).collect();
    let inner = if window {
        let cols: Vec<String> = exprs
            .iter()
            .zip(&names)
            .map(|(e, n)| format!("{e} OVER w AS {n}"))
            .collect();
        format!(
            "SELECT DISTINCT ON (b, series_id) b, series_id, {} FROM \
               (SELECT {bucket} AS b, series_id, time, value FROM time_series_data WHERE {filter}) s \
             WINDOW w AS (PARTITION BY b, series_id ORDER BY time \
                          ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)",
            cols.join(", ")
        )
    } else {
        let cols: Vec<String> = exprs
            .iter()
            .zip(&names)
            .map(|(e, n)| format!("{e} AS {n}"))
            .collect();
        format!(
            "SELECT {bucket} AS b, series_id, {} FROM time_series_data WHERE {filter} GROUP BY 1, 2",
            cols.join(", ")
        )
    };
    format!(
        "SELECT coalesce(json_agg(json_build_array(b, series_id, {}) ORDER BY b, series_id), '[]')::text \
         FROM ({inner}) q",
        names.join(", ")
    )
}

const FROM: &str = "2024-03-01T05:30:00Z";
const TO: &str = "2024-03-03T20:00:00Z";

fn time_filter(from: &str, to: &str) -> String {
    format!("time >= '{from}' AND time < '{to}'")
}

/// Aggregates with several intervals and aggregate sets, with and without a series filter,
/// against the same aggregation run directly; `bucket(interval)` is the direct bucketing.
async fn check_aggregates(
    api: &Api,
    c: &tokio_postgres::Client,
    bucket: &dyn Fn(&str) -> String,
    sets: &[(&str, &[&str], bool)],
    seed: u64,
) {
    for (interval, pg_interval) in [
        ("1m", "1 minute"),
        ("15m", "15 minutes"),
        ("1h", "1 hour"),
        ("1d", "1 day"),
    ] {
        for &(agg, exprs, window) in sets {
            for ids in [None, Some("2,4")] {
                let mut q = vec![
                    ("from", FROM),
                    ("to", TO),
                    ("interval", interval),
                    ("agg", agg),
                ];
                let mut filter = time_filter(FROM, TO);
                if let Some(ids) = ids {
                    q.push(("series_id", ids));
                    filter.push_str(&format!(" AND series_id IN ({ids})"));
                }
                let (s, v) = send_json(api.get(AGGREGATE).query(&q)).await;
                assert_eq!(s, 200, "{q:?}: {v}");
                let names: Vec<&str> = v["columns"]
                    .as_array()
                    .expect("columns")
                    .iter()
                    .filter_map(|c| c["name"].as_str())
                    .collect();
                let mut expected = vec!["bucket".to_owned(), "series_id".to_owned()];
                expected.extend(agg.split(',').map(|a| a.replace(':', "_")));
                assert_eq!(names, expected, "{q:?}");
                let want = direct(
                    c,
                    &direct_aggregate(&bucket(pg_interval), exprs, window, &filter),
                )
                .await;
                assert!(
                    want.as_array().is_some_and(|w| w.len() >= 2),
                    "{q:?}: expected rows"
                );
                assert_rows(&v["rows"], &want, &format!("aggregate {q:?}"), seed);
            }
        }
    }
}

const POINT: &str = "json_build_array(time, series_id, value, metadata)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_equal_direct_queries_over_random_data() {
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let pg = Postgres::start();
    let (_broker, api) = setup(&pg).await;
    random_points(&api, &mut rng, 1000).await;
    let c = pg.connect("postgres").await;
    c.batch_execute("SET TimeZone = 'UTC'; SET extra_float_digits = 1")
        .await
        .expect("session settings");

    let date_bin = |i: &str| format!("date_bin('{i}', time, '2000-01-03 00:00:00+00')");
    let sets: &[(&str, &[&str], bool)] = &[
        ("value:avg,value:max", &["avg(value)", "max(value)"], false),
        (
            "value:min,value:sum,value:count",
            &["min(value)", "sum(value)", "count(value)"],
            false,
        ),
        (
            "value:first,value:last",
            &["first_value(value)", "last_value(value)"],
            true,
        ),
        ("value:stddev", &["stddev(value)"], false),
    ];
    check_aggregates(&api, &c, &date_bin, sets, seed).await;

    // Range: all series or some, both orders, with and without a limit.
    let (from, to) = ("2024-03-01T12:00:00Z", "2024-03-02T12:00:00.5Z");
    // (query, extra filter, order, limit) of each request and its direct equivalent.
    type Case<'a> = (Vec<(&'a str, &'a str)>, &'a str, &'a str, &'a str);
    let cases: [Case; 5] = [
        (vec![("from", from), ("to", to)], "", "time, series_id", ""),
        (
            vec![
                ("from", from),
                ("to", to),
                ("series_id", "1,3"),
                ("limit", "100"),
            ],
            "AND series_id IN (1, 3)",
            "time, series_id",
            "LIMIT 100",
        ),
        (
            vec![
                ("from", from),
                ("to", to),
                ("order", "desc"),
                ("limit", "250"),
            ],
            "",
            "time DESC, series_id",
            "LIMIT 250",
        ),
        (
            vec![("series_id", "5"), ("order", "asc")],
            "AND series_id = 5",
            "time, series_id",
            "",
        ),
        (
            vec![("order", "desc"), ("limit", "7")],
            "",
            "time DESC, series_id",
            "LIMIT 7",
        ),
    ];
    for (q, filter, order, limit) in cases {
        let window = if q.iter().any(|(k, _)| *k == "from") {
            time_filter(from, to)
        } else {
            "true".into()
        };
        let sql = format!(
            "SELECT coalesce(json_agg({POINT} ORDER BY {order}), '[]')::text FROM \
             (SELECT * FROM time_series_data WHERE {window} {filter} ORDER BY {order} {limit}) q"
        );
        let want = direct(&c, &sql).await;
        let got = rows(&api, RANGE, &q).await;
        assert!(!got.as_array().is_some_and(Vec::is_empty), "{q:?}: no rows");
        assert_rows(&got, &want, &format!("range {q:?}"), seed);
    }

    check_latest(&api, &c, seed).await;

    // fill=true: every (bucket, series) pair, NULL where a bucket is empty.
    let (from, to) = ("2024-03-02T00:00:00Z", "2024-03-02T02:00:00Z");
    let base = [
        ("from", from),
        ("to", to),
        ("interval", "1m"),
        ("agg", "value:avg,value:count"),
    ];
    let sparse = rows(&api, AGGREGATE, &base).await;
    let mut filled_q = base.to_vec();
    filled_q.push(("fill", "true"));
    let filled = rows(&api, AGGREGATE, &filled_q).await;
    let by_key: HashMap<(String, i64), &Value> = sparse
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                (
                    r[0].as_str().unwrap_or("").to_owned(),
                    r[1].as_i64().unwrap_or(0),
                ),
                r,
            )
        })
        .collect();
    let series: BTreeSet<i64> = by_key.keys().map(|k| k.1).collect();
    assert!(
        series.len() >= 2,
        "seed {seed}: too little data in the fill window"
    );
    let mut want = Vec::new();
    for m in 0..120 {
        let bucket = format!("2024-03-02T{:02}:{:02}:00+00:00", m / 60, m % 60);
        for &sid in &series {
            want.push(match by_key.get(&(bucket.clone(), sid)) {
                Some(r) => (*r).clone(),
                None => json!([bucket, sid, null, null]),
            });
        }
    }
    assert!(
        want.len() > by_key.len(),
        "seed {seed}: some buckets are empty"
    );
    assert_rows(&filled, &Value::from(want), "fill=true", seed);
}

/// Latest, as the seed's get_latest: without series ids the newest `limit` points over all
/// series; with ids the newest `limit` of each, by series then time descending — equal to the
/// direct SQL.
async fn check_latest(api: &Api, c: &tokio_postgres::Client, seed: u64) {
    for (limit, ids) in [
        ("1", None),
        ("3", None),
        ("3", Some("4,2,99")),
        ("1", Some("5")),
    ] {
        let mut q = vec![("limit", limit)];
        let sql = match ids {
            Some(ids) => {
                q.push(("series_id", ids));
                format!(
                    "SELECT coalesce(json_agg({POINT} ORDER BY series_id, time DESC), '[]')::text FROM \
                     (SELECT *, row_number() OVER (PARTITION BY series_id ORDER BY time DESC) AS rn \
                      FROM time_series_data) q WHERE rn <= {limit} AND series_id IN ({ids})"
                )
            }
            None => format!(
                "SELECT coalesce(json_agg({POINT} ORDER BY time DESC, series_id), '[]')::text FROM \
                 (SELECT * FROM time_series_data ORDER BY time DESC, series_id LIMIT {limit}) q"
            ),
        };
        let want = direct(c, &sql).await;
        assert_rows(
            &rows(api, LATEST, &q).await,
            &want,
            &format!("latest {q:?}"),
            seed,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timescaledb_aggregates_equal_time_bucket_first_and_last() {
    if !tidegate_tests::timescaledb_installed() {
        println!("skipped: TimescaleDB not installed");
        return;
    }
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let pg = Postgres::start_timescale().expect("TimescaleDB");
    let (_broker, api) = setup(&pg).await;
    assert_eq!(
        pg.sql(
            "postgres",
            "SELECT count(*) FROM timescaledb_information.hypertables \
             WHERE hypertable_schema = 'public' AND hypertable_name = 'time_series_data'"
        ),
        "1"
    );
    random_points(&api, &mut rng, 600).await;
    assert!(
        pg.sql(
            "postgres",
            "SELECT count(*) FROM show_chunks('time_series_data')"
        )
        .parse::<u32>()
        .is_ok_and(|n| n >= 3),
        "the points span several chunks"
    );
    let c = pg.connect("postgres").await;
    c.batch_execute("SET TimeZone = 'UTC'; SET extra_float_digits = 1")
        .await
        .expect("session settings");
    let time_bucket = |i: &str| format!("time_bucket('{i}', time)");
    let sets: &[(&str, &[&str], bool)] = &[
        (
            "value:avg,value:max,value:count",
            &["avg(value)", "max(value)", "count(value)"],
            false,
        ),
        (
            "value:first,value:last",
            &["first(value, time)", "last(value, time)"],
            false,
        ),
    ];
    check_aggregates(&api, &c, &time_bucket, sets, seed).await;
    check_latest(&api, &c, seed).await;
}

/// A `tidegate serve` process, SIGKILLed (and reaped) when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const BATCH: usize = 2000;

fn batch_body(n: u64) -> String {
    let mut body = String::with_capacity(BATCH * 110);
    for i in 0..BATCH as u64 {
        let p = json!({
            "time": iso((n * BATCH as u64 + i) * 1000 % (28 * 86_400_000)),
            "series_id": n % 7,
            "value": i,
            "metadata": {"batch": n},
        });
        body.push_str(&p.to_string());
        body.push('\n');
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_ingest_leaves_only_whole_batches() {
    let pg = Postgres::start();
    migrate(&pg).await;
    let dir = fresh_dir().expect("dir");
    let http = free_port();
    let token = "sigkill-test-token-0123456789";
    let config = dir.join("tidegate.toml");
    std::fs::write(
        &config,
        format!(
            "[listen]\nsql = \"127.0.0.1:{}\"\nhttp = \"127.0.0.1:{http}\"\n\
             [upstream.primary]\nhost = \"127.0.0.1\"\nport = {}\nuser = \"postgres\"\n\
             database = \"postgres\"\n[[users]]\nname = \"app\"\npassword = \"app\"\n\
             [[http.tokens]]\nuser = \"app\"\ntoken = \"{token}\"\n",
            free_port(),
            pg.port
        ),
    )
    .expect("write config");
    let log = std::fs::File::create(dir.join("tidegate.log")).expect("log file");
    let mut child = Killed(
        std::process::Command::new(tidegate_bin())
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start tidegate serve"),
    );
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], http).into();
    let api = Api::new(addr, ApiAuth::Bearer(token.into()));
    let started = Instant::now();
    loop {
        if let Ok(r) = api.get("/healthz").send().await {
            if r.status() == 200 {
                break;
            }
        }
        let exited = child.0.try_wait().expect("try_wait");
        let log = std::fs::read_to_string(dir.join("tidegate.log")).unwrap_or_default();
        assert!(exited.is_none(), "tidegate serve exited: {exited:?}\n{log}");
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no /healthz:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let next = Arc::new(AtomicU64::new(0));
    let inflight = Arc::new(AtomicUsize::new(0));
    let acked = Arc::new(Mutex::new(Vec::<u64>::new()));
    let killed_at = Arc::new(Mutex::new(None::<Instant>));
    let cut_off = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..2 {
        let (api, next, inflight) = (api.clone(), next.clone(), inflight.clone());
        let (acked, killed_at, cut_off) = (acked.clone(), killed_at.clone(), cut_off.clone());
        clients.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::SeqCst);
                let body = batch_body(n);
                let sent = Instant::now();
                inflight.fetch_add(1, Ordering::SeqCst);
                let r = api
                    .post(POINTS)
                    .header("content-type", "application/x-ndjson")
                    .body(body)
                    .send()
                    .await;
                let reply = match r {
                    Ok(r) => (r.status().as_u16(), r.json::<Value>().await.ok()),
                    Err(_) => (0, None),
                };
                inflight.fetch_sub(1, Ordering::SeqCst);
                match reply {
                    (200, Some(v)) => {
                        assert_eq!(v, json!({"inserted": BATCH}));
                        acked.lock().expect("acked").push(n);
                    }
                    (0, _) | (_, None) => {
                        let k = *killed_at.lock().expect("killed_at");
                        if k.is_some_and(|k| sent < k) {
                            cut_off.fetch_add(1, Ordering::SeqCst);
                        }
                        assert!(k.is_some(), "batch {n} failed before the kill");
                        return;
                    }
                    (s, v) => panic!("batch {n}: {s} {v:?}"),
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while acked.lock().expect("acked").len() < 10 || inflight.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "10 batches were not acknowledged in 120 s"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    *killed_at.lock().expect("killed_at") = Some(Instant::now());
    child.0.kill().expect("SIGKILL");
    let _ = child.0.wait();
    for c in clients {
        c.await.expect("client task");
    }
    assert!(
        cut_off.load(Ordering::SeqCst) >= 1,
        "no request was in flight at the kill"
    );

    let acked = acked.lock().expect("acked").clone();
    let present = pg.sql(
        "postgres",
        "SELECT coalesce(string_agg(b || ':' || n, ',' ORDER BY b), '') FROM \
         (SELECT (metadata->>'batch')::int AS b, count(*) AS n FROM time_series_data GROUP BY 1) q",
    );
    let present: HashMap<u64, usize> = present
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|p| {
            let (b, n) = p.split_once(':').expect("b:n");
            (b.parse().expect("batch"), n.parse().expect("count"))
        })
        .collect();
    for (b, n) in &present {
        assert_eq!(*n, BATCH, "batch {b} is partial: {present:?}");
    }
    for b in &acked {
        assert_eq!(
            present.get(b),
            Some(&BATCH),
            "acknowledged batch {b} is missing"
        );
    }
    println!(
        "{} batches acknowledged, {} present",
        acked.len(),
        present.len()
    );
}

/// The seed's `get_latest` under the example config's optimizer guard (`unbounded =
/// "reject"` on `public.time_series_data`): `ORDER BY time DESC LIMIT n` is a bounded read —
/// TimescaleDB's ordered append executes the newest chunks only (the plan shows it) — so
/// `latest` answers, with and without `series_id`, equal to the direct SQL, while an unbounded
/// read of the hypertable is still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_passes_the_unbounded_scan_guard_as_a_bounded_read() {
    let Some(pg) = Postgres::start_timescale() else {
        return;
    };
    migrate(&pg).await;
    pg.sql(
        "postgres",
        "INSERT INTO time_series_data (time, series_id, value) \
         SELECT t, s, s * 1000 + extract(epoch FROM t)::int8 % 1000 \
         FROM generate_series(now() - interval '10 days', now(), interval '10 minutes') t, \
              generate_series(1, 20) s; \
         ANALYZE time_series_data",
    );
    let dir = tidegate_tests::plugin_dir_with(&["optimizer.wasm"]);
    let extra = format!(
        r#"
[plugins]
dir = "{}"
[[plugins.chain]]
name = "optimizer"
file = "optimizer.wasm"
kind = "optimizer"
[plugins.chain.config]
hypertables = ["public.time_series_data"]
time_column = "time"
unbounded = "reject"
"#,
        dir.display()
    );
    let (_broker, addr) = Broker::start_http(&pg, &extra).await;
    let api = Api::app(addr);
    let c = pg.connect("postgres").await;
    c.batch_execute("SET TimeZone = 'UTC'; SET extra_float_digits = 1")
        .await
        .expect("session settings");
    for (q, direct_sql) in [
        (
            vec![("series_id", "7"), ("limit", "1")],
            "SELECT * FROM time_series_data WHERE series_id = 7 ORDER BY time DESC LIMIT 1",
        ),
        (
            vec![("limit", "1")],
            "SELECT * FROM time_series_data ORDER BY time DESC, series_id LIMIT 1",
        ),
        (
            vec![("limit", "30")],
            "SELECT * FROM time_series_data ORDER BY time DESC, series_id LIMIT 30",
        ),
    ] {
        let want = direct(
            &c,
            &format!(
                "SELECT coalesce(json_agg({POINT} ORDER BY time DESC, series_id), '[]')::text \
                 FROM ({direct_sql}) q"
            ),
        )
        .await;
        assert_rows(
            &rows(&api, LATEST, &q).await,
            &want,
            &format!("latest {q:?}"),
            0,
        );
    }
    // The guard is on: an unbounded read is refused with 54000.
    let (status, v) = api
        .sql("SELECT avg(value) FROM time_series_data", json!([]))
        .await;
    assert_eq!(v["error"]["code"], "54000", "{status}: {v}");
    // The plan of latest without series_id: ordered append, newest chunks first, the rest
    // never executed.
    let plan = pg.sql(
        "postgres",
        "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) \
         SELECT * FROM time_series_data p ORDER BY p.time DESC, p.series_id LIMIT 1",
    );
    println!("{plan}");
    assert!(plan.contains("Custom Scan (ChunkAppend)"), "{plan}");
    assert!(plan.contains("Order: p.\"time\" DESC"), "{plan}");
    let never = plan.matches("(never executed)").count();
    let chunks: usize = pg
        .sql(
            "postgres",
            "SELECT count(*) FROM show_chunks('time_series_data')",
        )
        .parse()
        .expect("chunks");
    assert!(chunks >= 40, "{chunks} chunks");
    assert!(
        never >= chunks - 8,
        "{never} of {chunks} chunks never executed:\n{plan}"
    );
}
