//! The host-side view of what plugins see and decide: plain Rust types, no wasmtime in sight.

use std::sync::Arc;

/// How TideGate classified a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatementKind {
    /// Only reads.
    Read,
    /// Writes, or reads with side effects.
    Write,
    /// Schema changes, GRANT/REVOKE.
    Ddl,
    /// Transaction control.
    Transaction,
    /// Session and utility statements.
    Utility,
}

/// A table a statement references.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableRef {
    /// Schema, when qualified.
    pub schema: Option<String>,
    /// Name.
    pub name: String,
}

/// Who runs a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Broker user.
    pub user: String,
    /// PostgreSQL role it acts as.
    pub role: String,
    /// Roles the broker configuration grants it.
    pub roles: Vec<String>,
    /// Database.
    pub database: String,
}

/// A statement about to run.
#[derive(Debug, Clone)]
pub struct Statement {
    /// Who runs it.
    pub principal: Arc<Principal>,
    /// Its text.
    pub sql: String,
    /// Its literal-stripped fingerprint.
    pub fingerprint: u128,
    /// Its kind.
    pub kind: StatementKind,
    /// Proved read-only.
    pub read_only: bool,
    /// Tables it references.
    pub tables: Vec<TableRef>,
    /// From an extended-protocol Parse.
    pub prepared: bool,
}

/// A refusal, with the plugin that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// Message for the client.
    pub reason: String,
    /// SQLSTATE (validated: five ASCII digits or upper-case letters).
    pub sqlstate: String,
    /// Hint for the client.
    pub hint: Option<String>,
    /// The plugin that denied, or that failed closed.
    pub plugin: String,
}

/// The chain's verdict on a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Run it as sent.
    Allow,
    /// Run this text instead (rewritten by `by`).
    Rewrite {
        /// The new SQL.
        sql: String,
        /// The plugins that rewrote it, in order.
        by: Vec<String>,
    },
    /// Do not run it.
    Deny(Denial),
}

impl Verdict {
    /// "allow", "deny" or "rewrite" (for audit).
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Rewrite { .. } => "rewrite",
            Verdict::Deny(_) => "deny",
        }
    }
}

/// Whether `s` is a well-formed SQLSTATE.
pub fn valid_sqlstate(s: &str) -> bool {
    s.len() == 5
        && s.bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
}

/// A statement fingerprint as plugins and the audit table see it: 32 lower-case hex digits.
pub fn fingerprint_hex(fp: u128) -> String {
    hex(&fp.to_be_bytes())
}

/// `bytes` as lower-case hex digits. (Written by hand: it runs for every audited statement, and
/// `format!` costs several times more.)
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        hex.push(DIGITS[usize::from(b >> 4)] as char);
        hex.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    hex
}

/// The bytes `s` spells in hex digits (either case), or `None` unless every character is one
/// and they come in pairs (no sign, prefix or space, unlike `from_str_radix`).
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    fn digit(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let b = s.as_bytes();
    if b.len() % 2 != 0 {
        return None;
    }
    b.chunks_exact(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

/// A result or target column, as plugins see it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Column {
    /// The table it belongs to, when PostgreSQL (or the statement) says.
    pub table: Option<TableRef>,
    /// Its name.
    pub name: String,
    /// Its type as `format_type` prints it (`text`, `character varying`, …); `unknown` when
    /// the host could not tell.
    pub type_name: String,
}

/// A value in PostgreSQL's wire form (text or binary as the client asked); `None` is NULL.
pub type Value = Option<Vec<u8>>;

/// A literal or bound parameter headed for a column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundValue {
    /// The column it is written to.
    pub column: Column,
    /// The value.
    pub value: Value,
}

/// What happened to one statement (never its parameter values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// Who ran it.
    pub principal: Arc<Principal>,
    /// Its fingerprint (32 hex digits; shared: a session formats a statement's once).
    pub fingerprint: Arc<str>,
    /// Its kind.
    pub kind: StatementKind,
    /// Tables it referenced (shared: alike events carry the same list).
    pub tables: Arc<[TableRef]>,
    /// `allow`, `deny` or `rewrite`.
    pub decision: String,
    /// The plugin that denied or rewrote it.
    pub decided_by: Option<String>,
    /// Rows returned or affected.
    pub rows: u64,
    /// Time from the request to its last reply.
    pub duration_us: u64,
    /// The first error's SQLSTATE; `None` when it succeeded.
    pub sqlstate: Option<String>,
    /// When it started, µs since the Unix epoch.
    pub at_us: i64,
}

/// An audit plugin's record of an event: the event (possibly redacted) and its labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// The event to persist.
    pub event: AuditEvent,
    /// Labels (sorted by the host is not promised: kept in the plugin's order).
    pub labels: Vec<(String, String)>,
}

impl StatementKind {
    /// Its name in the WIT and in audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            StatementKind::Read => "read",
            StatementKind::Write => "write",
            StatementKind::Ddl => "ddl",
            StatementKind::Transaction => "transaction",
            StatementKind::Utility => "utility",
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fingerprint_hex_is_32_lower_case_digits() {
        let mut x = 0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834_u128;
        for fp in [0, 1, 0xabc, u128::MAX, 1 << 127] {
            assert_eq!(super::fingerprint_hex(fp), format!("{fp:032x}"));
        }
        for _ in 0..1000 {
            x = x
                .wrapping_mul(0x2545_f491_4f6c_dd1d)
                .wrapping_add(0x1405_7b7e_f767_814f);
            assert_eq!(super::fingerprint_hex(x), format!("{x:032x}"));
        }
    }

    #[test]
    fn unhex_reads_what_hex_writes_and_nothing_else() {
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(super::unhex(&super::hex(&all)), Some(all));
        assert_eq!(super::unhex("DEADbeef"), Some(vec![0xde, 0xad, 0xbe, 0xef]));
        assert_eq!(super::unhex(""), Some(vec![]));
        // from_str_radix would take a sign; a pair must be two digits.
        for bad in ["+f", "-1", "0", "abc", " 0", "0x", "g0", "é0"] {
            assert_eq!(super::unhex(bad), None, "{bad:?}");
        }
    }
}
