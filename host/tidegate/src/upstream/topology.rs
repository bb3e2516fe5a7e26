//! The servers in service and the configuration they came from, swapped as one on reload.
//!
//! A [`Topology`] is immutable: the configuration, the nodes (the configured primary first,
//! then the replicas) and the client TLS acceptor. Sessions take the current one when they
//! attach a server connection for a new transaction, so a reload never changes the server
//! under an open transaction. A [`Node`] outlives reloads while its address stays configured,
//! so its health, lag and counters carry over.

use crate::upstream::health::NodeHealth;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use tidegate_config::Config;

/// One upstream server.
pub struct Node {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// What the health monitor last saw.
    pub health: NodeHealth,
    /// Routing counters.
    pub stats: NodeStats,
}

/// Per-node routing counters (monotonic), ready for metrics.
#[derive(Default)]
pub struct NodeStats {
    /// Transactions (or single statements) routed here as provably read-only.
    pub reads: AtomicU64,
    /// Transactions routed here because they may write (or were not provably read-only).
    pub writes: AtomicU64,
    /// Times this node was banned after a failure.
    pub bans: AtomicU64,
    /// Reads that failed here before the client saw a byte and were retried elsewhere.
    pub retries: AtomicU64,
}

impl Node {
    /// `host:port`.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Counters that belong to no single node.
#[derive(Default)]
pub struct RouteStats {
    /// Reads sent to the primary because a replica might not have the client's last write.
    pub ryw_redirects: AtomicU64,
    /// Reads sent to the primary because no replica was healthy.
    pub no_replica: AtomicU64,
    /// Successful configuration reloads.
    pub reloads: AtomicU64,
    /// Reloads refused (the file did not validate); the previous configuration stayed.
    pub reload_failures: AtomicU64,
}

/// The configuration in force and the servers it names.
pub struct Topology {
    /// Bumped by every reload that was applied.
    pub generation: u64,
    /// The configuration.
    pub config: Arc<Config>,
    /// The configured primary, then the replicas in configuration order.
    pub nodes: Vec<Arc<Node>>,
    /// TLS for clients, when configured.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Function catalogs and classification caches, per database.
    pub catalogs: crate::upstream::catalog::Catalogs,
    /// The policy plugin chain, when plugins are configured.
    pub plugins: Option<Arc<tidegate_plugins::Chain>>,
}

impl Topology {
    /// The node writes go to: the configured primary, unless the health monitor found it not
    /// writable and another node writable (a promoted replica).
    pub fn writer(&self) -> usize {
        if self.nodes.len() < 2 || self.nodes[0].health.writable.load(Relaxed) {
            return 0;
        }
        self.nodes
            .iter()
            .position(|n| n.health.writable.load(Relaxed))
            .unwrap_or(0)
    }

    /// Whether any replica is configured.
    pub fn has_replicas(&self) -> bool {
        self.nodes.len() > 1
    }
}

/// Every node ever configured and still named, by address, so a reload keeps their state.
#[derive(Default)]
pub struct NodeRegistry {
    nodes: Mutex<HashMap<(String, u16), Arc<Node>>>,
}

impl NodeRegistry {
    /// The nodes `config` names, reusing those already known; forgets the others.
    pub fn resolve(&self, config: &Config) -> Vec<Arc<Node>> {
        let mut known = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        let p = &config.upstream.primary;
        let addrs: Vec<(String, u16)> = std::iter::once((p.host.clone(), p.port))
            .chain(
                config
                    .upstream
                    .replicas
                    .iter()
                    .map(|r| (r.host.clone(), r.port)),
            )
            .collect();
        let nodes: Vec<Arc<Node>> = addrs
            .iter()
            .map(|(host, port)| {
                known
                    .entry((host.clone(), *port))
                    .or_insert_with(|| {
                        Arc::new(Node {
                            host: host.clone(),
                            port: *port,
                            health: NodeHealth::default(),
                            stats: NodeStats::default(),
                        })
                    })
                    .clone()
            })
            .collect();
        known.retain(|k, _| addrs.contains(k));
        nodes
    }
}
