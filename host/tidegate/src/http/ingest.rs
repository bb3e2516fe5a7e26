//! `POST /v1/series/{table}/points`: points as a JSON array of objects, NDJSON or CSV (with a
//! header line), written with one `COPY … FROM STDIN` — one transaction per request. The reply
//! comes after the commit, so an acknowledged request is durable; a bad row rejects the whole
//! request with its line number (the element number for a JSON array) and writes nothing.

use super::error::ApiError;
use super::series::{SeriesInfo, TableInfo};
use super::values::write_copy_field;
use super::wire::{Conn, DbError, Event};
use super::HttpState;
use crate::admin::rules::quote_ident;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use serde_json::Value;
use std::sync::Arc;

/// COPY data is sent in messages of about this size.
const COPY_CHUNK: usize = 256 * 1024;

pub(super) fn routes() -> Router<Arc<HttpState>> {
    Router::new().route("/v1/series/{table}/points", post(points))
}

/// Rows converted to COPY's text format, and the input line each came from.
struct CopyData {
    columns: Vec<String>,
    data: Vec<u8>,
    /// `row_ends[i]` is where row i's line ends in `data`.
    row_ends: Vec<usize>,
    lines: Vec<u64>,
}

impl CopyData {
    fn new(columns: Vec<String>) -> Self {
        CopyData {
            columns,
            data: Vec::new(),
            row_ends: Vec::new(),
            lines: Vec::new(),
        }
    }

    fn end_row(&mut self, line: u64) {
        self.data.push(b'\n');
        self.row_ends.push(self.data.len());
        self.lines.push(line);
    }
}

fn bad_row(line: u64, message: &str) -> ApiError {
    let mut e = ApiError::unprocessable(message);
    e.line = Some(line);
    e
}

fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Appends one JSON object as a COPY line of `s`'s columns.
fn object_row(
    out: &mut CopyData,
    obj: &serde_json::Map<String, Value>,
    line: u64,
) -> Result<(), ApiError> {
    if let Some(k) = obj.keys().find(|k| !out.columns.iter().any(|c| c == *k)) {
        return Err(bad_row(
            line,
            &format!(
                "unknown column {k:?}: the series columns are {}",
                out.columns.join(", ")
            ),
        ));
    }
    for i in 0..out.columns.len() {
        if i > 0 {
            out.data.push(b'\t');
        }
        let v = obj.get(&out.columns[i]).and_then(value_text);
        write_copy_field(&mut out.data, v.as_deref());
    }
    out.end_row(line);
    Ok(())
}

fn from_json(s: &SeriesInfo, body: &[u8]) -> Result<CopyData, ApiError> {
    let items: Vec<Value> = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(&format!("expected a JSON array of objects: {e}")))?;
    let mut out = CopyData::new(s.columns().into_iter().map(str::to_owned).collect());
    for (i, item) in items.iter().enumerate() {
        let line = i as u64 + 1;
        let obj = item
            .as_object()
            .ok_or_else(|| bad_row(line, "each point must be a JSON object"))?;
        object_row(&mut out, obj, line)?;
    }
    Ok(out)
}

fn from_ndjson(s: &SeriesInfo, body: &[u8]) -> Result<CopyData, ApiError> {
    let mut out = CopyData::new(s.columns().into_iter().map(str::to_owned).collect());
    for (i, raw) in body.split(|&b| b == b'\n').enumerate() {
        let line = i as u64 + 1;
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let obj: serde_json::Map<String, Value> = serde_json::from_slice(raw)
            .map_err(|e| bad_row(line, &format!("not a JSON object: {e}")))?;
        object_row(&mut out, &obj, line)?;
    }
    Ok(out)
}

fn from_csv(s: &SeriesInfo, body: &[u8]) -> Result<CopyData, ApiError> {
    let mut rd = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(body);
    let headers = rd
        .headers()
        .map_err(|e| bad_row(1, &format!("CSV header: {e}")))?
        .clone();
    let allowed = s.columns();
    let mut columns = Vec::with_capacity(headers.len());
    for h in headers.iter() {
        if !allowed.contains(&h) {
            return Err(bad_row(
                1,
                &format!(
                    "unknown column {h:?}: the series columns are {}",
                    allowed.join(", ")
                ),
            ));
        }
        if columns.iter().any(|c| c == h) {
            return Err(bad_row(1, &format!("column {h:?} appears twice")));
        }
        columns.push(h.to_owned());
    }
    let mut out = CopyData::new(columns);
    let mut record = csv::StringRecord::new();
    loop {
        let line = rd.position().line();
        match rd.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(bad_row(line.max(2), &format!("CSV: {e}"))),
        }
        let line = record.position().map_or(line, |p| p.line());
        for (i, field) in record.iter().enumerate() {
            if i > 0 {
                out.data.push(b'\t');
            }
            // An empty unquoted field is NULL, as COPY's CSV format reads it.
            write_copy_field(&mut out.data, (!field.is_empty()).then_some(field));
        }
        out.end_row(line);
    }
    Ok(out)
}

async fn points(
    State(st): State<Arc<HttpState>>,
    Path(table): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let who = st.who(&headers).await?;
    let info = st.catalog.table(&st.sh, &who.database, &table).await?;
    let series = info.series()?;
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_ascii_lowercase();
    let bytes = super::read_body(&st, &headers, body).await?;
    let data = if ctype.starts_with("application/x-ndjson") {
        from_ndjson(series, &bytes)?
    } else if ctype.starts_with("text/csv") {
        from_csv(series, &bytes)?
    } else if ctype.starts_with("application/json") {
        from_json(series, &bytes)?
    } else {
        return Err(ApiError::unsupported(
            "points are application/json, application/x-ndjson or text/csv",
        ));
    };
    drop(bytes);
    let rows = data.lines.len();
    if rows > 0 {
        let mut conn = st.conn(&who).await?;
        let copied = tokio::time::timeout(st.request_timeout(), copy_in(&mut conn, &info, &data))
            .await
            .map_err(|_| ApiError::timeout())?;
        st.conns.put(conn);
        copied?;
    }
    let body = serde_json::json!({ "inserted": rows });
    Ok(super::sql::json_response(
        StatusCode::OK,
        body.to_string().into_bytes(),
    ))
}

/// Runs the COPY; on a row error, the reply names the input line.
async fn copy_in(conn: &mut Conn, info: &TableInfo, data: &CopyData) -> Result<(), ApiError> {
    let cols: Vec<String> = data.columns.iter().map(|c| quote_ident(c)).collect();
    conn.simple(&format!(
        "COPY {} ({}) FROM STDIN",
        info.qualified(),
        cols.join(", ")
    ))
    .await?;
    let mut failed: Option<DbError> = None;
    loop {
        match conn.next().await? {
            Event::CopyIn => break,
            Event::Failed(e) => {
                failed.get_or_insert(e);
            }
            Event::Ready => {
                let e = failed.unwrap_or_else(|| DbError {
                    code: "XX000".into(),
                    message: "COPY did not start".into(),
                    detail: None,
                    context: None,
                });
                return Err(ApiError::from_db(&e));
            }
            _ => {}
        }
    }
    // Send whole rows per message, about COPY_CHUNK bytes each.
    let mut start = 0;
    while start < data.data.len() {
        let target = start + COPY_CHUNK;
        let end = match data.row_ends.binary_search(&target) {
            Ok(i) => data.row_ends[i],
            Err(i) => data.row_ends.get(i).copied().unwrap_or(data.data.len()),
        };
        conn.copy_data(&data.data[start..end]).await?;
        start = end;
    }
    conn.copy_end(None).await?;
    if let Some(e) = conn.finish().await? {
        let mut err = ApiError::from_db(&e);
        err.line = copy_line(&e).and_then(|n| data.lines.get(n.checked_sub(1)? as usize).copied());
        return Err(err);
    }
    Ok(())
}

/// The COPY data line an error's context names (`COPY t, line 3, column v: "x"`).
fn copy_line(e: &DbError) -> Option<u64> {
    let ctx = e.context.as_deref()?;
    let rest = &ctx[ctx.find("line ")? + 5..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series() -> SeriesInfo {
        SeriesInfo {
            time: "time".into(),
            series: "series_id".into(),
            values: vec!["value".into()],
            metadata: Some("metadata".into()),
        }
    }

    #[test]
    fn ndjson_becomes_copy_text_with_lines() {
        let body = b"{\"time\":\"2024-01-01T00:00:00Z\",\"series_id\":1,\"value\":2.5,\"metadata\":{\"k\":\"a\\tb\"}}\n\n{\"time\":\"2024-01-01T00:00:01Z\",\"series_id\":2}\n";
        let d = from_ndjson(&series(), body).expect("valid");
        assert_eq!(
            String::from_utf8(d.data).expect("utf8"),
            "2024-01-01T00:00:00Z\t1\t2.5\t{\"k\":\"a\\\\tb\"}\n2024-01-01T00:00:01Z\t2\t\\N\t\\N\n"
        );
        assert_eq!(d.lines, vec![1, 3]);
    }

    #[test]
    fn unknown_keys_and_bad_lines_name_their_line() {
        let e = from_ndjson(&series(), b"{\"time\":\"x\"}\n{\"bogus\":1}\n")
            .err()
            .expect("refused");
        assert_eq!((e.status.as_u16(), e.line), (422, Some(2)));
        let e = from_ndjson(&series(), b"{\"time\":\"x\"}\n{oops\n")
            .err()
            .expect("refused");
        assert_eq!(e.line, Some(2));
        let e = from_json(&series(), b"[{\"time\":\"x\"}, 3]")
            .err()
            .expect("refused");
        assert_eq!(e.line, Some(2));
    }

    #[test]
    fn csv_maps_header_columns() {
        let d = from_csv(
            &series(),
            b"series_id,time,value\n1,2024-01-01,\n2,\"2024-01-02\",3\n",
        )
        .expect("valid");
        assert_eq!(d.columns, vec!["series_id", "time", "value"]);
        assert_eq!(
            String::from_utf8(d.data).expect("utf8"),
            "1\t2024-01-01\t\\N\n2\t2024-01-02\t3\n"
        );
        assert_eq!(d.lines, vec![2, 3]);
        let e = from_csv(&series(), b"time,nope\n").err().expect("refused");
        assert_eq!(e.line, Some(1));
    }

    #[test]
    fn copy_errors_name_the_line() {
        let e = DbError {
            code: "22P02".into(),
            message: "invalid input syntax for type double precision: \"abc\"".into(),
            detail: None,
            context: Some("COPY time_series_data, line 3, column value: \"abc\"".into()),
        };
        assert_eq!(copy_line(&e), Some(3));
    }
}
