//! The plugin chain's say on each statement (simple Query and Parse): allow, rewrite the text,
//! or deny with the plugin's SQLSTATE and reason.
//!
//! A denial is answered by the broker when nothing is in flight and no transaction is open.
//! Otherwise a simple query is replaced by a server-side `RAISE` with the same SQLSTATE and
//! message, so the error arrives in order and an open transaction is aborted exactly as
//! PostgreSQL would abort it.

use super::fields::DataPlan;
use super::{audit, Pending, Result, Session};
use crate::proto::{self, Reader};
use bytes::{BufMut, BytesMut};
use std::sync::Arc;
use tidegate_plugins::{Denial, Principal, Statement, StatementKind, TableRef, Verdict};
use tidegate_sql::Kind;
use tokio::io::{AsyncRead, AsyncWrite};

impl<R, W> Session<R, W>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    /// Runs the statement hooks for a Query or Parse message. Returns the message to process
    /// (the same, or rewritten), or `None` when the statement was denied and answered.
    pub(super) async fn apply_policy(
        &mut self,
        tag: u8,
        msg: BytesMut,
    ) -> Result<Option<BytesMut>> {
        let Some(chain) = self.topo.plugins.clone() else {
            return Ok(Some(msg));
        };
        let principal = self.principal();
        let hooks = chain.hooks(&principal.user, &principal.database);
        if hooks.is_empty() {
            return Ok(Some(msg));
        }
        let body = &msg[proto::HEADER_LEN..];
        let (sql, prefix_len) = match tag {
            b'Q' => match body.strip_suffix(b"\0") {
                Some(sql) => (sql, 0),
                None => return Ok(Some(msg)), // Malformed: the session reports it.
            },
            _ => {
                let mut r = Reader::new(body);
                match (r.cstr(), r.cstr()) {
                    (Some(name), Some(sql)) => (sql, name.len() + 1),
                    _ => return Ok(Some(msg)),
                }
            }
        };
        if hooks.audit {
            if let Some(d) = self.audit_refusal() {
                tracing::warn!(user = %self.user, "statement refused: the audit log is unavailable");
                return self.deny(tag, d);
            }
        }
        let fingerprint = tidegate_sql::fingerprint(sql);
        if let Some(shape) = self
            .memo
            .get(&chain, &self.catalog, hooks.stamp, fingerprint.0)
            .cloned()
        {
            // Settled before: the same verdict (allow), no data hook involved.
            self.parse_writes = None;
            if hooks.audit {
                self.audit_shape(shape, tag == b'Q');
            }
            return Ok(Some(msg));
        }
        let stmt = self.describe_as(principal, sql, fingerprint, tag == b'P');
        let (verdict, settled) = if hooks.statement {
            chain.on_statement_settled(&stmt).await
        } else {
            (Verdict::Allow, true)
        };
        // Untouched by the data hooks: no declared column's table, no DDL (nor any hook).
        let mut untouched = !hooks.data;
        let verdict = match verdict {
            Verdict::Deny(_) => verdict,
            _ if !hooks.data => verdict,
            Verdict::Allow => match self.prepare_data_hooks(&stmt, &stmt.sql).await {
                Ok(DataPlan::Untouched) => {
                    untouched = true;
                    Verdict::Allow
                }
                Ok(DataPlan::Send(None)) => Verdict::Allow,
                Ok(DataPlan::Send(Some(sql))) => Verdict::Rewrite {
                    sql,
                    by: Vec::new(),
                },
                Err(d) => Verdict::Deny(d),
            },
            Verdict::Rewrite { sql, by } => match self.prepare_data_hooks(&stmt, &sql).await {
                Ok(DataPlan::Send(Some(sql))) => Verdict::Rewrite { sql, by },
                Ok(_) => Verdict::Rewrite { sql, by },
                Err(d) => Verdict::Deny(d),
            },
        };
        if settled && untouched && matches!(verdict, Verdict::Allow) {
            self.memo.put(
                &chain,
                &self.catalog,
                hooks.stamp,
                fingerprint.0,
                audit::Shape::of(&stmt),
            );
        }
        if hooks.audit {
            self.audit_statement(&stmt, &verdict, tag == b'Q');
        }
        match verdict {
            Verdict::Allow => Ok(Some(msg)),
            Verdict::Rewrite { sql: new, by } => {
                tracing::debug!(user = %self.user, plugins = ?by, "statement rewritten by policy");
                let rest = &body[prefix_len + sql.len() + 1..];
                Ok(Some(rebuild(
                    tag,
                    &body[..prefix_len],
                    new.as_bytes(),
                    rest,
                )))
            }
            Verdict::Deny(d) => {
                tracing::info!(user = %self.user, plugin = %d.plugin, sqlstate = %d.sqlstate, "statement denied by policy");
                self.deny(tag, d)
            }
        }
    }

    /// Answers a denied statement; returns the message to send instead, if any.
    pub(super) fn deny(&mut self, tag: u8, d: Denial) -> Result<Option<BytesMut>> {
        let quiet = self.backend.is_none() && self.pending.is_empty() && self.tx_status == b'I';
        if tag == b'Q' {
            if quiet {
                error_response(&mut self.out, &d);
                proto::ready(&mut self.out, self.tx_status);
                self.audit_finish(None);
                return Ok(None);
            }
            // Let the server raise it, in order, aborting the transaction as PostgreSQL would.
            let mut m = BytesMut::new();
            proto::query(&mut m, &raise_sql(&d));
            return Ok(Some(m));
        }
        // Parse: the error is owed after the replies already pending; the rest of the batch
        // up to Sync is skipped, as the server would skip it.
        let mut e = BytesMut::new();
        error_response(&mut e, &d);
        if self.backend.is_some() && self.on_replica {
            self.client_touched = true;
        }
        self.pending.push_back(Pending::Denied(e.freeze()));
        if let Some(b) = self.backend.as_mut() {
            // PostgreSQL aborts the transaction — explicit, or the batch's implicit one — at an
            // error: a Parse that cannot succeed makes the server do the same. Its own error is
            // not shown; the client sees the denial.
            b.unnamed = None;
            super::extended::put_parse(&mut self.bout, b"\0", ABORT_PARSE);
            self.pending.push_back(Pending::Abort);
            self.unsynced = true;
        }
        self.skip_until_sync = true;
        Ok(None)
    }

    pub(super) fn principal(&mut self) -> Arc<Principal> {
        if let Some(p) = &self.principal {
            return p.clone();
        }
        let roles = self
            .topo
            .config
            .user(&self.user)
            .map(|u| u.roles.clone())
            .unwrap_or_default();
        let p = Arc::new(Principal {
            user: self.user.to_string(),
            role: self.login.user.clone(),
            roles,
            database: self.login.database.clone(),
        });
        self.principal = Some(p.clone());
        p
    }

    pub(super) fn describe(
        &self,
        principal: Arc<Principal>,
        sql: &[u8],
        prepared: bool,
    ) -> Statement {
        self.describe_as(principal, sql, tidegate_sql::fingerprint(sql), prepared)
    }

    /// [`Session::describe`] of a statement whose fingerprint is known.
    fn describe_as(
        &self,
        principal: Arc<Principal>,
        sql: &[u8],
        fp: tidegate_sql::Fingerprint,
        prepared: bool,
    ) -> Statement {
        let text = String::from_utf8_lossy(sql).into_owned();
        let c = self
            .catalog
            .classes
            .classify_fingerprinted(&text, fp, &self.catalog.lookup);
        let kind = if c.tx.is_some() {
            StatementKind::Transaction
        } else {
            match c.kind {
                Kind::Read => StatementKind::Read,
                Kind::Write => StatementKind::Write,
                Kind::Ddl => StatementKind::Ddl,
                Kind::Transaction => StatementKind::Transaction,
                Kind::Session | Kind::Utility => StatementKind::Utility,
            }
        };
        Statement {
            principal,
            fingerprint: fp.0,
            kind,
            read_only: c.read_only,
            tables: c
                .tables
                .iter()
                .map(|t| TableRef {
                    schema: t.schema.clone(),
                    name: t.name.clone(),
                })
                .collect(),
            prepared,
            sql: text,
        }
    }
}

/// The body of a Parse that fails at once (a syntax error), to abort the server's transaction.
const ABORT_PARSE: &[u8] = b"tidegate: statement refused by policy\0\0\0";

fn error_response(out: &mut BytesMut, d: &Denial) {
    proto::error_with_hint(out, &d.sqlstate, &d.reason, d.hint.as_deref());
}

/// A statement that makes the server raise `d`.
fn raise_sql(d: &Denial) -> String {
    let lit = |s: &str| format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''"));
    let mut sql = format!(
        "DO $tidegate_policy$BEGIN RAISE EXCEPTION USING ERRCODE = {}, MESSAGE = {}",
        lit(&d.sqlstate),
        lit(&d.reason.replace("$tidegate_policy$", ""))
    );
    if let Some(h) = &d.hint {
        sql.push_str(&format!(
            ", HINT = {}",
            lit(&h.replace("$tidegate_policy$", ""))
        ));
    }
    sql.push_str("; END$tidegate_policy$");
    sql
}

/// A Query or Parse message with `sql` in place of the original text.
fn rebuild(tag: u8, prefix: &[u8], sql: &[u8], rest: &[u8]) -> BytesMut {
    let len = 4 + prefix.len() + sql.len() + 1 + rest.len();
    let mut m = BytesMut::with_capacity(1 + len);
    m.put_u8(tag);
    m.put_i32(len as i32);
    m.put_slice(prefix);
    m.put_slice(sql);
    m.put_u8(0);
    m.put_slice(rest);
    m
}
