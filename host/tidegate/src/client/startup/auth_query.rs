//! Users from PostgreSQL (`auth.auth_query`, as in PgBouncer): a user not in `[[users]]` is
//! looked up on the primary, as `auth_user`, for its SCRAM verifier. A client that proves itself
//! against that verifier reveals its ClientKey, and the broker logs in to PostgreSQL as the same
//! role with it — PostgreSQL's own roles and GRANTs stay the second wall. Verifiers are reused
//! for `auth_cache`; a failed login reads them again at once, so a password changed with
//! `ALTER ROLE … PASSWORD` works at the next login.

use crate::upstream::backend::{Backend, SharedKeys, Target, UpstreamTls};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tidegate_config::{Config, ScramVerifier};

/// A user PostgreSQL knows.
#[derive(Clone)]
pub struct Found {
    /// Its SCRAM verifier; `None` when it has none (no password, or MD5): it cannot log in
    /// with SCRAM.
    pub verifier: Option<ScramVerifier>,
    /// The keys its pools log in with (one holder per user, shared by its sessions).
    pub keys: SharedKeys,
}

/// The looked-up users and the lookup connection.
#[derive(Default)]
pub struct AuthLookup {
    users: Mutex<HashMap<String, (Instant, Option<Found>)>>,
    keys: Mutex<HashMap<String, SharedKeys>>,
    conn: tokio::sync::Mutex<Option<Backend>>,
}

/// Why a lookup failed (the client gets 08006).
#[derive(Debug, thiserror::Error)]
#[error("could not look the user up (auth_query): {0}")]
pub struct LookupError(String);

impl AuthLookup {
    /// The user `name` as PostgreSQL knows it (`None`: no such role), read afresh when the
    /// cached answer is older than `auth_cache`.
    pub async fn find(&self, config: &Config, name: &str) -> Result<Option<Found>, LookupError> {
        let ttl = config.auth.auth_cache.duration();
        if let Some((at, found)) = self.lock_users().get(name) {
            if at.elapsed() < ttl {
                return Ok(found.clone());
            }
        }
        let Some(query) = config.auth.auth_query.as_deref() else {
            return Ok(None);
        };
        let row = self.query(config, query, name).await?;
        let found = match row {
            None => None,
            Some(row) => {
                let passwd = row.get(1).cloned().flatten();
                Some(Found {
                    verifier: passwd.and_then(|p| ScramVerifier::parse(&p).ok()),
                    keys: self.keys_for(name),
                })
            }
        };
        self.lock_users()
            .insert(name.to_owned(), (Instant::now(), found.clone()));
        Ok(found)
    }

    /// Drops what is known of `name` (its login failed: the verifier may have changed).
    pub fn forget(&self, name: &str) {
        self.lock_users().remove(name);
    }

    fn lock_users(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Option<Found>)>> {
        self.users.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn keys_for(&self, name: &str) -> SharedKeys {
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_owned())
            .or_default()
            .clone()
    }

    /// Runs the lookup on the lookup connection (opened, or opened again once, as needed).
    async fn query(
        &self,
        config: &Config,
        query: &str,
        name: &str,
    ) -> Result<Option<Vec<Option<String>>>, LookupError> {
        let mut conn = self.conn.lock().await;
        for attempt in 0..2 {
            if conn.is_none() {
                let target = lookup_target(config);
                let timeout = config.pool.connect_timeout.duration();
                *conn = Some(
                    Backend::connect(&target, timeout)
                        .await
                        .map_err(|e| LookupError(e.to_string()))?,
                );
            }
            let Some(b) = conn.as_mut() else { continue };
            match tokio::time::timeout(Duration::from_secs(5), b.query_row_params(query, &[name]))
                .await
            {
                Ok(Ok(row)) => return Ok(row),
                Ok(Err(e)) if attempt == 0 => {
                    tracing::debug!(error = %e, "auth_query connection lost: reconnecting");
                    *conn = None;
                }
                Ok(Err(e)) => return Err(LookupError(e.to_string())),
                Err(_) => {
                    *conn = None;
                    return Err(LookupError("timed out".into()));
                }
            }
        }
        Err(LookupError("no connection".into()))
    }
}

/// Where the lookup logs in: the primary's database, as `auth_user`.
fn lookup_target(config: &Config) -> Target {
    let p = &config.upstream.primary;
    let (user, password) = match &config.auth.auth_user {
        Some(u) => (u.clone(), config.auth.auth_password.clone()),
        None => (p.user.clone(), p.password.clone()),
    };
    Target {
        host: p.host.clone(),
        port: p.port,
        user,
        database: p.database.clone(),
        password,
        keys: None,
        tls: UpstreamTls::for_server(p),
    }
}
