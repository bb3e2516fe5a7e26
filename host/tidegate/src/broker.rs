//! The composition root: [`Broker::start`] builds the shared state, the plugin chain and the
//! background tasks from a configuration, and [`Broker::run`] serves clients until shutdown.
//! `tidegate serve` and the test harness both start brokers this way; nothing else wires pools,
//! topology, catalog, plugins, cache, audit and the listeners together.

pub mod caggs;
pub mod plugins;
pub mod reload;

pub use crate::client::shared::{audit_sink, result_cache, ClientGuard, ServerError, Shared};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tidegate_config::Config;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

/// Why a broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The shared state could not be built.
    #[error(transparent)]
    Setup(#[from] ServerError),
    /// The plugin chain could not be built.
    #[error("plugins: {0}")]
    Plugins(#[from] plugins::ChainError),
    /// The plugin directory cannot be watched.
    #[error("watching the plugin directory: {0}")]
    PluginWatch(#[source] notify::Error),
    /// The SIGHUP handler cannot be installed.
    #[error("installing the SIGHUP handler: {0}")]
    Signal(#[source] std::io::Error),
}

/// Where a broker accepts clients.
pub struct Listeners {
    /// PostgreSQL protocol clients.
    pub sql: TcpListener,
    /// The HTTP API, when configured.
    pub http: Option<TcpListener>,
}

/// What only the broker's own tasks touch — reloads, plugin loading, continuous-aggregate
/// discovery — beside the state its sessions share. Sessions never see it.
pub struct Control {
    /// The sessions' state.
    pub shared: Arc<Shared>,
    /// Serializes reloads.
    reload_lock: tokio::sync::Mutex<()>,
    /// The wasm engine, made when the first plugin is configured.
    plugin_runtime: std::sync::Mutex<Option<Arc<tidegate_plugins::Runtime>>>,
    /// Continuous aggregates discovered for each optimizer plugin entry, by entry name.
    caggs: std::sync::Mutex<std::collections::HashMap<String, Vec<serde_json::Value>>>,
}

impl Control {
    /// Builds the shared state and loads the configured plugins.
    pub async fn start(config: Config) -> Result<Control, StartError> {
        let ctl = Control {
            shared: Arc::new(Shared::new(config)?),
            reload_lock: tokio::sync::Mutex::new(()),
            plugin_runtime: std::sync::Mutex::new(None),
            caggs: Default::default(),
        };
        let config = ctl.shared.config();
        if let Some(chain) = crate::broker::plugins::build_chain(&ctl, &config, None).await? {
            let topo = ctl
                .shared
                .build_topology((*config).clone(), 1, Some(chain))?;
            ctl.shared.install(topo);
        }
        Ok(ctl)
    }

    /// The topology in force.
    pub fn topology(&self) -> Arc<crate::upstream::topology::Topology> {
        self.shared.topology()
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        self.shared.config()
    }
}

/// A broker built from a configuration, ready to [`run`](Broker::run).
pub struct Broker {
    control: Arc<Control>,
    shared: Arc<Shared>,
    /// Tasks that live as long as the broker runs (plugin and configuration watches).
    tasks: Vec<JoinHandle<()>>,
}

impl Broker {
    /// Builds the shared state for `config`, loads the plugin chain and watches the plugin
    /// directory (when `plugins.watch`).
    pub async fn start(config: Config) -> Result<Broker, StartError> {
        let control = Arc::new(Control::start(config).await?);
        let mut tasks = Vec::new();
        if let Some(t) = plugins::watch(control.clone()).map_err(StartError::PluginWatch)? {
            tasks.push(t);
        }
        Ok(Broker {
            shared: control.shared.clone(),
            control,
            tasks,
        })
    }

    /// The broker's own side: reloads and plugin loading (tests drive reloads through it).
    pub fn control(&self) -> &Arc<Control> {
        &self.control
    }

    /// The state the broker's sessions share (tests and the HTTP endpoint read it).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Reloads the configuration from `path` on SIGHUP.
    pub fn reload_on_sighup(&mut self, path: PathBuf) -> Result<(), StartError> {
        let task =
            reload::on_sighup(self.control.clone(), path.clone()).map_err(StartError::Signal)?;
        self.tasks.push(task);
        self.reload_on_request(path);
        Ok(())
    }

    /// Reloads the configuration from `path` when the file changes, if `runtime.watch_config`
    /// (a directory that cannot be watched is logged: SIGHUP still reloads).
    pub fn watch_config_file(&mut self, path: PathBuf) {
        self.reload_on_request(path.clone());
        if !self.shared.config().runtime.watch_config {
            return;
        }
        match reload::watch(self.control.clone(), path) {
            Ok(t) => self.tasks.push(t),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the configuration file; SIGHUP still reloads");
            }
        }
    }

    /// Reloads from `path` when the admin console says RELOAD (once per broker).
    fn reload_on_request(&mut self, path: PathBuf) {
        if let Some(t) = reload::on_request(self.control.clone(), path) {
            self.tasks.push(t);
        }
    }

    /// Serves clients on `listeners` until `shutdown` completes, then drains: the listener
    /// closes, idle clients get 57P01, open transactions may finish within
    /// `limits.shutdown_timeout`, and whoever is left is disconnected.
    pub async fn run(self, listeners: Listeners, shutdown: impl Future<Output = ()>) {
        let http = listeners
            .http
            .map(|l| tokio::spawn(crate::http::serve(l, self.shared.clone())));
        let caggs = tokio::spawn(caggs::refresh(self.control.clone()));
        // SHUTDOWN on the admin console drains as the caller's shutdown does.
        let requested = self.shared.console.shutdown.clone();
        let shutdown = async move {
            tokio::select! {
                _ = shutdown => {}
                _ = requested.cancelled() => {}
            }
        };
        for w in &self.shared.config().warnings {
            tracing::warn!("{w}");
        }
        serve(listeners.sql, self.shared.clone(), shutdown).await;
        caggs.abort();
        for t in self.tasks.iter().chain(&http) {
            t.abort();
        }
    }
}

/// The accept loop and the drain after `shutdown` (see [`Broker::run`]).
async fn serve(listener: TcpListener, sh: Arc<Shared>, shutdown: impl Future<Output = ()>) {
    if let Some(audit) = audit_sink(&sh) {
        if !audit.wait_ready(Duration::from_secs(10)).await {
            tracing::error!(
                "the audit table is not writable yet: statements are refused until it is"
            );
        }
    }
    let tracker = TaskTracker::new();
    let reaper = tokio::spawn(reap(sh.clone()));
    let monitor = tokio::spawn({
        let sh = sh.clone();
        crate::upstream::health::monitor(move || sh.topology())
    });
    tokio::pin!(shutdown);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "accepting PostgreSQL connections");
    }
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let tcp = match accepted {
                    Ok((tcp, _peer)) => tcp,
                    Err(e) => {
                        // EMFILE and friends: back off briefly instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let guard = ClientGuard::admit(&sh);
                tracker.spawn(crate::client::handle_connection(sh.clone(), tcp, guard));
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!(
        clients = sh.clients.load(Ordering::Acquire),
        "shutting down: draining clients"
    );
    sh.shutdown.raise();
    tracker.close();
    let drain = sh.config().limits.shutdown_timeout.duration();
    if tokio::time::timeout(drain, tracker.wait()).await.is_err() {
        tracing::warn!("shutdown timeout: disconnecting the remaining clients");
        sh.force.raise();
        let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
    }
    reaper.abort();
    if let Some(audit) = sh.audit.get() {
        if !audit.flush(Duration::from_secs(5)).await {
            tracing::error!("shutdown: audit records still unwritten after 5 s");
        }
    }
    monitor.abort();
    for pool in sh.pools.all() {
        pool.close_idle();
    }
    tracing::info!("shutdown complete");
}

async fn reap(sh: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tick.tick().await;
        for pool in sh.pools.all() {
            pool.reap();
        }
    }
}
