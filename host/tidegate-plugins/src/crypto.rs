//! Cryptography plugins ask for by key name; the keys stay in the host.
//!
//! Ciphertexts carry a header naming the key and its version, so a rotated key keeps old
//! values readable: `b"TGE1"`, the name's length (one byte) and bytes, the key id (u32,
//! big-endian), a random 96-bit nonce, then the AES-256-GCM ciphertext and tag. The caller's
//! associated data (e.g. `table.column`) is authenticated, so a value copied to another column
//! does not decrypt.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hmac::{Hmac, Mac};
use std::collections::HashMap;
use zeroize::Zeroizing;

const MAGIC: &[u8; 4] = b"TGE1";

/// Why a crypto call failed; plugins see the message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    /// The plugin may not use a key of this name, or none exists.
    #[error("unknown key {0:?}")]
    UnknownKey(String),
    /// The input is not a ciphertext of ours, or it does not authenticate.
    #[error("{0}")]
    Invalid(String),
}

/// The versions of one named key, oldest first.
type Versions = Vec<(u32, Zeroizing<[u8; 32]>)>;

/// Named 256-bit keys with versions.
#[derive(Default)]
pub struct Keys {
    by_name: HashMap<String, Versions>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("names", &self.by_name.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Keys {
    /// Adds version `id` of key `name`.
    pub fn insert(&mut self, name: &str, id: u32, key: [u8; 32]) {
        let v = self.by_name.entry(name.to_owned()).or_default();
        v.retain(|(i, _)| *i != id);
        v.push((id, Zeroizing::new(key)));
        v.sort_by_key(|(i, _)| *i);
    }

    /// Only the keys named in `allowed` (what one plugin may use).
    pub fn subset(&self, allowed: &[String]) -> Keys {
        Keys {
            by_name: self
                .by_name
                .iter()
                .filter(|(n, _)| allowed.contains(n))
                .map(|(n, v)| (n.clone(), v.clone()))
                .collect(),
        }
    }

    fn current(&self, name: &str) -> Result<(u32, &[u8; 32]), CryptoError> {
        self.by_name
            .get(name)
            .and_then(|v| v.last())
            .map(|(id, k)| (*id, &**k))
            .ok_or_else(|| CryptoError::UnknownKey(name.to_owned()))
    }

    fn version(&self, name: &str, id: u32) -> Result<&[u8; 32], CryptoError> {
        self.by_name
            .get(name)
            .and_then(|v| v.iter().find(|(i, _)| *i == id))
            .map(|(_, k)| &**k)
            .ok_or_else(|| CryptoError::UnknownKey(format!("{name}#{id}")))
    }

    /// Encrypts with the newest version of `name`.
    pub fn encrypt(
        &self,
        name: &str,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        if name.len() > 255 {
            return Err(CryptoError::Invalid("key name too long".into()));
        }
        let (id, key) = self.current(name)?;
        let nonce: [u8; 12] = rand::random();
        let cipher = Aes256Gcm::new(key.into());
        let sealed = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| CryptoError::Invalid("encryption failed".into()))?;
        let mut out = Vec::with_capacity(4 + 1 + name.len() + 4 + 12 + sealed.len());
        out.extend_from_slice(MAGIC);
        out.push(name.len() as u8);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Decrypts a value made by [`Keys::encrypt`] with the key version its header names.
    pub fn decrypt(&self, data: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let bad = || CryptoError::Invalid("not a TideGate ciphertext".into());
        let rest = data.strip_prefix(MAGIC.as_slice()).ok_or_else(bad)?;
        let (&len, rest) = rest.split_first().ok_or_else(bad)?;
        let len = len as usize;
        if rest.len() < len + 4 + 12 + 16 {
            return Err(bad());
        }
        let name = std::str::from_utf8(&rest[..len]).map_err(|_| bad())?;
        let id = u32::from_be_bytes([rest[len], rest[len + 1], rest[len + 2], rest[len + 3]]);
        let nonce = &rest[len + 4..len + 16];
        let sealed = &rest[len + 16..];
        let key = self.version(name, id)?;
        Aes256Gcm::new(key.into())
            .decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad })
            .map_err(|_| CryptoError::Invalid("ciphertext does not authenticate".into()))
    }

    /// The newest version of `name`.
    pub fn current_id(&self, name: &str) -> Option<u32> {
        self.current(name).ok().map(|(id, _)| id)
    }

    /// An HMAC-SHA-256 state keyed with version `id` of `name`, for constant-time checks.
    pub fn mac_state(&self, name: &str, id: u32) -> Option<Hmac<sha2::Sha256>> {
        let key = self.version(name, id).ok()?;
        <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).ok()
    }

    /// HMAC-SHA-256 with the newest version of `name`.
    pub fn hmac(&self, name: &str, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let (_, key) = self.current(name)?;
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key)
            .map_err(|_| CryptoError::Invalid("bad key".into()))?;
        mac.update(data);
        Ok(mac.finalize().into_bytes().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_rotation_and_aad() {
        let mut keys = Keys::default();
        keys.insert("pii", 1, [1; 32]);
        let old = keys
            .encrypt("pii", b"123-45-6789", b"patients.ssn")
            .expect("encrypt");
        keys.insert("pii", 2, [2; 32]);
        let new = keys
            .encrypt("pii", b"123-45-6789", b"patients.ssn")
            .expect("encrypt");
        assert_ne!(old, new);
        assert_eq!(
            keys.decrypt(&old, b"patients.ssn").expect("old key"),
            b"123-45-6789"
        );
        assert_eq!(
            keys.decrypt(&new, b"patients.ssn").expect("new key"),
            b"123-45-6789"
        );
        assert!(matches!(
            keys.decrypt(&new, b"patients.name"),
            Err(CryptoError::Invalid(_))
        ));
        let mut flipped = new.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(keys.decrypt(&flipped, b"patients.ssn").is_err());
        assert!(keys.decrypt(b"plain", b"").is_err());
        assert!(keys.decrypt(&new[..10], b"").is_err());
        assert_eq!(
            keys.encrypt("nope", b"x", b""),
            Err(CryptoError::UnknownKey("nope".into()))
        );
        let only_other = keys.subset(&["other".to_owned()]);
        assert!(
            only_other.decrypt(&new, b"patients.ssn").is_err(),
            "a plugin sees only its keys"
        );
        assert_eq!(keys.hmac("pii", b"x").expect("hmac").len(), 32);
    }
}
