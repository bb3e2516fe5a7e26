//! What the host offers a plugin: logging, the plugin's configuration, a clock and cryptography
//! by key name.
//!
//! Inside TideGate (the `wasm32` build) every function here calls the host. A native build —
//! a plugin's unit tests — has no host, so these functions behave as a *null host*: [`log`]
//! writes to standard error, [`config_json`] returns `{}`, [`now`] reads the system clock and
//! every [`crypto`] operation fails with [`CryptoError::Invalid`]. Keep policy logic in plain
//! functions that take their inputs (and a [`crypto::Crypto`] implementation) as arguments, and
//! test those natively.

#[cfg(not(target_arch = "wasm32"))]
use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::String;
use serde::de::DeserializeOwned;

pub use crate::bindings::tidegate::policy::host::{CryptoError, LogLevel};

#[cfg(target_arch = "wasm32")]
use crate::bindings::tidegate::policy::host as raw;

/// Writes a line to TideGate's log, attributed to the plugin.
///
/// The host caps the number of lines per hook call and truncates long lines.
pub fn log(level: LogLevel, message: &str) {
    #[cfg(target_arch = "wasm32")]
    raw::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    std::eprintln!("[{}] {message}", level_name(level));
}

/// The lower-case name of a log level: `"trace"` … `"error"`.
pub fn level_name(level: LogLevel) -> &'static str {
    match level {
        LogLevel::Trace => "trace",
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warn => "warn",
        LogLevel::Error => "error",
    }
}

/// The plugin's configuration, the `[plugins.<name>.config]` table of TideGate's TOML
/// configuration, as JSON text. (`{}` in a native build.)
pub fn config_json() -> String {
    #[cfg(target_arch = "wasm32")]
    return raw::config();
    #[cfg(not(target_arch = "wasm32"))]
    return "{}".to_owned();
}

/// Parses the plugin's configuration (see [`config_json`]) into `T`.
///
/// Empty text and JSON `null` read as `{}`, so a plugin without a config table gets its
/// defaults when `T` is `#[serde(default)]`.
pub fn config<T: DeserializeOwned>() -> Result<T, String> {
    parse_config(&config_json())
}

/// Parses configuration JSON the way [`config`] does; use it in native tests.
pub fn parse_config<T: DeserializeOwned>(json: &str) -> Result<T, String> {
    let text = json.trim();
    let text = if text.is_empty() || text == "null" {
        "{}"
    } else {
        text
    };
    serde_json::from_str(text).map_err(|e| format!("invalid plugin config: {e}"))
}

/// Wall-clock time in microseconds since the Unix epoch.
pub fn now() -> i64 {
    #[cfg(target_arch = "wasm32")]
    return raw::now();
    #[cfg(not(target_arch = "wasm32"))]
    return std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
}

/// Log lines at a fixed level: `log::info("…")` is `log(LogLevel::Info, "…")`.
pub mod log {
    use super::LogLevel;

    /// Logs at [`LogLevel::Trace`].
    pub fn trace(message: &str) {
        super::log(LogLevel::Trace, message);
    }
    /// Logs at [`LogLevel::Debug`].
    pub fn debug(message: &str) {
        super::log(LogLevel::Debug, message);
    }
    /// Logs at [`LogLevel::Info`].
    pub fn info(message: &str) {
        super::log(LogLevel::Info, message);
    }
    /// Logs at [`LogLevel::Warn`].
    pub fn warn(message: &str) {
        super::log(LogLevel::Warn, message);
    }
    /// Logs at [`LogLevel::Error`].
    pub fn error(message: &str) {
        super::log(LogLevel::Error, message);
    }
}

/// Cryptography with keys the host holds, named in TideGate's configuration. Keys never enter
/// the sandbox.
pub mod crypto {
    use super::CryptoError;
    #[cfg(not(target_arch = "wasm32"))]
    use alloc::borrow::ToOwned;
    use alloc::vec::Vec;

    #[cfg(not(target_arch = "wasm32"))]
    fn no_host() -> CryptoError {
        CryptoError::Invalid("no host: cryptography is only available inside TideGate".to_owned())
    }

    /// Encrypts `plaintext` with the host's key `key` (AES-256-GCM, random nonce, `aad`
    /// authenticated). The result names its key, so values stay readable after rotation.
    pub fn encrypt(key: &str, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        #[cfg(target_arch = "wasm32")]
        return crate::bindings::tidegate::policy::host::encrypt(key, plaintext, aad);
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = (key, plaintext, aad);
            Err(no_host())
        }
    }

    /// Decrypts a value made by [`encrypt`] with the same `aad`.
    pub fn decrypt(ciphertext: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        #[cfg(target_arch = "wasm32")]
        return crate::bindings::tidegate::policy::host::decrypt(ciphertext, aad);
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = (ciphertext, aad);
            Err(no_host())
        }
    }

    /// HMAC-SHA-256 of `data` with the host's key `key`.
    pub fn hmac(key: &str, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        #[cfg(target_arch = "wasm32")]
        return crate::bindings::tidegate::policy::host::hmac(key, data);
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = (key, data);
            Err(no_host())
        }
    }

    /// The host's cryptography as a trait, so policy logic can take `&impl Crypto` and unit
    /// tests can pass a fake. [`HostCrypto`] is the real one.
    pub trait Crypto {
        /// See [`encrypt`].
        fn encrypt(&self, key: &str, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError>;
        /// See [`decrypt`].
        fn decrypt(&self, ciphertext: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError>;
        /// See [`hmac`].
        fn hmac(&self, key: &str, data: &[u8]) -> Result<Vec<u8>, CryptoError>;
    }

    /// [`Crypto`] by the host's functions.
    #[derive(Debug, Clone, Copy, Default)]
    pub struct HostCrypto;

    impl Crypto for HostCrypto {
        fn encrypt(&self, key: &str, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
            encrypt(key, plaintext, aad)
        }
        fn decrypt(&self, ciphertext: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
            decrypt(ciphertext, aad)
        }
        fn hmac(&self, key: &str, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
            hmac(key, data)
        }
    }
}
