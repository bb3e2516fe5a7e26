//! Which statements leave state on a server connection that outlives the transaction.
//!
//! Transaction pooling hands a server connection to another client after each transaction, so a
//! client that creates session state (a `SET`, `LISTEN`, a temporary table, an SQL-level
//! `PREPARE`, a session advisory lock, a `WITH HOLD` cursor…) is *pinned*: it keeps its server
//! connection until it disconnects, and the connection is reset with `DISCARD ALL` before reuse.
//! The scan is a cheap, conservative byte scan — a false positive only costs pooling efficiency,
//! a false negative would leak state, so anything doubtful pins.

/// What a statement does to session state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Effect {
    /// The client must keep its server connection for the rest of the session.
    pub pin: bool,
    /// The statement may drop server-side prepared statements (`DISCARD`, `DEALLOCATE`).
    pub drops_prepared: bool,
    /// State no statement text describes: procedural code (`DO`, `CALL`) or a temporary table,
    /// which can change what later identical statements read.
    pub opaque: bool,
}

/// Scans one query string (possibly several statements).
pub fn scan(sql: &[u8]) -> Effect {
    if plain(sql) {
        return Effect::default();
    }
    scan_statements(sql)
}

/// [`scan`], statement by statement.
fn scan_statements(sql: &[u8]) -> Effect {
    let mut effect = Effect::default();
    for stmt in Statements::new(sql) {
        let s = skip_space_and_comments(stmt);
        if s.is_empty() {
            continue;
        }
        let (first, rest) = word(s);
        let (second, _) = word(skip_space_and_comments(rest));
        let pin = match first.as_slice() {
            b"set" => !matches!(second.as_slice(), b"local" | b"transaction"),
            b"reset" | b"listen" | b"prepare" | b"load" => true,
            // Procedural code can do any of the above.
            b"do" | b"call" => {
                effect.opaque = true;
                true
            }
            b"discard" | b"deallocate" => {
                effect.drops_prepared = true;
                true
            }
            // CREATE TEMP/TEMPORARY TABLE, CREATE OR REPLACE TEMP VIEW, CREATE TABLE pg_temp.t…
            b"create" if contains_ci(s, b"temp") => {
                effect.opaque = true;
                true
            }
            b"declare" => contains_ci(s, b"hold"),
            _ => false,
        };
        // Functions with session effects may appear anywhere, e.g. `SELECT pg_advisory_lock(1)`;
        // with no parenthesis there is no function call, so the common case skips the search.
        let calls = s.contains(&b'(');
        let pin = pin
            || (calls
                && (contains_ci(s, b"pg_advisory_lock")
                    || contains_ci(s, b"pg_try_advisory_lock")
                    || contains_ci(s, b"set_config")))
            || (contains_ci(s, b"into")
                && (contains_ci(s, b"temp") || contains_ci(s, b"unlogged")));
        effect.opaque |= pin && contains_ci(s, b"into") && contains_ci(s, b"temp");
        effect.pin |= pin;
    }
    effect
}

/// Whether `sql` is one statement that [`scan`] would find nothing in, decided in one pass:
/// its first keyword is none of those `scan` looks at, and it has no quote, comment, dollar
/// quote (a `$` that is not a parameter), parenthesis (function call), second statement or
/// `into`. Anything else takes the full scan; this only spares the common plain statement its
/// several searches.
fn plain(sql: &[u8]) -> bool {
    let (first, _) = word(skip_space_and_comments(sql));
    if matches!(
        first.as_slice(),
        b"set"
            | b"reset"
            | b"listen"
            | b"prepare"
            | b"load"
            | b"do"
            | b"call"
            | b"discard"
            | b"deallocate"
            | b"create"
            | b"declare"
    ) {
        return false;
    }
    let mut i = 0;
    while let Some(p) = sql[i..].iter().position(|&b| PLAIN_STOP[b as usize]) {
        i += p;
        match sql[i] {
            b';' => return sql[i + 1..].iter().all(u8::is_ascii_whitespace),
            // `$1` is a parameter; any other `$` may open a dollar quote.
            b'$' if sql.get(i + 1).is_some_and(u8::is_ascii_digit) => {}
            b'i' | b'I' => {
                if sql
                    .get(i + 1..i + 4)
                    .is_some_and(|w| w.eq_ignore_ascii_case(b"nto"))
                {
                    return false;
                }
            }
            _ => return false,
        }
        i += 1;
    }
    true
}

/// The bytes [`plain`] stops at: quotes, comments, dollar quotes, calls, statement ends, `into`.
static PLAIN_STOP: [bool; 256] = {
    let mut t = [false; 256];
    let stops = b"'\"-/$(;iI";
    let mut k = 0;
    while k < stops.len() {
        t[stops[k] as usize] = true;
        k += 1;
    }
    t
};

/// The position of the next byte [`Statements`] must look at (a semicolon, a quote, or what
/// may open a comment or a dollar quote): two vectorized searches instead of a loop.
#[inline]
fn next_special(s: &[u8]) -> Option<usize> {
    let ends = memchr::memchr3(b';', b'\'', b'"', s);
    let opens = memchr::memchr3(b'-', b'/', b'$', &s[..ends.unwrap_or(s.len())]);
    opens.or(ends)
}

/// Splits a query string at the semicolons that end statements, skipping those inside quotes,
/// dollar quotes and comments.
struct Statements<'a> {
    sql: &'a [u8],
    pos: usize,
}

impl<'a> Statements<'a> {
    fn new(sql: &'a [u8]) -> Self {
        Statements { sql, pos: 0 }
    }
}

impl<'a> Iterator for Statements<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let sql = self.sql;
        if self.pos >= sql.len() {
            return None;
        }
        let start = self.pos;
        let mut i = start;
        while i < sql.len() {
            // Jump to the next byte that can end a statement or open a quote or comment.
            match next_special(&sql[i..]) {
                Some(p) => i += p,
                None => break,
            }
            match sql[i] {
                b';' => {
                    self.pos = i + 1;
                    return Some(&sql[start..i]);
                }
                q @ (b'\'' | b'"') => {
                    // E'…' (not part of a longer word) reads backslash escapes: `E'\''` does
                    // not end at its second quote.
                    let escapes = q == b'\''
                        && i > 0
                        && sql[i - 1].eq_ignore_ascii_case(&b'e')
                        && (i < 2 || !is_word_byte(sql[i - 2]));
                    i += 1;
                    while i < sql.len() && sql[i] != q {
                        if escapes && sql[i] == b'\\' {
                            i += 1;
                        }
                        i += 1;
                    }
                }
                b'-' if sql.get(i + 1) == Some(&b'-') => {
                    // PostgreSQL ends a line comment at '\n' or '\r'.
                    while i < sql.len() && sql[i] != b'\n' && sql[i] != b'\r' {
                        i += 1;
                    }
                }
                b'/' if sql.get(i + 1) == Some(&b'*') => {
                    i = crate::block_comment_end(sql, i);
                    continue;
                }
                b'$' => {
                    // $tag$ … $tag$ (tag may be empty); a bare $1 parameter is not a quote.
                    let tag_end = sql[i + 1..]
                        .iter()
                        .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
                        .map(|p| i + 1 + p);
                    if let Some(e) =
                        tag_end.filter(|&e| sql[e] == b'$' && !sql[i + 1].is_ascii_digit())
                    {
                        let tag = &sql[i..=e];
                        i = e + 1;
                        match sql[i..].windows(tag.len()).position(|w| w == tag) {
                            Some(p) => i += p + tag.len() - 1,
                            None => i = sql.len(),
                        }
                    }
                }
                _ => {}
            }
            i += 1;
        }
        self.pos = sql.len();
        Some(&sql[start..])
    }
}

fn skip_space_and_comments(mut s: &[u8]) -> &[u8] {
    loop {
        let before = s.len();
        while let [c, rest @ ..] = s {
            if c.is_ascii_whitespace() || *c == b'(' {
                s = rest;
            } else {
                break;
            }
        }
        if let Some(rest) = s.strip_prefix(b"--") {
            s = rest
                .iter()
                .position(|&b| b == b'\n' || b == b'\r')
                .map_or(&[], |p| &rest[p + 1..]);
        } else if s.starts_with(b"/*") {
            s = &s[crate::block_comment_end(s, 0)..];
        }
        if s.len() == before {
            return s;
        }
    }
}

/// The first keyword of `sql` (comments and leading space skipped), lowercased; empty when
/// it is longer than 16 bytes.
pub fn first_keyword(sql: &[u8]) -> WordBuf {
    word(skip_space_and_comments(sql)).0
}

/// The leading keyword, lowercased (at most 16 bytes are kept), and what follows it.
fn word(s: &[u8]) -> (WordBuf, &[u8]) {
    let end = s
        .iter()
        .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
        .unwrap_or(s.len());
    (WordBuf::new(&s[..end]), &s[end..])
}

/// A small lowercase copy of a keyword, on the stack.
pub struct WordBuf {
    buf: [u8; 16],
    len: usize,
}

impl WordBuf {
    fn new(w: &[u8]) -> Self {
        let mut buf = [0u8; 16];
        let len = if w.len() > 16 { 0 } else { w.len() };
        for (d, s) in buf.iter_mut().zip(&w[..len]) {
            *d = s.to_ascii_lowercase();
        }
        WordBuf { buf, len }
    }

    /// The keyword's bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// Whether `needle` (ASCII) occurs in `hay`, ignoring case.
pub fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    let Some((first, rest)) = needle.split_first() else {
        return true;
    };
    let Some(last_start) = hay.len().checked_sub(needle.len()) else {
        return false;
    };
    // Candidates by their first byte (a vectorized search); only those are compared whole.
    let (lower, upper) = (first.to_ascii_lowercase(), first.to_ascii_uppercase());
    memchr::memchr2_iter(lower, upper, &hay[..=last_start])
        .any(|i| hay[i + 1..i + needle.len()].eq_ignore_ascii_case(rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn procedural_code_and_temporary_tables_are_opaque() {
        for sql in [
            "DO $$ BEGIN PERFORM 1; END $$",
            "CALL p()",
            "CREATE TEMP TABLE t (a int)",
            "SELECT * INTO TEMP t FROM a",
        ] {
            assert!(scan(sql.as_bytes()).opaque, "{sql}");
        }
        for sql in [
            "SET temp_buffers = '8MB'",
            "SET search_path = a",
            "SELECT 1",
        ] {
            assert!(!scan(sql.as_bytes()).opaque, "{sql}");
        }
        assert_eq!(first_keyword(b" /* hint */ SeT x = 1").as_slice(), b"set");
    }

    #[test]
    fn session_state_pins_and_plain_statements_do_not() {
        let pins = [
            "SET search_path = x",
            "set TimeZone to 'UTC'",
            "SET SESSION statement_timeout = 5",
            "RESET ALL",
            "LISTEN chan",
            "PREPARE p AS SELECT 1",
            "CREATE TEMP TABLE t (a int)",
            "create local temporary table t (a int)",
            "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
            "SELECT pg_advisory_lock(1)",
            "select pg_try_advisory_lock(1)",
            "SELECT set_config('a.b', 'c', false)",
            "SELECT 1; SET x = 1",
            "/* hint */ SET x = 1",
            "-- c\nSET x = 1",
            "SELECT * INTO TEMP t FROM a",
            "DISCARD ALL",
            "DEALLOCATE p",
            "/*;*/SET search_path = evil",
            "SELECT ';'; SET x = 1",
            "SELECT $$;$$; SET x = 1",
            "CREATE OR REPLACE TEMP VIEW v AS SELECT 1",
            "CREATE TABLE pg_temp.t (a int)",
            "DO $$BEGIN SET search_path = x; END$$",
            "CALL p()",
            "/* a /* nested */ comment */ LISTEN c",
            "SELECT 1 --\r; SET search_path = b",
            "-- c\rSET x = 1",
            "SELECT E'\\''; SET search_path = evil; --'",
            "SELECT e'\\\\'; SET x = 1",
        ];
        for s in pins {
            assert!(scan(s.as_bytes()).pin, "{s}");
            assert!(!plain(s.as_bytes()), "{s}");
        }
        let plain = [
            "SELECT 1",
            "SELECT abalance FROM pgbench_accounts WHERE aid = 5;",
            "BEGIN",
            "SET LOCAL statement_timeout = 5",
            "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            "UPDATE t SET a = 1",
            "SELECT pg_advisory_xact_lock(1)",
            "DECLARE c CURSOR FOR SELECT 1",
            "INSERT INTO t VALUES (1)",
            "SELECT 'SET x = 1; LISTEN y'",
            "SELECT $1::int, $2",
            "SELECT 1 -- ; SET x = 1",
            "SELECT 'a\\'; SELECT 1",
            "",
        ];
        for s in plain {
            assert!(!scan(s.as_bytes()).pin, "{s}");
        }
        // The one-pass check takes the plain statements it can and agrees with the full scan.
        assert!(super::plain(
            b"SELECT abalance FROM pgbench_accounts WHERE aid = 5;"
        ));
        assert!(super::plain(b"UPDATE t SET a = 1"));
        assert!(super::plain(
            b"SELECT abalance FROM pgbench_accounts WHERE aid = $1;"
        ));
        assert!(!super::plain(b"SELECT $a$;$a$"));
        for s in pins
            .iter()
            .chain(&plain)
            .chain(&["SELECT 1;  ", "select a from pinto"])
        {
            if super::plain(s.as_bytes()) {
                assert_eq!(scan_statements(s.as_bytes()), Effect::default(), "{s}");
            }
        }
        assert!(!super::plain(b"select a from pinto"));
        assert!(scan(b"DISCARD ALL").drops_prepared);
        assert!(!scan(b"SET x = 1").drops_prepared);
    }

    proptest::proptest! {
        #[test]
        fn the_one_pass_check_agrees_with_the_full_scan(
            s in "((SET|set|SELECT|LISTEN|CREATE|DISCARD|do|INTO|into|TEMP|temp|unlogged|pg_advisory_lock|set_config|hold|'|\"|;|--|/\\*|\\*/|\\(|\\$|\\$\\$|\\$1|1|a|i|nto|\n| ){0,12})",
        ) {
            if super::plain(s.as_bytes()) {
                proptest::prop_assert_eq!(scan_statements(s.as_bytes()), Effect::default(), "{}", s);
            }
        }
    }
}
