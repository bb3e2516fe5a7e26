//! Where an INSERT or UPDATE puts its values: which column each literal or parameter is
//! written to, with the literal's place in the text so it can be replaced.

use sqlparser::ast::{
    AssignmentTarget, Expr, ObjectName, ObjectNamePart, SetExpr, Statement, TableFactor,
    TableObject, Value,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::Location;

/// The column a value is written to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetColumn {
    /// Named in the statement (lower case unless quoted).
    Named(String),
    /// The n-th column of the table (0-based): an INSERT without a column list.
    Position(usize),
}

/// What is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// A string literal at `start..end` (bytes, quotes included), with its value.
    Literal {
        /// First byte of the literal.
        start: usize,
        /// One past its last byte.
        end: usize,
        /// Its value.
        value: String,
    },
    /// Parameter `$n`, as a 0-based index.
    Param(usize),
    /// `NULL` or `DEFAULT`.
    Nothing,
    /// Any other expression (a number, a function call, …).
    Other,
}

/// One value written to one column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Where to.
    pub column: TargetColumn,
    /// What.
    pub value: Written,
}

/// The values an INSERT … VALUES or UPDATE … SET writes to one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteTargets {
    /// The table's schema, when qualified.
    pub schema: Option<String>,
    /// The table.
    pub table: String,
    /// Every value, in text order.
    pub targets: Vec<Target>,
    /// Values come from something other than VALUES or SET (INSERT … SELECT, COPY): they
    /// cannot be attributed.
    pub opaque: bool,
}

/// The write targets of `sql` when it is one INSERT or UPDATE; `None` otherwise.
pub fn write_targets(sql: &str) -> Option<WriteTargets> {
    let mut stmts = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
    if stmts.len() != 1 {
        return None;
    }
    let lines = LineIndex::new(sql);
    match stmts.pop()? {
        Statement::Insert(ins) => {
            let TableObject::TableName(name) = &ins.table else {
                return None;
            };
            let (schema, table) = split_name(name)?;
            let mut out = WriteTargets {
                schema,
                table,
                targets: Vec::new(),
                opaque: false,
            };
            let columns: Vec<Option<String>> = ins.columns.iter().map(last_part).collect();
            match ins.source.as_deref().map(|q| q.body.as_ref()) {
                Some(SetExpr::Values(values)) => {
                    for row in &values.rows {
                        for (i, e) in row.content.iter().enumerate() {
                            let column = if columns.is_empty() {
                                TargetColumn::Position(i)
                            } else {
                                match columns.get(i) {
                                    Some(Some(c)) => TargetColumn::Named(c.clone()),
                                    _ => continue,
                                }
                            };
                            out.targets.push(Target {
                                column,
                                value: written(e, sql, &lines),
                            });
                        }
                    }
                }
                _ => out.opaque = true,
            }
            if let Some(sqlparser::ast::OnInsert::OnConflict(c)) = &ins.on {
                if let sqlparser::ast::OnConflictAction::DoUpdate(u) = &c.action {
                    assignments(&u.assignments, sql, &lines, &mut out.targets);
                }
            }
            Some(out)
        }
        Statement::Update(up) => {
            let TableFactor::Table { name, .. } = &up.table.relation else {
                return None;
            };
            let (schema, table) = split_name(name)?;
            let mut out = WriteTargets {
                schema,
                table,
                targets: Vec::new(),
                opaque: up.from.is_some(),
            };
            assignments(&up.assignments, sql, &lines, &mut out.targets);
            Some(out)
        }
        _ => None,
    }
}

fn assignments(
    list: &[sqlparser::ast::Assignment],
    sql: &str,
    lines: &LineIndex,
    out: &mut Vec<Target>,
) {
    for a in list {
        if let AssignmentTarget::ColumnName(c) = &a.target {
            if let Some(c) = last_part(c) {
                out.push(Target {
                    column: TargetColumn::Named(c),
                    value: written(&a.value, sql, lines),
                });
            }
        }
    }
}

fn ident(part: &ObjectNamePart) -> Option<String> {
    match part {
        ObjectNamePart::Identifier(i) => Some(if i.quote_style.is_some() {
            i.value.clone()
        } else {
            i.value.to_lowercase()
        }),
        ObjectNamePart::Function(_) => None,
    }
}

fn last_part(name: &ObjectName) -> Option<String> {
    name.0.last().and_then(ident)
}

fn split_name(name: &ObjectName) -> Option<(Option<String>, String)> {
    let parts: Vec<String> = name.0.iter().map(ident).collect::<Option<_>>()?;
    match parts.as_slice() {
        [t] => Some((None, t.clone())),
        [s, t] => Some((Some(s.clone()), t.clone())),
        [_, s, t] => Some((Some(s.clone()), t.clone())),
        _ => None,
    }
}

fn written(e: &Expr, sql: &str, lines: &LineIndex) -> Written {
    let Expr::Value(v) = e else {
        return Written::Other;
    };
    match &v.value {
        Value::SingleQuotedString(s) | Value::EscapedStringLiteral(s) => {
            let start = lines.offset(v.span.start);
            let end = lines.offset(v.span.end);
            match (start, end) {
                (Some(start), Some(end)) if start < end && end <= sql.len() => Written::Literal {
                    start,
                    end,
                    value: s.clone(),
                },
                _ => Written::Other,
            }
        }
        Value::Placeholder(p) => p
            .strip_prefix('$')
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n >= 1)
            .map_or(Written::Other, |n| Written::Param(n - 1)),
        Value::Null => Written::Nothing,
        _ => Written::Other,
    }
}

/// Byte offsets of line starts, to turn sqlparser's (line, column in characters) into bytes.
pub(crate) struct LineIndex<'a> {
    sql: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub(crate) fn new(sql: &'a str) -> Self {
        let mut starts = vec![0];
        starts.extend(sql.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { sql, starts }
    }

    /// The byte offset of `loc` (1-based line and character column). A span's end is the
    /// position just past the token.
    pub(crate) fn offset(&self, loc: Location) -> Option<usize> {
        let line_start = *self.starts.get((loc.line as usize).checked_sub(1)?)?;
        let rest = self.sql.get(line_start..)?;
        let col = (loc.column as usize).checked_sub(1)?;
        match rest.char_indices().nth(col) {
            Some((i, _)) => Some(line_start + i),
            None => (rest.chars().count() == col).then_some(self.sql.len()),
        }
    }
}

/// `value` as a PostgreSQL string literal (standard-conforming: quotes doubled).
pub fn quote_literal(value: &str) -> String {
    let mut s = String::with_capacity(value.len() + 2);
    s.push('\'');
    for c in value.chars() {
        if c == '\'' {
            s.push('\'');
        }
        s.push(c);
    }
    s.push('\'');
    s
}

/// Whether `sql` may store values anywhere: an INSERT, UPDATE, MERGE or COPY FROM at any
/// depth (a data-modifying CTE too), procedural code, or text that does not parse. A
/// `DELETE` or `TRUNCATE` stores nothing. For field encryption, which must refuse a write
/// whose values it cannot see.
pub fn stores_values(sql: &str) -> bool {
    use sqlparser::ast::{Visit, Visitor};
    use std::ops::ControlFlow;
    struct Stores;
    impl Visitor for Stores {
        type Break = ();
        fn pre_visit_statement(&mut self, s: &Statement) -> ControlFlow<()> {
            match s {
                Statement::Insert(_)
                | Statement::Update(_)
                | Statement::Merge(_)
                | Statement::Copy { to: false, .. }
                | Statement::Call(_)
                | Statement::Execute { .. }
                | Statement::Prepare { .. } => ControlFlow::Break(()),
                _ => ControlFlow::Continue(()),
            }
        }
        fn pre_visit_query(&mut self, q: &sqlparser::ast::Query) -> ControlFlow<()> {
            match *q.body {
                SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Merge(_) => {
                    ControlFlow::Break(())
                }
                _ => ControlFlow::Continue(()),
            }
        }
    }
    match Parser::parse_sql(&PostgreSqlDialect {}, sql) {
        Ok(stmts) => stmts.iter().any(|s| s.visit(&mut Stores).is_break()),
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn literal_text(sql: &str, t: &Target) -> String {
        match &t.value {
            Written::Literal { start, end, .. } => sql[*start..*end].to_owned(),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn insert_with_columns_literals_and_params() {
        let sql = "INSERT INTO public.patients (name, ssn) VALUES ('Ann', '123-45'), ($1, $2)";
        let w = write_targets(sql).expect("insert");
        assert_eq!(w.schema.as_deref(), Some("public"));
        assert_eq!(w.table, "patients");
        assert_eq!(w.targets.len(), 4);
        assert_eq!(w.targets[1].column, TargetColumn::Named("ssn".into()));
        assert_eq!(literal_text(sql, &w.targets[1]), "'123-45'");
        assert_eq!(w.targets[3].value, Written::Param(1));
    }

    #[test]
    fn insert_without_columns_is_positional_and_multiline_unicode() {
        let sql = "INSERT INTO patients\nVALUES ('Zoë',\n  'O''Brien', NULL, 42, now())";
        let w = write_targets(sql).expect("insert");
        assert_eq!(w.targets[1].column, TargetColumn::Position(1));
        assert_eq!(literal_text(sql, &w.targets[1]), "'O''Brien'");
        assert_eq!(
            w.targets[1].value,
            Written::Literal {
                start: sql.find("'O'").unwrap(),
                end: sql.find(", NULL").unwrap(),
                value: "O'Brien".into()
            }
        );
        assert_eq!(w.targets[2].value, Written::Nothing);
        assert_eq!(w.targets[3].value, Written::Other);
        assert_eq!(literal_text(sql, &w.targets[0]), "'Zoë'");
    }

    #[test]
    fn update_and_upsert_assignments() {
        let sql = "UPDATE patients SET ssn = 'x', name = $3 WHERE id = 1";
        let w = write_targets(sql).expect("update");
        assert_eq!(w.targets.len(), 2);
        assert_eq!(literal_text(sql, &w.targets[0]), "'x'");
        assert_eq!(w.targets[1].value, Written::Param(2));
        let sql =
            "INSERT INTO p (id, ssn) VALUES (1, 'a') ON CONFLICT (id) DO UPDATE SET ssn = 'b'";
        let w = write_targets(sql).expect("upsert");
        assert_eq!(w.targets.len(), 3);
        assert_eq!(literal_text(sql, &w.targets[2]), "'b'");
    }

    #[test]
    fn others_are_not_writes_or_opaque() {
        assert!(write_targets("SELECT 1").is_none());
        assert!(
            write_targets("INSERT INTO a SELECT * FROM b")
                .expect("ins")
                .opaque
        );
        assert_eq!(quote_literal("O'B"), "'O''B'");
    }
}
