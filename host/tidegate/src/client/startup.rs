//! From accept to an authenticated session: SSLRequest/GSSENCRequest negotiation, the startup
//! packet, CancelRequest, SCRAM-SHA-256 (or trust) authentication, and the greeting.
//!
//! Startup packets are read with exact reads, never buffered ahead: bytes a client sends after
//! an SSLRequest but before the TLS handshake are left for the handshake to reject, so nothing
//! sent in plaintext can be injected into the encrypted session (CVE-2021-23214 class).

use super::Session;
use crate::client::cancel::ClientInfo;
use crate::client::shared::{ClientGuard, Shared};
use crate::upstream::backend::{BackendError, ClientCount, ClientKeys, PoolError, Target};
use crate::upstream::topology::Topology;
use crate::wire::auth::{ScramError, ScramServer, MECHANISM};
use crate::wire::kind::{ClientMsg, ServerMsg, SslAnswer, TxStatus};
use crate::wire::proto::{self, Reader, Severity};
use bytes::{BufMut, BytesMut};
pub use params::{client_params, decode_startup, ClientParams};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tidegate_config::{AuthMethod, TlsMode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

mod auth_query;
mod encoding;
mod internal;
mod params;

pub use auth_query::AuthLookup;
pub use internal::{open_internal, InternalError, InternalSession};

/// PostgreSQL's limit for startup packets.
const MAX_STARTUP_PACKET: usize = 10_000;
const SSL_REQUEST: i32 = 80_877_103;
const GSSENC_REQUEST: i32 = 80_877_104;
const CANCEL_REQUEST: i32 = 80_877_102;

/// Why a connection ended before its session started.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// Socket failure.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The client broke the protocol (it was sent 08P01 where possible).
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The client was refused with the given SQLSTATE.
    #[error("refused ({code}): {message}")]
    Refused {
        /// SQLSTATE sent.
        code: &'static str,
        /// Message sent.
        message: String,
    },
    /// TLS handshake failed.
    #[error("tls: {0}")]
    Tls(String),
}

/// A client socket, plain or TLS.
pub enum ClientStream {
    /// Plaintext.
    Plain(TcpStream),
    /// TLS.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Everything the session needs from the handshake.
struct Accepted {
    stream: ClientStream,
    leftover: BytesMut,
    user: Arc<str>,
    /// The primary's address and the role the user acts as.
    login: Target,
    /// The configuration the client was admitted under.
    topo: Arc<Topology>,
    gucs: Vec<(String, String)>,
    /// The client asked for the admin console's virtual database (and may use it).
    console: bool,
}

/// Serves one accepted connection to its end. `guard` is `None` when the client limit is
/// reached: the client is then refused with 53300 once its startup packet arrives.
pub async fn handle_connection(sh: Arc<Shared>, tcp: TcpStream, guard: Option<ClientGuard>) {
    let _ = tcp.set_nodelay(true);
    let peer = tcp
        .peer_addr()
        .map_or_else(|_| "unknown".to_owned(), |a| a.to_string());
    let timeout = sh.current.load().config.limits.startup_timeout.duration();
    let admitted = guard.is_some();
    let accepted = match tokio::time::timeout(timeout, handshake(&sh, tcp, admitted)).await {
        Err(_) => {
            tracing::debug!("startup timeout: closing the connection");
            return;
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "connection ended during startup");
            return;
        }
        Ok(Ok(None)) => return,
        Ok(Ok(Some(a))) => a,
    };
    let Accepted {
        stream,
        leftover,
        user,
        login,
        topo,
        gucs,
        console,
    } = accepted;
    if console {
        if let Err(e) = super::console::serve(sh.clone(), stream, leftover, user.clone()).await {
            tracing::debug!(user = %user, error = %e, "admin console session ended");
        }
        drop(guard);
        return;
    }
    let (pools, targets) = session_pools(&sh, &topo, &login).await;
    let pool = pools[0].clone();
    let info = ClientInfo {
        user: user.to_string(),
        database: login.database.clone(),
        role: login.user.clone(),
        addr: peer,
        application_name: application_name(&gucs),
        tls: matches!(stream, ClientStream::Tls(_)),
        connected: Some(std::time::SystemTime::now()),
    };
    let registration = sh.cancels.register_client(targets, info);
    let _counted = ClientCount::new(pool.clone());
    let mut stream = stream;
    // Greeting: server parameters (client's own values win), our cancel key, ready.
    let mut out = BytesMut::with_capacity(512);
    let params = match pool.server_params().await {
        Ok(p) => p,
        Err(e) => {
            refuse_upstream(&mut out, &e);
            let _ = stream.write_all(&out).await;
            tracing::warn!(user = %user, error = %e, "client refused: upstream unavailable");
            return;
        }
    };
    proto::simple(&mut out, ServerMsg::Authentication, &0i32.to_be_bytes());
    for (k, v) in params.iter() {
        let v = gucs
            .iter()
            .find(|(gk, _)| gk.eq_ignore_ascii_case(k))
            .map_or(v.as_str(), |(_, gv)| gv.as_str());
        proto::parameter_status(&mut out, k, v);
    }
    proto::backend_key(&mut out, registration.pid, registration.secret);
    proto::ready(&mut out, TxStatus::Idle);
    if stream.write_all(&out).await.is_err() {
        return;
    }
    tracing::debug!(user = %user, database = %pool.key.database, "client authenticated");
    let slot = registration.slot.clone();
    let result = match stream {
        ClientStream::Plain(tcp) => {
            let (r, w) = tcp.into_split();
            Session::new(
                sh.clone(),
                topo,
                login,
                pools,
                user.clone(),
                r,
                w,
                leftover,
                gucs,
                slot,
            )
            .run()
            .await
        }
        ClientStream::Tls(tls) => {
            let (r, w) = tokio::io::split(*tls);
            Session::new(
                sh.clone(),
                topo,
                login,
                pools,
                user.clone(),
                r,
                w,
                leftover,
                gucs,
                slot,
            )
            .run()
            .await
        }
    };
    if let Err(e) = result {
        tracing::debug!(user = %user, error = %e, "session ended");
    }
    drop(registration);
    drop(guard);
}

/// The pools a session of `login` uses (primary first) and their cancel targets.
async fn session_pools(
    sh: &Shared,
    topo: &Arc<Topology>,
    login: &Target,
) -> (Vec<Arc<crate::upstream::backend::Pool>>, Vec<Target>) {
    let pools = super::session::pools_for(sh, topo, login);
    if topo.has_replicas() || topo.plugins.is_some() {
        // Routing and policy need the database's function volatilities (a function not known
        // to be read-only is a write for both): read once, by the first client.
        topo.catalogs.load(&login.database, &pools[0]).await;
    }
    let targets = pools.iter().map(|p| p.target.clone()).collect();
    (pools, targets)
}

/// The `application_name` startup parameter, or empty.
pub(super) fn application_name(gucs: &[(String, String)]) -> String {
    gucs.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("application_name"))
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

fn refuse_upstream(out: &mut BytesMut, e: &PoolError) {
    match e {
        // PostgreSQL's own refusal (unknown database, role…) goes to the client as it came.
        PoolError::Connect(BackendError::Refused(raw)) => out.extend_from_slice(raw),
        other => proto::error(
            out,
            Severity::Fatal,
            "08006",
            &format!("could not connect to the upstream server: {other}"),
        ),
    }
}

async fn send_fatal<S: AsyncWrite + Unpin>(
    s: &mut S,
    code: &'static str,
    message: String,
) -> StartupError {
    let mut out = BytesMut::new();
    proto::error(&mut out, Severity::Fatal, code, &message);
    let _ = s.write_all(&out).await;
    if code == "08P01" {
        StartupError::Protocol(message)
    } else {
        StartupError::Refused { code, message }
    }
}

/// Reads one length-prefixed startup-phase packet with exact reads.
async fn read_packet<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
) -> Result<BytesMut, StartupError> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await?;
    let len = i32::from_be_bytes(len);
    if !(8..=MAX_STARTUP_PACKET as i32).contains(&len) {
        return Err(send_fatal(s, "08P01", format!("invalid startup packet length {len}")).await);
    }
    let mut body = BytesMut::zeroed(len as usize);
    body[..4].copy_from_slice(&len.to_be_bytes());
    s.read_exact(&mut body[4..]).await?;
    Ok(body)
}

async fn handshake(
    sh: &Shared,
    tcp: TcpStream,
    admitted: bool,
) -> Result<Option<Accepted>, StartupError> {
    let topo = sh.topology();
    let mut stream = ClientStream::Plain(tcp);
    let mut tls_done = false;
    let packet = loop {
        let packet = read_packet(&mut stream).await?;
        let code = i32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
        match code {
            SSL_REQUEST if packet.len() == 8 => {
                let acceptor = match (&topo.tls, tls_done) {
                    (Some(a), false) => a.clone(),
                    (_, true) => {
                        return Err(
                            send_fatal(&mut stream, "08P01", "SSLRequest after TLS".into()).await,
                        )
                    }
                    (None, false) => {
                        stream.write_all(&[SslAnswer::Refuse.byte()]).await?;
                        continue;
                    }
                };
                stream.write_all(&[SslAnswer::Accept.byte()]).await?;
                let ClientStream::Plain(tcp) = stream else {
                    return Err(StartupError::Protocol("SSLRequest after TLS".into()));
                };
                let tls = acceptor
                    .accept(tcp)
                    .await
                    .map_err(|e| StartupError::Tls(e.to_string()))?;
                stream = ClientStream::Tls(Box::new(tls));
                tls_done = true;
            }
            GSSENC_REQUEST if packet.len() == 8 => {
                stream.write_all(&[SslAnswer::Refuse.byte()]).await?
            }
            CANCEL_REQUEST if packet.len() == 16 => {
                let mut r = Reader::new(&packet[8..]);
                if let (Some(pid), Some(secret)) = (r.i32(), r.i32()) {
                    if let Some(cancel) = sh.cancels.resolve(pid, secret) {
                        if let Err(e) =
                            crate::client::cancel::send_cancel(&cancel.target, cancel.key).await
                        {
                            tracing::warn!(error = %e, "forwarding a cancel request failed");
                        }
                        drop(cancel);
                    } else {
                        tracing::debug!("cancel request with an unknown key ignored");
                    }
                }
                return Ok(None);
            }
            c if c >> 16 == 3 => break packet,
            _ => {
                return Err(send_fatal(
                    &mut stream,
                    "0A000",
                    format!(
                        "unsupported frontend protocol {}.{}",
                        code >> 16,
                        code & 0xffff
                    ),
                )
                .await)
            }
        }
    };
    if !admitted {
        return Err(send_fatal(
            &mut stream,
            "53300",
            "sorry, too many clients already".into(),
        )
        .await);
    }
    if topo.config.tls.mode == TlsMode::Require && !tls_done {
        return Err(send_fatal(
            &mut stream,
            "28000",
            "TLS is required: connect with sslmode=require".into(),
        )
        .await);
    }
    let cfg = &topo.config;
    let ClientParams {
        user: user_name,
        database,
        gucs,
    } = match decode_startup(packet).and_then(|p| client_params(p, &cfg.upstream.primary.database))
    {
        Ok(p) => p,
        Err((code, message)) => return Err(send_fatal(&mut stream, code, message).await),
    };

    let mut rbuf = BytesMut::with_capacity(1024);
    let user_cfg = cfg.user(&user_name);
    // A user not in the config may be one of PostgreSQL's (auth_query).
    let found = match user_cfg {
        None if cfg.auth.auth_query.is_some() => match sh.auth_lookup.find(cfg, &user_name).await {
            Ok(f) => f,
            Err(e) => return Err(send_fatal(&mut stream, "08006", e.to_string()).await),
        },
        _ => None,
    };
    let client_key = match cfg.auth.method {
        AuthMethod::Trust => {
            if user_cfg.is_none() && found.is_none() {
                return Err(send_fatal(
                    &mut stream,
                    "28000",
                    format!("role \"{user_name}\" does not exist"),
                )
                .await);
            }
            None
        }
        AuthMethod::ScramSha256 => {
            let verifier = user_cfg
                .and_then(|u| u.verifier.as_ref())
                .or_else(|| found.as_ref().and_then(|f| f.verifier.as_ref()));
            match authenticate(&mut stream, &mut rbuf, sh, &user_name, verifier).await {
                Ok(key) => Some(key),
                Err(e) => {
                    if found.is_some() {
                        sh.auth_lookup.forget(&user_name);
                    }
                    return Err(e);
                }
            }
        }
    };
    let login = match (user_cfg, found) {
        (Some(u), _) => super::session::login_target(cfg, &u.name, &database),
        (None, Some(f)) => {
            if let (Some(client_key), Some(v)) = (client_key, f.verifier.as_ref()) {
                f.keys.set(ClientKeys {
                    client_key,
                    server_key: v.server_key,
                    salt: v.salt.clone(),
                    iterations: v.iterations,
                });
            }
            Some(super::session::passthrough_target(
                cfg, &user_name, &database, f.keys,
            ))
        }
        (None, None) => {
            return Err(send_fatal(
                &mut stream,
                "28P01",
                format!("password authentication failed for user \"{user_name}\""),
            )
            .await)
        }
    };
    let console = database == cfg.admin.database;
    if console && !cfg.admin.users.contains(&user_name) {
        return Err(send_fatal(
            &mut stream,
            "28000",
            format!("user \"{user_name}\" is not allowed to use the admin console (admin.users)"),
        )
        .await);
    }
    let Some(login) = login else {
        return Err(send_fatal(&mut stream, "28000", "unknown user".into()).await);
    };
    Ok(Some(Accepted {
        stream,
        leftover: rbuf,
        user: user_name.into(),
        login,
        topo: topo.clone(),
        gucs,
        console,
    }))
}

/// Reads one password-family message ('p') during authentication.
async fn read_auth_message<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    rbuf: &mut BytesMut,
) -> Result<BytesMut, StartupError> {
    loop {
        match proto::split_frame(rbuf, MAX_STARTUP_PACKET) {
            Ok(Some((tag, m))) if ClientMsg::of(tag) == ClientMsg::Password => return Ok(m),
            Ok(Some((tag, _))) => {
                return Err(send_fatal(
                    s,
                    "08P01",
                    format!(
                        "expected a password message, got message type {}",
                        tag as char
                    ),
                )
                .await)
            }
            Ok(None) => {}
            Err(e) => return Err(send_fatal(s, "08P01", e.to_string()).await),
        }
        if s.read_buf(rbuf).await? == 0 {
            return Err(StartupError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
    }
}

async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    rbuf: &mut BytesMut,
    sh: &Shared,
    user: &str,
    verifier: Option<&tidegate_config::ScramVerifier>,
) -> Result<[u8; 32], StartupError> {
    let mut out = BytesMut::new();
    let mut body = BytesMut::new();
    body.put_i32(10);
    body.put_slice(MECHANISM.as_bytes());
    body.put_slice(b"\0\0");
    proto::simple(&mut out, ServerMsg::Authentication, &body);
    s.write_all(&out).await?;

    let msg = read_auth_message(s, rbuf).await?;
    let mut r = Reader::new(&msg[proto::HEADER_LEN..]);
    let (Some(mechanism), Some(len)) = (r.cstr(), r.i32()) else {
        return Err(send_fatal(s, "08P01", "malformed SASLInitialResponse".into()).await);
    };
    if mechanism != MECHANISM.as_bytes() {
        return Err(send_fatal(
            s,
            "08P01",
            "client selected an invalid SASL authentication mechanism".into(),
        )
        .await);
    }
    let data = match usize::try_from(len).ok().and_then(|n| r.bytes(n)) {
        Some(d) if r.rest().is_empty() => d,
        _ => return Err(send_fatal(s, "08P01", "malformed SASLInitialResponse".into()).await),
    };
    let mut scram = ScramServer::new(verifier, user, &sh.mock_secret);
    let server_first = match scram.client_first(data) {
        Ok(m) => m,
        Err(e) => return Err(send_fatal(s, "08P01", e.to_string()).await),
    };
    out.clear();
    body.clear();
    body.put_i32(11);
    body.put_slice(server_first.as_bytes());
    proto::simple(&mut out, ServerMsg::Authentication, &body);
    s.write_all(&out).await?;

    let msg = read_auth_message(s, rbuf).await?;
    match scram.client_final_keys(&msg[proto::HEADER_LEN..]) {
        Ok((server_final, client_key)) => {
            out.clear();
            body.clear();
            body.put_i32(12);
            body.put_slice(server_final.as_bytes());
            proto::simple(&mut out, ServerMsg::Authentication, &body);
            s.write_all(&out).await?;
            Ok(client_key)
        }
        Err(ScramError::BadProof) => {
            tracing::info!(user, "authentication failed");
            Err(send_fatal(
                s,
                "28P01",
                format!("password authentication failed for user \"{user}\""),
            )
            .await)
        }
        Err(e @ ScramError::Protocol(_)) => Err(send_fatal(s, "08P01", e.to_string()).await),
    }
}
