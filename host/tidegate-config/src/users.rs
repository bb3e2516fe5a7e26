//! `[auth]` and `[[users]]`: who may log in to the broker, and as which PostgreSQL role.

use crate::upstream::Server;
use crate::{Millis, ReadYourWrites, ScramVerifier};
use serde::Deserialize;

/// Client authentication methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum AuthMethod {
    /// SCRAM-SHA-256 against the users' verifiers.
    #[default]
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    /// No password: any configured user name is accepted. Development only.
    #[serde(rename = "trust")]
    Trust,
}

/// `[auth]`
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    /// How clients prove who they are.
    pub method: AuthMethod,
    /// Users not in `[[users]]` are looked up in PostgreSQL with this query (`$1` is the
    /// user name; it returns the name and the SCRAM verifier, as
    /// `SELECT usename, passwd FROM pg_shadow WHERE usename = $1`). The broker then logs in
    /// to PostgreSQL as that role with the keys of the client's own SCRAM proof. Users in
    /// `[[users]]` win.
    pub auth_query: Option<String>,
    /// The role the lookup runs as; defaults to `upstream.primary.user`.
    pub auth_user: Option<String>,
    /// Its password (when the server asks for one); defaults to `upstream.primary.password`
    /// when `auth_user` is unset.
    pub auth_password: Option<String>,
    /// How long a looked-up verifier is reused before it is read again (a failed login reads
    /// it again at once).
    pub auth_cache: Millis,
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            method: AuthMethod::default(),
            auth_query: None,
            auth_user: None,
            auth_password: None,
            auth_cache: Millis(1_000),
        }
    }
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("method", &self.method)
            .field("auth_query", &self.auth_query)
            .field("auth_user", &self.auth_user)
            .field("auth_cache", &self.auth_cache)
            .finish_non_exhaustive()
    }
}

/// `[[users]]`: a broker user and the PostgreSQL role it acts as.
#[derive(Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct User {
    /// The name clients log in with.
    pub name: String,
    /// SCRAM verifier in PostgreSQL's format (preferred).
    pub scram: Option<String>,
    /// Plaintext password, hashed at load. Development only.
    pub password: Option<String>,
    /// The PostgreSQL role the user's statements run as; defaults to `upstream.primary.user`.
    pub role: Option<String>,
    /// Password the broker uses to log in as `role` when it differs from the upstream user.
    pub role_password: Option<String>,
    /// This user's read-your-writes mode; `routing.read_your_writes` when unset.
    pub read_your_writes: Option<ReadYourWrites>,
    /// Roles TideGate's plugins see for this user (e.g. for the access-control plugin).
    pub roles: Vec<String>,
    /// Derived at load from `scram` or `password`.
    #[serde(skip)]
    pub verifier: Option<ScramVerifier>,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl User {
    /// The PostgreSQL role this user acts as.
    pub fn role<'a>(&'a self, upstream: &'a Server) -> &'a str {
        self.role.as_deref().unwrap_or(&upstream.user)
    }
}
