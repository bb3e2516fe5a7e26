//! Statement classification: what a statement does, which tables it touches, and whether it is
//! *provably* read-only (the only statements that may go to a replica).

use crate::functions::{builtin_volatility, FunctionLookup, Volatility};
use crate::timebound::{time_bounds, TimeBound};
use sqlparser::ast::{
    Expr, Function, ObjectName, Query, Select, SetExpr, Statement, TableFactor,
    TransactionAccessMode, TransactionMode, Visit, Visitor,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use std::ops::ControlFlow;

/// sqlparser's recursion limit: deeper nesting is a parse error (routed to the primary), never
/// a stack overflow.
pub const RECURSION_LIMIT: usize = 50;

/// What a statement is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// A query.
    Read,
    /// INSERT, UPDATE, DELETE, MERGE, COPY FROM, TRUNCATE.
    Write,
    /// Schema and privilege changes.
    Ddl,
    /// BEGIN, COMMIT, ROLLBACK, SAVEPOINT…
    Transaction,
    /// SET, PREPARE, LISTEN, cursors and other session state.
    Session,
    /// Anything else, including what could not be parsed.
    Utility,
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
    /// Transaction control, when the string is a single transaction statement.
    pub tx: Option<TxControl>,
    /// Number of statements.
    pub statements: usize,
    /// Why it is not read-only (for logs and tests).
    pub reason: Option<&'static str>,
    /// For a single plain SELECT: its time predicates' shape (which column is bounded by which
    /// literal slot). Never values: those are read per statement text by
    /// [`time_range`](crate::time_range).
    pub time_bounds: Vec<TimeBound>,
}

impl Classification {
    fn unparsable(reason: &'static str) -> Self {
        Classification {
            kind: Kind::Utility,
            read_only: false,
            cacheable: false,
            tables: Vec::new(),
            tx: None,
            statements: 0,
            reason: Some(reason),
            time_bounds: Vec::new(),
        }
    }
}

/// Classifies `sql` (one or more statements) with PostgreSQL's dialect.
pub fn classify(sql: &str, lookup: &dyn FunctionLookup) -> Classification {
    let dialect = PostgreSqlDialect {};
    let parsed = Parser::new(&dialect)
        .with_recursion_limit(RECURSION_LIMIT)
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_statements());
    let statements = match parsed {
        Ok(s) if !s.is_empty() => s,
        Ok(_) => return Classification::unparsable("empty"),
        Err(_) => return Classification::unparsable("not parsable"),
    };
    let mut walker = Walker {
        lookup,
        writes: None,
        immutable: true,
        tables: Vec::new(),
    };
    let mut kind = Kind::Read;
    let mut read_only = true;
    let mut reason = None;
    let mut tx = None;
    for stmt in &statements {
        let (k, ro, why, t) = top_level(stmt);
        kind = kind.max(k);
        tx = t;
        if !ro {
            read_only = false;
            reason = reason.or(why);
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
    if statements.len() > 1 {
        tx = None;
    }
    walker.tables.sort();
    walker.tables.dedup();
    let catalogs = walker.tables.iter().any(|t| {
        matches!(
            t.schema.as_deref(),
            Some("pg_catalog" | "information_schema")
        ) || (t.schema.is_none() && t.name.starts_with("pg_"))
    });
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
        tx,
        statements: statements.len(),
        reason,
        time_bounds,
    }
}

/// The top-level verdict: kind, whether the statement type can be read-only, why not, tx.
fn top_level(stmt: &Statement) -> (Kind, bool, Option<&'static str>, Option<TxControl>) {
    use Statement as S;
    match stmt {
        S::Query(_) => (Kind::Read, true, None, None),
        S::Explain {
            analyze, statement, ..
        } => {
            // EXPLAIN ANALYZE runs the statement; plain EXPLAIN of anything is read-only.
            let runs_write = *analyze && !matches!(**statement, S::Query(_));
            (
                Kind::Read,
                !runs_write,
                runs_write.then_some("EXPLAIN ANALYZE of a write"),
                None,
            )
        }
        S::ShowVariable { .. }
        | S::ShowVariables { .. }
        | S::ShowTables { .. }
        | S::ShowColumns { .. } => (Kind::Read, true, None, None),
        S::Copy { to: true, .. } => (Kind::Read, true, None, None),
        S::Copy { to: false, .. } => (Kind::Write, false, Some("COPY FROM"), None),
        S::Insert(_) | S::Update(_) | S::Delete(_) | S::Merge(_) => {
            (Kind::Write, false, Some("writes"), None)
        }
        S::Truncate(_) => (Kind::Write, false, Some("TRUNCATE"), None),
        S::StartTransaction { modes, .. } => {
            let read_only = modes.iter().any(|m| {
                matches!(
                    m,
                    TransactionMode::AccessMode(TransactionAccessMode::ReadOnly)
                )
            });
            (
                Kind::Transaction,
                false,
                Some("transaction control"),
                Some(TxControl::Begin { read_only }),
            )
        }
        S::Commit { .. } => (
            Kind::Transaction,
            false,
            Some("transaction control"),
            Some(TxControl::Commit),
        ),
        S::Rollback { .. } => (
            Kind::Transaction,
            false,
            Some("transaction control"),
            Some(TxControl::Rollback),
        ),
        S::Savepoint { .. } | S::ReleaseSavepoint { .. } => {
            (Kind::Transaction, false, Some("transaction control"), None)
        }
        S::Set(set) => {
            let text = set.to_string().to_ascii_uppercase();
            if text.starts_with("SET TRANSACTION") && text.contains("READ ONLY") {
                (
                    Kind::Transaction,
                    false,
                    Some("transaction control"),
                    Some(TxControl::SetReadOnly),
                )
            } else {
                (Kind::Session, false, Some("session state"), None)
            }
        }
        S::Reset(_)
        | S::Discard { .. }
        | S::Prepare { .. }
        | S::Deallocate { .. }
        | S::Execute { .. }
        | S::LISTEN { .. }
        | S::UNLISTEN { .. }
        | S::Declare { .. }
        | S::Fetch { .. }
        | S::Close { .. }
        | S::Use(_)
        | S::Load { .. } => (Kind::Session, false, Some("session state"), None),
        S::NOTIFY { .. } => (Kind::Write, false, Some("NOTIFY"), None),
        S::Call(_) => (Kind::Write, false, Some("CALL"), None),
        S::Lock { .. } | S::LockTables { .. } => (Kind::Write, false, Some("LOCK"), None),
        S::Grant { .. }
        | S::Revoke { .. }
        | S::GrantRole { .. }
        | S::RevokeRole { .. }
        | S::AlterDefaultPrivileges { .. } => (Kind::Ddl, false, Some("privileges"), None),
        S::Vacuum(_) | S::Analyze { .. } | S::RefreshMaterializedView { .. } => {
            (Kind::Utility, false, Some("maintenance"), None)
        }
        other => {
            let name = format!("{other:?}");
            if name.starts_with("Create")
                || name.starts_with("Alter")
                || name.starts_with("Drop")
                || name.starts_with("Comment")
                || name.starts_with("RenameTable")
            {
                (Kind::Ddl, false, Some("DDL"), None)
            } else {
                (Kind::Utility, false, Some("not a query"), None)
            }
        }
    }
}

/// Walks every nested statement, query and expression.
struct Walker<'a> {
    lookup: &'a dyn FunctionLookup,
    /// Why the statement writes, if something nested does.
    writes: Option<&'static str>,
    /// Only immutable functions seen.
    immutable: bool,
    tables: Vec<TableName>,
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
        let verdict = self
            .lookup
            .override_volatility(schema, name)
            .or(builtin)
            .or_else(|| self.lookup.volatility(schema, name));
        match verdict {
            Some(Volatility::Immutable) => {}
            Some(Volatility::Stable | Volatility::VolatileReadOnly) => self.immutable = false,
            Some(Volatility::Writes) => self.write("function with side effects"),
            None => {
                self.immutable = false;
                self.write("function not known to be read-only");
            }
        }
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
        self.tables.push(table_name(r));
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        match e {
            Expr::Function(f) => self.function(f),
            // Parsed as special forms rather than calls.
            Expr::Extract { .. } | Expr::AtTimeZone { .. } => self.immutable = false,
            _ => {}
        }
        ControlFlow::Continue(())
    }
}
