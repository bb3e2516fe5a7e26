//! Everything on PostgreSQL's side: server connections and their pools ([`backend`]), pauses
//! between reconnect attempts ([`backoff`]), the
//! servers in service ([`topology`]) and their health ([`health`]), shared prepared statement
//! names ([`statements`]), the broker's own sqlx connections ([`own_db`]), TideGate's embedded
//! schema migrations ([`migrations`]) and what each database's catalog tells the classifier
//! ([`catalog`]).

pub mod backend;
pub mod backoff;
pub mod catalog;
pub mod health;
pub mod migrations;
pub mod own_db;
pub mod statements;
pub mod topology;

pub use tidegate_plugins::histogram::{Histogram, HistogramSnapshot, BUCKETS};
