//! Field encryption as plain functions over plain values: what the plugin's `on-write-values`
//! and `on-rows` do, with the host's cryptography passed in as a [`Crypto`].

use crate::base64;
use serde::Deserialize;
use tidegate_plugin_sdk::crypto::Crypto;
use tidegate_plugin_sdk::prelude::*;
use tidegate_plugin_sdk::{BoundValue, Column, CryptoError, Denial, Principal, Value};

/// What an encrypted value starts with; base64 of the host's ciphertext follows.
pub const PREFIX: &str = "tgenc:v1:";

/// The column types an encrypted value (text) can be written to. `unknown` (PostgreSQL's type
/// of an untyped literal) and an empty name are types the host could not tell: PostgreSQL
/// itself rejects text bound for a column that cannot hold it.
pub const TEXT_TYPES: [&str; 5] = ["text", "varchar", "character varying", "unknown", ""];

/// The plugin's configuration (`[plugins.encryption.config]`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The sensitive columns, keyed `"schema.table.column"` or `"table.column"`.
    pub columns: BTreeMap<String, ColumnConfig>,
    /// What readers who may not see a sensitive value get instead. Default `"****"`.
    #[serde(default = "default_mask")]
    pub mask: String,
    /// What a reader gets for a value that fails to decrypt: `"deny"` (the default) fails the
    /// statement; `"mask"` returns the mask and logs.
    #[serde(default)]
    pub on_decrypt_error: OnDecryptError,
}

fn default_mask() -> String {
    "****".to_owned()
}

/// One sensitive column.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ColumnConfig {
    /// The name of the host key values are encrypted with.
    pub key: String,
    /// Roles that read the plaintext; everyone else reads the mask.
    #[serde(default)]
    pub readers: Vec<String>,
}

/// What a reader gets for a value that fails to decrypt.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnDecryptError {
    /// The statement fails.
    #[default]
    Deny,
    /// The value reads as the mask; the failure is logged.
    Mask,
}

/// A checked sensitive column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sensitive {
    /// As configured: `"schema.table.column"` or `"table.column"`.
    pub name: String,
    /// `"table.column"`: the associated data every value is encrypted with, so a value copied
    /// to another column does not decrypt there.
    pub aad: String,
    /// The host key.
    pub key: String,
    /// Roles that read the plaintext.
    pub readers: Vec<String>,
}

/// A checked configuration.
#[derive(Debug, Clone)]
pub struct Policy {
    columns: Vec<Sensitive>,
    mask: String,
    on_decrypt_error: OnDecryptError,
}

/// SQLSTATE for a key the host does not have for this plugin (internal_error).
pub const SQLSTATE_KEY: &str = "XX000";
/// SQLSTATE for a stored value that does not decrypt (data_corrupted).
pub const SQLSTATE_CORRUPT: &str = "XX001";
/// SQLSTATE for a sensitive column whose type cannot hold ciphertext (datatype_mismatch).
pub const SQLSTATE_TYPE: &str = "42804";

fn crypto_sqlstate(e: &CryptoError) -> &'static str {
    match e {
        CryptoError::UnknownKey(_) => SQLSTATE_KEY,
        CryptoError::Invalid(_) => SQLSTATE_CORRUPT,
    }
}

impl Policy {
    /// Checks a configuration: column names have two or three non-empty parts, keys are named.
    pub fn new(config: Config) -> Result<Self, String> {
        let mut columns = Vec::new();
        for (name, c) in config.columns {
            let parts: Vec<&str> = name.split('.').collect();
            if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.is_empty()) {
                return Err(format!(
                    "columns: {name:?} is not \"schema.table.column\" or \"table.column\""
                ));
            }
            if c.key.is_empty() {
                return Err(format!("columns.{name}: empty key name"));
            }
            let aad = parts[parts.len() - 2..].join(".");
            columns.push(Sensitive {
                name,
                aad,
                key: c.key,
                readers: c.readers,
            });
        }
        Ok(Policy {
            columns,
            mask: config.mask,
            on_decrypt_error: config.on_decrypt_error,
        })
    }

    /// The configured column names, for `plugin-info.columns`.
    pub fn column_names(&self) -> Vec<String> {
        self.columns.iter().map(|c| c.name.clone()).collect()
    }

    /// The sensitive column `column` is, if any; a schema-qualified entry wins over a bare one.
    pub fn sensitive(&self, column: &Column) -> Option<&Sensitive> {
        self.columns
            .iter()
            .filter(|s| column.matches(&s.name))
            .max_by_key(|s| s.name.matches('.').count())
    }

    /// Encrypts the values bound for sensitive columns; returns one value per input.
    pub fn write_values(
        &self,
        values: Vec<BoundValue>,
        crypto: &impl Crypto,
    ) -> Result<Vec<Value>, Denial> {
        values
            .into_iter()
            .map(|bound| {
                let Some(s) = self.sensitive(&bound.column) else {
                    return Ok(bound.value);
                };
                let Some(plain) = bound.value else {
                    return Ok(None);
                };
                if !TEXT_TYPES.contains(&bound.column.type_name.as_str()) {
                    return Err(Denial::new(
                        SQLSTATE_TYPE,
                        format!(
                            "tidegate encryption: column {} is encrypted but has type {}",
                            s.name, bound.column.type_name
                        ),
                    )
                    .with_hint("encrypted columns must be of type text or varchar"));
                }
                let ciphertext = crypto
                    .encrypt(&s.key, &plain, s.aad.as_bytes())
                    .map_err(|e| {
                        Denial::new(
                            crypto_sqlstate(&e),
                            format!(
                                "tidegate encryption: cannot encrypt {}: {}",
                                s.name,
                                e.message()
                            ),
                        )
                    })?;
                Ok(Some(encode(&ciphertext)))
            })
            .collect()
    }

    /// Decrypts (for readers) or masks (for everyone else) the values of sensitive columns.
    /// Also returns the decryption failures it masked, for the log.
    pub fn rows(
        &self,
        principal: &Principal,
        columns: &[Column],
        mut rows: Vec<Vec<Value>>,
        crypto: &impl Crypto,
    ) -> Result<(Vec<Vec<Value>>, Vec<String>), Denial> {
        let mut masked_failures = Vec::new();
        for (i, column) in columns.iter().enumerate() {
            let Some(s) = self.sensitive(column) else {
                continue;
            };
            let reader = is_reader(principal, &s.readers);
            for row in &mut rows {
                let Some(slot) = row.get_mut(i) else {
                    continue;
                };
                let Some(stored) = slot.take() else {
                    continue; // NULL stays NULL
                };
                *slot = Some(if !reader {
                    self.mask.as_bytes().to_vec()
                } else {
                    match decrypt(s, &stored, crypto) {
                        Ok(plain) => plain,
                        Err(denial) => match self.on_decrypt_error {
                            OnDecryptError::Deny => return Err(denial),
                            OnDecryptError::Mask => {
                                masked_failures.push(denial.reason);
                                self.mask.as_bytes().to_vec()
                            }
                        },
                    }
                });
            }
        }
        Ok((rows, masked_failures))
    }
}

/// Whether `principal` holds one of `readers`: among its broker roles or as its PostgreSQL role.
pub fn is_reader(principal: &Principal, readers: &[String]) -> bool {
    readers
        .iter()
        .any(|r| principal.roles.contains(r) || principal.role == *r)
}

/// `tgenc:v1:` and base64 of `ciphertext`.
pub fn encode(ciphertext: &[u8]) -> Vec<u8> {
    let mut out = PREFIX.as_bytes().to_vec();
    out.extend_from_slice(base64::encode(ciphertext).as_bytes());
    out
}

/// What a stored value of a sensitive column is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// Not in the `tgenc:v1:` format: legacy plaintext, read as it is.
    Plaintext,
    /// `tgenc:v1:` followed by something that is not base64.
    Malformed,
    /// The host's ciphertext.
    Encrypted(Vec<u8>),
}

/// Reads a stored value.
pub fn parse(stored: &[u8]) -> Stored {
    match stored.strip_prefix(PREFIX.as_bytes()) {
        None => Stored::Plaintext,
        Some(body) => base64::decode(body).map_or(Stored::Malformed, Stored::Encrypted),
    }
}

/// The plaintext of a stored value: decrypted if encrypted, as stored if legacy plaintext.
fn decrypt(s: &Sensitive, stored: &[u8], crypto: &impl Crypto) -> Result<Vec<u8>, Denial> {
    match parse(stored) {
        Stored::Plaintext => Ok(stored.to_vec()),
        Stored::Malformed => Err(Denial::new(
            SQLSTATE_CORRUPT,
            format!(
                "tidegate encryption: a value of {} is not valid base64",
                s.name
            ),
        )),
        Stored::Encrypted(ct) => crypto.decrypt(&ct, s.aad.as_bytes()).map_err(|e| {
            Denial::new(
                crypto_sqlstate(&e),
                format!(
                    "tidegate encryption: cannot decrypt a value of {}: {}",
                    s.name,
                    e.message()
                ),
            )
        }),
    }
}
