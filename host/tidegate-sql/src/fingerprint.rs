//! A literal-stripping fingerprint computed by one pass over the bytes, without allocating.
//!
//! Like pg_stat_statements' normalization: string, numeric, bit and dollar-quoted constants and
//! `$n` parameters become one placeholder; whitespace runs and comments fold to one separator;
//! keywords and unquoted identifiers fold to lower case. Statements that differ only in their
//! constants (pgbench's `-S` query with another `aid`) share a fingerprint.

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

/// The fingerprint of `sql`.
pub fn fingerprint(sql: &[u8]) -> Fingerprint {
    let mut h = Hasher::new();
    let mut i = 0;
    let n = sql.len();
    // Whether a separator is pending before the next token.
    let mut sep = false;
    let emit_sep = |h: &mut Hasher, sep: &mut bool| {
        if *sep {
            h.byte(SEPARATOR);
            *sep = false;
        }
    };
    while i < n {
        let c = sql[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => {
                sep = true;
                i += 1;
            }
            b'-' if sql.get(i + 1) == Some(&b'-') => {
                while i < n && sql[i] != b'\n' {
                    i += 1;
                }
                sep = true;
            }
            b'/' if sql.get(i + 1) == Some(&b'*') => {
                i = block_comment_end(sql, i);
                sep = true;
            }
            b'\'' => {
                // A string constant, with '' escapes; E'..' strings also honour backslashes.
                let escapes = i > 0 && matches!(sql[i - 1], b'e' | b'E');
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
                emit_sep(&mut h, &mut sep);
                h.byte(PLACEHOLDER);
            }
            b'"' => {
                // A quoted identifier keeps its case and contents.
                emit_sep(&mut h, &mut sep);
                h.byte(b'"');
                i += 1;
                while i < n {
                    h.byte(sql[i]);
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
            }
            b'$' => {
                let rest = &sql[i + 1..];
                let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
                if digits > 0 {
                    // $1: a parameter.
                    i += 1 + digits;
                    emit_sep(&mut h, &mut sep);
                    h.byte(PLACEHOLDER);
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
                    emit_sep(&mut h, &mut sep);
                    h.byte(PLACEHOLDER);
                } else {
                    emit_sep(&mut h, &mut sep);
                    h.byte(b'$');
                    i += 1;
                }
            }
            b'0'..=b'9' => {
                // A numeric constant (digits, one dot, exponent).
                while i < n
                    && (sql[i].is_ascii_alphanumeric()
                        || sql[i] == b'.'
                        || sql[i] == b'_'
                        || ((sql[i] == b'+' || sql[i] == b'-')
                            && matches!(sql[i - 1], b'e' | b'E')))
                {
                    i += 1;
                }
                emit_sep(&mut h, &mut sep);
                h.byte(PLACEHOLDER);
            }
            b'.' if sql.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                i += 1;
                while i < n && (sql[i].is_ascii_digit() || matches!(sql[i], b'e' | b'E')) {
                    i += 1;
                }
                emit_sep(&mut h, &mut sep);
                h.byte(PLACEHOLDER);
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 => {
                // A keyword or identifier; B'..' and X'..' bit strings and E'..' strings are
                // constants whose prefix letter is dropped.
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
                let prefix = word.len() == 1 && matches!(word[0] | 0x20, b'b' | b'x' | b'e' | b'n');
                if prefix && sql.get(i) == Some(&b'\'') {
                    continue;
                }
                emit_sep(&mut h, &mut sep);
                for &b in word {
                    h.byte(b.to_ascii_lowercase());
                }
            }
            _ => {
                emit_sep(&mut h, &mut sep);
                h.byte(c);
                i += 1;
            }
        }
    }
    h.finish()
}
