//! Tokens with their parenthesis structure, and the small readers the rules share.

use crate::lexer::{lex, Kind, Token};
use tidegate_plugin_sdk::prelude::*;

/// Lexed SQL with each token's parenthesis depth.
#[derive(Debug, Clone)]
pub struct Scan<'a> {
    /// The text.
    pub sql: &'a str,
    /// Its tokens.
    pub t: Vec<Token>,
    /// Each token's depth: the number of parentheses open around it (a parenthesis itself
    /// counts as outside).
    pub depth: Vec<usize>,
}

/// Words that end a WHERE clause at its own depth.
const CLAUSE_ENDS: &[&str] = &[
    "group",
    "order",
    "limit",
    "offset",
    "fetch",
    "having",
    "window",
    "union",
    "intersect",
    "except",
    "for",
    "returning",
];

impl<'a> Scan<'a> {
    /// Lexes `sql`; `None` if it does not lex or its parentheses do not balance.
    pub fn new(sql: &'a str) -> Option<Self> {
        let t = lex(sql).ok()?;
        let mut depth = Vec::with_capacity(t.len());
        let mut d = 0usize;
        for tok in &t {
            match tok.kind {
                Kind::Open => {
                    depth.push(d);
                    d += 1;
                }
                Kind::Close => {
                    d = d.checked_sub(1)?;
                    depth.push(d);
                }
                _ => depth.push(d),
            }
        }
        (d == 0).then_some(Scan { sql, t, depth })
    }

    /// The number of tokens.
    pub fn len(&self) -> usize {
        self.t.len()
    }

    /// Whether there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.t.is_empty()
    }

    /// Token `i`'s text ("" past the end).
    pub fn text(&self, i: usize) -> &'a str {
        self.t.get(i).map_or("", |t| t.text(self.sql))
    }

    /// Whether token `i` is the keyword `word`.
    pub fn is_word(&self, i: usize, word: &str) -> bool {
        self.t.get(i).is_some_and(|t| t.is_word(self.sql, word))
    }

    /// Whether token `i` is of `kind`.
    pub fn is(&self, i: usize, kind: Kind) -> bool {
        self.t.get(i).is_some_and(|t| t.kind == kind)
    }

    /// Whether token `i` is one of the operators `ops`.
    pub fn is_op_in(&self, i: usize, ops: &[&str]) -> bool {
        self.t
            .get(i)
            .is_some_and(|t| t.kind == Kind::Op && ops.contains(&t.text(self.sql)))
    }

    /// The index of the `)` closing the `(` at `open`.
    pub fn close_of(&self, open: usize) -> Option<usize> {
        (open + 1..self.len())
            .find(|&j| self.is(j, Kind::Close) && self.depth[j] == self.depth[open])
    }

    /// The index of the `(` opening the innermost group around token `i`.
    pub fn open_around(&self, i: usize) -> Option<usize> {
        let d = self.depth[i].checked_sub(1)?;
        (0..i)
            .rev()
            .find(|&j| self.is(j, Kind::Open) && self.depth[j] == d)
    }

    /// The tokens before any trailing semicolons, if there is no other semicolon (one
    /// statement).
    pub fn single_statement(&self) -> Option<usize> {
        let mut n = self.len();
        while n > 0 && self.is(n - 1, Kind::Semicolon) {
            n -= 1;
        }
        (!self.t[..n].iter().any(|t| t.kind == Kind::Semicolon)).then_some(n)
    }

    /// The column reference starting at token `i`: identifiers joined by dots, and the index
    /// after it. `None` if token `i` is not an identifier or continues a reference.
    pub fn colref(&self, i: usize) -> Option<(Vec<String>, usize)> {
        if i > 0 && self.is(i - 1, Kind::Dot) {
            return None;
        }
        let mut parts = vec![self.t.get(i)?.ident(self.sql)?];
        let mut j = i + 1;
        while self.is(j, Kind::Dot) {
            parts.push(self.t.get(j + 1)?.ident(self.sql)?);
            j += 2;
        }
        Some((parts, j))
    }

    /// The WHERE clauses, as token ranges (the WHERE keyword excluded), at any depth.
    pub fn where_clauses(&self) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for w in 0..self.len() {
            if !self.is_word(w, "where") {
                continue;
            }
            let d = self.depth[w];
            let mut end = w + 1;
            while end < self.len() {
                let ends = self.depth[end] < d
                    || (self.depth[end] == d
                        && (self.is(end, Kind::Semicolon)
                            || CLAUSE_ENDS.iter().any(|k| self.is_word(end, k))));
                if ends {
                    break;
                }
                end += 1;
            }
            out.push((w + 1, end));
        }
        out
    }

    /// Whether token `i` of the clause `[start, end)` sits in a conjunction: no OR beside it at
    /// its own level, and each enclosing parenthesis (up to the clause) is a plain group that is
    /// itself a conjunct (opened at the clause start, after AND or after another `(`).
    ///
    /// `first` is the predicate's first token (its left operand's), `i` any token of it.
    pub fn conjunctive(&self, i: usize, first: usize, (start, end): (usize, usize)) -> bool {
        let clause_depth = self.depth[start - 1];
        let mut at = i;
        let mut first = first;
        loop {
            // The predicate itself must start a conjunct.
            if !(first == start || self.is_word(first - 1, "and") || self.is(first - 1, Kind::Open))
            {
                return false;
            }
            let d = self.depth[at];
            let (lo, hi) = if d <= clause_depth {
                (start, end)
            } else {
                let Some(open) = self.open_around(at) else {
                    return false;
                };
                let Some(close) = self.close_of(open) else {
                    return false;
                };
                (open + 1, close)
            };
            if (lo..hi).any(|j| self.depth[j] == d && self.is_word(j, "or")) {
                return false;
            }
            if d <= clause_depth {
                return true;
            }
            // Climb: the group opening at lo - 1 is the next predicate up.
            at = lo - 1;
            first = lo - 1;
            if first < start {
                return false;
            }
        }
    }
}

/// `name` as an SQL identifier: bare if it is plain lower case and not a reserved word,
/// double-quoted otherwise.
pub fn quote_ident(name: &str) -> String {
    let plain = name
        .bytes()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == b'_')
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_');
    if plain && !RESERVED.contains(&name) {
        name.to_owned()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// PostgreSQL's reserved key words (and those reserved in column names), which need quotes.
const RESERVED: &[&str] = &[
    "all",
    "analyse",
    "analyze",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "asymmetric",
    "authorization",
    "between",
    "bigint",
    "binary",
    "bit",
    "boolean",
    "both",
    "case",
    "cast",
    "char",
    "character",
    "check",
    "coalesce",
    "collate",
    "collation",
    "column",
    "concurrently",
    "constraint",
    "create",
    "cross",
    "current_catalog",
    "current_date",
    "current_role",
    "current_schema",
    "current_time",
    "current_timestamp",
    "current_user",
    "dec",
    "decimal",
    "default",
    "deferrable",
    "desc",
    "distinct",
    "do",
    "else",
    "end",
    "except",
    "exists",
    "extract",
    "false",
    "fetch",
    "float",
    "for",
    "foreign",
    "freeze",
    "from",
    "full",
    "grant",
    "greatest",
    "group",
    "grouping",
    "having",
    "ilike",
    "in",
    "initially",
    "inner",
    "inout",
    "int",
    "integer",
    "intersect",
    "interval",
    "into",
    "is",
    "isnull",
    "join",
    "json",
    "lateral",
    "leading",
    "least",
    "left",
    "like",
    "limit",
    "localtime",
    "localtimestamp",
    "national",
    "natural",
    "nchar",
    "none",
    "normalize",
    "not",
    "notnull",
    "null",
    "nullif",
    "numeric",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "out",
    "outer",
    "overlaps",
    "overlay",
    "placing",
    "position",
    "precision",
    "primary",
    "real",
    "references",
    "returning",
    "right",
    "row",
    "select",
    "session_user",
    "setof",
    "similar",
    "smallint",
    "some",
    "substring",
    "symmetric",
    "system_user",
    "table",
    "tablesample",
    "then",
    "time",
    "timestamp",
    "to",
    "trailing",
    "treat",
    "trim",
    "true",
    "union",
    "unique",
    "user",
    "using",
    "values",
    "varchar",
    "variadic",
    "verbose",
    "when",
    "where",
    "window",
    "with",
    "xmlattributes",
    "xmlconcat",
    "xmlelement",
    "xmlexists",
    "xmlforest",
    "xmlnamespaces",
    "xmlparse",
    "xmlpi",
    "xmlroot",
    "xmlserialize",
    "xmltable",
];
