//! Loading plugins and calling them safely.

use crate::bindings::{self, wit, Hooks, LogLevel, Plugin, PluginPre};
use crate::crypto::Keys;
pub use crate::decision::PluginDecision;
pub use crate::limits::{CallError, LoadError, Settings};
use crate::ticker::{CallGuard, Ticker, TICK};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, StoreLimits,
    StoreLimitsBuilder, Trap, UpdateDeadline,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Largest string or list a plugin may return.
pub(crate) const MAX_RETURN_BYTES: usize = 1 << 20;
/// Log lines one call may write; more are dropped.
const MAX_LOG_LINES: u32 = 100;
/// Longest log line kept.
const MAX_LOG_LINE: usize = 1024;
/// Instances of all plugins alive at once (warm or in a call).
const MAX_INSTANCES: u32 = 256;
/// Warm instances kept per plugin.
const MAX_WARM: usize = 32;

/// Interfaces a plugin may import: our own, and the WASI pieces Rust's std links, which an
/// empty context leaves powerless (no preopened directories, environment or arguments).
const ALLOWED_IMPORTS: &[&str] = &[
    "tidegate:policy/host@0.1.0",
    "tidegate:policy/types@0.1.0",
    "wasi:cli/",
    "wasi:io/",
    "wasi:clocks/",
    "wasi:random/",
    "wasi:filesystem/",
];

/// The per-store state: what the host functions see.
pub(crate) struct HostState {
    plugin: Arc<str>,
    config: Arc<str>,
    keys: Arc<Keys>,
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    ticks: u32,
    max_ticks: u32,
    log_lines: u32,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wit::Host for HostState {}

impl bindings::tidegate::policy::host::Host for HostState {
    fn log(&mut self, level: LogLevel, message: String) {
        self.log_lines += 1;
        if self.log_lines > MAX_LOG_LINES {
            return;
        }
        let mut message = message;
        if message.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let plugin = &*self.plugin;
        match level {
            LogLevel::Trace => tracing::trace!(plugin, "{message}"),
            LogLevel::Debug => tracing::debug!(plugin, "{message}"),
            LogLevel::Info => tracing::info!(plugin, "{message}"),
            LogLevel::Warn => tracing::warn!(plugin, "{message}"),
            LogLevel::Error => tracing::error!(plugin, "{message}"),
        }
    }

    fn config(&mut self) -> String {
        self.config.to_string()
    }

    fn now(&mut self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64)
    }

    fn encrypt(
        &mut self,
        key: String,
        plaintext: Vec<u8>,
        aad: Vec<u8>,
    ) -> Result<Vec<u8>, bindings::CryptoError> {
        self.keys.encrypt(&key, &plaintext, &aad).map_err(to_wit)
    }

    fn decrypt(
        &mut self,
        ciphertext: Vec<u8>,
        aad: Vec<u8>,
    ) -> Result<Vec<u8>, bindings::CryptoError> {
        self.keys.decrypt(&ciphertext, &aad).map_err(to_wit)
    }

    fn hmac(&mut self, key: String, data: Vec<u8>) -> Result<Vec<u8>, bindings::CryptoError> {
        self.keys.hmac(&key, &data).map_err(to_wit)
    }
}

fn to_wit(e: crate::crypto::CryptoError) -> bindings::CryptoError {
    match e {
        crate::crypto::CryptoError::UnknownKey(k) => bindings::CryptoError::UnknownKey(k),
        crate::crypto::CryptoError::Invalid(m) => bindings::CryptoError::Invalid(m),
    }
}

/// The engine, the linker and the epoch ticker, shared by every plugin.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    versions: AtomicU64,
    pub(crate) ticker: Arc<Ticker>,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker.stop();
    }
}

impl Runtime {
    /// Sets up the engine (pooling allocator, epoch interruption) and starts the epoch ticker.
    pub fn new(settings: &Settings) -> Result<Arc<Runtime>, LoadError> {
        let engine_err = |e: wasmtime::Error| LoadError::Engine(format!("{e:#}"));
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(MAX_INSTANCES)
            .total_core_instances(MAX_INSTANCES * 4)
            .total_memories(MAX_INSTANCES * 2)
            .total_tables(MAX_INSTANCES * 2)
            .total_stacks(MAX_INSTANCES)
            .max_memory_size(settings.memory_limit.max(1 << 20))
            .max_memories_per_component(4)
            .max_tables_per_component(4)
            .max_core_instances_per_component(16)
            .max_component_instance_size(1 << 20)
            .max_core_instance_size(1 << 20)
            .table_elements(20_000);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .concurrency_support(false)
            .max_wasm_stack(512 << 10)
            .async_stack_size(2 << 20)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(engine_err)?;
        let mut linker = Linker::<HostState>::new(&engine);
        add_wasi(&mut linker).map_err(engine_err)?;
        Plugin::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(engine_err)?;
        let ticker = Ticker::start(engine.clone()).map_err(|e| LoadError::Engine(e.to_string()))?;
        Ok(Arc::new(Runtime {
            engine,
            linker,
            versions: AtomicU64::new(0),
            ticker,
        }))
    }

    /// Compiles and validates a plugin, instantiates it and calls its `init`. Blocking
    /// (compilation takes tens of milliseconds): call it from a blocking context.
    pub async fn load(self: &Arc<Self>, spec: PluginSpec) -> Result<Arc<LoadedPlugin>, LoadError> {
        let path = spec.path.display().to_string();
        let bytes = read_capped(&spec.path, spec.settings.max_file_bytes)?;
        let invalid = |message: String| LoadError::Invalid {
            path: path.clone(),
            message,
        };
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        // Compilation takes tens of milliseconds: off the event loop.
        let engine = self.engine.clone();
        let component =
            tokio::task::spawn_blocking(move || Component::from_binary(&engine, &bytes))
                .await
                .map_err(|e| invalid(e.to_string()))?
                .map_err(|e| invalid(format!("{e:#}")))?;
        for (name, _) in component.component_type().imports(&self.engine) {
            if !ALLOWED_IMPORTS.iter().any(|p| name.starts_with(p)) {
                return Err(invalid(format!(
                    "imports `{name}`, which plugins may not use"
                )));
            }
        }
        let pre = self
            .linker
            .instantiate_pre(&component)
            .and_then(PluginPre::new)
            .map_err(|e| invalid(format!("{e:#}")))?;
        let mut plugin = LoadedPlugin {
            name: spec.name.clone().into(),
            version: self.versions.fetch_add(1, Relaxed) + 1,
            path: spec.path.clone(),
            digest,
            hooks: Hooks::empty(),
            deterministic: false,
            columns: Vec::new(),
            plugin_version: String::new(),
            runtime: self.clone(),
            pre,
            spec,
            warm: Mutex::new(Vec::new()),
            failures: AtomicU32::new(0),
            quarantined: AtomicBool::new(false),
            calls: AtomicU64::new(0),
            traps: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            quarantines: AtomicU64::new(0),
            durations: Default::default(),
        };
        let init_err = |message: String| LoadError::Init {
            path: path.clone(),
            message,
        };
        let mut warm = plugin
            .instantiate_bare()
            .await
            .map_err(|e| init_err(e.to_string()))?;
        let info = warm
            .plugin
            .tidegate_policy_policy()
            .call_init(&mut warm.store)
            .await
            .map_err(|e| init_err(describe_trap(&e)))?
            .map_err(|m| init_err(truncate(m, 1000)))?;
        if info.name.len() > 200 || info.version.len() > 200 || info.columns.len() > 10_000 {
            return Err(init_err("plugin-info is too large".into()));
        }
        plugin.hooks = info.hooks;
        plugin.deterministic = info.deterministic;
        plugin.columns = info.columns;
        plugin.plugin_version = info.version;
        plugin.release(warm);
        Ok(Arc::new(plugin))
    }
}

fn add_wasi(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    use wasmtime::component::HasData;
    use wasmtime_wasi::cli::{WasiCli, WasiCliView};
    use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
    use wasmtime_wasi::filesystem::{WasiFilesystem, WasiFilesystemView};
    use wasmtime_wasi::p2::bindings::{cli, clocks, filesystem, io, random};
    use wasmtime_wasi::random::{WasiRandom, WasiRandomView};

    struct HasIo;
    impl HasData for HasIo {
        type Data<'a> = &'a mut ResourceTable;
    }
    type T = HostState;
    io::error::add_to_linker::<T, HasIo>(l, |t| t.ctx().table)?;
    io::poll::add_to_linker::<T, HasIo>(l, |t| t.ctx().table)?;
    io::streams::add_to_linker::<T, HasIo>(l, |t| t.ctx().table)?;
    cli::environment::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::exit::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stdin::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stdout::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stderr::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_input::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_output::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stdin::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stdout::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stderr::add_to_linker::<T, WasiCli>(l, T::cli)?;
    clocks::wall_clock::add_to_linker::<T, WasiClocks>(l, T::clocks)?;
    clocks::monotonic_clock::add_to_linker::<T, WasiClocks>(l, T::clocks)?;
    random::random::add_to_linker::<T, WasiRandom>(l, T::random)?;
    random::insecure::add_to_linker::<T, WasiRandom>(l, T::random)?;
    random::insecure_seed::add_to_linker::<T, WasiRandom>(l, T::random)?;
    filesystem::types::add_to_linker::<T, WasiFilesystem>(l, T::filesystem)?;
    filesystem::preopens::add_to_linker::<T, WasiFilesystem>(l, T::filesystem)?;
    Ok(())
}

fn read_capped(path: &Path, max: usize) -> Result<Vec<u8>, LoadError> {
    let file_err = |message: String| LoadError::File {
        path: path.display().to_string(),
        message,
    };
    let meta = std::fs::metadata(path).map_err(|e| file_err(e.to_string()))?;
    if meta.len() > max as u64 {
        return Err(file_err(format!(
            "{} bytes is over the {max}-byte limit",
            meta.len()
        )));
    }
    std::fs::read(path).map_err(|e| file_err(e.to_string()))
}

/// What to load.
#[derive(Debug, Clone)]
pub struct PluginSpec {
    /// Its name in the chain.
    pub name: String,
    /// Its component file.
    pub path: PathBuf,
    /// Its configuration as JSON.
    pub config_json: Arc<str>,
    /// The keys it may use.
    pub keys: Arc<Keys>,
    /// Identifies `keys` without holding them (to tell whether a reload changed them).
    pub keys_digest: String,
    /// Limits.
    pub settings: Settings,
}

/// A warm instance.
pub(crate) struct Warm {
    pub(crate) store: Store<HostState>,
    pub(crate) plugin: Plugin,
    /// Held while a call runs on it (the epoch keeps advancing); `None` while it waits.
    busy: Option<CallGuard>,
    /// When the call running on it started.
    started: std::time::Instant,
}

/// One loaded version of a plugin.
pub struct LoadedPlugin {
    /// Its name in the chain.
    pub name: Arc<str>,
    /// A process-wide version number: a new load gets a new one (cache keys use it).
    pub version: u64,
    /// The file it came from.
    pub path: PathBuf,
    /// SHA-256 of that file's bytes.
    pub digest: [u8; 32],
    hooks: Hooks,
    /// Its `on-statement` decisions may be cached by fingerprint.
    pub deterministic: bool,
    /// Columns its row and write hooks care about.
    pub columns: Vec<String>,
    /// The version the plugin reports.
    pub plugin_version: String,
    runtime: Arc<Runtime>,
    pre: PluginPre<HostState>,
    spec: PluginSpec,
    warm: Mutex<Vec<Warm>>,
    failures: AtomicU32,
    quarantined: AtomicBool,
    /// Calls made.
    pub calls: AtomicU64,
    /// Calls that trapped (panic, unreachable, out of memory or stack).
    pub traps: AtomicU64,
    /// Calls that ran past their deadline.
    pub timeouts: AtomicU64,
    /// Times it was quarantined (0 or 1 per loaded version).
    pub quarantines: AtomicU64,
    /// How long calls that returned took.
    pub durations: crate::histogram::Histogram,
}

impl LoadedPlugin {
    /// Whether loading `spec` would give this same plugin: same file contents, configuration
    /// and keys.
    pub fn same_source(&self, spec: &PluginSpec) -> bool {
        self.path == spec.path
            && self.spec.config_json == spec.config_json
            && self.spec.keys_digest == spec.keys_digest
            && std::fs::read(&spec.path)
                .is_ok_and(|b| <[u8; 32]>::from(Sha256::digest(&b)) == self.digest)
    }

    /// It implements `on-statement`.
    pub fn has_statement_hook(&self) -> bool {
        self.hooks.contains(Hooks::STATEMENT)
    }

    /// It implements `on-rows`.
    pub fn has_rows_hook(&self) -> bool {
        self.hooks.contains(Hooks::ROWS)
    }

    /// It implements `on-write-values`.
    pub fn has_write_values_hook(&self) -> bool {
        self.hooks.contains(Hooks::WRITE_VALUES)
    }

    /// It implements `on-audit`.
    pub fn has_audit_hook(&self) -> bool {
        self.hooks.contains(Hooks::AUDIT)
    }

    /// A call succeeded: the consecutive-failure count starts over.
    pub(crate) fn succeeded(&self) {
        self.failures.store(0, Relaxed);
    }

    /// It failed too often in a row and is not called until reloaded.
    pub fn is_quarantined(&self) -> bool {
        self.quarantined.load(Relaxed)
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures.load(Relaxed)
    }

    /// A fresh instance, initialized (every instance gets its own `init`).
    async fn instantiate(&self) -> Result<Warm, CallError> {
        let mut w = self.instantiate_bare().await?;
        match w
            .plugin
            .tidegate_policy_policy()
            .call_init(&mut w.store)
            .await
        {
            Ok(Ok(_)) => Ok(w),
            Ok(Err(m)) => Err(CallError::Trap(
                self.name.to_string(),
                truncate(format!("init: {m}"), 500),
            )),
            Err(e) => Err(self.trap(&e)),
        }
    }

    async fn instantiate_bare(&self) -> Result<Warm, CallError> {
        let settings = &self.spec.settings;
        let state = HostState {
            plugin: self.name.clone(),
            config: self.spec.config_json.clone(),
            keys: self.spec.keys.clone(),
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(settings.memory_limit)
                .instances(16)
                .tables(16)
                .memories(4)
                .table_elements(20_000)
                .trap_on_grow_failure(true)
                .build(),
            ticks: 0,
            max_ticks: deadline_ticks(settings.call_timeout),
            log_lines: 0,
        };
        let busy = Some(self.runtime.ticker.enter());
        let mut store = Store::new(&self.runtime.engine, state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_callback(|mut ctx| {
            let s = ctx.data_mut();
            s.ticks += 1;
            if s.ticks >= s.max_ticks {
                Ok(UpdateDeadline::Interrupt)
            } else {
                // Let the event loop run other sessions, then continue.
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store.set_epoch_deadline(1);
        match self.pre.instantiate_async(&mut store).await {
            Ok(plugin) => Ok(Warm {
                store,
                plugin,
                busy,
                started: std::time::Instant::now(),
            }),
            Err(e) => {
                let text = format!("{e:#}");
                if text.contains("maximum concurrent") || text.contains("pooling") {
                    Err(CallError::Busy(self.name.to_string()))
                } else {
                    Err(CallError::Trap(self.name.to_string(), truncate(text, 500)))
                }
            }
        }
    }

    pub(crate) async fn take(&self) -> Result<Warm, CallError> {
        let warm = self.warm.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut w = match warm {
            Some(w) => w,
            None => self.instantiate().await?,
        };
        self.rearm(&mut w);
        Ok(w)
    }

    /// Gives a warm instance a fresh budget (deadline, log lines) for its next call.
    pub(crate) fn rearm(&self, w: &mut Warm) {
        w.busy = Some(self.runtime.ticker.enter());
        w.started = std::time::Instant::now();
        let s = w.store.data_mut();
        s.ticks = 0;
        s.log_lines = 0;
        w.store.set_epoch_deadline(1);
    }

    pub(crate) fn release(&self, mut w: Warm) {
        w.busy = None;
        self.durations.observe(w.started.elapsed());
        let mut warm = self.warm.lock().unwrap_or_else(|e| e.into_inner());
        if warm.len() < MAX_WARM {
            warm.push(w);
        }
    }

    /// Records a call's outcome for the quarantine count; returns the error for the caller.
    pub(crate) fn failed(&self, e: CallError) -> CallError {
        let n = self.failures.fetch_add(1, Relaxed) + 1;
        match &e {
            CallError::Trap(..) => self.traps.fetch_add(1, Relaxed),
            CallError::Timeout(_) => self.timeouts.fetch_add(1, Relaxed),
            CallError::Invalid(..) | CallError::Busy(_) => 0,
        };
        if n >= self.spec.settings.quarantine_after && !self.quarantined.swap(true, Relaxed) {
            self.quarantines.fetch_add(1, Relaxed);
            tracing::error!(plugin = %self.name, failures = n, error = %e, "plugin quarantined");
        } else {
            tracing::warn!(plugin = %self.name, error = %e, "plugin call failed");
        }
        e
    }

    pub(crate) fn trap(&self, e: &wasmtime::Error) -> CallError {
        match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => CallError::Timeout(self.name.to_string()),
            _ => CallError::Trap(self.name.to_string(), describe_trap(e)),
        }
    }
}

fn deadline_ticks(timeout: Duration) -> u32 {
    (timeout.as_millis() / TICK.as_millis().max(1)).clamp(1, u32::MAX as u128) as u32
}

fn describe_trap(e: &wasmtime::Error) -> String {
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => "deadline exceeded".into(),
        Some(t) => t.to_string(),
        None => truncate(format!("{e:#}"), 500),
    }
}

pub(crate) fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}
