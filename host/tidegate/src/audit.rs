//! Audit: every statement's outcome goes through the chain's `on-audit` hooks, and the records
//! they return are persisted — HMAC-chained, in batches — in an audit table on the primary.
//!
//! Sessions hand events to [`AuditSink::submit`] without waiting; one writer task runs the
//! hooks, links each record to the one before (see [`chain`]) and inserts them. The policy is
//! fail closed: while the table cannot be written, or too many records wait, new statements
//! are refused with 58000 — and no record is dropped; they are written once it recovers.

pub mod chain;
pub mod store;
pub mod verify;

use crate::upstream::backoff::Backoff;
use chain::{ChainKey, Row};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use store::{Store, Written};
use tidegate_config::Config;
use tidegate_plugins::{AuditEvent, AuditRecord, Chain, Principal, TableRef};
use tokio::sync::mpsc;

/// Gives the writer the chain in service (it changes with reloads and plugin swaps).
pub type ChainSource = Arc<dyn Fn() -> Option<Arc<Chain>> + Send + Sync>;

/// The audit pipeline's front door, shared by every session.
pub struct AuditSink {
    tx: mpsc::UnboundedSender<AuditEvent>,
    /// Events submitted and not yet written.
    depth: AtomicUsize,
    cap: usize,
    healthy: AtomicBool,
    /// While the table is unreachable after having been written: since when, and how long
    /// statements may still run (`audit.outage_grace`).
    outage: Mutex<Option<Instant>>,
    grace: Duration,
    last_error: Mutex<Option<String>>,
    /// Records written.
    pub written: AtomicU64,
    /// Failed writes (each retried).
    pub write_failures: AtomicU64,
    /// Batches linked again because another writer sharing the table extended the chain first.
    pub relinked: AtomicU64,
}

impl AuditSink {
    /// Starts the writer for `config`'s `[audit]`, chaining with `key`.
    pub fn start(config: &Config, key: ChainKey, chain: ChainSource) -> Arc<AuditSink> {
        let (tx, rx) = mpsc::unbounded_channel();
        let sink = Arc::new(AuditSink {
            tx,
            depth: AtomicUsize::new(0),
            cap: config.audit.queue,
            healthy: AtomicBool::new(false),
            outage: Mutex::new(None),
            grace: config.audit.outage_grace.duration(),
            last_error: Mutex::new(Some("the audit table is not ready yet".into())),
            written: AtomicU64::new(0),
            write_failures: AtomicU64::new(0),
            relinked: AtomicU64::new(0),
        });
        let writer = Writer {
            sink: sink.clone(),
            store: Store::new(config),
            key,
            chain,
            settings: config.audit.clone(),
        };
        tokio::spawn(writer.run(rx));
        sink
    }

    /// Events submitted and not yet written.
    pub fn queue_depth(&self) -> usize {
        self.depth.load(Relaxed)
    }

    /// Queues an event. Never blocks and never drops: past the queue's size, statements are
    /// refused (see [`AuditSink::available`]) until it drains.
    pub fn submit(&self, event: AuditEvent) {
        self.depth.fetch_add(1, Relaxed);
        if self.tx.send(event).is_err() {
            self.depth.fetch_sub(1, Relaxed);
            tracing::error!("audit writer is gone: an audit event could not be queued");
        }
    }

    /// `Err(why)` when statements must be refused: the table cannot be written, or the queue
    /// is full.
    pub fn available(&self) -> Result<(), String> {
        if !self.healthy.load(Relaxed) && !self.in_grace() {
            let why = self
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .unwrap_or_default();
            return Err(why);
        }
        if self.depth.load(Relaxed) >= self.cap {
            return Err(format!(
                "{} audit records are waiting to be written",
                self.cap
            ));
        }
        Ok(())
    }

    /// For `/readyz` and `/admin/status`: whether statements run (`ready`, else `error` says
    /// why) and the writer's counters.
    pub fn status(&self) -> serde_json::Value {
        let error = self.available().err();
        serde_json::json!({
            "ready": error.is_none(),
            "error": error,
            "queued": self.depth.load(Relaxed),
            "written": self.written.load(Relaxed),
            "write_failures": self.write_failures.load(Relaxed),
            "relinked": self.relinked.load(Relaxed),
        })
    }

    /// Waits (up to `timeout`) until the table is open and writable.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        until(timeout, || self.healthy.load(Relaxed)).await
    }

    /// Waits (up to `timeout`) until every submitted event is written.
    pub async fn flush(&self, timeout: Duration) -> bool {
        until(timeout, || self.depth.load(Relaxed) == 0).await
    }

    /// The table is unreachable, but not for longer than the outage grace.
    fn in_grace(&self) -> bool {
        self.outage
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|since| since.elapsed() < self.grace)
    }

    fn set_health(&self, error: Option<String>) {
        let ok = error.is_none();
        if !ok {
            self.write_failures.fetch_add(1, Relaxed);
        }
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = error;
        *self.outage.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.healthy.store(ok, Relaxed);
    }

    /// A write failed because the table is unreachable: an outage begins (if the table was
    /// being written until now), which statements ride out for the grace period.
    fn set_unreachable(&self, error: String) {
        let mut outage = self.outage.lock().unwrap_or_else(|e| e.into_inner());
        let began = outage.or(self.healthy.load(Relaxed).then(Instant::now));
        self.write_failures.fetch_add(1, Relaxed);
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
        *outage = began;
        self.healthy.store(false, Relaxed);
    }
}

struct Writer {
    sink: Arc<AuditSink>,
    store: Store,
    key: ChainKey,
    chain: ChainSource,
    settings: tidegate_config::Audit,
}

/// Pauses between attempts while the database refuses or is away.
fn retry_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(100), Duration::from_secs(2))
}

impl Writer {
    async fn run(self, mut rx: mpsc::UnboundedReceiver<AuditEvent>) {
        let (mut seq, mut prev) = self.open().await;
        let mut since_checkpoint = 0u64;
        let mut last_checkpoint = Instant::now();
        let flush = self.settings.flush_interval.duration();
        let checkpoint_interval = self.settings.checkpoint_interval.duration();
        let mut events = Vec::with_capacity(self.settings.batch_size);
        // Kept from batch to batch: freeing and allocating them again for every batch costs
        // the allocator more than the rest of the batch's bookkeeping.
        let mut rows: Vec<Row> = Vec::with_capacity(self.settings.batch_size);
        let mut buf = Vec::new();
        loop {
            let got = tokio::select! {
                n = rx.recv_many(&mut events, self.settings.batch_size) => n,
                _ = tokio::time::sleep(checkpoint_interval), if since_checkpoint > 0 => {
                    self.checkpoint(seq, &prev);
                    since_checkpoint = 0;
                    last_checkpoint = Instant::now();
                    continue;
                }
            };
            if got == 0 {
                break; // Every sender is gone.
            }
            if events.len() < self.settings.batch_size {
                // Let the batch gather for `flush_interval`. Meanwhile sessions queue events
                // without waking this task: one wake-up per batch, not one per statement.
                tokio::time::sleep(flush).await;
                while events.len() < self.settings.batch_size {
                    match rx.try_recv() {
                        Ok(e) => events.push(e),
                        Err(_) => break,
                    }
                }
            }
            let records = match (self.chain)() {
                Some(chain) => chain.on_audit(&events).await,
                None => Vec::new(),
            };
            let mut texts = Texts::default();
            rows.clear();
            rows.extend(records.into_iter().map(|(p, r)| row(&mut texts, p, r)));
            self.write(&mut rows, &mut seq, &mut prev, &mut buf).await;
            self.sink.set_health(None);
            self.sink.written.fetch_add(rows.len() as u64, Relaxed);
            self.sink.depth.fetch_sub(events.len(), Relaxed);
            events.clear();
            since_checkpoint += rows.len() as u64;
            if since_checkpoint >= self.settings.checkpoint_every
                || (since_checkpoint > 0 && last_checkpoint.elapsed() >= checkpoint_interval)
            {
                self.checkpoint(seq, &prev);
                since_checkpoint = 0;
                last_checkpoint = Instant::now();
            }
        }
        if since_checkpoint > 0 {
            self.checkpoint(seq, &prev);
        }
    }

    /// Writes `rows`, linked after (`seq`, `prev`), until the table takes them, and moves
    /// (`seq`, `prev`) to their newest. A batch that finds the chain moved on is linked again
    /// after the other writer's newest record; while the table cannot be written, it is retried
    /// (statements are refused meanwhile).
    async fn write(&self, rows: &mut [Row], seq: &mut i64, prev: &mut Vec<u8>, buf: &mut Vec<u8>) {
        self.link(rows, *seq, prev);
        let mut backoff = retry_backoff();
        loop {
            match self.store.insert(rows, *seq, buf).await {
                Ok(Written::Yes) => break,
                Ok(Written::Moved) => {
                    // Another writer extended the chain: continue after its newest record.
                    tracing::info!(
                        after = *seq,
                        "the audit chain moved on (another writer shares the table); relinking"
                    );
                    self.sink.relinked.fetch_add(1, Relaxed);
                    // Only the head is read; the tables are opened again (ensure(), which puts
                    // a deleted head back) only when the head row is gone or cannot be read.
                    (*seq, *prev) = match self.store.last().await {
                        Ok(Some(head)) => head,
                        _ => self.open().await,
                    };
                    self.link(rows, *seq, prev);
                }
                Err(e) if unreachable(&e) => {
                    self.sink
                        .set_unreachable(format!("audit table unreachable: {e}"));
                    tracing::warn!(error = %e, records = rows.len(), "audit table unreachable: records wait (statements run on for audit.outage_grace)");
                    tokio::time::sleep(backoff.pause()).await;
                }
                Err(e) => {
                    self.sink
                        .set_health(Some(format!("audit table unavailable: {e}")));
                    tracing::error!(error = %e, records = rows.len(), "audit records not written yet; statements are refused until they are");
                    tokio::time::sleep(backoff.pause()).await;
                }
            }
        }
        if let Some(last) = rows.last() {
            *seq = last.seq;
            prev.clone_from(&last.hash);
        }
    }

    /// Numbers and seals `rows` after (`seq`, `prev`).
    fn link(&self, rows: &mut [Row], mut seq: i64, prev: &[u8]) {
        let mut prev = prev.to_vec();
        for r in rows.iter_mut() {
            seq += 1;
            r.seq = seq;
            self.key.seal(&prev, r);
            prev.clone_from(&r.hash);
        }
    }

    /// Brings the audit tables up to date (TideGate's migrations) and finds where the chain
    /// stands, retrying until the database answers (statements are refused meanwhile).
    async fn open(&self) -> (i64, Vec<u8>) {
        let mut backoff = retry_backoff();
        loop {
            let r: Result<_, store::StoreError> = async {
                self.store.ensure().await?;
                Ok(self.store.last().await?)
            }
            .await;
            match r {
                Ok(last) => {
                    self.sink.set_health(None);
                    return last.unwrap_or((0, chain::GENESIS.to_vec()));
                }
                Err(e) => {
                    self.sink
                        .set_health(Some(format!("audit table unavailable: {e}")));
                    tracing::error!(error = %e, "cannot open the audit table; statements are refused until it opens");
                    tokio::time::sleep(backoff.pause()).await;
                }
            }
        }
    }

    /// Appends a signed checkpoint to the checkpoint file and syncs it.
    fn checkpoint(&self, seq: i64, hash: &[u8]) {
        if self.settings.checkpoint_file.is_empty() || seq == 0 {
            return;
        }
        let mut line = self.key.checkpoint(seq, hash, now_us());
        line.push('\n');
        // One write of the whole line: writers sharing the file (and the chain) append whole
        // lines, never interleaved halves.
        let r = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.settings.checkpoint_file)
            .and_then(|mut f| {
                f.write_all(line.as_bytes())?;
                f.sync_data()
            });
        if let Err(e) = r {
            tracing::error!(file = %self.settings.checkpoint_file, error = %e, "audit checkpoint not written");
        }
    }
}

/// Polls `done` every 5 ms until it holds or `timeout` passes (start and shutdown only).
/// Whether a write failed because the server is out of reach for now (down, restarting,
/// the connection lost), rather than because it refuses the records.
fn unreachable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // connection_exception, admin/crash shutdown, cannot connect now.
        sqlx::Error::Database(d) => d
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
        _ => false,
    }
}

async fn until(timeout: Duration, done: impl Fn() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while !done() {
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// An audit plugin's labels, as it returned them.
type Labels = Vec<(String, String)>;

/// The text columns of the last record converted: records alike (most of a batch, as a
/// deterministic plugin's answers are reused) share them instead of formatting or copying them
/// again.
#[derive(Default)]
struct Texts {
    plugin: Option<Arc<str>>,
    principal: Option<(Arc<Principal>, [Arc<str>; 3])>,
    labels: Option<(Labels, Arc<str>)>,
    tables: Option<(Arc<[TableRef]>, Arc<str>)>,
}

impl Texts {
    fn plugin(&mut self, plugin: String) -> Arc<str> {
        match &self.plugin {
            Some(p) if **p == *plugin => p.clone(),
            _ => self.plugin.insert(plugin.into()).clone(),
        }
    }

    /// User, role and database.
    fn principal(&mut self, p: &Arc<Principal>) -> [Arc<str>; 3] {
        match &self.principal {
            Some((q, texts)) if Arc::ptr_eq(p, q) => texts.clone(),
            _ => {
                let texts = [
                    p.user.as_str().into(),
                    p.role.as_str().into(),
                    p.database.as_str().into(),
                ];
                self.principal.insert((p.clone(), texts)).1.clone()
            }
        }
    }

    /// The labels as a JSON object, sorted by key, the last of equal keys winning: the stored
    /// text does not depend on the plugin's order.
    fn labels(&mut self, labels: Labels) -> Arc<str> {
        match &self.labels {
            Some((l, json)) if *l == labels => json.clone(),
            _ => {
                let sorted: std::collections::BTreeMap<&str, &str> = labels
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let json = serde_json::to_string(&sorted).unwrap_or_else(|_| "{}".into());
                self.labels.insert((labels, json.into())).1.clone()
            }
        }
    }

    /// The tables as `schema.name,…`.
    fn tables(&mut self, tables: Arc<[TableRef]>) -> Arc<str> {
        match &self.tables {
            Some((t, text)) if Arc::ptr_eq(t, &tables) => text.clone(),
            _ => {
                let text = tables
                    .iter()
                    .map(|t| match &t.schema {
                        Some(s) => format!("{s}.{}", t.name),
                        None => t.name.clone(),
                    })
                    .collect::<Vec<_>>()
                    .join(",");
                self.tables.insert((tables, text.into())).1.clone()
            }
        }
    }
}

fn row(texts: &mut Texts, plugin: String, r: AuditRecord) -> Row {
    let e = r.event;
    let [username, role, database] = texts.principal(&e.principal);
    Row {
        seq: 0,
        at_us: e.at_us,
        plugin: texts.plugin(plugin),
        username,
        role,
        database,
        kind: e.kind.as_str().to_owned(),
        tables: texts.tables(e.tables),
        fingerprint: e.fingerprint,
        decision: e.decision,
        decided_by: e.decided_by,
        rows: i64::try_from(e.rows).unwrap_or(i64::MAX),
        duration_us: i64::try_from(e.duration_us).unwrap_or(i64::MAX),
        sqlstate: e.sqlstate,
        labels: texts.labels(r.labels),
        key_id: 0,
        hash: Vec::new(),
    }
}
