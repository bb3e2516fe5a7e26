//! The HTTP endpoint's PostgreSQL client: it speaks the wire protocol to in-process broker
//! sessions ([`crate::client::open_internal`]), so an HTTP request passes through exactly the
//! pipeline a network client's statement does (classification, plugins, cache, routing, audit).
//!
//! Results come back in text format: the session is opened with `DateStyle=ISO`,
//! `IntervalStyle=iso_8601` and `TimeZone=UTC`, which [`super::values`] turns into typed JSON.

use super::error::ApiError;
use crate::client::shared::Shared;
use crate::wire::kind::{ClientMsg, Field, NameKind, ServerMsg, TxStatus};
use crate::wire::proto::{self, Reader};
use bytes::{BufMut, BytesMut};
use futures_util::FutureExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

/// Largest message accepted from the session (a DataRow may carry a 1 GB value in PostgreSQL;
/// the HTTP endpoint's replies are bounded far below that).
const MAX_MESSAGE: usize = 256 << 20;
/// Idle in-process sessions kept per (user, database).
const MAX_IDLE: usize = 16;

/// The settings every in-process session runs with, so text results have one shape.
fn session_gucs() -> Vec<(String, String)> {
    vec![
        ("DateStyle".into(), "ISO, YMD".into()),
        ("IntervalStyle".into(), "iso_8601".into()),
        ("TimeZone".into(), "UTC".into()),
        ("application_name".into(), "tidegate-http".into()),
        ("client_encoding".into(), "UTF8".into()),
        ("extra_float_digits".into(), "1".into()),
    ]
}

/// A result column.
#[derive(Debug, Clone)]
pub struct Column {
    /// Its name.
    pub name: String,
    /// Its type's OID.
    pub type_oid: u32,
}

/// What a statement produced, message by message.
pub enum Event {
    /// The result's columns (before any row).
    Columns(Vec<Column>),
    /// One row (the DataRow message, header included).
    Row(Row),
    /// The statement finished with this command tag.
    Done(String),
    /// The statement failed.
    Failed(DbError),
    /// COPY FROM STDIN is waiting for data.
    CopyIn,
    /// The session is ready for the next statement.
    Ready,
}

/// A DataRow message.
pub struct Row(BytesMut);

impl Row {
    /// The row's values in text format (`None` for NULL).
    pub fn values(&self) -> impl Iterator<Item = Option<&[u8]>> {
        let mut r = Reader::new(self.0.get(5..).unwrap_or(&[]));
        let n = r.i16().unwrap_or(0).max(0);
        (0..n).map_while(move |_| {
            let len = r.i32()?;
            if len < 0 {
                Some(None)
            } else {
                r.bytes(len as usize).map(Some)
            }
        })
    }
}

/// An error PostgreSQL (or the broker) reported.
#[derive(Debug, Clone)]
pub struct DbError {
    /// SQLSTATE.
    pub code: String,
    /// Primary message.
    pub message: String,
    /// Detail, if any.
    pub detail: Option<String>,
    /// Context (COPY errors name the line here).
    pub context: Option<String>,
}

impl DbError {
    fn parse(msg: &[u8]) -> DbError {
        let (code, message) = proto::error_fields(msg);
        let field = |k: Field| {
            proto::fields(msg)
                .find(|(f, _)| *f == k)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        DbError {
            code,
            message,
            detail: field(Field::Detail),
            context: field(Field::Context),
        }
    }
}

/// One in-process session, checked out for one request.
pub struct Conn {
    io: DuplexStream,
    rbuf: BytesMut,
    wbuf: BytesMut,
    /// The session's cancel key.
    pub cancel_key: (i32, i32),
    key: ConnKey,
    /// Transaction status from the last ReadyForQuery.
    status: TxStatus,
    /// The session is unusable (an I/O error, or abandoned mid-statement).
    broken: bool,
    /// A statement was sent and its ReadyForQuery has not arrived.
    busy: bool,
    sh: Arc<Shared>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Dropped mid-statement (the request timed out, or its client went away): cancel the
        // statement rather than let it run on; the session then sees its client gone and
        // rolls back.
        // The server key is looked up now, while the session still publishes it: once the
        // stream is gone the session detaches and the key would resolve to nothing.
        if self.busy {
            if let Some(cancel) = self
                .sh
                .cancels
                .resolve(self.cancel_key.0, self.cancel_key.1)
            {
                tokio::spawn(async move {
                    if let Err(e) =
                        crate::client::cancel::send_cancel(&cancel.target, cancel.key).await
                    {
                        tracing::warn!(error = %e, "cancelling an abandoned HTTP statement failed");
                    }
                    drop(cancel);
                });
            }
        }
    }
}

impl Conn {
    /// Sends Parse/Bind/Describe/Execute/Sync for `sql` with text `params` (`None` = NULL),
    /// asking for text results.
    pub async fn start(&mut self, sql: &str, params: &[Option<String>]) -> Result<(), ApiError> {
        let b = &mut self.wbuf;
        b.clear();
        frame(b, ClientMsg::Parse, |b| {
            b.put_u8(0);
            put_cstr(b, sql);
            b.put_i16(0);
        })?;
        let count = i16::try_from(params.len())
            .map_err(|_| ApiError::bad_request("at most 32767 parameters"))?;
        frame(b, ClientMsg::Bind, |b| {
            b.put_u8(0);
            b.put_u8(0);
            b.put_i16(0);
            b.put_i16(count);
            for p in params {
                match p {
                    None => b.put_i32(-1),
                    Some(v) => {
                        b.put_i32(v.len() as i32);
                        b.put_slice(v.as_bytes());
                    }
                }
            }
            b.put_i16(0);
        })?;
        // Describe the unnamed portal, Execute it for all rows, Sync.
        frame(b, ClientMsg::Describe, |b| {
            b.put_u8(NameKind::Portal.byte());
            b.put_u8(0);
        })?;
        frame(b, ClientMsg::Execute, |b| {
            b.put_u8(0);
            b.put_i32(0);
        })?;
        frame(b, ClientMsg::Sync, |_| {})?;
        self.busy = true;
        self.flush().await
    }

    /// Sends a simple Query (used for COPY … FROM STDIN).
    pub async fn simple(&mut self, sql: &str) -> Result<(), ApiError> {
        self.wbuf.clear();
        proto::query(&mut self.wbuf, sql);
        self.busy = true;
        self.flush().await
    }

    /// Sends one CopyData message holding `data`.
    pub async fn copy_data(&mut self, data: &[u8]) -> Result<(), ApiError> {
        self.wbuf.clear();
        self.wbuf.put_u8(ClientMsg::CopyData.byte());
        self.wbuf.put_i32(data.len() as i32 + 4);
        self.wbuf.extend_from_slice(data);
        self.flush().await
    }

    /// Ends COPY data: CopyDone, or CopyFail with `reason`.
    pub async fn copy_end(&mut self, fail: Option<&str>) -> Result<(), ApiError> {
        self.wbuf.clear();
        match fail {
            None => frame(&mut self.wbuf, ClientMsg::CopyDone, |_| {})?,
            Some(reason) => frame(&mut self.wbuf, ClientMsg::CopyFail, |b| put_cstr(b, reason))?,
        }
        self.flush().await
    }

    async fn flush(&mut self) -> Result<(), ApiError> {
        if let Err(e) = self.io.write_all(&self.wbuf).await {
            self.broken = true;
            return Err(ApiError::unavailable(&format!("session closed: {e}")));
        }
        Ok(())
    }

    /// The next thing the statement produced; protocol bookkeeping is skipped.
    pub async fn next(&mut self) -> Result<Event, ApiError> {
        loop {
            let frame = match proto::split_frame(&mut self.rbuf, MAX_MESSAGE) {
                Ok(Some(f)) => f,
                Ok(None) => {
                    match self.io.read_buf(&mut self.rbuf).await {
                        Ok(0) | Err(_) => {
                            self.broken = true;
                            return Err(ApiError::unavailable("the session ended"));
                        }
                        Ok(_) => {}
                    }
                    continue;
                }
                Err(e) => {
                    self.broken = true;
                    return Err(ApiError::internal(&format!(
                        "bad message from session: {e:?}"
                    )));
                }
            };
            let (tag, msg) = frame;
            return Ok(match ServerMsg::of(tag) {
                ServerMsg::RowDescription => Event::Columns(row_description(&msg)),
                ServerMsg::DataRow => Event::Row(Row(msg)),
                ServerMsg::CommandComplete => {
                    let body = msg.get(5..).unwrap_or(&[]);
                    let end = body.iter().position(|&c| c == 0).unwrap_or(body.len());
                    Event::Done(String::from_utf8_lossy(&body[..end]).into_owned())
                }
                ServerMsg::EmptyQuery => Event::Done(String::new()),
                ServerMsg::Error => Event::Failed(DbError::parse(&msg)),
                ServerMsg::CopyIn => Event::CopyIn,
                ServerMsg::Ready => {
                    self.busy = false;
                    self.status = msg
                        .get(proto::HEADER_LEN)
                        .map_or(TxStatus::Failed, |s| TxStatus::of(*s));
                    Event::Ready
                }
                // ParseComplete, BindComplete, NoData, notices, parameter changes.
                _ => continue,
            });
        }
    }

    /// Reads to the end of the statement, returning its first error.
    pub async fn finish(&mut self) -> Result<Option<DbError>, ApiError> {
        let mut first = None;
        loop {
            match self.next().await? {
                Event::Ready => return Ok(first),
                Event::Failed(e) => {
                    first.get_or_insert(e);
                }
                _ => {}
            }
        }
    }

    /// Marks the session unusable: it is closed, not pooled, when dropped.
    pub fn abandon(&mut self) {
        self.broken = true;
    }
}

fn put_cstr(b: &mut BytesMut, s: &str) {
    b.put_slice(s.as_bytes());
    b.put_u8(0);
}

/// Appends one message of type `tag` whose body `f` writes; the length is filled in after.
fn frame(b: &mut BytesMut, kind: ClientMsg, f: impl FnOnce(&mut BytesMut)) -> Result<(), ApiError> {
    let start = b.len();
    b.put_u8(kind.byte());
    b.put_i32(0);
    f(b);
    let len = b.len() - start - 1;
    let len = i32::try_from(len).map_err(|_| ApiError::too_large("the statement is too large"))?;
    b[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

fn row_description(msg: &[u8]) -> Vec<Column> {
    let mut r = Reader::new(msg.get(5..).unwrap_or(&[]));
    let n = r.i16().unwrap_or(0).max(0) as usize;
    let mut cols = Vec::with_capacity(n);
    for _ in 0..n {
        let Some(name) = r.cstr() else { break };
        let (_table, _attnum, oid) = (r.i32(), r.i16(), r.i32());
        let _ = (r.i16(), r.i32(), r.i16());
        cols.push(Column {
            name: String::from_utf8_lossy(name).into_owned(),
            type_oid: oid.unwrap_or(0) as u32,
        });
    }
    cols
}

/// (user, database).
type ConnKey = (Arc<str>, String);

/// Idle in-process sessions, by (user, database).
#[derive(Default)]
pub struct Conns {
    idle: Mutex<HashMap<ConnKey, Vec<Conn>>>,
}

impl Conns {
    /// A session for `user` on `database`: an idle one, or a new one.
    pub async fn get(&self, sh: &Arc<Shared>, user: &Arc<str>, db: &str) -> Result<Conn, ApiError> {
        let key = (user.clone(), db.to_owned());
        loop {
            let idle = self
                .idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_mut(&key)
                .and_then(Vec::pop);
            let Some(mut conn) = idle else { break };
            // A session that ended while idle (shutdown, idle timeout) has said so already.
            let mut probe = [0u8; 1];
            if conn.io.read(&mut probe).now_or_never().is_none() {
                return Ok(conn);
            }
        }
        let s = crate::client::open_internal(sh, user, db, session_gucs())
            .await
            .map_err(|e| match e {
                crate::client::InternalError::UnknownUser => ApiError::unauthorized(),
                crate::client::InternalError::Upstream(code, message) => {
                    ApiError::from_db(&DbError {
                        code,
                        message,
                        detail: None,
                        context: None,
                    })
                }
            })?;
        Ok(Conn {
            io: s.stream,
            rbuf: BytesMut::with_capacity(16 * 1024),
            wbuf: BytesMut::with_capacity(1024),
            cancel_key: s.cancel_key,
            key,
            status: TxStatus::Idle,
            broken: false,
            busy: false,
            sh: sh.clone(),
        })
    }

    /// Returns a session after its request: kept if it is idle outside a transaction.
    pub fn put(&self, conn: Conn) {
        if conn.broken || conn.busy || !conn.status.is_idle() || !conn.rbuf.is_empty() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.entry(conn.key.clone()).or_default();
        if list.len() < MAX_IDLE {
            list.push(conn);
        }
    }

    /// Closes every idle session.
    pub fn clear(&self) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}
