//! A session's last few statement shapes: clients send the same statements again and again
//! with other numbers in them (`… WHERE aid = 41` then `… WHERE aid = 7`), often a few in turn
//! (a transaction's statements), and such a text needs no second lexing pass to be
//! fingerprinted and scanned for session state.
//!
//! Each of the memo's `SLOTS` slots keeps a text read and where its plain decimal constants
//! sat (if it has none, only the same text again hits). A new text that equals it byte for
//! byte outside those places, and holds a run of ASCII digits in each, lexes to the same
//! tokens: its prefix up to each number is the same bytes (so the lexer reaches the number in
//! the same state), a digit run followed by the same byte ends where the old one did (that
//! byte is never one a number could continue with — those constants are not kept), and digits
//! are no letters, so no keyword search of [`session_state::scan`] or [`mentions_own_session`]
//! reads them differently (the words those look for hold no digit, so each lies between the
//! numbers, where the texts are the same). Anything else is read afresh and takes the slot
//! read longest ago.

use crate::fingerprint::{fingerprint_with, Fingerprint, Seen};
use crate::own_session::mentions_own_session;
use crate::session_state::{self, Effect};

/// Texts longer than this are read afresh every time (the memo holds no large copy).
const SHAPE_MAX: usize = 1024;

/// What a statement text reads as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// [`crate::fingerprint`] of it.
    pub fp: Fingerprint,
    /// [`session_state::scan`] of it.
    pub effect: Effect,
    /// [`mentions_own_session`] of it.
    pub own_session: bool,
}

/// Statement texts a memo remembers (TPC-B's transaction has seven).
const SLOTS: usize = 8;

/// The last few statement texts read, the slot that answered last checked first.
#[derive(Default)]
pub struct ShapeMemo {
    /// Boxed: a session holds a memo, and its future stays small.
    slots: Box<[Slot; SLOTS]>,
    /// The slot that answered last.
    last: usize,
    /// The slot the next text read afresh takes.
    next: usize,
}

impl ShapeMemo {
    /// What `sql` reads as: its fingerprint, session-state effect and whether it may name the
    /// session's own server process or prepared statements.
    pub fn read(&mut self, sql: &[u8]) -> Shape {
        if let Some(read) = self.slots[self.last].hit(sql) {
            return read;
        }
        for (i, slot) in self.slots.iter().enumerate() {
            if i == self.last {
                continue; // Looked at first.
            }
            if let Some(read) = slot.hit(sql) {
                self.last = i;
                return read;
            }
        }
        self.last = self.next;
        self.next = (self.next + 1) % SLOTS;
        self.slots[self.last].read_afresh(sql)
    }

    /// Whether some slot holds `sql`'s shape.
    #[cfg(test)]
    fn same_shape(&self, sql: &[u8]) -> bool {
        self.slots.iter().any(|s| s.hit(sql).is_some())
    }
}

/// One statement text fingerprinted, its numbers' places and what it read as.
#[derive(Default)]
struct Slot {
    text: Vec<u8>,
    /// `(start, end)` of each plain decimal constant in `text`, in order.
    numbers: Vec<(usize, usize)>,
    /// What `text` read as; `None` when nothing is remembered.
    read: Option<Shape>,
}

impl Slot {
    /// What `sql` reads as, if it has this slot's shape.
    #[inline]
    fn hit(&self, sql: &[u8]) -> Option<Shape> {
        let read = self.read?;
        self.same_shape(sql).then_some(read)
    }

    /// Reads `sql` with a full pass and remembers it.
    fn read_afresh(&mut self, sql: &[u8]) -> Shape {
        self.read = None;
        self.text.clear();
        self.numbers.clear();
        let mut exact = false;
        let fp = fingerprint_with(sql, |seen| match seen {
            // Numbers glued to what follows (`1abc`, `1.`) are not reported.
            Seen::Number(start, end) => {
                if sql[start..end].iter().all(u8::is_ascii_digit) {
                    self.numbers.push((start, end));
                }
            }
            Seen::Exact => exact = true,
        });
        let shape = Shape {
            fp,
            effect: session_state::scan(sql),
            own_session: mentions_own_session(sql),
        };
        if !exact && sql.len() <= SHAPE_MAX {
            self.text.extend_from_slice(sql);
            self.read = Some(shape);
        } else {
            self.numbers.clear();
        }
        shape
    }

    /// `sql` is the remembered text with other digit runs in its numbers' places.
    #[inline]
    fn same_shape(&self, sql: &[u8]) -> bool {
        let (mut at, mut from) = (0, 0);
        for &(start, end) in &self.numbers {
            let between = &self.text[from..start];
            if !sql[at..].starts_with(between) {
                return false;
            }
            at += between.len();
            let digits = sql[at..].iter().take_while(|b| b.is_ascii_digit()).count();
            if digits == 0 {
                return false;
            }
            at += digits;
            from = end;
        }
        sql[at..] == self.text[from..]
    }
}

#[cfg(test)]
mod tests {
    use super::{ShapeMemo, SLOTS};
    use crate::{fingerprint, mentions_own_session, session_state};
    use proptest::prelude::*;

    fn check(memo: &mut ShapeMemo, sql: &str) {
        let got = memo.read(sql.as_bytes());
        assert_eq!(
            got.fp,
            fingerprint(sql.as_bytes()),
            "fingerprint of {sql:?}"
        );
        assert_eq!(
            got.effect,
            session_state::scan(sql.as_bytes()),
            "effect of {sql:?}"
        );
        assert_eq!(
            got.own_session,
            mentions_own_session(sql.as_bytes()),
            "own session in {sql:?}"
        );
    }

    #[test]
    fn other_numbers_hit_and_other_texts_read_afresh() {
        let mut m = ShapeMemo::default();
        for sql in [
            "SELECT abalance FROM pgbench_accounts WHERE aid = 41;",
            "SELECT abalance FROM pgbench_accounts WHERE aid = 123456;",
            "SELECT abalance FROM pgbench_accounts WHERE aid = 7",
            "SELECT abalance FROM pgbench_accounts WHERE aid = 7 LIMIT 2",
            "SELECT abalance FROM pgbench_accounts WHERE aid = 0x1F LIMIT 2",
            "SELECT abalance FROM pgbench_accounts WHERE aid = 01 LIMIT 2",
            "SELECT 1.5, 2",
            "SELECT 1e5, 2",
            "SELECT 1, 2e5",
            "SELECT 1, 2_000",
            "SELECT 12abc",
            "SELECT 12",
            "SELECT 12::text",
            "SET statement_timeout = 5",
            "SET statement_timeout = 50",
            "SELECT U&'x' UESCAPE '!' , 5",
            "SELECT $1 + 3",
            "SELECT pg_backend_pid(), 5",
            "SELECT pg_backend_pid(), 6",
            "SELECT name FROM pg_prepared_statements LIMIT 3",
        ] {
            check(&mut m, sql);
        }
    }

    #[test]
    fn a_repeated_shape_is_remembered() {
        let mut m = ShapeMemo::default();
        m.read(b"SELECT v FROM t WHERE id = 1");
        assert!(m.same_shape(b"SELECT v FROM t WHERE id = 99999"));
        assert!(!m.same_shape(b"SELECT v FROM t WHERE id = 9.5"));
        assert!(!m.same_shape(b"SELECT v FROM t WHERE id = x"));
        assert!(!m.same_shape(b"SELECT v FROM t WHERE id = 1 OR true"));
        m.read(b"COMMIT");
        assert!(m.same_shape(b"COMMIT"));
        assert!(!m.same_shape(b"COMMIT AND CHAIN"));
    }

    #[test]
    fn statements_sent_in_turn_are_all_remembered_up_to_the_slots() {
        let mut m = ShapeMemo::default();
        let texts: Vec<String> = (0..SLOTS)
            .map(|i| format!("UPDATE t{i} SET v = v + 1 WHERE id = 1"))
            .collect();
        for t in &texts {
            check(&mut m, t);
        }
        for (i, t) in texts.iter().enumerate() {
            let other = t.replace("= 1", "= 98765");
            assert!(m.same_shape(other.as_bytes()), "slot {i}");
            check(&mut m, &other);
        }
        // One more text takes the slot read longest ago: the first.
        check(&mut m, "SELECT 1");
        assert!(!m.same_shape(texts[0].as_bytes()));
        assert!(m.same_shape(texts[1].as_bytes()));
    }

    /// Texts built from pieces where number changes matter: constants of every kind, words,
    /// quotes, comments, operators, separators.
    fn text() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just(" ".to_owned()),
            Just(" = ".to_owned()),
            Just(", ".to_owned()),
            Just("SELECT ".to_owned()),
            Just("into".to_owned()),
            Just("temp".to_owned()),
            Just("set ".to_owned()),
            "[0-9]{1,4}",
            Just(".".to_owned()),
            Just("e".to_owned()),
            Just("x".to_owned()),
            Just("_".to_owned()),
            Just("backend".to_owned()),
            Just("_Statements".to_owned()),
            Just("$".to_owned()),
            Just("'".to_owned()),
            Just("\"".to_owned()),
            Just("--".to_owned()),
            Just("/*".to_owned()),
            Just("*/".to_owned()),
            Just("U&".to_owned()),
            Just(" UESCAPE ".to_owned()),
            Just(";".to_owned()),
            Just("(".to_owned()),
            Just("\n".to_owned()),
            Just("-".to_owned()),
            Just("<".to_owned()),
        ];
        proptest::collection::vec(piece, 0..16).prop_map(|v| v.concat())
    }

    /// `sql` with each digit replaced as `digits` says (cycled), some runs made longer.
    fn renumber(sql: &str, digits: &[u8], grow: bool) -> String {
        let mut out = String::new();
        let mut k = 0;
        for c in sql.chars() {
            if c.is_ascii_digit() && !digits.is_empty() {
                out.push((b'0' + digits[k % digits.len()] % 10) as char);
                if grow && k % 3 == 0 {
                    out.push('7');
                }
                k += 1;
            } else {
                out.push(c);
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn the_memo_always_reads_as_a_fresh_pass(
            first in text(),
            digits in proptest::collection::vec(0u8..10, 0..6),
            grow in any::<bool>(),
            other in text(),
        ) {
            let mut m = ShapeMemo::default();
            check(&mut m, &first);
            check(&mut m, &renumber(&first, &digits, grow));
            check(&mut m, &other);
            check(&mut m, &renumber(&other, &digits, !grow));
            check(&mut m, &first);
        }
    }
}
