//! The continuous-aggregate rewrite: a query that computes exactly what a continuous aggregate
//! stores is rewritten to read the aggregate instead of the raw hypertable.
//!
//! Only one shape is recognised, and only exactly:
//!
//! ```sql
//! SELECT time_bucket('<bucket>', <time>) [AS b], <g1>, …, <agg1> [AS a1], …
//! FROM <hypertable> [[AS] alias]
//! [WHERE <conditions on the time column and the group columns>]
//! GROUP BY <b | ordinal | the time_bucket expression>, <g1 | ordinal>, …
//! [ORDER BY <output columns, ordinals, group columns or aggregates> [ASC|DESC] [NULLS …], …]
//! [LIMIT n] [OFFSET n]
//! ```
//!
//! where the bucket equals the aggregate's, the group columns are exactly the aggregate's, and
//! every aggregate expression is one the aggregate stores. Anything else is left alone.

use crate::lexer::Kind;
use crate::scan::{quote_ident, Scan};
use tidegate_plugin_sdk::prelude::*;

mod model;
mod query;

pub use model::{Bucket, Cagg, Config};
use query::{Item, OrderItem, Pieces, Query};

/// An expression's tokens `[a, b)` as one canonical string: words lower-cased, qualifiers in
/// `quals` dropped, a space only between adjacent words. `None` if it holds a qualified name
/// whose qualifier is not in `quals`.
pub fn normalize(scan: &Scan<'_>, a: usize, b: usize, quals: &[String]) -> Option<String> {
    let mut out = String::new();
    let mut prev_wordish = false;
    let mut i = a;
    while i < b {
        if scan.is(i + 1, Kind::Dot) && i + 2 < b {
            let q = scan.t[i].ident(scan.sql)?;
            if !quals.contains(&q) {
                return None;
            }
            i += 2;
            continue;
        }
        let t = scan.t[i];
        let wordish = matches!(
            t.kind,
            Kind::Word | Kind::Quoted | Kind::Number | Kind::Param | Kind::String
        );
        if wordish && prev_wordish {
            out.push(' ');
        }
        match t.kind {
            // A keyword stays a keyword; a quoted name is quoted only if it must be.
            Kind::Word => out.push_str(&t.text(scan.sql).to_ascii_lowercase()),
            Kind::Quoted => out.push_str(&quote_ident(&t.ident(scan.sql)?)),
            _ => out.push_str(t.text(scan.sql)),
        }
        prev_wordish = wordish;
        i += 1;
    }
    Some(out)
}

/// Token ranges split at commas of depth `depth`.
fn split(scan: &Scan<'_>, a: usize, b: usize, depth: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = a;
    for i in a..b {
        if scan.is(i, Kind::Comma) && scan.depth[i] == depth {
            out.push((start, i));
            start = i + 1;
        }
    }
    out.push((start, b));
    out
}

/// Renders tokens `[a, b)` as in the text, one space where the text had any gap.
fn render(scan: &Scan<'_>, a: usize, b: usize) -> String {
    let mut out = Pieces::default();
    for i in a..b {
        out.push(scan, i, i + 1, scan.text(i));
    }
    out.text
}

/// Words that end a GROUP BY list (the tail parser accepts only ORDER, LIMIT and OFFSET).
pub(super) const GROUP_ENDS: &[&str] = &[
    "order",
    "limit",
    "offset",
    "having",
    "window",
    "fetch",
    "for",
    "union",
    "intersect",
    "except",
];

/// What a select-list item is, for one aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Class {
    Bucket,
    Group(String),
    Agg(usize),
}

/// The words a rewritten WHERE clause may hold besides columns, literals and function calls.
const WHERE_WORDS: &[&str] = &[
    "and",
    "or",
    "not",
    "between",
    "symmetric",
    "is",
    "null",
    "true",
    "false",
    "unknown",
    "in",
    "like",
    "ilike",
    "similar",
    "to",
    "escape",
    "distinct",
    "from",
    "at",
    "zone",
    "interval",
    "current_timestamp",
    "current_date",
    "current_time",
    "localtimestamp",
    "localtime",
    "any",
    "all",
    "some",
    "case",
    "when",
    "then",
    "else",
    "end",
    "isnull",
    "notnull",
];

/// Words that may follow `::` as part of a type name.
const TYPE_WORDS: &[&str] = &["with", "without", "time", "zone", "precision", "varying"];

/// The comparisons a rewritten time condition may use.
const RANGE_OPS: &[&str] = &["<", "<=", ">", ">="];

struct Rewriter<'s, 'a> {
    scan: &'s Scan<'a>,
    q: &'s Query,
    cagg: &'s Cagg,
    quals: Vec<String>,
}

impl Rewriter<'_, '_> {
    /// The column a reference names, if it is this query's table's.
    fn column(&self, parts: &[String]) -> Option<String> {
        match parts {
            [name] => Some(name.clone()),
            [q, name] if self.quals.contains(q) => Some(name.clone()),
            _ => None,
        }
    }

    /// `time_bucket('<bucket>', <time>)` over `[a, b)`, with this aggregate's bucket.
    fn is_bucket(&self, a: usize, b: usize) -> bool {
        let s = self.scan;
        if !(s.is_word(a, "time_bucket")
            && s.is(a + 1, Kind::Open)
            && s.close_of(a + 1) == Some(b - 1))
        {
            return false;
        }
        let args = split(s, a + 2, b - 1, s.depth[a + 1] + 1);
        let [(w0, w1), (c0, c1)] = args.as_slice() else {
            return false;
        };
        let width = match (w1 - w0, s.t[*w0].kind) {
            (1, Kind::String) | (1, Kind::Number) => *w0,
            (2, Kind::Word) if s.is_word(*w0, "interval") && s.is(w0 + 1, Kind::String) => w0 + 1,
            (3, Kind::String) if s.is_op_in(w0 + 1, &["::"]) && s.is_word(w0 + 2, "interval") => {
                *w0
            }
            _ => return false,
        };
        let text = s.text(width);
        let literal = if s.is(width, Kind::String) {
            if !text.starts_with('\'') {
                return false; // E'…', $$…$$: not worth reading
            }
            text[1..text.len() - 1].replace("''", "'")
        } else {
            text.to_owned()
        };
        if Bucket::parse(&literal) != self.cagg.bucket {
            return false;
        }
        matches!(s.colref(*c0), Some((parts, end)) if end == *c1
            && self.column(&parts).as_deref() == Some(self.cagg.time_column.as_str()))
    }

    fn aggregate(&self, a: usize, b: usize) -> Option<usize> {
        let norm = normalize(self.scan, a, b, &self.quals)?;
        self.cagg.aggregates.iter().position(|(e, _)| *e == norm)
    }

    fn classify(&self, item: &Item) -> Option<Class> {
        let (a, b) = (item.a, item.b);
        if self.is_bucket(a, b) {
            return Some(Class::Bucket);
        }
        if let Some((parts, end)) = self.scan.colref(a) {
            if end == b {
                let name = self.column(&parts)?;
                return self
                    .cagg
                    .group_by
                    .contains(&name)
                    .then_some(Class::Group(name));
            }
        }
        self.aggregate(a, b).map(Class::Agg)
    }

    /// The output column name PostgreSQL gives an item, as an identifier.
    fn output_name(&self, item: &Item, class: &Class) -> String {
        if let Some(alias) = item.alias {
            return self.scan.t[alias].ident(self.scan.sql).unwrap_or_default();
        }
        match class {
            Class::Bucket => "time_bucket".to_owned(),
            Class::Group(name) => name.clone(),
            Class::Agg(_) => {
                if self.scan.is(item.a, Kind::Word)
                    && self.scan.is(item.a + 1, Kind::Open)
                    && self.scan.close_of(item.a + 1) == Some(item.b - 1)
                {
                    self.scan.t[item.a].ident(self.scan.sql).unwrap_or_default()
                } else {
                    "?column?".to_owned()
                }
            }
        }
    }

    fn rewrite(&self) -> Option<String> {
        let s = self.scan;
        let q = self.q;
        let classes: Vec<Class> = q
            .items
            .iter()
            .map(|i| self.classify(i))
            .collect::<Option<_>>()?;
        if classes.iter().filter(|c| **c == Class::Bucket).count() != 1 {
            return None;
        }
        let mut selected: Vec<String> = classes
            .iter()
            .filter_map(|c| match c {
                Class::Group(n) => Some(n.clone()),
                _ => None,
            })
            .collect();
        selected.sort();
        selected.dedup();
        if selected != self.cagg.group_by {
            return None;
        }
        // Names PostgreSQL might read as table columns rather than output aliases.
        let mut known_columns: Vec<&str> = vec![self.cagg.time_column.as_str()];
        known_columns.extend(self.cagg.group_by.iter().map(String::as_str));

        // GROUP BY must name exactly the non-aggregate items.
        let mut covered = vec![false; q.items.len()];
        for &(a, b) in &q.group {
            let idx = self.group_item(a, b, &classes, &known_columns)?;
            if matches!(classes[idx], Class::Agg(_)) {
                return None;
            }
            covered[idx] = true;
        }
        if classes
            .iter()
            .zip(&covered)
            .any(|(c, &cov)| !matches!(c, Class::Agg(_)) && !cov)
        {
            return None;
        }

        let mut sql = String::from("SELECT ");
        let items: Vec<String> = q
            .items
            .iter()
            .zip(&classes)
            .map(|(item, class)| {
                let name = quote_ident(&self.output_name(item, class));
                match class {
                    Class::Bucket => format!("{} AS {name}", quote_ident(&self.cagg.bucket_column)),
                    Class::Group(col) => match item.alias {
                        Some(_) => format!("{} AS {name}", quote_ident(col)),
                        None => quote_ident(col),
                    },
                    Class::Agg(i) => {
                        format!("{} AS {name}", quote_ident(&self.cagg.aggregates[*i].1))
                    }
                }
            })
            .collect();
        sql.push_str(&items.join(", "));
        sql.push_str(" FROM ");
        sql.push_str(&self.cagg_name());
        if let Some(alias) = q.alias {
            sql.push(' ');
            sql.push_str(s.text(alias));
        }
        if let Some((a, b)) = q.where_ {
            sql.push_str(" WHERE ");
            sql.push_str(&self.render_where(a, b)?);
        }
        if !q.order.is_empty() {
            let names: Vec<String> = q
                .items
                .iter()
                .zip(&classes)
                .map(|(i, c)| self.output_name(i, c))
                .collect();
            let mut parts = Vec::new();
            for o in &q.order {
                let mut text = self.order_expr(o, &names, &classes)?;
                if o.suffix_end > o.b {
                    text.push(' ');
                    text.push_str(&render(s, o.b, o.suffix_end));
                }
                parts.push(text);
            }
            sql.push_str(" ORDER BY ");
            sql.push_str(&parts.join(", "));
        }
        if q.tail.1 > q.tail.0 {
            sql.push(' ');
            sql.push_str(&render(s, q.tail.0, q.tail.1));
        }
        Some(sql)
    }

    /// The select item a GROUP BY item names.
    fn group_item(&self, a: usize, b: usize, classes: &[Class], known: &[&str]) -> Option<usize> {
        let s = self.scan;
        let q = self.q;
        if b - a == 1 && s.is(a, Kind::Number) {
            let k: usize = s.text(a).parse().ok()?;
            return (1..=q.items.len()).contains(&k).then(|| k - 1);
        }
        if self.is_bucket(a, b) {
            return classes.iter().position(|c| *c == Class::Bucket);
        }
        let (parts, end) = s.colref(a)?;
        if end != b {
            return None;
        }
        if let [name] = parts.as_slice() {
            // An output alias, unless it could be read as a column of the table.
            if let Some(i) = q.items.iter().position(|it| {
                it.alias.and_then(|t| s.t[t].ident(s.sql)).as_deref() == Some(name.as_str())
            }) {
                if known.contains(&name.as_str())
                    && !matches!(&classes[i], Class::Group(g) if g == name)
                {
                    return None;
                }
                return Some(i);
            }
        }
        let name = self.column(&parts)?;
        classes
            .iter()
            .position(|c| matches!(c, Class::Group(g) if *g == name))
    }

    fn order_expr(&self, o: &OrderItem, names: &[String], classes: &[Class]) -> Option<String> {
        let s = self.scan;
        let (a, b) = (o.a, o.b);
        if b - a == 1 && s.is(a, Kind::Number) {
            let k: usize = s.text(a).parse().ok()?;
            return (1..=names.len()).contains(&k).then(|| s.text(a).to_owned());
        }
        if self.is_bucket(a, b) {
            return Some(quote_ident(&self.cagg.bucket_column));
        }
        if let Some((parts, end)) = s.colref(a) {
            if end == b {
                if let [name] = parts.as_slice() {
                    if names.contains(name) {
                        return Some(quote_ident(name));
                    }
                }
                let name = self.column(&parts)?;
                return classes
                    .iter()
                    .any(|c| matches!(c, Class::Group(g) if *g == name))
                    .then(|| quote_ident(&name));
            }
        }
        self.aggregate(a, b)
            .map(|i| quote_ident(&self.cagg.aggregates[i].1))
    }

    fn cagg_name(&self) -> String {
        let c = self.cagg;
        let qualified = self.q.table.len() == 2
            || match (&c.name.schema, &c.hypertable.schema) {
                (Some(a), Some(b)) => a != b,
                _ => false,
            };
        match (&c.name.schema, qualified) {
            (Some(schema), true) => {
                format!("{}.{}", quote_ident(schema), quote_ident(&c.name.name))
            }
            _ => quote_ident(&c.name.name),
        }
    }

    /// The WHERE clause `[a, b)` with the time column replaced by the bucket column; `None`
    /// if it refers to anything the aggregate does not have, holds a subquery, or uses the time
    /// column other than as an operand of `<`, `<=`, `>`, `>=` or `BETWEEN`.
    fn render_where(&self, a: usize, b: usize) -> Option<String> {
        let s = self.scan;
        let mut out = Pieces::default();
        let mut i = a;
        // Just after `::`, or inside a multi-word type name (`timestamp with time zone`).
        let mut in_type = false;
        while i < b {
            let t = s.t[i];
            if !matches!(t.kind, Kind::Word | Kind::Quoted) {
                if t.kind == Kind::Dot {
                    return None; // a field of a composite value
                }
                in_type = s.is_op_in(i, &["::"]);
                out.push(s, i, i + 1, t.text(s.sql));
                i += 1;
                continue;
            }
            if in_type && (s.is_op_in(i - 1, &["::"]) || TYPE_WORDS.iter().any(|w| s.is_word(i, w)))
            {
                out.push(s, i, i + 1, t.text(s.sql));
                i += 1;
                continue;
            }
            in_type = false;
            if s.is_word(i, "select") || s.is_word(i, "exists") {
                return None;
            }
            let (parts, end) = s.colref(i)?;
            let simple_word = t.kind == Kind::Word && parts.len() == 1;
            if (simple_word && (s.is(end, Kind::Open) || s.is(end, Kind::String)))
                || (s.is_word(i, "time") && i > a && s.is_word(i - 1, "at"))
            {
                // a function call, a typed literal (`interval '1 day'`), or AT TIME ZONE
                out.push(s, i, i + 1, t.text(s.sql));
                i += 1;
                continue;
            }
            match self.column(&parts) {
                Some(name) if name == self.cagg.time_column => {
                    let forward =
                        end < b && (s.is_op_in(end, RANGE_OPS) || s.is_word(end, "between"));
                    let reversed = i > a && s.is_op_in(i - 1, RANGE_OPS);
                    if !(forward || reversed) {
                        return None;
                    }
                    out.push(s, i, end, &quote_ident(&self.cagg.bucket_column));
                }
                Some(name) if self.cagg.group_by.contains(&name) => {
                    out.push(s, i, end, &quote_ident(&name));
                }
                _ if simple_word && WHERE_WORDS.iter().any(|w| s.is_word(i, w)) => {
                    out.push(s, i, end, t.text(s.sql));
                }
                _ => return None,
            }
            i = end;
        }
        Some(out.text)
    }
}

/// `sql` rewritten to read one of `caggs`, if it has exactly the recognised shape for one.
pub fn rewrite(sql: &str, caggs: &[Cagg]) -> Option<String> {
    let scan = Scan::new(sql)?;
    let q = Query::parse(&scan)?;
    let (schema, name) = match q.table.as_slice() {
        [name] => (None, name.as_str()),
        [schema, name] => (Some(schema.as_str()), name.as_str()),
        _ => return None,
    };
    caggs
        .iter()
        .filter(|c| c.hypertable.matches(schema, name))
        .find_map(|cagg| {
            let quals = match q.alias {
                Some(alias) => vec![scan.t[alias].ident(scan.sql)?],
                None => vec![name.to_owned()],
            };
            Rewriter {
                scan: &scan,
                q: &q,
                cagg,
                quals,
            }
            .rewrite()
        })
}
