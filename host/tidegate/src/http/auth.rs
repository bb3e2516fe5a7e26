//! HTTP credentials, mapped to broker users: `Authorization: Bearer <token>` (a
//! `[[http.tokens]]` entry) or `Basic` (a `[[users]]` name and password, checked against the
//! same SCRAM verifier PostgreSQL clients are). With `auth.method = "trust"` a Basic user name
//! alone is enough, as it is on the wire.
//!
//! Checking a password costs a PBKDF2 derivation (4096 rounds by default), so a successful
//! check is remembered for a minute under a hash of the credentials, never the credentials.
//! An unknown user name costs the same derivation (against a dummy verifier) and gets the same
//! 401 as a wrong password; keys are compared in constant time.

use super::error::ApiError;
use crate::client::shared::Shared;
use axum::http::{header, HeaderMap};
use base64::Engine;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tidegate_config::{hmac_sha256, AuthMethod, Config, ScramVerifier};

const REMEMBER: Duration = Duration::from_secs(60);
const MAX_REMEMBERED: usize = 10_000;

/// What an unknown user's password is checked against: a verifier no password matches
/// (random keys would do; these are fixed per process and name, like the wire's mock salt),
/// at the highest iteration count a configured user has, so its derivation costs what theirs do.
fn dummy_verifier(config: &Config, name: &str, mock_secret: &[u8]) -> ScramVerifier {
    let iterations = config
        .users
        .iter()
        .filter_map(|u| u.verifier.as_ref().map(|v| v.iterations))
        .max()
        .unwrap_or(4096);
    let salt = hmac_sha256(mock_secret, format!("http salt\0{name}").as_bytes());
    ScramVerifier {
        iterations,
        salt: salt[..16].to_vec(),
        stored_key: hmac_sha256(mock_secret, b"http stored key"),
        server_key: hmac_sha256(mock_secret, b"http server key"),
    }
}

/// Recently verified Basic credentials.
#[derive(Default)]
pub struct AuthCache {
    verified: Mutex<HashMap<[u8; 32], Instant>>,
}

impl AuthCache {
    /// The broker user the request's credentials name, or 401.
    pub async fn authenticate(
        &self,
        sh: &Shared,
        headers: &HeaderMap,
    ) -> Result<Arc<str>, ApiError> {
        let value = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(ApiError::unauthorized)?;
        let (scheme, rest) = value.split_once(' ').ok_or_else(ApiError::unauthorized)?;
        let config = sh.config();
        if scheme.eq_ignore_ascii_case("bearer") {
            // Tokens are compared by digest (derived at config load), never in plaintext.
            let digest = format!("{:x}", Sha256::digest(rest.trim().as_bytes()));
            return config
                .http
                .tokens
                .iter()
                .find(|t| t.sha256 == digest)
                .map(|t| Arc::from(t.user.as_str()))
                .ok_or_else(ApiError::unauthorized);
        }
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(ApiError::unauthorized());
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(ApiError::unauthorized)?;
        let (name, password) = decoded.split_once(':').ok_or_else(ApiError::unauthorized)?;
        let user = config.user(name);
        if config.auth.method == AuthMethod::Trust {
            return user
                .map(|_| Arc::from(name))
                .ok_or_else(ApiError::unauthorized);
        }
        // An unknown user (or one without a verifier) is checked against a dummy verifier, with
        // the same cache lookup and derivation as a known user's wrong password, so how long
        // the answer takes does not tell which user names exist.
        let (verifier, known) = match user.and_then(|u| u.verifier.clone()) {
            Some(v) => (v, true),
            None => (dummy_verifier(&config, name, &sh.mock_secret), false),
        };
        let mut h = Sha256::new();
        h.update(name.as_bytes());
        h.update([0]);
        h.update(password.as_bytes());
        h.update([0]);
        h.update(&verifier.salt);
        h.update(verifier.stored_key);
        let remembered: [u8; 32] = h.finalize().into();
        if self.seen(&remembered) && known {
            return Ok(Arc::from(name));
        }
        let password = password.to_owned();
        let matches = tokio::task::spawn_blocking(move || verifier.matches(&password))
            .await
            .unwrap_or(false);
        if !(matches && known) {
            tracing::info!(user = name, "HTTP authentication failed");
            return Err(ApiError::unauthorized());
        }
        self.remember(remembered);
        Ok(Arc::from(name))
    }

    fn seen(&self, key: &[u8; 32]) -> bool {
        let map = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key).is_some_and(|at| at.elapsed() < REMEMBER)
    }

    fn remember(&self, key: [u8; 32]) {
        let mut map = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_REMEMBERED {
            map.retain(|_, at| at.elapsed() < REMEMBER);
            if map.len() >= MAX_REMEMBERED {
                map.clear();
            }
        }
        map.insert(key, Instant::now());
    }
}
