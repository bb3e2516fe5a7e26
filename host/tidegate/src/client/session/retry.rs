//! A server connection lost while attached. What the client sees depends on what it has seen:
//! - nothing yet, and the request can safely run again (a read on a replica, or a statement
//!   whose first reply was the server's FATAL: it never ran) → run again on another
//!   connection, the client none the wiser;
//! - otherwise, unless its session lives on that connection (pinned) → one ERROR with the
//!   server's SQLSTATE (08006 when it just vanished), and the session goes on: a transaction
//!   it was in is failed until the client ends it, as PostgreSQL would have it;
//! - a pinned session, or a connection lost mid-message or mid-COPY → FATAL, as today.

use super::{ClientRead, DirectWrite};
use super::{Pending, Result, Session, SessionError};
use crate::upstream::backend::Backend;
use crate::wire::kind::{ClientMsg, ServerMsg, TxStatus};
use crate::wire::proto::{self, Severity};
use bytes::{Buf, Bytes, BytesMut};

/// The most client messages kept to re-run a read elsewhere if its replica fails.
const MAX_REPLAY_BYTES: usize = 1 << 20;

/// Times one request may run again (at least once per node): a server shutting down tells
/// every connection FATAL at once, so a re-run may land on a sibling that has not said it yet;
/// a statement that ends its own server connection every time still fails in the end.
const MAX_RUNS_AGAIN: usize = 3;

/// A client transaction lost with its server connection.
#[derive(Debug)]
pub(super) enum LostTx {
    /// The client was idle in it: its next request gets this error.
    Unannounced(Bytes),
    /// The client was told; the transaction is failed until it ends it.
    Announced,
}

/// What a fresh connection runs first for a client in a lost transaction: a failed one.
pub(super) fn reopen_sql() -> String {
    let why = tidegate_plugins::Denial {
        reason: "tidegate: this transaction was lost with its server connection".into(),
        sqlstate: "25P02".into(),
        hint: None,
        plugin: "tidegate".into(),
    };
    format!("BEGIN;{}", super::policy::raise_sql(&why))
}

impl<R, W> Session<R, W>
where
    R: ClientRead,
    W: DirectWrite,
{
    /// The server connection failed while attached (`e`; the server's own FATAL, if it sent
    /// one, is in `server_fatal`).
    pub(super) async fn server_lost(&mut self, e: std::io::Error) -> Result<()> {
        let fatal = self.server_fatal.take();
        if self.may_run_again(fatal.is_some()) {
            self.run_again(&e);
            return Ok(());
        }
        let Some(mut b) = self.backend.take() else {
            return Ok(());
        };
        let _ = self.cancel.detach(); // Closed either way.
                                      // The server likely restarted: its idle siblings are dead too.
        self.pools[self.attached].close_idle();
        if !self.pinned && self.passthrough == 0 && !self.copy_in {
            self.survive(fatal.as_deref(), &e);
            return Ok(());
        }
        // Forward whatever complete messages arrived first (e.g. the server's own FATAL).
        self.forward_rest(&mut b);
        drop(b);
        self.pending.clear();
        self.cache_connection_lost();
        tracing::warn!(user = %self.user, error = %e, "server connection lost: the session ends with it");
        if fatal.is_none() {
            proto::error(
                &mut self.out,
                Severity::Fatal,
                "08006",
                "server closed the connection unexpectedly",
            );
        }
        let _ = self.flush_client().await;
        Err(SessionError::Server(e))
    }

    /// Whether the request can run again elsewhere: the client saw nothing of it, its
    /// messages were kept, and it is a read on a replica, or the server said FATAL before
    /// completing anything (a statement that commits says CommandComplete first; replies such
    /// as BindComplete held in `out` are dropped and come again from the re-run).
    fn may_run_again(&self, fatal: bool) -> bool {
        self.backend.is_some()
            && !self.client_touched
            && !self.replay.is_empty()
            && self.retries < MAX_RUNS_AGAIN.max(self.pools.len())
            && (self.on_replica || (fatal && !self.completed))
    }

    fn run_again(&mut self, e: &std::io::Error) {
        let node = &self.topo.nodes[self.attached];
        tracing::warn!(user = %self.user, node = %node.addr(), error = %e, "server connection failed before the client saw a reply: running the request again");
        node.stats
            .retries
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.retries += 1;
        self.backend = None;
        let _ = self.cancel.detach(); // Closed either way.
        if self.on_replica {
            self.ban(self.attached);
        }
        self.pools[self.attached].close_idle();
        self.pending.clear();
        self.unsynced = false;
        self.copy_in = false;
        self.passthrough = 0;
        self.bout.clear();
        // What the dying server sent (rows, its shutdown WARNING) was held back: drop it.
        self.out.truncate(self.out_mark);
        self.cache.drop_fill();
        let mut again = std::mem::take(&mut self.replay);
        again.extend_from_slice(&self.rbuf);
        self.rbuf = again;
        self.retry = true;
    }

    /// Notes a Query or Bind sent inside a transaction block that may end it.
    pub(super) fn note_ending(&mut self, kind: ClientMsg, msg: &[u8]) {
        if self.ending_sent {
            return;
        }
        let body = &msg[proto::HEADER_LEN..];
        self.ending_sent = if kind == ClientMsg::Query {
            may_end_transaction(body)
        } else {
            // Bind: portal name, then the statement's.
            let mut r = proto::Reader::new(body);
            let stmt = match (r.cstr(), r.cstr()) {
                (Some(_), Some([])) => self.unnamed.as_ref(),
                (Some(_), Some(name)) => self.stmts.get(name),
                _ => None,
            };
            stmt.is_none_or(|s| s.may_end)
        };
    }

    /// The connection is gone but the session goes on: each request still owed a reply gets
    /// the error (the rest of its batch is skipped, as after any error) and ReadyForQuery.
    fn survive(&mut self, fatal: Option<&[u8]>, e: &std::io::Error) {
        let (server_code, server_message) = match fatal {
            Some(raw) => proto::error_fields(raw),
            None => (
                "08006".to_owned(),
                "server closed the connection unexpectedly".to_owned(),
            ),
        };
        let in_tx = !self.tx_status.is_idle();
        // Inside a block the transaction is gone. It was rolled back — retry it (40001, what
        // transaction-retry loops and pgbench look for) — unless a COMMIT went out and the
        // server vanished without a word: then nobody knows (08007). A server that ended the
        // connection with FATAL had not committed: a commit is acknowledged first.
        let (code, message, hint) = if in_tx && self.ending_sent && fatal.is_none() {
            (
                "08007".to_owned(),
                format!("the transaction's outcome is unknown: its server connection was lost during COMMIT ({server_message})"),
                "Check whether its changes are in the database; this connection remains usable.",
            )
        } else if in_tx {
            (
                "40001".to_owned(),
                format!("the transaction was rolled back: its server connection was lost ({server_code}: {server_message})"),
                "Retry the transaction (after ROLLBACK); this connection remains usable.",
            )
        } else {
            (
                server_code,
                server_message,
                "The statement may or may not have completed; this connection remains usable.",
            )
        };
        tracing::warn!(user = %self.user, error = %e, sqlstate = %code, in_transaction = in_tx, "server connection lost: the client gets an error and keeps its session");
        let mut err = BytesMut::new();
        proto::error_with_hint(&mut err, &code, &message, Some(hint));
        self.ending_sent = false;
        let status = if in_tx {
            TxStatus::Failed
        } else {
            TxStatus::Idle
        };
        self.drain_synthetic();
        let (mut owed, mut batch_open) = (0usize, false);
        while let Some(p) = self.pending.pop_front() {
            if p.hidden() {
                continue;
            }
            if p.ends_with_ready() {
                self.out.extend_from_slice(&err);
                proto::ready(&mut self.out, status);
                owed += 1;
                batch_open = false;
            } else {
                batch_open = true;
            }
        }
        if batch_open {
            // The batch's Sync is still to come: it gets the ReadyForQuery (on_sync).
            self.out.extend_from_slice(&err);
            self.skip_until_sync = true;
            owed += 1;
        }
        if owed > 0 {
            self.measure_error(code.as_bytes());
            self.request_done(
                self.server_route(),
                <[u8; 5]>::try_from(code.as_bytes()).ok(),
            );
        }
        self.tx_status = if in_tx && owed == 0 {
            // The client, idle in its transaction, hears of it at its next request.
            self.lost_tx = Some(LostTx::Unannounced(err.freeze()));
            TxStatus::InBlock
        } else {
            self.lost_tx = in_tx.then_some(LostTx::Announced);
            status
        };
        self.unsynced = false;
        self.row_plan = None;
        self.rows_refused = false;
        self.busy_since = None;
        self.cancel_sent = false;
        self.portals.clear();
        self.replay.clear();
        self.bout.clear();
        self.cache_connection_lost();
    }

    /// A client message while its transaction is lost and no connection is attached; `true`
    /// when it was answered here.
    pub(super) fn on_lost_tx(&mut self, kind: ClientMsg, msg: &[u8]) -> bool {
        if !matches!(
            kind,
            ClientMsg::Query
                | ClientMsg::Parse
                | ClientMsg::Bind
                | ClientMsg::Describe
                | ClientMsg::Execute
                | ClientMsg::FunctionCall
        ) {
            return false;
        }
        match self.lost_tx.take() {
            Some(LostTx::Unannounced(err)) => {
                // Its first request after the loss fails, and the transaction with it.
                self.tx_status = TxStatus::Failed;
                self.lost_tx = Some(LostTx::Announced);
                if matches!(kind, ClientMsg::Query | ClientMsg::FunctionCall) {
                    self.out.extend_from_slice(&err);
                    proto::ready(&mut self.out, TxStatus::Failed);
                } else {
                    self.owe_answer(Pending::Denied(err));
                    self.skip_until_sync = true;
                }
                true
            }
            Some(LostTx::Announced)
                if kind == ClientMsg::Query && ends_transaction(&msg[proto::HEADER_LEN..]) =>
            {
                // ROLLBACK (or COMMIT, which PostgreSQL answers ROLLBACK in a failed
                // transaction) needs no server: there is nothing left to roll back.
                proto::simple(&mut self.out, ServerMsg::CommandComplete, b"ROLLBACK\0");
                self.tx_status = TxStatus::Idle;
                proto::ready(&mut self.out, TxStatus::Idle);
                true
            }
            other => {
                // Anything else runs on a fresh connection in a failed transaction (attach).
                self.lost_tx = other;
                false
            }
        }
    }

    pub(super) fn forward_rest(&mut self, b: &mut Backend) {
        while let Ok(Some(h)) = proto::header(&b.rbuf, usize::MAX) {
            if b.rbuf.len() < h.total {
                break;
            }
            if matches!(h.server(), ServerMsg::Error | ServerMsg::Notice) {
                self.out.extend_from_slice(&b.rbuf[..h.total]);
            }
            b.rbuf.advance(h.total);
        }
    }

    /// Whether the attached replica's replies are held back from the client: a read that may
    /// still be re-run elsewhere, with a ReadyForQuery to come and less than a buffer's worth
    /// of reply. (Without a Sync pending, the client waits on a Flush: nothing is held.)
    pub(super) fn holding_retryable(&self) -> bool {
        self.on_replica
            && !self.client_touched
            && self.out.len() < super::OUT_HIGH_WATER
            && self.pending.iter().any(|p| p.ends_with_ready())
    }

    /// Whether a request of `len` bytes, the first since the connection was attached, may be
    /// kept as `replay` itself (what `keep_for_retry` would keep, without copying it).
    pub(super) fn may_keep_whole(&self, len: usize) -> bool {
        self.keeps_replay() && self.replay.is_empty() && len <= MAX_REPLAY_BYTES
    }

    /// The attached connection's request may run again, so its client messages are kept.
    fn keeps_replay(&self) -> bool {
        self.keep_replay && self.backend.is_some() && !self.client_touched
    }

    /// While a connection serves a request that may run again, its client messages are kept.
    pub(super) fn keep_for_retry(&mut self, msg: &[u8]) {
        if self.keeps_replay() && !keep_bounded(&mut self.replay, msg, MAX_REPLAY_BYTES) {
            // Too much to keep: this read is not retried elsewhere if its replica fails.
            self.client_touched = true;
        }
    }
}

/// Whether a Query's text (NUL included) is only a statement that ends a transaction without
/// starting another: ROLLBACK, ABORT, COMMIT or END, with WORK/TRANSACTION and AND NO CHAIN.
fn ends_transaction(text: &[u8]) -> bool {
    let text = text.strip_suffix(b"\0").unwrap_or(text);
    let Ok(text) = std::str::from_utf8(text) else {
        return false;
    };
    let text = text.trim().trim_end_matches(';').trim_end();
    let mut words = text.split_ascii_whitespace().map(str::to_ascii_lowercase);
    if !matches!(
        words.next().as_deref(),
        Some("rollback" | "abort" | "commit" | "end")
    ) {
        return false;
    }
    let rest: Vec<String> = words.collect();
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    let rest = match rest.first() {
        Some(&"work" | &"transaction") => &rest[1..],
        _ => &rest[..],
    };
    rest.is_empty() || rest == ["and", "no", "chain"]
}

/// Whether a statement text may end a transaction block: it has the word COMMIT, END or
/// PREPARE anywhere (a CASE … END answers yes too: a false yes only makes an error say
/// "unknown" where it could have said "rolled back").
pub(super) fn may_end_transaction(text: &[u8]) -> bool {
    // One pass over the bytes (every Query in a transaction block comes here).
    let mut rest = text;
    while let Some(start) = rest.iter().position(|&b| WORD[usize::from(b)]) {
        rest = &rest[start..];
        let len = rest
            .iter()
            .position(|&b| !WORD[usize::from(b)])
            .unwrap_or(rest.len());
        let (w, after) = rest.split_at(len);
        if w.eq_ignore_ascii_case(b"commit")
            || w.eq_ignore_ascii_case(b"end")
            || w.eq_ignore_ascii_case(b"prepare")
        {
            return true;
        }
        rest = after;
    }
    false
}

/// The bytes a word is made of: ASCII letters, digits and `_`.
const WORD: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = (b as u8).is_ascii_alphanumeric() || b == b'_' as usize;
        b += 1;
    }
    table
};

/// Appends `msg` to `kept` unless that would hold more than `cap` bytes; then lets go of
/// everything kept (its memory too) and returns `false`.
fn keep_bounded(kept: &mut BytesMut, msg: &[u8], cap: usize) -> bool {
    if kept.len() + msg.len() > cap {
        *kept = BytesMut::new();
        return false;
    }
    kept.extend_from_slice(msg);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_transaction_ends_are_answered_without_a_server() {
        for yes in [
            "ROLLBACK\0",
            "rollback;\0",
            " Abort Work ; \0",
            "COMMIT\0",
            "end transaction\0",
            "ROLLBACK AND NO CHAIN\0",
        ] {
            assert!(ends_transaction(yes.as_bytes()), "{yes:?}");
        }
        for no in [
            "ROLLBACK AND CHAIN\0",
            "ROLLBACK TO SAVEPOINT a\0",
            "COMMIT PREPARED 'x'\0",
            "ROLLBACK; SELECT 1\0",
            "SELECT 1\0",
            "\0",
        ] {
            assert!(!ends_transaction(no.as_bytes()), "{no:?}");
        }
    }

    #[test]
    fn words_that_may_end_a_transaction_are_found() {
        assert!(may_end_transaction(b"COMMIT"));
        assert!(may_end_transaction(b"end;"));
        assert!(may_end_transaction(b"\0select 1;Commit\0"));
        assert!(may_end_transaction(b"PREPARE TRANSACTION 'x'"));
        assert!(!may_end_transaction(b"UPDATE t SET committed = true"));
        assert!(!may_end_transaction(b"SELECT 1"));
        assert!(may_end_transaction(b"end"), "a word at the very end");
        assert!(!may_end_transaction(b"ends; _end; end_; endx"));
        assert!(may_end_transaction(b"UPDATE t SET a = 1; eNd"));
        assert!(!may_end_transaction(b""));
    }

    #[test]
    pub(super) fn the_retry_buffer_never_holds_more_than_its_cap() {
        let mut kept = BytesMut::new();
        let msg = vec![0u8; 64 * 1024];
        let mut accepted = 0;
        for _ in 0..32 {
            if !keep_bounded(&mut kept, &msg, MAX_REPLAY_BYTES) {
                break;
            }
            accepted += 1;
            assert!(kept.len() <= MAX_REPLAY_BYTES);
        }
        assert_eq!(
            accepted,
            MAX_REPLAY_BYTES / msg.len(),
            "16 messages of 64 KiB fit"
        );
        assert_eq!(kept.capacity(), 0, "what was kept is let go");
        // Exactly the cap still fits.
        let mut kept = BytesMut::new();
        assert!(keep_bounded(
            &mut kept,
            &vec![0; MAX_REPLAY_BYTES],
            MAX_REPLAY_BYTES
        ));
        assert!(!keep_bounded(&mut kept, b"x", MAX_REPLAY_BYTES));
    }
}
