//! The limits every plugin runs under, and how a load or a call fails.

use std::time::Duration;

/// Limits that apply to every plugin.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Wall-clock budget of one call.
    pub call_timeout: Duration,
    /// Linear memory an instance may grow to.
    pub memory_limit: usize,
    /// Largest plugin file.
    pub max_file_bytes: usize,
    /// Consecutive failures before quarantine.
    pub quarantine_after: u32,
}

impl Settings {
    /// From the `[plugins]` configuration.
    pub fn from_config(p: &tidegate_config::Plugins) -> Settings {
        Settings {
            call_timeout: p.call_timeout.duration(),
            memory_limit: p.memory_limit,
            max_file_bytes: p.max_file_bytes,
            quarantine_after: p.quarantine_after.max(1),
        }
    }
}

/// Why a plugin could not be loaded; the previous version, if any, stays in service.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read or is too large.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// It is not a valid component, imports something it may not, or does not fit the world.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// Its `init` failed or returned something invalid.
    #[error("{path}: init: {message}")]
    Init {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The engine could not be set up.
    #[error("wasm engine: {0}")]
    Engine(String),
}

/// What a plugin call ended with, when not a value.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CallError {
    /// It ran past its deadline.
    #[error("plugin {0} timed out")]
    Timeout(String),
    /// It trapped (panic, unreachable, out of memory or stack).
    #[error("plugin {0} failed: {1}")]
    Trap(String, String),
    /// It returned something invalid.
    #[error("plugin {0} returned an invalid value: {1}")]
    Invalid(String, String),
    /// No instance could be made (too many at once).
    #[error("plugin {0} is busy")]
    Busy(String),
}
