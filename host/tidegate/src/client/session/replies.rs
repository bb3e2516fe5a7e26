//! Replies from the server: forwarded as they came, except those answering the broker's own
//! messages; and the clean-up that makes a connection safe to lend again.

use super::{Pending, Result, Session, OUT_HIGH_WATER};
use crate::proto;
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
                {
                    // A huge row: pass it through as it arrives instead of buffering it whole.
                    let n = b.rbuf.len();
                    self.out.extend_from_slice(&b.rbuf[..n]);
                    b.rbuf.advance(n);
                    self.passthrough = h.total - n;
                    break;
                }
                b.rbuf.reserve(h.total - b.rbuf.len());
                break;
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
                    self.pending.pop_front();
                }
                b'T' | b'n' => match self.pending.front() {
                    Some(Pending::Describe) => {
                        self.pending.pop_front();
                    }
                    Some(Pending::Query { visible: false }) => forward = false,
                    _ => {}
                },
                b'C' | b'I' | b's' => {
                    self.copy_in = false;
                    match self.pending.front() {
                        Some(Pending::Execute) => {
                            self.pending.pop_front();
                        }
                        Some(Pending::Query { visible: false }) => forward = false,
                        _ => {}
                    }
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
                            if !forward {
                                tracing::warn!(
                                    user = %self.user,
                                    sqlstate = proto::sqlstate(msg).unwrap_or(""),
                                    "replaying the client's startup parameters failed"
                                );
                            }
                        }
                        _ => {
                            // The server now skips everything up to the next Sync.
                            while let Some(p) = self.pending.front() {
                                if matches!(p, Pending::Sync) {
                                    break;
                                }
                                if let Some(Pending::Parse { id: Some(id), .. }) =
                                    self.pending.pop_front()
                                {
                                    b.prepared.remove(&id);
                                }
                            }
                        }
                    }
                }
                b'Z' => {
                    let status = msg.get(proto::HEADER_LEN).copied().unwrap_or(b'I');
                    match self.pending.pop_front() {
                        Some(Pending::Query { visible: false }) => forward = false,
                        _ => {
                            self.tx_status = status;
                            self.log_statement();
                        }
                    }
                    self.cancel_sent = false;
                    // Idle time (in or out of a transaction) counts from the last reply.
                    if self.pending.is_empty() {
                        self.busy_since = None;
                        release = status == b'I' && !self.pinned && !self.copy_in;
                    }
                    if self.timed {
                        let now = Instant::now();
                        self.last_activity = now;
                        if !self.pending.is_empty() {
                            self.busy_since = Some(now);
                        }
                    }
                }
                b'G' => self.copy_in = true,
                b'S' | b'N' => forward = self.front_visible(),
                _ => {}
            }
            if forward {
                self.out.extend_from_slice(msg);
            }
            b.rbuf.advance(h.total);
            if release {
                break;
            }
            if self.out.len() >= OUT_HIGH_WATER {
                self.backend = Some(b);
                self.flush_client().await?;
                b = match self.backend.take() {
                    Some(b) => b,
                    None => return Ok(()),
                };
            }
        }
        if release {
            self.cancel.detach();
            if b.rbuf.is_empty() {
                self.pool.checkin(b);
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
        self.cancel.detach();
        if self.passthrough > 0 {
            return; // Mid-message: the stream cannot be resynchronised.
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
            let mut readies = pending.iter().filter(|p| p.ends_with_ready()).count();
            let unsynced = pending
                .iter()
                .rev()
                .take_while(|p| !p.ends_with_ready())
                .any(|p| !matches!(p, Pending::Synthetic(_)));
            if unsynced {
                proto::simple(&mut out, b'S', &[]);
                readies += 1;
            }
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
            Ok(Ok((b, b'I'))) if b.rbuf.is_empty() => self.pool.checkin(b),
            _ => tracing::debug!(user = %self.user, "server connection closed instead of reused"),
        }
    }
}
