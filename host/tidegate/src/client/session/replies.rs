//! Replies from the server: forwarded as they came, except those answering the broker's own
//! messages; and the clean-up that makes a connection safe to lend again.

use super::{ClientRead, DirectWrite};
use super::{Pending, Result, Session, OUT_HIGH_WATER};
use crate::upstream::backend::Backend;
use crate::wire::kind::{ClientMsg, Field, ServerMsg, TxStatus};
use crate::wire::proto::{self, Header};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

/// Partial DataRow/CopyData messages larger than this are streamed before they are complete.
const STREAM_PARTIAL: usize = 64 * 1024;

/// What the front of a server connection's buffer holds.
enum Next {
    /// A complete message.
    Message(Header),
    /// Bytes were passed through; look again.
    Consumed,
    /// Nothing complete: wait for more.
    Wait,
    /// Not a valid message stream.
    Invalid(io::Error),
}

/// What became of one server message.
pub(super) enum Reply {
    /// Handled: the client sees it (`true`) or not.
    Forward(bool),
    /// The connection is to be treated as lost.
    Lost(io::Error),
    /// The hidden startup-parameter replay failed.
    ReplayFailed,
}

impl<R, W> Session<R, W>
where
    R: ClientRead,
    W: DirectWrite,
{
    fn front_visible(&self) -> bool {
        !self.pending.front().is_some_and(Pending::hidden)
    }

    /// Processes every complete message the attached server connection has sent.
    pub(super) async fn on_server_data(&mut self) -> Result<()> {
        let Some(mut b) = self.backend.take() else {
            return Ok(());
        };
        let mut release = false;
        loop {
            let h = match self.next_server_message(&mut b) {
                Next::Message(h) => h,
                Next::Consumed => continue,
                Next::Wait => break,
                Next::Invalid(e) => {
                    self.backend = Some(b);
                    return self.server_lost(e).await;
                }
            };
            let kind = h.server();
            if kind == ServerMsg::DataRow && self.front_visible() {
                if self.rows_refused {
                    b.rbuf.advance(h.total);
                    continue;
                }
                if let Some(plan) = self.row_plan.clone() {
                    let used = Box::pin(self.transform_rows(&b.rbuf, &plan)).await?;
                    if used > 0 {
                        b.rbuf.advance(used);
                        continue;
                    }
                }
            }
            match self.on_reply(&mut b, kind, h.total) {
                Reply::Forward(forward) => self.deliver(kind, &b.rbuf[..h.total], forward),
                Reply::Lost(e) => {
                    self.backend = Some(b);
                    return self.server_lost(e).await;
                }
                Reply::ReplayFailed => {
                    self.backend = Some(b);
                    return self.replay_failed().await;
                }
            }
            b.rbuf.advance(h.total);
            if kind == ServerMsg::Ready {
                release = self.after_ready();
            }
            if release {
                break;
            }
            if self.out.len() >= OUT_HIGH_WATER {
                self.backend = Some(b);
                if self.cache.bump_due() {
                    self.cache_bump_due().await;
                }
                self.flush_client().await?;
                b = match self.backend.take() {
                    Some(b) => b,
                    None => return Ok(()),
                };
            }
        }
        self.replies_done(b, release).await;
        Ok(())
    }

    /// The replies read so far are handled: the cache counters of a commit are bumped, and
    /// the connection goes back to its pool when `release` (the end of a transaction).
    pub(super) async fn replies_done(&mut self, b: Box<Backend>, release: bool) {
        if self.cache.bump_due() {
            self.cache_bump_due().await;
        }
        if release {
            self.release(b).await;
        } else {
            self.backend = Some(b);
        }
    }

    /// The next complete message at the front of the connection's buffer. Bytes owed to a
    /// message being streamed, and the start of a huge one, go to the client as they come.
    fn next_server_message(&mut self, b: &mut Backend) -> Next {
        if self.passthrough > 0 {
            let n = self.passthrough.min(b.rbuf.len());
            if n == 0 {
                return Next::Wait;
            }
            self.out.extend_from_slice(&b.rbuf[..n]);
            b.rbuf.advance(n);
            self.passthrough -= n;
            self.client_touched = true;
            return Next::Consumed;
        }
        let h = match proto::header(&b.rbuf, usize::MAX) {
            Ok(Some(h)) => h,
            Ok(None) => return Next::Wait,
            Err(e) => return Next::Invalid(io::Error::new(io::ErrorKind::InvalidData, e)),
        };
        if b.rbuf.len() >= h.total {
            return Next::Message(h);
        }
        let kind = h.server();
        if matches!(kind, ServerMsg::DataRow | ServerMsg::CopyData)
            && b.rbuf.len() >= STREAM_PARTIAL
            && self.front_visible()
            && (kind == ServerMsg::CopyData || self.row_plan.is_none())
        {
            // A huge row: pass it through as it arrives instead of buffering it whole.
            self.cache.spoil();
            let n = b.rbuf.len();
            self.out.extend_from_slice(&b.rbuf[..n]);
            b.rbuf.advance(n);
            self.passthrough = h.total - n;
            self.client_touched = true;
        } else {
            b.rbuf.reserve(h.total - b.rbuf.len());
        }
        Next::Wait
    }

    /// Updates the session for one complete server message (the first `total` bytes of the
    /// connection's buffer) and says whether the client sees it.
    pub(super) fn on_reply(&mut self, b: &mut Backend, kind: ServerMsg, total: usize) -> Reply {
        if kind == ServerMsg::Notification {
            self.own_notification(b, total);
        }
        let msg = &b.rbuf[..total];
        if kind.is_reply() && !matches!(kind, ServerMsg::DataRow | ServerMsg::CopyData) {
            self.drain_synthetic();
        }
        let forward = match kind {
            ServerMsg::ParseComplete => {
                let mut visible = true;
                if let Some(Pending::Parse { visible: v, id }) = self.pending.pop_front() {
                    visible = v;
                    if let Some(id) = id {
                        self.pool.mark_valid(id);
                    }
                }
                visible
            }
            ServerMsg::BindComplete | ServerMsg::CloseComplete => {
                if let Some(Pending::Bind(plan)) = self.pending.pop_front() {
                    self.row_plan = plan;
                }
                true
            }
            ServerMsg::RowDescription | ServerMsg::NoData => self.on_description(kind, msg),
            ServerMsg::CommandComplete | ServerMsg::EmptyQuery | ServerMsg::PortalSuspended => {
                self.on_complete(kind, msg)
            }
            ServerMsg::Error => return self.on_error(b, total),
            ServerMsg::Ready => return self.on_ready(b, total),
            ServerMsg::CopyIn => {
                self.on_copy_in();
                true
            }
            ServerMsg::Notice | ServerMsg::ParameterStatus => self.front_visible(),
            _ => true,
        };
        Reply::Forward(forward)
    }

    /// RowDescription or NoData: the row plan of the result it describes.
    fn on_description(&mut self, kind: ServerMsg, msg: &[u8]) -> bool {
        let plan = if kind == ServerMsg::RowDescription && self.data_cols.is_some() {
            self.row_plan_of(msg)
        } else {
            None
        };
        let mut forward = true;
        match self.pending.front() {
            Some(Pending::Describe(described)) => {
                if let Some(id) = described {
                    match &plan {
                        Some(p) => self.row_plans.insert(*id, p.clone()),
                        None => self.row_plans.remove(id),
                    };
                }
                self.pending.pop_front();
            }
            Some(p) if p.hidden() => forward = false,
            _ => {}
        }
        if kind == ServerMsg::RowDescription {
            self.row_plan = plan;
        }
        forward
    }

    /// CommandComplete, EmptyQueryResponse or PortalSuspended: an Execute (or one statement
    /// of a query) is done.
    fn on_complete(&mut self, kind: ServerMsg, msg: &[u8]) -> bool {
        self.copy_in = false;
        if kind == ServerMsg::CommandComplete && self.audit.is_some() {
            self.audit_complete(msg);
        }
        let forward = match self.pending.front() {
            Some(Pending::Execute) => {
                self.pending.pop_front();
                true
            }
            Some(p) if p.hidden() => false,
            _ => true,
        };
        self.completed |= forward;
        if forward && kind == ServerMsg::CommandComplete {
            self.measure_complete(&msg[proto::HEADER_LEN..], self.server_route());
        }
        forward
    }

    /// ErrorResponse: a FATAL means the connection is going away (`retry.rs` decides what the
    /// client sees); otherwise the server now skips to the next Sync.
    fn on_error(&mut self, b: &mut Backend, total: usize) -> Reply {
        let msg = &b.rbuf[..total];
        if proto::fields(msg).any(|(k, v)| k == Field::Severity && v == b"FATAL") {
            // Shutdown, crash, termination: the FATAL is the connection's last message.
            self.server_fatal = Some(Bytes::copy_from_slice(msg));
            return Reply::Lost(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the server ended the connection (FATAL)",
            ));
        }
        self.copy_in = false;
        let code = proto::sqlstate(msg).and_then(|s| <[u8; 5]>::try_from(s.as_bytes()).ok());
        if self.first_error.is_none() {
            self.first_error = code;
        }
        match self.pending.front() {
            // The failed transaction the broker opened on purpose.
            Some(Pending::Reopen) => Reply::Forward(false),
            Some(Pending::Query { visible }) => {
                let visible = *visible;
                if let (true, Some(code)) = (visible, code) {
                    self.measure_error(&code);
                }
                if !visible && self.replay_error.is_none() {
                    let field = |k: Field| {
                        proto::fields(msg)
                            .find(|(c, _)| *c == k)
                            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                            .unwrap_or_default()
                    };
                    self.replay_error = Some((field(Field::Code), field(Field::Message)));
                }
                Reply::Forward(visible)
            }
            other => {
                // After a denial the client was shown the denial instead.
                let forward = !matches!(other, Some(Pending::Abort));
                self.skip_to_sync(b);
                if let (true, Some(code)) = (forward, code) {
                    self.measure_error(&code);
                }
                Reply::Forward(forward)
            }
        }
    }

    /// Forgets the replies the server will not send after an error: everything up to the
    /// next Sync. Statements whose Parse was skipped are not on the connection.
    fn skip_to_sync(&mut self, b: &mut Backend) {
        while let Some(p) = self.pending.front() {
            if matches!(p, Pending::Sync) {
                break;
            }
            match self.pending.pop_front() {
                Some(Pending::Parse { id: Some(id), .. }) => {
                    b.prepared.remove(&id);
                }
                // Failed or skipped: the connection's unnamed statement is no longer what we
                // recorded.
                Some(Pending::Parse { id: None, .. }) => b.unnamed = None,
                _ => {}
            }
        }
    }

    /// ReadyForQuery: the end of a batch, hidden when it answers the broker's own replay.
    fn on_ready(&mut self, b: &mut Backend, total: usize) -> Reply {
        self.row_plan = None;
        self.rows_refused = false;
        self.cancel_sent = false;
        let status = b.rbuf[..total]
            .get(proto::HEADER_LEN)
            .map_or(TxStatus::Idle, |s| TxStatus::of(*s));
        match self.pending.pop_front() {
            Some(Pending::Query { visible: false }) => {
                if self.replay_error.is_some() {
                    // The connection still holds another client's settings.
                    return Reply::ReplayFailed;
                }
                b.gucs = self.gucs.clone();
                Reply::Forward(false)
            }
            Some(Pending::Reopen) => {
                // The server holds the failed transaction the client is in: from here on
                // its answers are PostgreSQL's own.
                self.lost_tx = None;
                Reply::Forward(false)
            }
            _ => {
                self.completed = true;
                self.tx_status = status;
                if status.is_idle() {
                    // Portals end with their transaction.
                    self.portals.clear();
                }
                self.cache_ready(status);
                self.request_done(self.server_route(), self.first_error);
                self.log_statement();
                Reply::Forward(true)
            }
        }
    }

    /// CopyInResponse. COPY FROM STDIN via the extended protocol: the server ignores Sync
    /// until the copy ends, so the Syncs already queued are owed nothing.
    fn on_copy_in(&mut self) {
        self.copy_in = true;
        if matches!(self.pending.front(), Some(Pending::Execute)) {
            let before = self.pending.len();
            self.pending.retain(|p| !matches!(p, Pending::Sync));
            if self.pending.len() != before {
                self.unsynced = true;
            }
        }
    }

    /// Passes a handled message on to the client (or not), recording it for the cache.
    pub(super) fn deliver(&mut self, kind: ServerMsg, msg: &[u8], mut forward: bool) {
        if self.rows_refused
            && !matches!(
                kind,
                ServerMsg::Ready | ServerMsg::Notice | ServerMsg::ParameterStatus
            )
        {
            forward = false;
        }
        if !forward {
            return;
        }
        if self.cache_watches(kind) && self.front_visible() {
            self.cache_capture(kind, msg);
        }
        // Written out by `flush_client`, which holds a retryable read's replies back.
        self.out.extend_from_slice(msg);
    }

    /// After ReadyForQuery: replies owed for messages sent after its Sync, the idle clock, and
    /// whether the connection can go back to its pool.
    pub(super) fn after_ready(&mut self) -> bool {
        // Replies owed for messages sent after this Sync (e.g. Close + Flush).
        self.drain_synthetic();
        let mut release = false;
        if self.pending.is_empty() {
            self.busy_since = None;
            self.retries = 0;
            self.ending_sent = false;
            release = self.tx_status.is_idle() && !self.pinned && !self.copy_in && !self.unsynced;
        }
        if self.timed {
            // Idle time (in or out of a transaction) counts from the last reply.
            let now = Instant::now();
            self.last_activity = now;
            if !self.pending.is_empty() {
                self.busy_since = Some(now);
            }
        }
        release
    }

    /// Returns the connection to its pool at the end of a transaction, or closes it.
    async fn release(&mut self, mut b: Box<Backend>) {
        // Read-your-writes counts from the end of the primary transaction.
        // Boxed: read-your-writes is rare and its future large (see footprint.rs).
        let reusable = !self.wrote || Box::pin(self.note_write(&mut b)).await;
        if self.cancel.detach() {
            // A cancel for this connection may land after the next client's statement
            // started: close it rather than lend it out.
            tracing::debug!(
                backend = b.id,
                "a cancel is in flight: closing the connection"
            );
        } else if reusable && b.rbuf.is_empty() {
            self.pools[self.attached].checkin_at(b, self.clock.take());
        } else {
            tracing::warn!(
                backend = b.id,
                "unexpected bytes after ReadyForQuery; closing the connection"
            );
        }
    }

    /// The startup-parameter replay failed: PostgreSQL would have refused the connection, so
    /// the client gets its error as FATAL; the server connection, in an unknown state, is closed.
    async fn replay_failed(&mut self) -> Result<()> {
        let (code, message) = self.replay_error.take().unwrap_or_default();
        if let Some(b) = self.backend.take() {
            let _ = self.cancel.detach(); // Closed either way.
            drop(b);
        }
        self.pending.clear();
        tracing::warn!(user = %self.user, sqlstate = %code, "a startup parameter was rejected by the server");
        let code = if code.len() == 5 {
            code
        } else {
            "22023".to_owned()
        };
        proto::error(
            &mut self.out,
            proto::Severity::Fatal,
            &code,
            &format!("invalid startup parameter: {message}"),
        );
        self.flush_client().await?;
        Err(super::SessionError::Terminated(
            "startup parameter rejected",
        ))
    }

    fn log_statement(&mut self) {
        if tracing::enabled!(tracing::Level::DEBUG) {
            let sqlstate = self
                .first_error
                .as_ref()
                .and_then(|s| std::str::from_utf8(s).ok())
                .unwrap_or("00000");
            let us = self
                .busy_since
                .map_or(0, |t| t.elapsed().as_micros() as u64);
            tracing::debug!(user = %self.user, route = "primary", duration_us = us, sqlstate, "statement");
        }
        self.first_error = None;
    }

    /// Makes the attached connection (if any) clean and returns it to the pool: outstanding
    /// replies are drained, an open transaction gets exactly one ROLLBACK, and a pinned
    /// session's state is discarded. Anything unexpected closes the connection instead.
    pub(super) async fn release_on_exit(&mut self) {
        let Some(mut b) = self.backend.take() else {
            return;
        };
        if self.cancel.detach() {
            return; // A cancel is in flight for it: closed, never lent out again.
        }
        if self.passthrough > 0 {
            return; // Mid-message: the stream cannot be resynchronised.
        }
        if self.unsynced {
            // The server may hold an implicit transaction with this client's writes; a Sync
            // would commit them, and PostgreSQL aborts them on disconnect. Close instead.
            tracing::debug!(user = %self.user, "client left mid-batch: closing its server connection");
            return;
        }
        let pending = std::mem::take(&mut self.pending);
        let (copy_in, pinned, tx_status) = (self.copy_in, self.pinned, self.tx_status);
        let cleanup = async move {
            let mut out = BytesMut::new();
            if copy_in {
                out.put_u8(ClientMsg::CopyFail.byte());
                let reason = b"client disconnected during COPY\0";
                out.put_i32(4 + reason.len() as i32);
                out.put_slice(reason);
            }
            let readies = pending.iter().filter(|p| p.ends_with_ready()).count();
            if !out.is_empty() {
                b.stream.write_all(&out).await?;
            }
            let mut status = tx_status;
            if readies > 0 {
                status = b.read_until_ready(readies).await?.0;
            }
            if !status.is_idle() {
                status = b.run_hidden("ROLLBACK").await?.0;
            }
            if pinned {
                b.run_hidden("DISCARD ALL").await?;
                b.prepared.clear();
                b.unnamed = None;
                b.gucs = Arc::new([]);
            }
            Ok::<_, std::io::Error>((b, status))
        };
        match tokio::time::timeout(Duration::from_secs(5), cleanup).await {
            Ok(Ok((b, TxStatus::Idle))) if b.rbuf.is_empty() => {
                self.pools[self.attached].checkin(b)
            }
            _ => tracing::debug!(user = %self.user, "server connection closed instead of reused"),
        }
    }
}
