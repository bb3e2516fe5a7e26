//! HTTP credentials, mapped to broker users: `Authorization: Bearer <token>` (a
//! `[[http.tokens]]` entry) or `Basic` (a `[[users]]` name and password, checked against the
//! same SCRAM verifier PostgreSQL clients are). With `auth.method = "trust"` a Basic user name
//! alone is enough, as it is on the wire.
//!
//! Checking a password costs a PBKDF2 derivation (4096 rounds by default), so a successful
//! check is remembered for a minute under a hash of the credentials, never the credentials.

use super::error::ApiError;
use crate::server::Shared;
use axum::http::{header, HeaderMap};
use base64::Engine;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tidegate_config::AuthMethod;

const REMEMBER: Duration = Duration::from_secs(60);
const MAX_REMEMBERED: usize = 10_000;

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
        let Some(user) = config.user(name) else {
            return Err(ApiError::unauthorized());
        };
        if config.auth.method == AuthMethod::Trust {
            return Ok(Arc::from(name));
        }
        let Some(verifier) = user.verifier.clone() else {
            return Err(ApiError::unauthorized());
        };
        let mut h = Sha256::new();
        h.update(name.as_bytes());
        h.update([0]);
        h.update(password.as_bytes());
        h.update([0]);
        h.update(&verifier.salt);
        h.update(verifier.stored_key);
        let remembered: [u8; 32] = h.finalize().into();
        if self.seen(&remembered) {
            return Ok(Arc::from(name));
        }
        let password = password.to_owned();
        let ok = tokio::task::spawn_blocking(move || {
            let derived = tidegate_config::ScramVerifier::derive(
                &password,
                &verifier.salt,
                verifier.iterations,
            );
            derived.stored_key == verifier.stored_key
        })
        .await
        .unwrap_or(false);
        if !ok {
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
