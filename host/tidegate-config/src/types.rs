//! The configuration tree. Every key is documented in `config/tidegate.example.toml`.

use crate::plugins::Plugins;
use crate::upstream::{SslMode, Upstream};
use crate::users::{Auth, AuthMethod, User};
use crate::{Millis, ScramVerifier};
use serde::Deserialize;
use std::collections::HashSet;
use std::net::SocketAddr;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listening addresses.
    pub listen: Listen,
    /// The PostgreSQL servers behind the broker.
    pub upstream: Upstream,
    /// Backend connection pooling.
    pub pool: Pool,
    /// Read/write routing across the primary and replicas.
    pub routing: Routing,
    /// Client-side limits and timeouts.
    pub limits: Limits,
    /// How clients authenticate to the broker.
    pub auth: Auth,
    /// TLS for client connections.
    pub tls: Tls,
    /// Logging.
    pub log: Log,
    /// The async runtime.
    pub runtime: Runtime,
    /// WebAssembly policy plugins.
    pub plugins: Plugins,
    /// Persisted, hash-chained audit records.
    pub audit: crate::Audit,
    /// The result cache.
    pub cache: crate::Cache,
    /// The HTTP/JSON endpoint.
    pub http: crate::Http,
    /// TideGate's schema migrations.
    pub migrations: crate::Migrations,
    /// The declared time-series lifecycle (`tidegate timescale plan|apply|status`).
    pub timescale: crate::Timescale,
    /// `[admin]`: who may use the admin console and the HTTP admin endpoints.
    pub admin: Admin,
    /// Broker users.
    pub users: Vec<User>,
    /// What loading found worth a warning (deprecated keys); logged at start and reload.
    #[serde(skip)]
    pub warnings: Vec<String>,
}

/// `[listen]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Listen {
    /// PostgreSQL wire protocol listener.
    pub sql: SocketAddr,
    /// HTTP/JSON listener; `"off"` (or empty) disables it.
    #[serde(deserialize_with = "optional_addr")]
    pub http: Option<SocketAddr>,
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            sql: SocketAddr::from(([127, 0, 0, 1], 6543)),
            http: Some(SocketAddr::from(([127, 0, 0, 1], 8543))),
        }
    }
}

fn optional_addr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let s = String::deserialize(d)?;
    match s.trim() {
        "" | "off" => Ok(None),
        a => a.parse().map(Some).map_err(serde::de::Error::custom),
    }
}

/// Pooling modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// A backend is held for one transaction (or one statement outside a transaction).
    #[default]
    Transaction,
    /// A backend is held for the whole client session.
    Session,
}

/// `[pool]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Pool {
    /// Pooling mode.
    pub mode: PoolMode,
    /// Backend connections per (database, role).
    pub size: usize,
    /// Time allowed to open and authenticate a backend connection.
    pub connect_timeout: Millis,
    /// How long a client waits for a free backend before it gets an error.
    pub checkout_timeout: Millis,
    /// A statement running longer is cancelled (0 = never).
    pub query_timeout: Millis,
    /// An idle backend connection older than this is closed (0 = never).
    pub idle_timeout: Millis,
    /// A client idle inside a transaction longer than this is disconnected (0 = never).
    pub idle_transaction_timeout: Millis,
    /// A client idle outside a transaction longer than this is disconnected (0 = never).
    pub client_idle_timeout: Millis,
    /// A pooled connection idle longer than this is checked before reuse.
    pub check_after: Millis,
}

impl Default for Pool {
    fn default() -> Self {
        Pool {
            mode: PoolMode::Transaction,
            size: 20,
            connect_timeout: Millis(5_000),
            checkout_timeout: Millis(5_000),
            query_timeout: Millis(0),
            idle_timeout: Millis(600_000),
            idle_transaction_timeout: Millis(0),
            client_idle_timeout: Millis(0),
            check_after: Millis(1_000),
        }
    }
}

/// `[routing]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Routing {
    /// A replica that fails a connection attempt is skipped for this long.
    pub ban_time: Millis,
    /// Read-your-writes: after a client used the primary, its reads stay on the primary for
    /// this long, so it never reads from a replica that has not replayed its write yet
    /// ("0" turns it off).
    pub read_your_writes_window: Millis,
    /// How often replicas' health and replication lag are checked.
    pub check_interval: Millis,
    /// A replica further behind than this (time) is skipped until it catches up.
    pub max_lag: Millis,
    /// A replica further behind than this many WAL bytes is skipped until it catches up.
    pub max_lag_bytes: u64,
    /// Read-your-writes for users that do not choose their own (`[[users]] read_your_writes`).
    pub read_your_writes: ReadYourWrites,
    /// How reads are spread over healthy replicas.
    pub balance: Balance,
    /// Functions to treat as read-only whatever `pg_proc` says (`name` or `schema.name`).
    pub read_only_functions: Vec<String>,
    /// Functions whose calls always go to the primary (wins over `read_only_functions`).
    pub primary_functions: Vec<String>,
}

/// How a client is kept from reading older data than it wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ReadYourWrites {
    /// After a write commits, reads go only to replicas that replayed its WAL position, else to
    /// the primary.
    #[default]
    Lsn,
    /// Reads go to the primary for `read_your_writes_window` after a write.
    Window,
    /// No guarantee: reads may see a replica's older state.
    Off,
}

/// Replica choice for a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Each client takes the healthy replicas in turn.
    #[default]
    RoundRobin,
    /// The healthy replica with the fewest connections lent out.
    LeastOutstanding,
}

impl Default for Routing {
    fn default() -> Self {
        Routing {
            ban_time: Millis(10_000),
            read_your_writes_window: Millis(2_000),
            check_interval: Millis(1_000),
            max_lag: Millis(1_000),
            max_lag_bytes: 16 << 20,
            read_your_writes: ReadYourWrites::Lsn,
            balance: Balance::RoundRobin,
            read_only_functions: Vec::new(),
            primary_functions: Vec::new(),
        }
    }
}

/// `[limits]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Clients beyond this number get SQLSTATE 53300 at once.
    pub max_client_connections: usize,
    /// Largest client message accepted, checked from the length header before buffering.
    pub max_message_bytes: usize,
    /// Time allowed from accept to the end of authentication.
    pub startup_timeout: Millis,
    /// On SIGTERM/SIGINT, how long open transactions may take to finish.
    pub shutdown_timeout: Millis,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_client_connections: 1000,
            max_message_bytes: 16 << 20,
            startup_timeout: Millis(10_000),
            shutdown_timeout: Millis(30_000),
        }
    }
}

/// Client TLS modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Answer SSLRequest with `N`.
    #[default]
    Disable,
    /// Offer TLS; plaintext clients are accepted.
    Allow,
    /// Plaintext clients are refused before authentication.
    Require,
}

/// `[tls]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    /// Whether clients may or must use TLS.
    pub mode: TlsMode,
    /// PEM certificate chain.
    pub cert: Option<String>,
    /// PEM private key.
    pub key: Option<String>,
}

/// `[runtime]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Runtime {
    /// Event-loop threads: 1 = a single-threaded loop (the default, like PgBouncer);
    /// 0 = one per CPU core; N = N threads. Read at start only.
    pub worker_threads: usize,
    /// Where `tidegate serve` writes its process id, so `tidegate reload` can find it.
    pub pid_file: Option<String>,
    /// Reload when the configuration file changes (its directory is watched, so editors'
    /// rename-saves and Kubernetes ConfigMap swaps are seen).
    pub watch_config: bool,
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime {
            worker_threads: 1,
            pid_file: None,
            watch_config: true,
        }
    }
}

/// Log output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Pretty,
    /// One JSON object per line.
    Json,
}

/// `[admin]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    /// Broker users who may connect to the admin console (the virtual database `database`),
    /// read `/admin/*`, and see health detail. `http.admin_users` is merged in (deprecated).
    pub users: Vec<String>,
    /// The virtual database of the admin console, like PgBouncer's `pgbouncer`.
    pub database: String,
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            users: Vec::new(),
            database: "tidegate".into(),
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// Output format.
    pub format: LogFormat,
    /// An `EnvFilter` directive, e.g. `info` or `tidegate=debug`; `RUST_LOG` wins when set.
    pub level: String,
    /// Requests slower than this are logged (fingerprint, duration, route; never values);
    /// `0` = off.
    pub slow_statement: Millis,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            format: LogFormat::Pretty,
            level: "info".into(),
            slow_statement: Millis(0),
        }
    }
}

impl Config {
    /// Fills derived fields and checks values; the error names the key path.
    pub(crate) fn prepare(&mut self) -> Result<(), (String, String)> {
        let err = |p: &str, m: &str| Err((p.to_owned(), m.to_owned()));
        if !self.http.admin_users.is_empty() {
            for u in std::mem::take(&mut self.http.admin_users) {
                if !self.admin.users.contains(&u) {
                    self.admin.users.push(u);
                }
            }
            self.warnings
                .push("http.admin_users is deprecated: list the users in [admin] users".into());
        }
        if self.admin.database.is_empty() {
            return err("admin.database", "must not be empty");
        }
        if self.pool.size == 0 {
            return err("pool.size", "must be at least 1");
        }
        if self.pool.connect_timeout.0 == 0 {
            return err("pool.connect_timeout", "must be positive");
        }
        if self.routing.check_interval.0 == 0 {
            return err("routing.check_interval", "must be positive");
        }
        if self.pool.checkout_timeout.0 == 0 {
            return err("pool.checkout_timeout", "must be positive");
        }
        if self.limits.max_client_connections == 0 {
            return err("limits.max_client_connections", "must be at least 1");
        }
        if self.limits.max_message_bytes < 1024 || self.limits.max_message_bytes > (1 << 30) {
            return err(
                "limits.max_message_bytes",
                "must be between 1024 and 1073741824",
            );
        }
        if self.limits.startup_timeout.0 == 0 {
            return err("limits.startup_timeout", "must be positive");
        }
        let p = &self.upstream.primary;
        if p.host.is_empty() {
            return err("upstream.primary.host", "must not be empty");
        }
        if p.sslmode == SslMode::VerifyFull && p.sslrootcert.is_none() {
            return err(
                "upstream.primary.sslrootcert",
                "sslmode = \"verify-full\" needs the CA certificates to verify with",
            );
        }
        if p.port == 0 {
            return err("upstream.primary.port", "must not be 0");
        }
        if p.user.is_empty() {
            return err("upstream.primary.user", "must not be empty");
        }
        if p.database.is_empty() {
            return err("upstream.primary.database", "must not be empty");
        }
        let mut nodes = HashSet::new();
        nodes.insert((p.host.clone(), p.port));
        for r in &self.upstream.replicas {
            if !nodes.insert((r.host.clone(), r.port)) {
                return err(
                    "upstream.replicas",
                    &format!("{}:{} is listed twice (or is the primary)", r.host, r.port),
                );
            }
        }
        if self.tls.mode != TlsMode::Disable && (self.tls.cert.is_none() || self.tls.key.is_none())
        {
            return err("tls.mode", "TLS needs both tls.cert and tls.key");
        }
        for (key, list) in [
            (
                "routing.read_only_functions",
                &self.routing.read_only_functions,
            ),
            ("routing.primary_functions", &self.routing.primary_functions),
        ] {
            for entry in list {
                if let Err(e) = tidegate_sql::parse_function_name(entry) {
                    return err(key, &e.to_string());
                }
            }
        }
        self.check_plugins()?;
        self.check_audit()?;
        self.check_cache()?;
        self.timescale.check()?;
        if self.users.is_empty() {
            return err("users", "at least one [[users]] entry is required");
        }
        let mut seen = HashSet::new();
        for (i, u) in self.users.iter_mut().enumerate() {
            let at = |k: &str| format!("users[{i}].{k}");
            if u.name.is_empty() || u.name.len() > 63 || u.name.contains('\0') {
                return Err((at("name"), "must be 1 to 63 bytes without NUL".into()));
            }
            if !seen.insert(u.name.clone()) {
                return Err((at("name"), format!("duplicate user {:?}", u.name)));
            }
            u.verifier = match (&u.scram, &u.password) {
                (Some(_), Some(_)) => {
                    return Err((
                        at("password"),
                        "set either scram or password, not both".into(),
                    ))
                }
                (Some(s), None) => Some(ScramVerifier::parse(s).map_err(|m| (at("scram"), m))?),
                (None, Some(pw)) => Some(ScramVerifier::from_password(pw, 4096)),
                (None, None) if self.auth.method == AuthMethod::Trust => None,
                (None, None) => {
                    return Err((
                        at("name"),
                        "needs scram or password (or auth.method = \"trust\")".into(),
                    ))
                }
            };
            if u.role.as_deref() == Some("") {
                return Err((at("role"), "must not be empty".into()));
            }
        }
        self.check_http()
    }

    /// The user entry called `name`.
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }
}

impl Config {
    fn check_plugins(&self) -> Result<(), (String, String)> {
        let p = &self.plugins;
        if p.call_timeout.0 == 0 {
            return Err(("plugins.call_timeout".into(), "must be positive".into()));
        }
        if p.memory_limit < (64 << 10) {
            return Err((
                "plugins.memory_limit".into(),
                "must be at least 65536".into(),
            ));
        }
        let mut names = HashSet::new();
        for (i, e) in p.chain.iter().enumerate() {
            if e.name.is_empty() || !names.insert(e.name.as_str()) {
                return Err((
                    format!("plugins.chain[{i}].name"),
                    "must be non-empty and unique".into(),
                ));
            }
            if e.file.is_empty() {
                return Err((
                    format!("plugins.chain[{i}].file"),
                    "must not be empty".into(),
                ));
            }
            for k in &e.keys {
                if !p.keys.iter().any(|key| &key.name == k) {
                    return Err((
                        format!("plugins.chain[{i}].keys"),
                        format!("no [[plugins.keys]] entry named {k:?}"),
                    ));
                }
                // A plugin that could MAC with the audit chain's key could forge records (or
                // checkpoints) the verifier accepts: only the host's audit writer holds it.
                if !self.audit.key.is_empty() && *k == self.audit.key {
                    return Err((
                        format!("plugins.chain[{i}].keys"),
                        format!(
                            "{k:?} is the audit chain key (audit.key): no plugin may be given it"
                        ),
                    ));
                }
            }
        }
        for (i, k) in p.keys.iter().enumerate() {
            use base64::Engine;
            let ok = base64::engine::general_purpose::STANDARD
                .decode(k.secret.trim())
                .is_ok_and(|b| b.len() == 32);
            if k.name.is_empty() || !ok {
                return Err((
                    format!("plugins.keys[{i}].secret"),
                    "needs a name and a 32-byte base64 secret".into(),
                ));
            }
        }
        Ok(())
    }
}
