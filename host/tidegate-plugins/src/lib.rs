//! TideGate's policy plugin host — the only crate that depends on wasmtime.
//!
//! Plugins are WebAssembly components of the `tidegate:policy@0.1.0` world
//! (`wit/tidegate-policy@0.1.0`). This crate compiles them at load time only, links nothing but
//! the `host` interface and an empty WASI context (no files, environment, sockets), runs each
//! call under a wall-clock deadline (epoch interruption; a looping plugin yields to the event
//! loop every tick and traps at the deadline) and a memory limit, reuses warm instances across
//! calls and discards any instance that trapped, validates everything a plugin returns, and
//! quarantines a plugin that keeps failing. Its API is plain Rust: no wasmtime type leaks.

#![deny(missing_docs)]

mod audit_cache;
mod bindings;
mod chain;
pub mod crypto;
mod decision;
pub mod histogram;
mod hooks;
mod limits;
mod runtime;
#[cfg(feature = "testing")]
pub mod testing;
mod ticker;
mod types;

pub use chain::{Chain, ChainEntry, HookSet, PluginStats};
pub use crypto::{CryptoError, Keys};
pub use hooks::HookResult;
pub use runtime::{
    CallError, LoadError, LoadedPlugin, PluginDecision, PluginSpec, Runtime, Settings,
};
pub use types::{
    fingerprint_hex, hex, unhex, valid_sqlstate, AuditEvent, AuditRecord, BoundValue, Column,
    Denial, Principal, Statement, StatementKind, TableRef, Value, Verdict,
};
