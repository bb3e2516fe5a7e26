//! `tidegate audit verify` and `tidegate audit logs`: reading the audit table back.

use super::chain::{hex, Break, ChainKey, Checkpoint, Row, Verifier};
use super::store::Store;
use anyhow::{anyhow, Context};
use std::path::Path;
use tidegate_config::Config;

/// What `verify` found.
pub enum Outcome {
    /// Every record links; `records` were checked against `checkpoints` checkpoints.
    Intact {
        /// Records checked.
        records: i64,
        /// Checkpoints checked.
        checkpoints: usize,
    },
    /// The chain breaks.
    Broken(Break),
}

fn key(config: &Config) -> anyhow::Result<ChainKey> {
    ChainKey::new(crate::policy::keys(config), &config.audit.key)
        .ok_or_else(|| anyhow!("audit.key names no [[plugins.keys]] entry"))
}

/// Reads the signed checkpoints in `file`; a line whose signature fails is an error (the
/// checkpoint file itself was tampered with).
pub fn read_checkpoints(key: &ChainKey, file: &Path) -> anyhow::Result<Vec<Checkpoint>> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| file.display().to_string()),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            key.read_checkpoint(l).ok_or_else(|| {
                anyhow!(
                    "{}:{}: checkpoint is malformed or not signed with the audit key",
                    file.display(),
                    i + 1
                )
            })
        })
        .collect()
}

/// Walks the whole chain in `config`'s audit table.
pub async fn verify(config: &Config, checkpoint_file: Option<&Path>) -> anyhow::Result<Outcome> {
    let key = key(config)?;
    let file = checkpoint_file.map(Path::to_path_buf).or_else(|| {
        (!config.audit.checkpoint_file.is_empty())
            .then(|| config.audit.checkpoint_file.clone().into())
    });
    let checkpoints = match &file {
        Some(f) => read_checkpoints(&key, f)?,
        None => Vec::new(),
    };
    let n_checkpoints = checkpoints.len();
    let store = Store::new(config);
    let mut v = Verifier::new(&key, checkpoints);
    // The head first: records written after it was read may follow it in the walk, but every
    // record up to it must be there.
    if let Some((seq, hash)) = store.last().await.context("reading the audit chain head")? {
        v.expect_head(seq, hash);
    }
    store
        .walk(|r| v.push(r))
        .await
        .context("reading the audit table")?;
    Ok(match v.finish() {
        Ok(records) => Outcome::Intact {
            records,
            checkpoints: n_checkpoints,
        },
        Err(b) => Outcome::Broken(b),
    })
}

/// The seed's `get_logs`: records of `user` between `from` and `to`.
pub async fn logs(
    config: &Config,
    user: Option<&str>,
    from: Option<&str>,
    to: Option<&str>,
    limit: i64,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let rows = Store::new(config)
        .logs(user, from, to, limit)
        .await
        .context("reading the audit table")?;
    Ok(rows.iter().map(to_json).collect())
}

fn to_json(r: &Row) -> serde_json::Value {
    serde_json::json!({
        "seq": r.seq,
        "at_us": r.at_us,
        "plugin": &*r.plugin,
        "user": &*r.username,
        "role": &*r.role,
        "database": &*r.database,
        "kind": r.kind,
        "tables": &*r.tables,
        "fingerprint": &*r.fingerprint,
        "decision": r.decision,
        "decided_by": r.decided_by,
        "rows": r.rows,
        "duration_us": r.duration_us,
        "sqlstate": r.sqlstate,
        "labels": serde_json::from_str::<serde_json::Value>(&r.labels).unwrap_or_default(),
        "hash": hex(&r.hash),
    })
}
