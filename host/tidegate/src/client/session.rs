//! One authenticated client: relays its messages to a pooled server connection and the
//! server's replies back, message by message, without decoding row data.
//!
//! A server connection is attached for a transaction (or one statement outside a transaction)
//! and returned when ReadyForQuery reports idle with nothing outstanding. A FIFO of expected
//! replies (`pending`) lets the broker re-prepare a client's named statements on whichever
//! connection it gets, hide the replies to its own injected messages, and answer for messages it
//! did not need to send — all in the order the client expects.

use crate::client::cancel::CancelSlot;
use crate::client::shared::Shared;
use crate::upstream::backend::{Backend, Pool, Target};
use crate::upstream::topology::Topology;
use crate::wire::kind::{ClientMsg, ServerMsg, TxStatus};
use crate::wire::proto::{self, FrameError, Severity};
use bytes::{Bytes, BytesMut};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;
use tidegate_sql::session_state;
use tokio::io::AsyncWriteExt;

mod audit;
mod cache;
mod cache_bind;
mod extended;
mod fields;
#[cfg(test)]
mod footprint;
mod halves;
mod measure;
mod memo;
mod messages;
mod params;
mod pending;
mod plain;
mod policy;
mod replies;
mod retry;
mod route;
mod signal;
mod spare;
mod stmt;
mod waiting;

use halves::write_out;
pub use halves::{ClientRead, DirectWrite};
use messages::Handled;
use pending::Pending;
use route::Ryw;
pub use route::{login_target, passthrough_target, pools_for};
use stmt::Stmt;
use waiting::{timed, Latch};

/// Why a session ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The client socket failed.
    #[error("client i/o: {0}")]
    Client(#[source] std::io::Error),
    /// The server connection failed mid-session.
    #[error("server connection lost: {0}")]
    Server(#[source] std::io::Error),
    /// The client broke the protocol; it was sent 08P01 (or 54000) and disconnected.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The broker ended the session (timeout, shutdown); the client was told why.
    #[error("terminated: {0}")]
    Terminated(&'static str),
}

type Result<T> = std::result::Result<T, SessionError>;

/// One client session.
pub struct Session<R, W> {
    sh: Arc<Shared>,
    /// The configuration and servers this session routes by (refreshed between transactions).
    topo: Arc<Topology>,
    /// How this client's connections log in (the primary's address).
    login: Target,
    /// Function volatilities and classifications of this client's database.
    catalog: Arc<crate::upstream::catalog::DbCatalog>,
    /// Who this client is, for plugins (made on first use).
    principal: Option<Arc<tidegate_plugins::Principal>>,
    /// Statement shapes the plugin chain settled (see `memo`).
    memo: memo::Memo,
    /// The last Query text's fingerprint and session-state reading, for texts that differ
    /// from it only in their numbers.
    shape: tidegate_sql::ShapeMemo,
    /// The primary's pool for this (database, role).
    pool: Arc<Pool>,
    /// Every node's pool: the primary first, then the replicas.
    pools: Vec<Arc<Pool>>,
    /// The node of the attached connection.
    attached: usize,
    /// The attached connection is a replica serving a provably read-only transaction.
    on_replica: bool,
    /// `SET tidegate.route = 'primary'`: every statement goes to the primary.
    primary_only: bool,
    /// Round-robin position among replicas.
    next_replica: usize,
    /// This user's read-your-writes mode.
    ryw_mode: tidegate_config::ReadYourWrites,
    /// What its reads must wait for.
    ryw: Ryw,
    /// The attached connection is the primary, for something not provably read-only.
    wrote: bool,
    user: Arc<str>,
    rd: R,
    wr: W,
    rbuf: BytesMut,
    out: BytesMut,
    bout: BytesMut,
    /// Boxed: it moves in and out of the pool and this option at every transaction.
    backend: Option<Box<Backend>>,
    pending: VecDeque<Pending>,
    /// A reply the broker gives itself may be in `pending` (false: none is). Set by
    /// `owe_answer`, cleared when `drain_synthetic` finds the queue empty.
    answers_owed: bool,
    stmts: HashMap<Bytes, Stmt>,
    /// Named portals the client opened in the current transaction (they end with it).
    portals: std::collections::HashSet<Bytes>,
    unnamed: Option<Stmt>,
    gucs: params::Gucs,
    pinned: bool,
    tx_status: TxStatus,
    skip_until_sync: bool,
    /// The server is in copy-in mode and the client has not ended it (CopyDone/CopyFail).
    copy_in: bool,
    /// Extended-protocol messages went to the server since the last Sync: the server may hold
    /// an implicit transaction, so the connection must not be reused until a Sync completes.
    unsynced: bool,
    /// The hidden startup-parameter replay failed with this SQLSTATE and message.
    replay_error: Option<(String, String)>,
    /// Client messages sent to the attached replica, kept so a read can be retried elsewhere
    /// if the replica fails before the client sees a byte of the reply.
    replay: BytesMut,
    /// Idle, this session keeps its buffers in one of the few places for that (`spare.rs`).
    warm: Option<spare::Warm>,
    /// Something of the attached connection's replies was written to the client.
    client_touched: bool,
    /// Where the attached connection's replies begin in `out`: while a read on a replica may
    /// still be retried, they are held there (not written) until its ReadyForQuery, and a
    /// retry drops them.
    out_mark: usize,
    /// A replica read is being retried: process the re-queued messages before waiting.
    retry: bool,
    /// The attached connection began a transaction (nothing of the client's session is on it
    /// that a fresh connection would lack): its client messages are kept for a retry.
    keep_replay: bool,
    /// Retries of the current request (bounded: a statement that kills its own server
    /// connection is not run forever).
    retries: usize,
    /// The FATAL the attached server sent before it went away.
    server_fatal: Option<Bytes>,
    /// A client request on the attached connection completed (CommandComplete or
    /// ReadyForQuery): it may have committed, so it is never run again.
    completed: bool,
    /// The client's transaction was lost with its server connection (see `retry.rs`).
    lost_tx: Option<retry::LostTx>,
    /// A request that may end the open transaction block (COMMIT…) is unanswered: a
    /// connection lost now leaves the transaction's outcome unknown.
    ending_sent: bool,
    passthrough: usize,
    cancel: Arc<CancelSlot>,
    busy_since: Option<Instant>,
    cancel_sent: bool,
    last_activity: Instant,
    first_error: Option<[u8; 5]>,
    audit: Option<audit::Track>, // The request being audited, when an audit hook applies.
    /// Data hooks: this database's declared columns (once a statement touched their tables),
    /// what the Parse being handled binds to them, the result fields the rows now arriving have.
    data_cols: Option<Arc<crate::policy::columns::DbColumns>>,
    parse_writes: Option<fields::ParamWrites>,
    row_plan: Option<Arc<fields::RowPlan>>,
    /// Row plans of described statements, by shared id (`rows_refused`: a row hook refused
    /// this request's result, so replies up to ReadyForQuery are dropped).
    row_plans: HashMap<u64, Arc<fields::RowPlan>>,
    rows_refused: bool,
    cache: cache::SessionCache,
    name_buf: Vec<u8>,
    /// Whether any timeout or statement logging needs clock readings on the hot path.
    timed: bool,
    /// The request being measured for the statement statistics.
    req: measure::Request,
    /// The clock as this wakeup's request started or ended, for the pool (which would read
    /// it again); forgotten before the session waits.
    clock: Option<crate::clock::Mono>,
    /// Some statement this client prepared is a signal call (its Binds are looked at).
    signal_stmts: bool,
    /// The Query or Parse being handled may name the session's own server process or
    /// prepared statements (`tidegate_sql::mentions_own_session`, scanned once per message).
    own_session: bool,
    /// The configuration lets lone queries take the plain lane (`plain.rs`).
    plain: bool,
    shutdown_wait: Latch,
    force_wait: Latch,
}

const READ_CHUNK: usize = 32 * 1024;
/// Client-bound bytes buffered before they are written out mid-batch.
const OUT_HIGH_WATER: usize = 256 * 1024;

impl<R, W> Session<R, W>
where
    R: ClientRead,
    W: DirectWrite,
{
    /// A session for an authenticated client logging in as `login` (its primary target).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        sh: Arc<Shared>,
        topo: Arc<Topology>,
        login: Target,
        pools: Vec<Arc<Pool>>,
        user: Arc<str>,
        rd: R,
        wr: W,
        leftover: BytesMut,
        gucs: Vec<(String, String)>,
        cancel: Arc<CancelSlot>,
    ) -> Self {
        let pinned = topo.config.pool.mode == tidegate_config::PoolMode::Session;
        let catalog = route::catalog_for(&topo, &login.database, &pools[0]);
        let timed = timed(&topo.config);
        let plain = plain::lane_open(&topo, pools.len());
        let ryw_mode = route::ryw_mode(&topo.config, &user);
        let shutdown_wait = Latch::new(sh.clone(), |sh| &sh.shutdown, cancel.clone());
        let force_wait = Latch::new(sh.clone(), |sh| &sh.force, cancel.clone());
        let gucs = params::shared(gucs);
        let session_cache = cache::SessionCache::new(&gucs);
        // Buffers are taken when the client sends something and let go while it is idle.
        let rbuf = if leftover.is_empty() {
            BytesMut::new()
        } else {
            leftover
        };
        Session {
            sh,
            topo,
            login,
            catalog,
            principal: None,
            memo: memo::Memo::default(),
            shape: tidegate_sql::ShapeMemo::default(),
            pool: pools[0].clone(),
            next_replica: rand::random::<u32>() as usize,
            pools,
            attached: 0,
            on_replica: false,
            primary_only: false,
            ryw_mode,
            ryw: Ryw::Clear,
            wrote: false,
            user,
            rd,
            wr,
            rbuf,
            out: BytesMut::new(),
            bout: BytesMut::new(),
            backend: None,
            pending: VecDeque::new(),
            answers_owed: false,
            stmts: HashMap::new(),
            portals: std::collections::HashSet::new(),
            unnamed: None,
            gucs,
            pinned,
            tx_status: TxStatus::Idle,
            skip_until_sync: false,
            copy_in: false,
            unsynced: false,
            replay_error: None,
            replay: BytesMut::new(),
            client_touched: false,
            out_mark: 0,
            retry: false,
            keep_replay: false,
            warm: None,
            retries: 0,
            server_fatal: None,
            completed: false,
            lost_tx: None,
            ending_sent: false,
            passthrough: 0,
            cancel,
            busy_since: None,
            cancel_sent: false,
            last_activity: Instant::now(),
            first_error: None,
            audit: None,
            data_cols: None,
            parse_writes: None,
            row_plan: None,
            row_plans: HashMap::new(),
            rows_refused: false,
            cache: session_cache,
            name_buf: Vec::new(),
            timed,
            req: measure::Request::default(),
            clock: None,
            signal_stmts: false,
            own_session: false,
            plain,
            shutdown_wait,
            force_wait,
        }
    }

    /// Runs until the client leaves or the session is ended, then returns (or closes) the
    /// server connection it holds.
    ///
    /// Not an `async fn`: one would keep the session twice in its state (the argument and the
    /// local it is moved to), and the future lives as long as the client.
    #[allow(clippy::manual_async_fn)] // Deliberate: see above.
    pub fn run(mut self) -> impl std::future::Future<Output = Result<()>> {
        async move {
            let result = self.run_loop().await;
            if !self.out.is_empty() {
                let _ = self.wr.write_all(&self.out).await;
            }
            let _ = self.wr.shutdown().await;
            if self.cache.store_due() {
                self.cache_store_due().await;
            }
            self.release_on_exit().await;
            result
        }
    }

    async fn run_loop(&mut self) -> Result<()> {
        loop {
            if self.plain && self.plain_request().await? {
                continue;
            }
            // The checks before each await below keep the common case (nothing to do) from
            // entering an awaited state machine at all.
            loop {
                let frame = match proto::split_frame(
                    &mut self.rbuf,
                    self.topo.config.limits.max_message_bytes,
                ) {
                    Ok(f) => f,
                    Err(e) => {
                        self.frame_error(e).await?;
                        None
                    }
                };
                let Some((tag, msg)) = frame else { break };
                if !self.on_client_message(ClientMsg::of(tag), msg).await? {
                    return Ok(());
                }
            }
            if !self.bout.is_empty() {
                self.flush_backend().await?;
            }
            if std::mem::take(&mut self.retry) {
                continue;
            }
            self.drain_synthetic();
            // With nothing in `out` a flush has nothing to do (its mark is 0 already).
            if !self.out.is_empty() {
                self.flush_client().await?;
            }
            if self.cache.store_due() {
                self.cache_store_due().await;
            }
            if self.timed && self.busy_since.is_none() && !self.pending.is_empty() {
                self.busy_since = Some(Instant::now());
            }
            self.clock = None;

            if self.backend.is_some() {
                self.wait_attached().await?;
            } else {
                self.wait_idle().await?;
            }
        }
    }

    /// Sends a FATAL error and ends the session.
    async fn terminate(&mut self, code: &str, message: &str, why: &'static str) -> Result<()> {
        proto::error(&mut self.out, Severity::Fatal, code, message);
        self.flush_client().await?;
        tracing::info!(user = %self.user, reason = why, "closing client connection");
        Err(SessionError::Terminated(why))
    }

    async fn protocol_violation(&mut self, code: &str, message: String) -> Result<()> {
        proto::error(&mut self.out, Severity::Fatal, code, &message);
        let _ = self.flush_client().await;
        Err(SessionError::Protocol(message))
    }

    /// A client message that cannot be framed: 54000 if too large, else 08P01; the session
    /// ends.
    async fn frame_error(&mut self, e: FrameError) -> Result<()> {
        let code = match e {
            FrameError::TooLarge { .. } => "54000",
            _ => "08P01",
        };
        self.protocol_violation(code, e.to_string()).await
    }

    async fn flush_client(&mut self) -> Result<()> {
        if self.out.len() > self.out_mark && self.backend.is_some() {
            if self.holding_retryable() {
                return Ok(());
            }
            self.client_touched = true;
        }
        self.out_mark = 0;
        if !self.out.is_empty() {
            write_out(&mut self.wr, &self.out)
                .await
                .map_err(SessionError::Client)?;
            self.out.clear();
        }
        Ok(())
    }

    async fn flush_backend(&mut self) -> Result<()> {
        if self.bout.is_empty() {
            return Ok(());
        }
        let Some(b) = self.backend.as_mut() else {
            self.bout.clear();
            return Ok(());
        };
        if let Err(e) = write_out(&mut b.stream, &self.bout).await {
            self.bout.clear();
            return self.server_lost(e).await;
        }
        self.bout.clear();
        Ok(())
    }

    /// Emits replies the broker owes for messages it did not send, once all earlier replies
    /// have been delivered.
    fn drain_synthetic(&mut self) {
        if !self.answers_owed {
            return; // The common case, at every reply.
        }
        if !self.pending.front().is_some_and(Pending::synthetic) {
            self.answers_owed = !self.pending.is_empty();
            return;
        }
        // Answers owed before anything of the attached connection's replies are not part of
        // them: they do not stop a re-run (retry.rs), which would not repeat them.
        let ahead = self.backend.is_some() && self.out.len() == self.out_mark;
        loop {
            match self.pending.front() {
                Some(Pending::Synthetic(tag)) => proto::simple(&mut self.out, *tag, &[]),
                Some(Pending::Denied(e) | Pending::Answer(e)) => self.out.extend_from_slice(e),
                _ => break,
            }
            self.pending.pop_front();
        }
        self.answers_owed = !self.pending.is_empty();
        if ahead {
            self.out_mark = self.out.len();
        }
    }

    /// Queues a reply the broker gives itself. Messages answered so while a replica is
    /// attached would be answered twice by a retry, so they make the read non-retryable.
    fn push_synthetic(&mut self, kind: ServerMsg) {
        if self.backend.is_some() {
            self.client_touched = true;
        }
        self.owe_answer(Pending::Synthetic(kind));
    }

    /// Queues `answer`, a reply the broker gives itself (`Pending::synthetic`).
    fn owe_answer(&mut self, answer: Pending) {
        debug_assert!(answer.synthetic());
        self.answers_owed = true;
        self.pending.push_back(answer);
    }

    /// Handles one client message. Returns `false` when the client terminated.
    async fn on_client_message(&mut self, kind: ClientMsg, mut msg: BytesMut) -> Result<bool> {
        if self.backend.is_none() {
            self.refresh_topology();
        }
        if self.skip_until_sync && !matches!(kind, ClientMsg::Sync | ClientMsg::Terminate) {
            return Ok(true);
        }
        if self.lost_tx.is_some() && self.backend.is_none() && self.on_lost_tx(kind, &msg) {
            return Ok(true);
        }
        if matches!(
            kind,
            ClientMsg::Query
                | ClientMsg::Parse
                | ClientMsg::Bind
                | ClientMsg::Execute
                | ClientMsg::FunctionCall
        ) {
            self.measure_start();
        }
        if !self.tx_status.is_idle() && matches!(kind, ClientMsg::Query | ClientMsg::Bind) {
            self.note_ending(kind, &msg);
        }
        let text = matches!(kind, ClientMsg::Query | ClientMsg::Parse);
        let mentions =
            |msg: &BytesMut| text && tidegate_sql::mentions_own_session(&msg[proto::HEADER_LEN..]);
        let mut own_session = mentions(&msg);
        if own_session {
            self.own_session_text(kind, &mut msg);
            own_session = mentions(&msg);
        }
        if text && self.topo.plugins.is_some() {
            // Boxed, as the other plugin paths: their futures are large and rare per session.
            match Box::pin(self.apply_policy(kind, msg)).await? {
                Some(m) => msg = m,
                None => return Ok(true),
            }
            own_session = mentions(&msg);
        }
        self.own_session = own_session;
        let handled = match kind {
            ClientMsg::Query => self.on_query(&msg).await?,
            ClientMsg::Parse | ClientMsg::Bind | ClientMsg::Describe => {
                self.on_extended(kind, &mut msg).await?
            }
            ClientMsg::Execute => self.on_execute(&msg).await?,
            ClientMsg::FunctionCall => self.on_function_call(&mut msg).await?,
            ClientMsg::Close => self.on_close(&msg).await?,
            ClientMsg::Sync => self.on_sync(&msg),
            ClientMsg::Flush => {
                if self.backend.is_some() {
                    self.bout.extend_from_slice(&msg);
                }
                Handled::Relayed
            }
            ClientMsg::CopyData | ClientMsg::CopyDone | ClientMsg::CopyFail => {
                // Outside COPY these are ignored, as PostgreSQL does.
                if self.backend.is_some() {
                    if kind != ClientMsg::CopyData {
                        self.copy_in = false;
                    }
                    self.bout.extend_from_slice(&msg);
                }
                Handled::Relayed
            }
            ClientMsg::Terminate => Handled::Return(false),
            other @ (ClientMsg::Password | ClientMsg::Other(_)) => {
                self.protocol_violation(
                    "08P01",
                    format!("invalid frontend message type {}", other.byte() as char),
                )
                .await?;
                Handled::Return(false)
            }
        };
        if let Handled::Return(go_on) = handled {
            return Ok(go_on);
        }
        self.keep_for_retry(&msg);
        if self.bout.len() >= OUT_HIGH_WATER {
            self.flush_backend().await?;
        }
        Ok(true)
    }

    fn note_effect(&mut self, effect: session_state::Effect) {
        if effect.pin && !self.pinned {
            tracing::debug!(user = %self.user, "session state: pinned to its server connection");
            self.pinned = true;
        }
        if effect.drops_prepared {
            // The client may DEALLOCATE/DISCARD our statements: forget what this connection has.
            if let Some(b) = self.backend.as_mut() {
                b.prepared.clear();
                b.unnamed = None;
            }
        }
    }
}
