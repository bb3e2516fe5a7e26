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

/// Gives each buffer that has none a spare (one look at the worker's spares for all).
pub(super) fn fill<const N: usize>(bufs: [&mut BytesMut; N]) {
    SPARES.with(|s| {
        let mut s = s.borrow_mut();
        for b in bufs {
            if b.capacity() == 0 {
                *b = s.pop().unwrap_or_else(|| BytesMut::with_capacity(SIZE));
            }
        }
    });
}

/// Gives back each buffer that holds nothing, leaving it without one; one that grew large
/// (or is too small to be made whole) is freed.
pub(super) fn give_empty<const N: usize>(bufs: [&mut BytesMut; N]) {
    SPARES.with(|s| {
        let mut s = s.borrow_mut();
        for b in bufs {
            if b.is_empty() && b.capacity() > 0 {
                if let Some(b) = reclaimed(std::mem::take(b)) {
                    if s.len() < KEEP {
                        s.push(b);
                    }
                }
            }
        }
    });
}

/// `b` emptied and whole again, if it is worth keeping.
fn reclaimed(mut b: BytesMut) -> Option<BytesMut> {
    b.clear();
    // A read buffer's messages were split off its front, which leaves it a shrinking window
    // on its allocation: once they are gone, reserving takes the whole allocation back
    // without allocating (else every request would free a buffer here and allocate one in
    // `take`).
    if b.capacity() < SIZE {
        b.reserve(SIZE);
    }
    (SIZE..=4 * SIZE).contains(&b.capacity()).then_some(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take() -> BytesMut {
        let mut b = BytesMut::new();
        fill([&mut b]);
        b
    }

    #[test]
    fn spares_come_back_empty_and_odd_sizes_are_freed() {
        let mut b = take();
        assert!(b.capacity() >= SIZE);
        b.extend_from_slice(b"hello");
        give_empty([&mut b]);
        assert!(b.capacity() > 0, "a buffer holding data is kept");
        b.clear();
        give_empty([&mut b]);
        assert_eq!(b.capacity(), 0, "an empty one is given back");
        let again = take();
        assert!(again.is_empty() && again.capacity() >= SIZE);
        // A buffer whose front was split off and dropped comes back whole, not reallocated.
        let mut read = take();
        read.extend_from_slice(&[1; 100]);
        let at = read.as_ptr();
        drop(read.split_to(100));
        give_empty([&mut read]);
        assert_eq!(take().as_ptr(), at);
        give_empty([&mut BytesMut::with_capacity(SIZE * 8)]);
        let fresh = take();
        assert!(fresh.capacity() >= SIZE && fresh.capacity() <= 4 * SIZE);
    }
}
