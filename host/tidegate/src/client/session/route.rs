//! Which node a transaction goes to: a healthy replica only when every statement it starts
//! with is provably read-only (tidegate-sql), outside transactions and pinned sessions;
//! everything else, and everything doubtful, to the primary.

use super::params::replay_sql;
use super::{timed, Pending, Result, Session, Stmt};
use super::{ClientRead, DirectWrite};
use crate::client::shared::Shared;
use crate::upstream::backend::{
    Backend, Pool, PoolError, PoolKey, PoolSettings, PoolTimeouts, SharedKeys, Target,
};
use crate::upstream::catalog::DbCatalog;
use crate::upstream::topology::Topology;
use crate::wire::kind::{ClientMsg, Field, NameKind};
use crate::wire::proto::{self, Reader, Severity};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tidegate_config::{Balance, Config, ReadYourWrites};
use tidegate_sql::TxControl;

/// A leading comment that forces the primary.
const PRIMARY_HINT: &[u8] = b"/* tidegate:primary */";

/// Recognizes `SET tidegate.route = 'primary' | 'any'` (also `TO`, unquoted, a trailing `;`)
/// and `RESET tidegate.route`; returns whether reads must stay on the primary.
pub(super) fn route_setting(sql: &[u8]) -> Option<bool> {
    // Every query passes here: look no further unless its first three letters are SET's or
    // RESET's, in either case (the exact words are matched below).
    let first = sql.trim_ascii_start().get(..3)?;
    if !first.eq_ignore_ascii_case(b"set") && !first.eq_ignore_ascii_case(b"res") {
        return None;
    }
    let text = std::str::from_utf8(sql)
        .ok()?
        .trim()
        .trim_end_matches(';')
        .trim();
    let lower = text.to_ascii_lowercase();
    if lower == "reset tidegate.route" {
        return Some(false);
    }
    let rest = lower.strip_prefix("set")?;
    let rest = rest.trim_start();
    let rest = rest.strip_prefix("session").map_or(rest, str::trim_start);
    let rest = rest.strip_prefix("tidegate.route")?.trim_start();
    let value = rest
        .strip_prefix('=')
        .or_else(|| rest.strip_prefix("to"))?
        .trim()
        .trim_matches('\'');
    match value {
        "primary" => Some(true),
        "any" | "default" => Some(false),
        _ => None,
    }
}

/// What a client must not miss of its own writes.
#[derive(Debug, Clone, Copy)]
pub(super) enum Ryw {
    /// Nothing to wait for.
    Clear,
    /// Only nodes that replayed this WAL position may serve its reads.
    Lsn(u64),
    /// Its reads stay on the primary until then.
    Until(Instant),
}

/// The login for `user` on `database` under `config`: the primary's address and the role the
/// user acts as (`None` when the user is not configured).
pub fn login_target(config: &Config, user: &str, database: &str) -> Option<Target> {
    let user_cfg = config.user(user)?;
    let upstream = &config.upstream.primary;
    let role = user_cfg.role(upstream).to_owned();
    let password = if role == upstream.user {
        upstream.password.clone()
    } else {
        user_cfg.role_password.clone()
    };
    Some(Target {
        host: upstream.host.clone(),
        port: upstream.port,
        user: role,
        database: database.to_owned(),
        password,
        keys: None,
        tls: crate::upstream::backend::UpstreamTls::for_server(upstream),
    })
}

/// Where a session of `user`, a role PostgreSQL authenticated through `auth_query`, logs in:
/// as that role, with the keys its clients' SCRAM proofs gave (no password).
pub fn passthrough_target(config: &Config, user: &str, database: &str, keys: SharedKeys) -> Target {
    let upstream = &config.upstream.primary;
    Target {
        host: upstream.host.clone(),
        port: upstream.port,
        user: user.to_owned(),
        database: database.to_owned(),
        password: None,
        keys: Some(keys),
        tls: crate::upstream::backend::UpstreamTls::for_server(upstream),
    }
}

/// One pool per node of `topo` for `login`'s (database, role): the primary first.
pub fn pools_for(sh: &Shared, topo: &Topology, login: &Target) -> Vec<Arc<Pool>> {
    let p = &topo.config.pool;
    let timeouts = PoolTimeouts::from_config(p);
    topo.nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let target = Target {
                host: node.host.clone(),
                port: node.port,
                ..login.clone()
            };
            let key = PoolKey {
                database: login.database.clone(),
                role: login.user.clone(),
                host: node.host.clone(),
                port: node.port,
            };
            let settings = PoolSettings {
                size: p.size,
                timeouts,
                replica: i != 0,
            };
            sh.pools.get(key, target, settings)
        })
        .collect()
}

/// The function catalog of `database` under `topo`: the complete one if `pg_proc` was read,
/// else the partial one while a background task reads it (only needed when replicas or
/// plugins are configured: classification serves routing and policy).
pub(crate) fn catalog_for(
    topo: &Arc<Topology>,
    database: &str,
    primary: &Arc<Pool>,
) -> Arc<DbCatalog> {
    if let Some(c) = topo.catalogs.get(database) {
        return c;
    }
    if topo.has_replicas() || topo.plugins.is_some() {
        let (topo, database, pool) = (topo.clone(), database.to_owned(), primary.clone());
        tokio::spawn(async move {
            topo.catalogs.load(&database, &pool).await;
        });
    }
    topo.catalogs.partial()
}

/// The read-your-writes mode of `user`.
pub(crate) fn ryw_mode(config: &Config, user: &str) -> ReadYourWrites {
    config
        .user(user)
        .and_then(|u| u.read_your_writes)
        .unwrap_or(config.routing.read_your_writes)
}

impl<R, W> Session<R, W>
where
    R: ClientRead,
    W: DirectWrite,
{
    /// Moves to the configuration in force if a reload replaced this session's. Only called
    /// with no server connection attached, so no transaction ever changes servers.
    pub(super) fn refresh_topology(&mut self) {
        if self.sh.generation() == self.topo.generation || self.backend.is_some() {
            if !self.catalog.complete && self.topo.has_replicas() {
                if let Some(c) = self.topo.catalogs.get(&self.login.database) {
                    self.catalog = c;
                }
            }
            return;
        }
        let topo = self.sh.topology();
        if let Some(login) = login_target(&topo.config, &self.user, &self.login.database) {
            self.login = login;
        }
        self.pools = pools_for(&self.sh, &topo, &self.login);
        self.pool = self.pools[0].clone();
        self.cancel
            .retarget(self.pools.iter().map(|p| p.target.clone()).collect());
        self.ryw_mode = ryw_mode(&topo.config, &self.user);
        self.timed = timed(&topo.config);
        self.plain = super::plain::lane_open(&topo, self.pools.len());
        self.attached = 0;
        self.principal = None;
        self.catalog = catalog_for(&topo, &self.login.database, &self.pools[0]);
        self.topo = topo;
    }

    /// Whether replicas may be considered at all for the next transaction.
    fn routing_possible(&self) -> bool {
        !self.primary_only && self.pools.len() > 1 && !self.pinned && self.tx_status.is_idle()
    }

    /// Records the end of a transaction that ran on the primary and may have written: the
    /// client's reads must see it. In `lsn` mode this asks the primary, on the connection just
    /// used, for its WAL insert position (the client already has its reply). Returns whether the
    /// connection is still fit for reuse.
    pub(super) async fn note_write(&mut self, b: &mut Backend) -> bool {
        let window = self.topo.config.routing.read_your_writes_window.duration();
        let mut reusable = true;
        self.ryw = match self.ryw_mode {
            ReadYourWrites::Off => Ryw::Clear,
            ReadYourWrites::Window => Ryw::Until(Instant::now() + window),
            ReadYourWrites::Lsn => {
                let _ = self.flush_client().await;
                let timeout = self.topo.config.pool.connect_timeout.duration();
                b.unnamed = None;
                // The insert position, not the write position: with synchronous_commit off
                // the commit record may not be written yet, but it is always inserted, so a
                // replica that replayed this far has the commit.
                let asked = tokio::time::timeout(
                    timeout,
                    b.query_row("SELECT pg_current_wal_insert_lsn()::text"),
                )
                .await;
                let lsn = match asked {
                    Ok(Ok(Some(row))) => row
                        .first()
                        .and_then(|v| v.as_deref())
                        .and_then(crate::upstream::health::parse_lsn),
                    Ok(Ok(None)) => None,
                    _ => {
                        reusable = false;
                        None
                    }
                };
                match lsn {
                    Some(lsn) => Ryw::Lsn(lsn),
                    // Position unknown: fall back to the time window.
                    None => Ryw::Until(Instant::now() + window.max(Duration::from_secs(1))),
                }
            }
        };
        reusable
    }

    /// A healthy replica for a read, or `None` for the primary: round-robin or fewest
    /// connections lent, never the writer, a banned or lagging node, or one that may not have
    /// the client's last write.
    pub(super) fn pick_replica(&mut self) -> Option<usize> {
        let nodes = self.pools.len();
        if nodes < 2 {
            return None;
        }
        let need_lsn = match self.ryw {
            Ryw::Clear => None,
            Ryw::Lsn(l) => Some(l),
            Ryw::Until(t) if Instant::now() < t => {
                self.sh.stats.ryw_redirects.fetch_add(1, Relaxed);
                return None;
            }
            Ryw::Until(_) => {
                self.ryw = Ryw::Clear;
                None
            }
        };
        // Any node but the writer may serve reads: after a promotion the old primary's slot
        // may hold a replica.
        let writer = self.topo.writer();
        let least = self.topo.config.routing.balance == Balance::LeastOutstanding;
        self.next_replica = self.next_replica.wrapping_add(1);
        let mut best: Option<(usize, usize)> = None;
        let mut held_back = false;
        // Rotate over the candidates (every node but the writer) so each gets an equal turn.
        let candidates = nodes - 1;
        for i in 0..candidates {
            let k = (self.next_replica + i) % candidates;
            let node = if k >= writer { k + 1 } else { k };
            // Node 0 is only read from once the monitor has seen it as a healthy standby.
            let h = &self.topo.nodes[node].health;
            let lagging = h.lagging.load(Relaxed) || (node == 0 && !h.standby.load(Relaxed));
            if lagging || self.pools[node].is_banned() {
                continue;
            }
            if need_lsn.is_some_and(|l| h.replay_lsn.load(Relaxed) < l) {
                held_back = true;
                continue;
            }
            if !least {
                return Some(node);
            }
            let lent = self.pools[node].outstanding();
            if best.is_none_or(|(_, b)| lent < b) {
                best = Some((node, lent));
            }
        }
        if best.is_none() {
            let counter = if held_back {
                &self.sh.stats.ryw_redirects
            } else {
                &self.sh.stats.no_replica
            };
            counter.fetch_add(1, Relaxed);
        }
        best.map(|(node, _)| node)
    }

    /// Attaches a server connection if none is — from a healthy replica when `read_only`, else
    /// from the primary; on failure the client gets the error (and ReadyForQuery for a simple
    /// query) and `false`.
    pub(super) async fn attach(&mut self, simple_query: bool, read_only: bool) -> Result<bool> {
        if self.backend.is_some() {
            return Ok(true);
        }
        let mut checkout = None;
        if read_only {
            while let Some(node) = self.pick_replica() {
                match self.pools[node].checkout_at(self.clock.take()).await {
                    Ok(b) => {
                        checkout = Some((node, Ok(b)));
                        break;
                    }
                    Err(e) => {
                        // Nothing was sent yet, so the primary can take the read instead.
                        tracing::warn!(node = %self.topo.nodes[node].addr(), error = %e, "replica unavailable: banned");
                        self.ban(node);
                    }
                }
            }
        }
        let from_replica = checkout.is_some();
        let (node, result) = match checkout {
            Some(c) => c,
            None => {
                // The writable node: the configured primary, or a promoted replica.
                let writer = self.topo.writer();
                (
                    writer,
                    self.pools[writer].checkout_at(self.clock.take()).await,
                )
            }
        };
        match result {
            Ok(b) => {
                self.attached_to(b, node, from_replica, read_only);
                Ok(true)
            }
            Err(e) => {
                self.no_connection(&e, simple_query);
                Ok(false)
            }
        }
    }

    /// Takes `b`, checked out from `node`, as the attached connection; the client's settings
    /// are replayed on it first when it holds others.
    pub(super) fn attached_to(
        &mut self,
        mut b: Box<Backend>,
        node: usize,
        from_replica: bool,
        read_only: bool,
    ) {
        self.attached = node;
        self.on_replica = from_replica;
        // Read-your-writes follows what needed the primary, not reads that fell back.
        self.wrote = !self.on_replica && !read_only && self.pools.len() > 1;
        let stats = &self.topo.nodes[node].stats;
        if read_only {
            stats.reads.fetch_add(1, Relaxed);
        } else {
            stats.writes.fetch_add(1, Relaxed);
        }
        self.client_touched = false;
        self.out_mark = self.out.len();
        self.replay.clear();
        self.server_fatal = None;
        self.completed = false;
        self.keep_replay = self.tx_status.is_idle() && !self.pinned && self.lost_tx.is_none();
        // Sessions that sent the same settings share them (`params::shared`): one pointer
        // comparison in the common case.
        if !Arc::ptr_eq(&b.gucs, &self.gucs) && *b.gucs != *self.gucs {
            let sql = replay_sql(&self.gucs);
            proto::query(&mut self.bout, &sql);
            self.pending.push_back(Pending::Query { visible: false });
            // A simple query drops the unnamed statement; the applied settings are recorded
            // only once the replay succeeded (replies.rs).
            b.unnamed = None;
            b.gucs = Arc::new([]);
        }
        if self.lost_tx.is_some() {
            // The client is in a transaction that failed with its last connection: this one
            // gets a failed transaction too, so that every reply is PostgreSQL's own.
            proto::query(&mut self.bout, &super::retry::reopen_sql());
            self.pending.push_back(Pending::Reopen);
            b.unnamed = None;
        }
        self.cancel.attach(b.key, node);
        self.backend = Some(b);
    }

    /// No server connection could be had: the client gets the error (and ReadyForQuery for a
    /// simple query; an extended batch is skipped to its Sync).
    fn no_connection(&mut self, e: &PoolError, simple_query: bool) {
        let code = match e {
            PoolError::CheckoutTimeout { .. } => "53300",
            PoolError::Connect(_) => "08006",
        };
        tracing::warn!(user = %self.user, error = %e, "no server connection");
        let msg = match e {
            PoolError::Connect(crate::upstream::backend::BackendError::Refused(raw)) => {
                let m = proto::fields(raw)
                    .find(|(k, _)| *k == Field::Message)
                    .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default();
                format!("upstream refused the connection: {m}")
            }
            _ => e.to_string(),
        };
        self.drain_synthetic();
        self.cache.drop_fill();
        proto::error(&mut self.out, Severity::Error, code, &msg);
        self.measure_error(code.as_bytes());
        if simple_query {
            proto::ready(&mut self.out, self.tx_status);
            self.request_done(
                crate::client::stats::Route::Broker,
                <[u8; 5]>::try_from(code.as_bytes()).ok(),
            );
        } else {
            self.skip_until_sync = true;
        }
    }

    /// Bans replica `node` for `routing.ban_time`.
    pub(super) fn ban(&self, node: usize) {
        self.pools[node].ban(self.topo.config.routing.ban_time.duration());
        self.topo.nodes[node].stats.bans.fetch_add(1, Relaxed);
    }

    /// Whether `sql` (a statement text) is provably read-only, or starts a READ ONLY
    /// transaction. Only computed when replicas are configured.
    pub(super) fn sql_read_only(&self, sql: &[u8], fp: tidegate_sql::Fingerprint) -> bool {
        if self.pools.len() < 2 {
            return false;
        }
        let trimmed = sql.trim_ascii_start();
        if trimmed.starts_with(PRIMARY_HINT) {
            return false;
        }
        let Ok(text) = std::str::from_utf8(sql) else {
            return false;
        };
        let catalog = &self.catalog;
        let c = catalog
            .classes
            .classify_fingerprinted(text, fp, &catalog.lookup);
        c.read_only || c.tx == Some(TxControl::Begin { read_only: true })
    }

    /// Routing for a simple query about to start a transaction.
    pub(super) fn route_read_only(&self, sql: &[u8], fp: tidegate_sql::Fingerprint) -> bool {
        self.routing_possible() && self.sql_read_only(sql, fp)
    }

    /// Routing for an extended-protocol batch whose first message has read-only-ness `first`
    /// (and, for a Parse, defines statement `parsed`): the rest of the batch, up to its Sync,
    /// must already be buffered and read-only too.
    pub(super) fn batch_read_only(&self, first: bool, parsed: Option<&[u8]>) -> bool {
        if !first || !self.routing_possible() {
            return false;
        }
        let buf = &self.rbuf[..];
        let mut pos = 0;
        // The unnamed statement as this batch redefines it.
        let mut unnamed: Option<bool> = self.unnamed.as_ref().map(|s| s.read_only);
        // Named statements this batch parses (all read-only so far, or we would have stopped).
        let mut named_here: Vec<&[u8]> = Vec::new();
        match parsed {
            Some([]) => unnamed = Some(true),
            Some(name) => named_here.push(name),
            None => {}
        }
        loop {
            let Ok(Some(h)) = proto::header(&buf[pos..], self.topo.config.limits.max_message_bytes)
            else {
                return false; // The batch is not all here: the primary is always safe.
            };
            let Some(msg) = buf.get(pos..pos + h.total) else {
                return false;
            };
            let mut r = Reader::new(&msg[proto::HEADER_LEN..]);
            let ok = match h.client() {
                ClientMsg::Sync => return true,
                ClientMsg::Execute | ClientMsg::Flush => true,
                ClientMsg::Parse => match (r.cstr(), r.cstr()) {
                    (Some(name), Some(query)) => {
                        let ro = self.pools.len() >= 2
                            && self.sql_read_only(query, tidegate_sql::fingerprint(query));
                        if name.is_empty() {
                            unnamed = Some(ro);
                        } else if ro {
                            named_here.push(name);
                        }
                        ro
                    }
                    _ => false,
                },
                ClientMsg::Bind => match (r.cstr(), r.cstr()) {
                    (Some(_), Some(stmt)) => {
                        named_here.contains(&stmt) || self.named_read_only(stmt, unnamed)
                    }
                    _ => false,
                },
                ClientMsg::Describe => match (r.u8().map(NameKind::of), r.cstr()) {
                    (Some(NameKind::Statement), Some(stmt)) => {
                        named_here.contains(&stmt) || self.named_read_only(stmt, unnamed)
                    }
                    (Some(NameKind::Portal), Some(_)) => true,
                    _ => false,
                },
                _ => false,
            };
            if !ok {
                return false;
            }
            pos += h.total;
        }
    }

    fn named_read_only(&self, name: &[u8], unnamed: Option<bool>) -> bool {
        if name.is_empty() {
            unnamed.unwrap_or(false)
        } else {
            self.stmts.get(name).is_some_and(|s: &Stmt| s.read_only)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::route_setting;

    #[test]
    fn the_route_setting_is_recognized() {
        assert_eq!(route_setting(b"SET tidegate.route = 'primary'"), Some(true));
        assert_eq!(route_setting(b"set tidegate.route to any;"), Some(false));
        assert_eq!(
            route_setting(b"SET SESSION tidegate.route = primary"),
            Some(true)
        );
        assert_eq!(route_setting(b"RESET tidegate.route"), Some(false));
        assert_eq!(route_setting(b" \n\treset tidegate.route"), Some(false));
        assert_eq!(route_setting(b"  Set tidegate.route = any"), Some(false));
        assert_eq!(route_setting(b""), None);
        assert_eq!(route_setting(b"   "), None);
        assert_eq!(route_setting(b"SELECT 1"), None);
        assert_eq!(route_setting(b"SET tidegate.route = 'elsewhere'"), None);
        assert_eq!(route_setting(b"SET search_path = x"), None);
        assert_eq!(
            route_setting(b"SET tidegate.route = 'primary'; SELECT 1"),
            None
        );
    }
}
