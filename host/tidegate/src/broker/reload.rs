//! Configuration reload without a restart.
//!
//! SIGHUP, a change seen in the configuration file's directory, and `tidegate reload` all end in
//! [`reload`]: read and validate the file, build the new topology (nodes, TLS), swap it in with
//! one atomic store, then reconfigure the pools — resized in place, or retired when their server
//! left the configuration. Sessions take the new topology when they next start a transaction,
//! so a transaction open across a reload finishes on its own connection, and a reload that
//! changes nothing closes no connection. A file that does not validate changes nothing: the
//! running configuration stays, and the error is logged with its line and column.

use crate::broker::Control;
use crate::upstream::backend::{PoolSettings, PoolTimeouts};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tidegate_config::Config;

/// Changes seen in the watched directory within this time make one reload.
const DEBOUNCE: Duration = Duration::from_millis(250);

/// Why a reload was refused; the running configuration stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file is unreadable or invalid (the message has file:line:col).
    #[error("{0}")]
    Config(#[from] tidegate_config::ConfigError),
    /// The new configuration could not be put in service (e.g. its TLS key is unreadable).
    #[error("{0}")]
    Apply(#[from] crate::broker::ServerError),
    /// A configured plugin does not load.
    #[error("plugins: {0}")]
    Plugins(#[from] crate::broker::plugins::ChainError),
}

/// Settings read only at start; a reload that changes them keeps the running values.
fn keep_start_only(old: &Config, new: &mut Config) {
    if new.listen.sql != old.listen.sql {
        tracing::warn!("listen.sql changed: the new address takes effect only after a restart");
        new.listen = old.listen.clone();
    }
    if new.runtime.worker_threads != old.runtime.worker_threads {
        tracing::warn!("runtime.worker_threads changed: takes effect only after a restart");
        new.runtime.worker_threads = old.runtime.worker_threads;
    }
    if new.log.level != old.log.level || new.log.format != old.log.format {
        tracing::warn!("log settings changed: they take effect only after a restart");
        new.log = old.log.clone();
    }
}

/// Reads `path` and puts it in service. On error nothing changes and
/// `config_reload_failures` counts one more.
pub async fn reload(ctl: &Control, path: &Path) -> Result<u64, ReloadError> {
    let _one_at_a_time = ctl.reload_lock.lock().await;
    let result = apply(ctl, path).await;
    let sh = &ctl.shared;
    match &result {
        Ok(generation) => {
            sh.stats.reloads.fetch_add(1, Relaxed);
            tracing::info!(
                file = %path.display(),
                generation,
                "configuration reloaded"
            );
        }
        Err(e) => {
            sh.stats.reload_failures.fetch_add(1, Relaxed);
            tracing::error!(error = %e, "configuration reload failed: keeping the running configuration");
        }
    }
    result
}

async fn apply(ctl: &Control, path: &Path) -> Result<u64, ReloadError> {
    let sh = &ctl.shared;
    let mut config = Config::load(path)?;
    let old = sh.topology();
    keep_start_only(&old.config, &mut config);
    let plugins = crate::broker::plugins::build_chain(ctl, &config, old.plugins.as_deref()).await?;
    let topo = sh.build_topology(config, old.generation + 1, plugins)?;
    let generation = topo.generation;
    let timeouts = PoolTimeouts::from_config(&topo.config.pool);
    let size = topo.config.pool.size;
    let servers: Vec<(String, u16)> = topo
        .nodes
        .iter()
        .map(|n| (n.host.clone(), n.port))
        .collect();
    sh.install(topo);
    sh.columns.clear();
    sh.pools.reconfigure(|key| {
        let i = servers
            .iter()
            .position(|(h, p)| *h == key.host && *p == key.port)?;
        Some(PoolSettings {
            size,
            timeouts,
            replica: i != 0,
        })
    });
    Ok(generation)
}

/// Changes in one directory, delivered once each burst of events has settled.
pub(crate) struct DirWatch {
    _watcher: notify::RecommendedWatcher,
    rx: tokio::sync::mpsc::UnboundedReceiver<()>,
}

impl DirWatch {
    /// Watches `dir` (not recursively).
    pub(crate) fn new(dir: &Path) -> notify::Result<DirWatch> {
        use notify::Watcher;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if event.is_ok() {
                    let _ = tx.send(());
                }
            })?;
        watcher.watch(dir, notify::RecursiveMode::NonRecursive)?;
        Ok(DirWatch {
            _watcher: watcher,
            rx,
        })
    }

    /// Waits for a change, then until no further event came for [`DEBOUNCE`] (an editor's
    /// write, rename and chmod make one burst). `None` when the watcher stopped.
    pub(crate) async fn settled(&mut self) -> Option<()> {
        self.rx.recv().await?;
        loop {
            tokio::time::sleep(DEBOUNCE).await;
            let mut more = false;
            while self.rx.try_recv().is_ok() {
                more = true;
            }
            if !more {
                return Some(());
            }
        }
    }
}

/// Watches the directory of `path` and reloads when the file's contents change. Watching the
/// directory, not the file, sees editors' rename-saves and Kubernetes' `..data` link swaps;
/// a burst of events is debounced into one reload, and a rewrite with the same bytes is
/// ignored. Runs until the returned task is aborted.
pub fn watch(sh: Arc<Control>, path: PathBuf) -> notify::Result<tokio::task::JoinHandle<()>> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // What the file holds now, read before the watch exists and before this returns: read
    // in the task instead, a change made right after the broker started could be taken for
    // the starting content and never reloaded.
    let mut last = std::fs::read(&path).ok();
    let mut changes = DirWatch::new(&dir)?;
    Ok(tokio::spawn(async move {
        while changes.settled().await.is_some() {
            let now = std::fs::read(&path).ok();
            if now.is_none() || now == last {
                continue;
            }
            if reload(&sh, &path).await.is_ok() {
                last = now;
            }
        }
    }))
}

/// Reloads on every SIGHUP. Runs until the returned task is aborted.
pub fn on_sighup(sh: Arc<Control>, path: PathBuf) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP received: reloading the configuration");
            let _ = reload(&sh, &path).await;
        }
    }))
}

/// Answers the admin console's RELOAD requests. Runs until the returned task is aborted.
pub fn on_request(ctl: Arc<Control>, path: PathBuf) -> Option<tokio::task::JoinHandle<()>> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<crate::client::shared::ReloadReply>(4);
    ctl.shared.console.reload.set(tx).ok()?;
    Some(tokio::spawn(async move {
        while let Some(reply) = rx.recv().await {
            tracing::info!("RELOAD from the admin console");
            let _ = reply.send(reload(&ctl, &path).await.map_err(|e| e.to_string()));
        }
    }))
}
