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
