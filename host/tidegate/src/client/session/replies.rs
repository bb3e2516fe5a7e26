//! Replies from the server: forwarded as they came, except those answering the broker's own
//! messages; and the clean-up that makes a connection safe to lend again.

use super::{Pending, Result, Session, OUT_HIGH_WATER};
use crate::wire::proto;
use bytes::{Buf, BufMut, BytesMut};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

/// Partial DataRow/CopyData messages larger than this are streamed before they are complete.
const STREAM_PARTIAL: usize = 64 * 1024;

impl<R, W> Session<R, W>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    fn front_visible(&self) -> bool {
        !matches!(
            self.pending.front(),
            Some(Pending::Query { visible: false })
        )
    }

    /// Processes every complete message the attached server connection has sent.
    pub(super) async fn on_server_data(&mut self) -> Result<()> {
        let Some(mut b) = self.backend.take() else {
            return Ok(());
        };
        let mut release = false;
        loop {
            if self.passthrough > 0 {
                let n = self.passthrough.min(b.rbuf.len());
                if n == 0 {
                    break;
                }
                self.out.extend_from_slice(&b.rbuf[..n]);
                b.rbuf.advance(n);
                self.passthrough -= n;
                self.client_touched = true;
                continue;
            }
            let h = match proto::header(&b.rbuf, usize::MAX) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => {
                    self.backend = Some(b);
                    return self
                        .server_lost(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
                        .await;
                }
            };
            if b.rbuf.len() < h.total {
                if matches!(h.tag, b'D' | b'd')
                    && b.rbuf.len() >= STREAM_PARTIAL
                    && self.front_visible()
                    && (h.tag == b'd' || self.row_plan.is_none())
                {
                    // A huge row: pass it through as it arrives instead of buffering it whole.
                    self.cache.spoil();
                    let n = b.rbuf.len();
                    self.out.extend_from_slice(&b.rbuf[..n]);
                    b.rbuf.advance(n);
                    self.passthrough = h.total - n;
                    self.client_touched = true;
                    break;
                }
                b.rbuf.reserve(h.total - b.rbuf.len());
                break;
            }
            if h.tag == b'D' && self.front_visible() {
                if self.rows_refused {
                    b.rbuf.advance(h.total);
                    continue;
                }
                if let Some(plan) = self.row_plan.clone() {
                    let used = self.transform_rows(&b.rbuf, &plan).await?;
                    if used > 0 {
                        b.rbuf.advance(used);
                        continue;
                    }
                }
            }
            let msg = &b.rbuf[..h.total];
            let mut forward = true;
            if matches!(
                h.tag,
                b'1' | b'2' | b'3' | b't' | b'T' | b'n' | b'C' | b'I' | b's' | b'E' | b'Z'
            ) {
                self.drain_synthetic();
            }
            match h.tag {
                b'1' => {
                    if let Some(Pending::Parse { visible, id }) = self.pending.pop_front() {
                        forward = visible;
                        if let Some(id) = id {
                            self.pool.mark_valid(id);
                        }
                    }
                }
                b'2' | b'3' => {
                    if let Some(Pending::Bind(plan)) = self.pending.pop_front() {
                        self.row_plan = plan;
                    }
                }
                b'T' | b'n' => {
                    let plan = if h.tag == b'T' && self.data_cols.is_some() {
                        self.row_plan_of(msg)
                    } else {
                        None
                    };
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
                        Some(Pending::Query { visible: false }) => forward = false,
                        _ => {}
                    }
                    if h.tag == b'T' {
                        self.row_plan = plan;
                    }
                }
                b'C' | b'I' | b's' => {
                    self.copy_in = false;
                    if h.tag == b'C' && self.audit.is_some() {
                        self.audit_complete(msg);
                    }
                    match self.pending.front() {
                        Some(Pending::Execute) => {
                            self.pending.pop_front();
                        }
                        Some(Pending::Query { visible: false }) => forward = false,
                        _ => {}
                    }
                }
                b'E' if self.on_replica
                    && !self.client_touched
                    && proto::fields(msg).any(|(k, v)| k == b'S' && v == b"FATAL") =>
                {
                    // A replica going away (shutdown, crash) before the client saw anything:
                    // treat it as a lost connection, which retries the read elsewhere.
                    self.backend = Some(b);
                    return self
                        .server_lost(std::io::Error::new(
                            std::io::ErrorKind::ConnectionAborted,
                            "replica sent FATAL",
                        ))
                        .await;
                }
                b'E' => {
                    self.copy_in = false;
                    if self.first_error.is_none() {
                        self.first_error = proto::sqlstate(msg)
                            .and_then(|s| <[u8; 5]>::try_from(s.as_bytes()).ok());
                    }
                    match self.pending.front() {
                        Some(Pending::Query { visible }) => {
                            forward = *visible;
                            if !forward && self.replay_error.is_none() {
                                let field = |k: u8| {
                                    proto::fields(msg)
                                        .find(|(c, _)| *c == k)
                                        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                                        .unwrap_or_default()
                                };
                                self.replay_error = Some((field(b'C'), field(b'M')));
                            }
                        }
                        other => {
                            if matches!(other, Some(Pending::Abort)) {
                                forward = false; // The client was shown the denial instead.
                            }
                            // The server now skips everything up to the next Sync.
                            while let Some(p) = self.pending.front() {
                                if matches!(p, Pending::Sync) {
                                    break;
                                }
                                match self.pending.pop_front() {
                                    Some(Pending::Parse { id: Some(id), .. }) => {
                                        b.prepared.remove(&id);
                                    }
                                    // Failed or skipped: the connection's unnamed statement
                                    // is no longer what we recorded.
                                    Some(Pending::Parse { id: None, .. }) => b.unnamed = None,
                                    _ => {}
                                }
                            }
                        }
                    }
                }
                b'Z' => {
                    self.row_plan = None;
                    self.rows_refused = false;
                    let status = msg.get(proto::HEADER_LEN).copied().unwrap_or(b'I');
                    match self.pending.pop_front() {
                        Some(Pending::Query { visible: false }) => {
                            forward = false;
                            if self.replay_error.is_some() {
                                // The connection still holds another client's settings.
                                self.backend = Some(b);
                                return self.replay_failed().await;
                            }
                            b.gucs.clone_from(&self.gucs);
                        }
                        _ => {
                            self.tx_status = status;
                            if status == b'I' {
                                // Portals end with their transaction.
                                self.portals.clear();
                            }
                            self.cache_ready(status);
                            self.audit_finish(self.first_error);
                            self.log_statement();
                        }
                    }
                    self.cancel_sent = false;
                }
                b'G' => {
                    self.copy_in = true;
                    if matches!(self.pending.front(), Some(Pending::Execute)) {
                        // COPY FROM STDIN via the extended protocol: the server ignores Sync
                        // until the copy ends, so the Syncs already queued are owed nothing.
                        let before = self.pending.len();
                        self.pending.retain(|p| !matches!(p, Pending::Sync));
                        if self.pending.len() != before {
                            self.unsynced = true;
                        }
                    }
                }
                b'S' | b'N' => forward = self.front_visible(),
                _ => {}
            }
            if self.rows_refused && !matches!(h.tag, b'Z' | b'N' | b'S') {
                forward = false;
            }
            if forward && self.front_visible() {
                self.cache_capture(h.tag, msg);
            }
            if forward {
                self.out.extend_from_slice(msg);
                // Notices and parameter changes are not part of a statement's reply: a read
                // re-run elsewhere after them (e.g. after a dying replica's shutdown WARNING)
                // still gives the client a well-formed exchange.
                if !matches!(h.tag, b'N' | b'S') {
                    self.client_touched = true;
                }
            }
            b.rbuf.advance(h.total);
            if h.tag == b'Z' {
                // Replies owed for messages sent after this Sync (e.g. Close + Flush).
                self.drain_synthetic();
                if self.pending.is_empty() {
                    self.busy_since = None;
                    release =
                        self.tx_status == b'I' && !self.pinned && !self.copy_in && !self.unsynced;
                }
                if self.timed {
                    // Idle time (in or out of a transaction) counts from the last reply.
                    let now = Instant::now();
                    self.last_activity = now;
                    if !self.pending.is_empty() {
                        self.busy_since = Some(now);
                    }
                }
            }
            if release {
                break;
            }
            if self.out.len() >= OUT_HIGH_WATER {
                self.backend = Some(b);
                self.cache_bump_due().await;
                self.flush_client().await?;
                b = match self.backend.take() {
                    Some(b) => b,
                    None => return Ok(()),
                };
            }
        }
        self.cache_bump_due().await;
        if release {
            // Read-your-writes counts from the end of the primary transaction.
            let reusable = !self.wrote || self.note_write(&mut b).await;
            if self.cancel.detach() {
                // A cancel for this connection may land after the next client's statement
                // started: close it rather than lend it out.
                tracing::debug!(
                    backend = b.id,
                    "a cancel is in flight: closing the connection"
                );
            } else if reusable && b.rbuf.is_empty() {
                self.pools[self.attached].checkin(b);
            } else {
                tracing::warn!(
                    backend = b.id,
                    "unexpected bytes after ReadyForQuery; closing the connection"
                );
            }
        } else {
            self.backend = Some(b);
        }
        Ok(())
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
                out.put_u8(b'f');
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
            if status != b'I' {
                status = b.run_hidden("ROLLBACK").await?.0;
            }
            if pinned {
                b.run_hidden("DISCARD ALL").await?;
                b.prepared.clear();
                b.unnamed = None;
                b.gucs.clear();
            }
            Ok::<_, std::io::Error>((b, status))
        };
        match tokio::time::timeout(Duration::from_secs(5), cleanup).await {
            Ok(Ok((b, b'I'))) if b.rbuf.is_empty() => self.pools[self.attached].checkin(b),
            _ => tracing::debug!(user = %self.user, "server connection closed instead of reused"),
        }
    }
}
