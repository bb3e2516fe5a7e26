//! `[upstream]`: the primary, its replicas, and how the broker connects to them.

use serde::Deserialize;

/// `[upstream]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Upstream {
    /// The primary (read-write) server.
    pub primary: Server,
    /// Streaming replicas for provably read-only statements, as `host:port`; they share the
    /// primary's credentials. From the environment: a comma-separated list.
    #[serde(deserialize_with = "replica_list")]
    pub replicas: Vec<Replica>,
}

/// A replica's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
}

fn parse_replica(s: &str) -> Result<Replica, String> {
    let s = s.trim();
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("replica {s:?}: expected host:port"))?;
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("replica {s:?}: invalid port"))?;
    if host.is_empty() {
        return Err(format!("replica {s:?}: empty host"));
    }
    Ok(Replica {
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port,
    })
}

fn replica_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Replica>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        List(Vec<String>),
        Csv(String),
    }
    let items: Vec<String> = match Raw::deserialize(d)? {
        Raw::List(v) => v,
        Raw::Csv(s) => s
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(str::to_owned)
            .collect(),
    };
    items
        .iter()
        .map(|s| parse_replica(s))
        .collect::<Result<_, _>>()
        .map_err(serde::de::Error::custom)
}

/// One PostgreSQL server and the credential the broker logs in with.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// The role the broker logs in as (unless a broker user maps to another role).
    pub user: String,
    /// The database broker users land in when they name none.
    pub database: String,
    /// Password for `user` (cleartext, MD5 or SCRAM upstream authentication).
    pub password: Option<String>,
    /// TLS to the server (and the replicas), as libpq's `sslmode`.
    pub sslmode: SslMode,
    /// PEM file of the certificate authorities `verify-full` trusts (default: none, so
    /// `verify-full` needs it).
    pub sslrootcert: Option<std::path::PathBuf>,
    /// Send a cleartext password when the server asks for one over a connection without TLS
    /// (default: refused, as it would cross the network in the clear).
    pub allow_cleartext_password: bool,
}

/// How the broker uses TLS to PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// Never.
    Disable,
    /// TLS when the server offers it, without checking its certificate; else plaintext.
    #[default]
    Prefer,
    /// TLS or no connection; the certificate is not checked.
    Require,
    /// TLS or no connection, with a certificate for the host signed by `sslrootcert`.
    VerifyFull,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("database", &self.database)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("sslmode", &self.sslmode)
            .field("sslrootcert", &self.sslrootcert)
            .field("allow_cleartext_password", &self.allow_cleartext_password)
            .finish()
    }
}

impl Default for Server {
    fn default() -> Self {
        Server {
            host: "127.0.0.1".into(),
            port: 5432,
            user: "postgres".into(),
            database: "postgres".into(),
            password: None,
            sslmode: SslMode::default(),
            sslrootcert: None,
            allow_cleartext_password: false,
        }
    }
}
