//! A PostgreSQL lexer just careful enough for the optimizer's token scans: it knows string,
//! identifier, dollar-quoted and comment syntax, so that nothing inside a literal or a comment
//! is mistaken for SQL. It does not parse.

use tidegate_plugin_sdk::prelude::*;

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A keyword or an unquoted identifier.
    Word,
    /// A `"quoted"` identifier (or `U&"…"`).
    Quoted,
    /// A string constant: `'…'`, `E'…'`, `B'…'`, `X'…'`, `N'…'`, `U&'…'` or `$tag$…$tag$`.
    String,
    /// A number.
    Number,
    /// A `$n` parameter.
    Param,
    /// An operator: `<`, `>=`, `::`, `=`, `+`, …
    Op,
    /// `(`
    Open,
    /// `)`
    Close,
    /// `,`
    Comma,
    /// `;`
    Semicolon,
    /// `.`
    Dot,
    /// `[`, `]` or `:`.
    Other,
}

/// A token: its kind and where it is in the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    /// What it is.
    pub kind: Kind,
    /// Its first byte.
    pub start: usize,
    /// One past its last byte.
    pub end: usize,
}

impl Token {
    /// Its text.
    pub fn text<'a>(&self, sql: &'a str) -> &'a str {
        &sql[self.start..self.end]
    }

    /// Whether it is the keyword (or unquoted identifier) `word`, ignoring ASCII case.
    pub fn is_word(&self, sql: &str, word: &str) -> bool {
        self.kind == Kind::Word && self.text(sql).eq_ignore_ascii_case(word)
    }

    /// Whether it is the operator `op`.
    pub fn is_op(&self, sql: &str, op: &str) -> bool {
        self.kind == Kind::Op && self.text(sql) == op
    }

    /// The identifier it names, as PostgreSQL stores it: an unquoted word folded to lower
    /// case, a quoted one unescaped. `None` for other tokens.
    pub fn ident(&self, sql: &str) -> Option<String> {
        let text = self.text(sql);
        match self.kind {
            Kind::Word => Some(text.to_ascii_lowercase()),
            Kind::Quoted if text.starts_with('"') => {
                Some(text[1..text.len() - 1].replace("\"\"", "\""))
            }
            _ => None,
        }
    }
}

/// Why text did not lex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unterminated(pub &'static str);

const OP_CHARS: &[u8] = b"+-*/<>=~!@#%^&|`?";

fn word_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

fn word_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

/// Splits `sql` into tokens, skipping whitespace and comments.
pub fn lex(sql: &str) -> Result<Vec<Token>, Unterminated> {
    let b = sql.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        let next = b.get(i + 1).copied();
        let kind = match c {
            _ if c.is_ascii_whitespace() => {
                i += 1;
                continue;
            }
            b'-' if next == Some(b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'/' if next == Some(b'*') => {
                i = block_comment(b, i)?;
                continue;
            }
            b'\'' => {
                i = quoted(b, i, b'\'', false).ok_or(Unterminated("string"))?;
                Kind::String
            }
            b'"' => {
                i = quoted(b, i, b'"', false).ok_or(Unterminated("quoted identifier"))?;
                Kind::Quoted
            }
            b'$' if next.is_some_and(|d| d.is_ascii_digit()) => {
                i += 1;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                Kind::Param
            }
            b'$' => match dollar_tag(b, i) {
                Some(tag_end) => {
                    let tag = &b[i..tag_end];
                    let body = &b[tag_end..];
                    let close = body
                        .windows(tag.len())
                        .position(|w| w == tag)
                        .ok_or(Unterminated("dollar-quoted string"))?;
                    i = tag_end + close + tag.len();
                    Kind::String
                }
                None => {
                    i += 1;
                    Kind::Other
                }
            },
            b'0'..=b'9' => {
                i = number(b, i);
                Kind::Number
            }
            b'.' if next.is_some_and(|d| d.is_ascii_digit()) => {
                i = number(b, i);
                Kind::Number
            }
            _ if word_start(c) => {
                // String prefixes: E'…' (backslash escapes), B'…', X'…', N'…', U&'…', U&"…".
                let upper = c.to_ascii_uppercase();
                if next == Some(b'\'') && matches!(upper, b'E' | b'B' | b'X' | b'N') {
                    i = quoted(b, i + 1, b'\'', upper == b'E').ok_or(Unterminated("string"))?;
                    Kind::String
                } else if upper == b'U' && next == Some(b'&') && b.get(i + 2) == Some(&b'\'') {
                    i = quoted(b, i + 2, b'\'', false).ok_or(Unterminated("string"))?;
                    Kind::String
                } else if upper == b'U' && next == Some(b'&') && b.get(i + 2) == Some(&b'"') {
                    i = quoted(b, i + 2, b'"', false).ok_or(Unterminated("quoted identifier"))?;
                    Kind::Quoted
                } else {
                    while i < b.len() && word_char(b[i]) {
                        i += 1;
                    }
                    Kind::Word
                }
            }
            b'(' => {
                i += 1;
                Kind::Open
            }
            b')' => {
                i += 1;
                Kind::Close
            }
            b',' => {
                i += 1;
                Kind::Comma
            }
            b';' => {
                i += 1;
                Kind::Semicolon
            }
            b'.' => {
                i += 1;
                Kind::Dot
            }
            b':' if next == Some(b':') => {
                i += 2;
                Kind::Op
            }
            _ if OP_CHARS.contains(&c) => {
                i = operator(b, i);
                Kind::Op
            }
            _ => {
                // `[`, `]`, `:` and anything else; step over a whole UTF-8 character.
                i += 1;
                while i < b.len() && (b[i] & 0xC0) == 0x80 {
                    i += 1;
                }
                Kind::Other
            }
        };
        tokens.push(Token {
            kind,
            start,
            end: i,
        });
    }
    Ok(tokens)
}

/// The end of the `/* … */` comment at `i` (they nest in PostgreSQL).
fn block_comment(b: &[u8], mut i: usize) -> Result<usize, Unterminated> {
    let mut depth = 0usize;
    while i + 1 < b.len() {
        if b[i] == b'/' && b[i + 1] == b'*' {
            depth += 1;
            i += 2;
        } else if b[i] == b'*' && b[i + 1] == b'/' {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return Ok(i);
            }
        } else {
            i += 1;
        }
    }
    Err(Unterminated("comment"))
}

/// The end of the `q`-quoted text opening at `i` (a doubled `q` is an escaped one; with
/// `backslash`, so is `\` followed by anything).
fn quoted(b: &[u8], i: usize, q: u8, backslash: bool) -> Option<usize> {
    let mut j = i + 1;
    while j < b.len() {
        if backslash && b[j] == b'\\' {
            j += 2;
        } else if b[j] == q {
            if b.get(j + 1) == Some(&q) {
                j += 2;
            } else {
                return Some(j + 1);
            }
        } else {
            j += 1;
        }
    }
    None
}

/// The end of a `$tag$` opening at `i`, if one does.
fn dollar_tag(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    if j < b.len() && word_start(b[j]) {
        while j < b.len() && word_char(b[j]) && b[j] != b'$' {
            j += 1;
        }
    }
    (b.get(j) == Some(&b'$')).then_some(j + 1)
}

fn number(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'_') {
        i += 1;
    }
    if b.get(i) == Some(&b'.') && b.get(i + 1) != Some(&b'.') {
        i += 1;
        while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'_') {
            i += 1;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        let mut j = i + 1;
        if matches!(b.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        if b.get(j).is_some_and(u8::is_ascii_digit) {
            i = j;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
        }
    }
    i
}

/// The end of the operator at `i`, by PostgreSQL's rules: the longest run of operator
/// characters, stopping before a comment start, and not ending in `+` or `-` unless the run
/// holds one of ``~!@#%^&|`?`` (so `>-1` is `>` then `-1`).
fn operator(b: &[u8], i: usize) -> usize {
    let mut j = i;
    while j < b.len() && OP_CHARS.contains(&b[j]) {
        if j > i
            && ((b[j] == b'-' && b.get(j + 1) == Some(&b'-'))
                || (b[j] == b'/' && b.get(j + 1) == Some(&b'*')))
        {
            break;
        }
        j += 1;
    }
    let special = b[i..j].iter().any(|c| b"~!@#%^&|`?".contains(c));
    while j - i > 1 && !special && matches!(b[j - 1], b'+' | b'-') {
        j -= 1;
    }
    j
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(sql: &str) -> Vec<(Kind, &str)> {
        lex(sql)
            .unwrap()
            .iter()
            .map(|t| (t.kind, t.text(sql)))
            .collect()
    }

    #[test]
    fn lexes_the_shapes_the_optimizer_reads() {
        use Kind::*;
        assert_eq!(
            kinds("SELECT m.\"time\", avg(cpu) FROM public.metrics m WHERE time >= $1;"),
            vec![
                (Word, "SELECT"),
                (Word, "m"),
                (Dot, "."),
                (Quoted, "\"time\""),
                (Comma, ","),
                (Word, "avg"),
                (Open, "("),
                (Word, "cpu"),
                (Close, ")"),
                (Word, "FROM"),
                (Word, "public"),
                (Dot, "."),
                (Word, "metrics"),
                (Word, "m"),
                (Word, "WHERE"),
                (Word, "time"),
                (Op, ">="),
                (Param, "$1"),
                (Semicolon, ";"),
            ]
        );
    }

    #[test]
    fn literals_and_comments_hide_their_contents() {
        use Kind::*;
        let sql = "select 'it''s -- not', E'a\\'b', $$x;'$$, $t$ $$ $t$, \"a\"\"b\", \
                   /* c /* nested */ ; */ 1 -- where time > 0\n, 2";
        assert_eq!(
            kinds(sql),
            vec![
                (Word, "select"),
                (String, "'it''s -- not'"),
                (Comma, ","),
                (String, "E'a\\'b'"),
                (Comma, ","),
                (String, "$$x;'$$"),
                (Comma, ","),
                (String, "$t$ $$ $t$"),
                (Comma, ","),
                (Quoted, "\"a\"\"b\""),
                (Comma, ","),
                (Number, "1"),
                (Comma, ","),
                (Number, "2"),
            ]
        );
    }

    #[test]
    fn operators_follow_postgres_rules() {
        use Kind::*;
        assert_eq!(
            kinds("a>=-1 b<>c d::int e<-f g!=h i--x\nj/*y*/k"),
            vec![
                (Word, "a"),
                (Op, ">="),
                (Op, "-"),
                (Number, "1"),
                (Word, "b"),
                (Op, "<>"),
                (Word, "c"),
                (Word, "d"),
                (Op, "::"),
                (Word, "int"),
                (Word, "e"),
                (Op, "<"),
                (Op, "-"),
                (Word, "f"),
                (Word, "g"),
                (Op, "!="),
                (Word, "h"),
                (Word, "i"),
                (Word, "j"),
                (Word, "k"),
            ]
        );
        assert_eq!(
            kinds("1.5e3 .5 1..2"),
            vec![
                (Number, "1.5e3"),
                (Number, ".5"),
                (Number, "1"),
                (Dot, "."),
                (Number, ".2")
            ]
        );
    }

    #[test]
    fn idents_fold_like_postgres() {
        let sql = "Time \"Time\" \"a\"\"b\" 'x'";
        let t = lex(sql).unwrap();
        let idents: Vec<_> = t.iter().map(|t| t.ident(sql)).collect();
        assert_eq!(
            idents,
            vec![
                Some("time".to_owned()),
                Some("Time".to_owned()),
                Some("a\"b".to_owned()),
                None
            ]
        );
    }

    #[test]
    fn unterminated_text_is_an_error() {
        for sql in [
            "select 'x",
            "select \"x",
            "select $a$ x",
            "select /* x",
            "select E'\\'",
        ] {
            assert!(lex(sql).is_err(), "{sql}");
        }
        // and nothing panics on odd input
        for sql in [
            "", "$", "$$", "é", "ü'", "::", "1e", "1e+", "U&", "e", "$1a", "[1:2]",
        ] {
            let _ = lex(sql);
        }
    }
}
