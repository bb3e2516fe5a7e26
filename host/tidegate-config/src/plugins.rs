//! `[plugins]`: the policy plugins' chain, limits and keys.

use crate::Millis;
use serde::Deserialize;

/// `[plugins]`: sandboxed WebAssembly policy plugins, run in chain order for every statement.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Plugins {
    /// Directory the plugin files are relative to (relative to the working directory).
    pub dir: String,
    /// Wall-clock budget of one plugin call; past it the call traps (and its fail policy holds).
    pub call_timeout: Millis,
    /// Linear memory a plugin instance may grow to, in bytes.
    pub memory_limit: usize,
    /// Largest plugin file accepted, in bytes.
    pub max_file_bytes: usize,
    /// Consecutive failures after which a plugin is quarantined (its fail policy applies
    /// without calling it) until its file changes or the configuration is reloaded.
    pub quarantine_after: u32,
    /// Watch plugin files and swap a changed one in atomically.
    pub watch: bool,
    /// How often continuous aggregates are re-read for optimizer plugins (`"0"`: only at
    /// start and reload).
    pub cagg_refresh: Millis,
    /// Keys the host uses for plugins' crypto calls, by name. Never given to plugins.
    pub keys: Vec<PluginKey>,
    /// The plugins, in the order they run.
    pub chain: Vec<PluginEntry>,
}

impl Default for Plugins {
    fn default() -> Self {
        Plugins {
            dir: ".".into(),
            call_timeout: Millis(5),
            memory_limit: 16 << 20,
            max_file_bytes: 10 << 20,
            quarantine_after: 5,
            watch: true,
            cagg_refresh: Millis(30_000),
            keys: Vec::new(),
            chain: Vec::new(),
        }
    }
}

/// What happens to a statement when a plugin fails (traps, times out, returns garbage).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailPolicy {
    /// The statement is refused with a clear error.
    Closed,
    /// The plugin is skipped.
    Open,
}

/// The kind of a plugin, which sets its default fail policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PluginKind {
    /// Access control: fails closed.
    AccessControl,
    /// Field encryption: fails closed.
    Encryption,
    /// Audit: fails closed.
    Audit,
    /// Query optimization: fails open.
    Optimizer,
    /// Anything else: fails closed.
    #[default]
    Other,
}

impl PluginKind {
    /// The fail policy of this kind.
    pub fn default_fail_policy(self) -> FailPolicy {
        match self {
            PluginKind::Optimizer => FailPolicy::Open,
            _ => FailPolicy::Closed,
        }
    }
}

/// `[[plugins.chain]]`: one plugin.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PluginEntry {
    /// A unique name (logs, errors, audit).
    pub name: String,
    /// The component file, relative to `plugins.dir`.
    pub file: String,
    /// What the plugin is for.
    pub kind: PluginKind,
    /// Overrides the kind's fail policy.
    pub fail: Option<FailPolicy>,
    /// Databases it applies to (empty = all).
    pub databases: Vec<String>,
    /// Broker users it applies to (empty = all).
    pub users: Vec<String>,
    /// The plugin's own configuration, handed to it as JSON.
    pub config: toml::Table,
    /// Key names the plugin may use for crypto calls.
    pub keys: Vec<String>,
}

impl PluginEntry {
    /// The effective fail policy.
    pub fn fail_policy(&self) -> FailPolicy {
        self.fail.unwrap_or(self.kind.default_fail_policy())
    }

    /// Whether the plugin runs for `user` on `database`.
    pub fn applies_to(&self, user: &str, database: &str) -> bool {
        (self.databases.is_empty() || self.databases.iter().any(|d| d == database))
            && (self.users.is_empty() || self.users.iter().any(|u| u == user))
    }
}

/// `[[plugins.keys]]`: a 256-bit key. Several entries may share a name with different ids
/// (rotation): the highest id encrypts, every id decrypts.
#[derive(Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PluginKey {
    /// The name plugins use.
    pub name: String,
    /// The version, recorded in each ciphertext's header.
    pub id: u32,
    /// 32 bytes, base64.
    pub secret: String,
}

impl std::fmt::Debug for PluginKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginKey")
            .field("name", &self.name)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}
