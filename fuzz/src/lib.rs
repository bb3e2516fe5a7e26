//! Shared checks for the fuzz targets that need no `tidegate` internals.
//!
//! [`fingerprint_diff`]: whenever `tidegate_sql::fingerprint` gives two SQL texts the same
//! fingerprint, sqlparser's PostgreSQL tokenizer must read them as the same token sequence once
//! constants are replaced by a placeholder, whitespace and comments dropped and unquoted words
//! case-folded (the texts differ only in constants), and `classify` must agree on kind,
//! read-only and tables. Otherwise a verdict cached for one would cover the other.

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::tokenizer::{Token, Tokenizer};
use tidegate_sql::{classify, fingerprint, literals, Kind, NoLookup};

/// What one pair came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Different fingerprints: nothing to check.
    Distinct,
    /// Same fingerprint, but sqlparser rejects one of the texts (an error in a constant, or an
    /// unterminated construct): no token sequence to compare.
    Untokenizable,
    /// Same fingerprint; tokens (and classifications, where both parse) agree.
    Agree,
}

/// sqlparser's reading of `sql`, constants as `?`, without whitespace and comments.
pub fn normalized_tokens(sql: &str) -> Option<Vec<String>> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize().ok()?;
    let mut out = Vec::with_capacity(tokens.len());
    for t in tokens {
        let s = match t {
            Token::Whitespace(_) | Token::EOF => continue,
            Token::Number(..)
            | Token::SingleQuotedString(_)
            | Token::NationalStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::UnicodeStringLiteral(_)
            | Token::HexStringLiteral(_)
            | Token::SingleQuotedByteStringLiteral(_)
            | Token::DoubleQuotedByteStringLiteral(_)
            | Token::DollarQuotedString(_)
            | Token::Placeholder(_) => "?".to_owned(),
            Token::Word(w) => match w.quote_style {
                None => format!("w:{}", w.value.to_ascii_lowercase()),
                Some(q) => format!("q:{q}{}", w.value),
            },
            other => format!("t:{other:?}"),
        };
        out.push(s);
    }
    Some(out)
}

/// Checks one pair; `Err` describes a collision.
pub fn fingerprint_diff(a: &str, b: &str) -> Result<Outcome, String> {
    if fingerprint(a.as_bytes()) != fingerprint(b.as_bytes()) {
        return Ok(Outcome::Distinct);
    }
    // The k-th literal is the k-th placeholder: equal fingerprints, equal counts.
    let (la, lb) = (literals(a).len(), literals(b).len());
    if la != lb {
        return Err(format!("{la} vs {lb} literals: {a:?} / {b:?}"));
    }
    let (Some(ta), Some(tb)) = (normalized_tokens(a), normalized_tokens(b)) else {
        return Ok(Outcome::Untokenizable);
    };
    if ta != tb {
        return Err(format!(
            "same fingerprint, different tokens:\n  {a:?}\n  {b:?}\n  {ta:?}\n  {tb:?}"
        ));
    }
    let (ca, cb) = (classify(a, &NoLookup), classify(b, &NoLookup));
    let parsed = |c: &tidegate_sql::Classification| !(c.kind == Kind::Unknown && c.statements == 0);
    if parsed(&ca)
        && parsed(&cb)
        && (ca.kind != cb.kind || ca.read_only != cb.read_only || ca.tables != cb.tables)
    {
        return Err(format!(
            "same fingerprint, different classification:\n  {a:?}\n  {b:?}\n  {:?} {} {:?}\n  {:?} {} {:?}",
            ca.kind, ca.read_only, ca.tables, cb.kind, cb.read_only, cb.tables
        ));
    }
    Ok(Outcome::Agree)
}

/// A small deterministic generator (xorshift64*).
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// One of `items`.
    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// Constants of every kind, including ones whose bodies look like SQL.
pub const CONSTANTS: &[&str] = &[
    "1",
    "42",
    "1.5",
    ".5",
    "1e5",
    "2.",
    "1_000",
    "0x1F",
    "$1",
    "$2",
    "$12",
    "'x'",
    "''",
    "'it''s'",
    "'\\'",
    "'--'",
    "'/*'",
    "';DELETE FROM acct;'",
    "E'\\''",
    "E'\\\\'",
    "e'a\\nb'",
    "E'\\x41'",
    "N'n'",
    "B'101'",
    "X'ff'",
    "x'0'",
    "$$x$$",
    "$$'$$",
    "$a$ $b$ $a$",
    "$q$;DELETE FROM acct;$q$",
    "$a$$a$",
    "U&'d\\0061t'",
    "u&'x'",
    "U&'!0061' UESCAPE '!'",
    "'a'\n'b'",
    "'a' -- c\n'b'",
    "E'x'\r'y'",
];

/// Everything else a statement is made of, chosen to sit next to the constants above.
pub const PIECES: &[&str] = &[
    "SELECT",
    "select",
    "FROM",
    "t",
    "acct",
    "\"acct\"",
    "\"a\"\"b\"",
    "WHERE",
    "a",
    "b",
    "a$b",
    "x$1",
    "=",
    "<",
    ">=",
    "+",
    "-",
    "*",
    "/",
    ",",
    "(",
    ")",
    ";",
    ".",
    "::",
    "?",
    "?|",
    "@",
    "#",
    "&",
    "|",
    "$",
    "DELETE",
    "UPDATE t SET a = 1",
    "INSERT INTO t VALUES (1)",
    "LIMIT",
    "AND",
    "OR",
    "e",
    "E",
    "n",
    "x",
    "B",
    "U",
    "u",
    "L",
    "UESCAPE",
    "U&\"a\"",
    "U&\"!0061cct\"",
    "--",
    "-- c",
    "--\r",
    "/*",
    "*/",
    "/* c */",
    "/* /* */ */",
    "/* /* */",
    " ",
    "  ",
    "\n",
    "\r",
    "\r\n",
    "\t",
    "\x0b",
    "\x0c",
    "'",
    "\"",
    "$a$",
    "$b$",
    "$1$",
    "\\",
    "nextval('s')",
    "now()",
    "count(*)",
    "FOR UPDATE",
    "INTO",
    "RETURNING",
    "1abc",
    "1from",
    "..",
    "$€$",
    "é",
    "€",
    "\u{a0}",
];

/// A random statement text.
pub fn random_sql(rng: &mut Rng) -> String {
    let n = 1 + rng.below(14);
    let mut s = String::new();
    for _ in 0..n {
        let piece = if rng.below(3) == 0 {
            rng.pick(CONSTANTS)
        } else {
            rng.pick(PIECES)
        };
        s.push_str(piece);
        match rng.below(4) {
            0 | 1 => s.push(' '),
            2 => {}
            _ => s.push_str(rng.pick(&[" ", "\n", "\r", "\t", "--\n", "/**/", "  "])),
        }
    }
    s
}

/// `sql` with each constant (as the fingerprint numbers them) possibly replaced by another:
/// the pair should share a fingerprint, and when it does the check above has work to do.
pub fn swap_constants(sql: &str, rng: &mut Rng) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut at = 0;
    for lit in literals(sql) {
        if lit.start < at || !sql.is_char_boundary(lit.start) || !sql.is_char_boundary(lit.end) {
            continue;
        }
        out.push_str(&sql[at..lit.start]);
        if rng.below(3) == 0 {
            out.push_str(lit.text);
        } else {
            out.push_str(rng.pick(CONSTANTS));
        }
        at = lit.end;
    }
    out.push_str(&sql[at..]);
    out
}

/// A byte-level mutation of `sql` that keeps it UTF-8: an inserted `\r`, `\n`, quote, dash,
/// star, slash, backslash or dollar, or a removed character.
pub fn mutate(sql: &str, rng: &mut Rng) -> String {
    let mut s = sql.to_owned();
    let boundaries: Vec<usize> = (0..=s.len()).filter(|&i| s.is_char_boundary(i)).collect();
    let at = boundaries[rng.below(boundaries.len())];
    if rng.below(4) == 0 && at < s.len() {
        s.remove(at);
    } else {
        let ins = rng.pick(&[
            "\r", "\n", "'", "\"", "-", "*", "/", "\\", "$", "$$", "''", "E", "U&", "\r\n",
        ]);
        s.insert_str(at, ins);
    }
    s
}

/// The cargo-fuzz entry: `data` is two texts split at the first `0xff` byte (never in UTF-8),
/// or one text paired with itself after constant swaps and a mutation chosen from its bytes.
pub fn fuzz_one(data: &[u8]) {
    let (a, b) = match data.iter().position(|&b| b == 0xff) {
        Some(p) => (
            String::from_utf8_lossy(&data[..p]).into_owned(),
            String::from_utf8_lossy(&data[p + 1..]).into_owned(),
        ),
        None => {
            let a = String::from_utf8_lossy(data).into_owned();
            let seed = data.iter().fold(0x9e37_79b9_7f4a_7c15u64, |h, &b| {
                (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
            }) | 1;
            let mut rng = Rng(seed);
            let b = match rng.below(3) {
                0 => swap_constants(&a, &mut rng),
                1 => mutate(&a, &mut rng),
                _ => swap_constants(&mutate(&a, &mut rng), &mut rng),
            };
            (a, b)
        }
    };
    if let Err(e) = fingerprint_diff(&a, &b) {
        panic!("{e}");
    }
}
