//! A server connection lost while attached: a read on a replica that the client has seen none
//! of is re-run on another node from the client messages kept for it; anything else ends the
//! session with 08006.

use super::{Result, Session, SessionError};
use crate::upstream::backend::Backend;
use crate::wire::kind::ServerMsg;
use crate::wire::proto::{self, Severity};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};

/// The most client messages kept to re-run a read elsewhere if its replica fails.
const MAX_REPLAY_BYTES: usize = 1 << 20;

impl<R, W> Session<R, W>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    /// The server connection failed while attached: the transaction is lost, so the client
    /// is told (08006) and disconnected — never silently retried elsewhere.
    pub(super) async fn server_lost(&mut self, e: std::io::Error) -> Result<()> {
        if self.on_replica
            && self.backend.is_some()
            && !self.client_touched
            && !self.replay.is_empty()
        {
            // A read on a replica failed before the client saw any of its reply: ban the
            // replica and run the same messages again on another node.
            let node = &self.topo.nodes[self.attached];
            tracing::warn!(user = %self.user, node = %node.addr(), error = %e, "replica failed mid-read: retrying elsewhere");
            node.stats
                .retries
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.backend = None;
            let _ = self.cancel.detach(); // Closed either way.
            self.ban(self.attached);
            self.pools[self.attached].close_idle();
            self.pending.clear();
            self.unsynced = false;
            self.copy_in = false;
            self.passthrough = 0;
            self.bout.clear();
            // What the dying replica sent (rows, its shutdown WARNING) was held back: drop it.
            self.out.truncate(self.out_mark);
            self.cache.drop_fill();
            let mut again = std::mem::take(&mut self.replay);
            again.extend_from_slice(&self.rbuf);
            self.rbuf = again;
            self.retry = true;
            return Ok(());
        }
        if let Some(b) = self.backend.take() {
            // Forward whatever complete messages arrived first (e.g. the server's own FATAL).
            let mut b = b;
            self.forward_rest(&mut b);
            let _ = self.cancel.detach(); // Closed either way.
                                          // The server likely restarted: its idle siblings are dead too.
            self.pools[self.attached].close_idle();
        }
        self.pending.clear();
        self.cache_connection_lost();
        tracing::warn!(user = %self.user, error = %e, "server connection lost");
        proto::error(
            &mut self.out,
            Severity::Fatal,
            "08006",
            "server closed the connection unexpectedly",
        );
        let _ = self.flush_client().await;
        Err(SessionError::Server(e))
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

    /// While a replica serves a read, its client messages are kept for a retry.
    pub(super) fn keep_for_retry(&mut self, msg: &[u8]) {
        if self.on_replica
            && self.backend.is_some()
            && !self.client_touched
            && !keep_bounded(&mut self.replay, msg, MAX_REPLAY_BYTES)
        {
            // Too much to keep: this read is not retried elsewhere if its replica fails.
            self.client_touched = true;
        }
    }
}

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
