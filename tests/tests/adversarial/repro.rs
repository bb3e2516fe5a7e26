//! The reproductions as `reader` and `app`, each a test of its own, plus the findings
//! about the lexer, FunctionCall messages and encryption that can be shown from outside.

use super::{client_with_options, read_reply, rows, simple, Env, Variant};
use tidegate_tests::raw;

/// Sends `sql` as `reader` (simple protocol) and asserts it was refused and acct row `id`
/// kept its value.
async fn reader_is_refused(env: &Env, sql: &str, id: i32) {
    let r = env.client("reader").await;
    let result = r.simple_query(sql).await;
    let intact = env.acct_row_intact(id);
    match result {
        Ok(_) => panic!(
            "reader ran {sql:?} without an error; acct row {id} {}",
            if intact {
                "is intact"
            } else {
                "was deleted or changed"
            }
        ),
        Err(e) => {
            assert!(
                e.as_db_error().is_some(),
                "{sql:?}: a server error, not a client one: {e}"
            );
            assert!(
                intact,
                "{sql:?} was answered with an error ({e}) but acct row {id} was deleted or \
                 changed anyway"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_cannot_delete_with_a_trailing_commit() {
    let env = Env::start().await;
    reader_is_refused(&env, "DELETE FROM acct WHERE id=1; COMMIT", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_cannot_delete_inside_begin_commit() {
    let env = Env::start().await;
    reader_is_refused(&env, "BEGIN; DELETE FROM acct WHERE id=8; COMMIT", 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cr_ended_comment_does_not_share_a_cached_verdict() {
    let env = Env::start().await;
    for round in 0..2 {
        // The same session first (its memo), then a new one (the chain's decision cache).
        let r = env.client("reader").await;
        r.simple_query("SELECT 1").await.expect("a plain read");
        let sql = "SELECT 1 --\r; DELETE FROM acct WHERE id=2";
        let result = r.simple_query(sql).await;
        assert!(
            result.is_err(),
            "round {round}: reader ran {sql:?} (PostgreSQL ends -- at CR) without an error"
        );
        assert!(
            env.acct_row_intact(2),
            "round {round}: acct row 2 was deleted"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_cannot_execute_a_prepared_delete() {
    let env = Env::start().await;
    reader_is_refused(
        &env,
        "PREPARE p AS DELETE FROM acct WHERE id=6; EXECUTE p",
        6,
    )
    .await;
    // Split over two messages: one of them must be refused, and nothing deleted.
    let r = env.client("reader").await;
    let prepared = r
        .simple_query("PREPARE q AS DELETE FROM acct WHERE id=5")
        .await;
    let executed = r.simple_query("EXECUTE q").await;
    assert!(
        prepared.is_err() || executed.is_err(),
        "reader prepared and executed a DELETE"
    );
    assert!(env.acct_row_intact(5), "acct row 5 was deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_cannot_delete_in_a_do_block() {
    let env = Env::start().await;
    reader_is_refused(&env, "DO $$BEGIN DELETE FROM acct WHERE id=7; END$$", 7).await;
}

/// `standard_conforming_strings = off` (a startup option or a SET) makes `\'` an escaped
/// quote: `'\''` is one string and the DELETE after it runs; read with the setting on, the
/// same text is two strings and no DELETE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_conforming_strings_off_cannot_hide_a_delete() {
    let env = Env::start().await;
    let sql = "SELECT '\\'' ; DELETE FROM acct WHERE id = 3 ; --'";
    if let Ok(r) =
        client_with_options(&env.broker, "reader", "-c standard_conforming_strings=off").await
    {
        let result = r.simple_query(sql).await;
        assert!(
            result.is_err() && env.acct_row_intact(3),
            "startup option: reader ran {sql:?}: {result:?}; acct row 3 intact: {}",
            env.acct_row_intact(3)
        );
    }
    let r = env.client("reader").await;
    let set = r
        .simple_query("SET standard_conforming_strings = off")
        .await;
    if set.is_ok() {
        let result = r.simple_query(sql).await;
        assert!(
            result.is_err() && env.acct_row_intact(3),
            "after SET: reader ran {sql:?}: {result:?}; acct row 3 intact: {}",
            env.acct_row_intact(3)
        );
    }
    assert!(env.acct_row_intact(3), "acct row 3 was deleted");
}

/// A FunctionCall ('F') message for `nextval(regclass)` (OID 1574) as `reader`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_call_message_is_refused_for_reader() {
    let env = Env::start().await;
    let before = env.acct_seq();
    let mut r = env.raw("reader").await;
    // The same call as SQL is refused: the message must be too.
    let sql = simple(&mut r, "SELECT nextval('acct_seq')").await;
    assert!(sql.refused(), "SELECT nextval as SQL: {}", sql.summary());
    let mut body = Vec::new();
    body.extend_from_slice(&1574i32.to_be_bytes()); // nextval(regclass)
    body.extend_from_slice(&1i16.to_be_bytes()); // one argument format code:
    body.extend_from_slice(&0i16.to_be_bytes()); // text
    body.extend_from_slice(&1i16.to_be_bytes()); // one argument
    let arg = b"acct_seq";
    body.extend_from_slice(&(arg.len() as i32).to_be_bytes());
    body.extend_from_slice(arg);
    body.extend_from_slice(&0i16.to_be_bytes()); // result in text
    r.send(&raw::msg(b'F', &body)).await;
    let outcome = read_reply(&mut r).await;
    let after = env.acct_seq();
    assert!(
        outcome.error.is_some() && before == after,
        "FunctionCall nextval as reader: {}; acct_seq {before} -> {after}",
        outcome.summary()
    );
}

/// What each write shape left in `patients`, read directly from PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssn_is_never_stored_in_plaintext_by_any_write_shape() {
    let env = Env::start().await;
    let app = env.client("app").await;
    let shapes: Vec<(&str, String)> = vec![
        ("101-00-0001", "BEGIN; INSERT INTO patients VALUES (101, 'Tx', '101-00-0001'); COMMIT".into()),
        ("102-00-0002", "WITH x AS (INSERT INTO patients VALUES (102, 'Cte', '102-00-0002') RETURNING 1) SELECT count(*) FROM x".into()),
        ("103-00-0003", "INSERT INTO patients VALUES (103, 'Multi', '103-00-0003'); SELECT 1".into()),
        ("104-00-0004", "SELECT 1; INSERT INTO patients VALUES (104, 'Multi2', '104-00-0004')".into()),
        ("105-00-0005", "MERGE INTO patients p USING (VALUES (105, 'Merge', '105-00-0005')) v(id, name, ssn) ON p.id = v.id WHEN NOT MATCHED THEN INSERT VALUES (v.id, v.name, v.ssn)".into()),
        ("106-00-0006", "PREPARE ins AS INSERT INTO patients VALUES (106, 'Prep', '106-00-0006'); EXECUTE ins".into()),
        ("107-00-0007", "DO $$BEGIN INSERT INTO patients VALUES (107, 'Do', '107-00-0007'); END$$".into()),
        ("108-00-0008", "WITH u AS (UPDATE patients SET ssn = '108-00-0008' WHERE id = 1 RETURNING 1) SELECT count(*) FROM u".into()),
        ("109-00-0009", "INSERT INTO patients SELECT * FROM (VALUES (109, 'Sel', '109-00-0009')) v".into()),
        ("111-00-0011", "UPDATE patients SET ssn = '111-00-0011' FROM (SELECT 1) s WHERE patients.id = 2".into()),
        ("113-00-0013", "INSERT INTO patients VALUES (1, 'Upsert', 'x') ON CONFLICT (id) DO UPDATE SET ssn = '113-00-0013'".into()),
        ("114-00-0014", "BEGIN; UPDATE patients SET ssn = '114-00-0014' WHERE id = 2; COMMIT".into()),
        ("116-00-0016", "INSERT INTO patients_v VALUES (116, 'View', '116-00-0016')".into()),
        ("117-00-0017", "UPDATE patients_v SET ssn = '117-00-0017' WHERE id = 2".into()),
        ("118-00-0018", "/* note */ INSERT INTO patients VALUES (118, 'Comment', '118-00-0018')".into()),
    ];
    let mut report = Vec::new();
    for (plain, sql) in &shapes {
        let r = app.simple_query(sql).await;
        report.push(format!(
            "{plain}: {sql}: {}",
            match r {
                Ok(_) => "ran".to_owned(),
                Err(e) => format!("refused: {e}"),
            }
        ));
    }
    // Extended protocol: a CTE-wrapped INSERT with bound values.
    let r = app
        .execute(
            "WITH x AS (INSERT INTO patients VALUES ($1, 'ExtCte', $2) RETURNING 1) \
             SELECT count(*) FROM x",
            &[&115i32, &"115-00-0015"],
        )
        .await;
    report.push(format!("115-00-0015: extended CTE INSERT: {r:?}"));
    // COPY FROM STDIN behind a leading comment.
    let copy = async {
        let sink = app
            .copy_in::<_, bytes::Bytes>("/* c */ COPY patients (id, name, ssn) FROM STDIN")
            .await?;
        futures_util::pin_mut!(sink);
        use futures_util::SinkExt;
        sink.send(bytes::Bytes::from_static(b"110\tCopy\t110-00-0010\n"))
            .await?;
        sink.finish().await
    }
    .await;
    report.push(format!(
        "110-00-0010: COPY FROM STDIN after a comment: {copy:?}"
    ));
    let mut plaintexts: Vec<&str> = shapes.iter().map(|(p, _)| *p).collect();
    plaintexts.extend(["115-00-0015", "110-00-0010"]);
    let table = env.direct("SELECT string_agg(t::text, E'\\n' ORDER BY id) FROM patients t");
    let stored: Vec<&&str> = plaintexts.iter().filter(|p| table.contains(**p)).collect();
    let not_ciphertext = env.direct(
        "SELECT count(*) FROM patients WHERE ssn IS NOT NULL AND ssn NOT LIKE 'tgenc:v1:%'",
    );
    assert!(
        stored.is_empty() && not_ciphertext == "0",
        "plaintext ssn stored for {stored:?}; {not_ciphertext} rows hold a non-ciphertext ssn\n\
         what each shape did:\n  {}\npatients as stored:\n{table}",
        report.join("\n  ")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_reads_ssn_decrypted_and_reader_sees_it_masked() {
    let env = Env::start().await;
    let stored = env.direct("SELECT ssn FROM patients WHERE id = 1");
    assert!(
        stored.starts_with("tgenc:v1:") && !stored.contains("111-11-1111"),
        "stored as ciphertext: {stored:?}"
    );
    let app = env.client("app").await;
    let reader = env.client("reader").await;
    let sql = "SELECT ssn FROM patients WHERE id = 1";
    let app_simple = rows(&app, sql).await.expect("app reads patients");
    let app_ext: Option<String> = app
        .query_one(sql, &[])
        .await
        .expect("app reads patients (extended)")
        .get(0);
    let reader_simple = rows(&reader, sql).await.expect("reader reads patients");
    let reader_ext: Option<String> = reader
        .query_one(sql, &[])
        .await
        .expect("reader reads patients (extended)")
        .get(0);
    assert_eq!(
        (
            app_simple[0][0].as_deref(),
            app_ext.as_deref(),
            reader_simple[0][0].as_deref(),
            reader_ext.as_deref()
        ),
        (
            Some("111-11-1111"),
            Some("111-11-1111"),
            Some("****"),
            Some("****")
        ),
        "(app simple, app extended, reader simple, reader extended): app is `admin` in the \
         access-control plugin's users map and the encryption plugin's readers are [\"admin\"]"
    );
}

/// A role limited to some tables reads no other table by any statement form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_and_copy_to_forms_obey_table_rules() {
    let variant = Variant {
        edits: vec![(
            "admin = [{ kinds = [\"*\"], tables = [\"*\"] }]",
            "admin = [{ kinds = [\"*\"], tables = [\"*\"] }]\n\
             limited = [{ kinds = [\"read\"], tables = [\"acct\"] }]"
                .into(),
        )],
        append: "[[users]]\nname = \"clerk\"\npassword = \"clerk\"\nroles = [\"limited\"]\n".into(),
        before: "",
    };
    let env = Env::start_with(variant).await;
    let mut r = env.raw("clerk").await;
    let ok = simple(&mut r, "SELECT * FROM acct").await;
    assert!(ok.error.is_none(), "clerk may read acct: {}", ok.summary());
    let forms = [
        "SELECT * FROM payroll",
        "TABLE payroll",
        "TABLE public.payroll",
        "COPY payroll TO STDOUT",
        "COPY payroll (salary) TO STDOUT",
        "COPY (SELECT * FROM payroll) TO STDOUT",
        "SELECT * FROM payroll_v",
        "SELECT * FROM read_payroll()",
        "SELECT query_to_xml('SELECT * FROM payroll', true, true, '')",
        "SELECT table_to_xml('payroll', true, true, '')",
        "SELECT * FROM acct WHERE id IN (SELECT id FROM payroll)",
        "SELECT (SELECT max(salary) FROM payroll)",
        "SELECT * FROM acct a JOIN payroll p USING (id)",
        "WITH p AS (SELECT * FROM payroll) SELECT * FROM p",
        "SELECT * FROM U&\"p\\0061yroll\"",
        "SELECT * FROM \"payroll\"",
        "SELECT * FROM acct; TABLE payroll",
        "EXPLAIN ANALYZE SELECT * FROM payroll",
        "BEGIN; DECLARE c CURSOR FOR SELECT * FROM payroll; FETCH ALL FROM c; COMMIT",
    ];
    let mut leaked = Vec::new();
    for sql in forms {
        let mut r = env.raw("clerk").await;
        let o = simple(&mut r, sql).await;
        if !o.refused() {
            leaked.push(format!("{sql:?}: {}", o.summary()));
        }
    }
    assert!(
        leaked.is_empty(),
        "a role limited to acct was not refused:\n  {}",
        leaked.join("\n  ")
    );
}
