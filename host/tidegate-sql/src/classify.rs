//! Statement classification: what a statement does, which tables it touches, and whether it is
//! *provably* read-only (the only statements that may go to a replica).

use crate::functions::{builtin_volatility, determined_by_settings, FunctionLookup, Volatility};
use crate::timebound::{time_bounds, TimeBound};
use sqlparser::ast::{
    Expr, Function, ObjectName, Query, Select, SetExpr, Statement, TableFactor, Visit, Visitor,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use std::ops::ControlFlow;
use top::top_level;

mod top;

/// sqlparser's recursion limit: deeper nesting is a parse error (routed to the primary), never
/// a stack overflow.
pub const RECURSION_LIMIT: usize = 50;

/// What a statement is. The order is the order of danger: a string of several statements is
/// as dangerous as its most dangerous one (`DELETE …; COMMIT` is a write).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// A query.
    Read,
    /// BEGIN, COMMIT, ROLLBACK, SAVEPOINT…
    Transaction,
    /// SET, PREPARE of a read, LISTEN, cursors and other session state.
    Session,
    /// Maintenance and other statements that change no data (VACUUM, ANALYZE, REFRESH).
    Utility,
    /// INSERT, UPDATE, DELETE, MERGE, COPY FROM, TRUNCATE, LOCK, NOTIFY.
    Write,
    /// Schema and privilege changes, and role changes (`SET ROLE`).
    Ddl,
    /// What TideGate cannot establish: a statement that does not parse, procedural code
    /// (`DO`, `CALL`), `EXECUTE` of an SQL-level prepared statement, `COPY` to or from a
    /// program or a server file, `LOAD`. The most dangerous thing it could be: it may touch
    /// every table ([`Classification::every_table`]), it is never cached and it invalidates
    /// everything.
    Unknown,
}

/// Transaction control carried by a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxControl {
    /// BEGIN / START TRANSACTION; `read_only` when declared READ ONLY.
    Begin {
        /// Declared READ ONLY.
        read_only: bool,
    },
    /// COMMIT / END.
    Commit,
    /// ROLLBACK / ABORT.
    Rollback,
    /// SET TRANSACTION READ ONLY.
    SetReadOnly,
}

/// A table as written in the statement, lower-cased unless quoted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName {
    /// Schema, when qualified.
    pub schema: Option<String>,
    /// Table name.
    pub name: String,
}

/// The verdict for a query string (all of its statements).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    /// The strongest kind among the statements.
    pub kind: Kind,
    /// Provably read-only: no writes, locks, session effects or functions not known to be
    /// read-only. Only these may run on a replica.
    pub read_only: bool,
    /// Queries only (no SHOW or EXPLAIN), read-only and deterministic (immutable functions
    /// only, no system catalogs, no
    /// TABLESAMPLE): a candidate for the result cache.
    pub cacheable: bool,
    /// Tables referenced, sorted and deduplicated.
    pub tables: Vec<TableName>,
    /// The statement may touch tables beyond [`Classification::tables`]: its relations could
    /// not be established (procedural code, DDL on schemas or functions, a role change, a
    /// call of a function that is not built in, `TRUNCATE … CASCADE`…). Policy must treat it
    /// as touching every table.
    pub every_table: bool,
    /// Transaction control, when the string is a single transaction statement.
    pub tx: Option<TxControl>,
    /// Number of statements.
    pub statements: usize,
    /// Why it is not read-only (for logs and tests).
    pub reason: Option<&'static str>,
    /// Why TideGate refuses it for every user, whatever the policy: it would change how
    /// TideGate reads later statements (`SET standard_conforming_strings = off`).
    pub refused: Option<&'static str>,
    /// For a single plain SELECT: its time predicates' shape (which column is bounded by which
    /// literal slot). Never values: those are read per statement text by
    /// [`time_range`](crate::time_range).
    pub time_bounds: Vec<TimeBound>,
}

impl Classification {
    fn unparsable(reason: &'static str) -> Self {
        Classification {
            kind: Kind::Unknown,
            read_only: false,
            cacheable: false,
            tables: Vec::new(),
            every_table: true,
            tx: None,
            statements: 0,
            reason: Some(reason),
            refused: None,
            time_bounds: Vec::new(),
        }
    }
}

/// Classifies `sql` (one or more statements) with PostgreSQL's dialect.
pub fn classify(sql: &str, lookup: &dyn FunctionLookup) -> Classification {
    let statements = match parse(sql) {
        Ok(s) => s,
        Err(why) => return Classification::unparsable(why),
    };
    let mut walker = Walker {
        lookup,
        writes: None,
        immutable: true,
        tables: Vec::new(),
        every_table: false,
        string_name: false,
    };
    let mut kind = Kind::Read;
    let mut read_only = true;
    let mut reason = None;
    let mut tx = None;
    let mut refused = None;
    for stmt in &statements {
        let top = top_level(stmt);
        refused = refused.or(top.refused);
        kind = kind.max(top.kind);
        tx = top.tx;
        walker.every_table |= top.every_table;
        walker.tables.extend(top.tables);
        if !top.read_only {
            read_only = false;
            reason = reason.or(top.why);
        }
        let _ = stmt.visit(&mut walker);
    }
    if let Some(why) = walker.writes {
        read_only = false;
        reason = reason.or(Some(why));
        if kind == Kind::Read {
            kind = Kind::Write;
        }
    }
    if walker.string_name {
        return Classification::unparsable("a string constant as a name");
    }
    if statements.len() > 1 {
        tx = None;
    }
    walker.tables.sort();
    walker.tables.dedup();
    let catalogs = names_a_catalog(&walker.tables);
    let time_bounds = match statements.as_slice() {
        [stmt] => time_bounds(stmt, sql),
        _ => Vec::new(),
    };
    // SHOW and EXPLAIN are read-only, but what they print is not data the cache can track.
    let queries = statements.iter().all(|s| matches!(s, Statement::Query(_)));
    Classification {
        kind,
        read_only,
        cacheable: read_only && kind == Kind::Read && walker.immutable && !catalogs && queries,
        tables: walker.tables,
        every_table: walker.every_table,
        tx,
        statements: statements.len(),
        reason,
        refused,
        time_bounds,
    }
}

/// The statements of `sql` as sqlparser reads them, or why there are none to trust: the text
/// may not read the same to PostgreSQL, is empty, or does not parse.
fn parse(sql: &str) -> Result<Vec<Statement>, &'static str> {
    if crate::lexer::readings_may_differ(sql.as_bytes()) {
        // sqlparser's reading may not be PostgreSQL's (`1 </* ' */ 2; DELETE …` is one
        // SELECT to sqlparser, a SELECT and a DELETE to PostgreSQL): nothing it says holds.
        return Err("PostgreSQL and sqlparser may read it differently");
    }
    let dialect = PostgreSqlDialect {};
    let parsed = Parser::new(&dialect)
        .with_recursion_limit(RECURSION_LIMIT)
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_statements());
    match parsed {
        Ok(s) if !s.is_empty() => Ok(s),
        Ok(_) => Err("empty"),
        Err(_) => table_command(sql).ok_or("not parsable"),
    }
}

/// Whether one of `tables` is a system catalog: in `pg_catalog` or `information_schema`, or
/// an unqualified `pg_…` name.
fn names_a_catalog(tables: &[TableName]) -> bool {
    tables.iter().any(|t| {
        matches!(
            t.schema.as_deref(),
            Some("pg_catalog" | "information_schema")
        ) || (t.schema.is_none() && t.name.starts_with("pg_"))
    })
}

/// `TABLE name …`, which sqlparser does not parse, read as the `SELECT * FROM name …` it is
/// short for (one statement only).
fn table_command(sql: &str) -> Option<Vec<Statement>> {
    let rest = sql.trim_start();
    let word = rest.get(..6)?;
    if !word.eq_ignore_ascii_case("table ") {
        return None;
    }
    let select = format!("SELECT * FROM {}", &rest[6..]);
    let statements = Parser::new(&PostgreSqlDialect {})
        .with_recursion_limit(RECURSION_LIMIT)
        .try_with_sql(&select)
        .and_then(|mut p| p.parse_statements())
        .ok()?;
    (statements.len() == 1).then_some(statements)
}

/// Walks every nested statement, query and expression.
struct Walker<'a> {
    lookup: &'a dyn FunctionLookup,
    /// Why the statement writes, if something nested does.
    writes: Option<&'static str>,
    /// Only immutable functions seen.
    immutable: bool,
    tables: Vec<TableName>,
    /// A function that is not built in may read or write any table.
    every_table: bool,
    /// A relation was named by a string constant.
    string_name: bool,
}

impl Walker<'_> {
    fn write(&mut self, why: &'static str) {
        self.writes.get_or_insert(why);
    }

    fn function(&mut self, f: &Function) {
        let parts: Vec<String> = f
            .name
            .0
            .iter()
            .map(|p| ident_text(&p.to_string()))
            .collect();
        let (schema, name) = match parts.as_slice() {
            [name] => (None, name.as_str()),
            [.., schema, name] => (Some(schema.as_str()), name.as_str()),
            [] => return,
        };
        let builtin = match schema {
            None | Some("pg_catalog" | "public") => builtin_volatility(name),
            _ => None,
        };
        if builtin.is_none() {
            // A function of the database's own: its body may read or write any table.
            self.every_table = true;
        }
        let verdict = self
            .lookup
            .override_volatility(schema, name)
            .or(builtin)
            .or_else(|| self.lookup.volatility(schema, name));
        match verdict {
            Some(Volatility::Immutable) => {}
            // Stable only through settings in every cache key: as good as immutable here.
            Some(Volatility::Stable)
                if builtin.is_some() && determined_by_settings(name, argument_count(f)) => {}
            Some(Volatility::Stable | Volatility::VolatileReadOnly) => self.immutable = false,
            Some(Volatility::Writes) => self.write("function with side effects"),
            None => {
                self.immutable = false;
                self.write("function not known to be read-only");
            }
        }
    }
}

fn argument_count(f: &Function) -> usize {
    match &f.args {
        sqlparser::ast::FunctionArguments::List(l) => l.args.len(),
        _ => 0,
    }
}

fn ident_text(s: &str) -> String {
    match s.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        Some(quoted) => quoted.replace("\"\"", "\""),
        None => s.to_ascii_lowercase(),
    }
}

fn table_name(name: &ObjectName) -> TableName {
    let parts: Vec<String> = name.0.iter().map(|p| ident_text(&p.to_string())).collect();
    match parts.as_slice() {
        [.., schema, table] => TableName {
            schema: Some(schema.clone()),
            name: table.clone(),
        },
        [table] => TableName {
            schema: None,
            name: table.clone(),
        },
        [] => TableName {
            schema: None,
            name: String::new(),
        },
    }
}

impl Walker<'_> {
    /// `TABLE name` (a query body the visitor does not report as a relation), in set
    /// operations too; nested queries are visited on their own.
    fn table_commands(&mut self, body: &SetExpr) {
        match body {
            SetExpr::Table(t) => match &t.table_name {
                Some(name) => self.tables.push(TableName {
                    schema: t.schema_name.as_ref().map(|s| ident_text(&s.to_string())),
                    name: ident_text(&name.to_string()),
                }),
                None => self.every_table = true,
            },
            SetExpr::SetOperation { left, right, .. } => {
                self.table_commands(left);
                self.table_commands(right);
            }
            _ => {}
        }
    }
}

impl Visitor for Walker<'_> {
    type Break = ();

    fn pre_visit_statement(&mut self, stmt: &Statement) -> ControlFlow<()> {
        // Statements nested anywhere, e.g. a data-modifying CTE.
        match stmt {
            Statement::Insert(_)
            | Statement::Update(_)
            | Statement::Delete(_)
            | Statement::Merge(_) => self.write("data-modifying statement"),
            Statement::Query(_) | Statement::Explain { .. } | Statement::Copy { to: true, .. } => {}
            Statement::ShowVariable { .. } | Statement::ShowVariables { .. } => {}
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        if !q.locks.is_empty() {
            self.write("row locking (FOR UPDATE/SHARE)");
        }
        if matches!(
            *q.body,
            SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_)
        ) {
            self.write("data-modifying statement");
        }
        self.table_commands(&q.body);
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, s: &Select) -> ControlFlow<()> {
        if s.into.is_some() {
            self.write("SELECT INTO");
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, t: &TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table {
            sample: Some(_), ..
        } = t
        {
            self.immutable = false;
        }
        if let TableFactor::Table {
            args: Some(_),
            name,
            ..
        } = t
        {
            // A set-returning function in FROM: judge it like a call.
            let f = Function {
                name: name.clone(),
                uses_odbc_syntax: false,
                parameters: sqlparser::ast::FunctionArguments::None,
                args: sqlparser::ast::FunctionArguments::None,
                filter: None,
                null_treatment: None,
                over: None,
                within_group: Vec::new(),
            };
            self.function(&f);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, r: &ObjectName) -> ControlFlow<()> {
        if r.0.iter().any(|p| p.to_string().starts_with('\'')) {
            // sqlparser takes a string constant as a name (`DELETE FROM 'x'`), PostgreSQL
            // does not: a verdict shared by every constant must not name one of them.
            self.string_name = true;
        }
        self.tables.push(table_name(r));
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        // EXTRACT and AT TIME ZONE are parsed as special forms rather than calls: like
        // date_part and timezone(), they depend on their arguments and TimeZone only (see
        // `determined_by_settings`), so they do not make a read uncacheable.
        if let Expr::Function(f) = e {
            self.function(f);
        }
        ControlFlow::Continue(())
    }
}
