//! TideGate's configuration: the serde types, loading from TOML with `TIDEGATE__SECTION__KEY`
//! environment overrides, and validation.
//!
//! This crate does no I/O beyond reading the file it is given, so `tidegate check` can validate a
//! file without touching the network.

mod audit;
mod cache;
mod duration;
mod env;
mod error;
mod http;
mod plugins;
mod scram;
mod timescale;
mod types;
mod upstream;
mod users;

pub use audit::Audit;
pub use cache::{Admission, Cache, CacheRule};
pub use duration::{parse_duration, Millis};
pub use error::{ConfigError, Location};
pub use http::{Http, HttpToken, MetricsAccess, Migrations};
pub use plugins::{FailPolicy, PluginEntry, PluginKey, PluginKind, Plugins};
pub use scram::{constant_time_eq, hmac_sha256, ScramVerifier};
pub use timescale::{
    order_by_terms, qualified, Compression, ContinuousAggregate, Hypertable, Interval,
    IntervalUnit, Refresh, Retention, Space, Timescale, AGGREGATES,
};
pub use types::*;
pub use upstream::{Replica, Server, SslMode, Upstream};
pub use users::*;

use std::path::Path;

/// The prefix of environment variables that override keys of the file.
pub const ENV_PREFIX: &str = "TIDEGATE__";

impl Config {
    /// Reads `path`, applies the process environment's `TIDEGATE__…` overrides and validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let src = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            file: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::from_toml_with_env(&src, &path.display().to_string(), std::env::vars())
    }

    /// Parses `src` (named `file` in messages), applies `vars` as overrides and validates.
    pub fn from_toml_with_env(
        src: &str,
        file: &str,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        // The file alone first, so its mistakes are reported at their line and column.
        let from_file: Config = toml::from_str(src).map_err(|e: toml::de::Error| {
            ConfigError::at(file, src, e.span().map(|s| s.start), e.message())
        })?;
        let mut value: toml::Table = src.parse().map_err(|e: toml::de::Error| {
            ConfigError::at(file, src, e.span().map(|s| s.start), e.message())
        })?;
        let overridden = env::apply_overrides(&mut value, vars)
            .map_err(|message| ConfigError::Env { message })?;
        let mut config: Config = if overridden {
            toml::Table::try_into(value).map_err(|e: toml::de::Error| ConfigError::Env {
                message: e.message().trim().to_owned(),
            })?
        } else {
            from_file
        };
        config.prepare().map_err(|(path, message)| {
            let offset = error::locate_key(src, &path);
            ConfigError::at(file, src, offset, &format!("{path}: {message}"))
        })?;
        Ok(config)
    }

    /// Parses `src` without environment overrides (used by tests).
    pub fn from_toml(src: &str) -> Result<Config, ConfigError> {
        Self::from_toml_with_env(src, "<inline>", std::iter::empty())
    }
}

#[cfg(test)]
mod tests;
