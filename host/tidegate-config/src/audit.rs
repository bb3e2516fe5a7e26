//! `[audit]`: where the broker persists audit records, and the hash chain that makes them
//! tamper-evident.

use crate::{Config, Millis};
use serde::Deserialize;

/// `[audit]`: used when a plugin with an `on-audit` hook is in the chain.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Audit {
    /// Database holding the audit table, on the primary (default: `upstream.primary.database`).
    pub database: String,
    /// The audit table: only [`Audit::TABLE`], the table TideGate's migrations (`migrations/`)
    /// create, with its one-row chain head `events_head` beside it. The key stays so that
    /// files naming it keep loading.
    pub table: String,
    /// Name of the `[[plugins.keys]]` entry whose highest id keys the HMAC chain.
    pub key: String,
    /// File that signed checkpoints are appended to (keep it off the database host); empty
    /// for none. Without checkpoints, deleting the newest records cannot be detected.
    pub checkpoint_file: String,
    /// A checkpoint after this many records …
    pub checkpoint_every: u64,
    /// … or this long, whichever comes first.
    pub checkpoint_interval: Millis,
    /// Records written per batch (one COPY, one commit) at most.
    pub batch_size: usize,
    /// How long records gather before their batch is written. Longer batches cost the
    /// database fewer commits; statements never wait for them.
    pub flush_interval: Millis,
    /// Records that may wait for the database; when full (the database is down or slow),
    /// statements are refused (fail closed) until it drains.
    pub queue: usize,
    /// While the audit table is unreachable (the server restarting: connection refused or
    /// reset, shutting down, starting up) statements still run, their records waiting in the
    /// queue, for at most this long; then they are refused until it is back. Other write
    /// failures (a constraint, a permission) refuse statements at once. 0 = no grace.
    pub outage_grace: Millis,
}

impl Default for Audit {
    fn default() -> Self {
        Audit {
            database: String::new(),
            table: Audit::TABLE.into(),
            key: String::new(),
            checkpoint_file: String::new(),
            checkpoint_every: 1000,
            checkpoint_interval: Millis(60_000),
            batch_size: 2000,
            flush_interval: Millis(100),
            queue: 100_000,
            outage_grace: Millis(10_000),
        }
    }
}

impl Audit {
    /// The audit table, `schema.table`, as TideGate's migrations (`migrations/`) define it:
    /// they own its DDL, and sqlx migrations are fixed SQL, so the name is fixed too.
    pub const TABLE: &'static str = "tidegate_audit.events";

    /// The database holding the table.
    pub fn database<'a>(&'a self, config: &'a Config) -> &'a str {
        if self.database.is_empty() {
            &config.upstream.primary.database
        } else {
            &self.database
        }
    }

    /// The table as (schema, name).
    pub fn table_parts(&self) -> (&str, &str) {
        self.table
            .split_once('.')
            .unwrap_or(("public", &self.table))
    }
}

impl Config {
    pub(crate) fn check_audit(&self) -> Result<(), (String, String)> {
        let a = &self.audit;
        let err = |p: &str, m: &str| Err((format!("audit.{p}"), m.to_owned()));
        if a.table != Audit::TABLE {
            return err(
                "table",
                &format!(
                    "must be {:?} (or left out): TideGate's migrations create the audit table \
                     and name it",
                    Audit::TABLE
                ),
            );
        }
        if a.batch_size == 0 || a.queue == 0 || a.checkpoint_every == 0 {
            return err(
                "batch_size",
                "batch_size, queue and checkpoint_every must be at least 1",
            );
        }
        if a.flush_interval.0 == 0 || a.checkpoint_interval.0 == 0 {
            return err(
                "flush_interval",
                "flush_interval and checkpoint_interval must be positive",
            );
        }
        if !a.key.is_empty() && !self.plugins.keys.iter().any(|k| k.name == a.key) {
            return err(
                "key",
                &format!("no [[plugins.keys]] entry named {:?}", a.key),
            );
        }
        let audits = self
            .plugins
            .chain
            .iter()
            .any(|e| e.kind == crate::PluginKind::Audit);
        if audits && a.key.is_empty() {
            return err(
                "key",
                "an audit plugin is in the chain: name the [[plugins.keys]] entry that keys the audit hash chain",
            );
        }
        Ok(())
    }
}
