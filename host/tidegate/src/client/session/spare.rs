//! Spare buffers, a few per worker thread: a session that goes idle gives its buffers back
//! here and takes them again when its client speaks, so idle clients hold none while busy
//! ones do not pay an allocation per transaction. A few idle sessions — at most [`WARM`] in
//! the process — keep theirs instead: a client that sends its next request at once (a pool,
//! a benchmark) then costs no exchange of buffers per transaction.

use bytes::BytesMut;
use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// The size every spare has (a session's read chunk).
pub(super) const SIZE: usize = super::READ_CHUNK;
/// Spares kept per worker thread; more are freed.
const KEEP: usize = 32;

/// Idle sessions that may keep their buffers at once (each holds up to 4 × `SIZE`).
const WARM: usize = 32;

/// Idle sessions keeping their buffers now.
static WARM_NOW: AtomicUsize = AtomicUsize::new(0);

/// One of the [`WARM`] places for an idle session that keeps its buffers; dropping it frees
/// the place.
pub(super) struct Warm(());

impl Warm {
    /// A place, if one is free.
    pub(super) fn take() -> Option<Warm> {
        if WARM_NOW.fetch_add(1, Relaxed) < WARM {
            return Some(Warm(()));
        }
        WARM_NOW.fetch_sub(1, Relaxed);
        None
    }
}

impl Drop for Warm {
    fn drop(&mut self) {
        WARM_NOW.fetch_sub(1, Relaxed);
    }
}

/// Whether an idle session may keep `bufs` as they are: each is a buffer a spare could be
/// (one given back already, or grown large, is not).
pub(super) fn keepable<const N: usize>(bufs: [&BytesMut; N]) -> bool {
    bufs.iter().all(|b| (1..=4 * SIZE).contains(&b.capacity()))
}

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

    #[test]
    fn only_buffers_a_spare_could_be_are_kept_warm_and_places_are_bounded() {
        let (one, none) = (BytesMut::with_capacity(SIZE), BytesMut::new());
        assert!(keepable([&one, &one]));
        assert!(!keepable([&one, &none]), "a buffer given back already");
        assert!(!keepable([&one, &BytesMut::with_capacity(8 * SIZE)]));
        // Places run out at WARM (sessions of other tests may hold some meanwhile).
        let held: Vec<Warm> = std::iter::from_fn(Warm::take).take(WARM + 1).collect();
        assert!(!held.is_empty() && held.len() <= WARM);
        drop(held);
        assert!(Warm::take().is_some(), "dropped places are free again");
    }
}
