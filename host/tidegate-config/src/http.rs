//! `[http]`: the HTTP/JSON endpoint, and `[migrations]`.

use crate::{Config, Millis};
use serde::Deserialize;

/// `[http]`: limits and credentials of the HTTP/JSON endpoint (its address is `listen.http`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Http {
    /// Request bodies larger than this are refused with 413 before they are read whole.
    pub max_body_bytes: usize,
    /// A connection that has not sent a request's headers within this long is closed
    /// (slowloris).
    pub header_read_timeout: Millis,
    /// A request running longer than this is cancelled (its statement too) and answered 408.
    pub request_timeout: Millis,
    /// Requests served at once; more are answered 429 at once.
    pub max_concurrent: usize,
    /// Open HTTP connections; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// A JSON (not streamed) reply larger than this is refused with 413: ask for
    /// `application/x-ndjson` or `text/csv`, which stream.
    pub max_response_bytes: usize,
    /// Bearer tokens and the broker users they act as.
    pub tokens: Vec<HttpToken>,
    /// Broker users who may read `GET /admin/status`.
    pub admin_users: Vec<String>,
    /// Who may read `GET /metrics`.
    pub metrics: MetricsAccess,
}

/// `http.metrics`: who may scrape `GET /metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MetricsAccess {
    /// Anyone who reaches the HTTP listener (as PgDog's and most exporters' endpoints).
    #[default]
    Open,
    /// `http.admin_users` only.
    Admin,
    /// No `/metrics` (404).
    Off,
}

/// One `[[http.tokens]]` entry.
#[derive(Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct HttpToken {
    /// The broker user (`[[users]]`) requests with this token act as.
    pub user: String,
    /// SHA-256 of the token, in lowercase hex (preferred: the token itself is then not in the
    /// file). Derived at load from `token` when that is given instead.
    pub sha256: String,
    /// The token itself. Development only.
    pub token: String,
}

impl std::fmt::Debug for HttpToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpToken")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Default for Http {
    fn default() -> Self {
        Http {
            max_body_bytes: 64 << 20,
            header_read_timeout: Millis(10_000),
            request_timeout: Millis(30_000),
            max_concurrent: 256,
            max_connections: 4096,
            max_response_bytes: 64 << 20,
            tokens: Vec::new(),
            metrics: MetricsAccess::Open,
            admin_users: Vec::new(),
        }
    }
}

/// `[migrations]`: TideGate's schema migrations (`migrations/`).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Migrations {
    /// Apply pending migrations when `tidegate serve` starts (advisory-locked: concurrent
    /// starts apply them once). A failure stops the start.
    pub on_start: bool,
    /// The database they apply to (default: `upstream.primary.database`).
    pub database: Option<String>,
}

impl Config {
    /// Checks `[http]` and derives each token's `sha256` (lowercase) so requests compare one
    /// digest, never a plaintext token.
    pub(crate) fn check_http(&mut self) -> Result<(), (String, String)> {
        let h = &self.http;
        let err = |p: &str, m: &str| Err((format!("http.{p}"), m.to_owned()));
        if h.max_body_bytes < 1024 {
            return err("max_body_bytes", "must be at least 1024");
        }
        if h.header_read_timeout.0 == 0 {
            return err("header_read_timeout", "must be positive");
        }
        if h.max_concurrent == 0 {
            return err("max_concurrent", "must be at least 1");
        }
        for (i, t) in self.http.tokens.iter_mut().enumerate() {
            let at = |k: &str| format!("http.tokens[{i}].{k}");
            if !self.users.iter().any(|u| u.name == t.user) {
                return Err((at("user"), format!("no [[users]] entry named {:?}", t.user)));
            }
            let hex_ok = t.sha256.len() == 64 && t.sha256.bytes().all(|b| b.is_ascii_hexdigit());
            match (t.sha256.is_empty(), t.token.is_empty()) {
                (false, true) if hex_ok => {}
                (false, true) => return Err((at("sha256"), "must be 64 hex digits".into())),
                (true, false) if t.token.len() >= 16 => {}
                (true, false) => {
                    return Err((at("token"), "must be at least 16 characters".into()))
                }
                _ => {
                    return Err((
                        at("sha256"),
                        "give exactly one of `sha256` or `token`".into(),
                    ))
                }
            }
            t.sha256 = if t.token.is_empty() {
                t.sha256.to_ascii_lowercase()
            } else {
                use sha2::Digest;
                format!("{:x}", sha2::Sha256::digest(t.token.as_bytes()))
            };
        }
        Ok(())
    }

    /// The database migrations apply to.
    pub fn migrations_database(&self) -> &str {
        self.migrations
            .database
            .as_deref()
            .unwrap_or(&self.upstream.primary.database)
    }
}
