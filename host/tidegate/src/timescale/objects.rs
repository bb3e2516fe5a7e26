//! Continuous aggregates, chunks and jobs one at a time: `tidegate caggs create | refresh |
//! list | drop`, `tidegate chunks TABLE`, `tidegate jobs [--failed]` and `jobs run ID`.

use super::ops::notify;
use super::plan::qname;
use super::{connect, TimescaleError};
use serde::Serialize;
use sqlx::Row as _;
use std::fmt::Write as _;
use tidegate_config::{qualified, Config};

fn name_of(s: &str) -> Result<(String, String), TimescaleError> {
    qualified(s).ok_or_else(|| TimescaleError::Invalid(vec![format!("{s:?} is not a name")]))
}

/// Whether `view` is declared as a continuous aggregate.
pub fn declared_cagg(config: &Config, view: &str) -> bool {
    let want = qualified(view);
    config.timescale.hypertables.iter().any(|h| {
        h.continuous_aggregates
            .iter()
            .any(|a| want.is_some() && qualified(&a.name) == want)
    })
}

/// `tidegate caggs refresh NAME [--from T] [--to T]`: materializes the window now
/// (`refresh_continuous_aggregate`), then tells listening brokers that the aggregate changed.
pub async fn refresh(
    config: &Config,
    view: &str,
    from: Option<&str>,
    to: Option<&str>,
) -> Result<(), TimescaleError> {
    let name = name_of(view)?;
    let object = qname(&name);
    let mut conn = connect(config).await?;
    // A procedure that refuses to run inside a transaction block: on its own, autocommit.
    sqlx::query(
        "CALL refresh_continuous_aggregate($1::regclass, $2::timestamptz, $3::timestamptz)",
    )
    .bind(&object)
    .bind(from)
    .bind(to)
    .execute(&mut conn)
    .await
    .map_err(|source| TimescaleError::Statement {
        object: object.clone(),
        statement: "CALL refresh_continuous_aggregate".into(),
        source,
    })?;
    notify(&mut conn, &name.1).await;
    Ok(())
}

/// `tidegate caggs drop NAME`.
pub async fn drop(config: &Config, view: &str) -> Result<(), TimescaleError> {
    let name = name_of(view)?;
    let object = qname(&name);
    let mut conn = connect(config).await?;
    sqlx::raw_sql(&format!("DROP MATERIALIZED VIEW {object}"))
        .execute(&mut conn)
        .await
        .map_err(|source| TimescaleError::Statement {
            object: object.clone(),
            statement: format!("DROP MATERIALIZED VIEW {object}"),
            source,
        })?;
    notify(&mut conn, &name.1).await;
    Ok(())
}

/// One chunk.
#[derive(Debug, Serialize)]
pub struct Chunk {
    /// `schema.chunk`
    pub name: String,
    /// Its time range.
    pub range_start: Option<String>,
    /// …
    pub range_end: Option<String>,
    /// Whether it is compressed.
    pub compressed: bool,
    /// Its size: table, indexes and TOAST (compressed: the compressed data's).
    pub total_bytes: i64,
}

/// `tidegate chunks TABLE`: the chunks, oldest first.
pub async fn chunks(config: &Config, table: &str) -> Result<Vec<Chunk>, TimescaleError> {
    let name = name_of(table)?;
    let mut conn = connect(config).await?;
    let rows = sqlx::query(
        "SELECT format('%I.%I', k.chunk_schema, k.chunk_name), k.range_start::text, \
                k.range_end::text, k.is_compressed, coalesce(s.total_bytes, 0)::int8 \
         FROM timescaledb_information.chunks k \
         LEFT JOIN chunks_detailed_size(format('%I.%I', $1::text, $2::text)::regclass) s \
           ON s.chunk_schema = k.chunk_schema AND s.chunk_name = k.chunk_name \
         WHERE k.hypertable_schema = $1 AND k.hypertable_name = $2 ORDER BY k.range_start",
    )
    .bind(&name.0)
    .bind(&name.1)
    .fetch_all(&mut conn)
    .await
    .map_err(|source| TimescaleError::Statement {
        object: qname(&name),
        statement: "chunks".into(),
        source,
    })?;
    rows.iter()
        .map(|r| {
            Ok(Chunk {
                name: r.try_get(0)?,
                range_start: r.try_get(1)?,
                range_end: r.try_get(2)?,
                compressed: r.try_get(3)?,
                total_bytes: r.try_get(4)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(TimescaleError::from)
}

/// The chunk list for people.
pub fn chunks_human(chunks: &[Chunk]) -> String {
    let mut out = String::new();
    for c in chunks {
        let _ = writeln!(
            out,
            "{} [{} .. {}) {} bytes{}",
            c.name,
            c.range_start.as_deref().unwrap_or("-"),
            c.range_end.as_deref().unwrap_or("-"),
            c.total_bytes,
            if c.compressed { ", compressed" } else { "" }
        );
    }
    let _ = writeln!(out, "{} chunks", chunks.len());
    out
}

/// A job's last error.
#[derive(Debug, Serialize)]
pub struct JobError {
    /// `job_id`
    pub job: i32,
    /// When the failed run started.
    pub started: Option<String>,
    /// The SQLSTATE.
    pub sqlerrcode: Option<String>,
    /// The message.
    pub message: Option<String>,
}

/// `tidegate jobs --failed`: the jobs' recorded errors, newest first (at most 50).
pub async fn job_errors(config: &Config) -> Result<Vec<JobError>, TimescaleError> {
    let mut conn = connect(config).await?;
    let rows = sqlx::query(
        "SELECT job_id, start_time::text, sqlerrcode::text, err_message::text \
         FROM timescaledb_information.job_errors ORDER BY start_time DESC LIMIT 50",
    )
    .fetch_all(&mut conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(JobError {
                job: r.try_get(0)?,
                started: r.try_get(1)?,
                sqlerrcode: r.try_get(2)?,
                message: r.try_get(3)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(TimescaleError::from)
}

/// `tidegate jobs run ID`: runs the job now, in the foreground (`run_job`).
pub async fn run_job(config: &Config, id: i32) -> Result<(), TimescaleError> {
    let mut conn = connect(config).await?;
    let object: Option<String> = sqlx::query_scalar(
        "SELECT hypertable_name::text FROM timescaledb_information.jobs WHERE job_id = $1",
    )
    .bind(id)
    .fetch_optional(&mut conn)
    .await?
    .flatten();
    sqlx::query("CALL run_job($1)")
        .bind(id)
        .execute(&mut conn)
        .await
        .map_err(|source| TimescaleError::Statement {
            object: format!("job {id}"),
            statement: format!("CALL run_job({id})"),
            source,
        })?;
    if let Some(object) = object {
        notify(&mut conn, &object).await;
    }
    Ok(())
}
