//! TideGate: a PostgreSQL-wire query broker.
//!
//! The data plane: [`broker::Broker`] accepts clients speaking the PostgreSQL protocol; each
//! authenticated client becomes a [`client::Session`] that relays its messages to a pooled
//! server connection ([`upstream::backend`]) held for one transaction at a time.
//!
//! The modules are layers; each imports only from layers below it (`tests/layers.rs` checks):
//!
//! | layer | modules |
//! |---|---|
//! | 5 | [`cli`] |
//! | 4 | [`broker`] |
//! | 3 | [`client`], [`http`] |
//! | 2 | [`policy`], [`cache`], [`audit`], [`timescale`] |
//! | 1 | [`upstream`] |
//! | 0 | [`wire`], [`clock`] |

pub mod audit;
pub mod broker;
pub mod cache;
pub mod cli;
pub mod client;
pub mod clock;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod http;
pub mod policy;
pub mod timescale;
pub mod upstream;
pub mod wire;

pub use tidegate_config as config;
