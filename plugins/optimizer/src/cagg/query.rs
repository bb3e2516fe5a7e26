//! The shape of a SELECT the rewriter can take: its select list, FROM, WHERE, GROUP BY and
//! ORDER BY as token ranges, and the text rebuilt from pieces of them.

use super::{split, GROUP_ENDS};
use crate::lexer::Kind;
use crate::scan::Scan;
use tidegate_plugin_sdk::prelude::*;

/// Rendered text built from pieces standing for token ranges.
#[derive(Default)]
pub(super) struct Pieces {
    pub(super) text: String,
    pub(super) last_end: Option<usize>,
}

impl Pieces {
    /// Appends `text` standing for tokens `[a, b)`.
    pub(super) fn push(&mut self, scan: &Scan<'_>, a: usize, b: usize, text: &str) {
        if let Some(end) = self.last_end {
            if scan.t[a].start > end {
                self.text.push(' ');
            }
        }
        self.text.push_str(text);
        self.last_end = Some(scan.t[b - 1].end);
    }
}

/// A select-list item: its expression and its alias token.
#[derive(Debug, Clone, Copy)]
pub(super) struct Item {
    pub(super) a: usize,
    pub(super) b: usize,
    pub(super) alias: Option<usize>,
}

/// An ORDER BY item: its expression and its ASC/DESC/NULLS suffix.
#[derive(Debug, Clone, Copy)]
pub(super) struct OrderItem {
    pub(super) a: usize,
    pub(super) b: usize,
    pub(super) suffix_end: usize,
}

/// The parsed shape of a candidate query.
#[derive(Debug, Clone)]
pub(super) struct Query {
    pub(super) items: Vec<Item>,
    pub(super) table: Vec<String>,
    pub(super) alias: Option<usize>,
    pub(super) where_: Option<(usize, usize)>,
    pub(super) group: Vec<(usize, usize)>,
    pub(super) order: Vec<OrderItem>,
    pub(super) tail: (usize, usize),
}

pub(super) const FROM_ENDS: &[&str] = &[
    "where",
    "group",
    "order",
    "limit",
    "offset",
    "join",
    "inner",
    "left",
    "right",
    "full",
    "cross",
    "natural",
    "tablesample",
    "window",
    "having",
    "fetch",
    "for",
    "union",
    "intersect",
    "except",
    "on",
    "using",
];

pub(super) fn is_name(scan: &Scan<'_>, i: usize) -> bool {
    scan.is(i, Kind::Word) || scan.is(i, Kind::Quoted)
}

impl Query {
    pub(super) fn parse(scan: &Scan<'_>) -> Option<Self> {
        let n = scan.single_statement()?;
        let at0 = |i: usize, w: &str| i < n && scan.depth[i] == 0 && scan.is_word(i, w);
        if !at0(0, "select") || at0(1, "distinct") || at0(1, "all") {
            return None;
        }
        let from = (1..n).find(|&i| at0(i, "from"))?;
        let mut items = Vec::new();
        for (a, b) in split(scan, 1, from, 0) {
            if a >= b {
                return None;
            }
            let alias = if b - a >= 3 && scan.is_word(b - 2, "as") && is_name(scan, b - 1) {
                Some((b - 1, b - 2))
            } else if b - a >= 2
                && is_name(scan, b - 1)
                && (scan.is(b - 2, Kind::Close)
                    || (is_name(scan, b - 2) && !scan.is(b - 3, Kind::Op)))
                && !scan.is(b - 2, Kind::Dot)
            {
                Some((b - 1, b - 1))
            } else {
                None
            };
            items.push(match alias {
                Some((alias, end)) => Item {
                    a,
                    b: end,
                    alias: Some(alias),
                },
                None => Item { a, b, alias: None },
            });
        }
        // FROM <table> [[AS] alias]
        let (table, mut p) = scan.colref(from + 1)?;
        if table.len() > 2 {
            return None;
        }
        let mut alias = None;
        if at0(p, "as") && is_name(scan, p + 1) {
            alias = Some(p + 1);
            p += 2;
        } else if p < n && is_name(scan, p) && !FROM_ENDS.iter().any(|w| scan.is_word(p, w)) {
            alias = Some(p);
            p += 1;
        }
        let mut where_ = None;
        if at0(p, "where") {
            let g = (p + 1..n).find(|&i| at0(i, "group"))?;
            where_ = Some((p + 1, g));
            p = g;
        }
        if !(at0(p, "group") && at0(p + 1, "by")) {
            return None;
        }
        let g_end = (p + 2..n)
            .find(|&i| GROUP_ENDS.iter().any(|w| at0(i, w)))
            .unwrap_or(n);
        let group = split(scan, p + 2, g_end, 0);
        if group.iter().any(|(a, b)| a >= b) {
            return None;
        }
        p = g_end;
        let mut order = Vec::new();
        if at0(p, "order") && at0(p + 1, "by") {
            let o_end = (p + 2..n)
                .find(|&i| at0(i, "limit") || at0(i, "offset"))
                .unwrap_or(n);
            for (a, b) in split(scan, p + 2, o_end, 0) {
                let mut e = b;
                if e >= a + 2
                    && scan.is_word(e - 2, "nulls")
                    && (scan.is_word(e - 1, "first") || scan.is_word(e - 1, "last"))
                {
                    e -= 2;
                }
                if e > a && (scan.is_word(e - 1, "asc") || scan.is_word(e - 1, "desc")) {
                    e -= 1;
                }
                if e <= a {
                    return None;
                }
                order.push(OrderItem {
                    a,
                    b: e,
                    suffix_end: b,
                });
            }
            p = o_end;
        }
        // [LIMIT n|ALL] [OFFSET n [ROW|ROWS]], in either order
        let tail = (p, n);
        while p < n {
            let value = |i: usize| scan.is(i, Kind::Number) || scan.is(i, Kind::Param);
            if at0(p, "limit") && (value(p + 1) || scan.is_word(p + 1, "all")) {
                p += 2;
            } else if at0(p, "offset") && value(p + 1) {
                p += 2;
                if scan.is_word(p, "row") || scan.is_word(p, "rows") {
                    p += 1;
                }
            } else {
                return None;
            }
        }
        Some(Query {
            items,
            table,
            alias,
            where_,
            group,
            order,
            tail,
        })
    }
}
