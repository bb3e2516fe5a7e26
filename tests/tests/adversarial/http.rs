//! The HTTP endpoint as an attacker sees it: `/readyz` tells anonymous clients whether the
//! broker is ready and nothing more, a cross-site form post (`text/plain`) runs no SQL, a 401
//! carries no Basic challenge a browser would answer with stored credentials, and `reader`
//! cannot write over HTTP either.

use super::Env;
use tidegate_tests::{send_text, Api, ApiAuth};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_shows_no_plugin_detail_to_anonymous_clients() {
    let env = Env::start().await;
    let http = env.broker.serve_http().await;
    let (code, body) = send_text(Api::new(http, ApiAuth::None).get("/readyz")).await;
    assert_eq!(code, 200, "{body}");
    let leaked: Vec<&str> = [
        ".wasm",
        "\"file\"",
        "\"calls\"",
        "\"failures\"",
        "\"denials\"",
        "last_load_error",
        "plugins/",
    ]
    .into_iter()
    .filter(|s| body.contains(s))
    .collect();
    assert!(
        leaked.is_empty(),
        "/readyz shows {leaked:?} to anyone: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_plain_post_runs_no_sql() {
    let env = Env::start().await;
    let http = env.broker.serve_http().await;
    let app = Api::app(http);
    // What an HTML form with enctype="text/plain" can send cross-site, with the browser's
    // stored Basic credentials.
    let body = r#"{"sql":"INSERT INTO acct VALUES (900, 'csrf', 0)","params":[]}"#;
    let (code, reply) = send_text(
        app.post("/v1/sql")
            .header("Content-Type", "text/plain")
            .body(body),
    )
    .await;
    let written = env.direct("SELECT count(*) FROM acct WHERE id = 900");
    assert!(
        (400..500).contains(&code) && written == "0",
        "a text/plain POST answered {code} ({reply}); rows written: {written}"
    );
    for ctype in [
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let (code, reply) =
            send_text(app.post("/v1/sql").header("Content-Type", ctype).body(body)).await;
        let written = env.direct("SELECT count(*) FROM acct WHERE id = 900");
        assert!(
            (400..500).contains(&code) && written == "0",
            "a {ctype} POST answered {code} ({reply}); rows written: {written}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthorized_reply_sends_no_basic_challenge() {
    let env = Env::start().await;
    let http = env.broker.serve_http().await;
    let r = Api::new(http, ApiAuth::None)
        .post("/v1/sql")
        .json(&serde_json::json!({ "sql": "SELECT 1", "params": [] }))
        .send()
        .await
        .expect("HTTP request");
    assert_eq!(r.status().as_u16(), 401);
    let challenge = r
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap_or("").to_owned())
        .collect::<Vec<_>>();
    assert!(
        !challenge
            .iter()
            .any(|v| v.to_ascii_lowercase().starts_with("basic")
                || v.to_ascii_lowercase().contains(" basic")
                || v.to_ascii_lowercase().contains(",basic")),
        "a 401 asks browsers for Basic credentials: {challenge:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_cannot_write_over_http() {
    let env = Env::start().await;
    let http = env.broker.serve_http().await;
    let reader = Api::new(http, ApiAuth::Basic("reader".into(), "reader".into()));
    let mut ran = Vec::new();
    for (sql, id) in [
        ("DELETE FROM acct WHERE id = 1; COMMIT", 1),
        ("BEGIN; DELETE FROM acct WHERE id = 8; COMMIT", 8),
        ("SELECT 1 --\r; DELETE FROM acct WHERE id = 2", 2),
        ("DO $$BEGIN DELETE FROM acct WHERE id = 7; END$$", 7),
        ("WITH d AS (DELETE FROM acct WHERE id = 4) SELECT 1", 4),
    ] {
        let (code, body) = reader.sql(sql, serde_json::json!([])).await;
        if code == 200 || !env.acct_row_intact(id) {
            ran.push(format!(
                "{sql:?}: {code} {body}; row {id} intact: {}",
                env.acct_row_intact(id)
            ));
        }
    }
    let (code, body) = reader
        .sql(
            "SELECT set_config('role', 'postgres', false)",
            serde_json::json!([]),
        )
        .await;
    if code == 200 {
        ran.push(format!("set_config('role'): {code} {body}"));
    }
    assert!(ran.is_empty(), "reader over HTTP:\n  {}", ran.join("\n  "));
}
