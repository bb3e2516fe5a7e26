//! What the plugin chain needs from the host beyond the chain itself: where declared columns
//! are ([`columns`]), the plugin keys, and the chain's state as operators see it.

pub mod columns;

use std::sync::atomic::Ordering::Relaxed;
use tidegate_config::Config;
use tidegate_plugins::{Chain, Keys};

/// The keys of `config`, decoded (validated at load).
pub fn keys(config: &Config) -> Keys {
    use base64::Engine;
    let mut keys = Keys::default();
    for k in &config.plugins.keys {
        if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(k.secret.trim()) {
            if let Ok(key) = <[u8; 32]>::try_from(bytes.as_slice()) {
                keys.insert(&k.name, k.id, key);
            }
        }
    }
    keys
}

/// Each plugin in service: version, counters, quarantine and the last load error (for
/// `/readyz` and operators). `ready` is false for a quarantined plugin.
pub fn status(chain: Option<&Chain>) -> Vec<serde_json::Value> {
    let Some(chain) = chain else {
        return Vec::new();
    };
    chain
        .entries
        .iter()
        .map(|e| {
            let p = e.current.load();
            let last_error = e
                .stats
                .last_load_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            serde_json::json!({
                "name": e.name,
                "version": p.plugin_version,
                "file": p.path.display().to_string(),
                "ready": !p.is_quarantined(),
                "quarantined": p.is_quarantined(),
                "consecutive_failures": p.failures(),
                "calls": p.calls.load(Relaxed),
                "failures": e.stats.failures.load(Relaxed),
                "denials": e.stats.denials.load(Relaxed),
                "swaps": e.stats.swaps.load(Relaxed),
                "load_failures": e.stats.load_failures.load(Relaxed),
                "last_load_error": last_error,
            })
        })
        .collect()
}
