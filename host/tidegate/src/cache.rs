//! The result cache: replies of provably cacheable reads, stored as wire messages and replayed
//! without touching PostgreSQL, in Redis (shared by every TideGate instance using it) or in
//! process.
//!
//! Safety comes first:
//! - a key covers everything that decides the reply's bytes ([`key`]): statement text,
//!   parameters, formats, database, login role and the session's settings;
//! - an entry records the generation counters of what it read ([`deps`]) when its query was
//!   sent, and is served only while they are unchanged; writes bump counters after their
//!   transaction commits and before the client hears so;
//! - Redis failing or slow (each operation has `cache.timeout`) means the cache is bypassed,
//!   never a client error; a breaker stops trying after `breaker_failures` and probes every
//!   `breaker_retry`; a bump that may have been lost bumps the global epoch before the next
//!   entry is served.

pub mod admission;
pub mod backend;
pub mod deps;
pub mod entry;
pub mod flight;
pub mod key;
pub mod listen;
pub mod relations;

use backend::CacheBackend;
use entry::Entry;
use flight::{Flight, Flights};
use key::Key;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tidegate_config::Config;

/// Counters, for `SHOW tidegate.cache` and metrics.
#[derive(Debug, Default)]
pub struct Stats {
    /// Replies served from the cache.
    pub hits: AtomicU64,
    /// Cacheable reads that ran in PostgreSQL.
    pub misses: AtomicU64,
    /// Reads that could not use the cache (backend down or slow, breaker open).
    pub bypasses: AtomicU64,
    /// Replies stored.
    pub stores: AtomicU64,
    /// Invalidations (one per committed transaction that wrote).
    pub invalidations: AtomicU64,
    /// Backend operations that failed or timed out.
    pub errors: AtomicU64,
    /// Bytes of replies served from the cache.
    pub bytes_served: AtomicU64,
    /// Bytes of replies stored.
    pub bytes_stored: AtomicU64,
    /// Misses answered by an identical read already running.
    pub shared: AtomicU64,
    /// Cacheable reads of a shape the cache took as not worth a lookup (`cache.admission`).
    pub unadmitted: AtomicU64,
}

impl Stats {
    /// `(name, value)` pairs, in a fixed order.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            ("hits", g(&self.hits)),
            ("misses", g(&self.misses)),
            ("bypasses", g(&self.bypasses)),
            ("stores", g(&self.stores)),
            ("invalidations", g(&self.invalidations)),
            ("errors", g(&self.errors)),
            ("bytes_served", g(&self.bytes_served)),
            ("bytes_stored", g(&self.bytes_stored)),
            ("shared", g(&self.shared)),
            ("unadmitted", g(&self.unadmitted)),
        ]
    }
}

/// What a lookup found.
pub enum Lookup {
    /// A valid entry.
    Hit(Arc<Entry>),
    /// None: run the query; store its reply with `gens` (the counters read before it ran).
    Miss {
        /// The counters' values now.
        gens: Vec<u64>,
        /// Set when this read leads the single flight for its key.
        leader: Option<flight::Leader>,
    },
    /// The cache cannot be used now.
    Bypass,
}

/// The cache shared by every session.
pub struct Cache {
    backend: Arc<dyn CacheBackend>,
    /// Which statement shapes are worth looking up.
    pub admission: admission::Admission,
    flights: Flights,
    /// Relation names per database.
    pub relations: Arc<relations::Relations>,
    /// Counters.
    pub stats: Arc<Stats>,
    breaker: Breaker,
    /// Databases whose invalidation notices are listened to.
    listening: Mutex<std::collections::HashMap<String, Arc<listen::Listening>>>,
}

#[derive(Default)]
struct Breaker {
    failures: AtomicU32,
    open_until: Mutex<Option<Instant>>,
    /// A bump may have been lost: the epoch must be bumped before anything is served.
    dirty: AtomicBool,
}

impl Cache {
    /// The cache `config` describes (Redis when `cache.redis_url` is set).
    pub fn new(config: &Config) -> Result<Cache, backend::BackendError> {
        let c = &config.cache;
        let backend: Arc<dyn CacheBackend> = if c.redis_url.trim().is_empty() {
            Arc::new(backend::Local::new(c.memory_bytes))
        } else {
            Arc::new(backend::Redis::connect(
                c.redis_url.trim(),
                c.timeout.duration(),
            )?)
        };
        tracing::info!(backend = backend.name(), "result cache on");
        Ok(Cache {
            backend,
            admission: Default::default(),
            flights: Flights::default(),
            relations: Arc::default(),
            stats: Arc::default(),
            breaker: Breaker::default(),
            listening: Mutex::default(),
        })
    }

    /// `"redis"` or `"memory"`.
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// Looks `key` up; `gens` are the counters the read depends on.
    pub async fn lookup(&self, cfg: &tidegate_config::Cache, key: Key, gens: &[String]) -> Lookup {
        if !self.usable(cfg).await {
            self.stats.bypasses.fetch_add(1, Ordering::Relaxed);
            return Lookup::Bypass;
        }
        let found = self.timed(cfg, self.backend.lookup(&key, gens)).await;
        let Some((stored, current)) = found else {
            self.stats.bypasses.fetch_add(1, Ordering::Relaxed);
            return Lookup::Bypass;
        };
        if let Some(e) = stored.and_then(Entry::decode) {
            if e.gens == current {
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                return Lookup::Hit(Arc::new(e));
            }
        }
        match self.flights.join(key) {
            Flight::Leader(l) => {
                self.stats.misses.fetch_add(1, Ordering::Relaxed);
                Lookup::Miss {
                    gens: current,
                    leader: Some(l),
                }
            }
            Flight::Follower(rx) => match flight::wait(rx, cfg.flight_wait.duration()).await {
                Some(e) if e.gens == current => {
                    self.stats.hits.fetch_add(1, Ordering::Relaxed);
                    self.stats.shared.fetch_add(1, Ordering::Relaxed);
                    Lookup::Hit(e)
                }
                _ => {
                    self.stats.misses.fetch_add(1, Ordering::Relaxed);
                    Lookup::Miss {
                        gens: current,
                        leader: None,
                    }
                }
            },
        }
    }

    /// Stores a recorded reply, after handing it to the reads waiting on the same key (and to
    /// those that join until it is stored).
    pub async fn store(
        &self,
        cfg: &tidegate_config::Cache,
        key: Key,
        entry: Entry,
        ttl: Duration,
        leader: Option<flight::Leader>,
    ) {
        let entry = Arc::new(entry);
        let value = entry.encode();
        // Published first; the flight lasts until the store is done (`_flight` drops last).
        let _flight = leader;
        if let Some(l) = &_flight {
            l.publish(entry);
        }
        if !self.usable(cfg).await {
            return;
        }
        let n = value.len() as u64;
        if self
            .timed(cfg, self.backend.store(&key, value, ttl))
            .await
            .is_some()
        {
            self.stats.stores.fetch_add(1, Ordering::Relaxed);
            self.stats.bytes_stored.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Bumps `gens` (counters of `database`) after a write committed. If the backend cannot
    /// be reached, the bump is lost: nothing is served again, by this instance or any other
    /// listening in `database`, before the global epoch is bumped.
    pub async fn invalidate(&self, config: &Arc<Config>, database: &str, gens: &[String]) {
        if gens.is_empty() {
            return;
        }
        let cfg = &config.cache;
        self.stats.invalidations.fetch_add(1, Ordering::Relaxed);
        let bumped = !self.breaker_open(cfg)
            && self
                .timed(cfg, self.backend.bump(gens, keep_counters(cfg)))
                .await
                .is_some();
        if !bumped {
            self.lost_bump();
            self.publish_lost(config, database);
        }
    }

    /// A bump was lost, here or in another instance: the epoch must be bumped before
    /// anything is served.
    fn lost_bump(&self) {
        self.breaker.dirty.store(true, Ordering::SeqCst);
    }

    /// Whether the backend may be used: the breaker is closed (or due for a probe), and no
    /// lost bump is outstanding (or the epoch bump that covers it just succeeded).
    async fn usable(&self, cfg: &tidegate_config::Cache) -> bool {
        if self.breaker_open(cfg) {
            return false;
        }
        if self.breaker.dirty.load(Ordering::SeqCst) {
            let epoch = [deps::EPOCH.to_owned()];
            if self
                .timed(cfg, self.backend.bump(&epoch, keep_counters(cfg)))
                .await
                .is_none()
            {
                return false;
            }
            self.breaker.dirty.store(false, Ordering::SeqCst);
            tracing::info!("result cache: backend reachable again; every earlier entry dropped");
        }
        true
    }

    /// Whether the breaker stops the backend's use now (read only: no probe is started).
    pub fn breaker_is_open(&self) -> bool {
        self.breaker
            .open_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|t| Instant::now() < t)
    }

    fn breaker_open(&self, cfg: &tidegate_config::Cache) -> bool {
        let mut open = self
            .breaker
            .open_until
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match *open {
            Some(t) if Instant::now() < t => true,
            Some(_) => {
                // Half open: this caller probes; others keep bypassing until it reports.
                *open = Some(Instant::now() + cfg.breaker_retry.duration());
                false
            }
            None => false,
        }
    }

    /// Runs one backend operation under `cache.timeout`, counting failures for the breaker.
    async fn timed<T>(
        &self,
        cfg: &tidegate_config::Cache,
        op: backend::BoxFuture<'_, Result<T, backend::BackendError>>,
    ) -> Option<T> {
        match tokio::time::timeout(cfg.timeout.duration(), op).await {
            Ok(Ok(v)) => {
                if self.breaker.failures.swap(0, Ordering::Relaxed) > 0 {
                    *self
                        .breaker
                        .open_until
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()) = None;
                }
                Some(v)
            }
            failed => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                let n = self.breaker.failures.fetch_add(1, Ordering::Relaxed) + 1;
                if n >= cfg.breaker_failures {
                    let mut open = self
                        .breaker
                        .open_until
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    if open.is_none() {
                        let why = match failed {
                            Ok(Err(e)) => e.to_string(),
                            _ => "timed out".into(),
                        };
                        tracing::warn!(error = %why, "result cache: backend failing, bypassing it");
                    }
                    *open = Some(Instant::now() + cfg.breaker_retry.duration());
                }
                None
            }
        }
    }
}

/// Counters must outlive every entry that holds them (else a counter could restart at a
/// value an old entry recorded).
fn keep_counters(cfg: &tidegate_config::Cache) -> Duration {
    let longest = cfg
        .rules
        .iter()
        .map(|r| r.ttl.0)
        .chain([cfg.ttl.0, cfg.long_ttl.0, cfg.short_ttl.0])
        .max()
        .unwrap_or(0);
    Duration::from_millis(longest.saturating_mul(2)) + Duration::from_secs(3600)
}
