//! The configured access-control plugin itself, loaded as the broker loads it, so the CLI's
//! verdicts and validation are the plugin's own and not a re-implementation.

use super::rules::{statement_kind, Kind};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tidegate_config::{Config, PluginEntry};
use tidegate_plugins::{
    LoadedPlugin, PluginDecision, PluginSpec, Principal, Runtime, Settings, Statement, TableRef,
};

/// The plugin file `entry` names, as the broker resolves it (`plugins.dir` is relative to the
/// working directory).
pub fn path(config: &Config, entry: &PluginEntry) -> PathBuf {
    PathBuf::from(&config.plugins.dir).join(&entry.file)
}

/// A loaded plugin and the engine it runs on.
pub struct Plugin {
    // Dropping the runtime stops its epoch ticker; keep it as long as the plugin.
    _runtime: Arc<Runtime>,
    loaded: Arc<LoadedPlugin>,
}

/// Loads `entry` with `config`'s settings and its keys, and runs its `init` (which checks the
/// plugin's configuration). The call deadline is at least a second: a CLI is not latency-bound,
/// and a spurious timeout would misreport a verdict.
pub async fn load(config: &Config, entry: &PluginEntry) -> Result<Plugin, String> {
    let mut settings = Settings::from_config(&config.plugins);
    settings.call_timeout = settings.call_timeout.max(Duration::from_secs(1));
    let runtime = Runtime::new(&settings).map_err(|e| e.to_string())?;
    let keys = crate::policy::keys(config).subset(&entry.keys);
    let spec = PluginSpec {
        name: entry.name.clone(),
        path: path(config, entry),
        config_json: serde_json::to_string(&entry.config)
            .map_err(|e| e.to_string())?
            .into(),
        keys: Arc::new(keys),
        keys_digest: String::new(),
        settings,
    };
    let loaded = runtime.load(spec).await.map_err(|e| e.to_string())?;
    Ok(Plugin {
        _runtime: runtime,
        loaded,
    })
}

/// The plugin's verdict on one synthetic statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed.
    Allow,
    /// Denied: SQLSTATE, message, hint.
    Deny(String, String, Option<String>),
    /// The plugin rewrote the statement (allowed, in another form).
    Rewrite,
    /// The plugin has no `on-statement` hook.
    NoHook,
    /// The call failed; the broker denies (access control fails closed).
    Failed(String),
}

impl Plugin {
    /// Asks the plugin about `kind` on `tables` by `principal`.
    pub async fn decide(
        &self,
        principal: &Arc<Principal>,
        kind: Kind,
        tables: &[TableRef],
    ) -> Verdict {
        if !self.loaded.has_statement_hook() {
            return Verdict::NoHook;
        }
        let stmt = Statement {
            principal: principal.clone(),
            sql: format!("/* tidegate role check: {kind} */"),
            fingerprint: 0,
            kind: statement_kind(kind),
            read_only: kind == Kind::Read,
            tables: tables.to_vec(),
            prepared: false,
        };
        match self.loaded.on_statement(&stmt).await {
            Ok(PluginDecision::Allow) => Verdict::Allow,
            Ok(PluginDecision::Deny(reason, sqlstate, hint)) => {
                Verdict::Deny(sqlstate, reason, hint)
            }
            Ok(PluginDecision::Rewrite(_)) => Verdict::Rewrite,
            Err(e) => Verdict::Failed(e.to_string()),
        }
    }
}
