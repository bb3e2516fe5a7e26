//! Host bindings generated from the WIT (private: nothing generated leaves this crate).

#![allow(missing_docs)]

wasmtime::component::bindgen!({
    world: "plugin",
    path: "../../wit/tidegate-policy@0.1.0",
    exports: { default: async },
});

pub use exports::tidegate::policy::policy::Hooks;
pub use tidegate::policy::host::{CryptoError, LogLevel};
pub use tidegate::policy::types as wit;
