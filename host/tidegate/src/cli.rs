//! The command line: its subcommands ([`commands`]), administration commands ([`admin`]), schema migrations
//! ([`migrate`]), the time-series lifecycle ([`timescale`]) and logging set-up ([`logging`]). The top layer: nothing imports it.

pub mod admin;
pub mod backup;
pub mod commands;
pub mod health;
pub mod logging;
pub mod migrate;
pub mod timescale;
