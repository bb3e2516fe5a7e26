//! `[cache]`: the result cache, in Redis or in process.

use crate::{Config, Millis};
use serde::Deserialize;

/// `[cache]`: answers provably cacheable reads from stored wire replies.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cache {
    /// Off by default: caching changes what a client may observe (a read may be up to a TTL
    /// behind writes made outside TideGate).
    pub enabled: bool,
    /// `redis://host:port[/db]` (or `redis-cluster://host:port?node=…`, `rediss://…`); empty
    /// keeps the cache in this process (not shared with other TideGate instances).
    pub redis_url: String,
    /// Results larger than this (wire bytes) are not stored.
    pub max_result_bytes: usize,
    /// Bytes the in-process cache may hold.
    pub memory_bytes: u64,
    /// Time to live of an entry without a more specific rule.
    pub ttl: Millis,
    /// For a query whose time range ends before `now() - settle_window` (the data has
    /// settled) …
    pub long_ttl: Millis,
    /// … and for one whose range is open or recent.
    pub short_ttl: Millis,
    /// How long after the fact rows are still expected to arrive (late data).
    pub settle_window: Millis,
    /// Width of the time buckets that writes with known times invalidate.
    pub time_bucket: Millis,
    /// Plain tables (`table.column` or `schema.table.column`) whose time column makes reads and
    /// writes time-aware, as hypertables are.
    pub time_columns: Vec<String>,
    /// Views (`view` or `schema.view`) whose results may be cached; a write to any table a view
    /// reads invalidates it. Other views are never cached.
    pub allow_views: Vec<String>,
    /// Cache inside explicit transactions too (their reads then see no later writes of the
    /// same transaction's tables through the cache: off by default).
    pub in_transactions: bool,
    /// Each Redis operation gives up after this long (the read then bypasses the cache).
    pub timeout: Millis,
    /// Consecutive Redis failures that open the circuit breaker …
    pub breaker_failures: u32,
    /// … which probes Redis again this often.
    pub breaker_retry: Millis,
    /// Longest a read waits for an identical read already running (single-flight).
    pub flight_wait: Millis,
    /// LISTEN for the notices of `tidegate cache trigger`'s triggers (writes made outside
    /// TideGate) in every database whose reads are cached.
    pub listen: bool,
    /// Per-table or per-fingerprint TTLs, first match wins.
    pub rules: Vec<CacheRule>,
    /// Which statement shapes use the cache: `adaptive` (the default) stops looking up and
    /// storing a shape whose recent lookups almost never hit (unique keys), sampling it until
    /// it hits again; `always` looks up every cacheable read.
    pub admission: Admission,
}

/// `cache.admission`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Admission {
    /// Shapes that prove not worth it are only sampled.
    #[default]
    Adaptive,
    /// Every cacheable read is looked up.
    Always,
}

/// One `[[cache.rules]]` entry: a TTL for reads of a table, or of one statement shape.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct CacheRule {
    /// A table (`name` or `schema.name`) the read touches.
    pub table: String,
    /// A statement fingerprint (32 hex digits, as `tidegate` logs it).
    pub fingerprint: String,
    /// Its TTL; `"0"` never caches it.
    pub ttl: Millis,
}

impl Default for Cache {
    fn default() -> Self {
        Cache {
            enabled: false,
            redis_url: String::new(),
            max_result_bytes: 1 << 20,
            memory_bytes: 256 << 20,
            ttl: Millis(60_000),
            long_ttl: Millis(3_600_000),
            short_ttl: Millis(5_000),
            settle_window: Millis(600_000),
            time_bucket: Millis(86_400_000),
            time_columns: Vec::new(),
            allow_views: Vec::new(),
            admission: Admission::default(),
            in_transactions: false,
            timeout: Millis(50),
            breaker_failures: 5,
            breaker_retry: Millis(1_000),
            flight_wait: Millis(5_000),
            listen: true,
            rules: Vec::new(),
        }
    }
}

impl Config {
    pub(crate) fn check_cache(&self) -> Result<(), (String, String)> {
        let c = &self.cache;
        let err = |p: &str, m: String| Err((format!("cache.{p}"), m));
        let url = c.redis_url.trim();
        if !url.is_empty()
            && ![
                "redis://",
                "rediss://",
                "redis-cluster://",
                "rediss-cluster://",
            ]
            .iter()
            .any(|s| url.starts_with(s))
        {
            return err(
                "redis_url",
                "must start with redis://, rediss:// or redis-cluster:// (empty: in process)"
                    .into(),
            );
        }
        if c.timeout.0 == 0 || c.breaker_retry.0 == 0 || c.time_bucket.0 == 0 {
            return err(
                "timeout",
                "timeout, breaker_retry and time_bucket must be positive".into(),
            );
        }
        if c.breaker_failures == 0 {
            return err("breaker_failures", "must be at least 1".into());
        }
        for (i, col) in c.time_columns.iter().enumerate() {
            let parts = col.split('.').count();
            if !(2..=3).contains(&parts) || col.split('.').any(str::is_empty) {
                return err(
                    &format!("time_columns[{i}]"),
                    format!("{col:?} is not `table.column` or `schema.table.column`"),
                );
            }
        }
        for (i, r) in c.rules.iter().enumerate() {
            if r.table.is_empty() == r.fingerprint.is_empty() {
                return err(
                    &format!("rules[{i}]"),
                    "give exactly one of `table` or `fingerprint`".into(),
                );
            }
            if !r.fingerprint.is_empty()
                && (r.fingerprint.len() != 32
                    || !r.fingerprint.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                return err(
                    &format!("rules[{i}].fingerprint"),
                    "must be 32 hexadecimal digits".into(),
                );
            }
        }
        Ok(())
    }
}
