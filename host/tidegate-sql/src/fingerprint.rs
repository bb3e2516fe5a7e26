//! A literal-stripping fingerprint computed by one pass over the bytes, without allocating.
//!
//! Like pg_stat_statements' normalization: string, numeric, bit and dollar-quoted constants and
//! `$n` parameters become one placeholder; whitespace runs and comments fold to one separator;
//! keywords and unquoted identifiers fold to lower case. Statements that differ only in their
//! constants (pgbench's `-S` query with another `aid`) share a fingerprint.

use crate::lexer::{lex, Token};

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

/// The fingerprint of `sql`.
pub fn fingerprint(sql: &[u8]) -> Fingerprint {
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
            Token::Literal(..) => h.byte(PLACEHOLDER),
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
            Token::Byte(b) => h.byte(b),
        }
    });
    h.finish()
}
