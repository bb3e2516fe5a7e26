//! `tidegate encrypt` / `decrypt`: values in the encryption plugin's stored format,
//! `tgenc:v1:` + standard base64 of the host's ciphertext, with the associated data the plugin
//! uses (`table.column`: the last two parts of the column's name). Keys come from
//! `[[plugins.keys]]`; they are never printed.

use base64::Engine;
use tidegate_config::{Config, PluginKind};
use tidegate_plugins::CryptoError;

/// The stored format's prefix (plugins/encryption/src/policy.rs `PREFIX`).
pub const PREFIX: &str = "tgenc:v1:";

/// Why a value could not be encrypted or decrypted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptError {
    /// The column is not `table.column` or `schema.table.column`.
    #[error("column {0:?} is not \"table.column\" or \"schema.table.column\"")]
    BadColumn(String),
    /// No `--key`, and no encryption plugin configures the column.
    #[error("no --key given, and no encryption plugin configures column {0:?}")]
    NoKey(String),
    /// No `[[plugins.keys]]` entry of that name.
    #[error("no [[plugins.keys]] entry named {0:?}")]
    UnknownKey(String),
    /// The input does not start with `tgenc:v1:`.
    #[error("the value does not start with tgenc:v1: (it is not an encrypted value)")]
    NotEncrypted,
    /// What follows the prefix is not standard padded base64.
    #[error("the value after tgenc:v1: is not valid base64")]
    BadBase64,
    /// The ciphertext does not authenticate for this column (wrong column, key or corrupt).
    #[error("the value does not decrypt for column {column}: {reason}")]
    DoesNotDecrypt {
        /// The column given.
        column: String,
        /// The host's reason.
        reason: String,
    },
}

/// The associated data for `column`: its last two parts, `table.column`.
pub fn aad(column: &str) -> Result<String, CryptError> {
    let parts: Vec<&str> = column.split('.').collect();
    if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.is_empty()) {
        return Err(CryptError::BadColumn(column.to_owned()));
    }
    Ok(parts[parts.len() - 2..].join("."))
}

/// The key an encryption plugin configures for `column`: an entry of that exact name, else the
/// `table.column` entry matching its last two parts (as the plugin prefers a qualified entry).
pub fn configured_key(config: &Config, column: &str) -> Option<String> {
    let aad = aad(column).ok()?;
    let mut fallback = None;
    for e in config
        .plugins
        .chain
        .iter()
        .filter(|e| e.kind == PluginKind::Encryption)
    {
        let Some(columns) = e.config.get("columns").and_then(|c| c.as_table()) else {
            continue;
        };
        for (name, c) in columns {
            let key = c.get("key").and_then(|k| k.as_str());
            if name == column {
                return key.map(str::to_owned);
            }
            if *name == aad && fallback.is_none() {
                fallback = key.map(str::to_owned);
            }
        }
    }
    fallback
}

/// Warnings about using `key` for `column` (printed to stderr by the caller): a configured
/// column with another key, or a key no encryption plugin may use.
pub fn warnings(config: &Config, key: &str, column: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(k) = configured_key(config, column) {
        if k != key {
            out.push(format!(
                "column {column} is configured with key {k:?}; the broker encrypts its new values with that key"
            ));
        }
    }
    let plugins: Vec<_> = config
        .plugins
        .chain
        .iter()
        .filter(|e| e.kind == PluginKind::Encryption)
        .collect();
    if !plugins.is_empty() && !plugins.iter().any(|e| e.keys.iter().any(|k| k == key)) {
        out.push(format!(
            "no encryption plugin lists key {key:?} in its keys: reads through the broker will not decrypt this value"
        ));
    }
    out
}

/// `plaintext` encrypted with the newest version of `key` for `column`, in the stored format.
pub fn encrypt(
    config: &Config,
    key: &str,
    column: &str,
    plaintext: &[u8],
) -> Result<String, CryptError> {
    let aad = aad(column)?;
    let keys = crate::policy::keys(config);
    let sealed = keys
        .encrypt(key, plaintext, aad.as_bytes())
        .map_err(|e| match e {
            CryptoError::UnknownKey(_) => CryptError::UnknownKey(key.to_owned()),
            CryptoError::Invalid(m) => CryptError::DoesNotDecrypt {
                column: column.to_owned(),
                reason: m,
            },
        })?;
    Ok(format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::STANDARD.encode(sealed)
    ))
}

/// The plaintext of a stored value of `column`, with whichever configured key version its
/// header names.
pub fn decrypt(config: &Config, column: &str, stored: &str) -> Result<Vec<u8>, CryptError> {
    let aad = aad(column)?;
    let body = stored
        .strip_prefix(PREFIX)
        .ok_or(CryptError::NotEncrypted)?;
    let sealed = base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|_| CryptError::BadBase64)?;
    crate::policy::keys(config)
        .decrypt(&sealed, aad.as_bytes())
        .map_err(|e| CryptError::DoesNotDecrypt {
            column: column.to_owned(),
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::from_toml(
            r#"
[[plugins.keys]]
name = "pii"
id = 1
secret = "ZGV2ZWxvcG1lbnQtb25seS1rZXktMzItYnl0ZXMhISE="
[[plugins.chain]]
name = "encryption"
file = "encryption.wasm"
kind = "encryption"
keys = ["pii"]
[plugins.chain.config.columns]
"public.patients.ssn" = { key = "pii" }
[[users]]
name = "a"
password = "a"
"#,
        )
        .expect("valid")
    }

    #[test]
    fn round_trip_and_aad() {
        let c = config();
        let v = encrypt(&c, "pii", "public.patients.ssn", b"123").expect("encrypt");
        assert!(v.starts_with(PREFIX));
        // The schema is not part of the associated data.
        assert_eq!(decrypt(&c, "patients.ssn", &v).expect("decrypt"), b"123");
        assert_eq!(
            decrypt(&c, "other.patients.ssn", &v).expect("decrypt"),
            b"123"
        );
        assert!(matches!(
            decrypt(&c, "patients.name", &v),
            Err(CryptError::DoesNotDecrypt { .. })
        ));
        assert_eq!(decrypt(&c, "t.c", "123"), Err(CryptError::NotEncrypted));
        assert_eq!(
            decrypt(&c, "t.c", "tgenc:v1:@@"),
            Err(CryptError::BadBase64)
        );
        assert_eq!(
            encrypt(&c, "nope", "t.c", b"x"),
            Err(CryptError::UnknownKey("nope".into()))
        );
        for bad in ["ssn", "a.b.c.d", "a..c", ".b"] {
            assert_eq!(aad(bad), Err(CryptError::BadColumn(bad.into())));
        }
    }

    #[test]
    fn the_configured_key_is_found() {
        let c = config();
        assert_eq!(
            configured_key(&c, "public.patients.ssn").as_deref(),
            Some("pii")
        );
        assert_eq!(configured_key(&c, "patients.ssn"), None);
        assert!(warnings(&c, "pii", "public.patients.ssn").is_empty());
        assert_eq!(warnings(&c, "other", "public.patients.ssn").len(), 2);
    }
}
