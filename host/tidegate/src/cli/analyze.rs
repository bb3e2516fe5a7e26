//! `tidegate analyze` (the seed's `analyze_performance`): one page that says why the database
//! is slow. It reads the primary's statistics views (`pg_stat_statements`,
//! `pg_stat_database`, `pg_stat_user_tables`/`_indexes`, `pg_stat_replication`, TimescaleDB's
//! information views) and the broker's `/metrics`, samples throughput and latency for a few
//! seconds, and writes each section with a one-line verdict and what to do — as one
//! self-contained HTML page (plots as inline SVG, nothing fetched), Markdown or JSON
//! ([`render`]).

mod render;

use crate::config::Config;
use crate::upstream::own_db;
use serde::Serialize;
use sqlx::postgres::PgConnection;
use sqlx::{ConnectOptions as _, Row as _};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// `tidegate analyze`
#[derive(Debug, clap::Args)]
pub struct AnalyzeArgs {
    /// Configuration file.
    #[arg(long, short)]
    pub config: PathBuf,
    /// Where to write the report (standard output when absent).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// html, markdown or json (default: from --out's extension, else html).
    #[arg(long)]
    pub format: Option<String>,
    /// Seconds to sample throughput and latency for the "over time" plot.
    #[arg(long, default_value_t = 5)]
    pub sample_seconds: u64,
    /// The broker's metrics (default: http://<listen.http>/metrics when configured).
    #[arg(long)]
    pub metrics: Option<String>,
}

/// How a section looks.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Nothing to do.
    Ok,
    /// Worth a look.
    Warn,
    /// Costing time now.
    Bad,
    /// Not measured here (an extension or the broker missing).
    Unknown,
}

/// A plot.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Chart {
    /// Horizontal bars.
    Bars {
        /// Bar labels.
        labels: Vec<String>,
        /// Bar values.
        values: Vec<f64>,
        /// The values' unit.
        unit: String,
    },
    /// A line over time.
    Line {
        /// (seconds since the sample started, value).
        points: Vec<(f64, f64)>,
        /// The values' unit.
        unit: String,
    },
}

/// One section of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Section {
    /// Stable id (the HTML element's id).
    pub id: &'static str,
    /// Title.
    pub title: &'static str,
    /// The verdict.
    pub verdict: Verdict,
    /// One line saying what was found.
    pub summary: String,
    /// What to do.
    pub advice: String,
    /// A plot, when there is data.
    pub chart: Option<Chart>,
    /// The figures: column names.
    pub columns: Vec<&'static str>,
    /// The figures: rows.
    pub rows: Vec<Vec<String>>,
}

impl Section {
    fn new(id: &'static str, title: &'static str) -> Section {
        Section {
            id,
            title,
            verdict: Verdict::Ok,
            summary: String::new(),
            advice: String::new(),
            chart: None,
            columns: Vec::new(),
            rows: Vec::new(),
        }
    }

    fn say(
        mut self,
        verdict: Verdict,
        summary: impl Into<String>,
        advice: impl Into<String>,
    ) -> Self {
        self.verdict = verdict;
        self.summary = summary.into();
        self.advice = advice.into();
        self
    }
}

/// The whole report.
#[derive(Debug, Serialize)]
pub struct Report {
    /// When it was made (UTC).
    pub generated_at: String,
    /// The database analyzed.
    pub database: String,
    /// The sections, in order.
    pub sections: Vec<Section>,
}

/// The section ids, in order (the HTML page checks itself against this list).
pub const SECTIONS: [&str; 12] = [
    "top-statements",
    "latency",
    "cache",
    "pool-waits",
    "replica-lag",
    "table-sizes",
    "unused-indexes",
    "missing-indexes",
    "bloat",
    "buffer-hits",
    "hypertables",
    "failed-jobs",
];

/// Runs the command; returns the exit status.
pub fn run(args: AnalyzeArgs) -> i32 {
    let Some((config, rt)) = super::setup(&args.config) else {
        return 1;
    };
    let format = args
        .format
        .clone()
        .or_else(|| {
            args.out
                .as_ref()
                .and_then(|p| p.extension())
                .map(|e| e.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "html".into());
    let report = match rt.block_on(analyze(&config, &args)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e:#}");
            return 1;
        }
    };
    let text = match format.as_str() {
        "html" | "htm" => render::html(&report),
        "md" | "markdown" => render::markdown(&report),
        "json" => serde_json::to_string_pretty(&report).unwrap_or_default(),
        other => {
            eprintln!("error: unknown format {other:?}: html, markdown or json");
            return 1;
        }
    };
    match &args.out {
        Some(path) => {
            if let Err(e) = std::fs::write(path, text) {
                eprintln!("error: writing {}: {e}", path.display());
                return 1;
            }
            eprintln!("report written to {}", path.display());
        }
        None => println!("{text}"),
    }
    0
}

/// Gathers every section.
pub async fn analyze(config: &Config, args: &AnalyzeArgs) -> anyhow::Result<Report> {
    let database = config.upstream.primary.database.clone();
    let mut conn = own_db::options(config, &database, "tidegate analyze")
        .connect()
        .await?;
    let pgss = extension(&mut conn, "pg_stat_statements").await;
    let tsdb = extension(&mut conn, "timescaledb").await;
    eprintln!("sampling for {} s…", args.sample_seconds);
    let latency = latency(&mut conn, pgss, args.sample_seconds).await?;
    let metrics_url = args.metrics.clone().or_else(|| {
        config.listen.http.map(|a| {
            let host = if a.ip().is_unspecified() {
                "127.0.0.1".to_owned()
            } else {
                a.ip().to_string()
            };
            format!("http://{host}:{}/metrics", a.port())
        })
    });
    let metrics = match &metrics_url {
        Some(url) => scrape(url).await.map_err(|e| format!("{url}: {e}")),
        None => Err("listen.http is not configured: pass --metrics URL".into()),
    };
    let sections = vec![
        top_statements(&mut conn, pgss).await?,
        latency,
        cache(&metrics),
        pool_waits(&metrics),
        replica_lag(&mut conn, config).await?,
        table_sizes(&mut conn).await?,
        unused_indexes(&mut conn).await?,
        missing_indexes(&mut conn).await?,
        bloat(&mut conn).await?,
        buffer_hits(&mut conn).await?,
        hypertables(&mut conn, tsdb).await,
        failed_jobs(&mut conn, tsdb).await,
    ];
    Ok(Report {
        generated_at: tidegate_sql::utc_text(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
            false,
        ),
        database,
        sections,
    })
}

async fn extension(conn: &mut PgConnection, name: &str) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_extension WHERE extname = $1)")
        .bind(name)
        .fetch_one(conn)
        .await
        .unwrap_or(false)
}

fn mb(bytes: i64) -> f64 {
    bytes as f64 / 1_048_576.0
}

async fn top_statements(conn: &mut PgConnection, pgss: bool) -> anyhow::Result<Section> {
    let s = Section::new("top-statements", "Top statements by total time");
    if !pgss {
        return Ok(s.say(
            Verdict::Unknown,
            "pg_stat_statements is not installed: statement times are not known",
            "add pg_stat_statements to shared_preload_libraries, restart, CREATE EXTENSION pg_stat_statements",
        ));
    }
    let rows = sqlx::query(
        "SELECT query, calls, total_exec_time, mean_exec_time, \
                sum(total_exec_time) OVER () AS all_time \
         FROM pg_stat_statements \
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
           AND toplevel AND query NOT ILIKE '%pg_stat_statements%' \
         ORDER BY total_exec_time DESC LIMIT 10",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut s = s;
    s.columns = vec!["fingerprint", "calls", "total ms", "mean ms", "query"];
    let mut labels = Vec::new();
    let mut values = Vec::new();
    let mut all: f64 = 0.0;
    for r in &rows {
        let query: String = r.try_get(0)?;
        let total: f64 = r.try_get(2)?;
        all = r.try_get(4)?;
        let fp = tidegate_plugins::fingerprint_hex(tidegate_sql::fingerprint(query.as_bytes()).0);
        labels.push(fp[..12.min(fp.len())].to_owned());
        values.push(total);
        s.rows.push(vec![
            fp,
            r.try_get::<i64, _>(1)?.to_string(),
            format!("{total:.1}"),
            format!("{:.2}", r.try_get::<f64, _>(3)?),
            query.chars().take(200).collect(),
        ]);
    }
    if rows.is_empty() {
        return Ok(s.say(
            Verdict::Ok,
            "no statement recorded yet",
            "run the workload, then analyze again",
        ));
    }
    let share = values[0] / all.max(f64::MIN_POSITIVE);
    s.chart = Some(Chart::Bars {
        labels,
        values,
        unit: "ms".into(),
    });
    Ok(if share > 0.5 {
        s.say(
            Verdict::Warn,
            format!(
                "one statement takes {:.0} % of all statement time",
                share * 100.0
            ),
            "start there: tidegate slow-queries shows its plan findings",
        )
    } else {
        s.say(
            Verdict::Ok,
            format!(
                "the heaviest statement takes {:.0} % of the time",
                share * 100.0
            ),
            "nothing dominates; look at the plan findings of the top three (tidegate slow-queries)",
        )
    })
}

/// Throughput and mean latency, one point per second for `seconds`.
async fn latency(conn: &mut PgConnection, pgss: bool, seconds: u64) -> anyhow::Result<Section> {
    let s = Section::new("latency", "Latency over time");
    let mut last = counters(&mut *conn, pgss).await?;
    let mut tps = Vec::new();
    let mut mean = Vec::new();
    for i in 1..=seconds.max(1) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Reading the views is itself a transaction: not counted.
        let now = counters(&mut *conn, pgss).await?;
        let x = i as f64;
        tps.push((x, (now.0 - last.0 - 1.0).max(0.0)));
        let calls = now.1 - last.1;
        if calls > 0.0 {
            mean.push((x, (now.2 - last.2) / calls));
        }
        last = now;
    }
    let peak = tps.iter().map(|p| p.1).fold(0.0, f64::max);
    let mut s = s;
    s.columns = vec!["second", "transactions/s", "mean ms"];
    for (i, (x, t)) in tps.iter().enumerate() {
        let m = mean
            .iter()
            .find(|p| p.0 == *x)
            .map_or(String::new(), |p| format!("{:.3}", p.1));
        s.rows.push(vec![(i + 1).to_string(), format!("{t:.0}"), m]);
    }
    if pgss && !mean.is_empty() {
        let worst = mean.iter().map(|p| p.1).fold(0.0, f64::max);
        let avg = mean.iter().map(|p| p.1).sum::<f64>() / mean.len() as f64;
        s.chart = Some(Chart::Line {
            points: mean,
            unit: "ms".into(),
        });
        return Ok(if worst > 3.0 * avg.max(0.05) {
            s.say(
                Verdict::Warn,
                format!("mean latency {avg:.2} ms with a spike to {worst:.2} ms; up to {peak:.0} transactions/s"),
                "spikes with steady load point to locks, checkpoints or autovacuum: check pg_stat_activity wait events",
            )
        } else {
            s.say(
                Verdict::Ok,
                format!("mean latency {avg:.2} ms, steady; up to {peak:.0} transactions/s"),
                "nothing to do",
            )
        });
    }
    s.chart = Some(Chart::Line {
        points: tps,
        unit: "transactions/s".into(),
    });
    Ok(if pgss {
        s.say(
            Verdict::Ok,
            format!("no statements ran while sampling (up to {peak:.0} transactions/s)"),
            "analyze while the workload runs",
        )
    } else {
        s.say(
            Verdict::Unknown,
            format!("up to {peak:.0} transactions/s; latency needs pg_stat_statements"),
            "install pg_stat_statements to see latency",
        )
    })
}

/// Transactions, statement calls and statement time so far.
async fn counters(c: &mut PgConnection, pgss: bool) -> anyhow::Result<(f64, f64, f64)> {
    let sql = if pgss {
        "SELECT (SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database())::float8, \
                coalesce(sum(calls), 0)::float8, coalesce(sum(total_exec_time), 0)::float8 \
         FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
    } else {
        "SELECT (xact_commit + xact_rollback)::float8, 0::float8, 0::float8 \
         FROM pg_stat_database WHERE datname = current_database()"
    };
    let r = sqlx::query(sql).fetch_one(c).await?;
    Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))
}

/// The broker's metrics: sums by metric name, and by (name, label value) for some labels.
struct Metrics {
    sums: BTreeMap<String, f64>,
    by_database: BTreeMap<(String, String), f64>,
}

async fn scrape(url: &str) -> Result<Metrics, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").ok_or("only http:// URLs")?;
    let (host, path) = rest.split_once('/').map_or((rest, "/"), |(h, p)| (h, p));
    let mut s = tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(host))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut body = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut body))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let (head, text) = body.split_once("\r\n\r\n").ok_or("not HTTP")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(head.lines().next().unwrap_or("").to_owned());
    }
    let mut m = Metrics {
        sums: BTreeMap::new(),
        by_database: BTreeMap::new(),
    };
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(v) = value.parse::<f64>() else {
            continue;
        };
        let mut name = series.split('{').next().unwrap_or(series).to_owned();
        if name == "tidegate_pool_clients" && series.contains("state=\"waiting\"") {
            name = "tidegate_pool_clients_waiting".into();
        }
        *m.sums.entry(name.clone()).or_default() += v;
        if let Some(db) = series
            .split("database=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
        {
            *m.by_database.entry((name, db.to_owned())).or_default() += v;
        }
    }
    Ok(m)
}

fn broker_unknown(s: Section, why: &str) -> Section {
    s.say(
        Verdict::Unknown,
        format!("the broker's metrics could not be read ({why})"),
        "run analyze where the broker's HTTP listener is reachable, or pass --metrics URL",
    )
}

fn cache(metrics: &Result<Metrics, String>) -> Section {
    let s = Section::new("cache", "Result cache hit ratio");
    let m = match metrics {
        Ok(m) => m,
        Err(e) => return broker_unknown(s, e),
    };
    let get = |n: &str| m.sums.get(n).copied();
    let (Some(hits), Some(misses)) = (
        get("tidegate_cache_hits_total"),
        get("tidegate_cache_misses_total"),
    ) else {
        return s.say(
            Verdict::Unknown,
            "the result cache is off",
            "enable [cache] for read-heavy dashboards over time ranges that are already complete",
        );
    };
    let bypasses = get("tidegate_cache_bypasses_total").unwrap_or(0.0);
    let mut s = s;
    s.chart = Some(Chart::Bars {
        labels: vec!["hits".into(), "misses".into(), "bypasses".into()],
        values: vec![hits, misses, bypasses],
        unit: "reads".into(),
    });
    s.columns = vec!["hits", "misses", "bypasses"];
    s.rows.push(vec![
        hits.to_string(),
        misses.to_string(),
        bypasses.to_string(),
    ]);
    let ratio = hits / (hits + misses).max(1.0);
    if hits + misses == 0.0 {
        s.say(Verdict::Ok, "no cacheable read yet", "nothing to do")
    } else if bypasses > (hits + misses) * 0.1 {
        s.say(
            Verdict::Bad,
            format!(
                "hit ratio {:.0} %, but {bypasses} reads bypassed a failing cache",
                ratio * 100.0
            ),
            "check Redis: the breaker opens when it is slow or down",
        )
    } else if ratio < 0.2 {
        s.say(
            Verdict::Warn,
            format!("hit ratio {:.0} %", ratio * 100.0),
            "most cacheable reads change each time (now() ranges, new literals): bucket time ranges or lower cache.admission",
        )
    } else {
        s.say(
            Verdict::Ok,
            format!("hit ratio {:.0} %", ratio * 100.0),
            "nothing to do",
        )
    }
}

fn pool_waits(metrics: &Result<Metrics, String>) -> Section {
    let s = Section::new("pool-waits", "Pool waits");
    let m = match metrics {
        Ok(m) => m,
        Err(e) => return broker_unknown(s, e),
    };
    let mut s = s;
    s.columns = vec!["database", "waits", "total wait s", "waiting now"];
    let mut labels = Vec::new();
    let mut values = Vec::new();
    for ((name, db), count) in &m.by_database {
        if name != "tidegate_pool_wait_seconds_count" {
            continue;
        }
        let sum = m
            .by_database
            .get(&("tidegate_pool_wait_seconds_sum".to_owned(), db.clone()))
            .copied()
            .unwrap_or(0.0);
        let waiting = m
            .by_database
            .get(&("tidegate_pool_clients_waiting".to_owned(), db.clone()))
            .copied()
            .unwrap_or(0.0);
        labels.push(db.clone());
        values.push(sum);
        s.rows.push(vec![
            db.clone(),
            count.to_string(),
            format!("{sum:.3}"),
            waiting.to_string(),
        ]);
    }
    let total: f64 = values.iter().sum();
    s.chart = (!labels.is_empty()).then(|| Chart::Bars {
        labels,
        values,
        unit: "s waited".into(),
    });
    if total > 1.0 {
        s.say(
            Verdict::Warn,
            format!("clients waited {total:.1} s in all for a server connection"),
            "raise pool.size (within max_connections) or shorten long transactions",
        )
    } else {
        s.say(
            Verdict::Ok,
            format!("clients waited {total:.3} s in all"),
            "nothing to do",
        )
    }
}

async fn replica_lag(conn: &mut PgConnection, config: &Config) -> anyhow::Result<Section> {
    let rows = sqlx::query(
        "SELECT coalesce(application_name, client_addr::text, 'replica'), \
                coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), 0)::bigint, \
                coalesce(extract(epoch FROM replay_lag), 0)::float8 \
         FROM pg_stat_replication",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut s = Section::new("replica-lag", "Replica lag");
    s.columns = vec!["replica", "lag bytes", "lag s"];
    let max_s = config.routing.max_lag.duration().as_secs_f64();
    let mut worst: f64 = 0.0;
    let (mut labels, mut values) = (Vec::new(), Vec::new());
    for r in &rows {
        let name: String = r.try_get(0)?;
        let bytes: i64 = r.try_get(1)?;
        let secs: f64 = r.try_get(2)?;
        worst = worst.max(secs);
        labels.push(name.clone());
        values.push(bytes as f64);
        s.rows
            .push(vec![name, bytes.to_string(), format!("{secs:.3}")]);
    }
    if rows.is_empty() {
        return Ok(s.say(
            Verdict::Ok,
            "no replica streams from this primary",
            "nothing to do",
        ));
    }
    s.chart = Some(Chart::Bars {
        labels,
        values,
        unit: "bytes behind".into(),
    });
    Ok(if max_s > 0.0 && worst > max_s {
        s.say(
            Verdict::Bad,
            format!("a replica is {worst:.1} s behind (routing.max_lag {max_s:.1} s): its reads go to the primary"),
            "check the replica's I/O and long queries on it (hot_standby_feedback, max_standby_streaming_delay)",
        )
    } else {
        s.say(
            Verdict::Ok,
            format!("the worst replica is {worst:.3} s behind"),
            "nothing to do",
        )
    })
}

async fn table_sizes(conn: &mut PgConnection) -> anyhow::Result<Section> {
    let rows = sqlx::query(
        "SELECT schemaname || '.' || relname, pg_table_size(relid), pg_indexes_size(relid), n_live_tup \
         FROM pg_stat_user_tables WHERE schemaname NOT LIKE '\\_timescaledb%' \
         ORDER BY pg_total_relation_size(relid) DESC LIMIT 10",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut s = Section::new("table-sizes", "Table and index sizes");
    s.columns = vec!["table", "table MB", "indexes MB", "rows (estimate)"];
    let (mut labels, mut values) = (Vec::new(), Vec::new());
    let mut total = 0.0;
    for r in &rows {
        let name: String = r.try_get(0)?;
        let (t, i, n): (i64, i64, i64) = (r.try_get(1)?, r.try_get(2)?, r.try_get(3)?);
        total += mb(t + i);
        labels.push(name.clone());
        values.push(mb(t + i));
        s.rows.push(vec![
            name,
            format!("{:.1}", mb(t)),
            format!("{:.1}", mb(i)),
            n.to_string(),
        ]);
    }
    if rows.is_empty() {
        return Ok(s.say(Verdict::Ok, "no user tables", "nothing to do"));
    }
    s.chart = Some(Chart::Bars {
        labels,
        values,
        unit: "MB".into(),
    });
    Ok(s.say(
        Verdict::Ok,
        format!("the ten largest tables hold {total:.1} MB with their indexes (hypertables' chunks are counted in the hypertables section)"),
        "large append-only tables are candidates for hypertables with compression and retention",
    ))
}

async fn unused_indexes(conn: &mut PgConnection) -> anyhow::Result<Section> {
    let rows = sqlx::query(
        "SELECT s.schemaname || '.' || s.indexrelname, s.schemaname || '.' || s.relname, \
                pg_relation_size(s.indexrelid) \
         FROM pg_stat_user_indexes s JOIN pg_index i ON i.indexrelid = s.indexrelid \
         WHERE s.idx_scan = 0 AND NOT i.indisunique AND NOT i.indisprimary \
           AND s.schemaname NOT LIKE '\\_timescaledb%' \
         ORDER BY pg_relation_size(s.indexrelid) DESC LIMIT 20",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut s = Section::new("unused-indexes", "Unused indexes");
    s.columns = vec!["index", "table", "MB"];
    let mut total = 0.0;
    for r in &rows {
        let size: i64 = r.try_get(2)?;
        total += mb(size);
        s.rows.push(vec![
            r.try_get(0)?,
            r.try_get(1)?,
            format!("{:.2}", mb(size)),
        ]);
    }
    Ok(if rows.is_empty() {
        s.say(
            Verdict::Ok,
            "every non-unique index has been used since statistics were reset",
            "nothing to do",
        )
    } else {
        s.say(
            Verdict::Warn,
            format!("{} indexes never scanned ({total:.1} MB written on every insert for nothing)", rows.len()),
            "drop them after checking replicas and rare reports do not use them (statistics are per server)",
        )
    })
}

async fn missing_indexes(conn: &mut PgConnection) -> anyhow::Result<Section> {
    let rows = sqlx::query(
        "SELECT schemaname || '.' || relname, seq_scan, seq_tup_read, coalesce(idx_scan, 0), n_live_tup \
         FROM pg_stat_user_tables \
         WHERE seq_scan > 0 AND n_live_tup > 10000 AND seq_tup_read / seq_scan > 10000 \
           AND seq_scan > coalesce(idx_scan, 0) AND schemaname NOT LIKE '\\_timescaledb%' \
         ORDER BY seq_tup_read DESC LIMIT 10",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut s = Section::new("missing-indexes", "Likely missing indexes");
    s.columns = vec![
        "table",
        "sequential scans",
        "rows read by them",
        "index scans",
        "rows",
    ];
    let (mut labels, mut values) = (Vec::new(), Vec::new());
    for r in &rows {
        let name: String = r.try_get(0)?;
        let read: i64 = r.try_get(2)?;
        labels.push(name.clone());
        values.push(read as f64);
        s.rows.push(vec![
            name,
            r.try_get::<i64, _>(1)?.to_string(),
            read.to_string(),
            r.try_get::<i64, _>(3)?.to_string(),
            r.try_get::<i64, _>(4)?.to_string(),
        ]);
    }
    if rows.is_empty() {
        return Ok(s.say(
            Verdict::Ok,
            "no large table is read mostly by sequential scans",
            "nothing to do",
        ));
    }
    s.chart = Some(Chart::Bars {
        labels,
        values,
        unit: "rows read sequentially".into(),
    });
    Ok(s.say(
        Verdict::Warn,
        format!("{} large tables are read mostly by sequential scans", rows.len()),
        "find the statements (tidegate slow-queries names the scan and its filter) and index the filtered columns",
    ))
}

async fn bloat(conn: &mut PgConnection) -> anyhow::Result<Section> {
    let rows = sqlx::query(
        "SELECT schemaname || '.' || relname, n_dead_tup, n_live_tup, \
                coalesce(greatest(last_autovacuum, last_vacuum)::text, 'never') \
         FROM pg_stat_user_tables WHERE n_dead_tup > 0 ORDER BY n_dead_tup DESC LIMIT 10",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut s = Section::new("bloat", "Bloat estimate (dead rows)");
    s.columns = vec!["table", "dead rows", "live rows", "dead %", "last vacuum"];
    let (mut labels, mut values) = (Vec::new(), Vec::new());
    let mut worst: (f64, String) = (0.0, String::new());
    for r in &rows {
        let name: String = r.try_get(0)?;
        let (dead, live): (i64, i64) = (r.try_get(1)?, r.try_get(2)?);
        let pct = 100.0 * dead as f64 / (dead + live).max(1) as f64;
        if pct > worst.0 && dead > 1000 {
            worst = (pct, name.clone());
        }
        labels.push(name.clone());
        values.push(pct);
        s.rows.push(vec![
            name,
            dead.to_string(),
            live.to_string(),
            format!("{pct:.1}"),
            r.try_get(3)?,
        ]);
    }
    if rows.is_empty() {
        return Ok(s.say(Verdict::Ok, "no dead rows", "nothing to do"));
    }
    s.chart = Some(Chart::Bars {
        labels,
        values,
        unit: "% dead".into(),
    });
    Ok(if worst.0 > 20.0 {
        s.say(
            Verdict::Warn,
            format!("{} is {:.0} % dead rows", worst.1, worst.0),
            "autovacuum is behind there: lower its autovacuum_vacuum_scale_factor or VACUUM it",
        )
    } else {
        s.say(
            Verdict::Ok,
            "dead rows stay under 20 % everywhere",
            "nothing to do",
        )
    })
}

async fn buffer_hits(conn: &mut PgConnection) -> anyhow::Result<Section> {
    let r = sqlx::query(
        "SELECT blks_hit, blks_read FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(&mut *conn)
    .await?;
    let (hit, read): (i64, i64) = (r.try_get(0)?, r.try_get(1)?);
    let ratio = hit as f64 / (hit + read).max(1) as f64;
    let mut s = Section::new("buffer-hits", "PostgreSQL buffer hit ratio");
    s.columns = vec!["blocks from shared buffers", "blocks read", "hit ratio"];
    s.rows.push(vec![
        hit.to_string(),
        read.to_string(),
        format!("{ratio:.4}"),
    ]);
    s.chart = Some(Chart::Bars {
        labels: vec!["from buffers".into(), "read".into()],
        values: vec![hit as f64, read as f64],
        unit: "blocks".into(),
    });
    Ok(if ratio < 0.95 && hit + read > 10_000 {
        s.say(
            Verdict::Warn,
            format!("{:.1} % of blocks came from shared buffers", ratio * 100.0),
            "the working set does not fit: raise shared_buffers, or compress old chunks so it does",
        )
    } else {
        s.say(
            Verdict::Ok,
            format!("{:.2} % of blocks came from shared buffers", ratio * 100.0),
            "nothing to do",
        )
    })
}

async fn hypertables(conn: &mut PgConnection, tsdb: bool) -> Section {
    let s = Section::new("hypertables", "Hypertables: chunks and compression");
    if !tsdb {
        return s.say(
            Verdict::Unknown,
            "TimescaleDB is not installed in this database",
            "nothing to check",
        );
    }
    let rows = sqlx::query(
        "SELECT h.hypertable_schema || '.' || h.hypertable_name, h.num_chunks::bigint, \
                coalesce(c.before_compression_total_bytes, 0)::bigint, \
                coalesce(c.after_compression_total_bytes, 0)::bigint, \
                coalesce(c.number_compressed_chunks, 0)::bigint \
         FROM timescaledb_information.hypertables h \
         LEFT JOIN LATERAL hypertable_compression_stats(format('%I.%I', h.hypertable_schema, h.hypertable_name)::regclass) c ON true",
    )
    .fetch_all(&mut *conn)
    .await;
    let rows = match rows {
        Ok(r) => r,
        Err(e) => {
            return s.say(
                Verdict::Unknown,
                format!("could not read hypertables: {e}"),
                "check the extension's version",
            )
        }
    };
    let mut s = s;
    s.columns = vec![
        "hypertable",
        "chunks",
        "compressed chunks",
        "compression ratio",
    ];
    let (mut labels, mut values) = (Vec::new(), Vec::new());
    let mut uncompressed = Vec::new();
    for r in &rows {
        let (name, chunks, before, after, compressed): (String, i64, i64, i64, i64) = match (
            r.try_get(0),
            r.try_get(1),
            r.try_get(2),
            r.try_get(3),
            r.try_get(4),
        ) {
            (Ok(a), Ok(b), Ok(c), Ok(d), Ok(e)) => (a, b, c, d, e),
            _ => continue,
        };
        let ratio = if after > 0 {
            before as f64 / after as f64
        } else {
            0.0
        };
        if compressed == 0 && chunks > 7 {
            uncompressed.push(name.clone());
        }
        labels.push(name.clone());
        values.push(chunks as f64);
        s.rows.push(vec![
            name,
            chunks.to_string(),
            compressed.to_string(),
            if ratio > 0.0 {
                format!("{ratio:.1}")
            } else {
                "-".into()
            },
        ]);
    }
    if rows.is_empty() {
        return s.say(
            Verdict::Ok,
            "no hypertables",
            "declare them under [timescale] and run tidegate timescale apply",
        );
    }
    s.chart = Some(Chart::Bars {
        labels,
        values,
        unit: "chunks".into(),
    });
    if uncompressed.is_empty() {
        s.say(
            Verdict::Ok,
            format!(
                "{} hypertables; old chunks are compressed where there are many",
                rows.len()
            ),
            "nothing to do",
        )
    } else {
        s.say(
            Verdict::Warn,
            format!(
                "{} has many chunks and none compressed",
                uncompressed.join(", ")
            ),
            "declare compress_after for it under [timescale] and run tidegate timescale apply",
        )
    }
}

async fn failed_jobs(conn: &mut PgConnection, tsdb: bool) -> Section {
    let s = Section::new("failed-jobs", "Failed TimescaleDB jobs");
    if !tsdb {
        return s.say(
            Verdict::Unknown,
            "TimescaleDB is not installed in this database",
            "nothing to check",
        );
    }
    let rows = sqlx::query(
        "SELECT j.job_id::text, j.proc_name::text, coalesce(j.hypertable_name::text, ''), \
                coalesce(s.last_run_started_at::text, ''), s.total_failures::bigint \
         FROM timescaledb_information.jobs j JOIN timescaledb_information.job_stats s USING (job_id) \
         WHERE s.last_run_status = 'Failed' ORDER BY s.last_run_started_at DESC",
    )
    .fetch_all(&mut *conn)
    .await;
    let rows = match rows {
        Ok(r) => r,
        Err(e) => {
            return s.say(
                Verdict::Unknown,
                format!("could not read job_stats: {e}"),
                "check the extension's version",
            )
        }
    };
    let mut s = s;
    s.columns = vec!["job", "procedure", "hypertable", "last run", "failures"];
    for r in &rows {
        s.rows.push(vec![
            r.try_get(0).unwrap_or_default(),
            r.try_get(1).unwrap_or_default(),
            r.try_get(2).unwrap_or_default(),
            r.try_get(3).unwrap_or_default(),
            r.try_get::<i64, _>(4)
                .map(|n| n.to_string())
                .unwrap_or_default(),
        ]);
    }
    if rows.is_empty() {
        s.say(Verdict::Ok, "no job's last run failed", "nothing to do")
    } else {
        s.say(
            Verdict::Bad,
            format!("{} jobs failed their last run", rows.len()),
            "tidegate jobs --failed shows the errors; tidegate jobs run ID retries one",
        )
    }
}
