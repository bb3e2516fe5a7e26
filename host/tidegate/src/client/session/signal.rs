//! The server-process functions, answered for the client's broker session: its
//! `pg_backend_pid()` is the process id in its BackendKeyData, `pg_terminate_backend` and
//! `pg_cancel_backend` of a broker-issued id act on that client's session (with the permission
//! PostgreSQL would ask for), and a notification its own NOTIFY caused names its id.
//!
//! A real backend's id passes through unchanged; so does a call inside a transaction block
//! (the server answers it there, and knows no broker id).

use super::{ClientRead, DirectWrite};
use super::{Pending, Result, Session};
use crate::client::cancel::{CancelRegistry, CancelSlot};
use crate::client::stats::Route;
use crate::upstream::backend::Backend;
use crate::wire::kind::ClientMsg;
use crate::wire::proto::{self, Severity};
use bytes::{Buf, BytesMut};
use std::sync::Arc;
use tidegate_sql::{PidArg, SignalCall};

/// What a signal to a broker session came to.
enum Outcome {
    /// Sent: the function returns `true`.
    Sent,
    /// The caller cancelled itself: PostgreSQL cancels this very statement (57014).
    OwnCancel,
    /// Refused, as PostgreSQL refuses it (42501).
    Refused(&'static str),
    /// The permission could not be checked (no server connection).
    Unchecked(String),
}

impl<R, W> Session<R, W>
where
    R: ClientRead,
    W: DirectWrite,
{
    /// A Query or Parse that calls `pg_backend_pid()` gets the client's broker id in its
    /// place, and one that reads `pg_prepared_statements` reads the client's own statements.
    pub(super) fn own_session_text(&self, kind: ClientMsg, msg: &mut BytesMut) {
        let body = &msg[proto::HEADER_LEN..];
        let (name, sql, rest) = if kind == ClientMsg::Query {
            let Some(sql) = body.strip_suffix(b"\0") else {
                return;
            };
            (None, sql, &[][..])
        } else {
            let Some((name, sql)) = super::extended::parse_fields(body) else {
                return;
            };
            (Some(name), sql, &body[name.len() + sql.len() + 2..])
        };
        let Ok(sql) = std::str::from_utf8(sql) else {
            return;
        };
        let with_pid = tidegate_sql::with_backend_pid(sql, self.cancel.pid);
        let sql = with_pid.as_deref().unwrap_or(sql);
        let with_stmts = tidegate_sql::with_prepared_statements(sql, || self.own_statements());
        let Some(text) = with_stmts.or(with_pid) else {
            return;
        };
        let mut out = BytesMut::with_capacity(text.len() + rest.len() + 16);
        match name {
            None => proto::query(&mut out, &text),
            Some(name) => super::extended::put_parse_query(&mut out, name, &text, rest),
        }
        *msg = out;
    }

    /// A query yielding `pg_prepared_statements`' columns for this client: the statements it
    /// prepared through the protocol, under its names, and those it prepared with SQL
    /// `PREPARE` (which pinned its server connection, so the server's own rows are its).
    /// Plan counts are the server's business and read 0.
    fn own_statements(&self) -> String {
        let mut q = String::from(
            "SELECT name, statement, prepare_time, parameter_types, from_sql, generic_plans, \
             custom_plans FROM pg_catalog.pg_prepared_statements WHERE from_sql",
        );
        for (name, stmt) in &self.stmts {
            let (text, types) = super::extended::query_and_types(&stmt.body);
            let secs = stmt
                .prepared_at
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            let types: Vec<String> = types.iter().map(u32::to_string).collect();
            q.push_str(&format!(
                " UNION ALL SELECT {}::text, {}::text, {}::timestamptz, '{{{}}}'::oid[]::regtype[], \
                 false, 0::int8, 0::int8",
                tidegate_sql::quote_literal(&String::from_utf8_lossy(name)),
                tidegate_sql::quote_literal(&String::from_utf8_lossy(text)),
                tidegate_sql::quote_literal(&tidegate_sql::utc_text(secs, false)),
                types.join(",")
            ));
        }
        q
    }

    /// A simple Query that is a signal call alone, for a broker-issued id, outside a
    /// transaction block: answered here. Returns whether it was.
    pub(super) async fn signal_query(&mut self, sql: &[u8]) -> Result<bool> {
        if !self.pending.is_empty() || !self.tx_status.is_idle() || self.backend.is_some() {
            return Ok(false);
        }
        let Some(call) = std::str::from_utf8(sql)
            .ok()
            .and_then(tidegate_sql::signal_call)
        else {
            return Ok(false);
        };
        let PidArg::Literal(pid) = call.pid else {
            return Ok(false);
        };
        let Some(target) = self.sh.cancels.session(pid) else {
            return Ok(false);
        };
        let outcome = self.signal(&call, target).await;
        let mut out = BytesMut::new();
        let sqlstate = self.signal_reply(&mut out, &call, outcome, false, true);
        if let Some(code) = sqlstate {
            self.measure_error(&code);
        }
        self.out.extend_from_slice(&out);
        proto::ready(&mut self.out, self.tx_status);
        self.request_done(Route::Broker, sqlstate);
        Ok(true)
    }

    /// A Bind of a prepared signal call whose process argument is a broker-issued id, followed
    /// in the buffered batch by [Describe of its portal] Execute and Sync, outside a
    /// transaction block: the Bind, Describe and Execute are answered here (the Sync is
    /// handled as usual). Returns whether they were.
    pub(super) async fn signal_bind(&mut self, msg: &[u8]) -> Result<bool> {
        if !self.tx_status.is_idle() {
            return Ok(false);
        }
        let Some(bind) = super::cache_bind::read_bind(&msg[proto::HEADER_LEN..]) else {
            return Ok(false);
        };
        let stmt = match bind.statement {
            [] => self.unnamed.as_ref(),
            name => self.stmts.get(name),
        };
        let Some(call) = stmt.and_then(|s| s.signal.clone()) else {
            return Ok(false);
        };
        let pid = match call.pid {
            PidArg::Literal(p) => Some(p),
            PidArg::Param(i) => bound_integer(&bind, i),
        };
        let Some(target) = pid.and_then(|p| self.sh.cancels.session(p)) else {
            return Ok(false);
        };
        let Some((described, through_execute)) =
            super::cache_bind::rest_of_batch(&self.rbuf, bind.portal).map(|(d, _, e)| (d, e))
        else {
            return Ok(false);
        };
        let binary = matches!(bind.result_formats.as_slice(), [1, ..]);
        self.rbuf.advance(through_execute);
        let outcome = self.signal(&call, target).await;
        let mut out = BytesMut::new();
        proto::simple(&mut out, crate::wire::kind::ServerMsg::BindComplete, &[]);
        let sqlstate = self.signal_reply(&mut out, &call, outcome, binary, described);
        if let Some(code) = sqlstate {
            self.measure_error(&code);
        }
        self.owe_answer(Pending::Answer(out.freeze()));
        Ok(true)
    }

    /// Acts on a signal to the broker session `target`, as its caller may.
    async fn signal(&mut self, call: &SignalCall, target: Arc<CancelSlot>) -> Outcome {
        if Arc::ptr_eq(&target, &self.cancel) && !call.terminate {
            return Outcome::OwnCancel;
        }
        if target.info.role != self.login.user {
            match self.may_signal(&target.info.role).await {
                Ok(None) => {}
                Ok(Some(refusal)) => {
                    return Outcome::Refused(refusal.message(call.terminate));
                }
                Err(e) => return Outcome::Unchecked(e),
            }
        }
        if call.terminate {
            tracing::info!(user = %self.user, pid = target.pid, "pg_terminate_backend: ending a client session");
            target.kill();
        } else if let Some(cancel) = CancelRegistry::held(target) {
            tokio::spawn(async move {
                if let Err(e) = crate::client::cancel::send_cancel(&cancel.target, cancel.key).await
                {
                    tracing::warn!(error = %e, "pg_cancel_backend: cancel request failed");
                }
                drop(cancel);
            });
        }
        Outcome::Sent
    }

    /// Whether this client's role may signal a session running as `role`, by PostgreSQL's rule: a
    /// superuser's only if it is one too; else if it has the privileges of that role or of
    /// `pg_signal_backend`. Asked of the server, as this client.
    async fn may_signal(&self, role: &str) -> std::result::Result<Option<Refusal>, String> {
        let sql = format!(
            "SELECT CASE WHEN r.rolsuper AND NOT (SELECT rolsuper FROM pg_catalog.pg_roles \
             WHERE rolname = current_user) THEN 'superuser' \
             WHEN pg_catalog.pg_has_role(current_user, r.oid, 'USAGE') \
             OR pg_catalog.pg_has_role(current_user, 'pg_signal_backend', 'USAGE') THEN 'ok' \
             ELSE 'denied' END FROM pg_catalog.pg_roles r WHERE r.rolname = {}",
            tidegate_sql::quote_literal(role)
        );
        let mut b: Box<Backend> = self.pool.checkout().await.map_err(|e| e.to_string())?;
        let row = b.query_row(&sql).await.map_err(|e| e.to_string())?;
        self.pool.checkin(b);
        let verdict = row.and_then(|r| r.into_iter().next().flatten());
        Ok(match verdict.as_deref() {
            Some("ok") => None,
            Some("superuser") => Some(Refusal::Superuser),
            _ => Some(Refusal::NotMember),
        })
    }

    /// Writes the reply to a signal call into `out` (with RowDescription when `describe`);
    /// returns the SQLSTATE of an error reply. (A session that terminated itself ends at its
    /// next wait, after this reply, with 57P01.)
    fn signal_reply(
        &mut self,
        out: &mut BytesMut,
        call: &SignalCall,
        outcome: Outcome,
        binary: bool,
        describe: bool,
    ) -> Option<[u8; 5]> {
        let (code, message) = match outcome {
            Outcome::Sent => {
                proto::bool_result(out, &call.column, true, binary, describe);
                self.measure_complete(b"SELECT 1\0", Route::Broker);
                return None;
            }
            Outcome::OwnCancel => (
                "57014",
                "canceling statement due to user request".to_owned(),
            ),
            Outcome::Refused(m) => ("42501", m.to_owned()),
            Outcome::Unchecked(e) => ("08006", format!("cannot check the permission: {e}")),
        };
        proto::error(out, Severity::Error, code, &message);
        <[u8; 5]>::try_from(code.as_bytes()).ok()
    }

    /// A notification this client's own NOTIFY caused names the client's broker id, not the
    /// server process's; others keep theirs (never a broker id).
    pub(super) fn own_notification(&self, b: &mut Backend, total: usize) {
        let msg = &mut b.rbuf[..total];
        if proto::notification_pid(msg) == Some(b.key.0) {
            proto::set_notification_pid(msg, self.cancel.pid);
        }
    }
}

/// Why PostgreSQL refuses a signal.
enum Refusal {
    Superuser,
    NotMember,
}

impl Refusal {
    /// PostgreSQL 15's words for it.
    fn message(&self, terminate: bool) -> &'static str {
        match (self, terminate) {
            (Refusal::Superuser, true) => "must be a superuser to terminate superuser process",
            (Refusal::Superuser, false) => "must be a superuser to cancel superuser query",
            (Refusal::NotMember, true) => {
                "must be a member of the role whose process is being terminated or member of \
                 pg_signal_backend"
            }
            (Refusal::NotMember, false) => {
                "must be a member of the role whose query is being canceled or member of \
                 pg_signal_backend"
            }
        }
    }
}

/// The integer bound to parameter `i`: text, or a binary int2/int4/int8.
fn bound_integer(bind: &super::cache_bind::Bound<'_>, i: usize) -> Option<i64> {
    let value = (*bind.params.get(i)?)?;
    let format = match bind.param_formats.as_slice() {
        [] => 0,
        [one] => *one,
        many => *many.get(i)?,
    };
    if format == 0 {
        return std::str::from_utf8(value).ok()?.trim().parse().ok();
    }
    match value.len() {
        2 => Some(i64::from(i16::from_be_bytes(value.try_into().ok()?))),
        4 => Some(i64::from(i32::from_be_bytes(value.try_into().ok()?))),
        8 => Some(i64::from_be_bytes(value.try_into().ok()?)),
        _ => None,
    }
}
