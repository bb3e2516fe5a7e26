//! Field encryption through the PostgreSQL wire protocol, with the first-party encryption
//! plugin: values written to a declared column (literals and bound parameters, INSERT and
//! UPDATE) are ciphertext in PostgreSQL, plaintext through TideGate for a reader role and
//! masked for everyone else; what cannot be encrypted is refused, never stored in clear.

use tidegate_tests::{first_value, plugin_dir_with, sqlstate, Broker, Postgres};

const KEY: &str = "ZGV2ZWxvcG1lbnQtb25seS1rZXktMzItYnl0ZXMhISE=";

fn config(dir: &std::path::Path) -> String {
    format!(
        r#"
[plugins]
dir = "{dir}"
call_timeout = "200ms"
[[plugins.keys]]
name = "pii"
id = 1
secret = "{KEY}"
[[plugins.chain]]
name = "encryption"
file = "encryption.wasm"
kind = "encryption"
keys = ["pii"]
[plugins.chain.config]
mask = "****"
[plugins.chain.config.columns]
"public.patients.ssn" = {{ key = "pii", readers = ["doctor"] }}
[[users]]
name = "doctor"
password = "doctor"
roles = ["doctor"]
[[users]]
name = "clerk"
password = "clerk"
"#,
        dir = dir.display()
    )
}

async fn client(broker: &Broker, user: &str) -> tokio_postgres::Client {
    tidegate_tests::connect(&broker.url(user, user, "postgres"))
        .await
        .expect("connects")
}

/// The stored ssn of patient `id`, read directly from PostgreSQL.
fn stored(pg: &Postgres, id: i32) -> String {
    pg.sql(
        "postgres",
        &format!("SELECT ssn FROM patients WHERE id = {id}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_columns_are_ciphertext_in_postgres_and_plaintext_only_for_readers() {
    let pg = Postgres::start();
    pg.sql(
        "postgres",
        "CREATE TABLE patients (id int PRIMARY KEY, name text, ssn text)",
    );
    let dir = plugin_dir_with(&["encryption.wasm"]);
    let broker = Broker::start(&pg, &config(&dir)).await;
    let doctor = client(&broker, "doctor").await;

    // Writes: a simple-protocol literal, a multi-row INSERT without a column list, bound
    // parameters (extended protocol, prepared), and an UPDATE literal.
    doctor
        .simple_query("INSERT INTO patients (id, name, ssn) VALUES (1, 'Ann', '111-11-1111')")
        .await
        .expect("insert literal");
    doctor
        .simple_query("INSERT INTO patients VALUES (2, 'Bob', '222-22-2222'), (3, 'O''Hara', NULL)")
        .await
        .expect("insert positional");
    let insert = doctor
        .prepare("INSERT INTO patients (id, name, ssn) VALUES ($1, $2, $3)")
        .await
        .expect("prepare");
    for (id, ssn) in [(4, "444-44-4444"), (5, "555-55-5555")] {
        doctor
            .execute(&insert, &[&id, &"P", &ssn])
            .await
            .expect("insert parameters");
    }
    doctor
        .simple_query("UPDATE patients SET ssn = '222-00-0000' WHERE id = 2")
        .await
        .expect("update literal");
    doctor
        .execute(
            "UPDATE patients SET ssn = $1 WHERE id = $2",
            &[&"555-00-0000", &5i32],
        )
        .await
        .expect("update parameter");

    // In PostgreSQL: ciphertext in the plugin's format, never the plaintext; NULL stays NULL.
    for (id, plain) in [
        (1, "111-11-1111"),
        (2, "222-00-0000"),
        (4, "444-44-4444"),
        (5, "555-00-0000"),
    ] {
        let s = stored(&pg, id);
        assert!(s.starts_with("tgenc:v1:"), "patient {id} stored {s:?}");
        assert!(!s.contains(plain), "patient {id}: plaintext stored");
    }
    assert_eq!(stored(&pg, 3), "", "NULL stays NULL");
    assert_eq!(
        pg.sql("postgres", "SELECT name FROM patients WHERE id = 3"),
        "O'Hara",
        "other columns untouched"
    );

    // Through TideGate, the doctor reads plaintext: simple and extended protocol.
    assert_eq!(
        first_value(&doctor, "SELECT ssn FROM patients WHERE id = 1").await,
        "111-11-1111"
    );
    let rows = doctor
        .query("SELECT id, name, ssn FROM patients ORDER BY id", &[])
        .await
        .expect("select");
    let ssns: Vec<Option<String>> = rows.iter().map(|r| r.get(2)).collect();
    assert_eq!(
        ssns,
        vec![
            Some("111-11-1111".to_owned()),
            Some("222-00-0000".to_owned()),
            None,
            Some("444-44-4444".to_owned()),
            Some("555-00-0000".to_owned()),
        ]
    );
    assert_eq!(rows[2].get::<_, String>(1), "O'Hara");
    let by_id = doctor
        .prepare("SELECT ssn FROM patients WHERE id = $1")
        .await
        .expect("prepare select");
    for _ in 0..3 {
        let r = doctor.query_one(&by_id, &[&4i32]).await.expect("select");
        assert_eq!(r.get::<_, String>(0), "444-44-4444");
    }

    // The clerk holds no reader role: every non-NULL value is masked.
    let clerk = client(&broker, "clerk").await;
    let rows = clerk
        .query("SELECT id, ssn FROM patients ORDER BY id", &[])
        .await
        .expect("clerk select");
    let seen: Vec<Option<String>> = rows.iter().map(|r| r.get(1)).collect();
    assert_eq!(
        seen,
        vec![
            Some("****".to_owned()),
            Some("****".to_owned()),
            None,
            Some("****".to_owned()),
            Some("****".to_owned()),
        ]
    );
    assert_eq!(
        first_value(&clerk, "SELECT ssn FROM patients WHERE id = 2").await,
        "****"
    );

    // What cannot be attributed to the column is refused, not stored in clear.
    let err = doctor
        .simple_query("INSERT INTO patients (id, ssn) VALUES (9, upper('999-99-9999'))")
        .await
        .expect_err("expression refused");
    assert_eq!(sqlstate(&err).as_deref(), Some("0A000"));
    let err = doctor
        .simple_query("INSERT INTO patients SELECT 10, 'x', '101-01-0101'")
        .await
        .expect_err("INSERT … SELECT refused");
    assert_eq!(sqlstate(&err).as_deref(), Some("0A000"));
    let err = doctor
        .simple_query("COPY patients FROM STDIN")
        .await
        .expect_err("COPY FROM refused");
    assert_eq!(sqlstate(&err).as_deref(), Some("0A000"));
    assert_eq!(
        pg.sql(
            "postgres",
            "SELECT count(*) FROM patients WHERE id IN (9, 10)"
        ),
        "0"
    );

    // A stored value that does not decrypt is corruption: the reader's statement fails with
    // XX001 and the session goes on.
    pg.sql(
        "postgres",
        "INSERT INTO patients VALUES (7, 'Eve', 'tgenc:v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA')",
    );
    let err = doctor
        .query("SELECT ssn FROM patients WHERE id = 7", &[])
        .await
        .expect_err("corrupt value");
    assert_eq!(sqlstate(&err).as_deref(), Some("XX001"));
    assert_eq!(
        first_value(&doctor, "SELECT ssn FROM patients WHERE id = 1").await,
        "111-11-1111",
        "the session still works"
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_created_after_start_is_covered() {
    let pg = Postgres::start();
    let dir = plugin_dir_with(&["encryption.wasm"]);
    let broker = Broker::start(&pg, &config(&dir)).await;
    let doctor = client(&broker, "doctor").await;
    // Before the table exists, then DDL through the broker, then writes.
    assert!(doctor
        .simple_query("SELECT ssn FROM patients")
        .await
        .is_err());
    doctor
        .batch_execute("CREATE TABLE patients (id int, ssn text)")
        .await
        .expect("create");
    doctor
        .execute("INSERT INTO patients VALUES ($1, $2)", &[&1i32, &"123"])
        .await
        .expect("insert");
    assert!(stored(&pg, 1).starts_with("tgenc:v1:"));
    assert_eq!(
        first_value(&doctor, "SELECT ssn FROM patients").await,
        "123"
    );
    broker.shutdown().await;
}
