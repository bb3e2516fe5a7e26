//! The replies a client is owed, in order.

use super::fields;
use crate::wire::kind::ServerMsg;
use bytes::Bytes;
use std::sync::Arc;

/// A reply the client is owed, in order.
#[derive(Debug)]
pub(super) enum Pending {
    /// A Parse sent to the server; `visible` = the client asked for it (else injected).
    Parse {
        visible: bool,
        /// The shared id of a named statement; `None` for the unnamed statement.
        id: Option<u64>,
    },
    /// A reply the broker produces itself when this reaches the front (ParseComplete or
    /// CloseComplete).
    Synthetic(ServerMsg),
    /// An ErrorResponse the broker owes (a statement its policy denied).
    Denied(Bytes),
    /// Replies the broker gives in the server's stead (a signal to a broker session).
    Answer(Bytes),
    /// A Parse sent to abort the server's transaction after a denial (its error is hidden).
    Abort,
    /// A Bind; the plan for its statement's result rows, when it has declared columns.
    Bind(Option<Arc<fields::RowPlan>>),
    /// A Describe; the shared id when it describes a statement.
    Describe(Option<u64>),
    Execute,
    Close,
    Sync,
    /// A simple query; `visible` = false for the broker's own (SET replay).
    Query {
        visible: bool,
    },
    /// The broker's own simple query that opens a failed transaction on a fresh connection,
    /// for a client whose transaction was lost with its server connection (all hidden).
    Reopen,
}

impl Pending {
    pub(super) fn ends_with_ready(&self) -> bool {
        matches!(
            self,
            Pending::Sync | Pending::Query { .. } | Pending::Reopen
        )
    }

    /// The broker answers it itself when it reaches the front (`Session::drain_synthetic`).
    pub(super) fn synthetic(&self) -> bool {
        matches!(
            self,
            Pending::Synthetic(_) | Pending::Denied(_) | Pending::Answer(_)
        )
    }

    /// The replies to it are the broker's own, never the client's.
    pub(super) fn hidden(&self) -> bool {
        matches!(self, Pending::Query { visible: false } | Pending::Reopen)
    }
}
