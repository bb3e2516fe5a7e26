//! Splitting a simple-query string into its statements, where PostgreSQL would: at every `;`
//! outside strings, quoted identifiers, comments and dollar quotes — as sqlparser's tokenizer
//! reads them, the same reading [`classify`](crate::classify) parses.

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::tokenizer::{Token, Tokenizer, Whitespace};
use std::ops::Range;

/// The byte ranges of the statements in `sql`, without their `;` and skipping empty ones
/// (only whitespace or comments). `None` when the text does not tokenize (an unterminated
/// string or comment), or when PostgreSQL and sqlparser may read its tokens differently:
/// such a string cannot be judged statement by statement.
pub fn split_statements(sql: &str) -> Option<Vec<Range<usize>>> {
    if crate::lexer::readings_may_differ(sql.as_bytes()) {
        // sqlparser's tokens may not be PostgreSQL's: its semicolons may not be either.
        return None;
    }
    let dialect = PostgreSqlDialect {};
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .ok()?;
    // The tokenizer counts lines at '\n' and columns in chars from 1: map them to bytes.
    let mut line_starts = vec![0usize];
    line_starts.extend(sql.match_indices('\n').map(|(i, _)| i + 1));
    let offset = |line: u64, column: u64| -> Option<usize> {
        let start = *line_starts.get(usize::try_from(line).ok()?.checked_sub(1)?)?;
        let col = usize::try_from(column).ok()?.checked_sub(1)?;
        match sql[start..].char_indices().nth(col) {
            Some((i, _)) => Some(start + i),
            None => Some(sql.len()),
        }
    };
    let mut out = Vec::new();
    let mut start = 0usize;
    let mut substance = false;
    for t in &tokens {
        match &t.token {
            Token::SemiColon => {
                let at = offset(t.span.start.line, t.span.start.column)?;
                if sql.as_bytes().get(at) != Some(&b';') || at < start {
                    return None; // The positions do not line up: do not guess.
                }
                if substance {
                    out.push(start..at);
                }
                start = at + 1;
                substance = false;
            }
            Token::Whitespace(
                Whitespace::Space
                | Whitespace::Tab
                | Whitespace::Newline
                | Whitespace::SingleLineComment { .. }
                | Whitespace::MultiLineComment(_),
            )
            | Token::EOF => {}
            _ => substance = true,
        }
    }
    if substance {
        out.push(start..sql.len());
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::split_statements;

    fn parts(sql: &str) -> Vec<&str> {
        split_statements(sql)
            .expect("tokenizes")
            .into_iter()
            .map(|r| &sql[r])
            .collect()
    }

    #[test]
    fn splits_at_top_level_semicolons_only() {
        assert_eq!(
            parts("DELETE FROM acct WHERE id=1; COMMIT"),
            ["DELETE FROM acct WHERE id=1", " COMMIT"]
        );
        assert_eq!(
            parts("SELECT 'a;b'; SELECT $x$;$x$;"),
            ["SELECT 'a;b'", " SELECT $x$;$x$"]
        );
        assert_eq!(parts("SELECT \"a;\" FROM t"), ["SELECT \"a;\" FROM t"]);
        assert_eq!(parts("SELECT 1 /* ; */ ;; ; -- x\n"), ["SELECT 1 /* ; */ "]);
        assert_eq!(parts("SELECT 'é';\nSELECT 2"), ["SELECT 'é'", "\nSELECT 2"]);
    }

    #[test]
    fn a_carriage_return_ends_a_line_comment_as_in_postgresql() {
        assert_eq!(
            parts("SELECT 1 --\r; DELETE FROM acct WHERE id=2"),
            ["SELECT 1 --\r", " DELETE FROM acct WHERE id=2"]
        );
    }

    #[test]
    fn nested_comments_and_escape_strings_hide_semicolons() {
        assert_eq!(
            parts("SELECT 1 /* /* ; */ ; */"),
            ["SELECT 1 /* /* ; */ ; */"]
        );
        assert_eq!(
            parts("SELECT E'\\';'; SELECT 2"),
            ["SELECT E'\\';'", " SELECT 2"]
        );
    }

    #[test]
    fn untokenizable_text_is_not_split() {
        assert_eq!(split_statements("SELECT 'open; DELETE FROM t"), None);
        assert_eq!(split_statements("SELECT 1 /* open; DELETE FROM t"), None);
        assert_eq!(
            split_statements("SELECT 1 WHERE 1 </* ' */ 2; DELETE FROM acct; --'"),
            None
        );
    }
}
