//! The ordered plugin chain: who runs for which statement, fail policies, the decision cache
//! and atomic swaps of a plugin's loaded version.

use crate::audit_cache::AuditCache;
use crate::runtime::{CallError, LoadedPlugin, PluginDecision};
use crate::types::{
    AuditEvent, AuditRecord, BoundValue, Column, Denial, Principal, Statement, Value, Verdict,
};
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use tidegate_config::FailPolicy;

/// Cached deterministic decisions at most.
const CACHE_ENTRIES: usize = 50_000;

/// Deterministic decisions by user, then database (the same text may name other tables in
/// another database), then (plugin version, fingerprint): looked up by `&str`, so a hit
/// allocates nothing.
type DecisionCache = HashMap<String, HashMap<String, HashMap<(u64, u128), Option<Denial>>>>;

/// Which hooks apply to a (user, database).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HookSet {
    /// Some `on-statement`.
    pub statement: bool,
    /// Some `on-rows` or `on-write-values`.
    pub data: bool,
    /// Some `on-audit`.
    pub audit: bool,
    /// Changes whenever an applicable plugin is swapped or quarantined: an answer derived
    /// from the chain under one stamp holds while the stamp does (see [`Chain::on_statement`]).
    pub stamp: u64,
}

impl HookSet {
    /// No hook at all.
    pub fn is_empty(&self) -> bool {
        !(self.statement || self.data || self.audit)
    }
}

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
    /// Why the last failed load failed (cleared by a successful one).
    pub last_load_error: std::sync::Mutex<Option<String>>,
}

impl ChainEntry {
    fn applies(&self, user: &str, database: &str) -> bool {
        (self.databases.is_empty() || self.databases.iter().any(|d| d == database))
            && (self.users.is_empty() || self.users.iter().any(|u| u == user))
    }

    /// Its denial of a statement, counted.
    fn denial(&self, reason: String, sqlstate: String, hint: Option<String>) -> Denial {
        self.stats.denials.fetch_add(1, Relaxed);
        Denial {
            reason,
            sqlstate,
            hint,
            plugin: self.name.clone(),
        }
    }

    /// Puts a new version in service.
    pub fn swap(&self, plugin: Arc<LoadedPlugin>) {
        self.current.store(plugin);
        self.stats.swaps.fetch_add(1, Relaxed);
        *self
            .stats
            .last_load_error
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// The plugins, in the order they run.
pub struct Chain {
    /// The entries.
    pub entries: Vec<ChainEntry>,
    cache: Mutex<DecisionCache>,
    cached: std::sync::atomic::AtomicUsize,
    audit_cache: AuditCache,
}

impl Chain {
    /// A chain of `entries`.
    pub fn new(entries: Vec<ChainEntry>) -> Chain {
        Chain {
            entries,
            cache: Mutex::new(HashMap::new()),
            cached: std::sync::atomic::AtomicUsize::new(0),
            audit_cache: AuditCache::default(),
        }
    }

    /// Which hooks apply to `user` on `database`: one walk over the chain.
    pub fn hooks(&self, user: &str, database: &str) -> HookSet {
        let mut set = HookSet::default();
        for e in self.entries.iter().filter(|e| e.applies(user, database)) {
            let p = e.current.load();
            set.statement |= p.has_statement_hook();
            set.data |= p.has_rows_hook() || p.has_write_values_hook();
            set.audit |= p.has_audit_hook();
            // Versions are unique and only grow; a quarantine never ends without a swap.
            set.stamp = set
                .stamp
                .wrapping_mul(0x100_0000_01b3)
                .wrapping_add(p.version << 1 | u64::from(p.is_quarantined()));
        }
        set
    }

    /// The entry named `name`.
    pub fn entry(&self, name: &str) -> Option<&ChainEntry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// Runs every applicable `on-statement` hook in order. A denial stops the chain; a
    /// rewrite passes the new text on. A failing plugin (trap, timeout, invalid answer,
    /// quarantine) denies with 58000 when it fails closed and is skipped when it fails open.
    pub async fn on_statement(&self, stmt: &Statement) -> Verdict {
        self.on_statement_settled(stmt).await.0
    }

    /// [`Chain::on_statement`], and whether the verdict is settled: every applicable hook
    /// declared itself deterministic and none failed, so the same principal gets the same
    /// verdict for any statement of this fingerprint while [`HookSet::stamp`] holds.
    pub async fn on_statement_settled(&self, stmt: &Statement) -> (Verdict, bool) {
        let mut settled = true;
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
                settled = false;
                match failed(entry, &format!("plugin {} is quarantined", entry.name)) {
                    Some(d) => return (Verdict::Deny(d), false),
                    None => continue,
                }
            }
            // Deterministic answers depend on the shape only; after a rewrite the fingerprint
            // no longer describes the text, so nothing is cached or looked up.
            let key = (plugin.deterministic && current.is_none())
                .then_some((plugin.version, s.fingerprint));
            settled &= key.is_some();
            match key.and_then(|k| self.recall(entry, &s.principal, k)) {
                Some(Some(d)) => return (Verdict::Deny(d), false),
                Some(None) => continue,
                None => {}
            }
            match plugin.on_statement(s).await {
                Ok(PluginDecision::Allow) => {
                    if let Some(k) = key {
                        self.remember(&s.principal, k, None);
                    }
                }
                Ok(PluginDecision::Deny(reason, sqlstate, hint)) => {
                    let d = entry.denial(reason, sqlstate, hint);
                    if let Some(k) = key {
                        self.remember(&s.principal, k, Some(d.clone()));
                    }
                    return (Verdict::Deny(d), false);
                }
                Ok(PluginDecision::Rewrite(sql)) => {
                    let mut next = s.clone();
                    next.sql = sql;
                    current = Some(next);
                    rewritten_by.push(entry.name.clone());
                }
                Err(e) => {
                    settled = false;
                    if let Some(d) = failed(entry, &call_failure(&e)) {
                        return (Verdict::Deny(d), false);
                    }
                }
            }
        }
        match current {
            Some(s) => (
                Verdict::Rewrite {
                    sql: s.sql,
                    by: rewritten_by,
                },
                false,
            ),
            None => (Verdict::Allow, settled),
        }
    }

    /// The columns (`schema.table.column` or `table.column`) that the row and write hooks
    /// applying to `user` on `database` declared; empty when no such hook applies.
    pub fn data_columns(&self, user: &str, database: &str) -> Vec<String> {
        let mut out = Vec::new();
        for e in self.entries.iter().filter(|e| e.applies(user, database)) {
            let p = e.current.load();
            if p.has_rows_hook() || p.has_write_values_hook() {
                for c in &p.columns {
                    if !out.contains(c) {
                        out.push(c.clone());
                    }
                }
            }
        }
        out
    }

    /// Whether a row or write hook applying to `user` on `database` declared a column of a
    /// table named `table` (any schema). Allocates nothing: it runs for every statement.
    pub fn declares_table(&self, user: &str, database: &str, table: &str) -> bool {
        self.entries
            .iter()
            .filter(|e| e.applies(user, database))
            .any(|e| {
                let p = e.current.load();
                (p.has_rows_hook() || p.has_write_values_hook())
                    && p.columns
                        .iter()
                        .any(|c| c.rsplit('.').nth(1) == Some(table))
            })
    }

    /// Runs every applicable `on-rows` hook in order over a batch of rows (the values of
    /// `columns`). A denial, or a failure of a plugin that fails closed, refuses the result.
    pub async fn on_rows(
        &self,
        stmt: &Statement,
        columns: &[Column],
        mut rows: Vec<Vec<Value>>,
    ) -> Result<Vec<Vec<Value>>, Denial> {
        for entry in self.data_entries(stmt, |p| p.has_rows_hook()) {
            let plugin = entry.current.load_full();
            if plugin.is_quarantined() {
                fail_or_skip(entry, &format!("plugin {} is quarantined", entry.name))?;
                continue;
            }
            match plugin.on_rows(stmt, columns, &rows).await {
                Ok(Ok(next)) => rows = next,
                Ok(Err(d)) => {
                    entry.stats.denials.fetch_add(1, Relaxed);
                    return Err(d);
                }
                Err(e) => fail_or_skip(entry, &call_failure(&e))?,
            }
        }
        Ok(rows)
    }

    /// Runs every applicable `on-write-values` hook in order; returns the values to send.
    pub async fn on_write_values(
        &self,
        stmt: &Statement,
        mut values: Vec<BoundValue>,
    ) -> Result<Vec<Value>, Denial> {
        for entry in self.data_entries(stmt, |p| p.has_write_values_hook()) {
            let plugin = entry.current.load_full();
            if plugin.is_quarantined() {
                fail_or_skip(entry, &format!("plugin {} is quarantined", entry.name))?;
                continue;
            }
            match plugin.on_write_values(stmt, &values).await {
                Ok(Ok(next)) => {
                    for (v, n) in values.iter_mut().zip(next) {
                        v.value = n;
                    }
                }
                Ok(Err(d)) => {
                    entry.stats.denials.fetch_add(1, Relaxed);
                    return Err(d);
                }
                Err(e) => fail_or_skip(entry, &call_failure(&e))?,
            }
        }
        Ok(values.into_iter().map(|v| v.value).collect())
    }

    /// Runs every applicable `on-audit` hook over a batch of events; returns the records to
    /// persist, by plugin, in event order (an event's records in chain order). Each plugin
    /// sees the whole batch on one instance. A plugin that fails still leaves a record — the
    /// event as the host saw it, labelled with the failure — so no statement goes unrecorded.
    pub async fn on_audit(&self, events: &[AuditEvent]) -> Vec<(String, AuditRecord)> {
        // Answers per applicable plugin, each one per event.
        let mut answers = Vec::new();
        for entry in &self.entries {
            let plugin = entry.current.load_full();
            if !plugin.has_audit_hook() {
                continue;
            }
            let mine: Vec<usize> = (0..events.len())
                .filter(|&i| {
                    let p = &events[i].principal;
                    entry.applies(&p.user, &p.database)
                })
                .collect();
            if mine.is_empty() {
                continue;
            }
            let results = if plugin.is_quarantined() {
                let why = format!("plugin {} is quarantined", entry.name);
                mine.iter().map(|_| Err(why.clone())).collect()
            } else {
                self.audit_answers(entry, &plugin, events, &mine).await
            };
            answers.push((entry, mine.into_iter().zip(results).peekable()));
        }
        let mut out = Vec::with_capacity(events.len());
        for (i, event) in events.iter().enumerate() {
            for (entry, results) in &mut answers {
                let Some((_, result)) = results.next_if(|(j, _)| *j == i) else {
                    continue;
                };
                match result {
                    Ok(Some(r)) => out.push((entry.name.clone(), r)),
                    Ok(None) => {}
                    Err(failure) => {
                        entry.stats.failures.fetch_add(1, Relaxed);
                        out.push((
                            entry.name.clone(),
                            AuditRecord {
                                event: event.clone(),
                                labels: vec![("audit_plugin_error".into(), failure)],
                            },
                        ));
                    }
                }
            }
        }
        out
    }

    /// `plugin`'s answers to the events at `mine`, in order: kept answers of a deterministic
    /// plugin (see [`AuditCache`]), then one batch of calls for the rest.
    async fn audit_answers(
        &self,
        entry: &ChainEntry,
        plugin: &LoadedPlugin,
        events: &[AuditEvent],
        mine: &[usize],
    ) -> Vec<Result<Option<AuditRecord>, String>> {
        let mut results: Vec<Option<Result<Option<AuditRecord>, String>>> = vec![None; mine.len()];
        let mut misses = Vec::new();
        for (k, &i) in mine.iter().enumerate() {
            let kept = plugin
                .deterministic
                .then(|| self.audit_cache.get(plugin.version, &events[i]))
                .flatten();
            match kept {
                Some(answer) => {
                    entry.stats.cache_hits.fetch_add(1, Relaxed);
                    results[k] = Some(Ok(answer));
                }
                None => misses.push(k),
            }
        }
        if !misses.is_empty() {
            let answers = if misses.len() == events.len() {
                plugin.on_audit_many(events).await
            } else {
                let subset: Vec<AuditEvent> =
                    misses.iter().map(|&k| events[mine[k]].clone()).collect();
                plugin.on_audit_many(&subset).await
            };
            for (&k, answer) in misses.iter().zip(answers) {
                if let (true, Ok(a)) = (plugin.deterministic, &answer) {
                    self.audit_cache.put(plugin.version, &events[mine[k]], a);
                }
                results[k] = Some(answer.map_err(|e| call_failure(&e)));
            }
        }
        results.into_iter().map(|r| r.unwrap_or(Ok(None))).collect()
    }

    fn data_entries<'a>(
        &'a self,
        stmt: &'a Statement,
        hook: impl Fn(&crate::LoadedPlugin) -> bool + 'a,
    ) -> impl Iterator<Item = &'a ChainEntry> + 'a {
        let (user, db) = (&stmt.principal.user, &stmt.principal.database);
        self.entries
            .iter()
            .filter(move |e| e.applies(user, db) && hook(&e.current.load()))
    }

    /// The deterministic decision kept for `who` under `key` (`Some(None)`: allowed), counted
    /// as a cache hit of `entry`; `None` when there is none.
    fn recall(
        &self,
        entry: &ChainEntry,
        who: &Principal,
        key: (u64, u128),
    ) -> Option<Option<Denial>> {
        let hit = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(who.user.as_str())
            .and_then(|m| m.get(who.database.as_str()))
            .and_then(|m| m.get(&key))
            .cloned();
        if hit.is_some() {
            entry.stats.cache_hits.fetch_add(1, Relaxed);
        }
        hit
    }

    fn remember(&self, who: &Principal, key: (u64, u128), value: Option<Denial>) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if self.cached.fetch_add(1, Relaxed) >= CACHE_ENTRIES {
            cache.clear();
            self.cached.store(1, Relaxed);
        }
        cache
            .entry(who.user.clone())
            .or_default()
            .entry(who.database.clone())
            .or_default()
            .insert(key, value);
    }
}

fn call_failure(e: &CallError) -> String {
    e.to_string()
}

/// Applies `entry`'s fail policy to a data hook: `Err` when it fails closed.
fn fail_or_skip(entry: &ChainEntry, why: &str) -> Result<(), Denial> {
    match failed(entry, why) {
        Some(d) => Err(d),
        None => Ok(()),
    }
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
