//! Pools of backend connections, one per (database, role, server).
//!
//! A semaphore with `size` permits bounds the connections a pool lends out; a connection
//! carries its permit while a client holds it, and a new one is opened only when none is idle,
//! so `idle + lent <= size` holds and a waiting client is woken in FIFO order as soon as one is
//! returned. A configuration reload resizes a pool in place (its connections survive); a pool
//! whose server left the configuration is retired: its idle connections close at once and lent
//! ones close when they come back, so a transaction open across a reload finishes on its own
//! connection.

use super::conn::{Backend, BackendError, Target};
use crate::clock::Mono;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Prepared statements a pooled connection may hold before it is closed rather than reused.
const MAX_PREPARED_PER_CONNECTION: usize = 1000;

/// ParameterStatus values a server reports at login.
pub type ServerParams = Arc<Vec<(String, String)>>;

/// Identifies a pool.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// Database name.
    pub database: String,
    /// PostgreSQL role the connections log in as.
    pub role: String,
    /// The server's host.
    pub host: String,
    /// The server's port.
    pub port: u16,
}

/// Why no connection could be lent.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// Every connection stayed busy for the whole checkout timeout.
    #[error("checkout timeout: all {size} connections of pool {database}/{role} stayed busy for {waited:?}")]
    CheckoutTimeout {
        /// Pool size.
        size: usize,
        /// Database.
        database: String,
        /// Role.
        role: String,
        /// How long the client waited.
        waited: Duration,
    },
    /// Opening a new connection failed.
    #[error(transparent)]
    Connect(#[from] BackendError),
}

/// Timing settings of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolTimeouts {
    /// Connect and authenticate.
    pub connect: Duration,
    /// Wait for a free connection.
    pub checkout: Duration,
    /// Close idle connections after this long (`None` = never).
    pub idle: Option<Duration>,
    /// Check liveness of connections idle longer than this.
    pub check_after: Duration,
}

/// A pool of connections to one server for one (database, role).
pub struct Pool {
    /// What this pool is for.
    pub key: PoolKey,
    /// How its connections log in.
    pub target: Target,
    /// A replica: bans apply, and idle connections are checked before every use.
    replica: bool,
    size: AtomicUsize,
    timeouts: Mutex<PoolTimeouts>,
    /// `timeouts.check_after` in nanoseconds, read without the lock on every checkout.
    check_after_ns: AtomicU64,
    /// Left the configuration: connections coming back are closed.
    retired: AtomicBool,
    slots: Arc<Semaphore>,
    // Boxed on purpose: a connection moves between this list and a session at every
    // transaction, by pointer rather than by its few hundred bytes.
    #[allow(clippy::vec_box)]
    idle: Mutex<Vec<Box<Backend>>>,
    server_params: Mutex<Option<ServerParams>>,
    /// Statement ids a server of this pool accepted: a client's Parse of one of them can be
    /// answered without a server connection, so PQprepare outside a transaction needs no
    /// checkout (synchronous preparers such as pgbench would otherwise deadlock a small pool).
    valid: Mutex<HashSet<u64>>,
    /// A replica pool is skipped until this instant after a failure.
    banned_until: Mutex<Option<Instant>>,
    /// The server refused the last connection attempt (it may be restarting).
    down: AtomicBool,
    /// Held by the one connection attempt in flight while the server is down.
    reconnecting: tokio::sync::Mutex<()>,
    /// Clients, waits, transactions, logins; PAUSE and RECONNECT (the admin console).
    pub activity: super::Activity,
}

impl Pool {
    fn new(key: PoolKey, target: Target, settings: PoolSettings) -> Self {
        let size = settings.size;
        Pool {
            key,
            target,
            replica: settings.replica,
            size: AtomicUsize::new(size),
            timeouts: Mutex::new(settings.timeouts),
            check_after_ns: AtomicU64::new(nanos(settings.timeouts.check_after)),
            retired: AtomicBool::new(false),
            slots: Arc::new(Semaphore::new(size)),
            idle: Mutex::new(Vec::with_capacity(size)),
            server_params: Mutex::new(None),
            valid: Mutex::new(HashSet::new()),
            banned_until: Mutex::new(None),
            down: AtomicBool::new(false),
            reconnecting: tokio::sync::Mutex::new(()),
            activity: super::Activity::default(),
        }
    }

    #[allow(clippy::vec_box)] // See `idle`.
    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Box<Backend>>> {
        // A panic while holding this lock cannot leave the Vec inconsistent; keep serving.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn timeouts(&self) -> PoolTimeouts {
        *self.timeouts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lends a connection: an idle one if any is alive, else a new one, waiting at most the
    /// checkout timeout for a slot.
    pub async fn checkout(&self) -> Result<Box<Backend>, PoolError> {
        self.checkout_at(None).await
    }

    /// [`Pool::checkout`], given a clock reading the caller just took (a session reads the
    /// clock as its request starts: the pool need not read it again).
    pub async fn checkout_at(&self, now: Option<Mono>) -> Result<Box<Backend>, PoolError> {
        let mut now = now;
        if self.activity.is_paused() {
            Box::pin(self.activity.wait_resumed()).await;
            now = None; // The caller's reading is old now.
        }
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let start = Instant::now();
                let wait = self.timeouts().checkout;
                let waiting = self.activity.waiting();
                // Boxed (waiting is the rare path): every session's future holds room for
                // what it awaits.
                let acquired = Box::pin(tokio::time::timeout(
                    wait,
                    self.slots.clone().acquire_owned(),
                ))
                .await;
                drop(waiting);
                let waited = start.elapsed();
                now = Some(Mono::now());
                self.activity.waited(waited);
                match acquired {
                    Ok(Ok(p)) => p,
                    _ => {
                        return Err(PoolError::CheckoutTimeout {
                            size: self.size.load(Ordering::Relaxed),
                            database: self.key.database.clone(),
                            role: self.key.role.clone(),
                            waited,
                        })
                    }
                }
            }
        };
        let now = now.unwrap_or_else(Mono::now);
        if let Some(mut b) = self.take_idle(now) {
            b.permit = Some(permit);
            b.lent_at = now;
            return Ok(b);
        }
        let login = self.activity.login();
        let mut b = Box::new(self.open().await?);
        drop(login);
        b.epoch = self.activity.epoch();
        self.remember_params(&b);
        b.permit = Some(permit);
        b.lent_at = Mono::now();
        Ok(b)
    }

    /// A connection at once, without waiting or connecting: `None` when the pool is paused,
    /// has no free slot or no live idle connection.
    pub fn try_checkout(&self, now: Mono) -> Option<Box<Backend>> {
        if self.activity.is_paused() {
            return None;
        }
        let permit = self.slots.clone().try_acquire_owned().ok()?;
        let mut b = self.take_idle(now)?;
        b.permit = Some(permit);
        b.lent_at = now;
        Some(b)
    }

    /// The most recently returned idle connection that is still alive.
    fn take_idle(&self, now: Mono) -> Option<Box<Backend>> {
        let check_after = self.check_after_ns.load(Ordering::Relaxed);
        loop {
            let b = self.idle().pop()?;
            // Replicas come and go: their connections are always checked (one non-blocking
            // read); the primary's when the runtime saw them readable (a restart's FATAL) or
            // after sitting idle for a while.
            let check = self.replica
                || b.stream.readable_seen()
                || now.nanos_since(b.idle_since) >= check_after;
            if check && b.is_closed() {
                tracing::debug!(backend = b.id, "pooled connection was closed by the server");
                continue;
            }
            return Some(b);
        }
    }

    /// Opens a connection within the connect timeout. A primary may be restarting: an attempt
    /// it refuses (not listening, starting up, shutting down) is made again after a jittered,
    /// growing pause until the timeout, and while it is down one attempt per pool is in flight.
    /// A replica's failure is final (the read goes elsewhere).
    async fn open(&self) -> Result<Backend, BackendError> {
        let limit = self.timeouts().connect;
        // Boxed: a login's state machine is large, and every session's future would otherwise
        // carry room for it (connecting is rare; sessions are many).
        if self.replica {
            return Box::pin(Backend::connect(&self.target, limit)).await;
        }
        let deadline = Instant::now() + limit;
        let timed_out = || BackendError::Timeout(format!("{:?}", self.target));
        let mut backoff = crate::upstream::backoff::Backoff::new(
            Duration::from_millis(20),
            Duration::from_secs(1),
        );
        loop {
            let gate = if self.down.load(Ordering::Relaxed) {
                let left = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, self.reconnecting.lock()).await {
                    Ok(g) => Some(g),
                    Err(_) => return Err(timed_out()),
                }
            } else {
                None
            };
            let left = deadline.saturating_duration_since(Instant::now());
            match Box::pin(Backend::connect(&self.target, left)).await {
                Ok(b) => {
                    self.down.store(false, Ordering::Relaxed);
                    return Ok(b);
                }
                Err(e) if e.server_unavailable() => {
                    self.down.store(true, Ordering::Relaxed);
                    let wait = backoff.pause();
                    if Instant::now() + wait >= deadline {
                        return Err(e);
                    }
                    tracing::debug!(pool = ?self.key, error = %e, "server unavailable: trying again");
                    // The gate is held through the pause: attempts are spaced, not stacked.
                    tokio::time::sleep(wait).await;
                    drop(gate);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Returns a clean, idle connection to the pool.
    pub fn checkin(&self, b: Box<Backend>) {
        self.checkin_at(b, None);
    }

    /// [`Pool::checkin`], given a clock reading the caller just took.
    pub fn checkin_at(&self, mut b: Box<Backend>, now: Option<Mono>) {
        let now = now.unwrap_or_else(Mono::now);
        self.activity.transaction(now.since(b.lent_at));
        if b.epoch != self.activity.epoch() {
            tracing::debug!(
                backend = b.id,
                "closing a connection opened before RECONNECT"
            );
            return;
        }
        if self.retired.load(Ordering::Relaxed) {
            tracing::debug!(backend = b.id, "closing a connection of a retired pool");
            return;
        }
        if b.prepared.len() > MAX_PREPARED_PER_CONNECTION {
            // Bounds what clients can make a server connection hold; a fresh one replaces it.
            tracing::debug!(
                backend = b.id,
                "closing a connection holding many prepared statements"
            );
            return;
        }
        // The connection must be in the idle list before its slot is freed: otherwise a waiter
        // could take the slot, find no idle connection and open one too many.
        let permit = b.permit.take();
        b.idle_since = now;
        self.idle().push(b);
        drop(permit);
    }

    /// The ParameterStatus values a fresh connection reports, learned from the first one.
    pub async fn server_params(&self) -> Result<ServerParams, PoolError> {
        if let Some(p) = self.cached_params() {
            return Ok(p);
        }
        let b = self.checkout().await?;
        let p = Arc::new(b.params.clone());
        self.checkin(b);
        *self.server_params.lock().unwrap_or_else(|e| e.into_inner()) = Some(p.clone());
        Ok(p)
    }

    fn cached_params(&self) -> Option<ServerParams> {
        self.server_params
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn remember_params(&self, b: &Backend) {
        let mut p = self.server_params.lock().unwrap_or_else(|e| e.into_inner());
        if p.is_none() {
            *p = Some(Arc::new(b.params.clone()));
        }
    }

    /// Skips this pool for `time` (replicas only; the primary is never banned).
    pub fn ban(&self, time: Duration) {
        if self.replica {
            *self.banned_until.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(Instant::now() + time);
        }
    }

    /// Whether the pool is banned now.
    pub fn is_banned(&self) -> bool {
        let mut b = self.banned_until.lock().unwrap_or_else(|e| e.into_inner());
        match *b {
            Some(until) if Instant::now() < until => true,
            Some(_) => {
                *b = None;
                false
            }
            None => false,
        }
    }

    /// Records that a server of this pool accepted statement `id`.
    pub fn mark_valid(&self, id: u64) {
        let mut v = self.valid.lock().unwrap_or_else(|e| e.into_inner());
        if v.len() < crate::upstream::statements::MAX_SHARED {
            v.insert(id);
        }
    }

    /// Whether a server of this pool accepted statement `id`.
    pub fn is_valid(&self, id: u64) -> bool {
        self.valid
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&id)
    }

    /// Closes idle connections past the idle timeout.
    pub fn reap(&self) {
        if let Some(max) = self.timeouts().idle {
            self.idle().retain(|b| b.idle_since.elapsed() < max);
        }
    }

    /// Closes every idle connection (shutdown).
    pub fn close_idle(&self) {
        self.idle().clear();
    }

    /// Number of idle connections.
    pub fn idle_count(&self) -> usize {
        self.idle().len()
    }

    /// The idle connections: (server process id, opened, for how long idle).
    pub fn idle_servers(&self) -> Vec<(i32, Instant, Duration)> {
        let now = Mono::now();
        self.idle()
            .iter()
            .map(|b| (b.key.0, b.created, now.since(b.idle_since)))
            .collect()
    }

    /// RECONNECT: connections open now are closed as they come back (idle ones at once);
    /// new ones replace them.
    pub fn reconnect(&self) {
        self.activity.next_epoch();
        self.close_idle();
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl PoolTimeouts {
    /// The timeouts `[pool]` sets.
    pub fn from_config(p: &tidegate_config::Pool) -> PoolTimeouts {
        PoolTimeouts {
            connect: p.connect_timeout.duration(),
            checkout: p.checkout_timeout.duration(),
            idle: p.idle_timeout.get(),
            check_after: p.check_after.duration(),
        }
    }
}

/// What a configuration decides about a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    /// Connections per pool.
    pub size: usize,
    /// Timing.
    pub timeouts: PoolTimeouts,
    /// The server is a replica.
    pub replica: bool,
}

impl Pool {
    /// Applies new settings in place: a larger size frees slots at once, a smaller one takes
    /// slots back as connections are returned (no connection is cut).
    fn apply(&self, settings: PoolSettings) {
        *self.timeouts.lock().unwrap_or_else(|e| e.into_inner()) = settings.timeouts;
        self.check_after_ns
            .store(nanos(settings.timeouts.check_after), Ordering::Relaxed);
        let old = self.size.swap(settings.size, Ordering::Relaxed);
        if settings.size > old {
            self.slots.add_permits(settings.size - old);
        } else if settings.size < old {
            let shrink = (old - settings.size) as u32;
            let slots = self.slots.clone();
            tokio::spawn(async move {
                if let Ok(p) = slots.acquire_many_owned(shrink).await {
                    p.forget();
                }
            });
            self.idle().truncate(settings.size);
        }
    }

    /// Takes the pool out of service: idle connections close now, lent ones on return.
    fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
        self.close_idle();
    }

    /// Connections lent out now (approximate under concurrency).
    pub fn outstanding(&self) -> usize {
        self.size().saturating_sub(self.slots.available_permits())
    }

    /// Current size.
    pub fn size(&self) -> usize {
        self.size.load(Ordering::Relaxed)
    }
}

/// Every pool, by (database, role, server).
#[derive(Default)]
pub struct Pools {
    pools: Mutex<HashMap<PoolKey, Arc<Pool>>>,
}

impl Pools {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<PoolKey, Arc<Pool>>> {
        self.pools.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The pool for `key`, created on first use with `target`; an existing one takes
    /// `settings` in place, unless its login or role (primary/replica) changed, in which case
    /// it is retired and replaced.
    pub fn get(&self, key: PoolKey, target: Target, settings: PoolSettings) -> Arc<Pool> {
        let mut pools = self.map();
        if let Some(p) = pools.get(&key) {
            if p.target == target && p.replica == settings.replica {
                if p.size() != settings.size || p.timeouts() != settings.timeouts {
                    p.apply(settings);
                }
                return p.clone();
            }
            p.retire();
        }
        let pool = Arc::new(Pool::new(key.clone(), target, settings));
        pools.insert(key, pool.clone());
        pool
    }

    /// Applies a reloaded configuration: `settings` gives each pool's new settings, or `None`
    /// when its server left the configuration (the pool is retired). A pool whose server
    /// changed role (primary/replica) is retired too; sessions make a fresh one.
    pub fn reconfigure(&self, settings: impl Fn(&PoolKey) -> Option<PoolSettings>) {
        self.map().retain(|k, p| match settings(k) {
            Some(s) if s.replica == p.replica => {
                if p.size() != s.size || p.timeouts() != s.timeouts {
                    p.apply(s);
                }
                true
            }
            _ => {
                p.retire();
                false
            }
        });
    }

    /// Every pool.
    pub fn all(&self) -> Vec<Arc<Pool>> {
        self.map().values().cloned().collect()
    }
}
