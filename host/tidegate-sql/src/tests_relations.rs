//! What policy needs from a classification: every statement form names its relations, and a
//! statement whose reach cannot be established says so (`every_table`, or `Kind::Unknown`).

use super::*;

fn names(c: &Classification) -> Vec<String> {
    c.tables
        .iter()
        .map(|t| match &t.schema {
            Some(s) => format!("{s}.{}", t.name),
            None => t.name.clone(),
        })
        .collect()
}

/// (statement, kind, tables, every_table)
const RELATIONS: &[(&str, Kind, &[&str], bool)] = &[
    ("TABLE payroll", Kind::Read, &["payroll"], false),
    ("table hr.payroll", Kind::Read, &["hr.payroll"], false),
    ("COPY payroll TO STDOUT", Kind::Read, &["payroll"], false),
    (
        "COPY hr.payroll (a, b) TO STDOUT",
        Kind::Read,
        &["hr.payroll"],
        false,
    ),
    (
        "COPY (SELECT * FROM payroll) TO STDOUT",
        Kind::Read,
        &["payroll"],
        false,
    ),
    ("COPY acct FROM STDIN", Kind::Write, &["acct"], false),
    ("COPY acct FROM PROGRAM 'id'", Kind::Unknown, &[], true),
    ("COPY acct TO '/tmp/x'", Kind::Unknown, &[], true),
    ("DROP TABLE payroll", Kind::Ddl, &["payroll"], false),
    ("DROP VIEW v, w", Kind::Ddl, &["v", "w"], false),
    ("DROP INDEX payroll_idx", Kind::Ddl, &[], true),
    ("DROP SCHEMA hr CASCADE", Kind::Ddl, &[], true),
    ("DROP FUNCTION f()", Kind::Ddl, &[], true),
    ("GRANT SELECT ON payroll TO public", Kind::Ddl, &[], true),
    (
        "REVOKE ALL ON ALL TABLES IN SCHEMA public FROM r",
        Kind::Ddl,
        &[],
        true,
    ),
    (
        "LOCK TABLE payroll IN ACCESS EXCLUSIVE MODE",
        Kind::Write,
        &["payroll"],
        false,
    ),
    (
        "ALTER TABLE payroll ADD COLUMN x int",
        Kind::Ddl,
        &["payroll"],
        false,
    ),
    (
        "CREATE INDEX ON payroll (a)",
        Kind::Ddl,
        &["payroll"],
        false,
    ),
    (
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        Kind::Ddl,
        &[],
        true,
    ),
    ("CREATE ROLE r", Kind::Ddl, &[], true),
    ("REFRESH MATERIALIZED VIEW m", Kind::Utility, &["m"], false),
    ("VACUUM payroll", Kind::Utility, &["payroll"], false),
    ("VACUUM", Kind::Utility, &[], true),
    ("TRUNCATE payroll", Kind::Write, &["payroll"], false),
    ("TRUNCATE payroll CASCADE", Kind::Write, &["payroll"], true),
    (
        "PREPARE p AS DELETE FROM acct WHERE id = 6",
        Kind::Write,
        &["acct"],
        false,
    ),
    (
        "PREPARE p AS SELECT * FROM acct",
        Kind::Session,
        &["acct"],
        false,
    ),
    ("EXECUTE p", Kind::Unknown, &[], true),
    (
        "DO $$BEGIN DELETE FROM acct WHERE id=7; END$$",
        Kind::Unknown,
        &[],
        true,
    ),
    ("CALL p(1)", Kind::Unknown, &[], true),
    (
        "EXPLAIN ANALYZE DELETE FROM acct",
        Kind::Write,
        &["acct"],
        false,
    ),
    // Plain EXPLAIN runs nothing, but judging it by what it names costs nothing.
    ("EXPLAIN DELETE FROM acct", Kind::Write, &["acct"], false),
    ("SET ROLE r1", Kind::Ddl, &[], true),
    ("SET SESSION AUTHORIZATION r1", Kind::Ddl, &[], true),
    ("SET role = 'r1'", Kind::Ddl, &[], true),
    ("SET search_path TO b", Kind::Session, &[], false),
    ("RESET ROLE", Kind::Ddl, &[], true),
    ("RESET SESSION AUTHORIZATION", Kind::Ddl, &[], true),
    ("RESET search_path", Kind::Session, &[], false),
    ("RESET ALL", Kind::Session, &[], false),
    ("SELECT my_function()", Kind::Write, &[], true),
    (
        "SELECT * FROM payroll; DELETE FROM acct",
        Kind::Write,
        &["acct", "payroll"],
        false,
    ),
    (
        "DELETE FROM acct WHERE id=1; COMMIT",
        Kind::Write,
        &["acct"],
        false,
    ),
    ("BEGIN; SELECT 1; COMMIT", Kind::Transaction, &[], false),
];

#[test]
fn every_statement_form_names_its_relations() {
    let mut wrong = Vec::new();
    for (sql, kind, tables, every) in RELATIONS {
        let c = classify(sql, &NoLookup);
        if c.kind != *kind || names(&c) != *tables || c.every_table != *every {
            wrong.push(format!(
                "{sql}\n    got kind={:?} tables={:?} every_table={}",
                c.kind,
                names(&c),
                c.every_table
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn a_statement_that_does_not_parse_is_unknown_and_may_touch_every_table() {
    for sql in [
        "SELEC 1",
        "SELECT 1 --\r; DELETE FROM acct WHERE id=2 (",
        "\\d t",
    ] {
        let c = classify(sql, &NoLookup);
        assert_eq!(c.kind, Kind::Unknown, "{sql}");
        assert!(c.every_table && !c.read_only && !c.cacheable, "{sql}");
    }
}

#[test]
fn a_split_string_classifies_statement_by_statement() {
    let sql = "SELECT 1 --\r; DELETE FROM acct WHERE id=2";
    let parts: Vec<Classification> = split_statements(sql)
        .expect("tokenizes")
        .into_iter()
        .map(|r| classify(&sql[r], &NoLookup))
        .collect();
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0].kind, Kind::Read);
    assert_eq!(parts[1].kind, Kind::Write);
    assert_eq!(names(&parts[1]), ["acct"]);
}

#[test]
fn turning_standard_conforming_strings_off_is_refused() {
    for sql in [
        "SET standard_conforming_strings = off",
        "SET standard_conforming_strings TO 'off'",
        "set session standard_conforming_strings = false",
    ] {
        let c = classify(sql, &NoLookup);
        assert!(c.refused.is_some(), "{sql}");
        assert_eq!(c.kind, Kind::Unknown, "{sql}");
    }
    for sql in [
        "SET standard_conforming_strings = on",
        "SET standard_conforming_strings TO DEFAULT",
        "SET search_path = off",
    ] {
        assert_eq!(classify(sql, &NoLookup).refused, None, "{sql}");
    }
}

#[test]
fn a_text_sqlparser_may_misread_is_unknown() {
    for sql in [
        "SELECT 1 WHERE 1 </* ' */ 2; DELETE FROM acct; --'",
        "SELECT $\u{20ac}$ FROM t WHERE x = ' $\u{20ac}$; DELETE FROM acct; --'",
        "SELECT 1 WHERE 1 =-- ' \n 2; DELETE FROM acct; --'",
    ] {
        let c = classify(sql, &NoLookup);
        assert_eq!(c.kind, Kind::Unknown, "{sql}");
        assert!(c.every_table && !c.read_only, "{sql}");
    }
    for sql in ["DELETE FROM 'acct'", "SELECT * FROM ''t"] {
        assert_eq!(classify(sql, &NoLookup).tables, Vec::new(), "{sql}");
    }
    assert_eq!(classify("SELECT 1 WHERE 1 < 2", &NoLookup).kind, Kind::Read);
    assert_eq!(classify("SELECT $a$x$a$", &NoLookup).kind, Kind::Read);
}
