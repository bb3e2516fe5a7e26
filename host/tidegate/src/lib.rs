//! TideGate: a PostgreSQL-wire query broker.
//!
//! The data plane: clients speak the PostgreSQL protocol to [`server::run`]; each authenticated
//! client becomes a [`client::Session`] that relays its messages, unchanged, to a pooled server
//! connection ([`backend`]) held for one transaction at a time.

pub mod admin;
pub mod audit;
pub mod auth;
pub mod backend;
pub mod cache;
pub mod caggs;
pub mod cancel;
pub mod catalog;
pub mod client;
pub mod columns;
pub mod fuzzing;
pub mod health;
pub mod http;
pub mod logging;
pub mod migrate;
pub mod own_db;
pub mod plugins;
pub mod proto;
pub mod reload;
pub mod server;
pub mod session_state;
pub mod statements;
pub mod topology;

pub use tidegate_config as config;
