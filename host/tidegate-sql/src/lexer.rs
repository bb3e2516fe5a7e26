//! The one cheap lexer behind [`fingerprint`](crate::fingerprint) and [`literals`]: both see
//! the same constants in the same order, so "the k-th literal" means the same thing to the
//! fingerprint (which drops literals), to the classifier (which records where a time bound's
//! value sits) and to [`time_range`](crate::time_range) (which reads the value back out of
//! another statement text of the same shape).

use std::borrow::Cow;

/// What kind of constant a [`Literal`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LiteralKind {
    /// `'…'`, with `''` escapes.
    String,
    /// `E'…'`, with backslash escapes as well.
    EscapeString,
    /// `N'…'`.
    NationalString,
    /// `B'…'` or `X'…'`.
    BitString,
    /// `$$…$$` or `$tag$…$tag$`.
    DollarQuoted,
    /// A numeric constant (unsigned: a leading `-` is an operator).
    Number,
    /// `$n`, a parameter. `usize::MAX` when the number does not fit.
    Param(usize),
}

/// A constant or parameter as the lexer met it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Literal<'a> {
    /// The kind of constant.
    pub kind: LiteralKind,
    /// Byte offset of its first byte, including an `E`/`N`/`B`/`X` prefix.
    pub start: usize,
    /// Byte offset just past it.
    pub end: usize,
    /// The source text `sql[start..end]`, quotes and prefix included.
    pub text: &'a str,
}

impl<'a> Literal<'a> {
    /// The value of a string constant (quotes removed, escapes applied), or `None` for
    /// numbers, bit strings, parameters, unterminated strings and escapes other than `\\`,
    /// `\'` and `''` in `E'…'` strings (a timestamp never needs them).
    pub fn string_value(&self) -> Option<Cow<'a, str>> {
        let t = self.text;
        match self.kind {
            LiteralKind::String | LiteralKind::NationalString | LiteralKind::EscapeString => {
                let body = match self.kind {
                    LiteralKind::String => t,
                    _ => t.get(1..)?,
                };
                let body = body.strip_prefix('\'')?.strip_suffix('\'')?;
                let escapes = self.kind == LiteralKind::EscapeString;
                let plain = !body.contains('\'') && (!escapes || !body.contains('\\'));
                if plain {
                    return Some(Cow::Borrowed(body));
                }
                let mut out = String::with_capacity(body.len());
                let mut chars = body.chars();
                while let Some(c) = chars.next() {
                    match c {
                        '\'' => {
                            // Inside a terminated literal a quote is always doubled.
                            if chars.next() != Some('\'') {
                                return None;
                            }
                            out.push('\'');
                        }
                        '\\' if escapes => match chars.next()? {
                            c @ ('\\' | '\'') => out.push(c),
                            _ => return None,
                        },
                        c => out.push(c),
                    }
                }
                Some(Cow::Owned(out))
            }
            LiteralKind::DollarQuoted => {
                let tag_len = t.get(1..)?.find('$')? + 2;
                if t.len() < 2 * tag_len {
                    return None;
                }
                let (tag, rest) = t.split_at(tag_len);
                rest.strip_suffix(tag).map(Cow::Borrowed)
            }
            LiteralKind::BitString | LiteralKind::Number | LiteralKind::Param(_) => None,
        }
    }
}

/// A token as the fingerprint sees it.
pub(crate) enum Token<'a> {
    /// Whitespace or a comment.
    Space,
    /// A constant or parameter.
    Literal(LiteralKind, usize, usize),
    /// A keyword or unquoted identifier, as written.
    Word(&'a [u8]),
    /// A quoted identifier, quotes included.
    QuotedIdent(&'a [u8]),
    /// Any other byte.
    Byte(u8),
}

/// Where the block comment starting at `start` (at `/*`) ends: the index just past its `*/`,
/// or the end of `sql`. Block comments nest in PostgreSQL.
pub fn block_comment_end(sql: &[u8], start: usize) -> usize {
    let mut depth = 0usize;
    let mut i = start;
    while i < sql.len() {
        if sql[i..].starts_with(b"/*") {
            depth += 1;
            i += 2;
        } else if sql[i..].starts_with(b"*/") {
            depth = depth.saturating_sub(1);
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    sql.len()
}

/// Calls `emit` for each token of `sql`, in order.
#[inline]
pub(crate) fn lex<'a>(sql: &'a [u8], mut emit: impl FnMut(Token<'a>)) {
    let mut i = 0;
    let n = sql.len();
    // Start and kind of a string constant whose prefix letter was just consumed.
    let mut prefix: Option<(usize, LiteralKind)> = None;
    while i < n {
        let c = sql[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => {
                emit(Token::Space);
                i += 1;
            }
            b'-' if sql.get(i + 1) == Some(&b'-') => {
                while i < n && sql[i] != b'\n' {
                    i += 1;
                }
                emit(Token::Space);
            }
            b'/' if sql.get(i + 1) == Some(&b'*') => {
                i = block_comment_end(sql, i);
                emit(Token::Space);
            }
            b'\'' => {
                let (start, kind) = prefix.take().unwrap_or((i, LiteralKind::String));
                // '' escapes; E'..' strings also honour backslashes.
                let escapes = kind == LiteralKind::EscapeString;
                i += 1;
                while i < n {
                    if escapes && sql[i] == b'\\' {
                        i += 2;
                    } else if sql[i] == b'\'' {
                        if sql.get(i + 1) == Some(&b'\'') {
                            i += 2;
                        } else {
                            i += 1;
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                i = i.min(n);
                emit(Token::Literal(kind, start, i));
            }
            b'"' => {
                // A quoted identifier keeps its case and contents.
                let start = i;
                i += 1;
                while i < n {
                    if sql[i] == b'"' {
                        if sql.get(i + 1) == Some(&b'"') {
                            i += 2;
                            continue;
                        }
                        i += 1;
                        break;
                    }
                    i += 1;
                }
                emit(Token::QuotedIdent(&sql[start..i]));
            }
            b'$' => {
                let start = i;
                let rest = &sql[i + 1..];
                let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
                if digits > 0 {
                    // $1: a parameter.
                    let number = rest[..digits].iter().try_fold(0usize, |acc, d| {
                        acc.checked_mul(10)?.checked_add((d - b'0') as usize)
                    });
                    i += 1 + digits;
                    let kind = LiteralKind::Param(number.unwrap_or(usize::MAX));
                    emit(Token::Literal(kind, start, i));
                    continue;
                }
                let tag_len = rest
                    .iter()
                    .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
                    .count();
                if rest.get(tag_len) == Some(&b'$') {
                    // $tag$ … $tag$: a dollar-quoted constant.
                    let tag = &sql[i..i + tag_len + 2];
                    let body_start = i + tag.len();
                    i = match sql[body_start..].windows(tag.len()).position(|w| w == tag) {
                        Some(p) => body_start + p + tag.len(),
                        None => n,
                    };
                    emit(Token::Literal(LiteralKind::DollarQuoted, start, i));
                } else {
                    emit(Token::Byte(b'$'));
                    i += 1;
                }
            }
            b'0'..=b'9' => {
                // A numeric constant (digits, one dot, exponent).
                let start = i;
                while i < n
                    && (sql[i].is_ascii_alphanumeric()
                        || sql[i] == b'.'
                        || sql[i] == b'_'
                        || ((sql[i] == b'+' || sql[i] == b'-')
                            && matches!(sql[i - 1], b'e' | b'E')))
                {
                    i += 1;
                }
                emit(Token::Literal(LiteralKind::Number, start, i));
            }
            b'.' if sql.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                let start = i;
                i += 1;
                while i < n && (sql[i].is_ascii_digit() || matches!(sql[i], b'e' | b'E')) {
                    i += 1;
                }
                emit(Token::Literal(LiteralKind::Number, start, i));
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 => {
                // A keyword or identifier; B'..' and X'..' bit strings and E'..' and N'..'
                // strings are constants whose prefix letter belongs to the constant.
                let start = i;
                while i < n
                    && (sql[i].is_ascii_alphanumeric()
                        || sql[i] == b'_'
                        || sql[i] >= 0x80
                        || sql[i] == b'$')
                {
                    i += 1;
                }
                let word = &sql[start..i];
                if word.len() == 1 && sql.get(i) == Some(&b'\'') {
                    let kind = match word[0] | 0x20 {
                        b'b' | b'x' => Some(LiteralKind::BitString),
                        b'e' => Some(LiteralKind::EscapeString),
                        b'n' => Some(LiteralKind::NationalString),
                        _ => None,
                    };
                    if let Some(kind) = kind {
                        prefix = Some((start, kind));
                        continue;
                    }
                }
                emit(Token::Word(word));
            }
            _ => {
                emit(Token::Byte(c));
                i += 1;
            }
        }
    }
}

/// The constants and `$n` parameters of `sql` in the order the fingerprint meets them: the
/// k-th entry is the k-th placeholder of the fingerprint. Statements with one fingerprint
/// have as many literals, in corresponding places.
pub fn literals(sql: &str) -> Vec<Literal<'_>> {
    let mut out = Vec::new();
    lex(sql.as_bytes(), |t| {
        if let Token::Literal(kind, start, end) = t {
            // Offsets are always on character boundaries; an empty text would still keep the
            // numbering aligned.
            let text = sql.get(start..end).unwrap_or("");
            out.push(Literal {
                kind,
                start,
                end,
                text,
            });
        }
    });
    out
}
