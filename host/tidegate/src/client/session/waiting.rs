//! Waiting for the client or the server, with the session's timeouts (query, idle in
//! transaction, client idle).

use super::{spare, Result, Session, SessionError, READ_CHUNK};
use super::{ClientRead, DirectWrite};
use crate::client::cancel::CancelSlot;
use crate::client::shared::{Shared, Signal};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio_util::sync::WaitForCancellationFutureOwned;

impl<R, W> Session<R, W>
where
    R: ClientRead,
    W: DirectWrite,
{
    /// Waits for the client or the server while a server connection is attached.
    pub(super) async fn wait_attached(&mut self) -> Result<()> {
        let deadline = self.attached_deadline();
        let Some(b) = self.backend.as_mut() else {
            return Ok(());
        };
        if b.rbuf.capacity() - b.rbuf.len() < 4096 {
            b.rbuf.reserve(READ_CHUNK);
        }
        if self.rbuf.capacity() - self.rbuf.len() < 4096 {
            self.rbuf.reserve(READ_CHUNK);
        }
        tokio::select! {
            biased;
            n = b.stream.read_buf(&mut b.rbuf) => {
                match n {
                    Ok(0) => return self.server_lost(std::io::ErrorKind::UnexpectedEof.into()).await,
                    Ok(_) => self.on_server_data().await?,
                    Err(e) => return self.server_lost(e).await,
                }
            }
            n = self.rd.read_buf(&mut self.rbuf) => {
                match n.map_err(SessionError::Client)? {
                    0 => return Err(SessionError::Terminated("client disconnected")),
                    _ if self.timed => self.last_activity = Instant::now(),
                    _ => {}
                }
            }
            _ = sleep_until(deadline) => self.on_attached_timeout().await?,
            _ = &mut self.force_wait => {
                return self.terminate("57P01", "terminating connection due to administrator command", "shutdown").await;
            }
        }
        Ok(())
    }

    /// Waits for the client while no server connection is attached.
    pub(super) async fn wait_idle(&mut self) -> Result<()> {
        if self.sh.shutdown.is_raised() {
            return self
                .terminate(
                    "57P01",
                    "terminating connection due to administrator command",
                    "shutdown",
                )
                .await;
        }
        let deadline = self
            .topo
            .config
            .pool
            .client_idle_timeout
            .get()
            .map(|t| self.last_activity + t);
        self.let_go_of_buffers();
        tokio::select! {
            biased; // The client first: no random draw per wait.
            ready = std::future::poll_fn(|cx| self.rd.poll_readable(cx)) => {
                ready.map_err(SessionError::Client)?;
                self.read_client().await?;
            }
            _ = sleep_until(deadline) => {
                return self.terminate("57P05", "terminating connection due to idle-session timeout", "client idle timeout").await;
            }
            _ = &mut self.shutdown_wait => {
                return self.terminate("57P01", "terminating connection due to administrator command", "shutdown").await;
            }
        }
        Ok(())
    }

    /// Idle and nothing half-read: the session holds no buffer until the client speaks again
    /// (a few bytes per idle client instead of tens of KiB).
    fn let_go_of_buffers(&mut self) {
        // The replay buffer is kept only for a request in flight: nothing is attached now.
        self.replay.clear();
        if self.warm.is_none() && spare::keepable([&self.rbuf, &self.out, &self.bout, &self.replay])
        {
            self.warm = spare::Warm::take();
        }
        if self.warm.is_some() {
            return; // Kept until the client speaks (read_client frees the place).
        }
        spare::give_empty([
            &mut self.rbuf,
            &mut self.out,
            &mut self.bout,
            &mut self.replay,
        ]);
    }

    /// Reads what the client sent (it is readable).
    async fn read_client(&mut self) -> Result<()> {
        if self.warm.take().is_none() {
            // The buffers a request uses, from the worker's spares (no allocation per
            // request).
            spare::fill([
                &mut self.rbuf,
                &mut self.out,
                &mut self.bout,
                &mut self.replay,
            ]);
        }
        if self.rbuf.capacity() - self.rbuf.len() < 4096 {
            self.rbuf.reserve(READ_CHUNK);
        }
        let read = if R::WAITS_FOR_READINESS {
            // One poll: the readiness may be stale (a read before left it set); then the read
            // finds nothing, clears it, and the session is idle again with its buffers back.
            // (A short read clears it too, so the next wait costs no system call.)
            let mut read = std::pin::pin!(self.rd.read_buf(&mut self.rbuf));
            match read.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                Poll::Ready(r) => r,
                Poll::Pending => return Ok(()),
            }
        } else {
            self.rd.read_buf(&mut self.rbuf).await
        };
        match read.map_err(SessionError::Client)? {
            0 => Err(SessionError::Terminated("client disconnected")),
            _ => {
                if self.timed {
                    self.last_activity = Instant::now();
                }
                Ok(())
            }
        }
    }

    pub(super) fn attached_deadline(&self) -> Option<Instant> {
        let p = &self.topo.config.pool;
        if !self.pending.is_empty() {
            let qt = p.query_timeout.get()?;
            let since = self.busy_since?;
            Some(if self.cancel_sent {
                since + qt + Duration::from_secs(1)
            } else {
                since + qt
            })
        } else if !self.tx_status.is_idle() {
            p.idle_transaction_timeout
                .get()
                .map(|t| self.last_activity + t)
        } else {
            p.client_idle_timeout.get().map(|t| self.last_activity + t)
        }
    }

    pub(super) async fn on_attached_timeout(&mut self) -> Result<()> {
        if !self.pending.is_empty() {
            if !self.cancel_sent {
                self.cancel_sent = true;
                tracing::warn!(user = %self.user, "query timeout: cancelling the running statement");
                if let Some(b) = &self.backend {
                    let (target, key) = (self.pools[self.attached].target.clone(), b.key);
                    tokio::spawn(async move {
                        if let Err(e) = crate::client::cancel::send_cancel(&target, key).await {
                            tracing::warn!(error = %e, "query timeout: cancel request failed");
                        }
                    });
                }
                return Ok(());
            }
            // The server did not honour the cancel in time: drop the connection.
            if let Some(b) = self.backend.take() {
                let _ = self.cancel.detach(); // Closed either way.
                drop(b);
            }
            self.pending.clear();
            return self
                .terminate(
                    "57014",
                    "canceling statement due to query timeout",
                    "query timeout",
                )
                .await;
        }
        if !self.tx_status.is_idle() {
            return self
                .terminate(
                    "25P03",
                    "terminating connection due to idle-in-transaction timeout",
                    "idle in transaction timeout",
                )
                .await;
        }
        self.terminate(
            "57P05",
            "terminating connection due to idle-session timeout",
            "client idle timeout",
        )
        .await
    }
}

/// Whether timeouts or debug logging need clock readings on the hot path.
pub(super) fn timed(config: &tidegate_config::Config) -> bool {
    let p = &config.pool;
    p.query_timeout.get().is_some()
        || p.idle_transaction_timeout.get().is_some()
        || p.client_idle_timeout.get().is_some()
        || tracing::enabled!(tracing::Level::DEBUG)
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// Waits for a [`Signal`] or the session's KILL, cheaply enough to sit in every `select!` of
/// the session loop: the first poll registers the task's waker with both tokens, and later
/// polls by the same task only read the flags (re-polling a token would take its lock).
pub(super) struct Latch {
    sh: Arc<Shared>,
    signal: fn(&Shared) -> &Signal,
    slot: Arc<CancelSlot>,
    raised: Pin<Box<WaitForCancellationFutureOwned>>,
    killed: Pin<Box<WaitForCancellationFutureOwned>>,
    /// The waker the tokens hold.
    registered: Option<Waker>,
}

impl Latch {
    pub(super) fn new(
        sh: Arc<Shared>,
        signal: fn(&Shared) -> &Signal,
        slot: Arc<CancelSlot>,
    ) -> Latch {
        let raised = Box::pin(signal(&sh).token().clone().cancelled_owned());
        let killed = Box::pin(slot.kill_token().clone().cancelled_owned());
        Latch {
            sh,
            signal,
            slot,
            raised,
            killed,
            registered: None,
        }
    }
}

impl Future for Latch {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        if (this.signal)(&this.sh).is_raised() || this.slot.is_killed() {
            return Poll::Ready(());
        }
        if this
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            // Raising sets the flag before it wakes the registered waker.
            return Poll::Pending;
        }
        if this.raised.as_mut().poll(cx).is_ready() || this.killed.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        this.registered = Some(cx.waker().clone());
        Poll::Pending
    }
}
