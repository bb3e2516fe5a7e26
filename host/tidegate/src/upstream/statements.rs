//! Names for protocol-level prepared statements on server connections.
//!
//! Clients name their statements freely (`P_0`, `s1`…), and under transaction pooling each
//! transaction may land on another server connection. The broker therefore gives every distinct
//! statement body (query text and parameter types) one process-wide id and prepares it on a
//! server connection as `tg<id>` the first time that connection needs it; clients sharing a
//! query share the server-side statement, as PgBouncer (≥ 1.21) and PgDog do.

use bytes::Bytes;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Bodies remembered at most; past this, new bodies still get fresh ids but are not shared.
pub(crate) const MAX_SHARED: usize = 100_000;
/// Bytes of bodies remembered at most.
const MAX_SHARED_BYTES: usize = 64 << 20;

/// The process-wide map from statement body to id.
#[derive(Default)]
pub struct StatementRegistry {
    ids: Mutex<(HashMap<Bytes, u64>, usize)>,
    next: AtomicU64,
}

impl StatementRegistry {
    /// The id for `body` (everything in a Parse message after the statement name).
    pub fn id(&self, body: &Bytes) -> u64 {
        let mut guard = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        let (ids, bytes) = &mut *guard;
        if let Some(id) = ids.get(body) {
            return *id;
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        if ids.len() < MAX_SHARED && *bytes + body.len() <= MAX_SHARED_BYTES {
            *bytes += body.len();
            ids.insert(body.clone(), id);
        }
        id
    }
}

/// The server-side name of statement `id`, NUL-terminated for the wire.
pub fn server_name(id: u64, out: &mut Vec<u8>) {
    use std::io::Write;
    out.clear();
    let _ = write!(out, "tg{id}\0");
}

/// A stable 64-bit hash of an unnamed statement's body.
pub fn body_hash(body: &[u8]) -> u64 {
    let mut h =
        std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
            .build_hasher();
    h.write(body);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_bodies_share_an_id() {
        let r = StatementRegistry::default();
        let a = r.id(&Bytes::from_static(b"SELECT 1\0\0\0"));
        let b = r.id(&Bytes::from_static(b"SELECT 2\0\0\0"));
        assert_ne!(a, b);
        assert_eq!(r.id(&Bytes::from_static(b"SELECT 1\0\0\0")), a);
        let mut name = Vec::new();
        server_name(a, &mut name);
        assert_eq!(name, format!("tg{a}\0").into_bytes());
    }
}
