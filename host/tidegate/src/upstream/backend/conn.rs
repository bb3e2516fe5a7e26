//! One authenticated connection to PostgreSQL, with the state the broker tracks on it.

use crate::clock::Mono;
use crate::wire::kind::{ServerMsg, TxStatus};
use crate::wire::proto::{self, Reader};
use bytes::{Buf, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::frontend;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

/// Where and as whom a backend connection logs in.
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Login role.
    pub user: String,
    /// Database.
    pub database: String,
    /// Password, if the server asks for one.
    pub password: Option<String>,
    /// Without a password: the SCRAM keys of the role's last authenticated client
    /// (`auth_query` pass-through).
    pub keys: Option<super::SharedKeys>,
    /// TLS to the server.
    pub tls: super::UpstreamTls,
}

/// The SCRAM exchange in progress: with the password, or with a client's keys.
enum Scram {
    Password(ScramSha256),
    Keys(super::scram::KeyedScram),
}

impl Scram {
    fn message(&self) -> &[u8] {
        match self {
            Scram::Password(s) => s.message(),
            Scram::Keys(s) => s.message(),
        }
    }

    fn update(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Scram::Password(s) => s.update(data),
            Scram::Keys(s) => s.update(data),
        }
    }

    fn finish(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Scram::Password(s) => s.finish(data),
            Scram::Keys(s) => s.finish(data),
        }
    }
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}@{}:{}/{}",
            self.user, self.host, self.port, self.database
        )
    }
}

/// Why a backend connection could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// TCP connect or I/O failed.
    #[error("upstream {target}: {source}")]
    Io {
        /// The server.
        target: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The connect timeout passed.
    #[error("upstream {0}: connect timeout")]
    Timeout(String),
    /// PostgreSQL refused the login; the raw ErrorResponse is forwarded to the client as is.
    #[error("upstream refused the login ({})", proto::sqlstate(.0).unwrap_or("?"))]
    Refused(BytesMut),
    /// The server asked for something the broker cannot do.
    #[error("upstream {target}: {message}")]
    Unsupported {
        /// The server.
        target: String,
        /// What.
        message: String,
    },
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// An authenticated server connection.
pub struct Backend {
    /// The socket (TLS or plain).
    pub stream: super::ServerStream,
    /// Bytes read from the server and not yet processed.
    pub rbuf: BytesMut,
    /// A process-unique id (for logs).
    pub id: u64,
    /// The server's cancel key: process id and secret.
    pub key: (i32, i32),
    /// ParameterStatus values reported at login.
    pub params: Vec<(String, String)>,
    /// Ids of the broker's prepared statements that exist on this connection.
    pub prepared: HashSet<u64>,
    /// Hash of the Parse body of the unnamed statement currently on this connection.
    pub unnamed: Option<u64>,
    /// The client startup parameters last applied with SET (sorted); empty = login defaults.
    pub gucs: Arc<[(String, String)]>,
    /// When it was last returned to its pool.
    pub idle_since: Mono,
    /// When it was opened.
    pub created: Instant,
    /// When its pool last lent it (the start of the transaction it serves).
    pub lent_at: Mono,
    /// The pool's reconnect epoch when it was opened: an older one is closed on return.
    pub epoch: u64,
    /// Holds a slot of the pool's size while the connection exists.
    pub(crate) permit: Option<OwnedSemaphorePermit>,
}

fn io_err(target: &Target) -> impl FnOnce(std::io::Error) -> BackendError + '_ {
    move |source| BackendError::Io {
        target: format!("{target:?}"),
        source,
    }
}

impl BackendError {
    /// The server is not there or not ready (restarting, starting up, shutting down): worth
    /// another attempt shortly.
    pub fn server_unavailable(&self) -> bool {
        match self {
            BackendError::Io { .. } => true,
            // cannot_connect_now, admin_shutdown, crash_shutdown.
            BackendError::Refused(raw) => {
                matches!(proto::sqlstate(raw), Some("57P03" | "57P01" | "57P02"))
            }
            BackendError::Timeout(_) | BackendError::Unsupported { .. } => false,
        }
    }
}

impl Backend {
    /// Opens and authenticates a connection within `timeout`.
    pub async fn connect(target: &Target, timeout: Duration) -> Result<Backend, BackendError> {
        match tokio::time::timeout(timeout, Self::connect_inner(target)).await {
            Ok(r) => r,
            Err(_) => Err(BackendError::Timeout(format!("{target:?}"))),
        }
    }

    async fn connect_inner(target: &Target) -> Result<Backend, BackendError> {
        let tcp = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(io_err(target))?;
        tcp.set_nodelay(true).map_err(io_err(target))?;
        let mut stream = target
            .tls
            .negotiate(tcp, &target.host)
            .await
            .map_err(io_err(target))?;
        let mut out = BytesMut::with_capacity(256);
        let params = [
            ("user", target.user.as_str()),
            ("database", target.database.as_str()),
            ("client_encoding", "UTF8"),
        ];
        frontend::startup_message(params.iter().copied(), &mut out).map_err(io_err(target))?;
        stream.write_all(&out).await.map_err(io_err(target))?;
        out.clear();

        let mut rbuf = BytesMut::with_capacity(16 * 1024);
        let mut scram: Option<Scram> = None;
        let mut server_params = Vec::new();
        let mut key = (0, 0);
        let unsupported = |message: &str| BackendError::Unsupported {
            target: format!("{target:?}"),
            message: message.to_owned(),
        };
        loop {
            let (tag, msg) = loop {
                match proto::split_frame(&mut rbuf, 1 << 20) {
                    Ok(Some(f)) => break f,
                    Ok(None) => {}
                    Err(e) => return Err(unsupported(&e.to_string())),
                }
                if stream.read_buf(&mut rbuf).await.map_err(io_err(target))? == 0 {
                    return Err(io_err(target)(std::io::ErrorKind::UnexpectedEof.into()));
                }
            };
            let mut r = Reader::new(&msg[proto::HEADER_LEN..]);
            match ServerMsg::of(tag) {
                ServerMsg::Authentication => {
                    let code = r.i32().ok_or_else(|| unsupported("short auth message"))?;
                    let password = || {
                        target.password.as_deref().ok_or_else(|| {
                            unsupported("server asks for a password; none configured")
                        })
                    };
                    match code {
                        0 => {}
                        3 if !stream.is_tls() && !target.tls.allow_cleartext_password => {
                            return Err(unsupported(
                                "server asks for a cleartext password over a connection \
                                 without TLS (set upstream.primary.sslmode, or \
                                 allow_cleartext_password = true)",
                            ));
                        }
                        3 => frontend::password_message(password()?.as_bytes(), &mut out)
                            .map_err(io_err(target))?,
                        5 => {
                            let salt = r.bytes(4).ok_or_else(|| unsupported("short md5 salt"))?;
                            let hash = postgres_protocol::authentication::md5_hash(
                                target.user.as_bytes(),
                                password()?.as_bytes(),
                                [salt[0], salt[1], salt[2], salt[3]],
                            );
                            frontend::password_message(hash.as_bytes(), &mut out)
                                .map_err(io_err(target))?;
                        }
                        10 => {
                            let mut found = false;
                            while let Some(m) = r.cstr() {
                                if m.is_empty() {
                                    break;
                                }
                                found |= m == SCRAM_SHA_256.as_bytes();
                            }
                            if !found {
                                return Err(unsupported("no supported SASL mechanism"));
                            }
                            let s = match (
                                &target.password,
                                target.keys.as_ref().and_then(|k| k.get()),
                            ) {
                                (None, Some(keys)) => {
                                    Scram::Keys(super::scram::KeyedScram::new(keys))
                                }
                                _ => Scram::Password(ScramSha256::new(
                                    password()?.as_bytes(),
                                    ChannelBinding::unsupported(),
                                )),
                            };
                            frontend::sasl_initial_response(SCRAM_SHA_256, s.message(), &mut out)
                                .map_err(io_err(target))?;
                            scram = Some(s);
                        }
                        11 => {
                            let s = scram
                                .as_mut()
                                .ok_or_else(|| unsupported("unexpected SASL continue"))?;
                            s.update(r.rest()).map_err(io_err(target))?;
                            frontend::sasl_response(s.message(), &mut out)
                                .map_err(io_err(target))?;
                        }
                        12 => {
                            let s = scram
                                .as_mut()
                                .ok_or_else(|| unsupported("unexpected SASL final"))?;
                            s.finish(r.rest()).map_err(io_err(target))?;
                        }
                        other => {
                            return Err(unsupported(&format!(
                                "authentication method {other} is not supported"
                            )))
                        }
                    }
                    if !out.is_empty() {
                        stream.write_all(&out).await.map_err(io_err(target))?;
                        out.clear();
                    }
                }
                ServerMsg::ParameterStatus => {
                    if let (Some(k), Some(v)) = (r.cstr(), r.cstr()) {
                        server_params.push((
                            String::from_utf8_lossy(k).into_owned(),
                            String::from_utf8_lossy(v).into_owned(),
                        ));
                    }
                }
                ServerMsg::BackendKeyData => key = (r.i32().unwrap_or(0), r.i32().unwrap_or(0)),
                ServerMsg::Error => return Err(BackendError::Refused(msg)),
                ServerMsg::Ready => break,
                _ => {} // NoticeResponse, NegotiateProtocolVersion: nothing to do.
            }
        }
        let (now, mono) = (Instant::now(), Mono::now());
        Ok(Backend {
            stream,
            rbuf,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            key,
            params: server_params,
            prepared: HashSet::new(),
            unnamed: None,
            gucs: Arc::new([]),
            idle_since: mono,
            created: now,
            lent_at: mono,
            epoch: 0,
            permit: None,
        })
    }

    /// Whether the server closed the connection while it sat idle (a non-blocking peek).
    pub fn is_closed(&self) -> bool {
        let mut b = [0u8; 1];
        match self.stream.try_read(&mut b) {
            Ok(_) => true, // EOF, or unsolicited bytes from an idle server: either way unusable.
            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
        }
    }

    /// Runs `sql` as a simple query and reads to ReadyForQuery, discarding results.
    /// Returns the transaction status and the first error's SQLSTATE, if any.
    pub async fn run_hidden(&mut self, sql: &str) -> std::io::Result<(TxStatus, Option<String>)> {
        let mut out = BytesMut::new();
        proto::query(&mut out, sql);
        self.stream.write_all(&out).await?;
        self.read_until_ready(1).await
    }

    /// Runs `sql` as a simple query and returns its first row's text values (`None` if no
    /// row or an error).
    pub async fn query_row(&mut self, sql: &str) -> std::io::Result<Option<Vec<Option<String>>>> {
        Ok(self
            .query_rows(sql, 1)
            .await?
            .and_then(|rows| rows.into_iter().next()))
    }

    /// Runs `sql` as a simple query and returns up to `max` rows' text values (`None` on an
    /// error). The connection is left idle (the unnamed statement is gone).
    pub async fn query_rows(
        &mut self,
        sql: &str,
        max: usize,
    ) -> std::io::Result<Option<Vec<Vec<Option<String>>>>> {
        let mut out = BytesMut::new();
        proto::query(&mut out, sql);
        self.stream.write_all(&out).await?;
        self.unnamed = None;
        self.read_rows(max).await
    }

    /// Runs `sql` with text parameters `params` (`$1`…) through the extended protocol and
    /// returns its first row's text values (`None` if no row or an error).
    pub async fn query_row_params(
        &mut self,
        sql: &str,
        params: &[&str],
    ) -> std::io::Result<Option<Vec<Option<String>>>> {
        let mut out = BytesMut::new();
        proto::extended_query(&mut out, sql, params);
        self.stream.write_all(&out).await?;
        self.unnamed = None;
        Ok(self
            .read_rows(1)
            .await?
            .and_then(|rows| rows.into_iter().next()))
    }

    /// Reads up to `max` rows' text values, to ReadyForQuery (`None` on an error).
    async fn read_rows(&mut self, max: usize) -> std::io::Result<Option<Vec<Vec<Option<String>>>>> {
        let mut rows = Vec::new();
        let mut failed = false;
        loop {
            match proto::header(&self.rbuf, 1 << 20) {
                Ok(Some(h)) if self.rbuf.len() >= h.total => {
                    let msg = self.rbuf.split_to(h.total);
                    match h.server() {
                        ServerMsg::DataRow if rows.len() < max => {
                            let mut r = Reader::new(&msg[proto::HEADER_LEN..]);
                            let n = r.i16().unwrap_or(0).max(0) as usize;
                            let mut values = Vec::with_capacity(n);
                            for _ in 0..n {
                                let len = r.i32().unwrap_or(-1);
                                values.push(
                                    usize::try_from(len)
                                        .ok()
                                        .and_then(|l| r.bytes(l))
                                        .map(|v| String::from_utf8_lossy(v).into_owned()),
                                );
                            }
                            rows.push(values);
                        }
                        ServerMsg::Error => failed = true,
                        ServerMsg::Ready => return Ok((!failed).then_some(rows)),
                        _ => {}
                    }
                    continue;
                }
                Ok(_) => {}
                Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            }
            if self.stream.read_buf(&mut self.rbuf).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Reads and discards messages until `n` ReadyForQuery messages have arrived.
    pub async fn read_until_ready(
        &mut self,
        mut n: usize,
    ) -> std::io::Result<(TxStatus, Option<String>)> {
        let mut status = TxStatus::Idle;
        let mut error = None;
        while n > 0 {
            match proto::header(&self.rbuf, usize::MAX) {
                Ok(Some(h)) if self.rbuf.len() >= h.total => {
                    if h.server() == ServerMsg::Ready && h.total >= 6 {
                        status = TxStatus::of(self.rbuf[proto::HEADER_LEN]);
                        n -= 1;
                    } else if h.server() == ServerMsg::Error && error.is_none() {
                        error = proto::sqlstate(&self.rbuf[..h.total]).map(str::to_owned);
                    }
                    self.rbuf.advance(h.total);
                    continue;
                }
                Ok(_) => {}
                Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            }
            if self.stream.read_buf(&mut self.rbuf).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok((status, error))
    }
}
