//! The state every session shares: the topology in force, pools, cancel keys, statement
//! names, shutdown signals, and the audit writer and result cache made on first need. The
//! broker builds it ([`crate::broker`]); sessions and the HTTP endpoint read it.

use crate::client::cancel::CancelRegistry;
use crate::upstream::backend::Pools;
use crate::upstream::statements::StatementRegistry;
use crate::upstream::topology::{NodeRegistry, RouteStats, Topology};
use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use tidegate_config::{Config, TlsMode};
use tokio_util::sync::CancellationToken;

/// Why the shared state could not be built for a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// TLS material could not be loaded.
    #[error("tls: {0}")]
    Tls(#[from] TlsError),
    /// A function list is malformed.
    #[error(transparent)]
    Catalog(#[from] crate::upstream::catalog::CatalogError),
}

/// Why the client-facing TLS acceptor could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// `tls.cert` or `tls.key` is not set.
    #[error("tls.cert and tls.key are required")]
    Missing,
    /// A PEM file could not be read or parsed.
    #[error("{path}: {source}")]
    Pem {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// rustls refused the certificate and key.
    #[error(transparent)]
    Rustls(#[from] tokio_rustls::rustls::Error),
}

/// State shared by every session.
pub struct Shared {
    /// The configuration and servers in force; replaced whole by a reload ([`Shared::install`]).
    pub current: ArcSwap<Topology>,
    /// The generation of `current`, for the per-transaction "did a reload happen" check.
    generation: AtomicU64,
    /// Every configured node, so reloads keep their health and counters.
    pub nodes: NodeRegistry,
    /// Routing and reload counters.
    pub stats: RouteStats,
    /// Backend pools.
    pub pools: Pools,
    /// Broker-issued cancel keys.
    pub cancels: CancelRegistry,
    /// Users looked up in PostgreSQL (`auth.auth_query`).
    pub auth_lookup: crate::client::startup::AuthLookup,
    /// Shared server-side prepared statement names.
    pub statements: StatementRegistry,
    /// Raised when shutdown starts: stop accepting, close idle clients.
    pub shutdown: Signal,
    /// Raised when the drain time is over: close everyone.
    pub force: Signal,
    /// Admitted clients.
    pub clients: AtomicUsize,
    /// Seeds fake SCRAM salts for unknown users.
    pub mock_secret: [u8; 32],
    /// The audit pipeline, when an audit plugin is configured (started by [`serve`]).
    pub audit: std::sync::OnceLock<Arc<crate::audit::AuditSink>>,
    /// Where the data hooks' declared columns are in each database.
    pub columns: crate::policy::columns::ColumnResolver,
    /// The result cache, made when `cache.enabled` is first seen (its backend is fixed then:
    /// a changed `cache.redis_url` needs a restart).
    pub cache: std::sync::OnceLock<Option<Arc<crate::cache::Cache>>>,
    /// Statements by kind and route, latency, errors, and the heaviest fingerprints.
    pub queries: crate::client::stats::QueryStats,
    /// What the admin console asks of the broker's own tasks.
    pub console: ConsoleRequests,
}

/// The answer to a RELOAD: the new configuration generation, or why nothing changed.
pub type ReloadReply = tokio::sync::oneshot::Sender<Result<u64, String>>;

/// What the admin console asks of the broker's own tasks.
#[derive(Default)]
pub struct ConsoleRequests {
    /// SHUTDOWN: the broker drains and stops, as on SIGTERM.
    pub shutdown: CancellationToken,
    /// RELOAD goes to the broker's reload task (set when the broker knows its file).
    pub reload: std::sync::OnceLock<tokio::sync::mpsc::Sender<ReloadReply>>,
}

impl Shared {
    /// The topology in force.
    pub fn topology(&self) -> Arc<Topology> {
        self.current.load_full()
    }

    /// Puts `topo` in force.
    pub fn install(&self, topo: Topology) {
        let generation = topo.generation;
        self.current.store(Arc::new(topo));
        // After the store: whoever sees the new generation loads the new topology.
        self.generation.store(generation, Ordering::Release);
    }

    /// The generation of the topology in force.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        self.current.load().config.clone()
    }

    /// Builds the topology for `config`, reusing known nodes.
    pub(crate) fn build_topology(
        &self,
        config: Config,
        generation: u64,
        plugins: Option<Arc<tidegate_plugins::Chain>>,
    ) -> Result<Topology, ServerError> {
        let tls = match config.tls.mode {
            TlsMode::Disable => None,
            _ => Some(load_tls(&config)?),
        };
        let catalogs = crate::upstream::catalog::Catalogs::new(&config)?;
        Ok(Topology {
            generation,
            catalogs,
            plugins,
            nodes: self.nodes.resolve(&config),
            config: Arc::new(config),
            tls,
        })
    }
}

/// Holds one admitted client's place under `max_client_connections`.
pub struct ClientGuard(Arc<Shared>);

impl ClientGuard {
    /// Counts one more client; `None` (and nothing counted) past `max_client_connections`.
    pub fn admit(sh: &Arc<Shared>) -> Option<ClientGuard> {
        let max = sh.current.load().config.limits.max_client_connections;
        if sh.clients.fetch_add(1, Ordering::AcqRel) < max {
            Some(ClientGuard(sh.clone()))
        } else {
            sh.clients.fetch_sub(1, Ordering::AcqRel);
            None
        }
    }
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Shared {
    /// Builds the shared state for `config`.
    pub fn new(config: Config) -> Result<Shared, ServerError> {
        let placeholder = Topology {
            generation: 0,
            catalogs: crate::upstream::catalog::Catalogs::new(&config)?,
            plugins: None,
            config: Arc::new(config.clone()),
            nodes: Vec::new(),
            tls: None,
        };
        let sh = Shared {
            current: ArcSwap::from_pointee(placeholder),
            generation: AtomicU64::new(0),
            nodes: NodeRegistry::default(),
            stats: RouteStats::default(),
            pools: Pools::default(),
            cancels: CancelRegistry::default(),
            auth_lookup: Default::default(),
            statements: StatementRegistry::default(),
            shutdown: Signal::default(),
            force: Signal::default(),
            clients: AtomicUsize::new(0),
            mock_secret: rand::random(),
            audit: std::sync::OnceLock::new(),
            columns: Default::default(),
            cache: std::sync::OnceLock::new(),
            queries: Default::default(),
            console: ConsoleRequests::default(),
        };
        sh.install(sh.build_topology(config, 1, None)?);
        Ok(sh)
    }
}

fn load_tls(config: &Config) -> Result<tokio_rustls::TlsAcceptor, ServerError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let (Some(cert), Some(key)) = (&config.tls.cert, &config.tls.key) else {
        return Err(TlsError::Missing.into());
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Pem {
            path: cert.clone(),
            source,
        })?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Pem {
        path: key.clone(),
        source,
    })?;
    let cfg = tokio_rustls::rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(TlsError::from)?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

/// The audit writer, started on first need: when the chain in service has an audit hook and
/// the configuration names its key. `None` when there is nothing to audit.
pub fn audit_sink(sh: &Arc<Shared>) -> Option<&Arc<crate::audit::AuditSink>> {
    if let Some(sink) = sh.audit.get() {
        return Some(sink);
    }
    let topo = sh.topology();
    let chain = topo.plugins.as_ref()?;
    if !chain
        .entries
        .iter()
        .any(|e| e.current.load().has_audit_hook())
    {
        return None;
    }
    let key = crate::audit::chain::ChainKey::new(
        crate::policy::keys(&topo.config),
        &topo.config.audit.key,
    )?;
    Some(sh.audit.get_or_init(|| {
        let weak = Arc::downgrade(sh);
        let source: crate::audit::ChainSource =
            Arc::new(move || weak.upgrade().and_then(|sh| sh.topology().plugins.clone()));
        crate::audit::AuditSink::start(&topo.config, key, source)
    }))
}

/// The result cache, made on first use while `cache.enabled`; `None` if its backend could not
/// be set up (a malformed URL, already reported).
pub fn result_cache(sh: &Arc<Shared>) -> Option<Arc<crate::cache::Cache>> {
    sh.cache
        .get_or_init(|| {
            let config = sh.config();
            match crate::cache::Cache::new(&config) {
                Ok(c) => Some(Arc::new(c)),
                Err(e) => {
                    tracing::error!(error = %e, "result cache off: its backend could not be set up");
                    None
                }
            }
        })
        .clone()
}

/// A one-way broadcast (shutdown, forced close): a cancellation token to wait on, and a flag
/// that is cheap to read on every transaction.
#[derive(Default)]
pub struct Signal {
    token: CancellationToken,
    raised: AtomicBool,
}

impl Signal {
    /// Raises it: the flag first, so whoever the token wakes sees it set.
    pub fn raise(&self) {
        self.raised.store(true, Ordering::Release);
        self.token.cancel();
    }

    /// Whether it was raised.
    pub fn is_raised(&self) -> bool {
        self.raised.load(Ordering::Acquire)
    }

    /// The token, to wait on.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }
}
