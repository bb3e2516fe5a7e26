//! What a pool's clients and connections are doing, as PgBouncer's `SHOW POOLS` and
//! `SHOW STATS` report it, and the admin console's PAUSE and RECONNECT.
//!
//! Everything here is a relaxed atomic touched where the pool already does something: a
//! checkout that has to wait, a login, a connection's return (the end of a transaction). A
//! paused pool lends nothing: checkouts wait until it is resumed (a client mid-transaction
//! keeps its connection, so PAUSE can wait for transactions to finish).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Counters and switches of one pool.
pub struct Activity {
    clients: AtomicUsize,
    waiting: AtomicUsize,
    logins: AtomicUsize,
    transactions: AtomicU64,
    transaction_us: AtomicU64,
    waits: AtomicU64,
    wait_us: AtomicU64,
    max_wait_us: AtomicU64,
    paused: AtomicBool,
    /// Wakes the checkouts PAUSE holds.
    resumed: Notify,
    epoch: AtomicU64,
    /// The wait histogram (`/metrics`).
    pub wait_histogram: crate::upstream::Histogram,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            clients: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            logins: AtomicUsize::new(0),
            transactions: AtomicU64::new(0),
            transaction_us: AtomicU64::new(0),
            waits: AtomicU64::new(0),
            wait_us: AtomicU64::new(0),
            max_wait_us: AtomicU64::new(0),
            paused: AtomicBool::new(false),
            resumed: Notify::new(),
            epoch: AtomicU64::new(0),
            wait_histogram: Default::default(),
        }
    }
}

/// The counters at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ActivitySnapshot {
    /// Clients whose sessions use this pool.
    pub clients: usize,
    /// Checkouts waiting for a connection (or for RESUME).
    pub waiting: usize,
    /// Connections being opened.
    pub logins: usize,
    /// Transactions served (connections returned).
    pub transactions: u64,
    /// Their total time, microseconds.
    pub transaction_us: u64,
    /// Checkouts that had to wait.
    pub waits: u64,
    /// Their total wait, microseconds.
    pub wait_us: u64,
    /// The longest wait seen, microseconds.
    pub max_wait_us: u64,
    /// PAUSE is in force.
    pub paused: bool,
}

/// Counts one thing while it lives.
pub struct Gauge<'a>(&'a AtomicUsize);

impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// Counts a client of a pool while it lives.
pub struct ClientCount(std::sync::Arc<super::Pool>);

impl ClientCount {
    /// Counts a client of `pool`.
    pub fn new(pool: std::sync::Arc<super::Pool>) -> ClientCount {
        pool.activity.clients.fetch_add(1, Relaxed);
        ClientCount(pool)
    }
}

impl Drop for ClientCount {
    fn drop(&mut self) {
        self.0.activity.clients.fetch_sub(1, Relaxed);
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Activity {
    pub(super) fn waiting(&self) -> Gauge<'_> {
        self.waiting.fetch_add(1, Relaxed);
        Gauge(&self.waiting)
    }

    pub(super) fn login(&self) -> Gauge<'_> {
        self.logins.fetch_add(1, Relaxed);
        Gauge(&self.logins)
    }

    pub(super) fn waited(&self, d: Duration) {
        let us = micros(d);
        self.waits.fetch_add(1, Relaxed);
        self.wait_us.fetch_add(us, Relaxed);
        self.max_wait_us.fetch_max(us, Relaxed);
        self.wait_histogram.observe(d);
    }

    pub(super) fn transaction(&self, d: Duration) {
        self.transactions.fetch_add(1, Relaxed);
        self.transaction_us.fetch_add(micros(d), Relaxed);
    }

    pub(super) fn epoch(&self) -> u64 {
        self.epoch.load(Relaxed)
    }

    pub(super) fn next_epoch(&self) {
        self.epoch.fetch_add(1, Relaxed);
    }

    /// Whether PAUSE is in force (one relaxed load on every checkout).
    pub fn is_paused(&self) -> bool {
        self.paused.load(Relaxed)
    }

    /// PAUSE: checkouts wait from now on.
    pub fn pause(&self) {
        self.paused.store(true, SeqCst);
    }

    /// RESUME: waiting checkouts go on.
    pub fn resume(&self) {
        self.paused.store(false, SeqCst);
        self.resumed.notify_waiters();
    }

    pub(super) async fn wait_resumed(&self) {
        let start = Instant::now();
        let waiting = self.waiting();
        loop {
            // Registered before the flag is read: a RESUME in between still wakes it.
            let resumed = self.resumed.notified();
            if !self.paused.load(SeqCst) {
                break;
            }
            resumed.await;
        }
        drop(waiting);
        self.waited(start.elapsed());
    }

    /// The counters now.
    pub fn snapshot(&self) -> ActivitySnapshot {
        ActivitySnapshot {
            clients: self.clients.load(Relaxed),
            waiting: self.waiting.load(Relaxed),
            logins: self.logins.load(Relaxed),
            transactions: self.transactions.load(Relaxed),
            transaction_us: self.transaction_us.load(Relaxed),
            waits: self.waits.load(Relaxed),
            wait_us: self.wait_us.load(Relaxed),
            max_wait_us: self.max_wait_us.load(Relaxed),
            paused: self.is_paused(),
        }
    }
}
