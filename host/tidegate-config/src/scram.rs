//! SCRAM-SHA-256 verifiers in PostgreSQL's `pg_authid` format:
//! `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (base64 parts).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::fmt;

/// What the broker keeps of a user's password: never the password itself.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    /// PBKDF2 iteration count.
    pub iterations: u32,
    /// The salt.
    pub salt: Vec<u8>,
    /// `H(HMAC(SaltedPassword, "Client Key"))`.
    pub stored_key: [u8; 32],
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: [u8; 32],
}

impl fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Keys are secrets: never print them.
        f.write_str("ScramVerifier(..)")
    }
}

/// HMAC-SHA-256 of `msg` under `key`.
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

/// Whether `a` and `b` are equal, in time that does not depend on where they differ.
pub fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // Keep the optimizer from turning the fold into an early-exit comparison.
    std::hint::black_box(diff) == 0
}

impl ScramVerifier {
    /// Derives a verifier from a plaintext password (development configs), with a random salt.
    pub fn from_password(password: &str, iterations: u32) -> ScramVerifier {
        let salt: [u8; 16] = rand::random();
        Self::derive(password, &salt, iterations)
    }

    /// Derives a verifier from a password and a given salt.
    pub fn derive(password: &str, salt: &[u8], iterations: u32) -> ScramVerifier {
        // SASLprep is the identity for ASCII passwords; PostgreSQL also falls back to the raw
        // bytes when normalization fails, so raw bytes are what clients hash too.
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, iterations, &mut salted);
        let client_key = hmac_sha256(&salted, b"Client Key");
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let server_key = hmac_sha256(&salted, b"Server Key");
        ScramVerifier {
            iterations,
            salt: salt.to_vec(),
            stored_key,
            server_key,
        }
    }

    /// Whether `password` derives this verifier's StoredKey (one PBKDF2 derivation at this
    /// verifier's iteration count, compared in constant time).
    pub fn matches(&self, password: &str) -> bool {
        let derived = Self::derive(password, &self.salt, self.iterations);
        constant_time_eq(&derived.stored_key, &self.stored_key)
    }

    /// Parses PostgreSQL's verifier text.
    pub fn parse(s: &str) -> Result<ScramVerifier, String> {
        let bad =
            || "expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>".to_owned();
        let rest = s.strip_prefix("SCRAM-SHA-256$").ok_or_else(bad)?;
        let (params, keys) = rest.split_once('$').ok_or_else(bad)?;
        let (iter, salt) = params.split_once(':').ok_or_else(bad)?;
        let (stored, server) = keys.split_once(':').ok_or_else(bad)?;
        let iterations: u32 = iter.parse().map_err(|_| bad())?;
        if iterations == 0 {
            return Err("iteration count must be positive".into());
        }
        let salt = B64.decode(salt).map_err(|_| bad())?;
        let key = |k: &str| -> Result<[u8; 32], String> {
            B64.decode(k)
                .ok()
                .and_then(|v| <[u8; 32]>::try_from(v).ok())
                .ok_or_else(bad)
        };
        Ok(ScramVerifier {
            iterations,
            salt,
            stored_key: key(stored)?,
            server_key: key(server)?,
        })
    }

    /// Formats as PostgreSQL's verifier text.
    pub fn to_pg_string(&self) -> String {
        format!(
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(self.stored_key),
            B64.encode(self.server_key)
        )
    }
}
