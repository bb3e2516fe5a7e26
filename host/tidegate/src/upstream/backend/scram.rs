//! SCRAM-SHA-256 to PostgreSQL with a client's keys instead of a password (pass-through).
//!
//! A client that proved itself against a verifier PostgreSQL holds (`auth_query`) reveals its
//! ClientKey in its proof (ClientProof XOR HMAC(StoredKey, AuthMessage)). With it, and the
//! verifier's salt and iteration count, the broker logs in to PostgreSQL as that role without
//! ever knowing the password. The keys live in memory only and are never logged.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use sha2::{Digest, Sha256};
use std::sync::{Arc, Mutex};
use tidegate_config::hmac_sha256;

/// What a client's SCRAM proof and its verifier give the broker for logging in as it.
#[derive(Clone)]
pub struct ClientKeys {
    /// `HMAC(SaltedPassword, "Client Key")`.
    pub client_key: [u8; 32],
    /// `HMAC(SaltedPassword, "Server Key")`, to check the server's signature.
    pub server_key: [u8; 32],
    /// The verifier's salt.
    pub salt: Vec<u8>,
    /// The verifier's iteration count.
    pub iterations: u32,
}

/// The keys a pool logs in with, replaced by each client that authenticates anew (a changed
/// password brings new keys). Targets compare equal when they share the same holder.
#[derive(Clone, Default)]
pub struct SharedKeys(Arc<Mutex<Option<ClientKeys>>>);

impl SharedKeys {
    /// Replaces the keys.
    pub fn set(&self, keys: ClientKeys) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(keys);
    }

    /// The current keys, if any client has authenticated yet.
    pub fn get(&self) -> Option<ClientKeys> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl PartialEq for SharedKeys {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for SharedKeys {}

/// One client-side exchange with keys.
pub struct KeyedScram {
    keys: ClientKeys,
    client_first_bare: String,
    /// The next message to send.
    message: String,
    /// The server signature the final message must carry.
    expected: Option<[u8; 32]>,
}

impl KeyedScram {
    /// Starts an exchange: [`KeyedScram::message`] is the client-first-message.
    pub fn new(keys: ClientKeys) -> KeyedScram {
        let nonce: [u8; 18] = rand::random();
        let client_first_bare = format!("n=,r={}", B64.encode(nonce));
        KeyedScram {
            keys,
            message: format!("n,,{client_first_bare}"),
            client_first_bare,
            expected: None,
        }
    }

    /// The message to send now.
    pub fn message(&self) -> &[u8] {
        self.message.as_bytes()
    }

    /// Takes the server-first-message; [`KeyedScram::message`] becomes the client-final one.
    pub fn update(&mut self, server_first: &[u8]) -> std::io::Result<()> {
        let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_owned());
        let text = std::str::from_utf8(server_first).map_err(|_| bad("SCRAM: not UTF-8"))?;
        let (mut nonce, mut salt, mut iterations) = (None, None, None);
        for attr in text.split(',') {
            if let Some(v) = attr.strip_prefix("r=") {
                nonce = Some(v);
            } else if let Some(v) = attr.strip_prefix("s=") {
                salt = B64.decode(v).ok();
            } else if let Some(v) = attr.strip_prefix("i=") {
                iterations = v.parse::<u32>().ok();
            }
        }
        let client_nonce = &self.client_first_bare["n=,r=".len()..];
        let nonce = nonce
            .filter(|n| n.starts_with(client_nonce) && n.len() > client_nonce.len())
            .ok_or_else(|| bad("SCRAM: bad server nonce"))?;
        if salt.as_deref() != Some(&self.keys.salt[..]) || iterations != Some(self.keys.iterations)
        {
            // The password changed in PostgreSQL since the client's proof: these keys are
            // stale. The next client to log in brings new ones.
            return Err(bad(
                "SCRAM: the server's verifier is not the one the client used",
            ));
        }
        let without_proof = format!("c=biws,r={nonce}");
        let auth = format!("{},{text},{without_proof}", self.client_first_bare);
        let stored_key: [u8; 32] = Sha256::digest(self.keys.client_key).into();
        let signature = hmac_sha256(&stored_key, auth.as_bytes());
        let proof: Vec<u8> = self
            .keys
            .client_key
            .iter()
            .zip(signature.iter())
            .map(|(k, s)| k ^ s)
            .collect();
        self.expected = Some(hmac_sha256(&self.keys.server_key, auth.as_bytes()));
        self.message = format!("{without_proof},p={}", B64.encode(proof));
        Ok(())
    }

    /// Checks the server-final-message's signature.
    pub fn finish(&self, server_final: &[u8]) -> std::io::Result<()> {
        let ok = std::str::from_utf8(server_final)
            .ok()
            .and_then(|t| t.strip_prefix("v="))
            .and_then(|v| B64.decode(v).ok())
            .and_then(|v| <[u8; 32]>::try_from(v).ok())
            .zip(self.expected)
            .is_some_and(|(got, want)| tidegate_config::constant_time_eq(&got, &want));
        if ok {
            Ok(())
        } else {
            Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "SCRAM: the server's signature does not match",
            ))
        }
    }
}
