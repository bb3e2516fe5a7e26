//! The live state of the declared objects, read from PostgreSQL's and TimescaleDB's catalogs:
//! `timescaledb_information.hypertables`, `dimensions`, `compression_settings`,
//! `continuous_aggregates` and `jobs`.

use sqlx::postgres::PgConnection;
use sqlx::Row as _;
use std::collections::HashMap;
use tidegate_config::Timescale;
use tidegate_sql::quote_ident as quote;

/// `(schema, name)`
pub type Name = (String, String);

/// What the catalog holds for the declared tables and aggregates.
#[derive(Debug, Default, Clone)]
pub struct Live {
    /// The declared tables, by name; absent when the table does not exist.
    pub tables: HashMap<Name, Table>,
    /// Every continuous aggregate of the database, by view name.
    pub caggs: HashMap<Name, Cagg>,
    /// Other relations named like a declared aggregate (a view or table that is no aggregate).
    pub squatters: HashMap<Name, String>,
    /// The policy jobs (compression, retention, refresh) of the database.
    pub jobs: Vec<Job>,
    /// Whether TimescaleDB is installed in the database.
    pub timescaledb: bool,
    /// The server's `now()`, in seconds since the epoch (where native partitions are kept).
    pub now: f64,
}

/// A declared table as it is.
#[derive(Debug, Default, Clone)]
pub struct Table {
    /// Its columns, in order.
    pub columns: Vec<String>,
    /// The hypertable it is, if it is one.
    pub hypertable: Option<Hypertable>,
    /// Its rows, when it is a plain table (what `migrate_data` would move).
    pub rows: Option<i64>,
    /// Its native range partitioning, if it is partitioned that way.
    pub native: Option<Native>,
}

/// A table partitioned natively (`PARTITION BY RANGE (column)`).
#[derive(Debug, Default, Clone)]
pub struct Native {
    /// The partition key column.
    pub key: String,
    /// The partitions with timestamp bounds, as seconds since the epoch `[from, to)`.
    pub ranges: Vec<(String, f64, f64)>,
    /// The default partition, if any.
    pub default: Option<String>,
}

/// A hypertable's dimensions and compression settings.
#[derive(Debug, Default, Clone)]
pub struct Hypertable {
    /// The first (time) dimension's column.
    pub time_column: String,
    /// Its chunk interval in seconds (`None` for an integer time column).
    pub chunk_seconds: Option<f64>,
    /// Hash dimensions: `(column, partitions)`.
    pub space: Vec<(String, i32)>,
    /// Whether compression is enabled.
    pub compression: bool,
    /// `compress_segmentby`, in order.
    pub segment_by: Vec<String>,
    /// `compress_orderby`: `(column, descending, nulls first)`.
    pub order_by: Vec<(String, bool, bool)>,
    /// Whether it has any chunk.
    pub has_chunks: bool,
}

/// A continuous aggregate as it is.
#[derive(Debug, Default, Clone)]
pub struct Cagg {
    /// The hypertable it aggregates.
    pub hypertable: Name,
    /// TideGate's record of the definition it was created from (the view's comment).
    pub comment: Option<String>,
    /// Rows materialized (counted only where the plan would recreate it; else 0).
    pub rows: i64,
}

/// A policy job.
#[derive(Debug, Clone)]
pub struct Job {
    /// `job_id`
    pub id: i32,
    /// `policy_compression`, `policy_retention` or `policy_refresh_continuous_aggregate`.
    pub proc: String,
    /// The hypertable or continuous aggregate it works on.
    pub object: Name,
    /// `schedule_interval` in seconds.
    pub schedule_seconds: f64,
    /// `compress_after` / `drop_after` in seconds (refresh: `start_offset`).
    pub after_seconds: Option<f64>,
    /// A refresh policy's `end_offset` in seconds.
    pub end_seconds: Option<f64>,
}

/// The three policy procedures the declared state manages.
pub const COMPRESSION: &str = "policy_compression";
/// See [`COMPRESSION`].
pub const RETENTION: &str = "policy_retention";
/// See [`COMPRESSION`].
pub const REFRESH: &str = "policy_refresh_continuous_aggregate";

/// Whether the extension is installed in the connected database (its version).
pub async fn extension(conn: &mut PgConnection) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT extversion::text FROM pg_extension WHERE extname = 'timescaledb'")
        .fetch_optional(conn)
        .await
}

/// Seconds of an interval-valued text in a job's `config` (`NULL` when absent or an integer).
fn seconds(key: &str) -> String {
    format!(
        "CASE WHEN jsonb_typeof(j.config -> '{key}') = 'string' \
         THEN extract(epoch FROM (j.config ->> '{key}')::interval)::float8 END"
    )
}

/// Reads what the catalog holds for `decl`.
pub async fn read(
    conn: &mut PgConnection,
    decl: &Timescale,
    timescaledb: bool,
) -> Result<Live, sqlx::Error> {
    let mut live = Live {
        timescaledb,
        now: sqlx::query_scalar("SELECT extract(epoch FROM now())::float8")
            .fetch_one(&mut *conn)
            .await?,
        ..Live::default()
    };
    for h in &decl.hypertables {
        let Some(name) = tidegate_config::qualified(&h.table) else {
            continue;
        };
        if let Some(t) = table(conn, &name, live.timescaledb).await? {
            live.tables.insert(name, t);
        }
    }
    if !live.timescaledb {
        return Ok(live);
    }
    for row in sqlx::query(
        "SELECT c.view_schema::text, c.view_name::text, c.hypertable_schema::text, \
                c.hypertable_name::text, \
                obj_description(format('%I.%I', c.view_schema, c.view_name)::regclass, 'pg_class') \
         FROM timescaledb_information.continuous_aggregates c",
    )
    .fetch_all(&mut *conn)
    .await?
    {
        let view: Name = (row.try_get(0)?, row.try_get(1)?);
        let comment: Option<String> = row.try_get(4)?;
        // The rows matter only to an aggregate the plan would drop and recreate (a declared
        // one whose recorded definition differs): count those alone, counting is a scan.
        let recreated = decl.hypertables.iter().any(|h| {
            let table = tidegate_config::qualified(&h.table);
            h.continuous_aggregates.iter().any(|a| {
                tidegate_config::qualified(&a.name).as_ref() == Some(&view)
                    && table.as_ref().is_some_and(|t| {
                        comment.as_deref()
                            != Some(super::plan::definition_comment(h, t, a).as_str())
                    })
            })
        });
        let rows: i64 = if recreated {
            count(conn, &view).await?
        } else {
            0
        };
        live.caggs.insert(
            view,
            Cagg {
                hypertable: (row.try_get(2)?, row.try_get(3)?),
                comment,
                rows,
            },
        );
    }
    for h in &decl.hypertables {
        for a in &h.continuous_aggregates {
            let Some(name) = tidegate_config::qualified(&a.name) else {
                continue;
            };
            if live.caggs.contains_key(&name) {
                continue;
            }
            let kind: Option<String> = sqlx::query_scalar(
                "SELECT c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relname = $2",
            )
            .bind(&name.0)
            .bind(&name.1)
            .fetch_optional(&mut *conn)
            .await?;
            if let Some(kind) = kind {
                live.squatters.insert(name, kind);
            }
        }
    }
    let sql = format!(
        "SELECT j.job_id, j.proc_name::text, j.hypertable_schema::text, j.hypertable_name::text, \
                extract(epoch FROM j.schedule_interval)::float8, \
                coalesce({}, {}, {}), {} \
         FROM timescaledb_information.jobs j \
         WHERE j.proc_name IN ('{COMPRESSION}', '{RETENTION}', '{REFRESH}') ORDER BY j.job_id",
        seconds("compress_after"),
        seconds("drop_after"),
        seconds("start_offset"),
        seconds("end_offset"),
    );
    for row in sqlx::query(&sql).fetch_all(&mut *conn).await? {
        let (Some(schema), Some(name)) = (
            row.try_get::<Option<String>, _>(2)?,
            row.try_get::<Option<String>, _>(3)?,
        ) else {
            continue;
        };
        live.jobs.push(Job {
            id: row.try_get(0)?,
            proc: row.try_get(1)?,
            object: (schema, name),
            schedule_seconds: row.try_get::<Option<f64>, _>(4)?.unwrap_or(0.0),
            after_seconds: row.try_get(5)?,
            end_seconds: row.try_get(6)?,
        });
    }
    Ok(live)
}

/// One declared table's columns and hypertable settings; `None` when it does not exist.
async fn table(
    conn: &mut PgConnection,
    name: &Name,
    timescaledb: bool,
) -> Result<Option<Table>, sqlx::Error> {
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT a.attname::text FROM pg_attribute a \
         JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p') \
           AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
    )
    .bind(&name.0)
    .bind(&name.1)
    .fetch_all(&mut *conn)
    .await?;
    if columns.is_empty() {
        return Ok(None);
    }
    let native = native(conn, name).await?;
    if native.is_some() || !timescaledb {
        let rows = match native {
            Some(_) => None,
            None => Some(count(conn, name).await?),
        };
        return Ok(Some(Table {
            columns,
            hypertable: None,
            rows,
            native,
        }));
    }
    let dims = sqlx::query(
        "SELECT column_name::text, dimension_type::text, \
                extract(epoch FROM time_interval)::float8, num_partitions::int4 \
         FROM timescaledb_information.dimensions \
         WHERE hypertable_schema = $1 AND hypertable_name = $2 ORDER BY dimension_number",
    )
    .bind(&name.0)
    .bind(&name.1)
    .fetch_all(&mut *conn)
    .await?;
    if dims.is_empty() {
        return Ok(Some(Table {
            columns,
            hypertable: None,
            rows: Some(count(conn, name).await?),
            native: None,
        }));
    }
    let mut h = Hypertable::default();
    for (i, d) in dims.iter().enumerate() {
        let column: String = d.try_get(0)?;
        if i == 0 {
            h.time_column = column;
            h.chunk_seconds = d.try_get(2)?;
        } else if d.try_get::<String, _>(1)? == "Space" {
            h.space
                .push((column, d.try_get::<Option<i32>, _>(3)?.unwrap_or(0)));
        }
    }
    let row = sqlx::query(
        "SELECT compression_enabled, \
                EXISTS (SELECT 1 FROM timescaledb_information.chunks k \
                        WHERE k.hypertable_schema = $1 AND k.hypertable_name = $2) \
         FROM timescaledb_information.hypertables \
         WHERE hypertable_schema = $1 AND hypertable_name = $2",
    )
    .bind(&name.0)
    .bind(&name.1)
    .fetch_one(&mut *conn)
    .await?;
    h.compression = row.try_get(0)?;
    h.has_chunks = row.try_get(1)?;
    for s in sqlx::query(
        "SELECT attname::text, segmentby_column_index, orderby_column_index, orderby_asc, \
                orderby_nullsfirst \
         FROM timescaledb_information.compression_settings \
         WHERE hypertable_schema = $1 AND hypertable_name = $2 \
         ORDER BY segmentby_column_index NULLS LAST, orderby_column_index NULLS LAST",
    )
    .bind(&name.0)
    .bind(&name.1)
    .fetch_all(&mut *conn)
    .await?
    {
        let col: String = s.try_get(0)?;
        if s.try_get::<Option<i16>, _>(1)?.is_some() {
            h.segment_by.push(col);
        } else if s.try_get::<Option<i16>, _>(2)?.is_some() {
            let asc: bool = s.try_get::<Option<bool>, _>(3)?.unwrap_or(true);
            let nulls_first: bool = s.try_get::<Option<bool>, _>(4)?.unwrap_or(!asc);
            h.order_by.push((col, !asc, nulls_first));
        }
    }
    Ok(Some(Table {
        columns,
        hypertable: Some(h),
        rows: None,
        native: None,
    }))
}

/// The rows of the relation `name`.
pub async fn count(conn: &mut PgConnection, name: &Name) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {}.{}",
        quote(&name.0),
        quote(&name.1)
    ))
    .fetch_one(conn)
    .await
}

/// The native range partitioning of `name` on one column, if so.
async fn native(conn: &mut PgConnection, name: &Name) -> Result<Option<Native>, sqlx::Error> {
    let key: Option<String> = sqlx::query_scalar(
        "SELECT a.attname::text FROM pg_partitioned_table pt \
         JOIN pg_class c ON c.oid = pt.partrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
         JOIN pg_attribute a ON a.attrelid = pt.partrelid AND a.attnum = pt.partattrs[0] \
         WHERE n.nspname = $1 AND c.relname = $2 AND pt.partstrat = 'r' AND pt.partnatts = 1",
    )
    .bind(&name.0)
    .bind(&name.1)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(key) = key else {
        return Ok(None);
    };
    let mut native = Native {
        key,
        ..Native::default()
    };
    // Bounds written `FROM ('…') TO ('…')`; MINVALUE/MAXVALUE bounds are left out (they
    // match nothing here, and the plan does not add partitions over them).
    for row in sqlx::query(
        "SELECT p.relname::text, b = 'DEFAULT', \
                extract(epoch FROM (m[1])::timestamptz)::float8, \
                extract(epoch FROM (m[2])::timestamptz)::float8 \
         FROM pg_inherits i \
         JOIN pg_class p ON p.oid = i.inhrelid \
         JOIN pg_class c ON c.oid = i.inhparent JOIN pg_namespace n ON n.oid = c.relnamespace, \
         LATERAL (SELECT pg_get_expr(p.relpartbound, p.oid) AS b) e, \
         LATERAL (SELECT regexp_match(e.b, 'FROM \\(''([^'']*)''\\) TO \\(''([^'']*)''\\)') AS m) r \
         WHERE n.nspname = $1 AND c.relname = $2 ORDER BY 3",
    )
    .bind(&name.0)
    .bind(&name.1)
    .fetch_all(&mut *conn)
    .await?
    {
        let part: String = row.try_get(0)?;
        if row.try_get::<Option<bool>, _>(1)?.unwrap_or(false) {
            native.default = Some(part);
        } else if let (Some(from), Some(to)) = (
            row.try_get::<Option<f64>, _>(2)?,
            row.try_get::<Option<f64>, _>(3)?,
        ) {
            native.ranges.push((part, from, to));
        }
    }
    Ok(Some(native))
}
