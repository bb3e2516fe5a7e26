//! Where entries and generation counters live: Redis through `fred`, shared by every TideGate
//! instance using it, or this process (`moka`) when no Redis is configured.

use super::key::Key;
use bytes::Bytes;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A boxed future, for the object-safe trait.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A lookup's answer: the stored entry, if any, and the counters' current values.
pub type Found = (Option<Bytes>, Vec<u64>);

/// A failed backend operation (the read bypasses the cache; see the breaker).
#[derive(Debug, thiserror::Error)]
#[error("cache backend: {0}")]
pub struct BackendError(pub String);

/// The operations the cache needs, each one round trip.
pub trait CacheBackend: Send + Sync {
    /// The stored entry under `key`, if any, and the current value of every counter in
    /// `gens` (0 for a counter never bumped).
    fn lookup<'a>(
        &'a self,
        key: &'a Key,
        gens: &'a [String],
    ) -> BoxFuture<'a, Result<Found, BackendError>>;

    /// Stores `value` under `key` for `ttl`.
    fn store<'a>(
        &'a self,
        key: &'a Key,
        value: Bytes,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), BackendError>>;

    /// Increments every counter in `gens`; each lives at least `keep` after its last bump.
    fn bump<'a>(
        &'a self,
        gens: &'a [String],
        keep: Duration,
    ) -> BoxFuture<'a, Result<(), BackendError>>;

    /// `"redis"` or `"memory"`.
    fn name(&self) -> &'static str;
}

/// The in-process backend: entries in a size-bounded `moka` cache with per-entry TTLs.
pub struct Local {
    entries: moka::sync::Cache<Key, (Bytes, Instant)>,
    gens: Mutex<HashMap<String, u64>>,
}

struct PerEntryTtl;

impl moka::Expiry<Key, (Bytes, Instant)> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _key: &Key,
        value: &(Bytes, Instant),
        created_at: Instant,
    ) -> Option<Duration> {
        Some(value.1.saturating_duration_since(created_at))
    }
}

impl Local {
    /// An in-process cache holding at most `capacity` bytes.
    pub fn new(capacity: u64) -> Local {
        Local {
            entries: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .weigher(|_k: &Key, v: &(Bytes, Instant)| {
                    u32::try_from(v.0.len() + 64).unwrap_or(u32::MAX)
                })
                .expire_after(PerEntryTtl)
                .build(),
            gens: Mutex::new(HashMap::new()),
        }
    }
}

impl CacheBackend for Local {
    fn lookup<'a>(
        &'a self,
        key: &'a Key,
        gens: &'a [String],
    ) -> BoxFuture<'a, Result<Found, BackendError>> {
        let entry = self.entries.get(key).map(|(b, _)| b);
        let map = self.gens.lock().unwrap_or_else(|e| e.into_inner());
        let current = gens
            .iter()
            .map(|g| map.get(g).copied().unwrap_or(0))
            .collect();
        Box::pin(std::future::ready(Ok((entry, current))))
    }

    fn store<'a>(
        &'a self,
        key: &'a Key,
        value: Bytes,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        self.entries.insert(*key, (value, Instant::now() + ttl));
        Box::pin(std::future::ready(Ok(())))
    }

    fn bump<'a>(
        &'a self,
        gens: &'a [String],
        _keep: Duration,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        let mut map = self.gens.lock().unwrap_or_else(|e| e.into_inner());
        for g in gens {
            *map.entry(g.clone()).or_insert(0) += 1;
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}

/// The Redis backend: one multiplexed `fred` client; a lookup is one MGET (a pipeline of GETs
/// on a cluster), a store one SET, a bump one pipeline.
pub struct Redis {
    client: fred::clients::Client,
}

impl Redis {
    /// A client for `url`, connecting (and reconnecting) in the background: a Redis that is
    /// down at start is not an error, reads bypass the cache until it is up.
    pub fn connect(url: &str, timeout: Duration) -> Result<Redis, BackendError> {
        use fred::prelude::*;
        let config = Config::from_url(url).map_err(|e| BackendError(e.to_string()))?;
        let client = Builder::from_config(config)
            .with_config(|c| {
                // Commands fail at once while disconnected instead of waiting in a queue.
                c.fail_fast = true;
            })
            .with_performance_config(|p| {
                p.default_command_timeout = timeout;
            })
            .with_connection_config(|c| {
                c.connection_timeout = Duration::from_secs(1);
                c.internal_command_timeout = Duration::from_secs(1);
                c.max_command_attempts = 1;
                c.tcp = TcpConfig {
                    nodelay: Some(true),
                    ..Default::default()
                };
            })
            .set_policy(ReconnectPolicy::new_constant(0, 250))
            .build()
            .map_err(|e| BackendError(e.to_string()))?;
        let _task = client.connect();
        Ok(Redis { client })
    }

    /// Waits up to `within` for the connection, then sends a PING.
    pub async fn ping(&self, within: Duration) -> Result<(), BackendError> {
        use fred::prelude::*;
        tokio::time::timeout(within, async {
            self.client.wait_for_connect().await.map_err(redis_err)?;
            self.client.ping::<String>(None).await.map_err(redis_err)?;
            Ok(())
        })
        .await
        .map_err(|_| BackendError(format!("no answer within {within:?}")))?
    }
}

fn redis_err(e: fred::error::Error) -> BackendError {
    BackendError(e.to_string())
}

fn counter(v: fred::types::Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

impl CacheBackend for Redis {
    fn lookup<'a>(
        &'a self,
        key: &'a Key,
        gens: &'a [String],
    ) -> BoxFuture<'a, Result<Found, BackendError>> {
        use fred::prelude::*;
        Box::pin(async move {
            let mut values: Vec<Value> = if self.client.is_clustered() {
                // Keys hash to different slots: one GET each, in one pipeline.
                let p = self.client.pipeline();
                let () = p.get(key.redis_name()).await.map_err(redis_err)?;
                for g in gens {
                    let () = p.get(g.as_str()).await.map_err(redis_err)?;
                }
                p.all().await.map_err(redis_err)?
            } else {
                // One command: the entry and every counter.
                let mut keys: Vec<String> = Vec::with_capacity(gens.len() + 1);
                keys.push(key.redis_name());
                keys.extend(gens.iter().cloned());
                self.client.mget(keys).await.map_err(redis_err)?
            };
            if values.len() != gens.len() + 1 {
                return Err(BackendError("short pipeline reply".into()));
            }
            let current = values.split_off(1).into_iter().map(counter).collect();
            let entry = values.pop().and_then(|v| v.into_bytes());
            Ok((entry, current))
        })
    }

    fn store<'a>(
        &'a self,
        key: &'a Key,
        value: Bytes,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        use fred::prelude::*;
        Box::pin(async move {
            let ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1);
            let () = self
                .client
                .set(
                    key.redis_name(),
                    value,
                    Some(Expiration::PX(ms)),
                    None,
                    false,
                )
                .await
                .map_err(redis_err)?;
            Ok(())
        })
    }

    fn bump<'a>(
        &'a self,
        gens: &'a [String],
        keep: Duration,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        use fred::prelude::*;
        Box::pin(async move {
            let ms = i64::try_from(keep.as_millis()).unwrap_or(i64::MAX).max(1);
            let p = self.client.pipeline();
            for g in gens {
                let () = p.incr(g.as_str()).await.map_err(redis_err)?;
                let () = p.pexpire(g.as_str(), ms, None).await.map_err(redis_err)?;
            }
            let _: Vec<Value> = p.all().await.map_err(redis_err)?;
            Ok(())
        })
    }

    fn name(&self) -> &'static str {
        "redis"
    }
}
