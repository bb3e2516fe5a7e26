//! The plugin chain's say on each statement (simple Query and Parse): allow, rewrite the text,
//! or deny with the plugin's SQLSTATE and reason.
//!
//! A denial is answered by the broker when nothing is in flight and no transaction is open.
//! Otherwise a simple query is replaced by a server-side `RAISE` with the same SQLSTATE and
//! message, so the error arrives in order and an open transaction is aborted exactly as
//! PostgreSQL would abort it.

use super::fields::DataPlan;
use super::{audit, Pending, Result, Session};
use super::{ClientRead, DirectWrite};
use crate::wire::kind::ClientMsg;
use crate::wire::proto;
use bytes::{BufMut, BytesMut};
use std::sync::Arc;
use tidegate_plugins::{
    Chain, Denial, HookSet, Principal, Statement, StatementKind, TableRef, Verdict,
};
use tidegate_sql::Kind;

impl<R, W> Session<R, W>
where
    R: ClientRead,
    W: DirectWrite,
{
    /// Runs the statement hooks for a Query or Parse message. Returns the message to process
    /// (the same, or rewritten), or `None` when the statement was denied and answered.
    pub(super) async fn apply_policy(
        &mut self,
        kind: ClientMsg,
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
        let Some((sql, prefix_len)) = statement_text(kind, body) else {
            return Ok(Some(msg)); // Malformed: the session reports it.
        };
        if hooks.audit {
            if let Some(d) = self.audit_refusal() {
                tracing::warn!(user = %self.user, "statement refused: the audit log is unavailable");
                return self.deny(kind, d);
            }
        }
        // A string of several statements is judged statement by statement, never by a
        // verdict remembered for its fingerprint.
        if kind == ClientMsg::Query && several_statements(sql) {
            let text = String::from_utf8_lossy(sql);
            if let Some(parts) = tidegate_sql::split_statements(&text).filter(|p| p.len() > 1) {
                let text = text.into_owned();
                return match self
                    .apply_policy_each(&chain, hooks.statement, hooks.data, principal, &text, parts)
                    .await?
                {
                    Each::Allowed => Ok(Some(msg)),
                    Each::Rewritten(sql) => {
                        let mut m = BytesMut::new();
                        proto::query(&mut m, &sql);
                        Ok(Some(m))
                    }
                    Each::Denied(instead) => Ok(instead),
                };
            }
        }
        let verdict = self.judge_one(&chain, hooks, principal, kind, sql).await;
        match verdict {
            Verdict::Allow => Ok(Some(msg)),
            Verdict::Rewrite { sql: new, by } => {
                tracing::debug!(user = %self.user, plugins = ?by, "statement rewritten by policy");
                let rest = &body[prefix_len + sql.len() + 1..];
                Ok(Some(rebuild(
                    kind,
                    &body[..prefix_len],
                    new.as_bytes(),
                    rest,
                )))
            }
            Verdict::Deny(d) => {
                tracing::info!(user = %self.user, plugin = %d.plugin, sqlstate = %d.sqlstate, "statement denied by policy");
                self.deny(kind, d)
            }
        }
    }

    /// The chain's verdict on one statement, from the memo when its shape was settled before
    /// (the verdict was allow), else judged, remembered when settled, and audited.
    async fn judge_one(
        &mut self,
        chain: &Arc<Chain>,
        hooks: HookSet,
        principal: Arc<Principal>,
        kind: ClientMsg,
        sql: &[u8],
    ) -> Verdict {
        let fingerprint = tidegate_sql::fingerprint(sql);
        if let Some(shape) = self
            .memo
            .get(chain, &self.catalog, hooks.stamp, fingerprint.0)
            .cloned()
        {
            // Settled before: the same verdict (allow), no data hook involved.
            self.parse_writes = None;
            if hooks.audit {
                self.audit_shape(shape, kind == ClientMsg::Query);
            }
            return Verdict::Allow;
        }
        let stmt = self.describe_as(principal, sql, fingerprint, kind == ClientMsg::Parse);
        let (verdict, settled, untouched) =
            self.judge(chain, hooks.statement, hooks.data, &stmt).await;
        if settled && untouched && matches!(verdict, Verdict::Allow) {
            self.memo.put(
                chain,
                &self.catalog,
                hooks.stamp,
                fingerprint.0,
                audit::Shape::of(&stmt),
            );
        }
        if hooks.audit {
            self.audit_statement(&stmt, &verdict, kind == ClientMsg::Query);
        }
        verdict
    }

    /// The chain's verdict on one statement: the statement hooks, then the data hooks.
    /// Also says whether the verdict is settled (deterministic hooks only) and whether the
    /// data hooks had no part in it.
    async fn judge(
        &mut self,
        chain: &Chain,
        statement_hooks: bool,
        data_hooks: bool,
        stmt: &Statement,
    ) -> (Verdict, bool, bool) {
        let refused = self
            .catalog
            .classes
            .get(tidegate_sql::Fingerprint(stmt.fingerprint))
            .and_then(|c| c.refused);
        if let Some(why) = refused {
            let d = Denial {
                reason: why.into(),
                sqlstate: "0A000".into(),
                hint: None,
                plugin: "tidegate".into(),
            };
            return (Verdict::Deny(d), true, true);
        }
        let (verdict, settled) = if statement_hooks {
            chain.on_statement_settled(stmt).await
        } else {
            (Verdict::Allow, true)
        };
        // Untouched by the data hooks: no declared column's table, no DDL (nor any hook).
        let mut untouched = !data_hooks;
        let verdict = match verdict {
            Verdict::Deny(_) => verdict,
            _ if !data_hooks => verdict,
            Verdict::Allow => match self.prepare_data_hooks(stmt, &stmt.sql).await {
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
            Verdict::Rewrite { sql, by } => match self.prepare_data_hooks(stmt, &sql).await {
                Ok(DataPlan::Send(Some(sql))) => Verdict::Rewrite { sql, by },
                Ok(_) => Verdict::Rewrite { sql, by },
                Err(d) => Verdict::Deny(d),
            },
        };
        (verdict, settled, untouched)
    }

    /// Policy for a simple query of several statements (`parts`, byte ranges of `sql`): each
    /// is classified, judged, rewritten and audited on its own; the string runs only if every
    /// statement is allowed, else none of it does.
    async fn apply_policy_each(
        &mut self,
        chain: &Chain,
        statement_hooks: bool,
        data_hooks: bool,
        principal: Arc<Principal>,
        sql: &str,
        parts: Vec<std::ops::Range<usize>>,
    ) -> Result<Each> {
        let audited = self.audited();
        let mut texts: Vec<String> = Vec::with_capacity(parts.len());
        let mut rewritten = false;
        for range in parts {
            let part = &sql[range];
            let stmt = self.describe(principal.clone(), part.as_bytes(), false);
            let (verdict, _, _) = self.judge(chain, statement_hooks, data_hooks, &stmt).await;
            if audited {
                self.audit_statement(&stmt, &verdict, true);
            }
            match verdict {
                Verdict::Allow => texts.push(part.to_owned()),
                Verdict::Rewrite { sql, .. } => {
                    rewritten = true;
                    texts.push(sql);
                }
                Verdict::Deny(d) => {
                    tracing::info!(user = %self.user, plugin = %d.plugin, sqlstate = %d.sqlstate, "statement of a multi-statement query denied by policy; none of it runs");
                    return self.deny(ClientMsg::Query, d).map(Each::Denied);
                }
            }
        }
        Ok(if rewritten {
            Each::Rewritten(texts.join(";"))
        } else {
            Each::Allowed
        })
    }

    /// A FunctionCall message under a policy chain: refused with 42501 and audited (a call
    /// by OID is nothing TideGate can classify). `None`: no chain applies, send it.
    /// `Some(None)`: refused and answered. `Some(Some(query))`: a transaction is open, send
    /// this query in its place (the server raises the error, aborting it as PostgreSQL would).
    pub(super) fn function_call_policy(&mut self) -> Result<Option<Option<BytesMut>>> {
        let Some(chain) = self.topo.plugins.clone() else {
            return Ok(None);
        };
        let principal = self.principal();
        if chain.hooks(&principal.user, &principal.database).is_empty() {
            return Ok(None);
        }
        let d = Denial {
            reason: "permission denied: FunctionCall protocol messages are not allowed through TideGate's policy".into(),
            sqlstate: "42501".into(),
            hint: Some("call the function in a query (SELECT f(…)) so that policy can judge it".into()),
            plugin: "tidegate".into(),
        };
        tracing::info!(user = %self.user, "FunctionCall message refused by policy");
        if self.audited() {
            let stmt = self.describe(principal, b"", false);
            self.audit_statement(&stmt, &Verdict::Deny(d.clone()), true);
        }
        self.deny(ClientMsg::Query, d).map(Some)
    }

    /// Answers a denied statement; returns the message to send instead, if any.
    pub(super) fn deny(&mut self, kind: ClientMsg, d: Denial) -> Result<Option<BytesMut>> {
        let quiet = self.backend.is_none() && self.pending.is_empty() && self.tx_status.is_idle();
        if kind == ClientMsg::Query {
            if quiet {
                error_response(&mut self.out, &d);
                proto::ready(&mut self.out, self.tx_status);
                self.measure_error(d.sqlstate.as_bytes());
                self.request_done(crate::client::stats::Route::Broker, None);
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
        self.measure_error(d.sqlstate.as_bytes());
        if self.backend.is_some() {
            self.client_touched = true;
        }
        self.owe_answer(Pending::Denied(e.freeze()));
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
        let roles = granted_roles(&self.topo.config, &self.user);
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
                // What cannot be established is shown as the most dangerous kind the plugin
                // interface has (the WIT is frozen): only a role granted DDL on every table
                // runs it.
                Kind::Ddl | Kind::Unknown => StatementKind::Ddl,
                Kind::Transaction => StatementKind::Transaction,
                Kind::Session => StatementKind::Utility,
                // Maintenance (VACUUM FULL, CLUSTER, REFRESH, ANALYZE) rewrites or locks
                // tables: for policy it is a write.
                Kind::Utility => StatementKind::Write,
            }
        };
        let mut tables: Vec<TableRef> = c
            .tables
            .iter()
            .map(|t| TableRef {
                schema: t.schema.clone(),
                name: t.name.clone(),
            })
            .collect();
        if c.every_table {
            tables.push(every_table());
        }
        Statement {
            principal,
            fingerprint: fp.0,
            kind,
            read_only: c.read_only,
            tables,
            prepared,
            sql: text,
        }
    }
}

/// The TideGate roles `user` holds, wherever they are granted: `[[users]] roles`, then an
/// access-control plugin's `users` map. Every plugin sees the same list, so a role means the
/// same thing to access control and to encryption's `readers`.
pub(crate) fn granted_roles(config: &tidegate_config::Config, user: &str) -> Vec<String> {
    let mut roles = config
        .user(user)
        .map(|u| u.roles.clone())
        .unwrap_or_default();
    let maps = config
        .plugins
        .chain
        .iter()
        .filter(|e| e.kind == tidegate_config::PluginKind::AccessControl)
        .filter_map(|e| e.config.get("users")?.get(user)?.as_array());
    for role in maps.flatten().filter_map(|r| r.as_str()) {
        if !roles.iter().any(|r| r == role) {
            roles.push(role.to_owned());
        }
    }
    roles
}

/// Whether `sql` may hold more than one statement: it has a `;` followed by more than
/// whitespace. A single trailing `;`, as many drivers send, is one statement at most.
fn several_statements(sql: &[u8]) -> bool {
    sql.iter()
        .position(|&b| b == b';')
        .is_some_and(|i| sql[i + 1..].iter().any(|b| !b.is_ascii_whitespace()))
}

/// What became of a multi-statement query.
enum Each {
    /// Every statement allowed as it is: send the query.
    Allowed,
    /// Every statement allowed, some rewritten: send this text instead.
    Rewritten(String),
    /// A statement denied: the denial is answered, or this is sent in the query's place.
    Denied(Option<BytesMut>),
}

/// The table a statement names when its relations could not be established: `*.*`, which
/// only a table pattern of `*` covers (no schema or table is named `*` by a rule).
pub(super) fn every_table() -> TableRef {
    TableRef {
        schema: Some("*".into()),
        name: "*".into(),
    }
}

/// Whether `stmt` may touch any table (see [`every_table`]).
pub(super) fn touches_every_table(stmt: &Statement) -> bool {
    stmt.tables
        .last()
        .is_some_and(|t| t.name == "*" && t.schema.as_deref() == Some("*"))
}

/// The body of a Parse that fails at once (a syntax error), to abort the server's transaction.
const ABORT_PARSE: &[u8] = b"tidegate: statement refused by policy\0\0\0";

fn error_response(out: &mut BytesMut, d: &Denial) {
    proto::error_with_hint(out, &d.sqlstate, &d.reason, d.hint.as_deref());
}

/// A statement that makes the server raise `d`.
pub(super) fn raise_sql(d: &Denial) -> String {
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
/// The statement text of a Query or Parse body and the length of what precedes it (the
/// statement name of a Parse); `None` if the message is malformed.
fn statement_text(kind: ClientMsg, body: &[u8]) -> Option<(&[u8], usize)> {
    if kind == ClientMsg::Query {
        return body.strip_suffix(b"\0").map(|sql| (sql, 0));
    }
    let (name, sql) = super::extended::parse_fields(body)?;
    Some((sql, name.len() + 1))
}

fn rebuild(kind: ClientMsg, prefix: &[u8], sql: &[u8], rest: &[u8]) -> BytesMut {
    let len = 4 + prefix.len() + sql.len() + 1 + rest.len();
    let mut m = BytesMut::with_capacity(1 + len);
    m.put_u8(kind.byte());
    m.put_i32(len as i32);
    m.put_slice(prefix);
    m.put_slice(sql);
    m.put_u8(0);
    m.put_slice(rest);
    m
}
