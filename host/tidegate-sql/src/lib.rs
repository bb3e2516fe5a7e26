//! Pure SQL analysis for TideGate: a cheap statement [`fingerprint`] that keys caches,
//! [`classify`], which decides with sqlparser whether a statement is provably read-only, and
//! [`time_range`], which tells which time range a query reads.
//!
//! This crate never does I/O. Function volatility that only the database knows is supplied by
//! the caller through [`FunctionLookup`] (e.g. a [`CatalogLookup`] built from `pg_proc` rows
//! and configured allow/deny lists); anything unknown is treated as writing.
//!
//! # Time ranges and the classification cache
//!
//! A [`Classification`] is cached by fingerprint, which ignores constants, so it holds only the
//! *shape* of a query's time predicates ([`TimeBound`]: which column, which side, which
//! literal slot). [`time_range`] reads the values from each statement's own text (and its
//! parameters), numbering literals as the fingerprint does ([`literals`]):
//!
//! ```
//! use tidegate_sql::{time_range, ClassCache, NoLookup};
//!
//! let cache = ClassCache::new(100);
//! let sql = "SELECT avg(v) FROM metrics WHERE time >= '2024-01-01' AND time < '2024-01-02'";
//! let class = cache.classify(sql, &NoLookup);
//! let ranges = time_range(sql, &class, &[], 0);
//! assert_eq!(ranges[0].column, "time");
//! assert_eq!(ranges[0].from, Some(1_704_067_200_000_000));
//! assert_eq!(ranges[0].to, Some(1_704_153_600_000_000));
//! ```

#![deny(missing_docs)]

mod cache;
mod catalog;
mod classify;
mod fingerprint;
mod functions;
mod lexer;
mod own_session;
mod quote;
pub mod session_state;
mod shape;
mod split;
mod timebound;
mod timerange;
mod timestamp;
mod writes;

pub use cache::ClassCache;
pub use catalog::{parse_function_name, BadFunctionName, CatalogLookup};
pub use classify::{classify, Classification, Kind, TableName, TxControl, RECURSION_LIMIT};
pub use fingerprint::{fingerprint, normalize, Fingerprint, NORMALIZED_MAX};
pub use functions::{
    builtin_volatility, determined_by_settings, FunctionLookup, NoLookup, Volatility,
};
pub use lexer::{block_comment_end, literals, Literal, LiteralKind};
pub use own_session::{
    mentions_own_session, signal_call, with_backend_pid, with_prepared_statements, PidArg,
    SignalCall,
};
pub use quote::quote_ident;
pub use shape::{Shape, ShapeMemo};
pub use split::split_statements;
pub use timebound::{BoundOp, TimeBound, TimeCast};
pub use timerange::{time_range, TimeRange};
pub use timestamp::{parse_timestamp, utc_text, NO_DEFAULT_OFFSET};
pub use writes::{
    quote_literal, stores_values, write_targets, Target, TargetColumn, WriteTargets, Written,
};

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_cacheable;
#[cfg(test)]
mod tests_catalog;
#[cfg(test)]
mod tests_relations;
#[cfg(test)]
mod tests_time;
