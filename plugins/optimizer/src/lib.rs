//! TideGate's optimizer plugin for TimescaleDB: it refuses (or logs) reads of hypertables with
//! no time range, rewrites queries that a continuous aggregate answers to read the aggregate,
//! and caps plain SELECTs on hypertables with a LIMIT. See `README.md`.
//!
//! It reads SQL with a small lexer ([`lexer`]) and token scans, not a parser: every rule
//! recognises a narrow shape exactly and leaves anything else alone — allowing a statement
//! unchanged is always safe.

#![no_std]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod cagg;
pub mod config;
pub mod guard;
pub mod lexer;
pub mod limit;
pub mod policy;
pub mod scan;

use config::{Config, Policy};
use tidegate_plugin_sdk::prelude::*;
use tidegate_plugin_sdk::{export_plugin, log, Decision, Hooks, Plugin, PluginInfo, Statement};

/// The plugin.
pub struct Optimizer(Policy);

impl Plugin for Optimizer {
    fn init() -> Result<Self, String> {
        let config: Config = tidegate_plugin_sdk::config()?;
        Policy::new(config).map(Optimizer)
    }

    fn info(&self) -> PluginInfo {
        // LIMIT caps and rewrites carry the statement's literals, so then decisions must not be
        // cached by fingerprint; the unbounded-scan guard alone looks only at the shape.
        PluginInfo::new(
            env!("CARGO_PKG_NAME"),
            env!("CARGO_PKG_VERSION"),
            Hooks::STATEMENT,
        )
        .deterministic(self.0.max_rows.is_none() && self.0.caggs.is_empty())
    }

    fn on_statement(&self, stmt: &Statement) -> Decision {
        let outcome = policy::decide(&self.0, stmt);
        if let Some(line) = outcome.log {
            log::info(&line);
        }
        outcome.decision
    }
}

export_plugin!(Optimizer);

#[cfg(test)]
mod tests;
