//! The client's two halves as a session uses them: a read half that can say when it has
//! something to read (so an idle session holds no buffer), and a write half that takes a
//! write at once when its socket has room (no future or waker on the hot path).

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

/// A client's write half: plain TCP takes a write at once when its socket has room, with no
/// future or waker (TLS and in-process streams always wait).
pub trait ClientWrite: AsyncWrite + Unpin + Send {
    /// What the socket takes now, or WouldBlock.
    fn try_write_now(&self, _buf: &[u8]) -> std::io::Result<usize> {
        Err(std::io::ErrorKind::WouldBlock.into())
    }
}

impl ClientWrite for tokio::net::tcp::OwnedWriteHalf {
    fn try_write_now(&self, buf: &[u8]) -> std::io::Result<usize> {
        self.try_write(buf)
    }
}

impl<T: AsyncWrite + Send> ClientWrite for tokio::io::WriteHalf<T> {}

/// Writes all of `buf`, of which `now` says what a non-waiting write took: the rest (all of
/// it when the socket was full or cannot write so) by waiting on `slow`.
pub(super) async fn write_rest<S: AsyncWrite + Unpin>(
    buf: &[u8],
    now: std::io::Result<usize>,
    slow: &mut S,
) -> std::io::Result<()> {
    let done = match now {
        Ok(n) => n,
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => 0,
        Err(e) => return Err(e),
    };
    if done < buf.len() {
        slow.write_all(&buf[done..]).await?;
    }
    Ok(())
}
