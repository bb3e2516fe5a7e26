//! The one cheap lexer behind [`fingerprint`](crate::fingerprint) and [`literals`]: both see
//! the same constants in the same order, so "the k-th literal" means the same thing to the
//! fingerprint (which drops literals), to the classifier (which records where a time bound's
//! value sits) and to [`time_range`](crate::time_range) (which reads the value back out of
//! another statement text of the same shape).

pub use literal::{Literal, LiteralKind};

mod literal;

/// A token as the fingerprint sees it.
pub(crate) enum Token<'a> {
    /// Whitespace or a comment.
    Space,
    /// A constant or parameter.
    Literal(LiteralKind, usize, usize),
    /// Text hashed byte for byte: a construct PostgreSQL and sqlparser may read differently, or
    /// whose value changes how the statement reads (a `UESCAPE` character). Never a literal.
    Exact(&'a [u8]),
    /// A keyword or unquoted identifier, as written.
    Word(&'a [u8]),
    /// A quoted identifier, quotes included.
    QuotedIdent(&'a [u8]),
    /// Any other byte.
    Byte(u8),
    /// The text ends inside a string, quoted identifier, dollar quote or block comment
    /// (PostgreSQL rejects it).
    Unterminated,
}

/// Whether PostgreSQL and sqlparser may read `sql` as different tokens (the lexer hashes
/// such a construct byte for byte: an operator glued to a comment start, a dollar tag
/// sqlparser does not take, a `U&` constant, strings continued across lines…). A
/// classification of such a text, made from sqlparser's reading, cannot be trusted.
pub fn readings_may_differ(sql: &[u8]) -> bool {
    let mut differ = false;
    lex(sql, |t| differ |= matches!(t, Token::Exact(_)));
    differ
}

/// Where the block comment starting at `start` (at `/*`) ends: the index just past its `*/`,
/// or the end of `sql`. Block comments nest in PostgreSQL.
pub fn block_comment_end(sql: &[u8], start: usize) -> usize {
    block_comment(sql, start).unwrap_or(sql.len())
}

/// The index just past the `*/` closing the (nesting) block comment at `start`, or `None` when
/// the text ends inside it.
fn block_comment(sql: &[u8], start: usize) -> Option<usize> {
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
                return Some(i);
            }
        } else {
            i += 1;
        }
    }
    None
}

/// How the body of a quoted constant ends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Quoting {
    /// `'…'`, `N'…'`, `U&'…'`: `''` is a quote.
    Standard,
    /// `E'…'`: `''` and a backslash followed by any character.
    Escape,
    /// `B'…'`, `X'…'`: the first quote ends it (`''` is not an escape in PostgreSQL).
    Bits,
}

/// Scans a quoted body starting just past its opening quote: the index just past the closing
/// quote, or `None` when the text ends first.
fn quoted_end(sql: &[u8], mut i: usize, q: Quoting) -> Option<usize> {
    let n = sql.len();
    while i < n {
        match sql[i] {
            b'\\' if q == Quoting::Escape => i += 2,
            b'\'' if q != Quoting::Bits && sql.get(i + 1) == Some(&b'\'') => i += 2,
            b'\'' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// Scans a quoted identifier's body starting just past its opening `"` (`""` is a quote):
/// the index just past the closing `"`, or `None` when the text ends first.
fn ident_end(sql: &[u8], mut i: usize) -> Option<usize> {
    while i < sql.len() {
        match sql[i] {
            b'"' if sql.get(i + 1) == Some(&b'"') => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// PostgreSQL's string continuation: after a closing quote at `i - 1`, whitespace that holds a
/// newline (`--` comments allowed, block comments not) and another quote continue the same
/// constant. Returns the index just past that next quote.
fn continuation(sql: &[u8], mut i: usize) -> Option<usize> {
    let n = sql.len();
    let mut newline = false;
    while i < n {
        match sql[i] {
            b'\n' | b'\r' => {
                newline = true;
                i += 1;
            }
            b' ' | b'\t' | b'\x0b' | b'\x0c' => i += 1,
            b'-' if sql.get(i + 1) == Some(&b'-') => i = line_end(sql, i),
            b'\'' if newline => return Some(i + 1),
            _ => return None,
        }
    }
    None
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_ident_cont(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// End of PostgreSQL 16's numeric constant starting at `i` (a digit, or `.` and a digit), and
/// whether it is a plain decimal (no `_` separators, no `0x`/`0o`/`0b` prefix).
fn number_end(sql: &[u8], start: usize) -> (usize, bool) {
    let digit_run = |mut i: usize, ok: fn(u8) -> bool| -> (usize, bool) {
        // digit (_? digit)*, starting at a digit.
        let mut underscore = false;
        while i < sql.len() {
            if ok(sql[i]) {
                i += 1;
            } else if sql[i] == b'_' && i + 1 < sql.len() && ok(sql[i + 1]) {
                underscore = true;
                i += 2;
            } else {
                break;
            }
        }
        (i, underscore)
    };
    let dec = |b: u8| b.is_ascii_digit();
    if sql[start] == b'0' {
        let radix: Option<fn(u8) -> bool> = match sql.get(start + 1).map(|b| b | 0x20) {
            Some(b'x') => Some(|b: u8| b.is_ascii_hexdigit()),
            Some(b'o') => Some(|b: u8| (b'0'..=b'7').contains(&b)),
            Some(b'b') => Some(|b: u8| b == b'0' || b == b'1'),
            _ => None,
        };
        if let Some(ok) = radix {
            let mut i = start + 2;
            if sql.get(i) == Some(&b'_') && sql.get(i + 1).is_some_and(|b| ok(*b)) {
                i += 1;
            }
            if sql.get(i).is_some_and(|b| ok(*b)) {
                return (digit_run(i, ok).0, false);
            }
            // `0x` without digits: PostgreSQL rejects it; the `0` alone is the constant here.
            return (start + 1, true);
        }
    }
    let mut plain = true;
    let mut i = start;
    if sql[i] != b'.' {
        let (e, u) = digit_run(i, dec);
        plain &= !u;
        i = e;
        // `1..2` is `1` and `..2`.
        if sql.get(i) == Some(&b'.') && sql.get(i + 1) != Some(&b'.') {
            i += 1;
            if sql.get(i).is_some_and(u8::is_ascii_digit) {
                let (e, u) = digit_run(i, dec);
                plain &= !u;
                i = e;
            }
        }
    } else {
        let (e, u) = digit_run(i + 1, dec);
        plain &= !u;
        i = e;
    }
    if matches!(sql.get(i), Some(b'e' | b'E')) {
        let mut j = i + 1;
        if matches!(sql.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        if sql.get(j).is_some_and(u8::is_ascii_digit) {
            let (e, u) = digit_run(j, dec);
            plain &= !u;
            i = e;
        }
    }
    (i, plain)
}

/// Calls `emit` for each token of `sql`, in order.
///
/// The lexer reads the text as PostgreSQL 16 does with `standard_conforming_strings = on` (the
/// broker refuses `off`, where `'\''` would be an escaped quote): `--` comments end at `\n` or
/// `\r`, block comments nest, `E'…'` strings honour backslashes, `B'…'`/`X'…'` end at the first
/// quote, quoted constants separated by whitespace holding a newline are one constant, dollar
/// tags follow PostgreSQL's identifier rules. Where PostgreSQL (of any supported version) and
/// sqlparser, which [`classify`](crate::classify) parses with, could read the same bytes as
/// different tokens, the construct is hashed byte for byte ([`Token::Exact`]), and when the two
/// readings could lose step, everything from there to the end of the text is: the fingerprint
/// may only ever distinguish more.
#[inline]
pub(crate) fn lex<'a>(sql: &'a [u8], emit: impl FnMut(Token<'a>)) {
    let n = sql.len();
    let mut put = with_uescape(sql, emit);
    // Whether the last token was an operator character: sqlparser reads a comment start
    // right after one (`</*`, `=--`) as more of the operator, PostgreSQL as a comment.
    let mut after_op = false;
    let mut i = 0;
    // Each scanner returns where lexing resumes; `REST_EMITTED` is past any end.
    while i < n {
        let c = sql[i];
        let was_op = std::mem::take(&mut after_op);
        i = match c {
            b'-' | b'/'
                if was_op && sql.get(i + 1) == Some(if c == b'-' { &b'-' } else { &b'*' }) =>
            {
                rest_exact(sql, i, &mut put)
            }
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c' => {
                put(Token::Space, false);
                i + 1
            }
            b'-' if sql.get(i + 1) == Some(&b'-') => {
                put(Token::Space, false);
                line_end(sql, i)
            }
            b'/' if sql.get(i + 1) == Some(&b'*') => block_comment_token(sql, i, &mut put),
            b'\'' => quoted(
                sql,
                i,
                i + 1,
                Quoting::Standard,
                LiteralKind::String,
                &mut put,
            ),
            b'"' => quoted_ident(sql, i, &mut put),
            b'$' => dollar(sql, i, &mut put),
            // A number, or a fraction starting with its point.
            b'0'..=b'9' | b'.' if c != b'.' || sql.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                number(sql, i, &mut put)
            }
            c if is_ident_start(c) => word(sql, i, &mut put),
            _ => {
                put(Token::Byte(c), false);
                after_op = OPERATOR_CHARS.contains(&c);
                i + 1
            }
        };
    }
}

/// PostgreSQL's operator characters.
const OPERATOR_CHARS: &[u8] = b"~!@#^&|`?+-*/%<>=";

/// Where a scanner that emitted the rest of the text tells [`lex`] to resume: past any end.
const REST_EMITTED: usize = usize::MAX;

/// Wraps `emit` into the `put(token, unicode)` every scanner calls, `unicode` saying the token
/// is a `U&` constant or identifier. When such a token is followed by a `UESCAPE` keyword, the
/// string after that is hashed exactly (it changes what a `U&"…"` identifier names); spaces in
/// between do not count.
#[inline]
fn with_uescape<'a>(sql: &'a [u8], mut emit: impl FnMut(Token<'a>)) -> impl FnMut(Token<'a>, bool) {
    // After a `U&` constant or identifier: 1, then 2 after its `UESCAPE` keyword.
    let mut uescape = 0u8;
    move |t: Token<'a>, unicode: bool| {
        match &t {
            Token::Space => {}
            Token::Word(w) if uescape == 1 && w.eq_ignore_ascii_case(b"uescape") => {
                uescape = 2;
                emit(t);
                return;
            }
            Token::Literal(_, s, e) if uescape == 2 => {
                uescape = 0;
                emit(Token::Exact(&sql[*s..*e]));
                return;
            }
            _ => uescape = if unicode { 1 } else { 0 },
        }
        emit(t);
    }
}

/// Emits everything from `at` on, byte for byte (the readings may lose step there).
#[inline]
fn rest_exact<'a>(sql: &'a [u8], at: usize, put: &mut impl FnMut(Token<'a>, bool)) -> usize {
    put(Token::Exact(&sql[at..]), false);
    REST_EMITTED
}

/// Where the `--` comment at `i` ends: at `\n` or `\r` (PostgreSQL and sqlparser end it at
/// either newline byte), or at the end of `sql`.
#[inline]
fn line_end(sql: &[u8], mut i: usize) -> usize {
    while i < sql.len() && sql[i] != b'\n' && sql[i] != b'\r' {
        i += 1;
    }
    i
}

/// The block comment at `start` (at `/*`): a space, or the end of an unterminated text.
#[inline]
fn block_comment_token<'a>(
    sql: &'a [u8],
    start: usize,
    put: &mut impl FnMut(Token<'a>, bool),
) -> usize {
    match block_comment(sql, start) {
        Some(end) => {
            put(Token::Space, false);
            end
        }
        None => {
            put(Token::Unterminated, false);
            sql.len()
        }
    }
}

/// The quoted identifier at `start` (at `"`): it keeps its case and contents.
#[inline]
fn quoted_ident<'a>(sql: &'a [u8], start: usize, put: &mut impl FnMut(Token<'a>, bool)) -> usize {
    let end = ident_end(sql, start + 1);
    let i = end.unwrap_or(sql.len());
    put(Token::QuotedIdent(&sql[start..i]), false);
    if end.is_none() {
        put(Token::Unterminated, false);
    }
    i
}

/// What starts with `$` at `start`: a parameter, a dollar-quoted constant, or a `$` alone.
#[inline]
fn dollar<'a>(sql: &'a [u8], start: usize, put: &mut impl FnMut(Token<'a>, bool)) -> usize {
    let rest = &sql[start + 1..];
    if rest.first().is_some_and(u8::is_ascii_digit) {
        return parameter(sql, start, put);
    }
    let tag_len = if rest.first().is_some_and(|b| is_ident_start(*b)) {
        rest.iter()
            .take_while(|b| is_ident_cont(**b) && **b != b'$')
            .count()
    } else {
        0
    };
    if rest.get(tag_len) == Some(&b'$') {
        dollar_quoted(sql, start, tag_len, put)
    } else if tag_len > 0 {
        // `$abc`: `$` and a name to PostgreSQL (a syntax error), one placeholder to
        // sqlparser, which also takes a prefix letter (`$E'…'`, `$U&'…'`) with it.
        rest_exact(sql, start, put)
    } else {
        put(Token::Byte(b'$'), false);
        start + 1
    }
}

/// The `$` and digits at `start`: a parameter (`$1`).
#[inline]
fn parameter<'a>(sql: &'a [u8], start: usize, put: &mut impl FnMut(Token<'a>, bool)) -> usize {
    let rest = &sql[start + 1..];
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if rest.get(digits).is_some_and(|b| is_ident_cont(*b)) {
        // `$1abc`, `$1_0`, `$1$…`: trailing junk to PostgreSQL 15+, a parameter and a name to
        // older ones, a placeholder or a dollar quote tagged `1` to sqlparser.
        return rest_exact(sql, start, put);
    }
    let number = rest[..digits].iter().try_fold(0usize, |acc, d| {
        acc.checked_mul(10)?.checked_add((d - b'0') as usize)
    });
    let end = start + 1 + digits;
    let kind = LiteralKind::Param(number.unwrap_or(usize::MAX));
    put(Token::Literal(kind, start, end), false);
    end
}

/// The dollar-quoted constant at `start` whose tag (`$tag$`, `$$`) holds `tag_len` name bytes:
/// `$tag$ … $tag$`.
#[inline]
fn dollar_quoted<'a>(
    sql: &'a [u8],
    start: usize,
    tag_len: usize,
    put: &mut impl FnMut(Token<'a>, bool),
) -> usize {
    let tag = &sql[start..start + tag_len + 2];
    if tag.iter().any(|b| *b >= 0x80) {
        // sqlparser takes only alphanumeric characters into a tag.
        return rest_exact(sql, start, put);
    }
    let body_start = start + tag.len();
    match sql[body_start..].windows(tag.len()).position(|w| w == tag) {
        Some(p) => {
            let end = body_start + p + tag.len();
            put(Token::Literal(LiteralKind::DollarQuoted, start, end), false);
            end
        }
        None => {
            let end = sql.len();
            put(Token::Literal(LiteralKind::DollarQuoted, start, end), false);
            put(Token::Unterminated, false);
            end
        }
    }
}

/// The numeric constant at `start` (a digit, or `.` and a digit).
#[inline]
fn number<'a>(sql: &'a [u8], start: usize, put: &mut impl FnMut(Token<'a>, bool)) -> usize {
    let (end, plain) = number_end(sql, start);
    if matches!(sql.get(end), Some(b'.' | b'L')) {
        // `1..2`: PostgreSQL reads `1` `.` `.2`, sqlparser `1.` `.2`; sqlparser takes an `L`
        // suffix into the number (`1LE'x'` is `1L`, `E'x'`).
        return rest_exact(sql, start, put);
    }
    if plain {
        put(Token::Literal(LiteralKind::Number, start, end), false);
    } else {
        // `1_000`, `0x1F`: one constant to PostgreSQL 16, a number and a name to older
        // versions.
        put(Token::Exact(&sql[start..end]), false);
    }
    end
}

/// The keyword or identifier at `start`, or the constant or identifier it is the prefix of.
#[inline]
fn word<'a>(sql: &'a [u8], start: usize, put: &mut impl FnMut(Token<'a>, bool)) -> usize {
    let mut i = start;
    while i < sql.len() && is_ident_cont(sql[i]) {
        i += 1;
    }
    let word = &sql[start..i];
    if word.len() == 1 {
        if let Some(end) = prefixed(sql, start, put) {
            return end;
        }
    }
    put(Token::Word(word), false);
    i
}

/// When the one-letter word at `start` is the prefix of a constant or identifier — `B'…'` and
/// `X'…'` bit strings, `E'…'`, `N'…'` and `U&'…'` strings (constants whose prefix belongs to
/// the constant), a `U&"…"` identifier — scans and emits it: where lexing resumes. `None` when
/// the letter is a word of its own.
#[inline]
fn prefixed<'a>(
    sql: &'a [u8],
    start: usize,
    put: &mut impl FnMut(Token<'a>, bool),
) -> Option<usize> {
    let after = start + 1;
    let (body, q, kind) = match (sql[start] | 0x20, sql.get(after)) {
        (b'b' | b'x', Some(b'\'')) => (after + 1, Quoting::Bits, LiteralKind::BitString),
        (b'e', Some(b'\'')) => (after + 1, Quoting::Escape, LiteralKind::EscapeString),
        (b'n', Some(b'\'')) => (after + 1, Quoting::Standard, LiteralKind::NationalString),
        (b'u', Some(b'&')) => match sql.get(after + 1) {
            Some(b'\'') => (after + 2, Quoting::Standard, LiteralKind::UnicodeString),
            Some(b'"') => return Some(unicode_ident(sql, start, after + 2, put)),
            _ => return None,
        },
        _ => return None,
    };
    Some(quoted(sql, start, body, q, kind, put))
}

/// The `U&"…"` identifier whose prefix starts at `start` and whose body starts at `body`: the
/// identifier and its prefix, byte for byte.
#[inline]
fn unicode_ident<'a>(
    sql: &'a [u8],
    start: usize,
    body: usize,
    put: &mut impl FnMut(Token<'a>, bool),
) -> usize {
    let end = ident_end(sql, body);
    let i = end.unwrap_or(sql.len());
    put(Token::Exact(&sql[start..i]), true);
    if end.is_none() {
        put(Token::Unterminated, false);
    }
    i
}

/// Scans a quoted constant whose prefix starts at `start` and whose body starts at `body`
/// (past the opening quote), with PostgreSQL's continuation, and emits it. Returns where
/// lexing resumes, or [`REST_EMITTED`] when it emitted the rest of the text (the readings may
/// lose step).
fn quoted<'a>(
    sql: &'a [u8],
    start: usize,
    body: usize,
    q: Quoting,
    kind: LiteralKind,
    put: &mut impl FnMut(Token<'a>, bool),
) -> usize {
    let unicode = kind == LiteralKind::UnicodeString;
    let Some(mut end) = quoted_end(sql, body, q) else {
        put(Token::Literal(kind, start, sql.len()), unicode);
        put(Token::Unterminated, false);
        return sql.len();
    };
    if q == Quoting::Bits && (sql[body..end].contains(&b'\\') || sql.get(end) == Some(&b'\'')) {
        // sqlparser reads backslash escapes in X'…' and `''` in B'…' and X'…'.
        return rest_exact(sql, start, put);
    }
    let mut continued = false;
    while let Some(next) = continuation(sql, end) {
        continued = true;
        match quoted_end(sql, next, q) {
            Some(e) => {
                if q == Quoting::Escape && sql[next..e].contains(&b'\\') {
                    // sqlparser reads the continued part as a plain string.
                    return rest_exact(sql, start, put);
                }
                if q == Quoting::Bits
                    && (sql[next..e].contains(&b'\\') || sql.get(e) == Some(&b'\''))
                {
                    return rest_exact(sql, start, put);
                }
                end = e;
            }
            None => return rest_exact(sql, start, put),
        }
    }
    if continued {
        // One constant to PostgreSQL, several to sqlparser: byte for byte.
        put(Token::Exact(&sql[start..end]), unicode);
    } else {
        put(Token::Literal(kind, start, end), unicode);
    }
    end
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
