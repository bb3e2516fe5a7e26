//! The streams as a session uses them: a client read half that can say when it has something
//! to read (so an idle session holds no buffer), and writes, to the client or a server, that go
//! out at once when the socket has room (no future or waker on the hot path).

use std::io::ErrorKind;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

/// A client's read half: it can say when it has something to read without a buffer to read
/// into, so that an idle session holds none (plain TCP; TLS and in-process streams cannot
/// tell, and read into a buffer at once).
pub trait ClientRead: AsyncRead + Unpin + Send {
    /// Ready when a read may find data or EOF (always, when the stream cannot tell).
    fn poll_readable(&self, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Whether `poll_readable` can say Pending (else it is always Ready, and a read waits).
    const WAITS_FOR_READINESS: bool = false;
}

impl ClientRead for tokio::net::tcp::OwnedReadHalf {
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.as_ref().poll_read_ready(cx)
    }

    const WAITS_FOR_READINESS: bool = true;
}

impl<T: AsyncRead + Send> ClientRead for tokio::io::ReadHalf<T> {}

/// A stream a session writes to (the client's write half, or a server connection) that can
/// take a write at once when its socket has room, with no future or waker: plain TCP can; TLS
/// and in-process streams always wait.
pub trait DirectWrite: AsyncWrite + Unpin + Send {
    /// What the socket takes now, or WouldBlock.
    fn try_write_now(&self, _buf: &[u8]) -> std::io::Result<usize> {
        Err(ErrorKind::WouldBlock.into())
    }
}

impl DirectWrite for tokio::net::tcp::OwnedWriteHalf {
    fn try_write_now(&self, buf: &[u8]) -> std::io::Result<usize> {
        self.try_write(buf)
    }
}

impl<T: AsyncWrite + Send> DirectWrite for tokio::io::WriteHalf<T> {}

impl DirectWrite for crate::upstream::backend::ServerStream {
    fn try_write_now(&self, buf: &[u8]) -> std::io::Result<usize> {
        self.try_write(buf)
    }
}

/// Writes all of `buf` to `out`: at once what its socket takes, the rest by waiting.
pub(super) async fn write_out<S: DirectWrite>(out: &mut S, buf: &[u8]) -> std::io::Result<()> {
    let done = match out.try_write_now(buf) {
        Ok(n) => n,
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => 0,
        Err(e) => return Err(e),
    };
    if done < buf.len() {
        out.write_all(&buf[done..]).await?;
    }
    Ok(())
}
