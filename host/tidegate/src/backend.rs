//! The server side: connections to PostgreSQL and the pools that hold them.

mod conn;
mod pool;

pub use conn::{Backend, BackendError, Target};
pub use pool::{Pool, PoolError, PoolKey, PoolSettings, PoolTimeouts, Pools};
