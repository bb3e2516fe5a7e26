//! The HTTP/JSON endpoint end to end, against real PostgreSQL: typed JSON values and bound
//! parameters, read-only GET, NDJSON and CSV streaming (an error mid-stream included),
//! authentication, error statuses and limits (body, reply, request timeout, concurrency),
//! slowloris (reliability scenario 26, HTTP part), health and readiness, the OpenAPI document,
//! and the table repository with hostile table names.

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tidegate_tests::{send_json, send_text, wait_for, Api, ApiAuth, Broker, Postgres};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `{"error": {"code": …}}`'s code.
fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

/// A broker with the HTTP endpoint in front of `pg`, and an `app`/`app` client of it.
async fn start(pg: &Postgres, extra: &str) -> (Broker, Api) {
    let (broker, addr) = Broker::start_http(pg, extra).await;
    (broker, Api::app(addr))
}

/// `SELECT 1` answers 200.
async fn serves(api: &Api) {
    let (status, v) = api.sql("SELECT 1 AS one", json!([])).await;
    assert_eq!((status, &v["rows"]), (200, &json!([[1]])), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_are_typed_json_and_params_bind() {
    let pg = Postgres::start();
    pg.sql(
        "postgres",
        r#"CREATE TABLE typed (
             i2 int2, i4 int4, i8 int8, f8 float8, f8nan float8, num numeric, b bool, t text,
             vc varchar(10), tstz timestamptz, ts timestamp, d date, tm time, iv interval,
             j json, jb jsonb, ia int4[], ta text[], ta2 text[], by bytea, u uuid, n int4);
           INSERT INTO typed VALUES (-7, 42, 9007199254740993, 2.5, 'NaN', 1.10, true,
             'héllo "q" \ ,', 'v', '2024-01-02 03:04:05+00', '2024-01-02 03:04:05.5',
             '2024-01-02', '03:04:05', '1 day 2 hours', '{"a": [1, 2]}', '{"b": null}',
             '{1,2,NULL}', '{a,"b c"}', '{{a,b},{c,NULL}}', '\x0001ff',
             'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', NULL)"#,
    );
    let (_broker, api) = start(&pg, "").await;

    let (status, v) = api.sql("SELECT * FROM typed", json!([])).await;
    assert_eq!(status, 200, "{v}");
    let expected = [
        ("i2", "int2", json!(-7)),
        ("i4", "int4", json!(42)),
        ("i8", "int8", json!(9_007_199_254_740_993_i64)),
        ("f8", "float8", json!(2.5)),
        ("f8nan", "float8", json!("NaN")),
        ("num", "numeric", json!("1.10")),
        ("b", "bool", json!(true)),
        ("t", "text", json!("héllo \"q\" \\ ,")),
        ("vc", "varchar", json!("v")),
        ("tstz", "timestamptz", json!("2024-01-02T03:04:05+00:00")),
        ("ts", "timestamp", json!("2024-01-02T03:04:05.5")),
        ("d", "date", json!("2024-01-02")),
        ("tm", "time", json!("03:04:05")),
        ("iv", "interval", json!("P1DT2H")),
        ("j", "json", json!({"a": [1, 2]})),
        ("jb", "jsonb", json!({"b": null})),
        ("ia", "int4[]", json!([1, 2, null])),
        ("ta", "text[]", json!(["a", "b c"])),
        ("ta2", "text[]", json!([["a", "b"], ["c", null]])),
        ("by", "bytea", json!("AAH/")),
        ("u", "uuid", json!("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")),
        ("n", "int4", Value::Null),
    ];
    let cols = v["columns"].as_array().expect("columns");
    let row = v["rows"][0].as_array().expect("one row");
    assert_eq!(
        (cols.len(), row.len()),
        (expected.len(), expected.len()),
        "{v}"
    );
    for (i, (name, ty, value)) in expected.iter().enumerate() {
        assert_eq!(cols[i]["name"], *name, "{v}");
        assert_eq!(cols[i]["type"], *ty, "column {name}");
        assert_eq!(row[i], *value, "column {name}");
    }
    assert_eq!(cols[1]["type_oid"], 23);
    assert_eq!(cols[14]["type_oid"], 114);
    assert_eq!(
        (&v["command"], &v["row_count"]),
        (&json!("SELECT"), &json!(1))
    );
    assert_eq!(v["rows"].as_array().map(Vec::len), Some(1));

    // Parameters: numbers, strings, NULL, arrays and objects, as text PostgreSQL types.
    let (status, v) = api
        .sql(
            "SELECT $1::int + 1 AS n, $2::text || '!' AS s, $3::text IS NULL AS isnull, \
             $4::int[] AS arr, $5::jsonb -> 'k' AS k",
            json!([41, "hi", null, [1, 2], {"k": [true]}]),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["rows"], json!([[42, "hi!", true, [1, 2], [true]]]));

    // A command: no columns, its tag and count.
    let (status, v) = api
        .sql(
            "INSERT INTO typed (i4, t) VALUES ($1, $2), ($3, $4)",
            json!([7, "x", 8, null]),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v,
        json!({"columns": [], "rows": [], "command": "INSERT", "row_count": 2})
    );
    assert_eq!(
        pg.sql(
            "postgres",
            "SELECT string_agg(coalesce(t, 'NULL'), ',' ORDER BY i4) FROM typed WHERE i4 IN (7, 8)"
        ),
        "x,NULL"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_runs_only_read_only_statements() {
    let pg = Postgres::start();
    pg.sql(
        "postgres",
        "CREATE TABLE g (n int); INSERT INTO g VALUES (1), (2), (3)",
    );
    let (_broker, api) = start(&pg, "").await;

    let (status, v) = send_json(api.get("/v1/sql").query(&[
        ("sql", "SELECT n FROM g WHERE n > $1 ORDER BY n"),
        ("params", "[1]"),
    ]))
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["rows"], json!([[2], [3]]));
    assert_eq!(v["columns"][0]["name"], "n");

    for sql in [
        "INSERT INTO g VALUES (99)",
        "WITH d AS (DELETE FROM g RETURNING n) SELECT n FROM d",
        "SELECT n FROM g FOR UPDATE",
        "SELECT 1; DELETE FROM g",
    ] {
        let (status, v) = send_json(api.get("/v1/sql").query(&[("sql", sql)])).await;
        assert_eq!((status, code(&v)), (405, "25006"), "{sql}: {v}");
    }
    assert_eq!(
        pg.sql(
            "postgres",
            "SELECT string_agg(n::text, ',' ORDER BY n) FROM g"
        ),
        "1,2,3"
    );
    // Malformed params.
    let (status, v) = send_json(
        api.get("/v1/sql")
            .query(&[("sql", "SELECT 1"), ("params", "[1")]),
    )
    .await;
    assert_eq!(status, 400, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ndjson_and_csv_stream_and_errors_mid_stream_are_visible() {
    let pg = Postgres::start();
    let (_broker, api) = start(&pg, "").await;
    let stream = |accept: &'static str, sql: &str| {
        api.post("/v1/sql")
            .header("accept", accept)
            .json(&json!({ "sql": sql }))
    };

    // NDJSON: columns, one array per row, the outcome.
    let r = stream(
        "application/x-ndjson",
        "SELECT x FROM generate_series(1, 20000) x",
    )
    .send()
    .await
    .expect("request");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    let text = r.text().await.expect("body");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 20_002);
    let first: Value = serde_json::from_str(lines[0]).expect("json");
    assert_eq!(
        first,
        json!({"columns": [{"name": "x", "type": "int4", "type_oid": 23}]})
    );
    for (i, l) in lines[1..=20_000].iter().enumerate() {
        assert_eq!(*l, format!("[{}]", i + 1));
    }
    let last: Value = serde_json::from_str(lines[20_001]).expect("json");
    assert_eq!(last, json!({"command": "SELECT", "row_count": 20000}));

    // CSV: a header, RFC 4180 quoting, NULL empty and '' quoted.
    let r = stream(
        "text/csv",
        "SELECT x, CASE WHEN x = 2 THEN E'a,b\"c\\nd' WHEN x = 3 THEN NULL WHEN x = 4 THEN '' \
         ELSE 'v' || x END AS s FROM generate_series(1, 20000) x",
    )
    .send()
    .await
    .expect("request");
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .is_ok_and(|c| c.starts_with("text/csv")));
    let text = r.text().await.expect("body");
    assert!(
        text.starts_with("x,s\r\n1,v1\r\n2,\"a,b\"\"c\nd\"\r\n3,\r\n4,\"\"\r\n5,v5\r\n"),
        "{:?}",
        &text[..80.min(text.len())]
    );
    assert!(text.ends_with("\r\n19999,v19999\r\n20000,v20000\r\n"));
    assert_eq!(text.matches("\r\n").count(), 20_001);

    // An error after rows went out: the status was already sent (200, at RowDescription), so
    // the NDJSON stream ends with an error line and no outcome line.
    let sql = "SELECT 1/(x-15000) AS q FROM generate_series(1, 20000) x";
    let r = stream("application/x-ndjson", sql)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let text = r.text().await.expect("body");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1 + 14_999 + 1, "{:?}", lines.last());
    let last: Value = serde_json::from_str(lines[lines.len() - 1]).expect("json");
    assert_eq!(code(&last), "22012", "{last}");
    assert!(
        !text.contains("\"command\""),
        "no outcome line after an error"
    );
    // CSV has no error line: the transfer is broken instead of silently short.
    let r = stream("text/csv", sql).send().await.expect("request");
    assert_eq!(r.status(), 200);
    assert!(
        r.bytes().await.is_err(),
        "a CSV stream that failed must not end cleanly"
    );

    // An error before the first row has its own status.
    let r = stream("application/x-ndjson", "SELECT * FROM no_such_table")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.expect("json error");
    assert_eq!(code(&v), "42P01");
    serves(&api).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_by_basic_and_bearer() {
    let pg = Postgres::start();
    let hashed = "hashed-token-0123456789";
    let digest = pg.sql(
        "postgres",
        &format!("SELECT encode(sha256('{hashed}'::bytea), 'hex')"),
    );
    let extra = format!(
        "[[http.tokens]]\nuser = \"app\"\ntoken = \"plain-token-0123456789\"\n\
         [[http.tokens]]\nuser = \"app\"\nsha256 = \"{digest}\"\n"
    );
    let (broker, addr) = Broker::start_http(&pg, &extra).await;
    let with = |auth: ApiAuth| Api::new(addr, auth);
    let basic = |u: &str, p: &str| with(ApiAuth::Basic(u.into(), p.into()));
    let bearer = |t: &str| with(ApiAuth::Bearer(t.into()));

    let r = with(ApiAuth::None)
        .post("/v1/sql")
        .json(&json!({"sql": "SELECT 1"}))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    let v: Value = r.json().await.expect("json");
    assert_eq!(code(&v), "28P01");

    let failed = |api: Api| async move {
        let r = api
            .post("/v1/sql")
            .json(&json!({"sql": "SELECT 1"}))
            .send()
            .await
            .expect("request");
        let header = r.headers().get("www-authenticate").cloned();
        (r.status().as_u16(), header, r.text().await.expect("body"))
    };
    let wrong_password = failed(basic("app", "wrong")).await;
    let unknown_user = failed(basic("nobody", "app")).await;
    assert_eq!(wrong_password.0, 401);
    assert!(wrong_password.1.is_some());
    assert_eq!(
        wrong_password, unknown_user,
        "an unknown user is indistinguishable from a wrong password"
    );
    let wrong_token = failed(bearer("plain-token-0123456780")).await;
    assert_eq!(wrong_token.0, 401);
    assert_eq!(failed(with(ApiAuth::Bearer(String::new()))).await.0, 401);

    for ok in [
        basic("app", "app"),
        basic("app", "app"), // remembered
        bearer("plain-token-0123456789"),
        bearer(hashed),
    ] {
        serves(&ok).await;
    }
    // A wrong password after a remembered right one still fails.
    assert_eq!(failed(basic("app", "app2")).await.0, 401);
    drop(broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_errors_map_to_statuses() {
    let pg = Postgres::start();
    pg.sql(
        "postgres",
        "CREATE ROLE limited LOGIN; CREATE TABLE u (k int PRIMARY KEY); INSERT INTO u VALUES (1)",
    );
    let extra = "[[users]]\nname = \"limited\"\npassword = \"limitedpw\"\nrole = \"limited\"\n";
    let (_broker, addr) = Broker::start_http(&pg, extra).await;
    let api = Api::app(addr);

    for (sql, status, sqlstate) in [
        ("SELEC 1", 400, "42601"),
        ("SELECT * FROM nope", 404, "42P01"),
        ("INSERT INTO u VALUES (1)", 409, "23505"),
        ("SELECT 'abc'::int", 422, "22P02"),
        ("INSERT INTO u VALUES (NULL)", 422, "23502"),
    ] {
        let (s, v) = api.sql(sql, json!([])).await;
        assert_eq!((s, code(&v)), (status, sqlstate), "{sql}: {v}");
        assert!(v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    let limited = Api::new(addr, ApiAuth::Basic("limited".into(), "limitedpw".into()));
    let (s, v) = limited.sql("SELECT * FROM u", json!([])).await;
    assert_eq!((s, code(&v)), (403, "42501"), "{v}");

    // X-TideGate-Database picks the database.
    tidegate_tests::create_db(&pg, "other");
    pg.sql(
        "other",
        "CREATE TABLE only_here (x int); INSERT INTO only_here VALUES (5)",
    );
    let in_db = |db: &str| {
        api.post("/v1/sql")
            .header("x-tidegate-database", db)
            .json(&json!({"sql": "SELECT x FROM only_here"}))
    };
    let (s, v) = send_json(in_db("other")).await;
    assert_eq!((s, &v["rows"]), (200, &json!([[5]])), "{v}");
    let (s, v) = send_json(in_db("no_such_db")).await;
    assert_eq!((s, code(&v)), (404, "3D000"), "{v}");
    let (s, v) = send_json(in_db(&"d".repeat(80))).await;
    assert_eq!(s, 400, "{v}");

    // Malformed requests.
    let malformed = [
        ("{\"sql\": ", "truncated JSON"),
        ("{\"sql\": \"SELECT 1\", \"bogus\": 1}", "unknown field"),
        ("[1]", "not an object"),
    ];
    for (body, what) in malformed {
        let (s, v) = send_json(
            api.post("/v1/sql")
                .header("content-type", "application/json")
                .body(body),
        )
        .await;
        assert_eq!((s, code(&v)), (400, "tidegate.bad_request"), "{what}: {v}");
    }
    let (s, v) = send_json(api.get("/v1/nope")).await;
    assert_eq!((s, code(&v)), (404, "tidegate.not_found"), "{v}");
    let (s, v) = send_json(api.request(reqwest::Method::DELETE, "/v1/sql")).await;
    assert_eq!(s, 405, "{v}");
    assert!(v["error"]["code"].is_string(), "{v}");
    serves(&api).await;
}

/// Bodies over `http.max_body_bytes` (declared or chunked) and JSON replies over
/// `http.max_response_bytes` are 413; the same reply streamed as NDJSON is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_and_reply_size_limits() {
    let pg = Postgres::start();
    let (_broker, api) = start(
        &pg,
        "[http]\nmax_body_bytes = 1024\nmax_response_bytes = 10000\n",
    )
    .await;
    let long = format!("SELECT '{}' AS s", "x".repeat(2000));
    let (s, v) = api.sql(&long, json!([])).await;
    assert_eq!((s, code(&v)), (413, "54000"), "declared length: {v}");
    // The unread rest of a refused body is still on the connection: the reply closes it, so
    // the client does not send its next request there.
    let r = api
        .post("/v1/sql")
        .header("content-type", "application/json")
        .body(json!({ "sql": long }).to_string())
        .send()
        .await
        .expect("HTTP request");
    assert_eq!(r.status().as_u16(), 413);
    assert_eq!(
        r.headers().get("connection").and_then(|v| v.to_str().ok()),
        Some("close")
    );
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..4)
        .map(|i| {
            Ok(if i == 0 {
                b"{\"sql\": \"SELECT '".to_vec()
            } else {
                vec![b'x'; 600]
            })
        })
        .collect();
    let (s, v) = send_json(
        api.post("/v1/sql")
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                chunks,
            ))),
    )
    .await;
    assert_eq!((s, code(&v)), (413, "54000"), "chunked body: {v}");
    let fits = format!("SELECT '{}' AS s", "x".repeat(900));
    assert_eq!(api.sql(&fits, json!([])).await.0, 200);

    let big = "SELECT x FROM generate_series(1, 5000) x";
    let (s, v) = api.sql(big, json!([])).await;
    assert_eq!((s, code(&v)), (413, "54000"), "{v}");
    let (s, text) = send_text(
        api.post("/v1/sql")
            .header("accept", "application/x-ndjson")
            .json(&json!({ "sql": big })),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(text.lines().count(), 5002);
    assert_eq!(text.lines().nth(5000), Some("[5000]"));
    serves(&api).await;
}

/// A request over `http.request_timeout` is answered 408, and its statement is cancelled on
/// the server rather than left running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_timeout_answers_408_and_cancels_the_statement() {
    let pg = Postgres::start();
    let (_broker, api) = start(&pg, "[http]\nrequest_timeout = \"1s\"\n").await;
    let started = Instant::now();
    let (s, v) = api.sql("SELECT pg_sleep(10)", json!([])).await;
    assert_eq!((s, code(&v)), (408, "57014"), "{v}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let running = "SELECT count(*) FROM pg_stat_activity \
                   WHERE query LIKE 'SELECT pg_sleep(10)%' AND state = 'active'";
    assert!(
        wait_for(Duration::from_secs(5), || pg.sql("postgres", running)
            == "0")
        .await,
        "pg_sleep(10) still runs on the primary 5 s after its request timed out: not cancelled"
    );
    serves(&api).await;
}

/// `http.max_concurrent = 1`: a second request while one runs is refused at once with 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrent_refuses_with_429() {
    let pg = Postgres::start();
    let (_broker, api) = start(&pg, "[http]\nmax_concurrent = 1\n").await;
    serves(&api).await; // authenticates once, so the next request is quick
    let slow = tokio::spawn({
        let api = api.clone();
        async move { api.sql("SELECT pg_sleep(3)", json!([])).await }
    });
    let sleeping = "SELECT count(*) FROM pg_stat_activity \
                    WHERE query = 'SELECT pg_sleep(3)' AND state = 'active'";
    assert!(
        wait_for(Duration::from_secs(10), || pg.sql("postgres", sleeping)
            == "1")
        .await,
        "the first request never started"
    );
    let (s, v) = api.sql("SELECT 1", json!([])).await;
    assert_eq!((s, code(&v)), (429, "53300"), "{v}");
    let (s, _) = send_text(api.get("/healthz")).await;
    assert_eq!(s, 200, "health checks are not counted");
    let (s, v) = slow.await.expect("slow request");
    assert_eq!(s, 200, "{v}");
    serves(&api).await;
}

/// Reliability scenario 26 (HTTP): connections that never finish their headers are closed at
/// `header_read_timeout` — well before hyper's 30 s default, which needs a timer to work at
/// all — while a legitimate request is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_closed_at_the_header_timeout() {
    let pg = Postgres::start();
    let (_broker, addr) = Broker::start_http(&pg, "[http]\nheader_read_timeout = \"1s\"\n").await;
    // No idle pooled connections: the server closes those at the header timeout too.
    let api = Api {
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .expect("client"),
        ..Api::app(addr)
    };
    serves(&api).await;

    let started = tokio::time::Instant::now();
    let deadline = started + Duration::from_secs(10);
    let mut waits = Vec::new();
    for _ in 0..200 {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"G").await.expect("one byte");
        waits.push(tokio::spawn(async move {
            let mut buf = [0u8; 512];
            loop {
                match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
                    Err(_) => return None,
                    Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
                    Ok(Ok(_)) => {}
                }
            }
        }));
    }
    // A legitimate client, on a new connection, meanwhile.
    serves(&api).await;

    let mut slowest = Duration::ZERO;
    for (i, w) in waits.into_iter().enumerate() {
        let closed = w.await.expect("reader task");
        let at = closed.unwrap_or_else(|| panic!("slow connection {i} is still open after 10 s"));
        slowest = slowest.max(at);
    }
    assert!(slowest < Duration::from_secs(10), "{slowest:?}");
    serves(&api).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_openapi() {
    let pg = Postgres::start();
    let (_broker, addr) = Broker::start_http(&pg, "").await;
    let anon = Api::new(addr, ApiAuth::None);

    let (s, v) = send_json(anon.get("/healthz")).await;
    assert_eq!((s, &v["status"]), (200, &json!("ok")), "{v}");
    let (s, v) = send_json(anon.get("/readyz")).await;
    assert_eq!(
        (s, &v["primary"], &v["status"]),
        (200, &json!(true), &json!("ready")),
        "{v}"
    );

    let (s, doc) = send_json(anon.get("/openapi.json")).await;
    assert_eq!(s, 200);
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with('3')),
        "{doc}"
    );
    for path in [
        "/v1/sql",
        "/v1/series/{table}/points",
        "/v1/series/{table}/aggregate",
        "/v1/tables/{table}/rows/{id}",
    ] {
        assert!(doc["paths"][path].is_object(), "openapi lacks {path}");
    }

    pg.stop_immediate();
    let (s, v) = send_json(anon.get("/readyz")).await;
    assert_eq!(
        (s, &v["primary"], &v["status"]),
        (503, &json!(false), &json!("not_ready")),
        "{v}"
    );
    let (s, _) = send_json(anon.get("/healthz")).await;
    assert_eq!(s, 200, "alive even when the primary is not");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_repository_crud_and_hostile_names() {
    let pg = Postgres::start_with(&[("log_statement", "all")]);
    pg.sql(
        "postgres",
        "CREATE TABLE items (id serial PRIMARY KEY, name text, tags text[]);
         CREATE TABLE pair (a int, b int, v text, PRIMARY KEY (a, b));
         CREATE TABLE nopk (a int)",
    );
    let (_broker, api) = start(&pg, "").await;
    let rows = "/v1/tables/items/rows";

    let (s, v) = send_json(
        api.post(rows)
            .json(&json!({"name": "a", "tags": ["x", "y z"]})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v, json!({"id": 1, "name": "a", "tags": ["x", "y z"]}));
    let (s, v) = send_json(api.post(rows).json(&json!({"name": null}))).await;
    assert_eq!((s, v), (201, json!({"id": 2, "name": null, "tags": null})));

    let (s, v) = send_json(api.get("/v1/tables/items/rows/1")).await;
    assert_eq!(
        (s, &v),
        (200, &json!({"id": 1, "name": "a", "tags": ["x", "y z"]}))
    );
    let (s, v) = send_json(api.get("/v1/tables/public.items/rows/2")).await;
    assert_eq!((s, v["id"].clone()), (200, json!(2)));

    let put = |id: &str, body: Value| {
        api.request(reqwest::Method::PUT, &format!("{rows}/{id}"))
            .json(&body)
    };
    let (s, v) = send_json(put("1", json!({"name": "b", "tags": []}))).await;
    assert_eq!((s, v), (200, json!({"id": 1, "name": "b", "tags": []})));
    let (s, v) = send_json(put("99", json!({"name": "c"}))).await;
    assert_eq!((s, code(&v)), (404, "tidegate.not_found"), "{v}");
    assert_eq!(
        pg.sql("postgres", "SELECT name FROM items WHERE id = 1"),
        "b"
    );

    let del = |id: &str| api.request(reqwest::Method::DELETE, &format!("{rows}/{id}"));
    let (s, body) = send_text(del("1")).await;
    assert_eq!((s, body.as_str()), (204, ""));
    let (s, v) = send_json(api.get("/v1/tables/items/rows/1")).await;
    assert_eq!((s, code(&v)), (404, "tidegate.not_found"), "{v}");
    let (s, v) = send_json(del("1")).await;
    assert_eq!((s, code(&v)), (404, "tidegate.not_found"), "{v}");
    let (s, v) = send_json(api.get("/v1/tables/items/rows/abc")).await;
    assert_eq!((s, code(&v)), (422, "22P02"), "{v}");

    // Columns and keys the repository cannot serve.
    let (s, v) = send_json(api.post(rows).json(&json!({"name": "a", "nope": 1}))).await;
    assert_eq!((s, code(&v)), (422, "tidegate.invalid"), "{v}");
    let (s, v) = send_json(put("2", json!({"name\"; DROP TABLE items; --": 1}))).await;
    assert_eq!(s, 422, "{v}");
    for t in ["pair", "nopk"] {
        let (s, v) = send_json(
            api.post(&format!("/v1/tables/{t}/rows"))
                .json(&json!({"a": 1})),
        )
        .await;
        assert_eq!((s, code(&v)), (422, "tidegate.invalid"), "{t}: {v}");
        let (s, v) = send_json(api.get(&format!("/v1/tables/{t}/rows/1"))).await;
        assert_eq!(s, 422, "{t}: {v}");
    }

    // Hostile table names in the URL are never SQL.
    let long = "a".repeat(64);
    let hostile = [
        ("%22%3B%20DROP%20TABLE%20items%3B%20--", 404),
        ("items%22", 404),
        ("public.items%22%3B%20DROP%20TABLE%20items%3B%20--", 404),
        (long.as_str(), 400),
        ("items%00", 400),
        ("public.", 400),
    ];
    for (name, status) in hostile {
        for rb in [
            api.get(&format!("/v1/tables/{name}/rows/2")),
            api.post(&format!("/v1/tables/{name}/rows"))
                .json(&json!({"name": "x"})),
            api.request(
                reqwest::Method::DELETE,
                &format!("/v1/tables/{name}/rows/2"),
            ),
            api.get(&format!("/v1/series/{name}/latest")),
        ] {
            let (s, v) = send_json(rb).await;
            assert_eq!(s, status, "{name}: {v}");
            assert!(v["error"]["code"].is_string(), "{name}: {v}");
        }
    }
    assert_eq!(pg.sql("postgres", "SELECT count(*) FROM items"), "1");
    let log = pg.log();
    let ran: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("DROP TABLE") && !l.contains("DETAIL:"))
        .collect();
    assert!(ran.is_empty(), "a hostile name reached SQL: {ran:?}");
    serves(&api).await;
}

/// Issue 18: `/readyz` says only whether the broker is ready, and which part is not, to anyone;
/// plugin files, counters, load errors and the audit writer's reason are for `http.admin_users`
/// (the notion `/admin/status` uses). Credentials that do not make an admin — none, wrong or
/// another user's — get the same short answer, never a 401 or 403, and 200/503 are unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_detail_is_for_admins_only() {
    let pg = Postgres::start();
    let dir = tidegate_tests::fresh_dir().expect("dir");
    std::fs::write(
        dir.join("quiet.wasm"),
        tidegate_plugins::testing::component("(i32.const 1200)", ""),
    )
    .expect("write plugin");
    let extra = format!(
        r#"
[http]
admin_users = ["app"]
[plugins]
dir = "{}"
[[plugins.chain]]
name = "quiet"
file = "quiet.wasm"
kind = "optimizer"
[[users]]
name = "other"
password = "otherpw"
"#,
        dir.display()
    );
    let (_broker, addr) = Broker::start_http(&pg, &extra).await;
    let dir = dir.display().to_string();
    let admin = Api::app(addr);
    let others = [
        Api::new(addr, ApiAuth::None),
        Api::new(addr, ApiAuth::Basic("other".into(), "otherpw".into())),
        Api::new(addr, ApiAuth::Basic("app".into(), "wrong".into())),
        Api::new(addr, ApiAuth::Bearer("no-such-token".into())),
    ];
    serves(&admin).await;

    let short = |ready: bool| {
        json!({
            "status": if ready { "ready" } else { "not_ready" },
            "shutting_down": false,
            "primary": ready,
            "plugins": { "ready": true },
            "audit": null,
        })
    };
    for api in &others {
        let (s, text) = send_text(api.get("/readyz")).await;
        assert!(
            !text.contains(&dir) && !text.contains("quiet.wasm"),
            "no plugin paths: {text}"
        );
        let v: Value = serde_json::from_str(&text).expect("json");
        assert_eq!((s, &v), (200, &short(true)), "{:?}", api.auth);
    }
    let (s, v) = send_json(admin.get("/readyz")).await;
    assert_eq!((s, &v["status"]), (200, &json!("ready")), "{v}");
    let p = &v["plugins"][0];
    assert_eq!(p["name"], "quiet", "{v}");
    assert!(
        p["file"].as_str().is_some_and(|f| f.starts_with(&dir)),
        "{v}"
    );
    assert!(p["calls"].as_u64().is_some(), "{v}");
    assert!(
        p.as_object()
            .is_some_and(|o| o.contains_key("last_load_error")),
        "{v}"
    );

    pg.stop_immediate();
    for api in &others {
        let (s, v) = send_json(api.get("/readyz")).await;
        assert_eq!((s, &v), (503, &short(false)), "{:?}", api.auth);
    }
    let (s, v) = send_json(admin.get("/readyz")).await;
    assert_eq!((s, &v["primary"]), (503, &json!(false)), "{v}");
    assert!(v["plugins"][0]["file"].is_string(), "{v}");
}

/// Issue 18: a POST (or PUT) whose body runs SQL takes only the content types its endpoint
/// reads — a browser's cross-site form (urlencoded, multipart, text/plain) or a body without a
/// type is refused with 415 before anything runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_that_run_sql_need_their_content_type() {
    let pg = Postgres::start();
    tidegate_tests::migrate(&pg).await;
    pg.sql(
        "postgres",
        "CREATE TABLE forms (id int PRIMARY KEY, v text)",
    );
    let (_broker, api) = start(&pg, "").await;
    let count = |table: &str| pg.sql("postgres", &format!("SELECT count(*) FROM {table}"));
    let refused = [
        None,
        Some("text/plain"),
        Some("text/plain; charset=utf-8"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("application/jsonp"),
        Some("application/json-seq"),
        Some(""),
    ];
    let with = |rb: reqwest::RequestBuilder, ctype: Option<&str>, body: String| {
        match ctype {
            Some(c) => rb.header("content-type", c),
            None => rb,
        }
        .body(body)
    };

    // /v1/sql: JSON.
    let insert = json!({"sql": "INSERT INTO forms VALUES (1, 'x')"}).to_string();
    for ctype in refused {
        let (s, v) = send_json(with(api.post("/v1/sql"), ctype, insert.clone())).await;
        assert_eq!(
            (s, code(&v)),
            (415, "tidegate.unsupported_media_type"),
            "{ctype:?}: {v}"
        );
        assert!(v["error"]["message"].is_string(), "{v}");
    }
    assert_eq!(count("forms"), "0", "a refused body ran");
    for (i, ctype) in ["application/json; charset=utf-8", "Application/JSON"]
        .into_iter()
        .enumerate()
    {
        let sql = json!({"sql": "INSERT INTO forms VALUES ($1, 'x')", "params": [i]});
        let (s, v) = send_json(with(api.post("/v1/sql"), Some(ctype), sql.to_string())).await;
        assert_eq!(s, 200, "{ctype}: {v}");
    }

    // The table repository: JSON rows, POST and PUT.
    let row = json!({"id": 7, "v": "y"}).to_string();
    for ctype in refused {
        let (s, v) = send_json(with(api.post("/v1/tables/forms/rows"), ctype, row.clone())).await;
        assert_eq!(
            (s, code(&v)),
            (415, "tidegate.unsupported_media_type"),
            "{ctype:?}: {v}"
        );
        let put = api.request(reqwest::Method::PUT, "/v1/tables/forms/rows/0");
        let (s, v) = send_json(with(put, ctype, json!({"v": "changed"}).to_string())).await;
        assert_eq!(
            (s, code(&v)),
            (415, "tidegate.unsupported_media_type"),
            "{ctype:?}: {v}"
        );
    }
    assert_eq!(count("forms"), "2");
    assert_eq!(count("forms WHERE v = 'changed'"), "0");
    let (s, v) = send_json(api.post("/v1/tables/forms/rows").json(&json!({"id": 7}))).await;
    assert_eq!(s, 201, "{v}");

    // Points: JSON, NDJSON or CSV; no default.
    let point = json!([{"time": "2024-01-01T00:00:00Z", "series_id": 1, "value": 1}]).to_string();
    let points = "/v1/series/time_series_data/points";
    for ctype in refused {
        let (s, v) = send_json(with(api.post(points), ctype, point.clone())).await;
        assert_eq!(
            (s, code(&v)),
            (415, "tidegate.unsupported_media_type"),
            "{ctype:?}: {v}"
        );
    }
    assert_eq!(count("time_series_data"), "0");
    let (s, v) = send_json(with(api.post(points), Some("application/json"), point)).await;
    assert_eq!((s, v), (200, json!({"inserted": 1})));
    serves(&api).await;

    // The OpenAPI document says so.
    let (_, doc) = send_json(api.get("/openapi.json")).await;
    for (path, method) in [
        ("/v1/sql", "post"),
        ("/v1/series/{table}/points", "post"),
        ("/v1/tables/{table}/rows", "post"),
        ("/v1/tables/{table}/rows/{id}", "put"),
    ] {
        assert!(
            doc["paths"][path][method]["responses"]["415"].is_object(),
            "{method} {path}"
        );
    }
}

/// Issue 18: a 401 does not offer Basic (browsers would prompt, then replay the stored
/// credentials on cross-site requests); Basic still works when a client sends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_does_not_invite_basic_credentials() {
    let pg = Postgres::start();
    let (_broker, addr) = Broker::start_http(&pg, "[http]\nadmin_users = [\"app\"]\n").await;
    for auth in [
        ApiAuth::None,
        ApiAuth::Basic("app".into(), "wrong".into()),
        ApiAuth::Basic("nobody".into(), "app".into()),
        ApiAuth::Bearer("wrong-token".into()),
    ] {
        let api = Api::new(addr, auth.clone());
        for rb in [
            api.post("/v1/sql").json(&json!({"sql": "SELECT 1"})),
            api.get("/admin/status"),
            api.get("/v1/tables/t/rows/1"),
        ] {
            let r = rb.send().await.expect("request");
            assert_eq!(r.status(), 401, "{auth:?}");
            for h in r.headers().get_all("www-authenticate") {
                let h = h.to_str().unwrap_or("").to_ascii_lowercase();
                assert!(!h.contains("basic"), "{auth:?}: WWW-Authenticate: {h}");
            }
            let v: Value = r.json().await.expect("json");
            assert_eq!(code(&v), "28P01", "{v}");
        }
    }
    serves(&Api::app(addr)).await;
    let (s, v) = send_json(Api::app(addr).get("/admin/status")).await;
    assert_eq!(s, 200, "{v}");
}

/// Issue 18: Basic authentication costs an unknown user what it costs a known user with a
/// wrong password (a key derivation), so timing does not tell which user names exist. The known
/// user's verifier has many iterations, so the derivation dwarfs a request's other costs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_users_take_as_long_as_wrong_passwords() {
    let pg = Postgres::start();
    let verifier = tidegate_config::ScramVerifier::derive("slowpw", b"0123456789abcdef", 100_000)
        .to_pg_string();
    let extra = format!("[[users]]\nname = \"slow\"\nscram = \"{verifier}\"\n");
    let (_broker, addr) = Broker::start_http(&pg, &extra).await;
    let attempt = |user: &str, password: &str| {
        let api = Api::new(addr, ApiAuth::Basic(user.into(), password.into()));
        async move {
            let started = Instant::now();
            let (s, body) = send_text(api.post("/v1/sql").json(&json!({"sql": "SELECT 1"}))).await;
            (started.elapsed(), s, body)
        }
    };
    let (right, s, _) = attempt("slow", "slowpw").await;
    assert_eq!(s, 200);
    let (mut wrong, mut unknown) = (Duration::MAX, Duration::MAX);
    for i in 0..4 {
        let (w, ws, wbody) = attempt("slow", &format!("wrong{i}")).await;
        let (u, us, ubody) = attempt(&format!("nobody{i}"), "slowpw").await;
        assert_eq!((ws, &wbody), (us, &ubody), "the replies are the same");
        assert_eq!(ws, 401);
        wrong = wrong.min(w);
        unknown = unknown.min(u);
    }
    assert!(
        wrong > Duration::from_millis(20),
        "the derivation is measurable: {wrong:?} (right password: {right:?})"
    );
    assert!(
        unknown * 2 > wrong,
        "an unknown user is answered in {unknown:?}, a wrong password in {wrong:?}"
    );
}
