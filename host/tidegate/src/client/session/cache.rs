//! The result cache on the wire: a cacheable simple query is looked up before it is sent and
//! answered from the cache on a hit; on a miss its reply (RowDescription, DataRows,
//! CommandComplete) is recorded as it is relayed and stored at ReadyForQuery. Statements that
//! may write note which counters to bump; they are bumped when the transaction commits, before
//! the client's ReadyForQuery is sent.

use super::{ClientRead, DirectWrite};
use super::{Result, Session};
use crate::cache::deps;
use crate::cache::flight::Leader;
use crate::cache::key::{initial_scope, next_scope, Key, KeyInput};
use crate::cache::{entry::Entry, Cache, Lookup};
use crate::client::stats::Route;
use crate::wire::kind::{ClientMsg, ServerMsg, TxStatus};
use crate::wire::proto;
use bytes::BytesMut;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tidegate_sql::Kind;

/// A session's cache state.
pub(super) struct SessionCache {
    /// Digest of the session's settings (part of every key).
    scope: [u8; 32],
    /// The session made state no key can describe (a temporary table, procedural code):
    /// it never uses the cache again.
    off: bool,
    /// The reply being recorded (boxed: most sessions never record one).
    fill: Option<Box<Fill>>,
    /// Counters to bump when the current transaction commits.
    dirty: Vec<String>,
    /// The last CommandComplete said ROLLBACK (a transaction that ends so wrote nothing).
    rolled_back: bool,
    /// Counters to bump before the pending ReadyForQuery reaches the client.
    bump_now: Vec<String>,
    /// A reply to store before then (so the client's next identical read finds it).
    store_now: Option<Box<(Fill, Entry)>>,
}

pub(super) struct Fill {
    key: Key,
    /// The client asked for the RowDescription (a simple query, or a Describe of the portal).
    described: bool,
    gens: Vec<u64>,
    ttl: Duration,
    leader: Option<Leader>,
    description: BytesMut,
    body: BytesMut,
    spoiled: bool,
}

impl Fill {
    pub(super) fn new(
        key: Key,
        gens: Vec<u64>,
        ttl: Duration,
        leader: Option<Leader>,
        described: bool,
    ) -> Fill {
        Fill {
            key,
            described,
            gens,
            ttl,
            leader,
            description: BytesMut::new(),
            body: BytesMut::new(),
            spoiled: false,
        }
    }
}

impl SessionCache {
    pub(super) fn new(startup: &[(String, String)]) -> Self {
        SessionCache {
            scope: initial_scope(startup),
            off: false,
            fill: None,
            dirty: Vec::new(),
            rolled_back: false,
            bump_now: Vec::new(),
            store_now: None,
        }
    }

    /// A reply is being recorded for the cache (its query must run on the primary: a lagging
    /// replica's rows must never be stored as current).
    pub(super) fn filling(&self) -> bool {
        self.fill.is_some()
    }

    /// A reply waits to be stored (`cache_store_due`), checked before awaiting anything.
    #[inline]
    pub(super) fn store_due(&self) -> bool {
        self.store_now.is_some()
    }

    /// Invalidations wait to be sent (`cache_bump_due`).
    #[inline]
    pub(super) fn bump_due(&self) -> bool {
        !self.bump_now.is_empty()
    }

    /// Records the reply to the request being sent.
    pub(super) fn start_fill(&mut self, fill: Fill) {
        self.fill = Some(Box::new(fill));
    }

    /// The request will get no reply from a server (no connection): nothing to record.
    pub(super) fn drop_fill(&mut self) {
        self.fill = None;
    }

    /// The reply being recorded cannot be stored (a huge row streamed through, a row hook).
    pub(super) fn spoil(&mut self) {
        if let Some(f) = self.fill.as_mut() {
            f.spoiled = true;
        }
    }
}

impl<R, W> Session<R, W>
where
    R: ClientRead,
    W: DirectWrite,
{
    pub(super) fn result_cache(&self) -> Option<Arc<Cache>> {
        if !self.topo.config.cache.enabled {
            return None;
        }
        crate::client::shared::result_cache(&self.sh)
    }

    /// Before a Bind is sent: a statement that changes session state (a prepared `SET`,
    /// `RESET`, `set_config(…)`) moves the settings digest by its text and the Bind (its
    /// parameters), as a simple query's does by its text.
    pub(super) fn cache_note_state_bind(&mut self, msg: &[u8]) {
        let mut r = crate::wire::proto::Reader::new(&msg[crate::wire::proto::HEADER_LEN..]);
        let (Some(_portal), Some(name)) = (r.cstr(), r.cstr()) else {
            return;
        };
        let stmt = match name {
            [] => self.unnamed.as_ref(),
            name => self.stmts.get(name),
        };
        let Some(stmt) = stmt.filter(|s| s.effect.pin) else {
            return;
        };
        let opaque = tidegate_sql::session_state::scan(&stmt.body).opaque;
        let scope = next_scope(&self.cache.scope, &stmt.body);
        self.cache.scope = next_scope(&scope, msg);
        self.cache.off |= opaque;
    }

    /// Before a simple query is sent: notes its writes and session effects, and answers it
    /// from the cache when it can. Returns whether it was answered.
    pub(super) async fn cache_query(
        &mut self,
        sql: &[u8],
        fp: tidegate_sql::Fingerprint,
        effect: tidegate_sql::session_state::Effect,
    ) -> Result<bool> {
        let Some(cache) = self.result_cache() else {
            return Ok(false);
        };
        let Ok(text) = std::str::from_utf8(sql) else {
            return Ok(false);
        };
        if self.pending.is_empty() && is_show_cache(text) {
            show_cache(&mut self.out, &cache, self.tx_status);
            self.request_done(Route::Broker, None);
            return Ok(true);
        }
        let class = self
            .catalog
            .classes
            .classify_fingerprinted(text, fp, &self.catalog.lookup);
        if class.kind == Kind::Session || effect.pin {
            self.cache.off |= effect.opaque;
            self.cache.scope = next_scope(&self.cache.scope, sql);
        }
        if !(class.kind == Kind::Read && class.read_only) {
            self.note_writes(&cache, text, &class);
            return Ok(false);
        }
        if !self.pending.is_empty() || !self.cache_admits(&cache, fp) {
            return Ok(false);
        }
        let Some(deps) = self.cache_plan(&cache, text, fp, &class, &[]).await else {
            return Ok(false);
        };
        let key = self.cache_key(ClientMsg::Query, sql, &[], &[], &[]);
        match cache.lookup(&self.topo.config.cache, key, &deps.gens).await {
            Lookup::Hit(e) => {
                cache.admission.record(fp.0, true);
                self.serve_hit(&cache, &e, false);
                Ok(true)
            }
            Lookup::Miss { gens, leader } => {
                cache.admission.record(fp.0, false);
                self.cache
                    .start_fill(Fill::new(key, gens, deps.ttl, leader, true));
                Ok(false)
            }
            Lookup::Bypass => Ok(false),
        }
    }

    /// Whether reads of shape `fp` are worth a cache lookup now (`cache.admission`); a read
    /// that is not runs as if the cache were off (and may use a replica).
    pub(super) fn cache_admits(&self, cache: &Cache, fp: tidegate_sql::Fingerprint) -> bool {
        let adaptive = self.topo.config.cache.admission == tidegate_config::Admission::Adaptive;
        let admitted = cache.admission.admit(fp.0, adaptive);
        if !admitted {
            cache.stats.unadmitted.fetch_add(1, Relaxed);
        }
        admitted
    }

    /// The dependencies of a read the cache may answer, or `None` (counted as a bypass when
    /// it is a read the cache cannot take).
    pub(super) async fn cache_plan(
        &self,
        cache: &Arc<Cache>,
        text: &str,
        fp: tidegate_sql::Fingerprint,
        class: &tidegate_sql::Classification,
        params: &[Option<&str>],
    ) -> Option<deps::ReadDeps> {
        let config = &self.topo.config;
        if self.cache.off
            || self.copy_in
            || (!self.tx_status.is_idle() && !config.cache.in_transactions)
            || matches!(self.tx_status, TxStatus::Failed)
            || self.touches_declared_columns(class)
        {
            return None;
        }
        let db = &self.login.database;
        let rels = match cache.relations.get(config, db, false) {
            Some(r) => r,
            None => {
                cache.listen(config, db).await;
                cache.relations.load(config, db).await?
            }
        };
        match deps::read_deps(&config.cache, db, text, class, &rels, params, fp.0) {
            Ok(d) => Some(d),
            Err(why) => {
                if why == "unknown relation" {
                    cache.relations.get(config, db, true);
                }
                cache.stats.bypasses.fetch_add(1, Relaxed);
                None
            }
        }
    }

    /// The key of `sql` run by this session with these parameters and formats.
    pub(super) fn cache_key(
        &self,
        protocol: ClientMsg,
        sql: &[u8],
        params: &[Option<&[u8]>],
        param_formats: &[i16],
        result_formats: &[i16],
    ) -> Key {
        KeyInput {
            protocol,
            database: &self.login.database,
            user: &self.user,
            role: &self.login.user,
            scope: &self.cache.scope,
            sql,
            params,
            param_formats,
            result_formats,
        }
        .key()
    }

    /// Answers the request from `e`: BindComplete first for a Bind, then the recorded reply
    /// and ReadyForQuery.
    pub(super) fn serve_hit(&mut self, cache: &Cache, e: &Entry, bind: bool) {
        self.drain_synthetic();
        if bind {
            proto::simple(&mut self.out, ServerMsg::BindComplete, &[]);
            self.audit_execute();
        }
        self.out.extend_from_slice(&e.description);
        self.out.extend_from_slice(&e.body);
        for m in messages(&e.body).filter(|m| ServerMsg::of(m[0]) == ServerMsg::CommandComplete) {
            if self.audit.is_some() {
                self.audit_complete(m);
            }
            self.measure_complete(&m[proto::HEADER_LEN..], Route::Cache);
        }
        proto::ready(&mut self.out, self.tx_status);
        self.request_done(Route::Cache, None);
        cache.stats.bytes_served.fetch_add(e.len() as u64, Relaxed);
    }

    /// The counters a Parse's statement bumps each time it is executed (`None` for none).
    pub(super) fn cache_write_gens(&self, sql: &[u8]) -> Option<Arc<[String]>> {
        let cache = self.result_cache()?;
        let text = std::str::from_utf8(sql).ok()?;
        let class = self.catalog.classes.classify(text, &self.catalog.lookup);
        if class.kind == Kind::Read && class.read_only {
            return None;
        }
        let db = &self.login.database;
        let rels = cache.relations.get(&self.topo.config, db, false);
        let gens = deps::write_gens(&self.topo.config.cache, db, text, &class, rels.as_deref());
        if class.kind == Kind::Ddl {
            cache.relations.invalidate(&self.topo.config, db);
        }
        (!gens.is_empty()).then(|| gens.into())
    }

    /// A Bind of a statement whose execution writes.
    pub(super) fn cache_note_bind(&mut self, gens: &[String]) {
        self.cache.dirty.extend_from_slice(gens);
    }

    fn note_writes(&mut self, cache: &Cache, text: &str, class: &tidegate_sql::Classification) {
        let db = &self.login.database;
        let rels = cache.relations.get(&self.topo.config, db, false);
        let gens = deps::write_gens(&self.topo.config.cache, db, text, class, rels.as_deref());
        if class.kind == Kind::Ddl || gens.iter().any(|g| g == deps::EPOCH) {
            cache.relations.invalidate(&self.topo.config, db);
        }
        self.cache.dirty.extend(gens);
    }

    fn touches_declared_columns(&self, class: &tidegate_sql::Classification) -> bool {
        let Some(chain) = self.topo.plugins.as_ref() else {
            return false;
        };
        class
            .tables
            .iter()
            .any(|t| chain.declares_table(&self.user, &self.login.database, &t.name))
    }

    /// Whether `cache_capture` has anything to do with a `kind` reply: a result is being
    /// filled, or it is a completion (a ROLLBACK's decides what a commit invalidates).
    pub(super) fn cache_watches(&self, kind: ServerMsg) -> bool {
        kind == ServerMsg::CommandComplete || self.cache.fill.is_some()
    }

    /// A message of the reply to the front request, as it is relayed.
    pub(super) fn cache_capture(&mut self, kind: ServerMsg, msg: &[u8]) {
        if kind == ServerMsg::CommandComplete {
            self.cache.rolled_back = msg.get(proto::HEADER_LEN..) == Some(b"ROLLBACK\0");
        }
        let Some(f) = self.cache.fill.as_mut() else {
            return;
        };
        if f.spoiled {
            return;
        }
        match kind {
            ServerMsg::RowDescription if f.described && self.row_plan.is_none() => {
                f.description.extend_from_slice(msg)
            }
            ServerMsg::DataRow | ServerMsg::CommandComplete => f.body.extend_from_slice(msg),
            // ParseComplete, BindComplete, notices and parameter changes are not the result.
            ServerMsg::ParseComplete
            | ServerMsg::BindComplete
            | ServerMsg::Notice
            | ServerMsg::ParameterStatus => {}
            _ => f.spoiled = true,
        }
        if f.description.len() + f.body.len() > self.topo.config.cache.max_result_bytes
            || (kind == ServerMsg::RowDescription && self.row_plan.is_some())
        {
            f.spoiled = true;
            f.description = BytesMut::new();
            f.body = BytesMut::new();
        }
    }

    /// ReadyForQuery for a client request arrived with transaction `status`: the recorded
    /// reply is stored, and a committed transaction's counters are due.
    pub(super) fn cache_ready(&mut self, status: TxStatus) {
        if let Some(mut f) = self.cache.fill.take() {
            if !f.spoiled {
                let entry = Entry {
                    gens: std::mem::take(&mut f.gens),
                    description: std::mem::take(&mut f.description).freeze(),
                    body: std::mem::take(&mut f.body).freeze(),
                };
                self.cache.store_now = Some(Box::new((*f, entry)));
            }
        }
        if status.is_idle() && !self.cache.dirty.is_empty() {
            let mut gens = std::mem::take(&mut self.cache.dirty);
            if !self.cache.rolled_back {
                gens.sort_unstable();
                gens.dedup();
                self.cache.bump_now.extend(gens);
            }
        }
        self.cache.rolled_back = false;
    }

    /// Bumps the counters of transactions that just committed, before their ReadyForQuery is
    /// written to the client.
    pub(super) async fn cache_bump_due(&mut self) {
        if self.cache.bump_now.is_empty() {
            return;
        }
        // Boxed: its backend futures would otherwise enlarge every session's future.
        Box::pin(self.cache_bump()).await;
    }

    async fn cache_bump(&mut self) {
        let gens = std::mem::take(&mut self.cache.bump_now);
        if let Some(cache) = self.result_cache() {
            cache
                .invalidate(&self.topo.config, &self.login.database, &gens)
                .await;
        }
    }

    /// Stores the reply recorded for the cache, once the client has it: the client never
    /// waits for the backend's round trip. Reads of the same key by other sessions meanwhile
    /// get the entry from its flight; this session's next message waits for the store.
    pub(super) async fn cache_store_due(&mut self) {
        let Some(stored) = self.cache.store_now.take() else {
            return;
        };
        let Some(cache) = self.result_cache() else {
            return;
        };
        let (f, entry) = *stored;
        // Boxed: its backend futures would otherwise enlarge every session's future.
        Box::pin(cache.store(&self.topo.config.cache, f.key, entry, f.ttl, f.leader)).await;
    }

    /// The server connection was lost: whatever was written may have committed.
    pub(super) fn cache_connection_lost(&mut self) {
        self.cache.fill = None;
        let gens = std::mem::take(&mut self.cache.dirty);
        if let (false, Some(cache)) = (gens.is_empty(), self.result_cache()) {
            let (config, db) = (self.topo.config.clone(), self.login.database.clone());
            tokio::spawn(async move { cache.invalidate(&config, &db, &gens).await });
        }
    }
}

fn is_show_cache(text: &str) -> bool {
    let t = text.trim().trim_end_matches(';').trim();
    t.eq_ignore_ascii_case("show tidegate.cache")
}

/// `SHOW tidegate.cache`: the backend and the counters, one row each.
fn show_cache(out: &mut BytesMut, cache: &Cache, status: TxStatus) {
    let mut rows = vec![vec![
        Some("backend".to_owned()),
        Some(cache.backend_name().to_owned()),
    ]];
    rows.extend(
        cache
            .stats
            .snapshot()
            .into_iter()
            .map(|(k, v)| vec![Some(k.to_owned()), Some(v.to_string())]),
    );
    proto::text_result(out, &["name", "value"], &rows, "SHOW");
    proto::ready(out, status);
}

/// The messages in a run of complete messages.
fn messages(mut buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let len = u32::from_be_bytes(buf.get(1..5)?.try_into().ok()?) as usize;
        let (m, rest) = buf.split_at_checked(1 + len)?;
        buf = rest;
        Some(m)
    })
}
