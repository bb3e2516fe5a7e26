//! Builders for the hook inputs, for plugins' native unit tests.

use crate::{AuditEvent, Principal, Statement, StatementKind, TableRef};
use alloc::borrow::ToOwned;
use alloc::vec::Vec;

/// A principal: broker user `user` acting as PostgreSQL role `user` in database `postgres`,
/// granted `roles` by the broker configuration.
pub fn principal(user: &str, roles: &[&str]) -> Principal {
    Principal {
        user: user.to_owned(),
        role: user.to_owned(),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        database: "postgres".to_owned(),
    }
}

/// A simple-protocol statement of `kind` referencing `tables` (each `"schema.table"` or
/// `"table"`), with a dummy fingerprint; read-only iff `kind` is read.
pub fn statement(
    principal: Principal,
    sql: &str,
    kind: StatementKind,
    tables: &[&str],
) -> Statement {
    let mut tables: Vec<TableRef> = tables.iter().map(|t| TableRef::parse(t)).collect();
    tables.sort_by_key(TableRef::qualified);
    tables.dedup();
    Statement {
        principal,
        sql: sql.to_owned(),
        fingerprint: "0".repeat(32),
        kind,
        read_only: kind == StatementKind::Read,
        tables,
        prepared: false,
    }
}

/// An allowed statement of `kind` by `principal` that returned one row in a millisecond.
pub fn audit_event(principal: Principal, kind: StatementKind) -> AuditEvent {
    AuditEvent {
        principal,
        fingerprint: "0".repeat(32),
        kind,
        tables: Vec::new(),
        decision: "allow".to_owned(),
        decided_by: None,
        rows: 1,
        duration_us: 1_000,
        sqlstate: None,
        at_us: 1_700_000_000_000_000,
    }
}
