//! The command line: its subcommands ([`commands`]), administration commands ([`admin`]), schema migrations
//! ([`migrate`]), the time-series lifecycle ([`timescale`]) and logging set-up ([`logging`]). The top layer: nothing imports it.

pub mod admin;
pub mod analyze;
pub mod backup;
pub mod commands;
pub mod health;
pub mod logging;
pub mod migrate;
pub mod slow;
pub mod timescale;

/// For a command that does one piece of async work: its configuration (with logging set up
/// from it) and a single-threaded runtime; `None` after saying on standard error why not.
pub(crate) fn setup(
    path: &std::path::Path,
) -> Option<(crate::config::Config, tokio::runtime::Runtime)> {
    let config = crate::config::Config::load(path)
        .map_err(|e| eprintln!("{e}"))
        .ok()?;
    logging::init(&config.log);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| eprintln!("starting the runtime: {e}"))
        .ok()?;
    Some((config, rt))
}
