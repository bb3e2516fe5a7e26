//! Wire fidelity: what clients see through TideGate is what they see from PostgreSQL.

use tidegate_tests::{connect, create_db, fixture, run_tool, Broker, Postgres};
use tokio_postgres::types::{FromSql, Type};

async fn psql_script(url: &str, script: &std::path::Path) -> (String, String) {
    let out = run_tool(
        "psql",
        &[
            "-X",
            "-d",
            url,
            "-v",
            "ON_ERROR_STOP=0",
            "-f",
            script.to_str().expect("utf-8 path"),
        ],
        &[("PGTZ", "UTC"), ("PGAPPNAME", "fidelity")],
    )
    .await;
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_output_is_byte_identical_through_tidegate() {
    let pg = Postgres::start();
    create_db(&pg, "direct");
    create_db(&pg, "brokered");
    let broker = Broker::start(&pg, "").await;
    let script = fixture("types.sql");
    let (direct_out, direct_err) = psql_script(&pg.url("direct"), &script).await;
    let (tg_out, tg_err) = psql_script(&broker.app_url("brokered"), &script).await;
    assert!(
        direct_out.contains("héllo, wörld ✓"),
        "the script ran: {direct_out}"
    );
    assert!(
        direct_err.contains("division by zero"),
        "the script hit its error: {direct_err}"
    );
    assert!(
        direct_err.contains("a notice with detail 42"),
        "notice: {direct_err}"
    );
    // After an error in a transaction block: COMMIT answers ROLLBACK, a ROLLBACK outside one
    // warns, and a warning raised before the error is not lost.
    for expected in [
        "a warning inside the transaction",
        "there is no transaction in progress",
    ] {
        assert!(direct_err.contains(expected), "{expected}: {direct_err}");
    }
    assert_eq!(tg_out, direct_out, "stdout differs");
    assert_eq!(tg_err, direct_err, "stderr (errors, notices) differs");
    let columns = pg.sql(
        "direct",
        "SELECT count(*) FROM information_schema.columns WHERE table_name = 'everything'",
    );
    assert!(columns.parse::<u32>().expect("count") >= 40);
}

/// Any column's raw wire bytes, whatever its type.
#[derive(Debug, PartialEq)]
struct Raw(Option<Vec<u8>>);

impl<'a> FromSql<'a> for Raw {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(Some(raw.to_vec())))
    }
    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(None))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_rows_are_identical_through_tidegate() {
    let pg = Postgres::start();
    let broker = Broker::start(&pg, "").await;
    let setup = std::fs::read_to_string(fixture("types.sql")).expect("fixture");
    // The table-creating part of the script, run directly.
    let ddl: String = setup
        .lines()
        .filter(|l| !l.starts_with('\\'))
        .take_while(|l| !l.starts_with("SELECT"))
        .collect::<Vec<_>>()
        .join("\n");
    let direct = pg.connect("postgres").await;
    direct.batch_execute(&ddl).await.expect("setup");
    let through = broker.connect("postgres").await;
    let q = "SELECT * FROM everything ORDER BY id";
    // tokio-postgres requests binary results for every column.
    let a = direct.query(q, &[]).await.expect("direct");
    let b = through.query(q, &[]).await.expect("through TideGate");
    assert_eq!(a.len(), 3);
    assert_eq!(a.len(), b.len());
    let mut compared = 0;
    for (ra, rb) in a.iter().zip(b.iter()) {
        assert_eq!(ra.columns().len(), rb.columns().len());
        for i in 0..ra.columns().len() {
            assert_eq!(ra.columns()[i].type_(), rb.columns()[i].type_());
            assert_eq!(
                ra.get::<_, Raw>(i),
                rb.get::<_, Raw>(i),
                "column {}",
                ra.columns()[i].name()
            );
            compared += 1;
        }
    }
    assert!(compared >= 120);
    // Parameters in binary format, through a prepared statement, on a fresh transaction.
    let stmt = through
        .prepare("SELECT $1::int8 + 1, $2::text || '!', $3::float8[]")
        .await
        .expect("prepare");
    let row = through
        .query_one(&stmt, &[&41i64, &"hi", &vec![1.5f64, -2.0]])
        .await
        .expect("query");
    assert_eq!(row.get::<_, i64>(0), 42);
    assert_eq!(row.get::<_, String>(1), "hi!");
    assert_eq!(row.get::<_, Vec<f64>>(2), vec![1.5, -2.0]);
    drop(direct);
    let _ = connect;
}

/// `client_encoding` as the client spelled it (`utf-8`, `euc-jp`) is reported under
/// PostgreSQL's name, in the greeting's ParameterStatus (psql's `\encoding`) and by `SHOW`,
/// as PostgreSQL itself reports it; a name PostgreSQL does not know is refused with 22023.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_encoding_is_reported_under_its_postgresql_name() {
    let pg = Postgres::start();
    let b = Broker::start(&pg, "").await;
    let url = b.app_url("postgres");
    // The greeting itself (psql would normalize a spelling it reads back on its own).
    let trusting = Broker::start(&pg, "[auth]\nmethod = \"trust\"\n").await;
    let mut raw = tidegate_tests::raw::Raw::connect(trusting.addr).await;
    raw.send(&tidegate_tests::raw::startup_packet(&[
        ("user", "app"),
        ("database", "postgres"),
        ("client_encoding", "utf-8"),
    ]))
    .await;
    let greeting = raw.until_ready().await;
    let reported: Vec<String> = greeting
        .iter()
        .filter(|m| m.tag == b'S' && m.body.starts_with(b"client_encoding\0"))
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect();
    assert_eq!(reported, vec!["client_encoding\0UTF8\0".to_owned()]);
    for (spelled, canonical) in [("utf-8", "UTF8"), ("euc-jp", "EUC_JP"), ("unicode", "UTF8")] {
        let out = run_tool(
            "psql",
            &[
                "-X",
                "-A",
                "-t",
                "-d",
                &url,
                "-c",
                "\\encoding",
                "-c",
                "SHOW client_encoding",
            ],
            &[("PGCLIENTENCODING", spelled)],
        )
        .await;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{spelled}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(text, format!("{canonical}\n{canonical}\n"), "{spelled}");
    }
    let out = run_tool(
        "psql",
        &["-X", "-d", &url, "-c", "SELECT 1"],
        &[("PGCLIENTENCODING", "klingon")],
    )
    .await;
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("invalid value for parameter \"client_encoding\""),
        "{err}"
    );
}
