//! Pure SQL analysis for TideGate: a cheap statement [`fingerprint`] that keys caches, and
//! [`classify`], which decides with sqlparser whether a statement is provably read-only.
//!
//! This crate never does I/O. Function volatility that only the database knows is supplied by
//! the caller through [`FunctionLookup`]; anything unknown is treated as writing.

#![deny(missing_docs)]

mod cache;
mod classify;
mod fingerprint;
mod functions;
mod lexer;

pub use cache::ClassCache;
pub use classify::{classify, Classification, Kind, TableName, TxControl, RECURSION_LIMIT};
pub use fingerprint::{fingerprint, Fingerprint};
pub use functions::{builtin_volatility, FunctionLookup, NoLookup, Volatility};
pub use lexer::{block_comment_end, literals, Literal, LiteralKind};

#[cfg(test)]
mod tests;
