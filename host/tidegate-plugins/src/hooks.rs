//! The hook calls — `on-statement` and the data hooks `on-rows`, `on-write-values`,
//! `on-audit` — each on a warm instance, with everything the plugin returns checked before the
//! host uses it.

use crate::bindings::wit;
use crate::decision::validate_decision;
use crate::runtime::{truncate, CallError, LoadedPlugin, MAX_RETURN_BYTES};
use crate::types::{
    AuditEvent, AuditRecord, BoundValue, Column, Denial, Principal, Statement, StatementKind,
    TableRef, Value,
};
use crate::valid_sqlstate;
use crate::PluginDecision;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// What a data hook answered: transformed values, or a refusal.
pub type HookResult<T> = Result<Result<T, Denial>, CallError>;

impl LoadedPlugin {
    /// Calls `on-statement`. A trapped instance is discarded, never reused.
    pub async fn on_statement(&self, stmt: &Statement) -> Result<PluginDecision, CallError> {
        self.calls.fetch_add(1, Relaxed);
        let mut w = self.take().await?;
        let arg = to_wit_statement(stmt);
        let result = w
            .plugin
            .tidegate_policy_policy()
            .call_on_statement(&mut w.store, &arg)
            .await;
        match result {
            Ok(d) => {
                self.release(w);
                match validate_decision(d) {
                    Ok(d) => {
                        self.succeeded();
                        Ok(d)
                    }
                    Err(why) => Err(self.failed(CallError::Invalid(self.name.to_string(), why))),
                }
            }
            Err(e) => Err(self.failed(self.trap(&e))),
        }
    }

    /// Calls `on-rows` with a batch of rows whose values are those of `columns`. The answer
    /// must have as many rows, each with as many values, within the size caps.
    pub async fn on_rows(
        &self,
        stmt: &Statement,
        columns: &[Column],
        rows: &[Vec<Value>],
    ) -> HookResult<Vec<Vec<Value>>> {
        self.calls.fetch_add(1, Relaxed);
        let mut w = self.take().await?;
        let (n_rows, width) = (rows.len(), columns.len());
        let cols: Vec<wit::Column> = columns.iter().map(to_wit_column).collect();
        let result = w
            .plugin
            .tidegate_policy_policy()
            .call_on_rows(&mut w.store, &to_wit_statement(stmt), &cols, rows)
            .await;
        match result {
            Ok(answer) => {
                self.release(w);
                let checked = match answer {
                    Ok(rows) => check_rows(&rows, n_rows, width).map(|()| Ok(rows)),
                    Err(d) => self.denial(d).map(Err),
                };
                self.settle(checked)
            }
            Err(e) => Err(self.failed(self.trap(&e))),
        }
    }

    /// Calls `on-write-values`; the answer must hold one value per value given.
    pub async fn on_write_values(
        &self,
        stmt: &Statement,
        values: &[BoundValue],
    ) -> HookResult<Vec<Value>> {
        self.calls.fetch_add(1, Relaxed);
        let mut w = self.take().await?;
        let arg: Vec<wit::BoundValue> = values
            .iter()
            .map(|v| wit::BoundValue {
                column: to_wit_column(&v.column),
                value: v.value.clone(),
            })
            .collect();
        let result = w
            .plugin
            .tidegate_policy_policy()
            .call_on_write_values(&mut w.store, &to_wit_statement(stmt), &arg)
            .await;
        match result {
            Ok(answer) => {
                self.release(w);
                let checked = match answer {
                    Ok(out) => check_values(&out, values.len()).map(|()| Ok(out)),
                    Err(d) => self.denial(d).map(Err),
                };
                self.settle(checked)
            }
            Err(e) => Err(self.failed(self.trap(&e))),
        }
    }

    /// Calls `on-audit`: the record to persist, or `None` when the plugin keeps nothing.
    pub async fn on_audit(&self, event: &AuditEvent) -> Result<Option<AuditRecord>, CallError> {
        let mut out = self.on_audit_many(std::slice::from_ref(event)).await;
        out.pop().unwrap_or(Ok(None))
    }

    /// Calls `on-audit` for each of `events` in turn on one warm instance (taken once for
    /// the batch, not once per event); one answer per event, in order. An instance that traps
    /// is discarded and the next event gets a fresh one.
    pub async fn on_audit_many(
        &self,
        events: &[AuditEvent],
    ) -> Vec<Result<Option<AuditRecord>, CallError>> {
        let mut out = Vec::with_capacity(events.len());
        let mut warm = None;
        for event in events {
            self.calls.fetch_add(1, Relaxed);
            let mut w = match warm.take() {
                Some(mut w) => {
                    self.rearm(&mut w);
                    w
                }
                None => match self.take().await {
                    Ok(w) => w,
                    Err(e) => {
                        out.push(Err(e));
                        continue;
                    }
                },
            };
            let result = w
                .plugin
                .tidegate_policy_policy()
                .call_on_audit(&mut w.store, &to_wit_event(event))
                .await;
            out.push(match result {
                Ok(answer) => {
                    warm = Some(w);
                    let checked = match answer {
                        None => Ok(None),
                        Some(r) => from_wit_record(r, &event.principal).map(Some),
                    };
                    self.settle(checked)
                }
                Err(e) => Err(self.failed(self.trap(&e))),
            });
        }
        if let Some(w) = warm {
            self.release(w);
        }
        out
    }

    fn settle<T>(&self, checked: Result<T, String>) -> Result<T, CallError> {
        match checked {
            Ok(v) => {
                self.succeeded();
                Ok(v)
            }
            Err(why) => Err(self.failed(CallError::Invalid(self.name.to_string(), why))),
        }
    }

    fn denial(&self, d: wit::Denial) -> Result<Denial, String> {
        if !valid_sqlstate(&d.sqlstate) {
            return Err(format!(
                "SQLSTATE {:?} is not five digits or capitals",
                truncate(d.sqlstate, 20)
            ));
        }
        Ok(Denial {
            reason: truncate(d.reason, 4096),
            sqlstate: d.sqlstate,
            hint: d.hint.map(|h| truncate(h, 4096)),
            plugin: self.name.to_string(),
        })
    }
}

fn check_values(values: &[Value], expected: usize) -> Result<(), String> {
    if values.len() != expected {
        return Err(format!("{} values returned for {expected}", values.len()));
    }
    let total: usize = values.iter().map(|v| v.as_ref().map_or(0, Vec::len)).sum();
    if total > MAX_RETURN_BYTES {
        return Err(format!("{total} bytes returned, over 1 MiB"));
    }
    Ok(())
}

fn check_rows(rows: &[Vec<Value>], n_rows: usize, width: usize) -> Result<(), String> {
    if rows.len() != n_rows {
        return Err(format!("{} rows returned for {n_rows}", rows.len()));
    }
    let mut total = 0usize;
    for row in rows {
        if row.len() != width {
            return Err(format!("a row of {} values for {width} columns", row.len()));
        }
        total += row
            .iter()
            .map(|v| v.as_ref().map_or(0, Vec::len))
            .sum::<usize>();
    }
    if total > MAX_RETURN_BYTES.max(n_rows * 4096) {
        return Err(format!("{total} bytes of rows returned, over the cap"));
    }
    Ok(())
}

pub(crate) fn to_wit_table(t: &TableRef) -> wit::TableRef {
    wit::TableRef {
        schema: t.schema.clone(),
        name: t.name.clone(),
    }
}

fn to_wit_column(c: &Column) -> wit::Column {
    wit::Column {
        table: c.table.as_ref().map(to_wit_table),
        name: c.name.clone(),
        type_name: c.type_name.clone(),
    }
}

pub(crate) fn to_wit_kind(k: StatementKind) -> wit::StatementKind {
    match k {
        StatementKind::Read => wit::StatementKind::Read,
        StatementKind::Write => wit::StatementKind::Write,
        StatementKind::Ddl => wit::StatementKind::Ddl,
        StatementKind::Transaction => wit::StatementKind::Transaction,
        StatementKind::Utility => wit::StatementKind::Utility,
    }
}

fn to_wit_event(e: &AuditEvent) -> wit::AuditEvent {
    wit::AuditEvent {
        principal: wit::Principal {
            user: e.principal.user.clone(),
            role: e.principal.role.clone(),
            roles: e.principal.roles.clone(),
            database: e.principal.database.clone(),
        },
        fingerprint: e.fingerprint.to_string(),
        kind: to_wit_kind(e.kind),
        tables: e.tables.iter().map(to_wit_table).collect(),
        decision: e.decision.clone(),
        decided_by: e.decided_by.clone(),
        rows: e.rows,
        duration_us: e.duration_us,
        sqlstate: e.sqlstate.clone(),
        at_us: e.at_us,
    }
}

/// Longest text field an audit record may carry.
const MAX_AUDIT_FIELD: usize = 4096;
/// Labels one record may carry.
const MAX_LABELS: usize = 64;

/// The record a plugin returned, once [`check_record`] accepts it, as the host keeps it
/// (sharing `principal` when the record names it unchanged).
fn from_wit_record(r: wit::AuditRecord, principal: &Arc<Principal>) -> Result<AuditRecord, String> {
    check_record(&r)?;
    let e = r.event;
    Ok(AuditRecord {
        event: AuditEvent {
            principal: shared_principal(e.principal, principal),
            fingerprint: e.fingerprint.into(),
            kind: from_wit_kind(e.kind),
            tables: e
                .tables
                .into_iter()
                .map(|t| TableRef {
                    schema: t.schema,
                    name: t.name,
                })
                .collect(),
            decision: e.decision,
            decided_by: e.decided_by.map(|s| truncate(s, MAX_AUDIT_FIELD)),
            rows: e.rows,
            duration_us: e.duration_us,
            sqlstate: e.sqlstate,
            at_us: e.at_us,
        },
        labels: r.labels,
    })
}

/// Refuses an audit record the host could not persist: a text field over [`MAX_AUDIT_FIELD`]
/// bytes or holding NUL, too many tables, roles or labels, a malformed SQLSTATE.
fn check_record(r: &wit::AuditRecord) -> Result<(), String> {
    let e = &r.event;
    check_text("user", &e.principal.user)?;
    check_text("role", &e.principal.role)?;
    check_text("database", &e.principal.database)?;
    check_text("fingerprint", &e.fingerprint)?;
    check_text("decision", &e.decision)?;
    if e.tables.len() > 1000 || e.principal.roles.len() > 1000 || r.labels.len() > MAX_LABELS {
        return Err("audit record with too many tables, roles or labels".into());
    }
    for t in &e.tables {
        check_text("table", t.schema.as_deref().unwrap_or_default())?;
        check_text("table", &t.name)?;
    }
    if let Some(by) = &e.decided_by {
        check_text("decided-by", by)?;
    }
    for (k, v) in &r.labels {
        check_text("label", k)?;
        check_text("label", v)?;
    }
    if let Some(s) = &e.sqlstate {
        if !valid_sqlstate(s) {
            return Err(format!(
                "audit SQLSTATE {:?} is malformed",
                truncate(s.clone(), 20)
            ));
        }
    }
    Ok(())
}

/// Refuses an audit text field (`what`) over [`MAX_AUDIT_FIELD`] bytes, or holding NUL:
/// PostgreSQL text cannot hold NUL, so such a record could never be written.
fn check_text(what: &str, s: &str) -> Result<(), String> {
    if s.len() > MAX_AUDIT_FIELD {
        Err(format!("audit {what} over {MAX_AUDIT_FIELD} bytes"))
    } else if s.contains('\0') {
        Err(format!("audit {what} contains NUL"))
    } else {
        Ok(())
    }
}

/// The principal a record names: `given` itself (shared, not copied) when it is the same.
fn shared_principal(p: wit::Principal, given: &Arc<Principal>) -> Arc<Principal> {
    let same = p.user == given.user
        && p.role == given.role
        && p.roles == given.roles
        && p.database == given.database;
    if same {
        given.clone()
    } else {
        Arc::new(Principal {
            user: p.user,
            role: p.role,
            roles: p.roles,
            database: p.database,
        })
    }
}

/// The host's statement kind for a WIT one (the inverse of [`to_wit_kind`]).
fn from_wit_kind(k: wit::StatementKind) -> StatementKind {
    match k {
        wit::StatementKind::Read => StatementKind::Read,
        wit::StatementKind::Write => StatementKind::Write,
        wit::StatementKind::Ddl => StatementKind::Ddl,
        wit::StatementKind::Transaction => StatementKind::Transaction,
        wit::StatementKind::Utility => StatementKind::Utility,
    }
}

pub(crate) fn to_wit_statement(s: &Statement) -> wit::Statement {
    wit::Statement {
        principal: wit::Principal {
            user: s.principal.user.clone(),
            role: s.principal.role.clone(),
            roles: s.principal.roles.clone(),
            database: s.principal.database.clone(),
        },
        sql: s.sql.clone(),
        fingerprint: crate::types::fingerprint_hex(s.fingerprint),
        kind: crate::hooks::to_wit_kind(s.kind),
        read_only: s.read_only,
        tables: s.tables.iter().map(crate::hooks::to_wit_table).collect(),
        prepared: s.prepared,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> AuditEvent {
        AuditEvent {
            principal: Arc::new(Principal {
                user: "app".into(),
                role: "app".into(),
                roles: vec!["reader".into()],
                database: "db".into(),
            }),
            fingerprint: crate::fingerprint_hex(7).into(),
            kind: StatementKind::Read,
            tables: vec![TableRef {
                schema: None,
                name: "t".into(),
            }]
            .into(),
            decision: "allow".into(),
            decided_by: None,
            rows: 1,
            duration_us: 10,
            sqlstate: None,
            at_us: 0,
        }
    }

    /// What a guest could return for `event()`, altered by `edit`.
    fn returned(edit: impl FnOnce(&mut wit::AuditRecord)) -> Result<AuditRecord, String> {
        let e = event();
        let mut r = wit::AuditRecord {
            event: to_wit_event(&e),
            labels: vec![("env".into(), "test".into())],
        };
        edit(&mut r);
        from_wit_record(r, &e.principal)
    }

    #[test]
    fn an_honest_record_keeps_the_given_principal() {
        let e = event();
        let r = wit::AuditRecord {
            event: to_wit_event(&e),
            labels: vec![],
        };
        let got = from_wit_record(r, &e.principal).expect("valid");
        assert!(Arc::ptr_eq(&got.event.principal, &e.principal));
        assert_eq!(got.event.fingerprint, e.fingerprint);
    }

    #[test]
    fn records_postgresql_could_not_store_are_refused() {
        let nul = returned(|r| r.labels.push(("k".into(), "a\0b".into())));
        assert!(nul.is_err_and(|e| e.contains("NUL")));
        let nul = returned(|r| r.event.decided_by = Some("x\0".into()));
        assert!(nul.is_err_and(|e| e.contains("decided-by contains NUL")));
        let long = returned(|r| r.event.decided_by = Some("x".repeat(MAX_AUDIT_FIELD + 1)));
        assert!(long.is_err_and(|e| e.contains("decided-by over")));
        let many = returned(|r| r.labels = vec![("k".into(), "v".into()); MAX_LABELS + 1]);
        assert!(many.is_err_and(|e| e.contains("too many")));
        let state = returned(|r| r.event.sqlstate = Some("4250".into()));
        assert!(state.is_err_and(|e| e.contains("SQLSTATE")));
        assert!(returned(|_| {}).is_ok());
    }
}
