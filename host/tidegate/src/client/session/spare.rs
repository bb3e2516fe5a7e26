//! Spare buffers, a few per worker thread: a session that goes idle gives its buffers back
//! here and takes them again when its client speaks, so idle clients hold none while busy
//! ones do not pay an allocation per transaction.

use bytes::BytesMut;
use std::cell::RefCell;

/// The size every spare has (a session's read chunk).
pub(super) const SIZE: usize = super::READ_CHUNK;
/// Spares kept per worker thread; more are freed.
const KEEP: usize = 32;

thread_local! {
    static SPARES: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer of at least [`SIZE`] bytes.
pub(super) fn take() -> BytesMut {
    SPARES
        .with(|s| s.borrow_mut().pop())
        .unwrap_or_else(|| BytesMut::with_capacity(SIZE))
}

/// Gives `b` back (emptied); one that grew large, or shrank below [`SIZE`], is freed.
pub(super) fn give(mut b: BytesMut) {
    if !(SIZE..=4 * SIZE).contains(&b.capacity()) {
        return;
    }
    b.clear();
    SPARES.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < KEEP {
            s.push(b);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spares_come_back_empty_and_odd_sizes_are_freed() {
        let mut b = take();
        assert!(b.capacity() >= SIZE);
        b.extend_from_slice(b"hello");
        give(b);
        let again = take();
        assert!(again.is_empty() && again.capacity() >= SIZE);
        give(BytesMut::with_capacity(16));
        give(BytesMut::with_capacity(SIZE * 8));
        let fresh = take();
        assert!(fresh.capacity() >= SIZE && fresh.capacity() <= 4 * SIZE);
    }
}
