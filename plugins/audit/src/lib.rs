//! TideGate's audit plugin: turns every finished statement into an audit record with
//! configured labels, skipping the kinds, users and decisions it is told to. It sees what the
//! host's audit event carries — fingerprints, never literal values or parameters.
//!
//! See `README.md` for the configuration.

#![no_std]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod policy;

use policy::{Config, Policy};
use tidegate_plugin_sdk::crypto::HostCrypto;
use tidegate_plugin_sdk::prelude::*;
use tidegate_plugin_sdk::{export_plugin, log, AuditEvent, AuditRecord, Hooks, Plugin, PluginInfo};

/// The plugin.
pub struct Audit(Policy);

impl Plugin for Audit {
    fn init() -> Result<Self, String> {
        let config: Config = tidegate_plugin_sdk::config()?;
        Policy::new(config).map(Audit)
    }

    fn info(&self) -> PluginInfo {
        PluginInfo::new(
            env!("CARGO_PKG_NAME"),
            env!("CARGO_PKG_VERSION"),
            Hooks::AUDIT,
        )
        .deterministic(true)
    }

    fn on_audit(&self, event: AuditEvent) -> Option<AuditRecord> {
        let (record, error) = self.0.record(event, &HostCrypto);
        if let Some(error) = error {
            log::error(&error);
        }
        record
    }
}

export_plugin!(Audit);

#[cfg(test)]
mod tests;
