//! What `/readyz` reports beyond ready / not ready (the seed's `check_health`): each part the
//! broker depends on, with a status and, where it was measured, a latency. `down` parts make
//! the broker not ready (503); `degraded` ones — a replica unreachable or behind, Redis behind
//! an open breaker, TimescaleDB jobs that failed in the last hour — leave it serving (200) with
//! less. The detail is for `http.admin_users`; others get the bare ready / not ready.

use super::HttpState;
use serde::Serialize;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

/// A part's state, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Working.
    Ok,
    /// Working with less: the broker serves around it.
    Degraded,
    /// Not working: statements fail or are refused.
    Down,
}

/// One part's check.
#[derive(Debug, Serialize)]
pub struct Check {
    /// What was checked: `primary`, `replica 10.0.0.2:5432`, `redis`, `timescaledb jobs`.
    pub name: String,
    /// Its state.
    pub status: Status,
    /// The round trip, where one was made.
    pub latency_ms: Option<f64>,
    /// Why, in a few words.
    pub detail: String,
}

/// The checks the broker can make without a client: the primary (a round trip and its
/// recovery state), each replica (as the health monitor last saw it), the cache's Redis, and
/// TimescaleDB's jobs in the primary database.
pub async fn checks(st: &HttpState) -> Vec<Check> {
    let topo = st.sh.topology();
    let cfg = &topo.config;
    let pool = st.probe.get(cfg, &cfg.upstream.primary.database);
    let mut out = Vec::new();
    let start = Instant::now();
    let primary = tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query_scalar::<_, bool>("SELECT pg_is_in_recovery()").fetch_one(&pool),
    )
    .await;
    let latency = Some(start.elapsed().as_secs_f64() * 1000.0);
    out.push(match primary {
        Ok(Ok(false)) => Check {
            name: "primary".into(),
            status: Status::Ok,
            latency_ms: latency,
            detail: "writable".into(),
        },
        Ok(Ok(true)) => Check {
            name: "primary".into(),
            status: Status::Down,
            latency_ms: latency,
            detail: "in recovery: it takes no writes".into(),
        },
        Ok(Err(e)) => Check {
            name: "primary".into(),
            status: Status::Down,
            latency_ms: None,
            detail: format!("unreachable: {e}"),
        },
        Err(_) => Check {
            name: "primary".into(),
            status: Status::Down,
            latency_ms: None,
            detail: "no answer within 2 s".into(),
        },
    });
    for node in topo.nodes.iter().skip(1) {
        let h = &node.health;
        let (status, detail) = if !h.standby.load(Relaxed) {
            (
                Status::Degraded,
                "unreachable or not a standby: reads avoid it".to_owned(),
            )
        } else if h.lagging.load(Relaxed) {
            (
                Status::Degraded,
                format!(
                    "behind by {} ms, {} bytes: reads avoid it",
                    h.lag_ms.load(Relaxed),
                    h.lag_bytes.load(Relaxed)
                ),
            )
        } else {
            (
                Status::Ok,
                format!(
                    "lag {} ms, {} bytes",
                    h.lag_ms.load(Relaxed),
                    h.lag_bytes.load(Relaxed)
                ),
            )
        };
        out.push(Check {
            name: format!("replica {}", node.addr()),
            status,
            latency_ms: None,
            detail,
        });
    }
    if let Some(cache) = st.sh.cache.get().and_then(Option::as_ref) {
        if cache.backend_name() == "redis" {
            let open = cache.breaker_is_open();
            out.push(Check {
                name: "redis".into(),
                status: if open { Status::Degraded } else { Status::Ok },
                latency_ms: None,
                detail: if open {
                    "breaker open: reads bypass the cache".into()
                } else {
                    "in use".into()
                },
            });
        }
    }
    let jobs = async {
        let mut conn = pool.acquire().await.ok()?;
        jobs(&mut conn).await
    };
    if let Ok(Some(check)) = tokio::time::timeout(Duration::from_secs(2), jobs).await {
        out.push(check);
    }
    out
}

/// TimescaleDB's job runs that failed in the last hour: degraded if any; `None` without
/// TimescaleDB (or when the catalog cannot be read).
pub async fn jobs(conn: &mut sqlx::PgConnection) -> Option<Check> {
    crate::timescale::live::extension(&mut *conn).await.ok()??;
    let failed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM timescaledb_information.job_errors \
         WHERE finish_time > now() - interval '1 hour'",
    )
    .fetch_one(&mut *conn)
    .await
    .ok()?;
    Some(Check {
        name: "timescaledb jobs".into(),
        status: if failed == 0 {
            Status::Ok
        } else {
            Status::Degraded
        },
        latency_ms: None,
        detail: format!("{failed} failed runs in the last hour"),
    })
}
