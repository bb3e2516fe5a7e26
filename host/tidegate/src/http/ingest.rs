//! `POST /v1/series/{table}/points`: points as a JSON array of objects, NDJSON or CSV (with a
//! header line), written with one `COPY … FROM STDIN` — one transaction per request. The reply
//! comes after the commit, so an acknowledged request is durable; a bad row rejects the whole
//! request with its line number (the element number for a JSON array) and writes nothing.

use super::error::ApiError;
use super::series::{SeriesInfo, TableInfo};
use super::values::write_copy_field;
use super::wire::{Conn, DbError, Event};
use super::HttpState;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use serde_json::Value;
use std::sync::Arc;
use tidegate_sql::quote_ident;

/// COPY data is sent in messages of about this size.
const COPY_CHUNK: usize = 256 * 1024;

pub(super) fn routes() -> Router<Arc<HttpState>> {
    Router::new().route("/v1/series/{table}/points", post(points))
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

/// Where rows come from.
enum Source<'a> {
    /// NDJSON lines, numbered from 1.
    Lines(Box<dyn Iterator<Item = (usize, &'a [u8])> + Send + 'a>),
    /// CSV records after the header.
    Csv(csv::Reader<&'a [u8]>, csv::StringRecord),
    /// A parsed JSON array's elements, numbered from 1.
    Items(std::iter::Enumerate<std::vec::IntoIter<Value>>),
}

/// Turns a request body into COPY text rows, one at a time, so the COPY can start while the
/// rest is still being converted.
struct Converter<'a> {
    columns: Vec<String>,
    source: Source<'a>,
}

impl<'a> Converter<'a> {
    fn ndjson(s: &SeriesInfo, body: &'a [u8]) -> Self {
        Converter {
            columns: s.columns().into_iter().map(str::to_owned).collect(),
            source: Source::Lines(Box::new(body.split(|&b| b == b'\n').enumerate())),
        }
    }

    fn json(s: &SeriesInfo, body: &[u8]) -> Result<Self, ApiError> {
        let items: Vec<Value> = serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(&format!("expected a JSON array of objects: {e}"))
        })?;
        Ok(Converter {
            columns: s.columns().into_iter().map(str::to_owned).collect(),
            source: Source::Items(items.into_iter().enumerate()),
        })
    }

    fn csv(s: &SeriesInfo, body: &'a [u8]) -> Result<Self, ApiError> {
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
        Ok(Converter {
            columns,
            source: Source::Csv(rd, csv::StringRecord::new()),
        })
    }

    /// Appends the next row's COPY line to `out`; its input line, or `None` at the end.
    fn next_row(&mut self, out: &mut Vec<u8>) -> Result<Option<u64>, ApiError> {
        match &mut self.source {
            Source::Lines(lines) => {
                for (i, raw) in lines.by_ref() {
                    let line = i as u64 + 1;
                    if raw.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let obj: serde_json::Map<String, Value> = serde_json::from_slice(raw)
                        .map_err(|e| bad_row(line, &format!("not a JSON object: {e}")))?;
                    object_row(&self.columns, out, &obj, line)?;
                    return Ok(Some(line));
                }
                Ok(None)
            }
            Source::Items(items) => {
                let Some((i, item)) = items.next() else {
                    return Ok(None);
                };
                let line = i as u64 + 1;
                let obj = item
                    .as_object()
                    .ok_or_else(|| bad_row(line, "each point must be a JSON object"))?;
                object_row(&self.columns, out, obj, line)?;
                Ok(Some(line))
            }
            Source::Csv(rd, record) => {
                let line = rd.position().line();
                match rd.read_record(record) {
                    Ok(false) => return Ok(None),
                    Ok(true) => {}
                    Err(e) => return Err(bad_row(line.max(2), &format!("CSV: {e}"))),
                }
                let line = record.position().map_or(line, |p| p.line());
                for (i, field) in record.iter().enumerate() {
                    if i > 0 {
                        out.push(b'\t');
                    }
                    // An empty unquoted field is NULL, as COPY's CSV format reads it.
                    write_copy_field(out, (!field.is_empty()).then_some(field));
                }
                out.push(b'\n');
                Ok(Some(line))
            }
        }
    }
}

/// Appends one JSON object as a COPY line of `columns`.
fn object_row(
    columns: &[String],
    out: &mut Vec<u8>,
    obj: &serde_json::Map<String, Value>,
    line: u64,
) -> Result<(), ApiError> {
    if let Some(k) = obj.keys().find(|k| !columns.iter().any(|c| c == *k)) {
        return Err(bad_row(
            line,
            &format!(
                "unknown column {k:?}: the series columns are {}",
                columns.join(", ")
            ),
        ));
    }
    for (i, c) in columns.iter().enumerate() {
        if i > 0 {
            out.push(b'\t');
        }
        let v = obj.get(c).and_then(value_text);
        write_copy_field(out, v.as_deref());
    }
    out.push(b'\n');
    Ok(())
}

const JSON: &str = "application/json";
const NDJSON: &str = "application/x-ndjson";
const CSV: &str = "text/csv";

async fn points(
    State(st): State<Arc<HttpState>>,
    Path(table): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let ctype = super::body_type(&headers, &[JSON, NDJSON, CSV])?;
    let who = st.who(&headers).await?;
    let info = st.catalog.table(&st.sh, &who.database, &table).await?;
    let series = info.series()?;
    let bytes = super::read_body(&st, &headers, body).await?;
    let mut conv = match ctype {
        NDJSON => Converter::ndjson(series, &bytes),
        CSV => Converter::csv(series, &bytes)?,
        _ => Converter::json(series, &bytes)?,
    };
    // Nothing to write: no session, no transaction (a bad first row still says so).
    let mut first = Vec::with_capacity(COPY_CHUNK + 4096);
    let Some(line) = conv.next_row(&mut first)? else {
        return Ok(inserted(0));
    };
    let mut conn = st.conn(&who).await?;
    let copied = tokio::time::timeout(
        st.request_timeout(),
        copy_in(&mut conn, &info, &mut conv, first, line),
    )
    .await
    .map_err(|_| ApiError::timeout())?;
    st.conns.put(conn);
    Ok(inserted(copied?))
}

fn inserted(rows: usize) -> Response {
    let body = serde_json::json!({ "inserted": rows });
    super::sql::json_response(StatusCode::OK, body.to_string().into_bytes())
}

/// Runs the COPY, converting and sending about COPY_CHUNK bytes at a time, so PostgreSQL
/// works on one chunk while the next is converted. A row that does not convert ends the
/// COPY with CopyFail (nothing is written); a row PostgreSQL refuses is named by its line.
async fn copy_in(
    conn: &mut Conn,
    info: &TableInfo,
    conv: &mut Converter<'_>,
    mut buf: Vec<u8>,
    first_line: u64,
) -> Result<usize, ApiError> {
    let cols: Vec<String> = conv.columns.iter().map(|c| quote_ident(c)).collect();
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
    let mut lines = vec![first_line];
    loop {
        let mut end = false;
        while buf.len() < COPY_CHUNK {
            match conv.next_row(&mut buf) {
                Ok(Some(line)) => lines.push(line),
                Ok(None) => {
                    end = true;
                    break;
                }
                Err(e) => {
                    conn.copy_end(Some("a row of the request is invalid"))
                        .await?;
                    conn.finish().await?;
                    return Err(e);
                }
            }
        }
        conn.copy_data(&buf).await?;
        buf.clear();
        if end {
            break;
        }
    }
    conn.copy_end(None).await?;
    if let Some(e) = conn.finish().await? {
        let mut err = ApiError::from_db(&e);
        err.line = copy_line(&e).and_then(|n| lines.get(n.checked_sub(1)? as usize).copied());
        return Err(err);
    }
    Ok(lines.len())
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

    /// Columns, COPY text and input lines.
    type Drained = (Vec<String>, Vec<u8>, Vec<u64>);

    /// Every row of `conv`: the COPY text and the lines.
    fn drain(mut conv: Converter<'_>) -> Result<Drained, ApiError> {
        let (mut data, mut lines) = (Vec::new(), Vec::new());
        while let Some(line) = conv.next_row(&mut data)? {
            lines.push(line);
        }
        Ok((conv.columns, data, lines))
    }

    fn from_ndjson(s: &SeriesInfo, body: &[u8]) -> Result<Drained, ApiError> {
        drain(Converter::ndjson(s, body))
    }

    fn from_json(s: &SeriesInfo, body: &[u8]) -> Result<Drained, ApiError> {
        drain(Converter::json(s, body)?)
    }

    fn from_csv(s: &SeriesInfo, body: &[u8]) -> Result<Drained, ApiError> {
        drain(Converter::csv(s, body)?)
    }

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
        let (_, data, lines) = from_ndjson(&series(), body).expect("valid");
        assert_eq!(
            String::from_utf8(data).expect("utf8"),
            "2024-01-01T00:00:00Z\t1\t2.5\t{\"k\":\"a\\\\tb\"}\n2024-01-01T00:00:01Z\t2\t\\N\t\\N\n"
        );
        assert_eq!(lines, vec![1, 3]);
    }

    #[test]
    fn unknown_keys_and_bad_lines_name_their_line() {
        let e = from_ndjson(&series(), b"{\"time\":\"x\"}\n{\"bogus\":1}\n").expect_err("refused");
        assert_eq!((e.status.as_u16(), e.line), (422, Some(2)));
        let e = from_ndjson(&series(), b"{\"time\":\"x\"}\n{oops\n").expect_err("refused");
        assert_eq!(e.line, Some(2));
        let e = from_json(&series(), b"[{\"time\":\"x\"}, 3]").expect_err("refused");
        assert_eq!(e.line, Some(2));
    }

    #[test]
    fn csv_maps_header_columns() {
        let (columns, data, lines) = from_csv(
            &series(),
            b"series_id,time,value\n1,2024-01-01,\n2,\"2024-01-02\",3\n",
        )
        .expect("valid");
        assert_eq!(columns, vec!["series_id", "time", "value"]);
        assert_eq!(
            String::from_utf8(data).expect("utf8"),
            "1\t2024-01-01\t\\N\n2\t2024-01-02\t3\n"
        );
        assert_eq!(lines, vec![2, 3]);
        let e = from_csv(&series(), b"time,nope\n").expect_err("refused");
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
