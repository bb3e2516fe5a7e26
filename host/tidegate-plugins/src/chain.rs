//! The ordered plugin chain: who runs for which statement, fail policies, the decision cache
//! and atomic swaps of a plugin's loaded version.

use crate::runtime::{CallError, LoadedPlugin, PluginDecision};
use crate::types::{Denial, Statement, Verdict};
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use tidegate_config::FailPolicy;

/// Cached deterministic decisions at most.
const CACHE_ENTRIES: usize = 50_000;

/// Cached decisions by user, then (plugin version, fingerprint): looked up by `&str`, so a hit
/// allocates nothing.
type DecisionCache = HashMap<String, HashMap<(u64, u128), Option<Denial>>>;

/// One place in the chain.
pub struct ChainEntry {
    /// Its name.
    pub name: String,
    /// What happens when it fails.
    pub fail: FailPolicy,
    /// Databases it runs for (empty = all).
    pub databases: Vec<String>,
    /// Users it runs for (empty = all).
    pub users: Vec<String>,
    /// The version in service; swapped atomically by a reload, so calls in flight finish on
    /// the version they started with.
    pub current: ArcSwap<LoadedPlugin>,
    /// Counters.
    pub stats: PluginStats,
}

/// Counters per plugin, ready for metrics.
#[derive(Default)]
pub struct PluginStats {
    /// Statements it denied.
    pub denials: AtomicU64,
    /// Calls that failed (trap, timeout, invalid value, busy).
    pub failures: AtomicU64,
    /// Decisions answered from the cache.
    pub cache_hits: AtomicU64,
    /// Versions swapped in.
    pub swaps: AtomicU64,
    /// Files that failed to load (the old version stayed).
    pub load_failures: AtomicU64,
}

impl ChainEntry {
    fn applies(&self, user: &str, database: &str) -> bool {
        (self.databases.is_empty() || self.databases.iter().any(|d| d == database))
            && (self.users.is_empty() || self.users.iter().any(|u| u == user))
    }

    /// Puts a new version in service.
    pub fn swap(&self, plugin: Arc<LoadedPlugin>) {
        self.current.store(plugin);
        self.stats.swaps.fetch_add(1, Relaxed);
    }
}

/// The plugins, in the order they run.
pub struct Chain {
    /// The entries.
    pub entries: Vec<ChainEntry>,
    cache: Mutex<DecisionCache>,
    cached: std::sync::atomic::AtomicUsize,
}

impl Chain {
    /// A chain of `entries`.
    pub fn new(entries: Vec<ChainEntry>) -> Chain {
        Chain {
            entries,
            cache: Mutex::new(HashMap::new()),
            cached: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Whether any plugin runs for statements of `user` on `database`.
    pub fn has_statement_hooks(&self, user: &str, database: &str) -> bool {
        self.entries
            .iter()
            .any(|e| e.applies(user, database) && e.current.load().has_statement_hook())
    }

    /// The entry named `name`.
    pub fn entry(&self, name: &str) -> Option<&ChainEntry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// Runs every applicable `on-statement` hook in order. A denial stops the chain; a
    /// rewrite passes the new text on. A failing plugin (trap, timeout, invalid answer,
    /// quarantine) denies with 58000 when it fails closed and is skipped when it fails open.
    pub async fn on_statement(&self, stmt: &Statement) -> Verdict {
        let mut current: Option<Statement> = None;
        let mut rewritten_by = Vec::new();
        for entry in &self.entries {
            let s = current.as_ref().unwrap_or(stmt);
            if !entry.applies(&s.principal.user, &s.principal.database) {
                continue;
            }
            let plugin = entry.current.load_full();
            if !plugin.has_statement_hook() {
                continue;
            }
            if plugin.is_quarantined() {
                match failed(entry, &format!("plugin {} is quarantined", entry.name)) {
                    Some(d) => return Verdict::Deny(d),
                    None => continue,
                }
            }
            // Deterministic answers depend on the shape only; after a rewrite the fingerprint
            // no longer describes the text, so nothing is cached or looked up.
            let key = (plugin.deterministic && current.is_none())
                .then_some((plugin.version, s.fingerprint));
            if let Some(k) = key {
                let hit = self
                    .cache
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(s.principal.user.as_str())
                    .and_then(|m| m.get(&k))
                    .cloned();
                if let Some(cached) = hit {
                    entry.stats.cache_hits.fetch_add(1, Relaxed);
                    match cached {
                        Some(d) => return Verdict::Deny(d),
                        None => continue,
                    }
                }
            }
            match plugin.on_statement(s).await {
                Ok(PluginDecision::Allow) => {
                    if let Some(k) = key {
                        self.remember(&s.principal.user, k, None);
                    }
                }
                Ok(PluginDecision::Deny(reason, sqlstate, hint)) => {
                    entry.stats.denials.fetch_add(1, Relaxed);
                    let d = Denial {
                        reason,
                        sqlstate,
                        hint,
                        plugin: entry.name.clone(),
                    };
                    if let Some(k) = key {
                        self.remember(&s.principal.user, k, Some(d.clone()));
                    }
                    return Verdict::Deny(d);
                }
                Ok(PluginDecision::Rewrite(sql)) => {
                    let mut next = s.clone();
                    next.sql = sql;
                    current = Some(next);
                    rewritten_by.push(entry.name.clone());
                }
                Err(e) => {
                    if let Some(d) = failed(entry, &call_failure(&e)) {
                        return Verdict::Deny(d);
                    }
                }
            }
        }
        match current {
            Some(s) => Verdict::Rewrite {
                sql: s.sql,
                by: rewritten_by,
            },
            None => Verdict::Allow,
        }
    }

    fn remember(&self, user: &str, key: (u64, u128), value: Option<Denial>) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if self.cached.fetch_add(1, Relaxed) >= CACHE_ENTRIES {
            cache.clear();
            self.cached.store(1, Relaxed);
        }
        cache.entry(user.to_owned()).or_default().insert(key, value);
    }
}

fn call_failure(e: &CallError) -> String {
    e.to_string()
}

/// Applies `entry`'s fail policy: a denial when it fails closed.
fn failed(entry: &ChainEntry, why: &str) -> Option<Denial> {
    entry.stats.failures.fetch_add(1, Relaxed);
    match entry.fail {
        FailPolicy::Open => None,
        FailPolicy::Closed => Some(Denial {
            reason: format!(
                "statement refused: policy plugin {} is unavailable ({why})",
                entry.name
            ),
            sqlstate: "58000".into(),
            hint: Some(
                "the broker's policy could not be evaluated; try again or ask an administrator"
                    .into(),
            ),
            plugin: entry.name.clone(),
        }),
    }
}
