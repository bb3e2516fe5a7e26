//! TLS to PostgreSQL, as libpq's `sslmode` (`upstream.primary.sslmode`, shared by replicas):
//! `disable` never asks; `prefer` asks and falls back to plaintext when the server answers `N`;
//! `require` insists but does not check the certificate; `verify-full` insists and checks the
//! certificate against `sslrootcert` and the host name. Exactly one byte is read after the
//! SSLRequest, so nothing a server sends before the handshake is taken as part of the session
//! (CVE-2021-23222's class).

use crate::wire::kind::SslAnswer;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tidegate_config::{Server, SslMode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::rustls::{self, pki_types};
use tokio_rustls::TlsConnector;

/// How connections to the configured servers use TLS; built once per configuration.
#[derive(Clone)]
pub struct UpstreamTls {
    /// The mode.
    pub mode: SslMode,
    /// Whether a cleartext password may be sent over a connection without TLS.
    pub allow_cleartext_password: bool,
    ca: Option<PathBuf>,
    connector: Option<TlsConnector>,
    /// Why no connector could be built (an unreadable CA file): every connect fails with it.
    error: Option<Arc<str>>,
}

impl PartialEq for UpstreamTls {
    fn eq(&self, other: &Self) -> bool {
        (self.mode, self.allow_cleartext_password, &self.ca)
            == (other.mode, other.allow_cleartext_password, &other.ca)
    }
}

impl Eq for UpstreamTls {}

impl Default for UpstreamTls {
    /// No TLS, no cleartext password without it.
    fn default() -> Self {
        UpstreamTls {
            mode: SslMode::Disable,
            allow_cleartext_password: false,
            ca: None,
            connector: None,
            error: None,
        }
    }
}

impl UpstreamTls {
    /// The TLS of connections to `server` (and the replicas, which share its settings), built
    /// once per setting: the CA file is read when a setting is first seen (a changed file
    /// under the same path is read again after a restart).
    pub fn for_server(server: &Server) -> UpstreamTls {
        type Key = (SslMode, Option<PathBuf>, bool);
        static BUILT: std::sync::OnceLock<std::sync::Mutex<Vec<(Key, UpstreamTls)>>> =
            std::sync::OnceLock::new();
        if server.sslmode == SslMode::Disable {
            return UpstreamTls {
                allow_cleartext_password: server.allow_cleartext_password,
                ..UpstreamTls::default()
            };
        }
        let key = (
            server.sslmode,
            server.sslrootcert.clone(),
            server.allow_cleartext_password,
        );
        let mut built = BUILT
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some((_, tls)) = built.iter().find(|(k, _)| *k == key) {
            return tls.clone();
        }
        let tls = UpstreamTls::new(server).unwrap_or_else(|e| {
            tracing::error!(error = %e, "upstream TLS: no connection can be opened");
            UpstreamTls {
                mode: server.sslmode,
                allow_cleartext_password: server.allow_cleartext_password,
                ca: server.sslrootcert.clone(),
                connector: None,
                error: Some(e.into()),
            }
        });
        built.push((key, tls.clone()));
        tls
    }

    /// Builds the TLS of connections to `server`, reading its CA file.
    pub fn new(server: &Server) -> Result<UpstreamTls, String> {
        let config = match server.sslmode {
            SslMode::Disable => None,
            SslMode::Prefer | SslMode::Require => Some(
                rustls::ClientConfig::builder()
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(Unverified::new()))
                    .with_no_client_auth(),
            ),
            SslMode::VerifyFull => {
                use pki_types::pem::PemObject;
                let path = server.sslrootcert.as_ref().ok_or(
                    "upstream.primary.sslrootcert is needed for sslmode = \"verify-full\"",
                )?;
                let mut roots = rustls::RootCertStore::empty();
                for cert in pki_types::CertificateDer::pem_file_iter(path)
                    .map_err(|e| format!("{}: {e}", path.display()))?
                {
                    let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                }
                Some(
                    rustls::ClientConfig::builder()
                        .with_root_certificates(roots)
                        .with_no_client_auth(),
                )
            }
        };
        Ok(UpstreamTls {
            mode: server.sslmode,
            allow_cleartext_password: server.allow_cleartext_password,
            ca: server.sslrootcert.clone(),
            connector: config.map(|c| TlsConnector::from(Arc::new(c))),
            error: None,
        })
    }

    /// Asks `host`'s server for TLS on a fresh `stream` as the mode says.
    pub async fn negotiate(&self, mut stream: TcpStream, host: &str) -> io::Result<ServerStream> {
        if let Some(e) = &self.error {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, e.to_string()));
        }
        let Some(connector) = &self.connector else {
            return Ok(ServerStream::Plain(stream));
        };
        // SSLRequest: length 8, code 80877103.
        stream.write_all(&[0, 0, 0, 8, 4, 210, 22, 47]).await?;
        let mut answer = [0u8; 1];
        stream.read_exact(&mut answer).await?;
        match SslAnswer::of(answer[0]) {
            SslAnswer::Accept => {
                let name = pki_types::ServerName::try_from(host.to_owned())
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                let tls = connector.connect(name, stream).await?;
                Ok(ServerStream::Tls(Box::new(tls)))
            }
            SslAnswer::Refuse if self.mode == SslMode::Prefer => Ok(ServerStream::Plain(stream)),
            SslAnswer::Refuse => Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the server does not offer TLS, which upstream.primary.sslmode requires",
            )),
            SslAnswer::Other(other) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unexpected answer {other:#04x} to SSLRequest"),
            )),
        }
    }
}

/// A connection to PostgreSQL, with or without TLS.
pub enum ServerStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl ServerStream {
    /// Whether it is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self, ServerStream::Tls(_))
    }

    /// Whether the runtime has already seen the socket readable — no system call, and no
    /// waker registered. For an idle connection that means the server spoke (its FATAL) or
    /// closed it.
    pub fn readable_seen(&self) -> bool {
        let tcp = match self {
            ServerStream::Plain(s) => s,
            ServerStream::Tls(s) => s.get_ref().0,
        };
        // `try_io` looks at the readiness the runtime recorded and runs the closure only when
        // it is set; a closure that reads nothing leaves it as it was.
        tcp.try_io(tokio::io::Interest::READABLE, || Ok(())).is_ok()
    }

    /// Writes what the socket takes now, without waiting or registering a waker (plain TCP;
    /// a TLS stream takes nothing here and says WouldBlock, so its caller waits as usual).
    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            ServerStream::Plain(s) => s.try_write(buf),
            ServerStream::Tls(_) => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    /// A non-blocking read from the socket underneath (for liveness checks of idle
    /// connections: any byte or EOF while idle means the connection is unusable).
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ServerStream::Plain(s) => s.try_read(buf),
            ServerStream::Tls(s) => s.get_ref().0.try_read(buf),
        }
    }
}

impl AsyncRead for ServerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ServerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// `prefer` and `require`: encryption without authentication of the server, as in libpq.
/// Handshake signatures are still checked, so the session key is bound to the certificate
/// the server presented.
#[derive(Debug)]
struct Unverified(Arc<rustls::crypto::CryptoProvider>);

impl Unverified {
    fn new() -> Self {
        Unverified(Arc::new(rustls::crypto::ring::default_provider()))
    }
}

impl rustls::client::danger::ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &pki_types::CertificateDer<'_>,
        _intermediates: &[pki_types::CertificateDer<'_>],
        _server_name: &pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
