//! TideGate's access-control plugin: role-based rules deciding which statement kinds each
//! user may run on which tables. See `README.md` for the configuration.
//!
//! The logic lives in [`rbac`], plain functions over plain values: [`rbac::Policy::decide`]
//! is the plugin's `on-statement`, and [`rbac::Policy::privileges`] answers "what may this
//! user do" for tooling.

#![no_std]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod rbac;

use rbac::{Config, Policy};
use tidegate_plugin_sdk::prelude::*;
use tidegate_plugin_sdk::{export_plugin, Decision, Hooks, Plugin, PluginInfo, Statement};

/// The plugin.
pub struct AccessControl(Policy);

impl Plugin for AccessControl {
    fn init() -> Result<Self, String> {
        let config: Config = tidegate_plugin_sdk::config()?;
        Policy::new(config).map(AccessControl)
    }

    fn info(&self) -> PluginInfo {
        PluginInfo::new(
            env!("CARGO_PKG_NAME"),
            env!("CARGO_PKG_VERSION"),
            Hooks::STATEMENT,
        )
        .deterministic(true)
    }

    fn on_statement(&self, stmt: &Statement) -> Decision {
        let p = &stmt.principal;
        self.0.decide(&p.user, &p.roles, stmt.kind, &stmt.tables)
    }
}

export_plugin!(AccessControl);

#[cfg(test)]
mod tests;
