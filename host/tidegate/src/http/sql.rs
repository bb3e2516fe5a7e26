//! `POST /v1/sql` and `GET /v1/sql`, and the result writer every read endpoint shares: one
//! JSON document (`{columns, rows, command, row_count}`), or rows streamed as NDJSON or CSV.

use super::error::ApiError;
use super::values::{self, ColumnConv};
use super::wire::{Column, Conn, DbError, Event, Row};
use super::{HttpState, Who};
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use serde::Deserialize;
use std::sync::Arc;

/// How results are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON document, built whole (bounded by `http.max_response_bytes`).
    Json,
    /// A line with the columns, a JSON array per row, then a line with the outcome.
    Ndjson,
    /// A header line, then one line per row (RFC 4180).
    Csv,
}

impl Format {
    /// The format the `Accept` header asks for (JSON by default).
    pub fn from_headers(headers: &HeaderMap) -> Format {
        let accept = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if accept.contains("application/x-ndjson") {
            Format::Ndjson
        } else if accept.contains("text/csv") {
            Format::Csv
        } else {
            Format::Json
        }
    }
}

/// A statement and its parameters in text form.
pub struct Stmt {
    /// SQL with `$n` placeholders.
    pub sql: String,
    /// Parameters (`None` = NULL).
    pub params: Vec<Option<String>>,
}

const STREAM_CHUNK: usize = 32 * 1024;
const COPY_REFUSED: &str = "COPY FROM STDIN is not available here: use /v1/series/{table}/points";

pub(super) fn routes() -> Router<Arc<HttpState>> {
    Router::new().route("/v1/sql", get(sql_get).post(sql_post))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlBody {
    sql: String,
    #[serde(default)]
    params: Vec<serde_json::Value>,
}

async fn sql_post(
    State(st): State<Arc<HttpState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    super::body_type(&headers, &["application/json"])?;
    let who = st.who(&headers).await?;
    let bytes = super::read_body(&st, &headers, body).await?;
    let req: SqlBody = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(&format!("expected {{\"sql\", \"params\"}}: {e}")))?;
    let stmt = Stmt {
        sql: req.sql,
        params: req.params.iter().map(values::param_text).collect(),
    };
    Ok(run(st, who, stmt, Format::from_headers(&headers)).await)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlQuery {
    sql: String,
    /// A JSON array.
    params: Option<String>,
}

/// GET runs only statements the classifier proves read-only.
async fn sql_get(
    State(st): State<Arc<HttpState>>,
    headers: HeaderMap,
    Query(q): Query<SqlQuery>,
) -> Result<Response, ApiError> {
    let who = st.who(&headers).await?;
    let params: Vec<serde_json::Value> = match &q.params {
        Some(p) => serde_json::from_str(p)
            .map_err(|e| ApiError::bad_request(&format!("params must be a JSON array: {e}")))?,
        None => Vec::new(),
    };
    let topo = st.sh.topology();
    let catalog = topo
        .catalogs
        .get(&who.database)
        .unwrap_or_else(|| topo.catalogs.partial());
    let c = catalog.classes.classify(&q.sql, &catalog.lookup);
    if !c.read_only || c.statements != 1 {
        return Err(ApiError::read_only(
            "GET runs only one provably read-only statement: use POST",
        ));
    }
    let stmt = Stmt {
        sql: q.sql,
        params: params.iter().map(values::param_text).collect(),
    };
    Ok(run(st, who, stmt, Format::from_headers(&headers)).await)
}

/// Runs `stmt` as `who` and answers in `format`.
pub async fn run(st: Arc<HttpState>, who: Who, stmt: Stmt, format: Format) -> Response {
    let result = match format {
        Format::Json => json_reply(&st, &who, &stmt).await,
        Format::Ndjson | Format::Csv => stream_reply(st, who, stmt, format).await,
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn json_reply(st: &HttpState, who: &Who, stmt: &Stmt) -> Result<Response, ApiError> {
    let mut conn = st.conn(who).await?;
    let max = st.sh.config().http.max_response_bytes;
    let body = tokio::time::timeout(st.request_timeout(), json_table(&mut conn, stmt, max))
        .await
        .map_err(|_| ApiError::timeout())?;
    // After a statement error the session is ready again: keep it.
    st.conns.put(conn);
    Ok(json_response(StatusCode::OK, body?))
}

/// A JSON body as a response.
pub fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Runs `stmt` and builds `{columns, rows, command, row_count}`.
async fn json_table(conn: &mut Conn, stmt: &Stmt, max: usize) -> Result<Vec<u8>, ApiError> {
    conn.start(&stmt.sql, &stmt.params).await?;
    let mut out = Vec::with_capacity(512);
    let mut convs: Vec<ColumnConv> = Vec::new();
    let (mut rows, mut tag, mut failed) = (0u64, String::new(), None::<DbError>);
    out.extend_from_slice(b"{\"columns\":[],\"rows\":[");
    loop {
        match conn.next().await? {
            Event::Columns(cols) => {
                out.clear();
                out.extend_from_slice(b"{\"columns\":");
                write_columns(&mut out, &cols);
                out.extend_from_slice(b",\"rows\":[");
                convs = cols.iter().map(|c| values::conv_for(c.type_oid)).collect();
            }
            Event::Row(r) => {
                if rows > 0 {
                    out.push(b',');
                }
                write_row(&mut out, &convs, &r);
                rows += 1;
                if out.len() > max {
                    conn.abandon();
                    return Err(ApiError::too_large(&format!(
                        "the result is over {max} bytes: ask for application/x-ndjson or text/csv, which stream"
                    )));
                }
            }
            Event::Done(t) => tag = t,
            Event::Failed(e) => {
                failed.get_or_insert(e);
            }
            Event::CopyIn => conn.copy_end(Some(COPY_REFUSED)).await?,
            Event::Ready => break,
        }
    }
    if let Some(e) = failed {
        return Err(ApiError::from_db(&e));
    }
    out.extend_from_slice(b"],");
    write_outcome(&mut out, &tag, rows);
    out.push(b'}');
    Ok(out)
}

/// `"command":…,"row_count":…` from a command tag (`INSERT 0 5` → INSERT, 5).
fn write_outcome(out: &mut Vec<u8>, tag: &str, rows: u64) {
    let (command, count) = split_tag(tag, rows);
    out.extend_from_slice(b"\"command\":");
    values::write_str(out, command);
    out.extend_from_slice(b",\"row_count\":");
    out.extend_from_slice(count.to_string().as_bytes());
}

/// A command tag's name and row count (`rows` when it has none).
pub fn split_tag(tag: &str, rows: u64) -> (&str, u64) {
    match tag.rsplit_once(' ') {
        Some((head, n)) if n.bytes().all(|b| b.is_ascii_digit()) && !n.is_empty() => {
            let command = head.split(' ').next().unwrap_or(head);
            (command, n.parse().unwrap_or(rows))
        }
        _ => (tag, rows),
    }
}

fn write_columns(out: &mut Vec<u8>, cols: &[Column]) {
    out.push(b'[');
    for (i, c) in cols.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"name\":");
        values::write_str(out, &c.name);
        out.extend_from_slice(b",\"type\":");
        match values::type_name(c.type_oid) {
            Some(t) => values::write_str(out, &t),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"type_oid\":");
        out.extend_from_slice(c.type_oid.to_string().as_bytes());
        out.push(b'}');
    }
    out.push(b']');
}

/// Appends a row as a JSON array.
pub fn write_row(out: &mut Vec<u8>, convs: &[ColumnConv], row: &Row) {
    out.push(b'[');
    for (i, v) in row.values().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let conv = convs.get(i).copied().unwrap_or(values::conv_for(0));
        values::write_json(out, conv, v);
    }
    out.push(b']');
}

/// Appends a row as a JSON object keyed by column name.
pub fn write_object(out: &mut Vec<u8>, cols: &[Column], convs: &[ColumnConv], row: &Row) {
    out.push(b'{');
    for (i, v) in row.values().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let name = cols.get(i).map_or("?", |c| c.name.as_str());
        values::write_str(out, name);
        out.push(b':');
        let conv = convs.get(i).copied().unwrap_or(values::conv_for(0));
        values::write_json(out, conv, v);
    }
    out.push(b'}');
}

type Chunk = Result<Bytes, std::io::Error>;

/// Streams the result. The reply's status waits for the statement's first answer, so an
/// error before any row (syntax, permission, unknown table) gets its proper status; an error
/// after rows have gone out ends an NDJSON stream with an `{"error": …}` line and aborts a CSV
/// one (the client sees a broken transfer, never a silently short result).
async fn stream_reply(
    st: Arc<HttpState>,
    who: Who,
    stmt: Stmt,
    format: Format,
) -> Result<Response, ApiError> {
    let mut conn = st.conn(&who).await?;
    let deadline = tokio::time::Instant::now() + st.request_timeout();
    conn.start(&stmt.sql, &stmt.params).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Chunk>(4);
    let (head_tx, head_rx) = tokio::sync::oneshot::channel::<Result<(), ApiError>>();
    let task_st = st.clone();
    tokio::spawn(async move {
        let outcome =
            tokio::time::timeout_at(deadline, pump(&mut conn, format, tx.clone(), head_tx)).await;
        match outcome {
            Ok(Ok(())) => task_st.conns.put(conn),
            Ok(Err(_)) => {}
            Err(_) => {
                let _ = tx.send(Err(std::io::Error::other("request timeout"))).await;
            }
        }
    });
    match head_rx.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(ApiError::timeout()),
    }
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    let mut r = Response::new(Body::from_stream(stream));
    let ctype = match format {
        Format::Csv => "text/csv; charset=utf-8",
        _ => "application/x-ndjson",
    };
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    Ok(r)
}

/// Moves the statement's result into `tx`; `Err` when the session must not be reused.
async fn pump(
    conn: &mut Conn,
    format: Format,
    tx: tokio::sync::mpsc::Sender<Chunk>,
    head: tokio::sync::oneshot::Sender<Result<(), ApiError>>,
) -> Result<(), ()> {
    let mut head = Some(head);
    let mut out = Vec::with_capacity(STREAM_CHUNK + 1024);
    let mut convs: Vec<ColumnConv> = Vec::new();
    let (mut rows, mut tag, mut failed) = (0u64, String::new(), None::<DbError>);
    loop {
        let event = match conn.next().await {
            Ok(e) => e,
            Err(e) => {
                if let Some(h) = head.take() {
                    let _ = h.send(Err(e));
                } else {
                    let _ = tx.send(Err(std::io::Error::other("session lost"))).await;
                }
                return Err(());
            }
        };
        match event {
            Event::Columns(cols) => {
                convs = cols.iter().map(|c| values::conv_for(c.type_oid)).collect();
                write_header(&mut out, format, &cols);
                if let Some(h) = head.take() {
                    let _ = h.send(Ok(()));
                }
            }
            Event::Row(r) => {
                rows += 1;
                write_line(&mut out, format, &convs, &r);
                if out.len() >= STREAM_CHUNK
                    && tx
                        .send(Ok(Bytes::from(std::mem::take(&mut out))))
                        .await
                        .is_err()
                {
                    // The client went away: dropping the session cancels the statement.
                    conn.abandon();
                    return Err(());
                }
            }
            Event::Done(t) => tag = t,
            Event::Failed(e) => {
                failed.get_or_insert(e);
            }
            Event::CopyIn => {
                if conn.copy_end(Some(COPY_REFUSED)).await.is_err() {
                    return Err(());
                }
            }
            Event::Ready => break,
        }
    }
    finish(out, format, failed, head, &tag, rows, &tx).await;
    Ok(())
}

/// Ends the stream: the error (as the response, when nothing was sent yet, or as its last
/// line) or the command's outcome.
async fn finish(
    mut out: Vec<u8>,
    format: Format,
    failed: Option<DbError>,
    head: Option<tokio::sync::oneshot::Sender<Result<(), ApiError>>>,
    tag: &str,
    rows: u64,
    tx: &tokio::sync::mpsc::Sender<Chunk>,
) {
    match (failed, head) {
        (Some(e), Some(h)) => {
            let _ = h.send(Err(ApiError::from_db(&e)));
            return;
        }
        (Some(e), None) => {
            if format == Format::Csv {
                let _ = tx.send(Ok(Bytes::from(out))).await;
                let _ = tx.send(Err(std::io::Error::other(e.message))).await;
                return;
            }
            let err = ApiError::from_db(&e);
            out.extend_from_slice(err.body().to_string().as_bytes());
            out.push(b'\n');
        }
        (None, head) => {
            if let Some(h) = head {
                // No columns (a command): the stream is just the outcome.
                let _ = h.send(Ok(()));
            }
            if format != Format::Csv {
                out.push(b'{');
                write_outcome(&mut out, tag, rows);
                out.extend_from_slice(b"}\n");
            }
        }
    }
    let _ = tx.send(Ok(Bytes::from(out))).await;
}

/// The stream's first line: the column names (CSV) or `{"columns":[…]}` (NDJSON).
fn write_header(out: &mut Vec<u8>, format: Format, cols: &[Column]) {
    match format {
        Format::Csv => {
            for (i, c) in cols.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                values::write_csv_field(out, Some(c.name.as_bytes()));
            }
            out.extend_from_slice(b"\r\n");
        }
        _ => {
            out.extend_from_slice(b"{\"columns\":");
            write_columns(out, cols);
            out.extend_from_slice(b"}\n");
        }
    }
}

/// One row as a CSV record or an NDJSON array.
fn write_line(out: &mut Vec<u8>, format: Format, convs: &[ColumnConv], r: &Row) {
    match format {
        Format::Csv => {
            for (i, v) in r.values().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                values::write_csv_field(out, v);
            }
            out.extend_from_slice(b"\r\n");
        }
        _ => {
            write_row(out, convs, r);
            out.push(b'\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::split_tag;

    #[test]
    fn command_tags_split() {
        assert_eq!(split_tag("SELECT 3", 3), ("SELECT", 3));
        assert_eq!(split_tag("INSERT 0 5", 0), ("INSERT", 5));
        assert_eq!(split_tag("CREATE TABLE", 0), ("CREATE TABLE", 0));
        assert_eq!(split_tag("", 0), ("", 0));
    }
}
