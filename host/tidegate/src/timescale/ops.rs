//! The seed's data operations as commands: retention (`drop_chunks` on hypertables, a batched,
//! resumable `DELETE` on plain tables), cleanup (retention on every declared table), and
//! compression of eligible chunks. Each can run as a dry run that reports the numbers the real
//! run then reports. Whatever changes rows tells listening brokers (`NOTIFY
//! tidegate_invalidate`) so cached reads of the table are dropped.

use super::plan::qname;
use super::{connect_any, TimescaleError};
use serde::Serialize;
use sqlx::postgres::PgConnection;
use sqlx::Row as _;
use std::fmt::Write as _;
use tidegate_config::{qualified, Config, Hypertable, Interval};
use tidegate_sql::quote_ident as quote;

/// Where progress lines go (standard error in the CLI).
pub type Progress<'a> = &'a (dyn Fn(&str) + Sync);

/// What retention removed (or, in a dry run, would remove) from one table.
#[derive(Debug, Serialize)]
pub struct Removal {
    /// `"schema"."table"`
    pub table: String,
    /// `drop_chunks` or `batched delete`.
    pub method: &'static str,
    /// Rows older than this go.
    pub cutoff: String,
    /// The chunks dropped (hypertables).
    pub chunks: Vec<String>,
    /// The rows removed.
    pub rows: i64,
    /// `DELETE` batches committed (plain tables).
    pub batches: u64,
}

/// A retention or cleanup run.
#[derive(Debug, Serialize)]
pub struct RetentionReport {
    /// Whether nothing was changed.
    pub dry_run: bool,
    /// Per table.
    pub tables: Vec<Removal>,
}

impl RetentionReport {
    /// The report for people.
    pub fn human(&self) -> String {
        let mut out = String::new();
        let verb = if self.dry_run {
            "would remove"
        } else {
            "removed"
        };
        for t in &self.tables {
            let _ = writeln!(
                out,
                "{}: {verb} {} rows older than {} ({}{})",
                t.table,
                t.rows,
                t.cutoff,
                t.method,
                match t.method {
                    "drop_chunks" => format!(", {} chunks", t.chunks.len()),
                    _ if self.dry_run => String::new(),
                    _ => format!(", {} batches", t.batches),
                }
            );
            for c in &t.chunks {
                let _ = writeln!(out, "  chunk {c}");
            }
        }
        let rows: i64 = self.tables.iter().map(|t| t.rows).sum();
        let chunks: usize = self.tables.iter().map(|t| t.chunks.len()).sum();
        let _ = writeln!(
            out,
            "retention: {verb} {rows} rows, {chunks} chunks in total"
        );
        out
    }
}

/// The declared entry for `table`.
fn declared<'a>(config: &'a Config, table: &str) -> Option<&'a Hypertable> {
    let name = qualified(table)?;
    config
        .timescale
        .hypertables
        .iter()
        .find(|h| qualified(&h.table).as_ref() == Some(&name))
}

/// `tidegate retention apply [TABLE] [--older-than D]` (`table: None`: every declared table
/// with a retention; that is `tidegate cleanup`).
pub async fn retention(
    config: &Config,
    table: Option<&str>,
    older_than: Option<Interval>,
    dry_run: bool,
    progress: Progress<'_>,
) -> Result<RetentionReport, TimescaleError> {
    let mut targets = Vec::new();
    match table {
        Some(t) => {
            let h = declared(config, t).ok_or_else(|| {
                TimescaleError::Invalid(vec![format!(
                    "{t} is not declared in [[timescale.hypertables]] (its time column is needed)"
                )])
            })?;
            let after = older_than
                .or(h.retention.as_ref().map(|r| r.drop_after))
                .ok_or_else(|| {
                    TimescaleError::Invalid(vec![format!(
                        "{t} declares no retention: give --older-than"
                    )])
                })?;
            targets.push((h, after));
        }
        None => {
            for h in &config.timescale.hypertables {
                if let Some(after) = older_than.or(h.retention.as_ref().map(|r| r.drop_after)) {
                    targets.push((h, after));
                }
            }
        }
    }
    let (mut conn, timescaledb) = connect_any(config).await?;
    let mut tables = Vec::new();
    for (h, after) in targets {
        let Some(name) = qualified(&h.table) else {
            continue;
        };
        let removal = if timescaledb.is_some() && is_hypertable(&mut conn, &name).await? {
            drop_chunks(&mut conn, &name, after, dry_run).await?
        } else {
            let batch = i64::from(config.timescale.cleanup_batch_rows);
            batched_delete(
                &mut conn,
                &name,
                &h.time_column,
                after,
                batch,
                dry_run,
                progress,
            )
            .await?
        };
        progress(&format!(
            "{}: {} rows{}",
            removal.table,
            removal.rows,
            if dry_run { " (dry run)" } else { "" }
        ));
        if !dry_run && removal.rows > 0 {
            notify(&mut conn, &name.1).await;
        }
        tables.push(removal);
    }
    Ok(RetentionReport { dry_run, tables })
}

/// Whether `name` is a hypertable (the extension is installed).
async fn is_hypertable(
    conn: &mut PgConnection,
    name: &(String, String),
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM timescaledb_information.hypertables \
           WHERE hypertable_schema = $1 AND hypertable_name = $2)",
    )
    .bind(&name.0)
    .bind(&name.1)
    .fetch_one(conn)
    .await
}

/// Tells brokers listening in this database that `table` changed.
pub async fn notify(conn: &mut PgConnection, table: &str) {
    if let Err(e) = sqlx::query("SELECT pg_notify($1, $2)")
        .bind(crate::cache::listen::CHANNEL)
        .bind(table)
        .execute(conn)
        .await
    {
        tracing::warn!(table, error = %e, "could not notify brokers of the change");
    }
}

/// `drop_chunks` of the chunks entirely older than now − `after`, counted first in the same
/// transaction.
async fn drop_chunks(
    conn: &mut PgConnection,
    name: &(String, String),
    after: Interval,
    dry_run: bool,
) -> Result<Removal, TimescaleError> {
    use sqlx::Connection as _;
    let object = qname(name);
    let mut tx = conn.begin().await?;
    let cutoff: String = sqlx::query_scalar(&format!("SELECT (now() - {})::text", after.sql()))
        .fetch_one(&mut *tx)
        .await?;
    let chunks: Vec<String> = sqlx::query_scalar(
        "SELECT c::text FROM show_chunks($1::regclass, older_than => now() - $2::interval) c ORDER BY 1",
    )
    .bind(&object)
    .bind(after.pg())
    .fetch_all(&mut *tx)
    .await?;
    let mut rows = 0i64;
    for c in &chunks {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {c}"))
            .fetch_one(&mut *tx)
            .await?;
        rows += n;
    }
    if !dry_run {
        sqlx::query("SELECT drop_chunks($1::regclass, older_than => now() - $2::interval)")
            .bind(&object)
            .bind(after.pg())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    Ok(Removal {
        table: object,
        method: "drop_chunks",
        cutoff,
        chunks,
        rows,
        batches: 0,
    })
}

/// Deletes rows older than now − `after` from a plain table in batches of at most `batch`
/// rows, each committed on its own: never one long transaction, and a run stopped half way is
/// finished by the next.
#[allow(clippy::too_many_arguments)]
async fn batched_delete(
    conn: &mut PgConnection,
    name: &(String, String),
    time_column: &str,
    after: Interval,
    batch: i64,
    dry_run: bool,
    progress: Progress<'_>,
) -> Result<Removal, TimescaleError> {
    let object = qname(name);
    let cutoff: String = sqlx::query_scalar(&format!("SELECT (now() - {})::text", after.sql()))
        .fetch_one(&mut *conn)
        .await?;
    let time = quote(time_column);
    let mut removal = Removal {
        table: object.clone(),
        method: "batched delete",
        cutoff: cutoff.clone(),
        chunks: Vec::new(),
        rows: 0,
        batches: 0,
    };
    if dry_run {
        removal.rows = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {object} WHERE {time} < $1::timestamptz"
        ))
        .bind(&cutoff)
        .fetch_one(&mut *conn)
        .await?;
        return Ok(removal);
    }
    // A row is (tableoid, ctid): a ctid alone repeats across the partitions of a natively
    // partitioned table.
    let sql = format!(
        "WITH d AS (DELETE FROM {object} WHERE (tableoid, ctid) IN ( \
           SELECT tableoid, ctid FROM {object} WHERE {time} < $1::timestamptz LIMIT $2) \
           RETURNING 1) \
         SELECT count(*) FROM d"
    );
    loop {
        let n: i64 = sqlx::query_scalar(&sql)
            .bind(&cutoff)
            .bind(batch)
            .fetch_one(&mut *conn)
            .await?;
        if n == 0 {
            break;
        }
        removal.rows += n;
        removal.batches += 1;
        progress(&format!(
            "{object}: batch {} deleted {n} rows ({} so far)",
            removal.batches, removal.rows
        ));
    }
    Ok(removal)
}

/// What `compress` did (or would do) to one hypertable.
#[derive(Debug, Serialize)]
pub struct Compressed {
    /// `"schema"."table"`
    pub table: String,
    /// The chunks compressed (or to compress).
    pub chunks: Vec<String>,
    /// Their size before.
    pub before_bytes: i64,
    /// Their size after (a dry run: `None`).
    pub after_bytes: Option<i64>,
    /// before / after.
    pub ratio: Option<f64>,
}

/// A `compress` run.
#[derive(Debug, Serialize)]
pub struct CompressReport {
    /// Whether nothing was changed.
    pub dry_run: bool,
    /// Per hypertable.
    pub tables: Vec<Compressed>,
}

impl CompressReport {
    /// The report for people.
    pub fn human(&self) -> String {
        let mut out = String::new();
        for t in &self.tables {
            let verb = if self.dry_run {
                "would compress"
            } else {
                "compressed"
            };
            let _ = write!(
                out,
                "{}: {verb} {} chunks of {} bytes",
                t.table,
                t.chunks.len(),
                t.before_bytes
            );
            if let (Some(a), Some(r)) = (t.after_bytes, t.ratio) {
                let _ = write!(out, " into {a} bytes, ratio {r:.2}");
            }
            out.push('\n');
        }
        out
    }
}

/// `tidegate compress [TABLE] [--older-than D]`: compresses the uncompressed chunks entirely
/// older than now − D (default: the declared `compression.after`), one per transaction.
pub async fn compress(
    config: &Config,
    table: Option<&str>,
    older_than: Option<Interval>,
    dry_run: bool,
    progress: Progress<'_>,
) -> Result<CompressReport, TimescaleError> {
    let mut targets = Vec::new();
    for h in &config.timescale.hypertables {
        if table.is_some_and(|t| qualified(t) != qualified(&h.table)) {
            continue;
        }
        let after = older_than.or(h.compression.as_ref().map(|c| c.after));
        match after {
            Some(a) => targets.push((h, a)),
            None if table.is_some() => {
                return Err(TimescaleError::Invalid(vec![format!(
                    "{} declares no compression: give --older-than",
                    h.table
                )]))
            }
            None => {}
        }
    }
    if let (Some(t), true) = (table, targets.is_empty()) {
        return Err(TimescaleError::Invalid(vec![format!(
            "{t} is not declared in [[timescale.hypertables]]"
        )]));
    }
    let mut conn = super::connect(config).await?;
    let mut tables = Vec::new();
    for (h, after) in targets {
        let Some(name) = qualified(&h.table) else {
            continue;
        };
        let object = qname(&name);
        let rows = sqlx::query(
            "SELECT format('%I.%I', k.chunk_schema, k.chunk_name), \
                    coalesce(pg_total_relation_size(format('%I.%I', k.chunk_schema, k.chunk_name)::regclass), 0)::int8 \
             FROM timescaledb_information.chunks k \
             WHERE k.hypertable_schema = $1 AND k.hypertable_name = $2 AND NOT k.is_compressed \
               AND format('%I.%I', k.chunk_schema, k.chunk_name)::regclass IN ( \
                 SELECT show_chunks($3::regclass, older_than => now() - $4::interval)) \
             ORDER BY k.range_start",
        )
        .bind(&name.0)
        .bind(&name.1)
        .bind(&object)
        .bind(after.pg())
        .fetch_all(&mut conn)
        .await?;
        let mut chunks = Vec::new();
        let mut before_bytes = 0i64;
        for r in &rows {
            chunks.push(r.try_get::<String, _>(0)?);
            before_bytes += r.try_get::<i64, _>(1)?;
        }
        let mut done = Compressed {
            table: object.clone(),
            chunks,
            before_bytes,
            after_bytes: None,
            ratio: None,
        };
        if !dry_run && !done.chunks.is_empty() {
            let mut gone = Vec::new();
            for (i, c) in done.chunks.iter().enumerate() {
                let n = done.chunks.len();
                let compressed = compress_chunk(&mut conn, c).await;
                if let Err(source) = compressed {
                    // TimescaleDB's own compression job may compress the chunk first, a
                    // retention run may drop it: then there is nothing left to do for it.
                    let state: Option<bool> = sqlx::query_scalar(
                        "SELECT k.is_compressed FROM timescaledb_information.chunks k \
                         WHERE format('%I.%I', k.chunk_schema, k.chunk_name) = $1",
                    )
                    .bind(c)
                    .fetch_optional(&mut conn)
                    .await?;
                    match state {
                        Some(true) => {
                            progress(&format!("{object}: {}/{n} {c} compressed meanwhile", i + 1));
                            continue;
                        }
                        None => {
                            progress(&format!("{object}: {}/{n} {c} dropped meanwhile", i + 1));
                            gone.push(c.clone());
                            continue;
                        }
                        Some(false) => {
                            return Err(TimescaleError::Statement {
                                object: object.clone(),
                                statement: format!("compress_chunk({c})"),
                                source,
                            })
                        }
                    }
                }
                progress(&format!("{object}: compressed {}/{n} {c}", i + 1));
            }
            done.chunks.retain(|c| !gone.contains(c));
            let stats = sqlx::query(
                "SELECT coalesce(sum(before_compression_total_bytes), 0)::int8, \
                        coalesce(sum(after_compression_total_bytes), 0)::int8 \
                 FROM chunk_compression_stats($1::regclass) \
                 WHERE format('%I.%I', chunk_schema, chunk_name) = ANY ($2)",
            )
            .bind(&object)
            .bind(&done.chunks)
            .fetch_one(&mut conn)
            .await?;
            let (b, a): (i64, i64) = (stats.try_get(0)?, stats.try_get(1)?);
            done.before_bytes = b;
            done.after_bytes = Some(a);
            done.ratio = (a > 0).then(|| b as f64 / a as f64);
            notify(&mut conn, &name.1).await;
        }
        tables.push(done);
    }
    Ok(CompressReport { dry_run, tables })
}

/// `tidegate decompress TABLE --from T --to T`: decompresses the compressed chunks with data
/// in the range; returns them.
pub async fn decompress(
    config: &Config,
    table: &str,
    from: Option<&str>,
    to: Option<&str>,
    dry_run: bool,
) -> Result<Vec<String>, TimescaleError> {
    let name = qualified(table)
        .ok_or_else(|| TimescaleError::Invalid(vec![format!("{table:?} is not a table name")]))?;
    let object = qname(&name);
    let mut conn = super::connect(config).await?;
    let chunks: Vec<String> = sqlx::query_scalar(
        "SELECT format('%I.%I', k.chunk_schema, k.chunk_name) FROM timescaledb_information.chunks k \
         WHERE k.hypertable_schema = $1 AND k.hypertable_name = $2 AND k.is_compressed \
           AND ($3::timestamptz IS NULL OR k.range_end > $3::timestamptz) \
           AND ($4::timestamptz IS NULL OR k.range_start < $4::timestamptz) \
         ORDER BY k.range_start",
    )
    .bind(&name.0)
    .bind(&name.1)
    .bind(from)
    .bind(to)
    .fetch_all(&mut conn)
    .await?;
    if !dry_run {
        for c in &chunks {
            sqlx::query("SELECT decompress_chunk($1::regclass, if_compressed => true)")
                .bind(c)
                .execute(&mut conn)
                .await
                .map_err(|source| TimescaleError::Statement {
                    object: object.clone(),
                    statement: format!("decompress_chunk({c})"),
                    source,
                })?;
        }
    }
    Ok(chunks)
}

/// `compress_chunk`, tried again after a deadlock or a lock timeout: TimescaleDB's own
/// compression job may be compressing the same chunk (then it is found compressed).
async fn compress_chunk(conn: &mut PgConnection, chunk: &str) -> Result<(), sqlx::Error> {
    let mut tries = 0;
    loop {
        let done = sqlx::query("SELECT compress_chunk($1::regclass, if_not_compressed => true)")
            .bind(chunk)
            .execute(&mut *conn)
            .await;
        match done {
            Err(sqlx::Error::Database(e))
                if tries < 3 && matches!(e.code().as_deref(), Some("40P01" | "55P03")) =>
            {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(200 * tries)).await;
            }
            other => return other.map(drop),
        }
    }
}
