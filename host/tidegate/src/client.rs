//! The client side: the startup handshake and the per-client session loop.

mod session;
mod startup;

pub use session::Session;
pub use startup::{client_params, decode_startup, handle_connection, ClientParams, StartupError};
