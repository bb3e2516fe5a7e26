//! A cached reply as stored: the generations it was computed under, then the wire messages.

use bytes::{Buf, BufMut, Bytes, BytesMut};

const VERSION: u8 = 1;

/// A reply recorded from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The generation of every dependency when the query was sent (an entry is served only
    /// while they are all unchanged).
    pub gens: Vec<u64>,
    /// The RowDescription message (empty when the client did not get one).
    pub description: Bytes,
    /// DataRow messages and the CommandComplete that ends them.
    pub body: Bytes,
}

impl Entry {
    /// The stored form.
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(
            1 + 2 + 8 * self.gens.len() + 4 + self.description.len() + self.body.len(),
        );
        b.put_u8(VERSION);
        b.put_u16(self.gens.len() as u16);
        for g in &self.gens {
            b.put_u64(*g);
        }
        b.put_u32(self.description.len() as u32);
        b.put_slice(&self.description);
        b.put_slice(&self.body);
        b.freeze()
    }

    /// Reads the stored form; `None` for anything malformed (treated as a miss).
    pub fn decode(mut b: Bytes) -> Option<Entry> {
        if b.remaining() < 3 || b.get_u8() != VERSION {
            return None;
        }
        let n = b.get_u16() as usize;
        if b.remaining() < n * 8 + 4 {
            return None;
        }
        let gens = (0..n).map(|_| b.get_u64()).collect();
        let d = b.get_u32() as usize;
        if b.remaining() < d {
            return None;
        }
        let description = b.split_to(d);
        Some(Entry {
            gens,
            description,
            body: b,
        })
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.description.len() + self.body.len() + 8 * self.gens.len()
    }

    /// Whether the entry holds nothing (never the case for a stored reply).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let e = Entry {
            gens: vec![1, 0, u64::MAX],
            description: Bytes::from_static(b"T\0\0\0\x06\0\0"),
            body: Bytes::from_static(b"C\0\0\0\x0bSELECT 0\0"),
        };
        assert_eq!(Entry::decode(e.encode()), Some(e.clone()));
        let enc = e.encode();
        for cut in 0..enc.len() - e.body.len() {
            assert_eq!(Entry::decode(enc.slice(..cut)), None, "cut at {cut}");
        }
        assert_eq!(Entry::decode(Bytes::from_static(b"\x09\0\0")), None);
    }
}
