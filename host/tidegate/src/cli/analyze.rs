//! `tidegate analyze` (the seed's `analyze_performance`): one page that says why the database
//! is slow. It reads the primary's statistics views (`pg_stat_statements`,
//! `pg_stat_database`, `pg_stat_user_tables`/`_indexes`, `pg_stat_replication`, TimescaleDB's
//! information views) and the broker's `/metrics`, samples throughput and latency for a few
//! seconds, and writes each section with a one-line verdict and what to do — as one
//! self-contained HTML page (plots as inline SVG, nothing fetched), Markdown or JSON
//! ([`render`]).

mod broker;
mod render;
mod server;
mod statements;
mod timescale;

use crate::config::Config;
use crate::upstream::own_db;
use serde::Serialize;
use sqlx::postgres::PgConnection;
use sqlx::ConnectOptions as _;
use std::path::PathBuf;

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
    let latency = statements::latency(&mut conn, pgss, args.sample_seconds).await?;
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
        Some(url) => broker::scrape(url).await.map_err(|e| format!("{url}: {e}")),
        None => Err("listen.http is not configured: pass --metrics URL".into()),
    };
    let sections = vec![
        statements::top_statements(&mut conn, pgss).await?,
        latency,
        broker::cache(&metrics),
        broker::pool_waits(&metrics),
        server::replica_lag(&mut conn, config).await?,
        server::table_sizes(&mut conn).await?,
        server::unused_indexes(&mut conn).await?,
        server::missing_indexes(&mut conn).await?,
        server::bloat(&mut conn).await?,
        server::buffer_hits(&mut conn).await?,
        timescale::hypertables(&mut conn, tsdb).await,
        timescale::failed_jobs(&mut conn, tsdb).await,
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
