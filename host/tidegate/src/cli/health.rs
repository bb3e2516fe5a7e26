//! `tidegate health` (the seed's `check_health`): the checks an operator runs from outside
//! the broker — the broker's own listener, the primary (round trip, recovery state), each
//! replica (reachable, standby, lag against `routing.max_lag` and `max_lag_bytes`), Redis
//! (a PING) and TimescaleDB's jobs (failed runs in the last hour) — as text or JSON. Exit
//! status: 0 ok, 1 degraded (serving with less), 2 down. Plugins and the audit writer live in
//! the broker: its `/readyz` reports them.

use crate::config::Config;
use crate::http::health::{Check, Status};
use crate::upstream::own_db;
use serde::Serialize;
use sqlx::postgres::PgConnection;
use sqlx::{ConnectOptions as _, Connection as _};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// `tidegate health`
#[derive(Debug, clap::Args)]
pub struct HealthArgs {
    /// Configuration file.
    #[arg(long, short)]
    pub config: PathBuf,
    /// JSON on standard output instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The report.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The worst of the checks.
    pub status: Status,
    /// Each check.
    pub checks: Vec<Check>,
}

const TIMEOUT: Duration = Duration::from_secs(3);

/// Runs `tidegate health`; returns the exit status.
pub fn run(args: HealthArgs) -> i32 {
    let Some((config, rt)) = crate::cli::setup(&args.config) else {
        return 2;
    };
    let report = rt.block_on(report(&config));
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        for c in &report.checks {
            let latency = c
                .latency_ms
                .map_or(String::new(), |l| format!(" ({l:.1} ms)"));
            println!("{:<9} {}{latency}: {}", word(c.status), c.name, c.detail);
        }
        println!("health: {}", word(report.status));
    }
    match report.status {
        Status::Ok => 0,
        Status::Degraded => 1,
        Status::Down => 2,
    }
}

fn word(s: Status) -> &'static str {
    match s {
        Status::Ok => "ok",
        Status::Degraded => "degraded",
        Status::Down => "down",
    }
}

fn check(name: String, status: Status, latency: Option<Duration>, detail: String) -> Check {
    Check {
        name,
        status,
        latency_ms: latency.map(|d| d.as_secs_f64() * 1000.0),
        detail,
    }
}

/// Every check, in order.
pub async fn report(config: &Config) -> Report {
    let mut checks = Vec::new();
    let start = Instant::now();
    let listening =
        tokio::time::timeout(TIMEOUT, tokio::net::TcpStream::connect(config.listen.sql)).await;
    checks.push(match listening {
        Ok(Ok(_)) => check(
            format!("broker {}", config.listen.sql),
            Status::Ok,
            Some(start.elapsed()),
            "accepting connections".into(),
        ),
        _ => check(
            format!("broker {}", config.listen.sql),
            Status::Down,
            None,
            "not accepting connections".into(),
        ),
    });
    let primary = &config.upstream.primary;
    let start = Instant::now();
    let mut primary_conn = connect(config, &primary.host, primary.port).await;
    let primary_lsn = match &mut primary_conn {
        Ok(conn) => {
            let row: Result<(bool, Option<String>), sqlx::Error> = sqlx::query_as(
                "SELECT pg_is_in_recovery(), \
                 CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END",
            )
            .fetch_one(&mut *conn)
            .await;
            match row {
                Ok((false, lsn)) => {
                    checks.push(check(
                        "primary".into(),
                        Status::Ok,
                        Some(start.elapsed()),
                        "writable".into(),
                    ));
                    lsn
                }
                Ok((true, _)) => {
                    checks.push(check(
                        "primary".into(),
                        Status::Down,
                        Some(start.elapsed()),
                        "in recovery: it takes no writes".into(),
                    ));
                    None
                }
                Err(e) => {
                    checks.push(check("primary".into(), Status::Down, None, e.to_string()));
                    None
                }
            }
        }
        Err(e) => {
            checks.push(check(
                "primary".into(),
                Status::Down,
                None,
                format!("unreachable: {e}"),
            ));
            None
        }
    };
    for r in &config.upstream.replicas {
        checks.push(replica(config, r, primary_lsn.as_deref()).await);
    }
    if config.cache.enabled && !config.cache.redis_url.trim().is_empty() {
        checks.push(redis(&config.cache.redis_url).await);
    }
    if let Ok(conn) = &mut primary_conn {
        if let Some(c) = crate::http::health::jobs(conn).await {
            checks.push(c);
        }
    }
    if let Ok(conn) = primary_conn {
        let _ = conn.close().await;
    }
    Report {
        status: checks.iter().map(|c| c.status).max().unwrap_or(Status::Ok),
        checks,
    }
}

async fn connect(config: &Config, host: &str, port: u16) -> Result<PgConnection, String> {
    let opts = own_db::options(config, &config.upstream.primary.database, "tidegate-health")
        .host(host)
        .port(port)
        .disable_statement_logging();
    match tokio::time::timeout(TIMEOUT, PgConnection::connect_with(&opts)).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} s", TIMEOUT.as_secs())),
    }
}

async fn replica(
    config: &Config,
    server: &crate::config::Replica,
    primary_lsn: Option<&str>,
) -> Check {
    let name = format!("replica {}:{}", server.host, server.port);
    let start = Instant::now();
    let mut conn = match connect(config, &server.host, server.port).await {
        Ok(c) => c,
        Err(e) => return check(name, Status::Degraded, None, format!("unreachable: {e}")),
    };
    let row: Result<(bool, Option<f64>, Option<i64>), sqlx::Error> = sqlx::query_as(
        "SELECT pg_is_in_recovery(), \
                extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8, \
                CASE WHEN $1::text IS NULL THEN NULL \
                     ELSE pg_wal_lsn_diff($1::pg_lsn, pg_last_wal_replay_lsn())::int8 END",
    )
    .bind(primary_lsn)
    .fetch_one(&mut conn)
    .await;
    let latency = Some(start.elapsed());
    let _ = conn.close().await;
    let r = &config.routing;
    match row {
        Ok((false, _, _)) => check(
            name,
            Status::Degraded,
            latency,
            "not a standby: reads avoid it".into(),
        ),
        Ok((true, seconds, bytes)) => {
            let bytes = bytes.unwrap_or(0).max(0);
            let behind_bytes = u64::try_from(bytes).unwrap_or(0) > r.max_lag_bytes;
            let detail = format!(
                "lag {} s (last replayed commit), {bytes} bytes",
                seconds.map_or("?".to_owned(), |s| format!("{s:.1}"))
            );
            // The replay timestamp ages while the primary is idle: only the bytes decide.
            if behind_bytes {
                check(name, Status::Degraded, latency, format!("behind: {detail}"))
            } else {
                check(name, Status::Ok, latency, detail)
            }
        }
        Err(e) => check(name, Status::Degraded, latency, e.to_string()),
    }
}

async fn redis(url: &str) -> Check {
    let start = Instant::now();
    match crate::cache::backend::Redis::connect(url, TIMEOUT) {
        Ok(client) => match client.ping(TIMEOUT).await {
            Ok(()) => check(
                "redis".into(),
                Status::Ok,
                Some(start.elapsed()),
                "PONG".into(),
            ),
            Err(e) => check(
                "redis".into(),
                Status::Degraded,
                None,
                format!("{e}: reads would bypass the cache"),
            ),
        },
        Err(e) => check("redis".into(), Status::Degraded, None, e.to_string()),
    }
}
