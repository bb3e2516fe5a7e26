//! The audit policy as plain functions over plain values, tested natively.

use serde::Deserialize;
use tidegate_plugin_sdk::crypto::Crypto;
use tidegate_plugin_sdk::prelude::*;
use tidegate_plugin_sdk::{AuditEvent, AuditRecord, StatementKind};

/// The plugin's configuration (`[plugins.audit.config]`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Labels added to every record, e.g. `{"env": "prod"}`.
    pub labels: BTreeMap<String, String>,
    /// Statement kinds not audited, e.g. `["transaction"]`.
    pub skip_kinds: Vec<String>,
    /// Broker users not audited, e.g. a monitoring account.
    pub skip_users: Vec<String>,
    /// If not empty, only these decisions are audited (`"allow"`, `"deny"`, `"rewrite"`).
    pub only_decisions: Vec<String>,
    /// If set, only statements that failed (had a SQLSTATE) or were not allowed are audited.
    pub only_failures: bool,
    /// Labels added when a statement references a table, keyed by `"schema.table"` or
    /// `"table"` (any schema), e.g. `{"public.patients": {"classification": "pii"}}`.
    pub table_labels: BTreeMap<String, BTreeMap<String, String>>,
    /// If set, the name of a host HMAC key: the principal's user and role are replaced by
    /// `hmac:` and the first 16 bytes of HMAC-SHA-256(key, name) in hex.
    pub pseudonymize_key: Option<String>,
}

/// A configuration checked once, with kinds parsed.
#[derive(Debug, Clone)]
pub struct Policy {
    config: Config,
    skip_kinds: Vec<StatementKind>,
}

/// What replaces a name whose pseudonym could not be computed.
pub const REDACTED: &str = "<redacted>";

impl Policy {
    /// Checks a configuration: kinds and decisions must be known names.
    pub fn new(config: Config) -> Result<Self, String> {
        let skip_kinds = config
            .skip_kinds
            .iter()
            .map(|k| {
                StatementKind::parse(k).ok_or_else(|| {
                    format!(
                        "skip_kinds: unknown statement kind {k:?} \
                         (read, write, ddl, transaction, utility)"
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(d) = config
            .only_decisions
            .iter()
            .find(|d| !matches!(d.as_str(), "allow" | "deny" | "rewrite"))
        {
            return Err(format!(
                "only_decisions: unknown decision {d:?} (allow, deny, rewrite)"
            ));
        }
        if config.pseudonymize_key.as_deref() == Some("") {
            return Err("pseudonymize_key: empty key name".to_owned());
        }
        Ok(Policy { config, skip_kinds })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether `event` is audited at all.
    pub fn wants(&self, event: &AuditEvent) -> bool {
        let c = &self.config;
        !self.skip_kinds.contains(&event.kind)
            && !c.skip_users.contains(&event.principal.user)
            && (c.only_decisions.is_empty() || c.only_decisions.contains(&event.decision))
            && (!c.only_failures || event.sqlstate.is_some() || event.decision != "allow")
    }

    /// The record to persist for `event`, or `None` if it is not audited. Errors of the
    /// pseudonymizing HMAC are returned beside the record, whose names are then redacted.
    pub fn record(
        &self,
        mut event: AuditEvent,
        crypto: &impl Crypto,
    ) -> (Option<AuditRecord>, Option<String>) {
        if !self.wants(&event) {
            return (None, None);
        }
        let mut labels: BTreeMap<String, String> = self.config.labels.clone();
        for table in &event.tables {
            for key in [table.qualified(), table.name.clone()] {
                if let Some(extra) = self.config.table_labels.get(&key) {
                    labels.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
            }
        }
        let mut error = None;
        if let Some(key) = &self.config.pseudonymize_key {
            for name in [&mut event.principal.user, &mut event.principal.role] {
                match pseudonym(crypto, key, name) {
                    Ok(p) => *name = p,
                    Err(e) => {
                        *name = REDACTED.to_owned();
                        error = Some(e);
                    }
                }
            }
        }
        let labels = labels.into_iter().collect();
        (Some(AuditRecord { event, labels }), error)
    }
}

/// `hmac:` and the first 16 bytes of HMAC-SHA-256(key, name) in lower-case hex.
pub fn pseudonym(crypto: &impl Crypto, key: &str, name: &str) -> Result<String, String> {
    let mac = crypto
        .hmac(key, name.as_bytes())
        .map_err(|e| format!("pseudonymizing with key {key:?}: {}", e.message()))?;
    let hex: String = mac.iter().take(16).map(|b| format!("{b:02x}")).collect();
    Ok(format!("hmac:{hex}"))
}
