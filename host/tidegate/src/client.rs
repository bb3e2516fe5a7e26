//! The client side: the startup handshake and the per-client session loop.

mod session;
mod startup;

pub use session::Session;
pub use startup::{handle_connection, StartupError};
