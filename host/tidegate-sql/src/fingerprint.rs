//! A literal-stripping fingerprint computed by one pass over the bytes, without allocating.
//!
//! Like pg_stat_statements' normalization: string, numeric, bit and dollar-quoted constants and
//! `$n` parameters become one placeholder; whitespace runs and comments fold to one separator;
//! keywords and unquoted identifiers fold to lower case. Statements that differ only in their
//! constants (pgbench's `-S` query with another `aid`) share a fingerprint.
//!
//! The fingerprint keys cached verdicts, so two texts that PostgreSQL (or sqlparser, which
//! classifies) reads as different token sequences must never share one: the lexer follows
//! PostgreSQL's rules (see `lexer::lex`) and hashes byte for byte what the two could read
//! differently, and the encoding below keeps distinct token sequences distinct. Ordinary
//! statements (words, punctuation, constants set off by whitespace or punctuation) hash as they
//! always did, so configured fingerprints stay valid.

use crate::lexer::{lex, LiteralKind, Token};

/// 128 bits, so unrelated statements practically never share one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub u128);

struct Hasher {
    a: u64,
    b: u64,
}

impl Hasher {
    fn new() -> Self {
        // FNV-1a offset basis, and a second stream seeded differently and mixed multiplicatively.
        Hasher {
            a: 0xcbf2_9ce4_8422_2325,
            b: 0x9e37_79b9_7f4a_7c15,
        }
    }

    #[inline]
    fn byte(&mut self, x: u8) {
        self.a = (self.a ^ x as u64).wrapping_mul(0x0000_0100_0000_01b3);
        self.b = (self.b ^ x as u64)
            .wrapping_mul(0xff51_afd7_ed55_8ccd)
            .rotate_left(29);
    }

    fn finish(self) -> Fingerprint {
        Fingerprint(((self.a as u128) << 64) | self.b as u128)
    }
}

const PLACEHOLDER: u8 = b'?';
const SEPARATOR: u8 = b' ';
/// Starts a two-byte (or longer) code that no word, quoted identifier or other token begins
/// with: bytes below `0x20` and `?` as punctuation, byte-for-byte text, glued constants and
/// unterminated constructs.
const ESCAPE: u8 = 0;
const CODE_EXACT: u8 = 1;
const CODE_UNTERMINATED: u8 = 2;
/// Plus the constant's class: a constant immediately followed by a name, a digit, `.`, `$` or a
/// quote (`1abc`, `$1.`, `B'1''0'`), where how the two lexers split the text depends on its kind.
const CODE_GLUED: u8 = 0x10;

/// The fingerprint of `sql`.
pub fn fingerprint(sql: &[u8]) -> Fingerprint {
    fingerprint_with(sql, |_| {})
}

/// What [`fingerprint_with`] tells its observer about the tokens it hashed.
pub(crate) enum Seen {
    /// A numeric constant hashed as a placeholder and not glued to what follows it: no byte
    /// after it is one a constant or a name could continue with.
    Number(usize, usize),
    /// A token hashed byte for byte, or an unterminated construct.
    Exact,
}

/// [`fingerprint`], telling `seen` of the numbers it replaced and of the exact tokens.
#[inline]
pub(crate) fn fingerprint_with(sql: &[u8], mut seen: impl FnMut(Seen)) -> Fingerprint {
    let mut h = Hasher::new();
    // Whether a separator is pending before the next token.
    let mut sep = false;
    lex(sql, |t| {
        if let Token::Space = t {
            sep = true;
            return;
        }
        if sep {
            h.byte(SEPARATOR);
            sep = false;
        }
        match t {
            Token::Space => {}
            Token::Literal(kind, start, end) => {
                h.byte(PLACEHOLDER);
                if sql.get(end).is_some_and(|&b| {
                    b.is_ascii_alphanumeric()
                        || matches!(b, b'_' | b'$' | b'.' | b'\'' | b'"')
                        || b >= 0x80
                }) {
                    let class = match kind {
                        LiteralKind::Param(_) => 1,
                        LiteralKind::Number => 2,
                        LiteralKind::BitString => 3,
                        LiteralKind::UnicodeString => 4,
                        LiteralKind::DollarQuoted => 5,
                        LiteralKind::String
                        | LiteralKind::EscapeString
                        | LiteralKind::NationalString => 6,
                    };
                    h.byte(ESCAPE);
                    h.byte(CODE_GLUED + class);
                } else if kind == LiteralKind::Number {
                    seen(Seen::Number(start, end));
                }
            }
            Token::Exact(bytes) => {
                seen(Seen::Exact);
                h.byte(ESCAPE);
                h.byte(CODE_EXACT);
                for b in (bytes.len() as u64).to_le_bytes() {
                    h.byte(b);
                }
                for &b in bytes {
                    h.byte(b);
                }
            }
            Token::Word(w) => {
                for &b in w {
                    h.byte(b.to_ascii_lowercase());
                }
            }
            Token::QuotedIdent(w) => {
                for &b in w {
                    h.byte(b);
                }
            }
            Token::Byte(b) => {
                if b < 0x20 || b == PLACEHOLDER {
                    h.byte(ESCAPE);
                }
                h.byte(b);
            }
            Token::Unterminated => {
                seen(Seen::Exact);
                h.byte(ESCAPE);
                h.byte(CODE_UNTERMINATED);
            }
        }
    });
    h.finish()
}

/// The most bytes [`normalize`] returns (statements are cut there, on a character boundary).
pub const NORMALIZED_MAX: usize = 2000;

/// `sql` with every constant replaced by `?` (parameters `$n` kept) and whitespace runs folded
/// to one space: the text shown for a fingerprint, which never carries a value a client sent.
/// Cut at [`NORMALIZED_MAX`] bytes.
pub fn normalize(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len().min(NORMALIZED_MAX));
    let mut copied = 0;
    let words = |out: &mut String, text: &str| {
        let mut first = true;
        for w in text.split(|c: char| c.is_ascii_whitespace()) {
            if !first && !out.ends_with(' ') && !out.is_empty() {
                out.push(' ');
            }
            first = false;
            out.push_str(w);
        }
    };
    for lit in crate::lexer::literals(sql) {
        words(&mut out, sql.get(copied..lit.start).unwrap_or(""));
        if matches!(lit.kind, crate::lexer::LiteralKind::Param(_)) {
            out.push_str(lit.text);
        } else {
            out.push('?');
        }
        copied = lit.end;
    }
    words(&mut out, sql.get(copied..).unwrap_or(""));
    let trimmed = out.trim();
    let mut end = trimmed.len().min(NORMALIZED_MAX);
    while !trimmed.is_char_boundary(end) {
        end -= 1;
    }
    trimmed[..end].to_owned()
}

#[cfg(test)]
mod normalize_tests {
    use super::normalize;

    #[test]
    fn constants_become_placeholders_and_space_folds() {
        assert_eq!(
            normalize("SELECT  abalance FROM t\n WHERE aid = 12345 AND s = 'x''y' AND p = $1"),
            "SELECT abalance FROM t WHERE aid = ? AND s = ? AND p = $1"
        );
        assert_eq!(normalize("select $$secret$$"), "select ?");
    }
}
