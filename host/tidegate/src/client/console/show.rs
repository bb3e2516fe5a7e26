//! The console's SHOW commands: each builds its rows from the counters the broker keeps
//! (pools' activity, sessions' cancel slots, nodes, plugins, cache, statement statistics).
//! The HTTP `/admin/*` endpoints serve the same rows as JSON through [`table`].

use super::Answer;
use crate::client::shared::Shared;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tidegate_config::{Config, PoolMode};

type Rows = Vec<Vec<Option<String>>>;

/// The SHOW subjects, for `/admin/*` and the help text.
pub const SUBJECTS: [&str; 10] = [
    "pools",
    "clients",
    "servers",
    "stats",
    "databases",
    "config",
    "plugins",
    "cache",
    "replicas",
    "slow",
];

/// `SHOW what` (upper case).
pub(crate) fn show(sh: &Arc<Shared>, what: &str) -> Answer {
    match table(sh, &what.to_ascii_lowercase()) {
        Some((columns, rows)) => Answer::Rows(columns, rows),
        None => Answer::Error(
            "42601",
            format!(
                "unknown SHOW subject \"{what}\"; one of {}",
                SUBJECTS.join(", ").to_ascii_uppercase()
            ),
        ),
    }
}

/// The columns and rows of `SHOW subject` (lower case), or `None` for an unknown subject.
pub fn table(sh: &Arc<Shared>, subject: &str) -> Option<(&'static [&'static str], Rows)> {
    Some(match subject {
        "pools" => (POOLS, pools(sh)),
        "clients" => (CLIENTS, clients(sh)),
        "servers" => (SERVERS, servers(sh)),
        "stats" => (STATS, stats(sh)),
        "databases" => (DATABASES, databases(sh)),
        "config" => (CONFIG, super::settings::rows(&sh.config())),
        "plugins" => (PLUGINS, plugins(sh)),
        "cache" => (CACHE, cache(sh)),
        "replicas" => (REPLICAS, replicas(sh)),
        "slow" => (SLOW, slow(sh, 20)),
        _ => return None,
    })
}

fn s(v: impl ToString) -> Option<String> {
    Some(v.to_string())
}

pub(super) fn mode(config: &Config) -> &'static str {
    match config.pool.mode {
        PoolMode::Transaction => "transaction",
        PoolMode::Session => "session",
    }
}

fn unix(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    tidegate_sql::utc_text(secs, false)
}

fn since(t: Instant) -> String {
    unix(SystemTime::now() - t.elapsed())
}

const POOLS: &[&str] = &[
    "database",
    "user",
    "cl_active",
    "cl_waiting",
    "cl_active_cancel_req",
    "cl_waiting_cancel_req",
    "sv_active",
    "sv_active_cancel",
    "sv_being_canceled",
    "sv_idle",
    "sv_used",
    "sv_tested",
    "sv_login",
    "maxwait",
    "maxwait_us",
    "pool_mode",
    "host",
    "port",
    "paused",
];

/// One row per pool (database, role, server). `maxwait` is the longest checkout wait seen.
fn pools(sh: &Shared) -> Rows {
    let config = sh.config();
    let check_after = config.pool.check_after.duration();
    let mut rows: Rows = sh
        .pools
        .all()
        .iter()
        .map(|p| {
            let a = p.activity.snapshot();
            let idle = p.idle_servers();
            let used = idle
                .iter()
                .filter(|(_, _, idle_for)| *idle_for >= check_after)
                .count();
            vec![
                s(&p.key.database),
                s(&p.key.role),
                s(a.clients.saturating_sub(a.waiting)),
                s(a.waiting),
                s(0),
                s(0),
                s(p.outstanding()),
                s(0),
                s(0),
                s(idle.len() - used),
                s(used),
                s(0),
                s(a.logins),
                s(a.max_wait_us / 1_000_000),
                s(a.max_wait_us % 1_000_000),
                s(mode(&config)),
                s(&p.key.host),
                s(p.key.port),
                s(a.paused),
            ]
        })
        .collect();
    rows.sort();
    rows
}

const CLIENTS: &[&str] = &[
    "type",
    "user",
    "database",
    "state",
    "addr",
    "port",
    "connect_time",
    "ptr",
    "link",
    "tls",
    "application_name",
];

fn split_addr(addr: &str) -> (String, String) {
    match addr.rsplit_once(':') {
        Some((h, p)) => (h.trim_matches(['[', ']']).to_owned(), p.to_owned()),
        None => (addr.to_owned(), String::new()),
    }
}

/// One row per session (network and HTTP), `link` the server process it holds.
fn clients(sh: &Shared) -> Rows {
    let mut rows: Rows = sh
        .cancels
        .sessions()
        .into_iter()
        .map(|(pid, slot)| {
            let i = &slot.info;
            let (addr, port) = split_addr(&i.addr);
            let link = slot.server_pid();
            vec![
                s("C"),
                s(&i.user),
                s(&i.database),
                s(if link.is_some() { "active" } else { "idle" }),
                s(addr),
                s(port),
                i.connected.map(unix),
                s(format!("{pid:x}")),
                link.map(|l| l.to_string()),
                s(i.tls),
                s(&i.application_name),
            ]
        })
        .collect();
    rows.sort();
    rows
}

const SERVERS: &[&str] = &[
    "type",
    "user",
    "database",
    "state",
    "addr",
    "port",
    "connect_time",
    "request_time",
    "remote_pid",
    "link",
];

/// Server connections: lent ones (from the sessions holding them) and idle ones.
fn servers(sh: &Shared) -> Rows {
    let topo = sh.topology();
    let pools = sh.pools.all();
    let mut rows = Rows::new();
    for (pid, slot) in sh.cancels.sessions() {
        let Some(remote) = slot.server_pid() else {
            continue;
        };
        let node = topo.nodes.get(slot.node());
        let pool = node.and_then(|n| {
            pools.iter().find(|p| {
                p.key.host == n.host && p.key.port == n.port && p.key.database == slot.info.database
            })
        });
        rows.push(vec![
            s("S"),
            pool.map(|p| p.key.role.clone()),
            s(&slot.info.database),
            s("active"),
            node.map(|n| n.host.clone()),
            node.map(|n| n.port.to_string()),
            None,
            None,
            s(remote),
            s(format!("{pid:x}")),
        ]);
    }
    for p in &pools {
        for (remote, created, idle_for) in p.idle_servers() {
            rows.push(vec![
                s("S"),
                s(&p.key.role),
                s(&p.key.database),
                s("idle"),
                s(&p.key.host),
                s(p.key.port),
                s(since(created)),
                s(unix(SystemTime::now() - idle_for)),
                s(remote),
                None,
            ]);
        }
    }
    rows.sort();
    rows
}

const STATS: &[&str] = &[
    "database",
    "total_xact_count",
    "total_query_count",
    "total_xact_time",
    "total_query_time",
    "total_wait_count",
    "total_wait_time",
    "avg_xact_time",
    "avg_query_time",
    "avg_wait_time",
];

/// Per database: transactions and waits (times in microseconds, as PgBouncer's). Statement
/// counts are kept for the whole broker: they are on the `*` row.
fn stats(sh: &Shared) -> Rows {
    let mut by_db: std::collections::BTreeMap<String, [u64; 4]> = Default::default();
    for p in sh.pools.all() {
        let a = p.activity.snapshot();
        let e = by_db.entry(p.key.database.clone()).or_default();
        e[0] += a.transactions;
        e[1] += a.transaction_us;
        e[2] += a.waits;
        e[3] += a.wait_us;
    }
    let avg = |total: u64, n: u64| total.checked_div(n).unwrap_or(0);
    let mut rows: Rows = by_db
        .iter()
        .map(|(db, [x, xt, w, wt])| {
            vec![
                s(db),
                s(x),
                None,
                s(xt),
                None,
                s(w),
                s(wt),
                s(avg(*xt, *x)),
                None,
                s(avg(*wt, *w)),
            ]
        })
        .collect();
    let total = by_db.values().fold([0u64; 4], |mut t, v| {
        for i in 0..4 {
            t[i] += v[i];
        }
        t
    });
    let (queries, query_us) = sh
        .queries
        .durations()
        .iter()
        .fold((0u64, 0f64), |(n, us), (_, h)| {
            (n + h.count, us + h.sum * 1e6)
        });
    let query_us = query_us as u64;
    rows.push(vec![
        s("*"),
        s(total[0]),
        s(queries),
        s(total[1]),
        s(query_us),
        s(total[2]),
        s(total[3]),
        s(avg(total[1], total[0])),
        s(avg(query_us, queries)),
        s(avg(total[3], total[2])),
    ]);
    rows
}

const DATABASES: &[&str] = &[
    "name",
    "host",
    "port",
    "database",
    "force_user",
    "pool_size",
    "min_pool_size",
    "reserve_pool",
    "pool_mode",
    "max_connections",
    "current_connections",
    "paused",
    "disabled",
];

fn databases(sh: &Shared) -> Rows {
    let config = sh.config();
    let mut rows: Rows = sh
        .pools
        .all()
        .iter()
        .map(|p| {
            vec![
                s(&p.key.database),
                s(&p.key.host),
                s(p.key.port),
                s(&p.key.database),
                s(&p.key.role),
                s(p.size()),
                s(0),
                s(0),
                s(mode(&config)),
                s(p.size()),
                s(p.outstanding() + p.idle_count()),
                s(u8::from(p.activity.is_paused())),
                s(0),
            ]
        })
        .collect();
    rows.sort();
    rows
}

const CONFIG: &[&str] = &["key", "value", "default", "changeable"];

const PLUGINS: &[&str] = &[
    "name",
    "plugin_version",
    "file",
    "load",
    "calls",
    "failures",
    "denials",
    "decision_cache_hits",
    "swaps",
    "load_failures",
    "quarantined",
];

fn plugins(sh: &Shared) -> Rows {
    let topo = sh.topology();
    let entries = topo
        .plugins
        .as_ref()
        .map(|c| c.entries.as_slice())
        .unwrap_or_default();
    entries
        .iter()
        .map(|e| {
            let p = e.current.load();
            vec![
                s(&e.name),
                s(&p.plugin_version),
                s(p.path.display()),
                s(p.version),
                s(p.calls.load(Relaxed)),
                s(e.stats.failures.load(Relaxed)),
                s(e.stats.denials.load(Relaxed)),
                s(e.stats.cache_hits.load(Relaxed)),
                s(e.stats.swaps.load(Relaxed)),
                s(e.stats.load_failures.load(Relaxed)),
                s(p.is_quarantined()),
            ]
        })
        .collect()
}

const CACHE: &[&str] = &["name", "value"];

fn cache(sh: &Shared) -> Rows {
    let Some(cache) = sh.cache.get().and_then(Option::as_ref) else {
        return vec![vec![s("enabled"), s(false)]];
    };
    let mut rows = vec![
        vec![s("enabled"), s(true)],
        vec![s("backend"), s(cache.backend_name())],
        vec![s("breaker_open"), s(cache.breaker_is_open())],
    ];
    rows.extend(
        cache
            .stats
            .snapshot()
            .into_iter()
            .map(|(k, v)| vec![s(k), s(v)]),
    );
    rows
}

const REPLICAS: &[&str] = &[
    "node",
    "role",
    "state",
    "lag_seconds",
    "lag_bytes",
    "reads",
    "writes",
    "bans",
    "retries",
];

/// Each node as the health monitor last saw it (`unmonitored` without replicas: the monitor
/// runs only when there is a choice to make).
fn replicas(sh: &Shared) -> Rows {
    let topo = sh.topology();
    let monitored = topo.has_replicas();
    topo.nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let h = &n.health;
            let state = if !monitored {
                "unmonitored"
            } else if h.writable.load(Relaxed) {
                "writable"
            } else if h.standby.load(Relaxed) && h.lagging.load(Relaxed) {
                "lagging"
            } else if h.standby.load(Relaxed) {
                "streaming"
            } else {
                "down"
            };
            vec![
                s(n.addr()),
                s(if i == 0 { "primary" } else { "replica" }),
                s(state),
                s(h.lag_ms.load(Relaxed) as f64 / 1000.0),
                s(h.lag_bytes.load(Relaxed)),
                s(n.stats.reads.load(Relaxed)),
                s(n.stats.writes.load(Relaxed)),
                s(n.stats.bans.load(Relaxed)),
                s(n.stats.retries.load(Relaxed)),
            ]
        })
        .collect()
}

const SLOW: &[&str] = &[
    "fingerprint",
    "calls",
    "total_ms",
    "mean_ms",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "max_ms",
    "rows",
    "errors",
    "cache_hit_ratio",
    "query",
];

/// The `top` heaviest fingerprints by total time.
fn slow(sh: &Shared, top: usize) -> Rows {
    let f = |v: f64| format!("{v:.3}");
    sh.queries
        .top
        .snapshot(None)
        .into_iter()
        .take(top)
        .map(|q| {
            vec![
                s(&q.fingerprint),
                s(q.calls),
                s(f(q.total_ms)),
                s(f(q.mean_ms)),
                s(f(q.p50_ms)),
                s(f(q.p95_ms)),
                s(f(q.p99_ms)),
                s(f(q.max_ms)),
                s(q.rows),
                s(q.errors),
                s(format!("{:.3}", q.cache_hit_ratio)),
                s(&q.query),
            ]
        })
        .collect()
}
