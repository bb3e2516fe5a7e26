//! TideGate's encryption plugin: encrypts the values written to configured sensitive columns
//! with a host key, and on the way back decrypts them for readers holding a configured role
//! and masks them for everyone else. See `README.md` for the configuration and the stored
//! format (`tgenc:v1:` + base64 of the host's ciphertext).
//!
//! The logic lives in [`policy`], plain functions over plain values taking the host's
//! cryptography as a [`tidegate_plugin_sdk::crypto::Crypto`].

#![no_std]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod base64;
pub mod policy;

use policy::{Config, Policy};
use tidegate_plugin_sdk::crypto::HostCrypto;
use tidegate_plugin_sdk::prelude::*;
use tidegate_plugin_sdk::{
    export_plugin, log, BoundValue, Column, Denial, Hooks, Plugin, PluginInfo, Statement, Value,
};

/// The plugin.
pub struct Encryption(Policy);

impl Plugin for Encryption {
    fn init() -> Result<Self, String> {
        let config: Config = tidegate_plugin_sdk::config()?;
        Policy::new(config).map(Encryption)
    }

    fn info(&self) -> PluginInfo {
        PluginInfo::new(
            env!("CARGO_PKG_NAME"),
            env!("CARGO_PKG_VERSION"),
            Hooks::ROWS | Hooks::WRITE_VALUES,
        )
        .deterministic(true)
        .columns(self.0.column_names())
    }

    fn on_rows(
        &self,
        stmt: &Statement,
        columns: &[Column],
        rows: Vec<Vec<Value>>,
    ) -> Result<Vec<Vec<Value>>, Denial> {
        let (rows, failures) = self.0.rows(&stmt.principal, columns, rows, &HostCrypto)?;
        if let Some(first) = failures.first() {
            log::warn(&format!("masked {} value(s): {first}", failures.len()));
        }
        Ok(rows)
    }

    fn on_write_values(
        &self,
        _stmt: &Statement,
        values: Vec<BoundValue>,
    ) -> Result<Vec<Value>, Denial> {
        self.0.write_values(values, &HostCrypto)
    }
}

export_plugin!(Encryption);

#[cfg(test)]
mod tests;
