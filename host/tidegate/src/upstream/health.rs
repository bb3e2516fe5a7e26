//! Replica health and replication lag, checked in the background.
//!
//! While replicas are configured, every `routing.check_interval` the monitor asks the primary for its WAL position and each
//! replica for its replay position and last replay time. Lag is 0 when the replica has
//! replayed the primary's position, else `now() - pg_last_xact_replay_timestamp()` (PgDog's
//! formula) and the byte distance. A replica over `routing.max_lag`/`max_lag_bytes`, or one
//! that cannot be reached or is not in recovery, gets no reads until a later check clears it.

use crate::upstream::backend::{Backend, Target};
use crate::upstream::topology::{Node, Topology};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What the monitor last saw of one node.
#[derive(Default)]
pub struct NodeHealth {
    /// Reachable and not in recovery: writes may go here.
    pub writable: AtomicBool,
    /// Reachable and in recovery.
    pub standby: AtomicBool,
    /// Reads must not go here (too far behind, unreachable, or not a standby).
    pub lagging: AtomicBool,
    /// Replication lag in milliseconds.
    pub lag_ms: AtomicU64,
    /// Replication lag in WAL bytes.
    pub lag_bytes: AtomicU64,
    /// The last WAL position seen replayed here (for the writer: its current position).
    /// Only grows while the node stays a replica of the same primary.
    pub replay_lsn: AtomicU64,
}

pub(crate) fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// The monitor's own connection and what it last saw of one node.
#[derive(Default)]
struct Probe {
    conn: Option<Backend>,
    /// The replica's last replay position and when it last moved.
    progress: Option<(u64, std::time::Instant)>,
}

fn node_target(config: &tidegate_config::Config, node: &Node) -> Target {
    let p = &config.upstream.primary;
    Target {
        host: node.host.clone(),
        port: node.port,
        user: p.user.clone(),
        database: p.database.clone(),
        password: p.password.clone(),
        keys: None,
        tls: crate::upstream::backend::UpstreamTls::for_server(p),
    }
}

/// Checks every node each `routing.check_interval` while replicas are configured, following
/// reloads (until the task is aborted).
pub async fn monitor(current: impl Fn() -> Arc<Topology>) {
    let mut probes: HashMap<(String, u16), Probe> = HashMap::new();
    let mut interval = Duration::ZERO;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let topo = current();
        let every = topo.config.routing.check_interval.duration();
        if every != interval {
            interval = every;
            tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        tick.tick().await;
        let topo = current();
        probes.retain(|k, _| topo.nodes.iter().any(|n| (&n.host, n.port) == (&k.0, k.1)));
        if !topo.has_replicas() {
            probes.clear();
            continue;
        }
        check(&topo, &mut probes).await;
    }
}

async fn check(topo: &Topology, probes: &mut HashMap<(String, u16), Probe>) {
    let routing = &topo.config.routing;
    let timeout = topo.config.pool.connect_timeout.duration();
    // Which node is writable: the configured primary, or a replica promoted since.
    for node in &topo.nodes {
        let row = ask(
            topo,
            probes,
            node,
            "SELECT pg_is_in_recovery()::text",
            timeout,
        )
        .await;
        let answer = row.and_then(|r| r.first().cloned().flatten());
        let writable = answer.as_deref() == Some("false");
        let h = &node.health;
        h.standby
            .store(answer.as_deref() == Some("true"), Ordering::Relaxed);
        if h.writable.swap(writable, Ordering::Relaxed) != writable {
            tracing::warn!(node = %node.addr(), writable, "node role changed");
        }
    }
    let writer = topo.writer();
    let primary_lsn = ask(
        topo,
        probes,
        &topo.nodes[writer],
        "SELECT pg_current_wal_lsn()::text",
        timeout,
    )
    .await
    .and_then(|row| row.first().and_then(|v| v.as_deref()).and_then(parse_lsn));
    if let Some(lsn) = primary_lsn {
        topo.nodes[writer]
            .health
            .replay_lsn
            .store(lsn, Ordering::Relaxed);
    }
    for (i, node) in topo.nodes.iter().enumerate() {
        if i == writer {
            continue;
        }
        let row = ask(
            topo,
            probes,
            node,
            "SELECT pg_is_in_recovery()::text, pg_last_wal_replay_lsn()::text, \
             ((EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) * 1000)::bigint)::text",
            timeout,
        )
        .await;
        let h = &node.health;
        let verdict = row.and_then(|r| {
            let standby = r.first()?.as_deref() == Some("true");
            let replay = r.get(1)?.as_deref().and_then(parse_lsn)?;
            let since_ms: u64 = match r.get(2)?.as_deref() {
                Some(v) => v.parse::<i64>().ok()?.max(0) as u64,
                // NULL: nothing replayed since the replica started; see below.
                None => u64::MAX,
            };
            Some((standby, replay, since_ms))
        });
        let probe = probes.entry((node.host.clone(), node.port)).or_default();
        let lagging = match (verdict, primary_lsn) {
            (Some((true, replay, since_ms)), Some(primary)) => {
                h.replay_lsn.store(replay, Ordering::Relaxed);
                let moved_at = match probe.progress {
                    Some((lsn, at)) if lsn == replay => at,
                    _ => {
                        let now = std::time::Instant::now();
                        probe.progress = Some((replay, now));
                        now
                    }
                };
                let (ms, bytes) = if replay >= primary {
                    (0, 0)
                } else if since_ms == u64::MAX {
                    // Nothing replayed since the replica started, so no replay timestamp:
                    // behind for as long as its replay position has not moved.
                    (moved_at.elapsed().as_millis() as u64, primary - replay)
                } else {
                    (since_ms, primary - replay)
                };
                h.lag_ms.store(ms.min(i64::MAX as u64), Ordering::Relaxed);
                h.lag_bytes.store(bytes, Ordering::Relaxed);
                ms > routing.max_lag.0 || bytes > routing.max_lag_bytes
            }
            // The primary's position is unknown: judge by reachability alone.
            (Some((true, replay, _)), None) => {
                h.replay_lsn.store(replay, Ordering::Relaxed);
                false
            }
            // Not a standby (promoted?) or unreachable: no reads.
            _ => true,
        };
        if h.lagging.swap(lagging, Ordering::Relaxed) != lagging {
            tracing::warn!(
                node = %node.addr(),
                lagging,
                lag_ms = h.lag_ms.load(Ordering::Relaxed),
                lag_bytes = h.lag_bytes.load(Ordering::Relaxed),
                "replica health changed"
            );
        }
    }
}

/// Runs `sql` on `node` over the monitor's own connection, reconnecting when needed.
async fn ask(
    topo: &Topology,
    probes: &mut HashMap<(String, u16), Probe>,
    node: &Node,
    sql: &str,
    timeout: Duration,
) -> Option<Vec<Option<String>>> {
    let probe = probes.entry((node.host.clone(), node.port)).or_default();
    if probe.conn.is_none() {
        let target = node_target(&topo.config, node);
        probe.conn = Backend::connect(&target, timeout).await.ok();
    }
    let conn = probe.conn.as_mut()?;
    match tokio::time::timeout(timeout, conn.query_row(sql)).await {
        Ok(Ok(row)) => row,
        _ => {
            probe.conn = None;
            None
        }
    }
}
