//! What the statements did, for `/metrics`, the admin console and slow-query analysis:
//! statements by kind and route, request latency by kind, errors by SQLSTATE class, and per
//! statement fingerprint a bounded table of the heaviest statements.
//!
//! A session records each request (a simple Query, or an extended-protocol batch up to Sync)
//! once, when its ReadyForQuery passes: a few relaxed atomic additions and one short lock of
//! one shard of the fingerprint table. The kind comes from the CommandComplete tag the server
//! sent, so nothing is parsed for it. The table keeps no SQL as a client sent it, only
//! [`tidegate_sql::normalize`]d text with every constant replaced by `?`.
//!
//! The table is bounded by the space-saving rule: when a shard is full, a new fingerprint
//! takes the place of the one seen least often, and inherits its count as `overcount` (the
//! most its own count may be overstated by). Frequent statements therefore stay; the rare ones
//! that come and go are the ones an operator does not need.

use crate::clock::Mono;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

pub use crate::upstream::{Histogram, HistogramSnapshot};

/// What a statement did, read from its CommandComplete tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// SELECT, FETCH, SHOW, EXPLAIN…
    Read,
    /// INSERT, UPDATE, DELETE, MERGE, COPY.
    Write,
    /// CREATE, ALTER, DROP, TRUNCATE, GRANT, REVOKE, COMMENT…
    Ddl,
    /// BEGIN, COMMIT, ROLLBACK, SAVEPOINT, RELEASE, PREPARE TRANSACTION…
    Transaction,
    /// SET, RESET, DISCARD, LISTEN, DEALLOCATE, PREPARE…
    Session,
    /// Anything else (CALL, DO, VACUUM, an empty query, a request that failed).
    Other,
}

impl Kind {
    /// Every kind, in label order.
    pub const ALL: [Kind; 6] = [
        Kind::Read,
        Kind::Write,
        Kind::Ddl,
        Kind::Transaction,
        Kind::Session,
        Kind::Other,
    ];

    /// Its label.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Read => "read",
            Kind::Write => "write",
            Kind::Ddl => "ddl",
            Kind::Transaction => "transaction",
            Kind::Session => "session",
            Kind::Other => "other",
        }
    }

    /// The kind a CommandComplete tag (`SELECT 5`, `INSERT 0 1`, `CREATE TABLE`) reports.
    pub fn of_tag(tag: &[u8]) -> Kind {
        if tag.starts_with(b"SELECT ") {
            return Kind::Read; // Most completions: no word split.
        }
        let word = tag.split(|&b| b == b' ' || b == 0).next().unwrap_or(b"");
        match word {
            b"SELECT" | b"FETCH" | b"SHOW" | b"EXPLAIN" | b"MOVE" | b"VALUES" | b"TABLE" => {
                Kind::Read
            }
            b"INSERT" | b"UPDATE" | b"DELETE" | b"MERGE" | b"COPY" => Kind::Write,
            b"CREATE" | b"ALTER" | b"DROP" | b"TRUNCATE" | b"GRANT" | b"REVOKE" | b"COMMENT"
            | b"SECURITY" | b"IMPORT" | b"REFRESH" | b"REINDEX" | b"CLUSTER" => Kind::Ddl,
            b"BEGIN" | b"START" | b"COMMIT" | b"ROLLBACK" | b"SAVEPOINT" | b"RELEASE"
            | b"PREPARE" | b"END" | b"ABORT" => {
                if word == b"PREPARE" && !tag.starts_with(b"PREPARE TRANSACTION") {
                    Kind::Session
                } else {
                    Kind::Transaction
                }
            }
            b"SET" | b"RESET" | b"DISCARD" | b"LISTEN" | b"UNLISTEN" | b"NOTIFY"
            | b"DEALLOCATE" | b"DECLARE" | b"CLOSE" | b"LOAD" | b"LOCK" => Kind::Session,
            _ => Kind::Other,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Where a statement was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The primary.
    Primary,
    /// A replica.
    Replica,
    /// The result cache.
    Cache,
    /// The broker itself (a denial, a broker setting).
    Broker,
}

impl Route {
    /// Every route, in label order.
    pub const ALL: [Route; 4] = [Route::Primary, Route::Replica, Route::Cache, Route::Broker];

    /// Its label.
    pub fn name(self) -> &'static str {
        match self {
            Route::Primary => "primary",
            Route::Replica => "replica",
            Route::Cache => "cache",
            Route::Broker => "broker",
        }
    }
}

/// SQLSTATE classes are two characters of `0-9A-Z`.
const CLASSES: usize = 36 * 36;

/// A SQLSTATE character's place among `0-9A-Z` (base 36).
fn class_digit(b: u8) -> Option<usize> {
    (b as char)
        .to_digit(36)
        .filter(|_| !b.is_ascii_lowercase())
        .map(|d| d as usize)
}

fn class_char(i: usize) -> char {
    char::from_digit(i as u32, 36).map_or('?', |c| c.to_ascii_uppercase())
}

/// The broker's statement counters.
pub struct QueryStats {
    statements: [[AtomicU64; Route::ALL.len()]; Kind::ALL.len()],
    durations: [Histogram; Kind::ALL.len()],
    errors: Box<[AtomicU64]>,
    /// The heaviest statements by fingerprint.
    pub top: Top,
}

impl Default for QueryStats {
    fn default() -> Self {
        QueryStats::new(DEFAULT_CAPACITY)
    }
}

/// Fingerprints the table holds by default.
pub const DEFAULT_CAPACITY: usize = 1024;

impl QueryStats {
    /// Counters with a fingerprint table of about `capacity` entries.
    pub fn new(capacity: usize) -> QueryStats {
        QueryStats {
            statements: Default::default(),
            durations: Default::default(),
            errors: (0..CLASSES).map(|_| AtomicU64::new(0)).collect(),
            top: Top::new(capacity),
        }
    }

    /// One statement of `kind` answered by `route`.
    pub fn statement(&self, kind: Kind, route: Route) {
        self.statements[kind.index()][route as usize].fetch_add(1, Relaxed);
    }

    /// A request of `kind` took `d`, from its first message to ReadyForQuery.
    pub fn request(&self, kind: Kind, d: Duration) {
        self.durations[kind.index()].observe(d);
    }

    /// A statement failed with `sqlstate` (counted by its class, the first two characters).
    pub fn error(&self, sqlstate: &[u8]) {
        if let [a, b, ..] = sqlstate {
            if let (Some(a), Some(b)) = (class_digit(*a), class_digit(*b)) {
                self.errors[a * 36 + b].fetch_add(1, Relaxed);
            }
        }
    }

    /// Statements by kind and route (zero pairs included, so every series exists).
    pub fn statements(&self) -> Vec<(Kind, Route, u64)> {
        let mut out = Vec::new();
        for k in Kind::ALL {
            for r in Route::ALL {
                out.push((k, r, self.statements[k.index()][r as usize].load(Relaxed)));
            }
        }
        out
    }

    /// Request latency by kind.
    pub fn durations(&self) -> Vec<(Kind, HistogramSnapshot)> {
        Kind::ALL
            .iter()
            .map(|&k| (k, self.durations[k.index()].snapshot()))
            .collect()
    }

    /// Errors by SQLSTATE class (only classes seen).
    pub fn errors(&self) -> Vec<(String, u64)> {
        self.errors
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let n = c.load(Relaxed);
                (n > 0).then(|| (format!("{}{}", class_char(i / 36), class_char(i % 36)), n))
            })
            .collect()
    }
}

/// One finished request, for the fingerprint table.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// From the first message to ReadyForQuery.
    pub duration: Duration,
    /// Rows the CommandComplete tags reported.
    pub rows: u64,
    /// It ended in an error.
    pub error: bool,
    /// Where it was answered.
    pub route: Route,
}

/// Latency buckets per entry: three per power of two of microseconds.
const ENTRY_BUCKETS: usize = 96;

/// `floor(3·log2(us))`, capped at the last bucket, in integers: `us` is at or above the
/// `j`th third of its power of two `2^k` when `us³ ≥ 2^(3k+j)`.
fn entry_bucket(us: u64) -> usize {
    if us <= 1 {
        return 0;
    }
    let k = 63 - us.leading_zeros() as usize;
    if 3 * k >= ENTRY_BUCKETS - 1 {
        return ENTRY_BUCKETS - 1;
    }
    let cube = u128::from(us).pow(3);
    let j = (1..=2)
        .take_while(|&j| cube >= 1u128 << (3 * k + j))
        .count();
    (3 * k + j).min(ENTRY_BUCKETS - 1)
}

fn bucket_upper_us(i: usize) -> f64 {
    2f64.powf((i + 1) as f64 / 3.0)
}

struct Entry {
    text: Arc<str>,
    count: u64,
    overcount: u64,
    errors: u64,
    rows: u64,
    total_us: u64,
    max_us: u64,
    routes: [u64; Route::ALL.len()],
    buckets: Box<[u32; ENTRY_BUCKETS]>,
    first_seen: Mono,
    last_seen: Mono,
}

impl Entry {
    fn new(text: String, overcount: u64, now: Mono) -> Entry {
        Entry {
            text: text.into(),
            count: 0,
            overcount,
            errors: 0,
            rows: 0,
            total_us: 0,
            max_us: 0,
            routes: [0; Route::ALL.len()],
            buckets: Box::new([0; ENTRY_BUCKETS]),
            first_seen: now,
            last_seen: now,
        }
    }

    fn add(&mut self, s: Sample, now: Mono) {
        let us = u64::try_from(s.duration.as_micros()).unwrap_or(u64::MAX);
        self.count += 1;
        self.errors += u64::from(s.error);
        self.rows += s.rows;
        self.total_us = self.total_us.saturating_add(us);
        self.max_us = self.max_us.max(us);
        self.routes[s.route as usize] += 1;
        let b = &mut self.buckets[entry_bucket(us)];
        *b = b.saturating_add(1);
        self.last_seen = now;
    }
}

/// One fingerprint's figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Statement {
    /// The fingerprint, as the audit table and cache rules write it.
    pub fingerprint: String,
    /// The statement with its constants replaced by `?`.
    pub query: Arc<str>,
    /// Requests seen since it entered the table.
    pub calls: u64,
    /// How much `calls` may overstate (inherited from the entry it replaced).
    pub overcount: u64,
    /// Requests that ended in an error.
    pub errors: u64,
    /// Rows reported.
    pub rows: u64,
    /// Total time, milliseconds.
    pub total_ms: f64,
    /// Mean time, milliseconds.
    pub mean_ms: f64,
    /// Percentiles from the entry's histogram (upper bucket bounds, within 26 %).
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest, milliseconds.
    pub max_ms: f64,
    /// Share of requests answered from the result cache.
    pub cache_hit_ratio: f64,
    /// Requests answered by the primary, a replica, the cache, the broker.
    pub primary: u64,
    /// On a replica.
    pub replica: u64,
    /// From the cache.
    pub cache: u64,
    /// First seen (Unix seconds).
    pub first_seen: u64,
    /// Last seen (Unix seconds).
    pub last_seen: u64,
}

const SHARDS: usize = 8;

/// Fingerprints are hashes already: the map uses their high half as it is (the low bits pick
/// the shard), instead of hashing them again.
#[derive(Default)]
struct FpHasher(u64);

impl std::hash::Hasher for FpHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u128(&mut self, n: u128) {
        self.0 = (n >> 64) as u64;
    }
}

type Shard = HashMap<u128, Entry, std::hash::BuildHasherDefault<FpHasher>>;

/// The fingerprint table: [`SHARDS`] independently locked maps.
pub struct Top {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
}

impl Top {
    fn new(capacity: usize) -> Top {
        Top {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
        }
    }

    fn shard(&self, fp: u128) -> std::sync::MutexGuard<'_, Shard> {
        self.shards[(fp as usize) % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `fp` has an entry (a session keeps the statement's text only when it has not).
    pub fn contains(&self, fp: u128) -> bool {
        self.shard(fp).contains_key(&fp)
    }

    /// Records a request of `fp`. `text` is used when the fingerprint is new to the table; a
    /// new one without text (it was evicted meanwhile) is not added. `now` is when it ended.
    pub fn record(&self, fp: u128, text: Option<String>, s: Sample, now: Mono) {
        let mut shard = self.shard(fp);
        // One lookup for the frequent case: the fingerprint has its entry.
        if let Some(e) = shard.get_mut(&fp) {
            e.add(s, now);
            return;
        }
        let Some(text) = text else { return };
        let mut overcount = 0;
        if shard.len() >= self.per_shard {
            if let Some((&victim, e)) = shard.iter().min_by_key(|(_, e)| e.count) {
                overcount = e.count;
                shard.remove(&victim);
            }
        }
        let mut e = Entry::new(text, overcount, now);
        e.add(s, now);
        shard.insert(fp, e);
    }

    /// Every entry last seen at or after `since`, by total time, heaviest first.
    pub fn snapshot(&self, since: Option<SystemTime>) -> Vec<Statement> {
        // Entries keep monotonic times (no wall-clock reading per request): converted here.
        let clock = WallClock::now();
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            for (fp, e) in shard.iter() {
                if since.is_some_and(|t| clock.wall(e.last_seen) < t) || e.count == 0 {
                    continue;
                }
                out.push(statement(*fp, e, &clock));
            }
        }
        out.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms));
        out
    }
}

/// One reading of both clocks, to turn monotonic times into wall-clock ones.
struct WallClock {
    wall: SystemTime,
    mono: Mono,
}

impl WallClock {
    fn now() -> WallClock {
        WallClock {
            wall: SystemTime::now(),
            mono: Mono::now(),
        }
    }

    fn wall(&self, t: Mono) -> SystemTime {
        self.wall - self.mono.since(t)
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn statement(fp: u128, e: &Entry, clock: &WallClock) -> Statement {
    let pct = |q: f64| {
        let target = ((e.count as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (i, &n) in e.buckets.iter().enumerate() {
            seen += u64::from(n);
            if seen >= target {
                return (bucket_upper_us(i) / 1000.0).min(e.max_us as f64 / 1000.0);
            }
        }
        e.max_us as f64 / 1000.0
    };
    let calls = e.count.max(1) as f64;
    Statement {
        fingerprint: tidegate_plugins::fingerprint_hex(fp),
        query: e.text.clone(),
        calls: e.count,
        overcount: e.overcount,
        errors: e.errors,
        rows: e.rows,
        total_ms: e.total_us as f64 / 1000.0,
        mean_ms: e.total_us as f64 / 1000.0 / calls,
        p50_ms: pct(0.50),
        p95_ms: pct(0.95),
        p99_ms: pct(0.99),
        max_ms: e.max_us as f64 / 1000.0,
        cache_hit_ratio: e.routes[Route::Cache as usize] as f64 / calls,
        primary: e.routes[Route::Primary as usize],
        replica: e.routes[Route::Replica as usize],
        cache: e.routes[Route::Cache as usize],
        first_seen: unix(clock.wall(e.first_seen)),
        last_seen: unix(clock.wall(e.last_seen)),
    }
}

/// Rows a CommandComplete tag reports: its last number (`INSERT 0 5`, `SELECT 5`), or 0.
pub fn tag_rows(tag: &[u8]) -> u64 {
    let tag = tag.strip_suffix(b"\0").unwrap_or(tag);
    let last = tag.rsplit(|&b| b == b' ').next().unwrap_or_default();
    last.iter()
        .try_fold(0u64, |n, &d| {
            n.checked_mul(10)?
                .checked_add(u64::from(char::from(d).to_digit(10)?))
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ms: u64) -> Sample {
        Sample {
            duration: Duration::from_millis(ms),
            rows: 1,
            error: false,
            route: Route::Primary,
        }
    }

    #[test]
    fn tags_give_kinds_and_rows() {
        assert_eq!(Kind::of_tag(b"SELECT 5\0"), Kind::Read);
        assert_eq!(Kind::of_tag(b"INSERT 0 1\0"), Kind::Write);
        assert_eq!(Kind::of_tag(b"CREATE TABLE\0"), Kind::Ddl);
        assert_eq!(Kind::of_tag(b"COMMIT\0"), Kind::Transaction);
        assert_eq!(Kind::of_tag(b"PREPARE TRANSACTION\0"), Kind::Transaction);
        assert_eq!(Kind::of_tag(b"PREPARE\0"), Kind::Session);
        assert_eq!(Kind::of_tag(b"SET\0"), Kind::Session);
        assert_eq!(Kind::of_tag(b"CALL\0"), Kind::Other);
        assert_eq!(tag_rows(b"INSERT 0 5\0"), 5);
        assert_eq!(tag_rows(b"SELECT 12\0"), 12);
        assert_eq!(tag_rows(b"BEGIN\0"), 0);
        assert_eq!(tag_rows(b"SELECT 18446744073709551615\0"), u64::MAX);
        assert_eq!(tag_rows(b"SELECT 18446744073709551616\0"), 0);
        assert_eq!(tag_rows(b"SELECT -1\0"), 0);
    }

    #[test]
    fn error_classes_are_counted_by_their_first_two_characters() {
        let s = QueryStats::new(16);
        s.error(b"42501");
        s.error(b"42P01");
        s.error(b"57014");
        s.error(b"x");
        assert_eq!(s.errors(), vec![("42".to_owned(), 2), ("57".to_owned(), 1)]);
    }

    #[test]
    fn the_table_keeps_frequent_fingerprints_and_bounds_its_size() {
        let t = Top::new(SHARDS); // one entry per shard
        for _ in 0..10 {
            t.record(0, Some("frequent".into()), sample(5), Mono::now());
        }
        // Same shard (fp % SHARDS == 0), seen once: replaces nothing frequent... until it is
        // the only candidate; the frequent one has the higher count and stays counted.
        t.record(SHARDS as u128, Some("rare".into()), sample(1), Mono::now());
        let all = t.snapshot(None);
        assert_eq!(all.len(), 1, "one entry per shard");
        assert_eq!(&*all[0].query, "rare");
        assert_eq!(all[0].overcount, 10, "it inherits the count it displaced");
        // Without text a new fingerprint is not added.
        t.record(2 * SHARDS as u128, None, sample(1), Mono::now());
        assert_eq!(t.snapshot(None)[0].query.as_ref(), "rare");
    }

    #[test]
    fn entry_buckets_are_thirds_of_powers_of_two() {
        let by_float = |us: u64| ((us as f64).log2() * 3.0).floor() as usize;
        for us in (2..5000).chain([1 << 20, (1 << 20) + 1, 1_587_401, 1_587_400]) {
            assert_eq!(entry_bucket(us), by_float(us), "{us} µs");
        }
        assert_eq!(entry_bucket(0), 0);
        assert_eq!(entry_bucket(1), 0);
        assert_eq!(entry_bucket(u64::MAX), ENTRY_BUCKETS - 1);
    }

    #[test]
    fn percentiles_come_from_the_entry_histogram() {
        let t = Top::new(64);
        for ms in 1..=100 {
            t.record(7, Some("q".into()), sample(ms), Mono::now());
        }
        let s = &t.snapshot(None)[0];
        assert_eq!(s.calls, 100);
        assert_eq!(s.max_ms, 100.0);
        assert!((40.0..=65.0).contains(&s.p50_ms), "p50 {}", s.p50_ms);
        assert!((90.0..=100.0).contains(&s.p95_ms), "p95 {}", s.p95_ms);
        assert!((s.mean_ms - 50.5).abs() < 0.01);
    }
}
