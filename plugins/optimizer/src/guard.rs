//! The unbounded-scan guard: does a query constrain a hypertable's time column?

use crate::lexer::Kind;
use crate::scan::Scan;
use alloc::string::String;

/// The comparison operators that bound a column.
pub const BOUNDING_OPS: &[&str] = &["<", "<=", ">", ">=", "="];

/// Whether some WHERE clause of the query holds, as a conjunct (not under OR or NOT, not inside
/// a function call), a comparison of a column named `column` (bare or qualified) by `<`, `<=`,
/// `>`, `>=`, `=`, `BETWEEN` or `IN (…)`, on either side.
///
/// Or whether some (sub)query orders by that column first and takes a fixed number of rows —
/// `ORDER BY time DESC LIMIT n` (or `ASC`, `FETCH FIRST n ROWS`): TimescaleDB's ordered append
/// reads chunks newest (oldest) first and stops when it has `n` rows.
pub fn bounded(scan: &Scan<'_>, column: &str) -> bool {
    scan.where_clauses()
        .into_iter()
        .any(|clause| bounded_in(scan, column, clause))
        || ordered_limit(scan, column)
}

/// `ORDER BY <column> [ASC|DESC] [NULLS FIRST|LAST] [, …] LIMIT <number or $n>` at one depth.
fn ordered_limit(scan: &Scan<'_>, column: &str) -> bool {
    (0..scan.len()).any(|i| {
        if !(scan.is_word(i, "order") && scan.is_word(i + 1, "by")) {
            return false;
        }
        let d = scan.depth[i];
        let Some((parts, mut j)) = scan.colref(i + 2) else {
            return false;
        };
        if parts.last().map(String::as_str) != Some(column) || scan.is(j, Kind::Open) {
            return false;
        }
        // The rest of the ORDER BY list, to the clause that follows it at this depth.
        while j < scan.len() && scan.depth[j] >= d {
            if scan.depth[j] == d
                && (scan.is(j, Kind::Close)
                    || scan.is(j, Kind::Semicolon)
                    || scan.is_word(j, "limit")
                    || scan.is_word(j, "fetch")
                    || scan.is_word(j, "offset")
                    || scan.is_word(j, "for"))
            {
                break;
            }
            j += 1;
        }
        let fixed = |k: usize| scan.is(k, Kind::Number) || scan.is(k, Kind::Param);
        if scan.is_word(j, "offset") {
            return false; // OFFSET before LIMIT reads (and skips) rows first: not a bound
        }
        if scan.is_word(j, "limit") {
            return scan.depth.get(j + 1) == Some(&d) && fixed(j + 1);
        }
        // FETCH FIRST|NEXT n ROW|ROWS ONLY
        scan.is_word(j, "fetch")
            && (scan.is_word(j + 1, "first") || scan.is_word(j + 1, "next"))
            && fixed(j + 2)
    })
}

fn bounded_in(scan: &Scan<'_>, column: &str, (start, end): (usize, usize)) -> bool {
    (start..end).any(|i| {
        let Some((parts, after)) = scan.colref(i) else {
            return false;
        };
        if parts.last().map(String::as_str) != Some(column) || after > end {
            return false;
        }
        if scan.is(after, Kind::Open) {
            return false; // a function named like the column
        }
        // `time > x`, `time BETWEEN a AND b`, `time IN (…)`
        let forward = after < end
            && (scan.is_op_in(after, BOUNDING_OPS)
                || scan.is_word(after, "between")
                || (scan.is_word(after, "in") && scan.is(after + 1, Kind::Open)));
        if forward {
            return scan.conjunctive(i, i, (start, end));
        }
        // `x < time`: the operator before, and the predicate ending right after.
        let reversed = i > start
            && scan.is_op_in(i - 1, BOUNDING_OPS)
            && (after == end
                || scan.is_word(after, "and")
                || scan.is_word(after, "or")
                || scan.is(after, Kind::Close));
        if reversed {
            let first = left_operand_start(scan, i - 1, start);
            return scan.conjunctive(i, first, (start, end));
        }
        false
    })
}

/// The first token of the left operand of the operator at `op`: walking back over tokens at
/// the operator's depth or deeper, to just after an AND, OR, NOT or the enclosing `(`.
fn left_operand_start(scan: &Scan<'_>, op: usize, start: usize) -> usize {
    let d = scan.depth[op];
    let mut j = op;
    while j > start {
        let k = j - 1;
        if scan.depth[k] < d
            || (scan.depth[k] == d
                && (scan.is_word(k, "and") || scan.is_word(k, "or") || scan.is_word(k, "not")))
        {
            break;
        }
        j = k;
    }
    j
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidegate_plugin_sdk::prelude::*;

    const BOUNDED: &[&str] = &[
        "SELECT * FROM metrics WHERE time > now() - interval '1 day'",
        "select * from metrics where time >= '2024-01-01' and time < '2024-01-02'",
        "SELECT * FROM metrics WHERE host = 'a' AND time > $1",
        "SELECT * FROM metrics WHERE time BETWEEN $1 AND $2",
        "SELECT * FROM metrics WHERE time = '2024-01-01'",
        "SELECT * FROM metrics WHERE time IN ('2024-01-01', '2024-01-02')",
        "SELECT * FROM metrics WHERE now() - interval '1 day' < time",
        "SELECT * FROM metrics WHERE '2024-01-01' <= time AND host = 'x'",
        "SELECT * FROM metrics m WHERE m.time > $1",
        "SELECT * FROM public.metrics m WHERE public.metrics.time > $1",
        "SELECT * FROM metrics WHERE \"time\" > $1",
        "SELECT * FROM metrics WHERE TIME > $1",
        "SELECT * FROM metrics WHERE (time > $1)",
        "SELECT * FROM metrics WHERE ((time > $1 AND host = 'a'))",
        "SELECT * FROM metrics WHERE (host = 'a' OR host = 'b') AND time > $1",
        "SELECT * FROM metrics WHERE host = 'a' AND (time > $1 AND time < $2)",
        "SELECT * FROM metrics WHERE time>$1",
        "SELECT * FROM metrics WHERE time >= $1 ORDER BY time DESC LIMIT 10",
        "SELECT count(*) FROM (SELECT * FROM metrics WHERE time > $1) s",
        "SELECT * FROM metrics WHERE time > $1;",
        "SELECT * FROM metrics /* where nothing */ WHERE -- no\n time > $1",
        "SELECT * FROM metrics ORDER BY time DESC LIMIT 1",
        "SELECT * FROM metrics p ORDER BY p.time DESC NULLS LAST, host LIMIT $1",
        "SELECT * FROM metrics ORDER BY time LIMIT 10",
        "SELECT * FROM metrics ORDER BY time DESC FETCH FIRST 5 ROWS ONLY",
        "SELECT * FROM ids CROSS JOIN LATERAL (SELECT * FROM metrics x WHERE x.host = ids.id \
         ORDER BY x.time DESC LIMIT $1::integer) p",
    ];

    const UNBOUNDED: &[&str] = &[
        "SELECT * FROM metrics",
        "SELECT * FROM metrics WHERE host = 'a'",
        "SELECT * FROM metrics WHERE time IS NOT NULL",
        "SELECT * FROM metrics WHERE time <> '2024-01-01'",
        "SELECT * FROM metrics WHERE time != '2024-01-01'",
        "SELECT * FROM metrics WHERE time NOT BETWEEN $1 AND $2",
        "SELECT * FROM metrics WHERE time NOT IN ($1)",
        "SELECT * FROM metrics WHERE NOT time > $1",
        "SELECT * FROM metrics WHERE NOT (time > $1)",
        "SELECT * FROM metrics WHERE time > $1 OR host = 'a'",
        "SELECT * FROM metrics WHERE host = 'a' OR time > $1",
        "SELECT * FROM metrics WHERE (time > $1 OR host = 'a')",
        "SELECT * FROM metrics WHERE host = 'a' AND (time > $1 OR true)",
        "SELECT * FROM metrics WHERE coalesce(time > $1, true)",
        "SELECT * FROM metrics WHERE date_trunc('day', time) = $1",
        "SELECT * FROM metrics WHERE time::date = $1",
        "SELECT * FROM metrics WHERE time + interval '1 day' > $1",
        "SELECT * FROM metrics WHERE times > $1",
        "SELECT * FROM metrics WHERE mytime > $1",
        "SELECT * FROM metrics WHERE \"Time\" > $1",
        "SELECT * FROM metrics WHERE note = 'time > 1'",
        "SELECT * FROM metrics WHERE host = 'a' -- AND time > $1",
        "SELECT * FROM metrics WHERE host = 'a' /* AND time > $1 */",
        "SELECT * FROM metrics ORDER BY time > $1",
        "SELECT time > now() FROM metrics",
        "SELECT * FROM metrics GROUP BY host HAVING max(time) > $1",
        "SELECT * FROM metrics WHERE CASE WHEN time > $1 THEN true END",
        "SELECT * FROM metrics WHERE time(3) > $1",
        "SELECT * FROM metrics ORDER BY time DESC",
        "SELECT * FROM metrics ORDER BY host, time DESC LIMIT 1",
        "SELECT * FROM metrics ORDER BY time DESC LIMIT ALL",
        "SELECT * FROM metrics ORDER BY time DESC LIMIT NULL",
        "SELECT * FROM metrics ORDER BY time DESC OFFSET 10 LIMIT 1",
        "SELECT * FROM metrics ORDER BY time(x) LIMIT 1",
        "SELECT * FROM metrics ORDER BY times DESC LIMIT 1",
        "SELECT * FROM metrics ORDER BY time DESC LIMIT (SELECT count(*) FROM metrics)",
        "SELECT host FROM (SELECT * FROM metrics ORDER BY time DESC) s LIMIT 1",
    ];

    #[test]
    fn recognises_bounds() {
        let mut wrong = Vec::new();
        for sql in BOUNDED {
            if !bounded(&Scan::new(sql).unwrap(), "time") {
                wrong.push(format!("should be bounded: {sql}"));
            }
        }
        for sql in UNBOUNDED {
            if bounded(&Scan::new(sql).unwrap(), "time") {
                wrong.push(format!("should be unbounded: {sql}"));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn other_time_columns() {
        let scan = Scan::new("SELECT * FROM m WHERE ts > $1 AND time IS NULL").unwrap();
        assert!(bounded(&scan, "ts"));
        assert!(!bounded(&scan, "time"));
        let quoted = Scan::new("SELECT * FROM m WHERE \"Event Time\" >= $1").unwrap();
        assert!(bounded(&quoted, "Event Time"));
    }
}
