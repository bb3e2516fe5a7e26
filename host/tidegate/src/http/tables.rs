//! The seed's Repository over HTTP, for any table with a one-column primary key:
//! `POST /v1/tables/{table}/rows` (add), `GET|PUT|DELETE /v1/tables/{table}/rows/{id}` (get,
//! update, delete). Rows are JSON objects keyed by column name; keys are checked against the
//! catalog and quoted, values are bind parameters.

use super::error::ApiError;
use super::series::TableInfo;
use super::sql::{json_response, write_object, Stmt};
use super::values::{self, ColumnConv};
use super::wire::{Column, DbError, Event};
use super::{HttpState, Who};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;
use tidegate_sql::quote_ident;

pub(super) fn routes() -> Router<Arc<HttpState>> {
    Router::new()
        .route("/v1/tables/{table}/rows", post(add))
        .route(
            "/v1/tables/{table}/rows/{id}",
            get(fetch).put(update).delete(remove),
        )
}

async fn setup(
    st: &HttpState,
    headers: &HeaderMap,
    table: &str,
) -> Result<(Who, Arc<TableInfo>, String), ApiError> {
    let who = st.who(headers).await?;
    let info = st.catalog.table(&st.sh, &who.database, table).await?;
    let key = match info.primary_key.as_slice() {
        [one] => one.clone(),
        [] => {
            return Err(ApiError::unprocessable(&format!(
                "{} has no primary key",
                info.name
            )))
        }
        _ => {
            return Err(ApiError::unprocessable(&format!(
                "{} has a composite primary key: use /v1/sql",
                info.name
            )))
        }
    };
    Ok((who, info, key))
}

/// The body's columns (checked) and their values as text parameters.
async fn row_body(
    st: &HttpState,
    headers: &HeaderMap,
    body: Body,
    info: &TableInfo,
) -> Result<(Vec<String>, Vec<Option<String>>), ApiError> {
    let bytes = super::read_body(st, headers, body).await?;
    let obj: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(&format!("expected a JSON object: {e}")))?;
    if obj.is_empty() {
        return Err(ApiError::bad_request("the row has no columns"));
    }
    let mut cols = Vec::with_capacity(obj.len());
    let mut params = Vec::with_capacity(obj.len());
    for (k, v) in &obj {
        if info.column_type(k).is_none() {
            return Err(ApiError::unprocessable(&format!(
                "{} has no column {k:?}",
                info.name
            )));
        }
        cols.push(quote_ident(k));
        params.push(values::param_text(v));
    }
    Ok((cols, params))
}

/// Runs `stmt` and returns the first row as a JSON object (`None` when there is none).
async fn one_row(
    st: &HttpState,
    who: &Who,
    stmt: Stmt,
) -> Result<(Option<Vec<u8>>, u64), ApiError> {
    let mut conn = st.conn(who).await?;
    let result = tokio::time::timeout(st.request_timeout(), async {
        conn.start(&stmt.sql, &stmt.params).await?;
        let (mut cols, mut convs) = (Vec::<Column>::new(), Vec::<ColumnConv>::new());
        let (mut first, mut count, mut failed) = (None, 0u64, None::<DbError>);
        loop {
            match conn.next().await? {
                Event::Columns(c) => {
                    convs = c.iter().map(|c| values::conv_for(c.type_oid)).collect();
                    cols = c;
                }
                Event::Row(r) if first.is_none() => {
                    let mut out = Vec::with_capacity(256);
                    write_object(&mut out, &cols, &convs, &r);
                    first = Some(out);
                }
                Event::Done(tag) => count = super::sql::split_tag(&tag, 0).1,
                Event::Failed(e) => {
                    failed.get_or_insert(e);
                }
                Event::Ready => break,
                _ => {}
            }
        }
        match failed {
            Some(e) => Err(ApiError::from_db(&e)),
            None => Ok((first, count)),
        }
    })
    .await
    .map_err(|_| ApiError::timeout())?;
    st.conns.put(conn);
    result
}

/// `<verb> "schema"."table" WHERE "key" = $1` with the id as its parameter.
fn by_key(verb: &str, info: &TableInfo, key: &str, id: String) -> Stmt {
    Stmt {
        sql: format!(
            "{verb} {} WHERE {} = $1",
            info.qualified(),
            quote_ident(key)
        ),
        params: vec![Some(id)],
    }
}

fn not_found(info: &TableInfo) -> ApiError {
    ApiError::not_found(&format!("no such row in {}", info.name))
}

async fn add(
    State(st): State<Arc<HttpState>>,
    Path(table): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    super::body_type(&headers, &["application/json"])?;
    let (who, info, _) = setup(&st, &headers, &table).await?;
    let (cols, params) = row_body(&st, &headers, body, &info).await?;
    let placeholders: Vec<String> = (1..=params.len()).map(|i| format!("${i}")).collect();
    let stmt = Stmt {
        sql: format!(
            "INSERT INTO {} ({}) VALUES ({}) RETURNING *",
            info.qualified(),
            cols.join(", "),
            placeholders.join(", ")
        ),
        params,
    };
    match one_row(&st, &who, stmt).await? {
        (Some(row), _) => Ok(json_response(StatusCode::CREATED, row)),
        (None, _) => Err(ApiError::internal("INSERT … RETURNING returned no row")),
    }
}

async fn fetch(
    State(st): State<Arc<HttpState>>,
    Path((table, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (who, info, key) = setup(&st, &headers, &table).await?;
    let stmt = by_key("SELECT * FROM", &info, &key, id);
    match one_row(&st, &who, stmt).await? {
        (Some(row), _) => Ok(json_response(StatusCode::OK, row)),
        (None, _) => Err(not_found(&info)),
    }
}

async fn update(
    State(st): State<Arc<HttpState>>,
    Path((table, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    super::body_type(&headers, &["application/json"])?;
    let (who, info, key) = setup(&st, &headers, &table).await?;
    let (cols, mut params) = row_body(&st, &headers, body, &info).await?;
    let sets: Vec<String> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{c} = ${}", i + 1))
        .collect();
    params.push(Some(id));
    let stmt = Stmt {
        sql: format!(
            "UPDATE {} SET {} WHERE {} = ${} RETURNING *",
            info.qualified(),
            sets.join(", "),
            quote_ident(&key),
            params.len()
        ),
        params,
    };
    match one_row(&st, &who, stmt).await? {
        (Some(row), _) => Ok(json_response(StatusCode::OK, row)),
        (None, _) => Err(not_found(&info)),
    }
}

async fn remove(
    State(st): State<Arc<HttpState>>,
    Path((table, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (who, info, key) = setup(&st, &headers, &table).await?;
    let stmt = by_key("DELETE FROM", &info, &key, id);
    match one_row(&st, &who, stmt).await? {
        (_, 0) => Err(not_found(&info)),
        _ => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}
