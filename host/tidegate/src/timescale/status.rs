//! `tidegate timescale status`: the live lifecycle — per hypertable its chunks and compression
//! (`hypertable_compression_stats`), per continuous aggregate its watermark and how far it lags
//! the raw data, per job its schedule, last run and failures (`job_stats`).

use super::plan::qname;
use serde::Serialize;
use sqlx::postgres::PgConnection;
use sqlx::Row as _;
use std::fmt::Write as _;

/// The live state.
#[derive(Debug, Serialize)]
pub struct Status {
    /// TimescaleDB's version.
    pub version: String,
    /// The hypertables (TimescaleDB's internal ones left out).
    pub hypertables: Vec<HypertableStatus>,
    /// The continuous aggregates.
    pub continuous_aggregates: Vec<CaggStatus>,
    /// The background jobs (TimescaleDB's own housekeeping left out).
    pub jobs: Vec<JobStatus>,
}

/// One hypertable.
#[derive(Debug, Serialize)]
pub struct HypertableStatus {
    /// `"schema"."name"`
    pub name: String,
    /// Chunks.
    pub chunks: i64,
    /// Of which compressed.
    pub compressed_chunks: i64,
    /// The oldest chunk's start.
    pub range_start: Option<String>,
    /// The newest chunk's end.
    pub range_end: Option<String>,
    /// `hypertable_size`: table, indexes and TOAST of every chunk.
    pub total_bytes: i64,
    /// `hypertable_compression_stats`: bytes of the compressed chunks before compression.
    pub before_compression_bytes: Option<i64>,
    /// … and after.
    pub after_compression_bytes: Option<i64>,
    /// before / after.
    pub compression_ratio: Option<f64>,
}

/// One continuous aggregate.
#[derive(Debug, Serialize)]
pub struct CaggStatus {
    /// `"schema"."view"`
    pub name: String,
    /// The hypertable it aggregates.
    pub hypertable: String,
    /// Materialized up to here (`None`: never refreshed).
    pub watermark: Option<String>,
    /// The newest raw row's time.
    pub newest_raw: Option<String>,
    /// Seconds from the watermark to the newest raw row (`None` when either is unknown).
    pub lag_seconds: Option<f64>,
}

/// One job.
#[derive(Debug, Serialize)]
pub struct JobStatus {
    /// `job_id`
    pub id: i32,
    /// Its procedure (`policy_compression`, …).
    pub proc: String,
    /// The hypertable or aggregate it works on.
    pub object: Option<String>,
    /// `schedule_interval`
    pub schedule: String,
    /// `Scheduled`, `Running` or `Paused`.
    pub state: Option<String>,
    /// When the last run started.
    pub last_run: Option<String>,
    /// `Success` or `Failed`.
    pub last_status: Option<String>,
    /// When it runs next.
    pub next_start: Option<String>,
    /// Runs so far.
    pub total_runs: i64,
    /// Failed runs so far.
    pub total_failures: i64,
}

/// Reads the status.
pub async fn read(conn: &mut PgConnection, version: String) -> Result<Status, sqlx::Error> {
    let mut hypertables = Vec::new();
    for r in sqlx::query(
        "SELECT h.hypertable_schema::text, h.hypertable_name::text, count(k.*), \
                count(k.*) FILTER (WHERE k.is_compressed), min(k.range_start)::text, \
                max(k.range_end)::text, \
                hypertable_size(format('%I.%I', h.hypertable_schema, h.hypertable_name)::regclass) \
         FROM timescaledb_information.hypertables h \
         LEFT JOIN timescaledb_information.chunks k \
           ON k.hypertable_schema = h.hypertable_schema AND k.hypertable_name = h.hypertable_name \
         WHERE h.hypertable_schema NOT LIKE '\\_timescaledb%' \
         GROUP BY h.hypertable_schema, h.hypertable_name ORDER BY 1, 2",
    )
    .fetch_all(&mut *conn)
    .await?
    {
        let name = (r.try_get::<String, _>(0)?, r.try_get::<String, _>(1)?);
        let stats = sqlx::query(
            "SELECT sum(before_compression_total_bytes)::int8, sum(after_compression_total_bytes)::int8 \
             FROM hypertable_compression_stats($1::regclass)",
        )
        .bind(qname(&name))
        .fetch_one(&mut *conn)
        .await?;
        let before: Option<i64> = stats.try_get(0)?;
        let after: Option<i64> = stats.try_get(1)?;
        hypertables.push(HypertableStatus {
            name: qname(&name),
            chunks: r.try_get(2)?,
            compressed_chunks: r.try_get(3)?,
            range_start: r.try_get(4)?,
            range_end: r.try_get(5)?,
            total_bytes: r.try_get::<Option<i64>, _>(6)?.unwrap_or(0),
            before_compression_bytes: before,
            after_compression_bytes: after,
            compression_ratio: match (before, after) {
                (Some(b), Some(a)) if a > 0 => Some(b as f64 / a as f64),
                _ => None,
            },
        });
    }
    let mut continuous_aggregates = Vec::new();
    for r in sqlx::query(
        "SELECT c.view_schema::text, c.view_name::text, c.hypertable_schema::text, \
                c.hypertable_name::text, \
                _timescaledb_functions.cagg_watermark(ca.mat_hypertable_id), \
                (SELECT d.column_name::text FROM timescaledb_information.dimensions d \
                  WHERE d.hypertable_schema = c.hypertable_schema \
                    AND d.hypertable_name = c.hypertable_name AND d.dimension_number = 1) \
         FROM timescaledb_information.continuous_aggregates c \
         JOIN _timescaledb_catalog.continuous_agg ca \
           ON ca.user_view_schema = c.view_schema AND ca.user_view_name = c.view_name \
         ORDER BY 1, 2",
    )
    .fetch_all(&mut *conn)
    .await?
    {
        let view = (r.try_get::<String, _>(0)?, r.try_get::<String, _>(1)?);
        let table = (r.try_get::<String, _>(2)?, r.try_get::<String, _>(3)?);
        let mark: Option<i64> = r.try_get(4)?;
        let time: Option<String> = r.try_get(5)?;
        // TimescaleDB's "no beginning": the aggregate was never refreshed.
        let mark = mark.filter(|m| *m > -210_866_803_200_000_000);
        let (mut watermark, mut newest_raw, mut lag_seconds) = (None, None, None);
        if let Some(time) = time {
            // The lag needs the raw data's newest time; a time column that is not a timestamp
            // gives no lag rather than an error.
            let sql = format!(
                "SELECT w::text, n::text, extract(epoch FROM (n - w))::float8 \
                 FROM (SELECT $1::int8 AS m) x, \
                      LATERAL (SELECT CASE WHEN x.m IS NULL THEN NULL \
                                      ELSE _timescaledb_functions.to_timestamp(x.m) END AS w) a, \
                      LATERAL (SELECT max({})::timestamptz AS n FROM {}) b",
                tidegate_sql::quote_ident(&time),
                qname(&table)
            );
            match sqlx::query(&sql).bind(mark).fetch_one(&mut *conn).await {
                Ok(row) => {
                    watermark = row.try_get(0)?;
                    newest_raw = row.try_get(1)?;
                    // A watermark at the end of the newest bucket may pass the newest row.
                    lag_seconds = row.try_get::<Option<f64>, _>(2)?.map(|l| l.max(0.0));
                }
                Err(e) => tracing::debug!(view = %qname(&view), error = %e, "no lag"),
            }
        }
        continuous_aggregates.push(CaggStatus {
            name: qname(&view),
            hypertable: qname(&table),
            watermark,
            newest_raw,
            lag_seconds,
        });
    }
    let mut jobs = Vec::new();
    for r in sqlx::query(
        "SELECT j.job_id, j.proc_name::text, \
                CASE WHEN j.hypertable_name IS NOT NULL \
                     THEN format('%I.%I', j.hypertable_schema, j.hypertable_name) END, \
                j.schedule_interval::text, s.job_status, s.last_run_started_at::text, \
                s.last_run_status, s.next_start::text, coalesce(s.total_runs, 0)::int8, \
                coalesce(s.total_failures, 0)::int8 \
         FROM timescaledb_information.jobs j \
         LEFT JOIN timescaledb_information.job_stats s ON s.job_id = j.job_id \
         WHERE j.job_id >= 1000 ORDER BY j.job_id",
    )
    .fetch_all(&mut *conn)
    .await?
    {
        jobs.push(JobStatus {
            id: r.try_get(0)?,
            proc: r.try_get(1)?,
            object: r.try_get(2)?,
            schedule: r.try_get(3)?,
            state: r.try_get(4)?,
            last_run: r.try_get(5)?,
            last_status: r.try_get(6)?,
            next_start: r.try_get(7)?,
            total_runs: r.try_get(8)?,
            total_failures: r.try_get(9)?,
        });
    }
    Ok(Status {
        version,
        hypertables,
        continuous_aggregates,
        jobs,
    })
}

fn or_dash(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("-")
}

impl Status {
    /// The status for people.
    pub fn human(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "TimescaleDB {}", self.version);
        let _ = writeln!(out, "hypertables:");
        for h in &self.hypertables {
            let _ = write!(
                out,
                "  {}: {} chunks ({} compressed), {} .. {}, {} bytes",
                h.name,
                h.chunks,
                h.compressed_chunks,
                or_dash(&h.range_start),
                or_dash(&h.range_end),
                h.total_bytes
            );
            if let (Some(b), Some(a), Some(r)) = (
                h.before_compression_bytes,
                h.after_compression_bytes,
                h.compression_ratio,
            ) {
                let _ = write!(out, "; compressed {b} -> {a} bytes, ratio {r:.2}");
            }
            out.push('\n');
        }
        let _ = writeln!(out, "continuous aggregates:");
        for c in &self.continuous_aggregates {
            let lag = c
                .lag_seconds
                .map_or("-".to_owned(), |s| format!("{s:.0} s"));
            let _ = writeln!(
                out,
                "  {} over {}: watermark {}, newest raw {}, lag {lag}",
                c.name,
                c.hypertable,
                c.watermark.as_deref().unwrap_or("never refreshed"),
                or_dash(&c.newest_raw),
            );
        }
        let _ = writeln!(out, "jobs:");
        for j in &self.jobs {
            let _ = writeln!(
                out,
                "  {} {} on {}: every {}, {}, last run {} ({}), next {}, {} runs, {} failures",
                j.id,
                j.proc,
                or_dash(&j.object),
                j.schedule,
                or_dash(&j.state),
                or_dash(&j.last_run),
                or_dash(&j.last_status),
                or_dash(&j.next_start),
                j.total_runs,
                j.total_failures
            );
        }
        out
    }
}
