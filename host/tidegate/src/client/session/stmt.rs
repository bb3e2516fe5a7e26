//! The client's prepared statements and named portals, as the session keeps them.

use super::{audit, fields, ClientRead, DirectWrite, Session};
use crate::wire::proto::Reader;
use bytes::Bytes;
use std::sync::Arc;
use tidegate_sql::session_state;

/// A statement the client prepared: its process-wide id and Parse body.
#[derive(Clone)]
pub(super) struct Stmt {
    pub(super) id: u64,
    pub(super) body: Bytes,
    /// Provably read-only (computed only when replicas are configured).
    pub(super) read_only: bool,
    /// Parameters bound for columns the write hooks declared.
    pub(super) writes: Option<fields::ParamWrites>,
    /// Result-cache counters each execution bumps (it may write).
    pub(super) cache_writes: Option<Arc<[String]>>,
    /// What its audit records say of it (set at its first audited Bind).
    pub(super) audit: Option<audit::Shape>,
    /// Its text may end a transaction block (COMMIT, END, PREPARE TRANSACTION…): a Bind of
    /// it inside a block leaves the block's outcome unknown if the connection is lost
    /// (`retry::may_end_transaction`, read once at its Parse).
    pub(super) may_end: bool,
    /// What its text does to session state (`session_state::scan`). One that pins (`SET`,
    /// `RESET`, `set_config`…) moves the cache key's settings digest at each Bind,
    /// parameters included.
    pub(super) effect: session_state::Effect,
    /// Its fingerprint (the statement statistics' key).
    pub(super) fp: u128,
    /// It is `pg_terminate_backend`/`pg_cancel_backend` alone (see `signal`).
    pub(super) signal: Option<Arc<tidegate_sql::SignalCall>>,
    /// The Parse message that made it may name the session's own server process or prepared
    /// statements (`tidegate_sql::mentions_own_session` of its whole body, name included).
    pub(super) own_session: bool,
    /// When the client prepared it (`pg_prepared_statements.prepare_time`).
    pub(super) prepared_at: std::time::SystemTime,
}

/// The most named prepared statements a client may hold; a Parse of one more gets 54000.
pub(super) const MAX_NAMED_STATEMENTS: usize = 10_000;

/// The most named portals a client may hold open in one transaction; a Bind of one more
/// gets 54000.
pub(super) const MAX_NAMED_PORTALS: usize = 10_000;

impl<R, W> Session<R, W>
where
    R: ClientRead,
    W: DirectWrite,
{
    /// Counts the named portal a Bind opens; past [`MAX_NAMED_PORTALS`] the Bind is refused.
    pub(super) fn open_portal(&mut self, body: &[u8]) -> Option<tidegate_plugins::Denial> {
        let name = Reader::new(body).cstr().filter(|n| !n.is_empty())?;
        if self.backend.is_none() && self.tx_status.is_idle() {
            // No transaction is open, so none of the earlier portals exists any more.
            self.portals.clear();
        }
        if self.portals.contains(name) {
            return None;
        }
        if self.portals.len() >= MAX_NAMED_PORTALS {
            return Some(tidegate_plugins::Denial {
                reason: format!(
                    "too many open portals: this transaction holds {} (close some)",
                    self.portals.len()
                ),
                sqlstate: "54000".into(),
                hint: None,
                plugin: "tidegate".into(),
            });
        }
        self.portals.insert(Bytes::copy_from_slice(name));
        None
    }
}
