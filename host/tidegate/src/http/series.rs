//! The time-series API's reads — `GET /v1/series/{table}` (range), `…/aggregate` and
//! `…/latest` — and the registry of series tables and table shapes they and the repository
//! check names against.
//!
//! Names from a URL never reach SQL unchecked: a table must exist in `pg_catalog` (and, for
//! the series endpoints, be registered in `tidegate.series_tables`), a column must be one of
//! its columns, and both are double-quoted. Every value is a bind parameter.

use super::error::ApiError;
use super::sql::{self, Format, Stmt};
use super::{HttpState, Who};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tidegate_sql::quote_ident;

/// How long a table's shape is trusted before it is read again.
const SHAPE_TTL: Duration = Duration::from_secs(5);
/// The most rows per series `latest` returns.
const MAX_LATEST: u32 = 10_000;

/// A table's shape, from the catalog.
#[derive(Debug)]
pub struct TableInfo {
    /// Schema.
    pub schema: String,
    /// Name.
    pub name: String,
    /// Columns and their types (`format_type`), in order.
    pub columns: Vec<(String, String)>,
    /// Primary key columns.
    pub primary_key: Vec<String>,
    /// The series registration, if any.
    pub series: Option<SeriesInfo>,
    /// TimescaleDB is installed in the database.
    pub timescaledb: bool,
}

/// A series table's registration.
#[derive(Debug)]
pub struct SeriesInfo {
    /// Time column.
    pub time: String,
    /// Series id column.
    pub series: String,
    /// Value columns.
    pub values: Vec<String>,
    /// Metadata (jsonb) column.
    pub metadata: Option<String>,
}

impl TableInfo {
    /// `"schema"."table"`.
    pub fn qualified(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }

    /// The column's type, if the table has it.
    pub fn column_type(&self, name: &str) -> Option<&str> {
        self.columns
            .iter()
            .find(|(c, _)| c == name)
            .map(|(_, t)| t.as_str())
    }

    /// The registration, or 404 for a table that is not a series table.
    pub fn series(&self) -> Result<&SeriesInfo, ApiError> {
        self.series.as_ref().ok_or_else(|| {
            ApiError::not_found(&format!(
                "{} is not a registered series table (tidegate.series_tables)",
                self.name
            ))
        })
    }
}

impl SeriesInfo {
    /// The registered columns: time, series, values, metadata.
    pub fn columns(&self) -> Vec<&str> {
        let mut c = vec![self.time.as_str(), self.series.as_str()];
        c.extend(self.values.iter().map(String::as_str));
        c.extend(self.metadata.as_deref());
        c
    }
}

/// (database, schema, table).
type ShapeKey = (String, String, String);
/// When a shape was read, and the shape (`None`: no such table).
type Shape = (Instant, Option<Arc<TableInfo>>);

/// Table shapes, per database, cached for a few seconds.
pub struct Registry {
    shapes: Mutex<HashMap<ShapeKey, Shape>>,
    pools: crate::upstream::own_db::DbPools,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            shapes: Mutex::default(),
            pools: crate::upstream::own_db::DbPools::new("tidegate-http-catalog", 2),
        }
    }
}

/// Splits a URL table name (`table` or `schema.table`) and checks its parts.
pub fn table_name(raw: &str) -> Result<(String, String), ApiError> {
    let (schema, name) = match raw.split_once('.') {
        Some((s, n)) => (s, n),
        None => ("public", raw),
    };
    for part in [schema, name] {
        if part.is_empty() || part.contains('\0') {
            return Err(ApiError::bad_request("malformed table name"));
        }
        if part.len() > 63 {
            return Err(ApiError::bad_request(
                "a name is longer than 63 bytes (PostgreSQL's NAMEDATALEN-1)",
            ));
        }
    }
    Ok((schema.to_owned(), name.to_owned()))
}

const SHAPE_SQL: &str = "SELECT n.nspname::text, c.relname::text,
    (SELECT json_agg(json_build_array(a.attname, format_type(a.atttypid, a.atttypmod)) ORDER BY a.attnum)
       FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)::text,
    (SELECT json_agg(a.attname ORDER BY array_position(i.indkey::int2[], a.attnum))
       FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
      WHERE i.indrelid = c.oid AND i.indisprimary)::text,
    EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'),
    to_regclass('tidegate.series_tables') IS NOT NULL
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relname = $1 AND n.nspname = $2 AND c.relkind IN ('r', 'p', 'v', 'm', 'f')";

const SERIES_SQL: &str = "SELECT time_column, series_column, value_columns, metadata_column
  FROM tidegate.series_tables WHERE table_schema = $1 AND table_name = $2";

impl Registry {
    /// The shape of `raw` in `database`, or 404.
    pub async fn table(
        &self,
        sh: &crate::client::shared::Shared,
        database: &str,
        raw: &str,
    ) -> Result<Arc<TableInfo>, ApiError> {
        let (schema, name) = table_name(raw)?;
        let key = (database.to_owned(), schema.clone(), name.clone());
        let cached = self
            .shapes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .filter(|(at, _)| at.elapsed() < SHAPE_TTL)
            .map(|(_, t)| t.clone());
        let info = match cached {
            Some(t) => t,
            None => {
                let t = self.load(sh, database, &schema, &name).await?.map(Arc::new);
                self.shapes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(key, (Instant::now(), t.clone()));
                t
            }
        };
        info.ok_or_else(|| ApiError::not_found(&format!("no table {raw:?}")))
    }

    async fn load(
        &self,
        sh: &crate::client::shared::Shared,
        database: &str,
        schema: &str,
        name: &str,
    ) -> Result<Option<TableInfo>, ApiError> {
        let pool = self.pools.get(&sh.config(), database);
        let unavailable = |e: sqlx::Error| match e {
            sqlx::Error::Database(d) if d.code().as_deref() == Some("3D000") => {
                ApiError::not_found("no such database")
            }
            e => ApiError::unavailable(&format!("catalog lookup: {e}")),
        };
        type Row = (String, String, Option<String>, Option<String>, bool, bool);
        let row: Option<Row> = sqlx::query_as(SHAPE_SQL)
            .bind(name)
            .bind(schema)
            .fetch_optional(&pool)
            .await
            .map_err(unavailable)?;
        let Some((schema, name, cols, pk, timescaledb, registry)) = row else {
            return Ok(None);
        };
        let columns: Vec<(String, String)> = cols
            .and_then(|c| serde_json::from_str(&c).ok())
            .unwrap_or_default();
        let primary_key: Vec<String> = pk
            .and_then(|c| serde_json::from_str(&c).ok())
            .unwrap_or_default();
        let series = if registry {
            let row: Option<(String, String, Vec<String>, Option<String>)> =
                sqlx::query_as(SERIES_SQL)
                    .bind(&schema)
                    .bind(&name)
                    .fetch_optional(&pool)
                    .await
                    .map_err(unavailable)?;
            row.map(|(time, series, values, metadata)| SeriesInfo {
                time,
                series,
                values,
                metadata,
            })
        } else {
            None
        };
        let info = TableInfo {
            schema,
            name,
            columns,
            primary_key,
            series,
            timescaledb,
        };
        if let Some(s) = &info.series {
            for c in s.columns() {
                if info.column_type(c).is_none() {
                    return Err(ApiError::unprocessable(&format!(
                        "series table {} is registered with column {c:?}, which it does not have",
                        info.name
                    )));
                }
            }
        }
        Ok(Some(info))
    }
}

pub(super) fn routes() -> Router<Arc<HttpState>> {
    Router::new()
        .route("/v1/series/{table}", get(range))
        .route("/v1/series/{table}/aggregate", get(aggregate))
        .route("/v1/series/{table}/latest", get(latest))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RangeQuery {
    from: Option<String>,
    to: Option<String>,
    series_id: Option<String>,
    limit: Option<u64>,
    order: Option<String>,
}

/// `series_id=1,2,3` as an array literal parameter.
fn series_param(ids: &str) -> Result<String, ApiError> {
    let ids: Vec<&str> = ids.split(',').map(str::trim).collect();
    if ids.iter().any(|i| i.is_empty()) {
        return Err(ApiError::bad_request("series_id: an empty id"));
    }
    Ok(super::values::param_text(&serde_json::Value::from(ids)).unwrap_or_default())
}

async fn setup(
    st: &HttpState,
    headers: &HeaderMap,
    table: &str,
) -> Result<(Who, Arc<TableInfo>), ApiError> {
    let who = st.who(headers).await?;
    let info = st.catalog.table(&st.sh, &who.database, table).await?;
    info.series()?;
    Ok((who, info))
}

/// get_range: the points in `[from, to)`, oldest first (or `order=desc`), streamed on request.
async fn range(
    State(st): State<Arc<HttpState>>,
    Path(table): Path<String>,
    headers: HeaderMap,
    Query(q): Query<RangeQuery>,
) -> Result<Response, ApiError> {
    let (who, info) = setup(&st, &headers, &table).await?;
    let stmt = range_sql(&info, &q)?;
    Ok(sql::run(st, who, stmt, Format::from_headers(&headers)).await)
}

fn range_sql(info: &TableInfo, q: &RangeQuery) -> Result<Stmt, ApiError> {
    let s = info.series()?;
    let (t, sid) = (quote_ident(&s.time), quote_ident(&s.series));
    let cols: Vec<String> = s.columns().into_iter().map(quote_ident).collect();
    let dir = match q.order.as_deref() {
        None | Some("asc") => "ASC",
        Some("desc") => "DESC",
        Some(_) => return Err(ApiError::bad_request("order must be asc or desc")),
    };
    let mut params = vec![
        Some(q.from.clone().unwrap_or_else(|| "-infinity".into())),
        Some(q.to.clone().unwrap_or_else(|| "infinity".into())),
    ];
    let mut sql = format!(
        "SELECT {} FROM {} WHERE {t} >= $1::timestamptz AND {t} < $2::timestamptz",
        cols.join(", "),
        info.qualified()
    );
    if let Some(ids) = &q.series_id {
        params.push(Some(series_param(ids)?));
        sql.push_str(&format!(" AND {sid} = ANY (${})", params.len()));
    }
    sql.push_str(&format!(" ORDER BY {t} {dir}, {sid}"));
    if let Some(limit) = q.limit {
        params.push(Some(limit.to_string()));
        sql.push_str(&format!(" LIMIT ${}::bigint", params.len()));
    }
    Ok(Stmt { sql, params })
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AggQuery {
    from: Option<String>,
    to: Option<String>,
    interval: Option<String>,
    agg: Option<String>,
    series_id: Option<String>,
    fill: Option<bool>,
}

/// get_aggregated: per series and `interval` bucket, the requested aggregates of value columns.
async fn aggregate(
    State(st): State<Arc<HttpState>>,
    Path(table): Path<String>,
    headers: HeaderMap,
    Query(q): Query<AggQuery>,
) -> Result<Response, ApiError> {
    let (who, info) = setup(&st, &headers, &table).await?;
    let stmt = aggregate_sql(&info, &q)?;
    Ok(sql::run(st, who, stmt, Format::from_headers(&headers)).await)
}

const AGGREGATES: &[&str] = &[
    "avg", "min", "max", "sum", "count", "stddev", "variance", "first", "last",
];

fn aggregate_sql(info: &TableInfo, q: &AggQuery) -> Result<Stmt, ApiError> {
    let s = info.series()?;
    let (t, sid) = (quote_ident(&s.time), quote_ident(&s.series));
    let (Some(from), Some(to)) = (&q.from, &q.to) else {
        return Err(ApiError::bad_request("aggregate needs from and to"));
    };
    let interval = q.interval.as_deref().unwrap_or("1h");
    let ms = tidegate_config::parse_duration(interval)
        .map_err(|e| ApiError::bad_request(&format!("interval: {e}")))?
        .0;
    if ms == 0 {
        return Err(ApiError::bad_request("interval must be positive"));
    }
    let default_agg = format!("{}:avg", s.values.first().map_or("value", String::as_str));
    let mut selects = Vec::new();
    for spec in q.agg.as_deref().unwrap_or(&default_agg).split(',') {
        let (col, func) = spec
            .rsplit_once(':')
            .ok_or_else(|| ApiError::bad_request("agg is column:function[,column:function…]"))?;
        if !s.values.iter().any(|v| v == col) {
            return Err(ApiError::bad_request(&format!(
                "agg: {col:?} is not a value column of this series table"
            )));
        }
        if !AGGREGATES.contains(&func) {
            return Err(ApiError::bad_request(&format!(
                "agg: {func:?} is not one of {}",
                AGGREGATES.join(", ")
            )));
        }
        let c = quote_ident(col);
        let expr = match (func, info.timescaledb) {
            ("first", true) => format!("first({c}, {t})"),
            ("last", true) => format!("last({c}, {t})"),
            ("first", false) => format!("(array_agg({c} ORDER BY {t}))[1]"),
            ("last", false) => format!("(array_agg({c} ORDER BY {t} DESC))[1]"),
            (f, _) => format!("{f}({c})"),
        };
        selects.push((expr, quote_ident(&format!("{col}_{func}"))));
    }
    let bucket = |time: &str| {
        if info.timescaledb {
            format!("time_bucket($3::interval, {time})")
        } else {
            format!("date_bin($3::interval, {time}, TIMESTAMPTZ '2000-01-03 00:00:00+00')")
        }
    };
    let mut params = vec![
        Some(from.clone()),
        Some(to.clone()),
        Some(format!("{ms} milliseconds")),
    ];
    let mut filter = format!("{t} >= $1::timestamptz AND {t} < $2::timestamptz");
    if let Some(ids) = &q.series_id {
        params.push(Some(series_param(ids)?));
        filter.push_str(&format!(" AND {sid} = ANY (${})", params.len()));
    }
    let aggs: Vec<String> = selects.iter().map(|(e, n)| format!("{e} AS {n}")).collect();
    let inner = format!(
        "SELECT {} AS bucket, {sid} AS {sid}, {} FROM {} WHERE {filter} GROUP BY 1, 2",
        bucket(&t),
        aggs.join(", "),
        info.qualified()
    );
    let sql = if q.fill.unwrap_or(false) {
        let names: Vec<String> = selects.iter().map(|(_, n)| format!("a.{n}")).collect();
        format!(
            "WITH a AS ({inner}), \
             b AS (SELECT generate_series({}, $2::timestamptz - interval '1 microsecond', $3::interval) AS bucket), \
             s AS (SELECT DISTINCT {sid} FROM a) \
             SELECT b.bucket, s.{sid}, {} FROM b CROSS JOIN s \
             LEFT JOIN a ON a.bucket = b.bucket AND a.{sid} = s.{sid} ORDER BY 1, 2",
            bucket("$1::timestamptz"),
            names.join(", ")
        )
    } else {
        format!("{inner} ORDER BY 1, 2")
    };
    Ok(Stmt { sql, params })
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LatestQuery {
    series_id: Option<String>,
    limit: Option<u32>,
}

/// get_latest, as the seed's: without `series_id` the newest `limit` points over all series
/// (`ORDER BY time DESC LIMIT n`: on TimescaleDB an ordered append that reads the newest chunks
/// only); with `series_id` the newest `limit` points of each series named, one index probe on
/// `(series, time DESC)` per series. Both read a bounded number of rows, which the optimizer's
/// unbounded-scan guard recognizes.
async fn latest(
    State(st): State<Arc<HttpState>>,
    Path(table): Path<String>,
    headers: HeaderMap,
    Query(q): Query<LatestQuery>,
) -> Result<Response, ApiError> {
    let (who, info) = setup(&st, &headers, &table).await?;
    let stmt = latest_sql(&info, &q)?;
    Ok(sql::run(st, who, stmt, Format::from_headers(&headers)).await)
}

fn latest_sql(info: &TableInfo, q: &LatestQuery) -> Result<Stmt, ApiError> {
    let s = info.series()?;
    let (t, sid) = (quote_ident(&s.time), quote_ident(&s.series));
    let limit = q.limit.unwrap_or(1);
    if limit == 0 || limit > MAX_LATEST {
        return Err(ApiError::bad_request(&format!(
            "limit must be 1 to {MAX_LATEST}"
        )));
    }
    let cols: Vec<String> = s
        .columns()
        .into_iter()
        .map(|c| format!("p.{}", quote_ident(c)))
        .collect();
    let table = info.qualified();
    let Some(ids) = &q.series_id else {
        return Ok(Stmt {
            sql: format!(
                "SELECT {} FROM {table} p ORDER BY p.{t} DESC, p.{sid} LIMIT $1::integer",
                cols.join(", ")
            ),
            params: vec![Some(limit.to_string())],
        });
    };
    let ty = info.column_type(&s.series).unwrap_or("text");
    let sql = format!(
        "SELECT {} FROM (SELECT DISTINCT unnest($2::{ty}[]) AS id) ids \
         CROSS JOIN LATERAL (SELECT * FROM {table} x WHERE x.{sid} = ids.id \
           ORDER BY x.{t} DESC LIMIT $1::integer) p \
         ORDER BY p.{sid}, p.{t} DESC",
        cols.join(", ")
    );
    let params = vec![Some(limit.to_string()), Some(series_param(ids)?)];
    Ok(Stmt { sql, params })
}

#[cfg(test)]
#[path = "series_tests.rs"]
mod tests;
