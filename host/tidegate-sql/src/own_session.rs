//! What a pooled client asks about its own server session, read so that a broker can answer
//! for the client's session instead of the shared server process: the functions that name a
//! process — `pg_backend_pid()`, `pg_cancel_backend(pid)`, `pg_terminate_backend(pid)` — and
//! the `pg_prepared_statements` view.

use crate::writes::LineIndex;
use sqlparser::ast::{
    CastKind, DataType, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr,
    ObjectName, ObjectNamePart, Query, SelectItem, SetExpr, Statement, Value, Visit, Visitor,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Location, Token, Tokenizer};
use std::collections::HashSet;
use std::ops::ControlFlow;

/// Whether `sql` may call one of these functions or read the view: a cheap, case-blind scan
/// for `_backend` and `_statements` that lets every other statement skip the rest of this
/// module.
pub fn mentions_own_session(sql: &[u8]) -> bool {
    memchr::memchr_iter(b'_', sql).any(|i| {
        let after = &sql[i + 1..];
        after
            .get(..7)
            .is_some_and(|w| w.eq_ignore_ascii_case(b"backend"))
            || after
                .get(..10)
                .is_some_and(|w| w.eq_ignore_ascii_case(b"statements"))
    })
}

/// The process a signal function is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PidArg {
    /// A constant.
    Literal(i64),
    /// The 0-based parameter (`$1` is 0).
    Param(usize),
}

/// `SELECT pg_terminate_backend(p)` or `SELECT pg_cancel_backend(p)`, alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalCall {
    /// `pg_terminate_backend` (else `pg_cancel_backend`).
    pub terminate: bool,
    /// Whose process.
    pub pid: PidArg,
    /// The result column's name: its alias, or the function's name.
    pub column: String,
}

/// Reads `sql` as one signal-function call alone: a single `SELECT` of one column, with no
/// `FROM`, `WHERE` or other clause, whose process argument is a constant or a parameter
/// (cast to an integer type or not). Anything else is `None` and runs on the server.
pub fn signal_call(sql: &str) -> Option<SignalCall> {
    let stmts = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
    let [Statement::Query(q)] = stmts.as_slice() else {
        return None;
    };
    let plain_query = q.with.is_none()
        && q.order_by.is_none()
        && q.limit_clause.is_none()
        && q.fetch.is_none()
        && q.locks.is_empty();
    let SetExpr::Select(s) = &*q.body else {
        return None;
    };
    let plain_select = s.distinct.is_none()
        && s.into.is_none()
        && s.from.is_empty()
        && s.selection.is_none()
        && s.having.is_none()
        && matches!(&s.group_by, GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty());
    if !(plain_query && plain_select) {
        return None;
    }
    let [item] = s.projection.as_slice() else {
        return None;
    };
    let (expr, alias) = match item {
        SelectItem::UnnamedExpr(e) => (e, None),
        SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias)),
        _ => return None,
    };
    let Expr::Function(f) = expr else {
        return None;
    };
    let name = function_name(&f.name)?;
    let terminate = match name.as_str() {
        "pg_terminate_backend" => true,
        "pg_cancel_backend" => false,
        _ => return None,
    };
    if f.filter.is_some() || f.over.is_some() || !f.within_group.is_empty() {
        return None;
    }
    let FunctionArguments::List(list) = &f.args else {
        return None;
    };
    if list.duplicate_treatment.is_some() || !list.clauses.is_empty() {
        return None;
    }
    let args: Vec<&Expr> = list
        .args
        .iter()
        .map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
            _ => None,
        })
        .collect::<Option<_>>()?;
    // pg_terminate_backend(pid, timeout): the timeout is the broker's to ignore (its session
    // ends at its next wait).
    let pid = match args.as_slice() {
        [pid] => pid_arg(pid)?,
        [pid, _] if terminate => pid_arg(pid)?,
        _ => return None,
    };
    let column = alias.map_or(name, |a| {
        if a.quote_style.is_some() {
            a.value.clone()
        } else {
            a.value.to_lowercase()
        }
    });
    Some(SignalCall {
        terminate,
        pid,
        column,
    })
}

fn pid_arg(e: &Expr) -> Option<PidArg> {
    match e {
        Expr::Nested(inner) => pid_arg(inner),
        Expr::Cast {
            kind: CastKind::Cast | CastKind::DoubleColon,
            expr,
            data_type,
            format: None,
        } if is_integer(data_type) => pid_arg(expr),
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => n.parse().ok().map(PidArg::Literal),
            Value::Placeholder(p) => p
                .strip_prefix('$')?
                .parse::<usize>()
                .ok()
                .filter(|n| *n >= 1)
                .map(|n| PidArg::Param(n - 1)),
            _ => None,
        },
        _ => None,
    }
}

fn is_integer(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Int(_)
            | DataType::Integer(_)
            | DataType::Int4(_)
            | DataType::BigInt(_)
            | DataType::Int8(_)
            | DataType::SmallInt(_)
            | DataType::Int2(_)
    )
}

/// A function's name as PostgreSQL resolves it, when it is a built-in's: unqualified or in
/// `pg_catalog`.
fn function_name(name: &ObjectName) -> Option<String> {
    let part = |p: &ObjectNamePart| match p {
        ObjectNamePart::Identifier(i) if i.quote_style.is_some() => Some(i.value.clone()),
        ObjectNamePart::Identifier(i) => Some(i.value.to_lowercase()),
        ObjectNamePart::Function(_) => None,
    };
    match name.0.as_slice() {
        [f] => part(f),
        [schema, f] if part(schema)? == "pg_catalog" => part(f),
        _ => None,
    }
}

/// `sql` with each call of `pg_backend_pid()` replaced by the constant `pid`; where the call is
/// a result column of its own, the column keeps the function's name. `None` when there is no
/// such call, or the text does not tokenize.
pub fn with_backend_pid(sql: &str, pid: i32) -> Option<String> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize_with_location()
        .ok()?;
    let lines = LineIndex::new(sql);
    // Significant tokens only: whitespace and comments may sit between a name and its parens.
    let sig: Vec<_> = tokens
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_) | Token::EOF))
        .collect();
    let is_word = |i: usize, want: &str| {
        matches!(&sig.get(i).map(|t| &t.token), Some(Token::Word(w))
            if (w.quote_style.is_none() && w.value.eq_ignore_ascii_case(want))
                || (w.quote_style == Some('"') && w.value == want))
    };
    let is = |i: usize, want: &Token| sig.get(i).is_some_and(|t| &t.token == want);
    let bare = bare_columns(sql);
    let mut edits = Vec::new();
    for i in 0..sig.len() {
        if !(is_word(i, "pg_backend_pid") && is(i + 1, &Token::LParen) && is(i + 2, &Token::RParen))
        {
            continue;
        }
        let qualified = i >= 2 && is(i - 1, &Token::Period);
        if qualified && !is_word(i - 2, "pg_catalog") {
            continue; // Another schema's function of that name.
        }
        if i >= 1 && is(i - 1, &Token::Period) && !qualified {
            continue;
        }
        let first = if qualified { i - 2 } else { i };
        let start = lines.offset(sig[first].span.start)?;
        let end = lines.offset(sig[i + 2].span.start)? + 1;
        let column = bare.contains(&(sig[i].span.start.line, sig[i].span.start.column));
        edits.push((start, end, column));
    }
    if edits.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(sql.len() + 32 * edits.len());
    let mut at = 0;
    for (start, end, column) in edits {
        out.push_str(&sql[at..start]);
        out.push_str(&format!("({pid})"));
        if column {
            out.push_str(" AS pg_backend_pid");
        }
        at = end;
    }
    out.push_str(&sql[at..]);
    Some(out)
}

/// `sql` with each `pg_prepared_statements` it reads from (after `FROM`, `JOIN` or a comma)
/// replaced by the subquery `rows()` (which must yield the view's columns), aliased as the view
/// unless the text gives an alias. `None` when there is no such reference or the text does not
/// tokenize.
pub fn with_prepared_statements(sql: &str, rows: impl FnOnce() -> String) -> Option<String> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize_with_location()
        .ok()?;
    let lines = LineIndex::new(sql);
    let sig: Vec<_> = tokens
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_) | Token::EOF))
        .collect();
    let word = |i: usize| match sig.get(i).map(|t| &t.token) {
        Some(Token::Word(w)) => Some(w),
        _ => None,
    };
    let is_name = |i: usize, want: &str| {
        word(i).is_some_and(|w| {
            (w.quote_style.is_none() && w.value.eq_ignore_ascii_case(want))
                || (w.quote_style == Some('"') && w.value == want)
        })
    };
    let is = |i: usize, want: &Token| sig.get(i).is_some_and(|t| &t.token == want);
    let mut edits = Vec::new();
    for i in 0..sig.len() {
        if !is_name(i, "pg_prepared_statements") || is(i + 1, &Token::Period) {
            continue;
        }
        let qualified = i >= 2 && is(i - 1, &Token::Period);
        if qualified && !is_name(i - 2, "pg_catalog") {
            continue;
        }
        let first = if qualified { i - 2 } else { i };
        let from = first >= 1
            && (is(first - 1, &Token::Comma)
                || word(first - 1).is_some_and(|w| {
                    w.quote_style.is_none()
                        && (w.keyword == Keyword::FROM || w.keyword == Keyword::JOIN)
                }));
        if !from {
            continue;
        }
        let start = lines.offset(sig[first].span.start)?;
        let end = lines.offset(sig[i].span.end)?;
        let aliased = match word(i + 1) {
            Some(w) if w.quote_style.is_some() => true,
            Some(w) => !ENDS_TABLE_REF.contains(&w.keyword),
            None => false,
        };
        edits.push((start, end, aliased));
    }
    if edits.is_empty() {
        return None;
    }
    let rows = rows();
    let mut out = String::with_capacity(sql.len() + (rows.len() + 32) * edits.len());
    let mut at = 0;
    for (start, end, aliased) in edits {
        out.push_str(&sql[at..start]);
        out.push('(');
        out.push_str(&rows);
        out.push(')');
        if !aliased {
            out.push_str(" AS pg_prepared_statements");
        }
        at = end;
    }
    out.push_str(&sql[at..]);
    Some(out)
}

/// The words that may follow a table reference that has no alias.
const ENDS_TABLE_REF: &[Keyword] = &[
    Keyword::WHERE,
    Keyword::ORDER,
    Keyword::GROUP,
    Keyword::HAVING,
    Keyword::LIMIT,
    Keyword::OFFSET,
    Keyword::FETCH,
    Keyword::FOR,
    Keyword::WINDOW,
    Keyword::UNION,
    Keyword::EXCEPT,
    Keyword::INTERSECT,
    Keyword::JOIN,
    Keyword::INNER,
    Keyword::LEFT,
    Keyword::RIGHT,
    Keyword::FULL,
    Keyword::CROSS,
    Keyword::NATURAL,
    Keyword::ON,
    Keyword::USING,
    Keyword::RETURNING,
    Keyword::TABLESAMPLE,
];

/// Where (line, column) the name of each `pg_backend_pid()` that is a result column of its
/// own, without an alias, starts.
fn bare_columns(sql: &str) -> HashSet<(u64, u64)> {
    struct Bare(HashSet<(u64, u64)>);
    impl Visitor for Bare {
        type Break = ();
        fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
            collect(&q.body, &mut self.0);
            ControlFlow::Continue(())
        }
    }
    fn collect(body: &SetExpr, out: &mut HashSet<(u64, u64)>) {
        match body {
            SetExpr::Select(s) => {
                for item in &s.projection {
                    let SelectItem::UnnamedExpr(Expr::Function(f)) = item else {
                        continue;
                    };
                    if function_name(&f.name).as_deref() != Some("pg_backend_pid") {
                        continue;
                    }
                    if let Some(ObjectNamePart::Identifier(id)) = f.name.0.last() {
                        let Location { line, column } = id.span.start;
                        out.insert((line, column));
                    }
                }
            }
            SetExpr::SetOperation { left, right, .. } => {
                collect(left, out);
                collect(right, out);
            }
            _ => {}
        }
    }
    let mut bare = Bare(HashSet::new());
    if let Ok(stmts) = Parser::parse_sql(&PostgreSqlDialect {}, sql) {
        let _ = stmts.visit(&mut bare);
    }
    bare.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scan_finds_the_functions_in_any_case() {
        assert!(mentions_own_session(b"select pg_backend_pid()"));
        assert!(mentions_own_session(b"SELECT PG_TERMINATE_BACKEND(1)"));
        assert!(mentions_own_session(b"select Pg_Cancel_Backend($1)"));
        assert!(!mentions_own_session(
            b"SELECT abalance FROM pgbench_accounts WHERE aid = 1"
        ));
        assert!(!mentions_own_session(b"select 1 _"));
    }

    #[test]
    fn a_signal_call_alone_is_read_with_its_argument() {
        let c = signal_call("SELECT pg_terminate_backend(4194305)").expect("read");
        assert_eq!(
            c,
            SignalCall {
                terminate: true,
                pid: PidArg::Literal(4194305),
                column: "pg_terminate_backend".into()
            }
        );
        let c =
            signal_call("select pg_catalog.pg_cancel_backend($1::int4) AS \"Done\"").expect("read");
        assert_eq!(c.pid, PidArg::Param(0));
        assert!(!c.terminate);
        assert_eq!(c.column, "Done");
        let c = signal_call("select pg_terminate_backend($2, 1000);").expect("read");
        assert_eq!(c.pid, PidArg::Param(1));
        for other in [
            "select pg_terminate_backend(pid) from pg_stat_activity",
            "select pg_terminate_backend(1), 2",
            "select pg_cancel_backend(1, 2)",
            "select pg_terminate_backend(1) where false",
            "select myschema.pg_terminate_backend(1)",
            "select pg_terminate_backend(1); select 1",
            "select pg_backend_pid()",
        ] {
            assert_eq!(signal_call(other), None, "{other}");
        }
    }

    #[test]
    fn pg_prepared_statements_becomes_the_given_rows() {
        let rows = || "SELECT 1".to_owned();
        assert_eq!(
            with_prepared_statements("SELECT name FROM pg_prepared_statements", rows).as_deref(),
            Some("SELECT name FROM (SELECT 1) AS pg_prepared_statements")
        );
        assert_eq!(
            with_prepared_statements(
                "select count(*) from pg_catalog.pg_prepared_statements p where p.name = 'a'",
                rows
            )
            .as_deref(),
            Some("select count(*) from (SELECT 1) p where p.name = 'a'")
        );
        assert_eq!(
            with_prepared_statements(
                "SELECT pg_prepared_statements.name FROM PG_PREPARED_STATEMENTS WHERE true;",
                rows
            )
            .as_deref(),
            Some(
                "SELECT pg_prepared_statements.name FROM (SELECT 1) AS pg_prepared_statements \
                 WHERE true;"
            )
        );
        assert_eq!(
            with_prepared_statements("select 'from pg_prepared_statements'", rows),
            None
        );
        assert!(mentions_own_session(
            b"TABLE x; SELECT * FROM Pg_Prepared_Statements"
        ));
    }

    #[test]
    fn pg_backend_pid_becomes_the_constant_and_keeps_its_column_name() {
        assert_eq!(
            with_backend_pid("SELECT pg_backend_pid()", 5000000).as_deref(),
            Some("SELECT (5000000) AS pg_backend_pid")
        );
        assert_eq!(
            with_backend_pid(
                "select a, PG_CATALOG.pg_backend_pid ( ) as p, pg_backend_pid() + 1 from t",
                7
            )
            .as_deref(),
            Some("select a, (7) as p, (7) + 1 from t")
        );
        assert_eq!(
            with_backend_pid(
                "select 'pg_backend_pid()', x.pg_backend_pid() -- pg_backend_pid()",
                7
            ),
            None,
            "strings, comments and other schemas' functions are left alone"
        );
        assert_eq!(
            with_backend_pid(
                "select pid from pg_stat_activity where pid <> pg_backend_pid()",
                9
            )
            .as_deref(),
            Some("select pid from pg_stat_activity where pid <> (9)")
        );
    }
}
