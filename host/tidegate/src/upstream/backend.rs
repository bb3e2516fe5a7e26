//! The server side: connections to PostgreSQL and the pools that hold them.

mod activity;
mod conn;
mod pool;
mod scram;
mod tls;

pub use activity::{Activity, ActivitySnapshot, ClientCount};
pub use conn::{Backend, BackendError, Target};
pub use pool::{Pool, PoolError, PoolKey, PoolSettings, PoolTimeouts, Pools};
pub use scram::{ClientKeys, SharedKeys};
pub use tls::{ServerStream, UpstreamTls};
