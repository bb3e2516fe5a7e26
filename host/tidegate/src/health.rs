//! Replica health and replication lag, checked in the background.
//!
//! Every `routing.check_interval` the monitor asks the primary for its WAL position and each
//! replica for its replay position and last replay time. Lag is 0 when the replica has
//! replayed the primary's position, else `now() - pg_last_xact_replay_timestamp()` (PgDog's
//! formula) and the byte distance. A replica over `routing.max_lag`/`max_lag_bytes`, or one
//! that cannot be reached or is not in recovery, gets no reads until a later check clears it.

use crate::backend::{Backend, Target};
use crate::server::Shared;
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
}

fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

fn node_target(sh: &Shared, node: usize) -> Option<Target> {
    let p = &sh.config.upstream.primary;
    let (host, port) = if node == 0 {
        (p.host.clone(), p.port)
    } else {
        let r = sh.config.upstream.replicas.get(node - 1)?;
        (r.host.clone(), r.port)
    };
    Some(Target {
        host,
        port,
        user: p.user.clone(),
        database: p.database.clone(),
        password: p.password.clone(),
    })
}

/// Checks every replica forever (until the task is aborted).
pub async fn monitor(sh: Arc<Shared>) {
    let nodes = sh.config.upstream.replicas.len() + 1;
    let mut conns: Vec<Option<Backend>> = (0..nodes).map(|_| None).collect();
    // When each replica was first seen behind the writer (reset when it catches up).
    // Each replica's last replay position and when it last moved.
    let mut progress: Vec<Option<(u64, std::time::Instant)>> = vec![None; nodes];
    let routing = sh.config.routing.clone();
    let timeout = sh.config.pool.connect_timeout.duration();
    let mut tick = tokio::time::interval(routing.check_interval.duration());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // Which node is writable: the configured primary, or a replica promoted since.
        for node in 0..nodes {
            let row = ask(
                &sh,
                &mut conns,
                node,
                "SELECT pg_is_in_recovery()::text",
                timeout,
            )
            .await;
            let answer = row.and_then(|r| r.first().cloned().flatten());
            let writable = answer.as_deref() == Some("false");
            let h = &sh.health[node];
            h.standby
                .store(answer.as_deref() == Some("true"), Ordering::Relaxed);
            if h.writable.swap(writable, Ordering::Relaxed) != writable {
                tracing::warn!(node, writable, "node role changed");
            }
        }
        let writer = sh.writer();
        let primary_lsn = match ask(
            &sh,
            &mut conns,
            writer,
            "SELECT pg_current_wal_lsn()::text",
            timeout,
        )
        .await
        {
            Some(row) => row.first().and_then(|v| v.as_deref()).and_then(parse_lsn),
            None => None,
        };
        for node in (0..nodes).filter(|n| *n != writer) {
            let row = ask(
                &sh,
                &mut conns,
                node,
                "SELECT pg_is_in_recovery()::text, pg_last_wal_replay_lsn()::text, \
                 ((EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) * 1000)::bigint)::text",
                timeout,
            )
            .await;
            let h = &sh.health[node];
            let verdict = row.and_then(|r| {
                let standby = r.first()?.as_deref() == Some("true");
                let replay = r.get(1)?.as_deref().and_then(parse_lsn)?;
                // NULL when nothing was replayed since start: behind by an unknown time.
                let since_ms: u64 = match r.get(2)?.as_deref() {
                    Some(v) => v.parse::<i64>().ok()?.max(0) as u64,
                    // NULL: nothing replayed since the replica started; see below.
                    None => u64::MAX,
                };
                Some((standby, replay, since_ms))
            });
            let lagging = match (verdict, primary_lsn) {
                (Some((true, replay, since_ms)), Some(primary)) => {
                    let moved_at = match progress[node] {
                        Some((lsn, at)) if lsn == replay => at,
                        _ => {
                            let now = std::time::Instant::now();
                            progress[node] = Some((replay, now));
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
                (Some((true, _, _)), None) => false,
                // Not a standby (promoted?) or unreachable: no reads.
                _ => true,
            };
            if h.lagging.swap(lagging, Ordering::Relaxed) != lagging {
                tracing::warn!(
                    node,
                    lagging,
                    lag_ms = h.lag_ms.load(Ordering::Relaxed),
                    lag_bytes = h.lag_bytes.load(Ordering::Relaxed),
                    "replica health changed"
                );
            }
        }
    }
}

/// Runs `sql` on `node` over the monitor's own connection, reconnecting when needed.
async fn ask(
    sh: &Shared,
    conns: &mut [Option<Backend>],
    node: usize,
    sql: &str,
    timeout: Duration,
) -> Option<Vec<Option<String>>> {
    if conns[node].is_none() {
        let target = node_target(sh, node)?;
        conns[node] = Backend::connect(&target, timeout).await.ok();
    }
    let conn = conns[node].as_mut()?;
    match tokio::time::timeout(timeout, conn.query_row(sql)).await {
        Ok(Ok(row)) => row,
        _ => {
            conns[node] = None;
            None
        }
    }
}
