//! The epoch ticker: advances the engine's epoch — the clock of call deadlines and of
//! yielding — every [`TICK`] while plugins are being called, and sleeps when no call is in
//! flight and none has started for a while, so a broker whose plugins run now and then (the
//! audit writer's batches, cached decisions) is not woken a thousand times a second.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use wasmtime::Engine;

/// How often the epoch advances: the granularity of call deadlines and of yielding.
pub(crate) const TICK: Duration = Duration::from_millis(1);
/// Quiet ticks (no call in flight, none started) before the ticker sleeps.
const IDLE_TICKS: u32 = 10;

/// Shared by the ticker thread and every caller.
pub(crate) struct Ticker {
    /// Calls started so far.
    calls: AtomicU64,
    /// Calls in flight: while there is one, the epoch keeps advancing, so its deadline passes
    /// however long it was suspended.
    active: AtomicUsize,
    parked: AtomicBool,
    stop: AtomicBool,
    thread: OnceLock<std::thread::Thread>,
}

/// A call in flight, for as long as it lives.
pub(crate) struct CallGuard(Arc<Ticker>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, SeqCst);
    }
}

impl Ticker {
    /// Starts the ticker thread for `engine`.
    pub(crate) fn start(engine: Engine) -> std::io::Result<Arc<Ticker>> {
        let ticker = Arc::new(Ticker {
            calls: AtomicU64::new(0),
            active: AtomicUsize::new(0),
            parked: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            thread: OnceLock::new(),
        });
        let t = ticker.clone();
        let handle = std::thread::Builder::new()
            .name("tidegate-epoch".into())
            .spawn(move || t.run(&engine))?;
        let _ = ticker.thread.set(handle.thread().clone());
        Ok(ticker)
    }

    fn run(&self, engine: &Engine) {
        let mut seen = self.calls.load(SeqCst);
        let mut quiet = 0u32;
        while !self.stop.load(SeqCst) {
            std::thread::sleep(TICK);
            engine.increment_epoch();
            let now = self.calls.load(SeqCst);
            if now != seen || self.active.load(SeqCst) > 0 {
                seen = now;
                quiet = 0;
                continue;
            }
            quiet += 1;
            if quiet >= IDLE_TICKS {
                self.parked.store(true, SeqCst);
                // A call that started before `parked` was set is seen here; one that starts
                // after it sees `parked` and unparks this thread.
                if self.calls.load(SeqCst) == seen {
                    std::thread::park_timeout(Duration::from_secs(1));
                }
                self.parked.store(false, SeqCst);
                quiet = 0;
            }
        }
    }

    /// A call is about to run wasm: the epoch advances until the guard is dropped.
    pub(crate) fn enter(self: &Arc<Self>) -> CallGuard {
        self.active.fetch_add(1, SeqCst);
        self.calls.fetch_add(1, SeqCst);
        if self.parked.load(SeqCst) {
            if let Some(t) = self.thread.get() {
                t.unpark();
            }
        }
        CallGuard(self.clone())
    }

    /// Ends the thread (within a second).
    pub(crate) fn stop(&self) {
        self.stop.store(true, SeqCst);
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }
}
