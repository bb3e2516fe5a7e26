//! The *shape* of a query's time predicates: which column is bounded on which side by which
//! literal slot. Values are never stored here, since a [`Classification`](crate::Classification)
//! is shared by every statement with the same fingerprint; [`time_range`](crate::time_range)
//! reads the values out of each statement's own text.

use crate::classify::TableName;
use crate::lexer::{literals, Literal};
use sqlparser::ast::{
    BinaryOperator, CastKind, DataType, Expr, Ident, Query, SetExpr, Statement, TableFactor,
    TableWithJoins, TimezoneInfo, ValueWithSpan,
};
use sqlparser::tokenizer::Location;

/// Which side of a range a bound closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BoundOp {
    /// `col > v` (exclusive) or `col >= v` (inclusive).
    Lower {
        /// `>=` rather than `>`.
        inclusive: bool,
    },
    /// `col < v` (exclusive) or `col <= v` (inclusive).
    Upper {
        /// `<=` rather than `<`.
        inclusive: bool,
    },
    /// `col = v`.
    Eq,
}

/// How the bound's constant is typed in the statement; PostgreSQL reads the text differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimeCast {
    /// A bare constant or parameter: it takes the column's type, and is read as `timestamptz`.
    Untyped,
    /// `::timestamptz`, `TIMESTAMPTZ '…'`, `timestamp with time zone`.
    Timestamptz {
        /// Fractional digits kept, when given.
        precision: Option<u64>,
    },
    /// `::timestamp`, `TIMESTAMP '…'`: a zone in the text is ignored.
    Timestamp {
        /// Fractional digits kept, when given.
        precision: Option<u64>,
    },
    /// `::date`, `DATE '…'`: midnight.
    Date,
}

/// One conjunct of the top-level WHERE that bounds a column by a constant or parameter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TimeBound {
    /// The table the column belongs to: from its qualifier (alias or table name), or the only
    /// relation in FROM. `None` when the column is unqualified and FROM has several relations
    /// or something other than a plain table.
    pub table: Option<TableName>,
    /// Column name, lower-cased unless quoted.
    pub column: String,
    /// Which side it bounds.
    pub op: BoundOp,
    /// Where the value is: an index into [`literals`] of the statement text, the same
    /// numbering as the fingerprint's placeholders. In one text of a shape that entry may be a
    /// constant and in another a `$n` parameter (they share fingerprints), so which one it is
    /// is decided per text, never stored.
    pub literal: usize,
    /// How the value is typed.
    pub cast: TimeCast,
}

/// Maps sqlparser's 1-based line/column (in characters) locations to byte offsets.
struct Locator<'a> {
    sql: &'a str,
    /// Byte offset of each line's start.
    lines: Vec<usize>,
}

impl<'a> Locator<'a> {
    fn new(sql: &'a str) -> Self {
        let mut lines = vec![0];
        lines.extend(sql.match_indices('\n').map(|(i, _)| i + 1));
        Locator { sql, lines }
    }

    fn offset(&self, loc: Location) -> Option<usize> {
        let line_start = *self.lines.get((loc.line as usize).checked_sub(1)?)?;
        let column = (loc.column as usize).checked_sub(1)?;
        let line = &self.sql[line_start..];
        if column == 0 {
            return Some(line_start);
        }
        // Past the end of the text is allowed (an end location).
        let (i, c) = line
            .char_indices()
            .take_while(|(_, c)| *c != '\n')
            .nth(column - 1)?;
        Some(line_start + i + c.len_utf8())
    }
}

/// A relation in FROM, as far as a column qualifier can name it.
struct Relation {
    /// Its alias, or for a table without one its name.
    alias: Option<String>,
    /// For a plain table without alias: its schema-qualified name, for `schema.table.col`.
    qualified: Option<(String, String)>,
    /// The table, when it is a plain table (not a subquery, function or CTE).
    table: Option<TableName>,
}

fn ident(i: &Ident) -> String {
    if i.quote_style.is_some() {
        i.value.clone()
    } else {
        i.value.to_ascii_lowercase()
    }
}

/// The relations of FROM; `None` when some relation's name cannot be known.
fn relations(from: &[TableWithJoins], ctes: &[String]) -> Option<Vec<Relation>> {
    let mut out = Vec::new();
    for twj in from {
        relation(&twj.relation, ctes, &mut out)?;
        for j in &twj.joins {
            relation(&j.relation, ctes, &mut out)?;
        }
    }
    Some(out)
}

fn relation(t: &TableFactor, ctes: &[String], out: &mut Vec<Relation>) -> Option<()> {
    let alias = |a: &Option<sqlparser::ast::TableAlias>| a.as_ref().map(|a| ident(&a.name));
    match t {
        TableFactor::Table {
            name,
            alias: a,
            args,
            ..
        } => {
            let parts: Vec<String> = name
                .0
                .iter()
                .map(|p| Some(ident(p.as_ident()?)))
                .collect::<Option<_>>()?;
            let table = match parts.as_slice() {
                [table] => TableName {
                    schema: None,
                    name: table.clone(),
                },
                [.., schema, table] => TableName {
                    schema: Some(schema.clone()),
                    name: table.clone(),
                },
                [] => return None,
            };
            let is_cte = table.schema.is_none() && ctes.contains(&table.name);
            let plain = args.is_none() && !is_cte;
            out.push(Relation {
                alias: alias(a).or_else(|| Some(table.name.clone())),
                qualified: match (a, &table.schema) {
                    (None, Some(schema)) => Some((schema.clone(), table.name.clone())),
                    _ => None,
                },
                table: plain.then_some(table),
            });
        }
        TableFactor::NestedJoin {
            table_with_joins,
            alias: None,
        } => {
            relation(&table_with_joins.relation, ctes, out)?;
            for j in &table_with_joins.joins {
                relation(&j.relation, ctes, out)?;
            }
        }
        TableFactor::Derived { alias: a, .. }
        | TableFactor::TableFunction { alias: a, .. }
        | TableFactor::Function { alias: a, .. }
        | TableFactor::UNNEST { alias: a, .. }
        | TableFactor::NestedJoin { alias: a, .. } => out.push(Relation {
            alias: alias(a),
            qualified: None,
            table: None,
        }),
        _ => return None,
    }
    Some(())
}

/// The column an expression names, and which relation's: `Some(table)` for a plain table,
/// `None` when unknown but unambiguous (one column of that name, as PostgreSQL requires).
/// `Err` when it is not a column, or its qualifier names something we cannot attribute.
fn column(e: &Expr, rels: &Option<Vec<Relation>>) -> Result<(Option<TableName>, String), ()> {
    let parts: Vec<String> = match e {
        Expr::Identifier(i) => vec![ident(i)],
        Expr::CompoundIdentifier(ids) => ids.iter().map(ident).collect(),
        Expr::Nested(inner) => return column(inner, rels),
        _ => return Err(()),
    };
    let rels = rels.as_ref();
    match parts.as_slice() {
        [col] => {
            let table = match rels.map(Vec::as_slice) {
                Some([only]) => only.table.clone(),
                _ => None,
            };
            Ok((table, col.clone()))
        }
        [qualifier, col] => {
            let rels = rels.ok_or(())?;
            let mut matching = rels
                .iter()
                .filter(|r| r.alias.as_deref() == Some(qualifier.as_str()));
            match (matching.next(), matching.next()) {
                (Some(Relation { table: Some(t), .. }), None) => Ok((Some(t.clone()), col.clone())),
                _ => Err(()),
            }
        }
        [schema, table, col] => {
            let rels = rels.ok_or(())?;
            let want = (schema.clone(), table.clone());
            let mut matching = rels.iter().filter(|r| r.qualified.as_ref() == Some(&want));
            match (matching.next(), matching.next()) {
                (Some(Relation { table: Some(t), .. }), None) => Ok((Some(t.clone()), col.clone())),
                _ => Err(()),
            }
        }
        _ => Err(()),
    }
}

fn time_cast(t: &DataType) -> Option<TimeCast> {
    match t {
        DataType::Timestamp(precision, TimezoneInfo::WithTimeZone | TimezoneInfo::Tz) => {
            Some(TimeCast::Timestamptz {
                precision: *precision,
            })
        }
        DataType::Timestamp(precision, TimezoneInfo::None | TimezoneInfo::WithoutTimeZone) => {
            Some(TimeCast::Timestamp {
                precision: *precision,
            })
        }
        DataType::Date => Some(TimeCast::Date),
        _ => None,
    }
}

/// The slot and typing of a constant-valued bound: a constant or parameter, bare, cast once
/// to a date/time type, or typed (`TIMESTAMPTZ '…'`).
fn value(e: &Expr, loc: &Locator<'_>, lits: &[Literal<'_>]) -> Option<(usize, TimeCast)> {
    let (v, cast): (&ValueWithSpan, TimeCast) = match e {
        Expr::Value(v) => (v, TimeCast::Untyped),
        Expr::Nested(inner) => return value(inner, loc, lits),
        Expr::Cast {
            kind: CastKind::Cast | CastKind::DoubleColon,
            expr,
            data_type,
            format: None,
        } => match &**expr {
            Expr::Value(v) => (v, time_cast(data_type)?),
            _ => return None,
        },
        Expr::TypedString(ts) => (&ts.value, time_cast(&ts.data_type)?),
        _ => return None,
    };
    let start = loc.offset(v.span.start)?;
    let end = loc.offset(v.span.end)?;
    let k = lits.binary_search_by_key(&start, |l| l.start).ok()?;
    (lits[k].end == end).then_some((k, cast))
}

/// Splits the top-level conjunction into its conjuncts.
fn conjuncts<'e>(e: &'e Expr, out: &mut Vec<&'e Expr>) {
    match e {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            conjuncts(left, out);
            conjuncts(right, out);
        }
        Expr::Nested(inner) => conjuncts(inner, out),
        other => out.push(other),
    }
}

/// The time-bound shape of a single statement with text `sql`: only a plain SELECT (a query
/// whose body is one SELECT, CTEs allowed) has one.
pub(crate) fn time_bounds(stmt: &Statement, sql: &str) -> Vec<TimeBound> {
    let Statement::Query(q) = stmt else {
        return Vec::new();
    };
    select_bounds(q, sql)
}

fn select_bounds(q: &Query, sql: &str) -> Vec<TimeBound> {
    let SetExpr::Select(s) = &*q.body else {
        return Vec::new();
    };
    let Some(selection) = &s.selection else {
        return Vec::new();
    };
    let mut parts = Vec::new();
    conjuncts(selection, &mut parts);
    let ctes: Vec<String> = q
        .with
        .iter()
        .flat_map(|w| w.cte_tables.iter().map(|c| ident(&c.alias.name)))
        .collect();
    let rels = relations(&s.from, &ctes);
    let loc = Locator::new(sql);
    let lits = literals(sql);
    let mut out = Vec::new();
    let mut push = |col: &Expr, op: BoundOp, v: &Expr| {
        let Ok((table, column)) = column(col, &rels) else {
            return;
        };
        if let Some((literal, cast)) = value(v, &loc, &lits) {
            out.push(TimeBound {
                table,
                column,
                op,
                literal,
                cast,
            });
        }
    };
    for part in parts {
        match part {
            Expr::BinaryOp { left, op, right } => {
                let op = match op {
                    BinaryOperator::Gt => BoundOp::Lower { inclusive: false },
                    BinaryOperator::GtEq => BoundOp::Lower { inclusive: true },
                    BinaryOperator::Lt => BoundOp::Upper { inclusive: false },
                    BinaryOperator::LtEq => BoundOp::Upper { inclusive: true },
                    BinaryOperator::Eq => BoundOp::Eq,
                    _ => continue,
                };
                if column(left, &rels).is_ok() {
                    push(left, op, right);
                } else {
                    // `v <= col` bounds col from below.
                    let reversed = match op {
                        BoundOp::Lower { inclusive } => BoundOp::Upper { inclusive },
                        BoundOp::Upper { inclusive } => BoundOp::Lower { inclusive },
                        BoundOp::Eq => BoundOp::Eq,
                    };
                    push(right, reversed, left);
                }
            }
            Expr::Between {
                expr,
                negated: false,
                low,
                high,
            } => {
                push(expr, BoundOp::Lower { inclusive: true }, low);
                push(expr, BoundOp::Upper { inclusive: true }, high);
            }
            _ => {}
        }
    }
    out
}
