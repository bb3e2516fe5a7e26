//! tracing-subscriber set-up. Log lines never carry parameter values, passwords or keys:
//! statements are logged by user, route, duration and SQLSTATE only.

use tidegate_config::{Log, LogFormat};
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber (`RUST_LOG` overrides `log.level`).
pub fn init(log: &Log) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}
