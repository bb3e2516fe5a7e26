//! The row limit: `LIMIT max_rows` appended to a plain SELECT that has none.

use crate::lexer::Kind;
use crate::scan::Scan;
use tidegate_plugin_sdk::prelude::*;

/// Top-level words that make a SELECT not plain for this rule: it already limits its rows,
/// locks, writes a table, or combines queries (where a LIMIT would bind differently).
const NOT_PLAIN: &[&str] = &[
    "limit",
    "fetch",
    "offset",
    "for",
    "into",
    "union",
    "intersect",
    "except",
];

/// `sql` with `LIMIT n` added, if it is one plain `SELECT` without LIMIT, FETCH, OFFSET,
/// FOR UPDATE/SHARE, INTO or a set operation at its top level. The clause goes right after
/// the last token, before any trailing semicolons and comments.
pub fn add_limit(sql: &str, n: u64) -> Option<String> {
    let scan = Scan::new(sql)?;
    let len = scan.single_statement()?;
    if len == 0 || !scan.is_word(0, "select") {
        return None;
    }
    let plain =
        (0..len).all(|i| scan.depth[i] > 0 || !NOT_PLAIN.iter().any(|w| scan.is_word(i, w)));
    if !plain || scan.is(len - 1, Kind::Comma) {
        return None;
    }
    let at = scan.t[len - 1].end;
    Some(format!("{} LIMIT {n}{}", &sql[..at], &sql[at..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_a_limit_to_plain_selects() {
        let cases = [
            ("SELECT * FROM metrics", "SELECT * FROM metrics LIMIT 100"),
            ("SELECT * FROM metrics;", "SELECT * FROM metrics LIMIT 100;"),
            (
                "SELECT * FROM metrics ; ;",
                "SELECT * FROM metrics LIMIT 100 ; ;",
            ),
            (
                "SELECT * FROM metrics -- newest first?\n",
                "SELECT * FROM metrics LIMIT 100 -- newest first?\n",
            ),
            (
                "select * from metrics where time > $1 order by time desc /* c */",
                "select * from metrics where time > $1 order by time desc LIMIT 100 /* c */",
            ),
            (
                "SELECT host, avg(cpu) FROM metrics GROUP BY host",
                "SELECT host, avg(cpu) FROM metrics GROUP BY host LIMIT 100",
            ),
            (
                "SELECT * FROM metrics WHERE id IN (SELECT id FROM t LIMIT 5)",
                "SELECT * FROM metrics WHERE id IN (SELECT id FROM t LIMIT 5) LIMIT 100",
            ),
            (
                "SELECT substring(note FROM 1 FOR 3) FROM metrics",
                "SELECT substring(note FROM 1 FOR 3) FROM metrics LIMIT 100",
            ),
            (
                "SELECT * FROM metrics WHERE note = 'limit 5'",
                "SELECT * FROM metrics WHERE note = 'limit 5' LIMIT 100",
            ),
        ];
        for (sql, want) in cases {
            assert_eq!(add_limit(sql, 100).as_deref(), Some(want), "{sql}");
        }
    }

    #[test]
    fn leaves_everything_else_alone() {
        for sql in [
            "SELECT * FROM metrics LIMIT 10",
            "SELECT * FROM metrics limit all",
            "SELECT * FROM metrics OFFSET 10",
            "SELECT * FROM metrics FETCH FIRST 5 ROWS ONLY",
            "SELECT * FROM metrics FOR UPDATE",
            "SELECT * FROM metrics FOR SHARE",
            "SELECT * INTO t2 FROM metrics",
            "SELECT * FROM metrics UNION SELECT * FROM metrics",
            "SELECT 1 EXCEPT SELECT 2",
            "SELECT * FROM metrics; SELECT 1",
            "WITH x AS (SELECT * FROM metrics) SELECT * FROM x",
            "(SELECT * FROM metrics)",
            "TABLE metrics",
            "VALUES (1)",
            "EXPLAIN SELECT * FROM metrics",
            "SELECT * FROM metrics WHERE note = 'unterminated",
            "SELECT (1",
            "",
            ";",
        ] {
            assert_eq!(add_limit(sql, 100), None, "{sql}");
        }
    }
}
