//! The configured plugin chain: built at start and on every reload (unchanged plugins are
//! kept, not recompiled), and a watch of the plugin directory that swaps in a plugin whose
//! file changed — atomically, calls in flight finishing on the old version. A file that does
//! not load keeps the old version in service; the reason is logged and counted.

use crate::broker::Control;
use crate::policy::keys;
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use tidegate_config::Config;
use tidegate_plugins::{Chain, ChainEntry, Keys, PluginSpec, Runtime, Settings};

fn keys_digest(config: &Config, allowed: &[String]) -> String {
    let mut h = Sha256::new();
    for k in config
        .plugins
        .keys
        .iter()
        .filter(|k| allowed.contains(&k.name))
    {
        h.update(k.name.as_bytes());
        h.update(k.id.to_be_bytes());
        h.update(k.secret.as_bytes());
    }
    format!("{:x}", h.finalize())
}

fn spec(
    sh: &Control,
    config: &Config,
    entry: &tidegate_config::PluginEntry,
    all_keys: &Keys,
) -> PluginSpec {
    PluginSpec {
        name: entry.name.clone(),
        path: PathBuf::from(&config.plugins.dir).join(&entry.file),
        config_json: crate::broker::caggs::plugin_config(Some(sh), entry)
            .to_string()
            .into(),
        keys: Arc::new(all_keys.subset(&entry.keys)),
        keys_digest: keys_digest(config, &entry.keys),
        settings: Settings::from_config(&config.plugins),
    }
}

/// Why the configured chain could not be built; the running chain (if any) stays.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The wasm engine could not be made.
    #[error("the plugin runtime: {0}")]
    Runtime(#[source] tidegate_plugins::LoadError),
    /// A plugin does not load.
    #[error("plugin {plugin}: {source}")]
    Load {
        /// Its name in the chain.
        plugin: String,
        /// Why.
        #[source]
        source: tidegate_plugins::LoadError,
    },
    /// A plugin with an audit hook, and no `audit.key`.
    #[error("plugin {0} has an on-audit hook: set audit.key to the [[plugins.keys]] entry that keys the audit chain")]
    NoAuditKey(String),
}

/// Builds the chain `config` asks for. A plugin whose file, configuration and keys are
/// unchanged since `old` is reused as it is (unless quarantined). Any plugin that fails to
/// load fails the whole build, so a reload keeps the previous chain.
pub async fn build_chain(
    sh: &Control,
    config: &Config,
    old: Option<&Chain>,
) -> Result<Option<Arc<Chain>>, ChainError> {
    if config.plugins.chain.is_empty() {
        return Ok(None);
    }
    let runtime = runtime(sh, config)?;
    let all_keys = keys(config);
    crate::broker::caggs::discover(sh, config).await;
    let mut entries = Vec::new();
    for e in &config.plugins.chain {
        let spec = spec(sh, config, e, &all_keys);
        let reused = old
            .and_then(|c| c.entry(&e.name))
            .map(|entry| entry.current.load_full())
            .filter(|p| !p.is_quarantined() && p.same_source(&spec));
        let plugin = match reused {
            Some(p) => p,
            None => runtime
                .load(spec)
                .await
                .map_err(|source| ChainError::Load {
                    plugin: e.name.clone(),
                    source,
                })?,
        };
        if plugin.has_audit_hook() && config.audit.key.is_empty() {
            return Err(ChainError::NoAuditKey(e.name.clone()));
        }
        entries.push(ChainEntry {
            name: e.name.clone(),
            fail: e.fail_policy(),
            databases: e.databases.clone(),
            users: e.users.clone(),
            current: arc_swap::ArcSwap::new(plugin),
            stats: Default::default(),
        });
    }
    Ok(Some(Arc::new(Chain::new(entries))))
}

fn runtime(sh: &Control, config: &Config) -> Result<Arc<Runtime>, ChainError> {
    let mut slot = sh.plugin_runtime.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(r) = slot.as_ref() {
        return Ok(r.clone());
    }
    let r = Runtime::new(&Settings::from_config(&config.plugins)).map_err(ChainError::Runtime)?;
    *slot = Some(r.clone());
    Ok(r)
}

/// Reloads the plugins whose files changed in the plugin directory. Runs until aborted.
pub fn watch(sh: Arc<Control>) -> notify::Result<Option<tokio::task::JoinHandle<()>>> {
    let config = sh.config();
    if config.plugins.chain.is_empty() || !config.plugins.watch {
        return Ok(None);
    }
    let mut changes = crate::broker::reload::DirWatch::new(&PathBuf::from(&config.plugins.dir))?;
    Ok(Some(tokio::spawn(async move {
        while changes.settled().await.is_some() {
            swap_changed(&sh).await;
        }
    })))
}

/// Loads every plugin of the current chain whose file (or injected configuration) differs from
/// the version in service and swaps it in; a file that fails keeps the old version.
pub async fn swap_changed(sh: &Control) {
    let topo = sh.topology();
    let Some(chain) = topo.plugins.as_ref() else {
        return;
    };
    let Ok(runtime) = runtime(sh, &topo.config) else {
        return;
    };
    let all_keys = keys(&topo.config);
    for e in &topo.config.plugins.chain {
        let Some(entry) = chain.entry(&e.name) else {
            continue;
        };
        let current = entry.current.load_full();
        let spec = spec(sh, &topo.config, e, &all_keys);
        if current.same_source(&spec) {
            continue;
        }
        match runtime.load(spec).await {
            Ok(p) => {
                tracing::info!(plugin = %e.name, version = %p.plugin_version, "plugin file changed: new version in service");
                entry.swap(p);
            }
            Err(err) => {
                entry.stats.load_failures.fetch_add(1, Relaxed);
                *entry
                    .stats
                    .last_load_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(err.to_string());
                tracing::error!(plugin = %e.name, error = %err, "plugin file changed but does not load: keeping the running version");
            }
        }
    }
}
