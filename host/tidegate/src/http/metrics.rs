//! `GET /metrics`: the broker's counters and gauges in the OpenMetrics text format that
//! Prometheus scrapes (`prometheus-client`), read from the counters the broker keeps anyway
//! (pools' activity, the statement statistics of `client::stats`, nodes, plugins, cache,
//! audit) — nothing is counted on a statement's path for it. Labels come only from the configuration
//! and the pools (database, role, node address, plugin name, outcome), never from SQL text or
//! values a client sends. Open by default; `http.metrics = "admin"` restricts it to
//! `http.admin_users`, `"off"` removes it.

use super::error::ApiError;
use super::HttpState;
use crate::upstream::HistogramSnapshot;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use tidegate_config::MetricsAccess;

/// The content type of the OpenMetrics text format.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The routes.
pub fn routes() -> Router<Arc<HttpState>> {
    Router::new().route("/metrics", get(metrics))
}

async fn metrics(
    State(st): State<Arc<HttpState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    match st.sh.config().http.metrics {
        MetricsAccess::Off => return Err(ApiError::not_found("no such endpoint")),
        MetricsAccess::Admin => st.require_admin(&headers).await?,
        MetricsAccess::Open => {}
    }
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry(&st))
        .map_err(|e| ApiError::internal(&format!("encoding metrics: {e}")))?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response())
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    database: String,
    role: String,
    node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolStateLabels {
    database: String,
    role: String,
    node: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabels {
    plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

fn counter(v: u64) -> Counter {
    let c = Counter::default();
    c.inc_by(v);
    c
}

fn gauge(v: i64) -> Gauge {
    let g = Gauge::default();
    g.set(v);
    g
}

fn load(a: &AtomicU64) -> u64 {
    a.load(Relaxed)
}

/// A registry holding this moment's values.
fn registry(st: &HttpState) -> Registry {
    let mut r = Registry::with_prefix("tidegate");
    let sh = &st.sh;
    let topo = sh.topology();
    r.register(
        "clients",
        "Client connections on the PostgreSQL protocol (HTTP sessions included)",
        gauge(sh.clients.load(Relaxed) as i64),
    );
    r.register(
        "http_connections",
        "Open HTTP connections",
        gauge(st.connections.load(Relaxed) as i64),
    );
    r.register(
        "http_requests_in_flight",
        "HTTP requests being served",
        gauge(st.inflight.load(Relaxed) as i64),
    );
    r.register(
        "config_generation",
        "The configuration in force: 1 at start, +1 per applied reload",
        gauge(topo.generation as i64),
    );
    let reloads = Family::<ResultLabels, Counter>::default();
    reloads
        .get_or_create(&ResultLabels { result: "ok" })
        .inc_by(load(&sh.stats.reloads));
    reloads
        .get_or_create(&ResultLabels { result: "failed" })
        .inc_by(load(&sh.stats.reload_failures));
    r.register(
        "reloads",
        "Configuration reloads, applied or refused",
        reloads,
    );
    r.register(
        "read_your_writes_redirects",
        "Reads sent to the primary because a replica might lack the client's last write",
        counter(load(&sh.stats.ryw_redirects)),
    );
    r.register(
        "no_healthy_replica",
        "Reads sent to the primary because no replica was healthy",
        counter(load(&sh.stats.no_replica)),
    );
    pools(&mut r, st);
    nodes(&mut r, &topo.nodes);
    if let Some(cache) = sh.cache.get().and_then(Option::as_ref) {
        for (name, value) in cache.stats.snapshot() {
            r.register(
                format!("cache_{name}"),
                format!("Result cache: {}", name.replace('_', " ")),
                counter(value),
            );
        }
    }
    if let Some(audit) = crate::client::shared::audit_sink(sh) {
        r.register(
            "audit_records_written",
            "Audit records written",
            counter(load(&audit.written)),
        );
        r.register(
            "audit_write_failures",
            "Audit writes that failed (statements are refused meanwhile)",
            counter(load(&audit.write_failures)),
        );
        r.register(
            "audit_queue_depth",
            "Audit records queued and not yet written",
            gauge(audit.queue_depth() as i64),
        );
    }
    statements(&mut r, &sh.queries);
    http_requests(&mut r, st);
    if let Some(cache) = sh.cache.get().and_then(Option::as_ref) {
        r.register(
            "cache_breaker_open",
            "1 while the cache backend's breaker is open (reads bypass the cache)",
            gauge(i64::from(cache.breaker_is_open())),
        );
    }
    plugins(&mut r, topo.plugins.as_deref());
    r
}

fn pools(r: &mut Registry, st: &HttpState) {
    let size = Family::<PoolLabels, Gauge>::default();
    let conns = Family::<PoolStateLabels, Gauge>::default();
    let clients = Family::<PoolStateLabels, Gauge>::default();
    let transactions = Family::<PoolLabels, Counter>::default();
    let paused = Family::<PoolLabels, Gauge>::default();
    let mut waits = Histograms::default();
    for p in st.sh.pools.all() {
        let k = &p.key;
        let labels = PoolLabels {
            database: k.database.clone(),
            role: k.role.clone(),
            node: format!("{}:{}", k.host, k.port),
        };
        let state = |state| PoolStateLabels {
            database: k.database.clone(),
            role: k.role.clone(),
            node: labels.node.clone(),
            state,
        };
        size.get_or_create(&labels).set(p.size() as i64);
        conns
            .get_or_create(&state("active"))
            .set(p.outstanding() as i64);
        conns
            .get_or_create(&state("idle"))
            .set(p.idle_count() as i64);
        let a = p.activity.snapshot();
        conns.get_or_create(&state("login")).set(a.logins as i64);
        clients
            .get_or_create(&state("active"))
            .set(a.clients.saturating_sub(a.waiting) as i64);
        clients
            .get_or_create(&state("waiting"))
            .set(a.waiting as i64);
        transactions.get_or_create(&labels).inc_by(a.transactions);
        paused.get_or_create(&labels).set(i64::from(a.paused));
        waits.0.push((labels, p.activity.wait_histogram.snapshot()));
    }
    r.register(
        "pool_clients",
        "Clients of a pool: active (served or idle) or waiting for a connection",
        clients,
    );
    r.register(
        "pool_transactions",
        "Transactions a pool's connections served",
        transactions,
    );
    r.register("pool_paused", "1 while PAUSE holds a pool", paused);
    r.register(
        "pool_wait_seconds",
        "How long checkouts waited for a connection (or for RESUME)",
        waits,
    );
    r.register("pool_size", "Server connections a pool may open", size);
    r.register(
        "pool_server_connections",
        "Server connections of a pool: active (lent to a client) or idle",
        conns,
    );
}

fn nodes(r: &mut Registry, nodes: &[Arc<crate::upstream::topology::Node>]) {
    let reads = Family::<NodeLabels, Counter>::default();
    let writes = Family::<NodeLabels, Counter>::default();
    let bans = Family::<NodeLabels, Counter>::default();
    let retries = Family::<NodeLabels, Counter>::default();
    let lag_seconds = Family::<NodeLabels, Gauge<f64, AtomicU64>>::default();
    let lag_bytes = Family::<NodeLabels, Gauge>::default();
    let writable = Family::<NodeLabels, Gauge>::default();
    let standby = Family::<NodeLabels, Gauge>::default();
    for n in nodes {
        let l = NodeLabels { node: n.addr() };
        reads.get_or_create(&l).inc_by(load(&n.stats.reads));
        writes.get_or_create(&l).inc_by(load(&n.stats.writes));
        bans.get_or_create(&l).inc_by(load(&n.stats.bans));
        retries.get_or_create(&l).inc_by(load(&n.stats.retries));
        lag_seconds
            .get_or_create(&l)
            .set(load(&n.health.lag_ms) as f64 / 1000.0);
        lag_bytes
            .get_or_create(&l)
            .set(load(&n.health.lag_bytes) as i64);
        writable
            .get_or_create(&l)
            .set(i64::from(n.health.writable.load(Relaxed)));
        standby
            .get_or_create(&l)
            .set(i64::from(n.health.standby.load(Relaxed)));
    }
    r.register(
        "node_reads",
        "Transactions routed to a node as provably read-only",
        reads,
    );
    r.register(
        "node_writes",
        "Transactions routed to a node as possibly writing",
        writes,
    );
    r.register("node_bans", "Times a node was banned after a failure", bans);
    r.register(
        "node_retries",
        "Reads that failed on a node before the client saw a byte and ran elsewhere",
        retries,
    );
    r.register(
        "replica_lag_seconds",
        "Replication lag as the monitor last saw it",
        lag_seconds,
    );
    r.register(
        "replica_lag_bytes",
        "Replication lag in WAL bytes",
        lag_bytes,
    );
    r.register(
        "node_writable",
        "1 when the node takes writes (the primary)",
        writable,
    );
    r.register(
        "node_standby",
        "1 when the node is a reachable standby",
        standby,
    );
}

fn plugins(r: &mut Registry, chain: Option<&tidegate_plugins::Chain>) {
    let calls = Family::<PluginLabels, Counter>::default();
    let failures = Family::<PluginLabels, Counter>::default();
    let denials = Family::<PluginLabels, Counter>::default();
    let quarantined = Family::<PluginLabels, Gauge>::default();
    let swaps = Family::<PluginLabels, Counter>::default();
    let traps = Family::<PluginLabels, Counter>::default();
    let timeouts = Family::<PluginLabels, Counter>::default();
    let quarantines = Family::<PluginLabels, Counter>::default();
    let mut durations = Histograms::default();
    for e in chain.map(|c| c.entries.as_slice()).unwrap_or_default() {
        let l = PluginLabels {
            plugin: e.name.clone(),
        };
        let p = e.current.load();
        calls.get_or_create(&l).inc_by(load(&p.calls));
        failures.get_or_create(&l).inc_by(load(&e.stats.failures));
        denials.get_or_create(&l).inc_by(load(&e.stats.denials));
        swaps.get_or_create(&l).inc_by(load(&e.stats.swaps));
        traps.get_or_create(&l).inc_by(load(&p.traps));
        timeouts.get_or_create(&l).inc_by(load(&p.timeouts));
        quarantines.get_or_create(&l).inc_by(load(&p.quarantines));
        durations.0.push((l.clone(), p.durations.snapshot()));
        quarantined
            .get_or_create(&l)
            .set(i64::from(p.is_quarantined()));
    }
    r.register("plugin_calls", "Calls into a plugin", calls);
    r.register(
        "plugin_failures",
        "Plugin calls that failed: trap, timeout, invalid value or busy",
        failures,
    );
    r.register("plugin_denials", "Statements a plugin denied", denials);
    r.register("plugin_swaps", "Plugin versions swapped in", swaps);
    r.register(
        "plugin_traps",
        "Calls into the plugin version in service that trapped",
        traps,
    );
    r.register(
        "plugin_timeouts",
        "Calls into the plugin version in service that ran past plugins.call_timeout",
        timeouts,
    );
    r.register(
        "plugin_quarantines",
        "Times the plugin version in service was quarantined",
        quarantines,
    );
    r.register(
        "plugin_call_duration_seconds",
        "How long plugin calls that returned took",
        durations,
    );
    r.register(
        "plugin_quarantined",
        "1 while a plugin is quarantined",
        quarantined,
    );
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatementLabels {
    kind: &'static str,
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    class: String,
}

/// Histograms read from the broker's own atomic ones, one per label set.
#[derive(Debug)]
struct Histograms<L>(Vec<(L, HistogramSnapshot)>);

impl<L> Default for Histograms<L> {
    fn default() -> Self {
        Histograms(Vec::new())
    }
}

impl<L: EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static> EncodeMetric for Histograms<L> {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (labels, h) in &self.0 {
            encoder
                .encode_family(labels)?
                .encode_histogram::<NoLabelSet>(h.sum, h.count, &h.buckets, None)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

fn statements(r: &mut Registry, q: &crate::client::stats::QueryStats) {
    let by_route = Family::<StatementLabels, Counter>::default();
    for (kind, route, n) in q.statements() {
        by_route
            .get_or_create(&StatementLabels {
                kind: kind.name(),
                route: route.name(),
            })
            .inc_by(n);
    }
    r.register(
        "statements",
        "Statements completed, by kind (from the command tag) and where they were answered",
        by_route,
    );
    let durations = Histograms(
        q.durations()
            .into_iter()
            .map(|(k, h)| (KindLabels { kind: k.name() }, h))
            .collect(),
    );
    r.register(
        "request_duration_seconds",
        "Requests (a query, or a batch up to Sync) from the first message to ReadyForQuery, by kind",
        durations,
    );
    let errors = Family::<ClassLabels, Counter>::default();
    for (class, n) in q.errors() {
        errors.get_or_create(&ClassLabels { class }).inc_by(n);
    }
    r.register(
        "errors",
        "Errors clients were shown, by SQLSTATE class (42 = syntax or access rule, 57 = cancelled…)",
        errors,
    );
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: String,
    status: String,
}

fn http_requests(r: &mut Registry, st: &HttpState) {
    let requests = Family::<HttpLabels, Counter>::default();
    for ((route, status), n) in st.requests.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        requests
            .get_or_create(&HttpLabels {
                route: route.clone(),
                status: status.to_string(),
            })
            .inc_by(*n);
    }
    r.register(
        "http_requests",
        "HTTP requests answered, by route pattern and status",
        requests,
    );
}
