//! The accept loop, the state every session shares, and graceful shutdown.

use crate::backend::{PoolTimeouts, Pools};
use crate::cancel::CancelRegistry;
use crate::statements::StatementRegistry;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tidegate_config::{Config, TlsMode};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// TLS material could not be loaded.
    #[error("tls: {0}")]
    Tls(String),
}

/// State shared by every session.
pub struct Shared {
    /// The configuration in force.
    pub config: Arc<Config>,
    /// Backend pools.
    pub pools: Pools,
    /// Broker-issued cancel keys.
    pub cancels: CancelRegistry,
    /// Shared server-side prepared statement names.
    pub statements: StatementRegistry,
    /// Read/write classifications by statement fingerprint.
    pub classes: tidegate_sql::ClassCache,
    /// Health of each node (0 = primary, then the replicas).
    pub health: Vec<crate::health::NodeHealth>,
    /// Cancelled when shutdown starts: stop accepting, close idle clients.
    pub shutdown: CancellationToken,
    /// Set with `shutdown`; a plain flag for the per-transaction check.
    pub shutting_down: AtomicBool,
    /// Cancelled when the drain time is over: close everyone.
    pub force: CancellationToken,
    /// Admitted clients.
    pub clients: AtomicUsize,
    /// TLS for clients, when configured.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Seeds fake SCRAM salts for unknown users.
    pub mock_secret: [u8; 32],
}

impl Shared {
    /// The node writes go to: the configured primary, unless the health monitor found it not
    /// writable and another node writable (a promoted replica).
    pub fn writer(&self) -> usize {
        use std::sync::atomic::Ordering::Relaxed;
        if self.health.len() < 2 || self.health[0].writable.load(Relaxed) {
            return 0;
        }
        self.health
            .iter()
            .position(|h| h.writable.load(Relaxed))
            .unwrap_or(0)
    }
}

/// Holds one admitted client's place under `max_client_connections`.
pub struct ClientGuard(Arc<Shared>);

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Shared {
    /// Builds the shared state for `config`.
    pub fn new(config: Config) -> Result<Shared, ServerError> {
        let tls = match config.tls.mode {
            TlsMode::Disable => None,
            _ => Some(load_tls(&config)?),
        };
        let nodes_replicas = config.upstream.replicas.len();
        let p = &config.pool;
        let pools = Pools::new(
            p.size,
            PoolTimeouts {
                connect: p.connect_timeout.duration(),
                checkout: p.checkout_timeout.duration(),
                idle: p.idle_timeout.get(),
                check_after: p.check_after.duration(),
            },
        );
        Ok(Shared {
            config: Arc::new(config),
            pools,
            cancels: CancelRegistry::default(),
            statements: StatementRegistry::default(),
            classes: tidegate_sql::ClassCache::new(10_000),
            health: (0..=nodes_replicas).map(|_| Default::default()).collect(),
            shutdown: CancellationToken::new(),
            shutting_down: AtomicBool::new(false),
            force: CancellationToken::new(),
            clients: AtomicUsize::new(0),
            tls,
            mock_secret: rand::random(),
        })
    }
}

fn load_tls(config: &Config) -> Result<tokio_rustls::TlsAcceptor, ServerError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let (Some(cert), Some(key)) = (&config.tls.cert, &config.tls.key) else {
        return Err(ServerError::Tls("tls.cert and tls.key are required".into()));
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ServerError::Tls(format!("{cert}: {e}")))?;
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| ServerError::Tls(format!("{key}: {e}")))?;
    let cfg = tokio_rustls::rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ServerError::Tls(e.to_string()))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

/// Serves clients on `listener` until `shutdown` completes, then drains: the listener closes,
/// idle clients get 57P01, open transactions may finish within `limits.shutdown_timeout`, and
/// whoever is left is disconnected.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let sh = Arc::new(Shared::new(config)?);
    serve(listener, sh, shutdown).await;
    Ok(())
}

/// Like [`run`], with shared state built by the caller (tests inspect it).
pub async fn serve(listener: TcpListener, sh: Arc<Shared>, shutdown: impl Future<Output = ()>) {
    let tracker = TaskTracker::new();
    let reaper = tokio::spawn(reap(sh.clone()));
    let monitor = (!sh.config.upstream.replicas.is_empty())
        .then(|| tokio::spawn(crate::health::monitor(sh.clone())));
    tokio::pin!(shutdown);
    let max = sh.config.limits.max_client_connections;
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "accepting PostgreSQL connections");
    }
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let tcp = match accepted {
                    Ok((tcp, _peer)) => tcp,
                    Err(e) => {
                        // EMFILE and friends: back off briefly instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let guard = if sh.clients.fetch_add(1, Ordering::AcqRel) < max {
                    Some(ClientGuard(sh.clone()))
                } else {
                    sh.clients.fetch_sub(1, Ordering::AcqRel);
                    None
                };
                tracker.spawn(crate::client::handle_connection(sh.clone(), tcp, guard));
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!(
        clients = sh.clients.load(Ordering::Acquire),
        "shutting down: draining clients"
    );
    sh.shutting_down.store(true, Ordering::Relaxed);
    sh.shutdown.cancel();
    tracker.close();
    let drain = sh.config.limits.shutdown_timeout.duration();
    if tokio::time::timeout(drain, tracker.wait()).await.is_err() {
        tracing::warn!("shutdown timeout: disconnecting the remaining clients");
        sh.force.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
    }
    reaper.abort();
    if let Some(m) = monitor {
        m.abort();
    }
    for pool in sh.pools.all() {
        pool.close_idle();
    }
    tracing::info!("shutdown complete");
}

async fn reap(sh: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tick.tick().await;
        for pool in sh.pools.all() {
            pool.reap();
        }
    }
}
