//! The plain lane. Outside a transaction, a lone simple Query, or the extended batch a driver
//! sends per execution (Parse of the unnamed statement's text again, Bind, Describe of the
//! portal, Execute, Sync), from a session whose configuration watches nothing per request (no
//! plugins, no cache, one node, no timeouts) takes an idle connection without waiting, is
//! written to it, and its replies are copied as they come. The lane updates the general
//! machine's state as it goes (the reply queue, the measurement, the retry copy) with the
//! general machine's own functions, so anything else — a settings replay, a reply other than
//! a row, a description, a parse, bind or command completion, a notice or the request's
//! ReadyForQuery, a lost connection — is handed over mid-way and finished there.

use super::replies::Reply;
use super::{halves::write_out, ClientRead, DirectWrite};
use super::{route, Pending, Result, Session, OUT_HIGH_WATER, READ_CHUNK};
use crate::wire::kind::{ClientMsg, ServerMsg};
use crate::wire::proto;
use bytes::Buf;
use tokio::io::AsyncReadExt;

/// Whether sessions under `topo` with `nodes` nodes may take the plain lane.
pub(super) fn lane_open(topo: &crate::upstream::topology::Topology, nodes: usize) -> bool {
    topo.plugins.is_none()
        && !topo.config.cache.enabled
        && nodes == 1
        && !super::timed(&topo.config)
}

/// What the plain lane made of the replies read so far.
enum Scan {
    /// Consumed: more are owed.
    More,
    /// Consumed up to the request's ReadyForQuery; the connection is to be released or not.
    Done { release: bool },
    /// Something for the general machine.
    General,
}

impl<R, W> Session<R, W>
where
    R: ClientRead,
    W: DirectWrite,
{
    /// Runs what the client sent through the plain lane if it can; `false` leaves the request
    /// in `rbuf` to the general machine (a connection may be attached for it already).
    pub(super) async fn plain_request(&mut self) -> Result<bool> {
        if !self.plain_idle() {
            return Ok(false);
        }
        let max = self.topo.config.limits.max_message_bytes;
        let query = match proto::header(&self.rbuf, max) {
            Ok(Some(h)) => h.client() == ClientMsg::Query && h.total == self.rbuf.len(),
            _ => return Ok(false),
        };
        let mut msg = std::mem::take(&mut self.rbuf);
        let taken = if query {
            self.plain_query(&msg[proto::HEADER_LEN..])
        } else {
            self.plain_batch(&msg)
        };
        if !taken {
            self.rbuf = msg;
            return Ok(false);
        }
        let replay_first = self.pending.front().is_some_and(Pending::hidden);
        if replay_first || !self.may_keep_whole(msg.len()) {
            self.bout.extend_from_slice(&msg);
            self.keep_for_retry(&msg);
            msg.clear();
            self.rbuf = msg;
            if replay_first {
                return Ok(true); // The general machine sends both.
            }
            self.flush_backend().await?;
        } else {
            // Written from its own buffer, which is kept whole as the retry copy (the empty
            // one kept so far takes its place).
            std::mem::swap(&mut self.replay, &mut msg);
            self.rbuf = msg;
            self.plain_send().await?;
        }
        self.plain_replies().await?;
        Ok(true)
    }

    /// Writes the request kept in `replay` to the attached connection.
    async fn plain_send(&mut self) -> Result<()> {
        let Some(b) = self.backend.as_mut() else {
            return Ok(());
        };
        match write_out(&mut b.stream, &self.replay).await {
            Ok(()) => Ok(()),
            Err(e) => self.server_lost(e).await,
        }
    }

    /// Nothing is in flight or half-done, and the configuration is the session's.
    fn plain_idle(&self) -> bool {
        self.plain
            && self.backend.is_none()
            && self.pending.is_empty()
            && self.tx_status.is_idle()
            && !self.pinned
            && self.lost_tx.is_none()
            && !self.skip_until_sync
            && !self.retry
            && self.out.is_empty()
            && self.bout.is_empty()
            && self.sh.generation() == self.topo.generation
    }

    /// Takes the Query `body` if the lane can: the session is then where the general path is
    /// after handling it.
    fn plain_query(&mut self, body: &[u8]) -> bool {
        let Some(sql) = body.strip_suffix(b"\0") else {
            return false;
        };
        if route::route_setting(sql).is_some() {
            return false;
        }
        let shape = self.shape.read(sql);
        let (fp, effect) = (shape.fp, shape.effect);
        if shape.own_session || effect.pin || effect.drops_prepared || !self.plain_checkout() {
            return false;
        }
        self.measure_sql(fp.0, sql);
        if let Some(b) = self.backend.as_mut() {
            b.unnamed = None;
        }
        self.pending.push_back(Pending::Query { visible: true });
        true
    }

    /// Attaches an idle connection of the primary if one is there at once (a settings replay
    /// may be queued on it).
    fn plain_checkout(&mut self) -> bool {
        self.measure_start();
        let now = self.clock.unwrap_or_else(crate::clock::Mono::now);
        let Some(b) = self.pools[0].try_checkout(now) else {
            return false;
        };
        self.clock = None;
        self.own_session = false;
        self.attached_to(b, 0, false, false);
        true
    }

    /// Takes the unnamed extended batch `buf` if it is exactly Parse (the unnamed
    /// statement's body again), Bind and Describe of the unnamed portal (Describe optional),
    /// Execute, Sync; the session is then where the general path is after the Sync.
    fn plain_batch(&mut self, buf: &[u8]) -> bool {
        if self.signal_stmts {
            return false;
        }
        let Some(described) = self.batch_shape(buf) else {
            return false;
        };
        let Some((id, fp)) = self.unnamed.as_ref().map(|u| (u.id, u.fp)) else {
            return false;
        };
        if !self.plain_checkout() {
            return false;
        }
        if !self.pending.is_empty() {
            // A settings replay goes first: the general machine sends the batch.
            return false;
        }
        // What Parse renews of a repeated unnamed statement, as `extended.rs` does without
        // replicas, hooks or cache.
        let writes = self.parse_writes.take();
        if let Some(u) = self.unnamed.as_mut() {
            u.read_only = false;
            u.writes = writes;
            u.cache_writes = None;
        }
        if let Some(b) = self.backend.as_mut() {
            b.unnamed = Some(id);
        }
        if !self.req.measures(fp) {
            let body = self
                .unnamed
                .as_ref()
                .map(|u| u.body.clone())
                .unwrap_or_default();
            self.measure_sql(fp, &body);
        }
        let plan = self.row_plans.get(&id).cloned();
        // One by one: extending from an array iterator costs several times as much.
        self.pending.push_back(Pending::Parse {
            visible: true,
            id: None,
        });
        self.pending.push_back(Pending::Bind(plan));
        if described {
            self.pending.push_back(Pending::Describe(None));
        }
        self.pending.push_back(Pending::Execute);
        self.pending.push_back(Pending::Sync);
        true
    }

    /// Whether `buf` is exactly the batch `plain_batch` takes, and if so whether it has a
    /// Describe.
    fn batch_shape(&self, buf: &[u8]) -> Option<bool> {
        let u = self.unnamed.as_ref()?;
        if u.effect.pin || u.effect.drops_prepared || u.signal.is_some() || u.own_session {
            return None;
        }
        let (mut pos, mut step, mut described) = (0, 0, false);
        while pos < buf.len() {
            let h = proto::header(&buf[pos..], usize::MAX).ok().flatten()?;
            let body = buf.get(pos + proto::HEADER_LEN..pos + h.total)?;
            step = match (step, h.client()) {
                // The same bytes as the Parse that made the statement: they name nothing of
                // the session's own (`u.own_session`, read above).
                (0, ClientMsg::Parse) if body.first() == Some(&0) && body[1..] == u.body[..] => 1,
                (1, ClientMsg::Bind) if body.starts_with(b"\0\0") => 2,
                (2, ClientMsg::Describe) if body == b"P\0" => {
                    described = true;
                    3
                }
                (2 | 3, ClientMsg::Execute) if body.len() == 5 && body[0] == 0 => 4,
                (4, ClientMsg::Sync) if pos + h.total == buf.len() => 5,
                _ => return None,
            };
            pos += h.total;
        }
        (step == 5).then_some(described)
    }

    /// Waits for the server's replies and copies them to the client's buffer, until one is
    /// for the general machine.
    async fn plain_replies(&mut self) -> Result<()> {
        loop {
            let Some(b) = self.backend.as_mut() else {
                return Ok(());
            };
            if b.rbuf.capacity() - b.rbuf.len() < 4096 {
                b.rbuf.reserve(READ_CHUNK);
            }
            let read = tokio::select! {
                biased;
                n = b.stream.read_buf(&mut b.rbuf) => n,
                _ = &mut self.force_wait => {
                    return self.terminate("57P01", "terminating connection due to administrator command", "shutdown").await;
                }
            };
            match read {
                Ok(0) => {
                    return self
                        .server_lost(std::io::ErrorKind::UnexpectedEof.into())
                        .await
                }
                Err(e) => return self.server_lost(e).await,
                Ok(_) => {}
            }
            match self.plain_scan() {
                Scan::More => {}
                Scan::Done { release } => {
                    if let Some(b) = self.backend.take() {
                        self.replies_done(b, release).await;
                    }
                    return Ok(());
                }
                Scan::General => return self.on_server_data().await,
            }
        }
    }

    /// Copies the complete row, description, completion and notice messages at the front of
    /// the connection's buffer, and the ReadyForQuery that ends the request.
    fn plain_scan(&mut self) -> Scan {
        let Some(mut b) = self.backend.take() else {
            return Scan::General;
        };
        let scan = loop {
            let h = match proto::header(&b.rbuf, usize::MAX) {
                Ok(Some(h)) if h.total <= b.rbuf.len() => h,
                // A large message is streamed by the general machine.
                Ok(Some(h)) if h.total > READ_CHUNK => break Scan::General,
                Ok(_) => break Scan::More,
                Err(_) => break Scan::General,
            };
            let kind = h.server();
            match kind {
                ServerMsg::DataRow => self.out.extend_from_slice(&b.rbuf[..h.total]),
                ServerMsg::RowDescription
                | ServerMsg::NoData
                | ServerMsg::ParseComplete
                | ServerMsg::BindComplete
                | ServerMsg::CommandComplete
                | ServerMsg::Notice => {}
                // The request's own (a hidden replay's goes to the general machine, which
                // takes its failure).
                ServerMsg::Ready if self.pending.len() == 1 && !self.pending[0].hidden() => {}
                _ => break Scan::General,
            }
            if kind != ServerMsg::DataRow {
                // Only ErrorResponse and a hidden ReadyForQuery get another answer.
                let Reply::Forward(forward) = self.on_reply(&mut b, kind, h.total) else {
                    break Scan::General;
                };
                self.deliver(kind, &b.rbuf[..h.total], forward);
            }
            b.rbuf.advance(h.total);
            if kind == ServerMsg::Ready {
                let release = self.after_ready();
                if release || b.rbuf.is_empty() {
                    break Scan::Done { release };
                }
                break Scan::General; // More after it: the general machine reads on.
            }
            if self.out.len() >= OUT_HIGH_WATER {
                break Scan::General; // Written out there.
            }
        };
        self.backend = Some(b);
        scan
    }
}
