//! The client side: the startup handshake and the per-client session loop.

pub mod cancel;
pub mod console;
mod session;
pub mod shared;
mod startup;
pub mod stats;

pub use session::{login_target, pools_for, Session};
pub use startup::{
    client_params, decode_startup, handle_connection, open_internal, ClientParams, InternalError,
    InternalSession, StartupError,
};
