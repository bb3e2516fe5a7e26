//! What the session tells the audit pipeline: one event per request (a simple Query, or an
//! extended-protocol batch up to Sync that executed something), with the first statement's
//! fingerprint, kind and tables, the policy decision, the rows, the duration and the first
//! error's SQLSTATE — never parameter values.

use super::Session;
use super::{ClientRead, DirectWrite};
use std::sync::Arc;
use std::time::Instant;
use tidegate_plugins::{AuditEvent, Denial, Statement, StatementKind, TableRef, Verdict};

/// What an audit record says of a statement. Kept in the prepared statement, so that binding
/// it again does not classify its text again.
#[derive(Clone)]
pub(super) struct Shape {
    /// The fingerprint in hex, formatted once per statement text.
    fingerprint: Arc<str>,
    kind: StatementKind,
    tables: Arc<[TableRef]>,
}

impl Shape {
    pub(super) fn of(stmt: &Statement) -> Shape {
        Shape {
            fingerprint: tidegate_plugins::fingerprint_hex(stmt.fingerprint).into(),
            kind: stmt.kind,
            tables: stmt.tables.as_slice().into(),
        }
    }
}

impl Shape {
    /// Takes in another statement of the same request.
    fn merge(&mut self, stmt: &Statement) {
        if danger(stmt.kind) > danger(self.kind) {
            self.kind = stmt.kind;
            self.fingerprint = tidegate_plugins::fingerprint_hex(stmt.fingerprint).into();
        }
        if stmt.tables.iter().any(|t| !self.tables.contains(t)) {
            let mut tables = self.tables.to_vec();
            for t in &stmt.tables {
                if !tables.contains(t) {
                    tables.push(t.clone());
                }
            }
            self.tables = tables.into();
        }
    }
}

/// How much a statement of `kind` can do, for the record of a request of several.
fn danger(kind: StatementKind) -> u8 {
    match kind {
        StatementKind::Transaction => 0,
        StatementKind::Read => 1,
        StatementKind::Utility => 2,
        StatementKind::Write => 3,
        StatementKind::Ddl => 4,
    }
}

/// The request being audited.
pub(super) struct Track {
    shape: Shape,
    decision: &'static str,
    decided_by: Option<String>,
    denied: Option<String>,
    executed: bool,
    rows: u64,
    started: Instant,
    at_us: i64,
}

impl Track {
    /// A request that starts now, allowed so far.
    fn new(shape: Shape) -> Track {
        Track {
            shape,
            decision: "allow",
            decided_by: None,
            denied: None,
            executed: false,
            rows: 0,
            started: Instant::now(),
            at_us: crate::audit::now_us(),
        }
    }
}

impl<R, W> Session<R, W>
where
    R: ClientRead,
    W: DirectWrite,
{
    /// Whether this session's statements are audited.
    pub(super) fn audited(&self) -> bool {
        self.topo
            .plugins
            .as_ref()
            .is_some_and(|c| c.hooks(&self.user, &self.login.database).audit)
    }

    /// `Some(denial)` when the audit log cannot take records: statements are refused.
    pub(super) fn audit_refusal(&self) -> Option<Denial> {
        let sink = crate::client::shared::audit_sink(&self.sh);
        let why = match sink {
            Some(s) => s.available().err()?,
            None => "the audit writer is not running (audit.key is not set)".into(),
        };
        Some(Denial {
            reason: format!("statement refused: the audit log is unavailable ({why})"),
            sqlstate: "58000".into(),
            hint: Some(
                "audit is fail-closed: statements run again once records can be written".into(),
            ),
            plugin: "audit".into(),
        })
    }

    /// Records the statement of this request (the first one counts), allowed.
    pub(super) fn audit_shape(&mut self, shape: Shape, executes: bool) {
        self.audit.get_or_insert_with(|| Track::new(shape)).executed |= executes;
    }

    /// Records a statement of this request and the chain's verdict. The record of a request
    /// of several statements has the most dangerous kind among them and all their tables.
    pub(super) fn audit_statement(&mut self, stmt: &Statement, verdict: &Verdict, executes: bool) {
        let track = match &mut self.audit {
            Some(track) => {
                track.shape.merge(stmt);
                track
            }
            None => self.audit.insert(Track::new(Shape::of(stmt))),
        };
        track.executed |= executes;
        match verdict {
            Verdict::Allow => {}
            Verdict::Rewrite { by, .. } if track.decision == "allow" => {
                track.decision = "rewrite";
                track.decided_by = by.first().cloned();
            }
            Verdict::Rewrite { .. } => {}
            Verdict::Deny(d) => {
                track.decision = "deny";
                track.decided_by = Some(d.plugin.clone());
                track.denied = Some(d.sqlstate.clone());
                track.executed = true;
            }
        }
    }

    /// A Bind opening a request (prepared statements are bound without a Parse): its
    /// statement is the one audited.
    pub(super) fn audit_bind(&mut self, msg: &[u8]) {
        let body = &msg[crate::wire::proto::HEADER_LEN..];
        let mut r = crate::wire::proto::Reader::new(body);
        let (Some(_portal), Some(name)) = (r.cstr(), r.cstr()) else {
            return;
        };
        if self.audit.is_some() {
            return; // The request's first statement is the one audited.
        }
        let stmt = if name.is_empty() {
            self.unnamed.as_ref()
        } else {
            self.stmts.get(name)
        };
        let Some(stmt) = stmt else {
            return;
        };
        let shape = match &stmt.audit {
            Some(shape) => shape.clone(),
            None => {
                let Some(sql) = stmt.body.split(|b| *b == 0).next().map(<[u8]>::to_vec) else {
                    return;
                };
                let principal = self.principal();
                let shape = Shape::of(&self.describe(principal, &sql, true));
                let stmt = if name.is_empty() {
                    self.unnamed.as_mut()
                } else {
                    self.stmts.get_mut(name)
                };
                if let Some(stmt) = stmt {
                    stmt.audit = Some(shape.clone());
                }
                shape
            }
        };
        self.audit = Some(Track::new(shape));
    }

    /// An Execute in this request.
    pub(super) fn audit_execute(&mut self) {
        if let Some(t) = self.audit.as_mut() {
            t.executed = true;
        }
    }

    /// Counts the rows of a CommandComplete (`SELECT 3`, `INSERT 0 5`, `UPDATE 2`).
    pub(super) fn audit_complete(&mut self, msg: &[u8]) {
        let Some(t) = self.audit.as_mut() else {
            return;
        };
        let tag = msg
            .get(crate::wire::proto::HEADER_LEN..msg.len().saturating_sub(1))
            .unwrap_or_default();
        if let Some(n) = tag
            .rsplit(|b| *b == b' ')
            .next()
            .and_then(|n| std::str::from_utf8(n).ok())
            .and_then(|n| n.parse::<u64>().ok())
        {
            t.rows = t.rows.saturating_add(n);
        }
    }

    /// The request ended (ReadyForQuery reached the client): its event goes to the sink.
    pub(super) fn audit_finish(&mut self, first_error: Option<[u8; 5]>) {
        let Some(t) = self.audit.take() else {
            return;
        };
        if !t.executed {
            return; // Parse/Describe only: nothing ran.
        }
        let sh = self.sh.clone();
        let Some(sink) = crate::client::shared::audit_sink(&sh) else {
            return;
        };
        let sqlstate = t.denied.or_else(|| {
            first_error
                .as_ref()
                .and_then(|s| std::str::from_utf8(s).ok())
                .map(str::to_owned)
        });
        sink.submit(AuditEvent {
            principal: self.principal(),
            fingerprint: t.shape.fingerprint,
            kind: t.shape.kind,
            tables: t.shape.tables,
            decision: t.decision.to_owned(),
            decided_by: t.decided_by,
            rows: t.rows,
            duration_us: t.started.elapsed().as_micros() as u64,
            sqlstate,
            at_us: t.at_us,
        });
    }
}
