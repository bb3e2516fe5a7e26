//! The audit hash chain: each record's HMAC covers the previous record's HMAC, so altering,
//! removing, reordering or forging a record breaks every link after it; signed checkpoints
//! kept off the database catch the removal of the newest records.

use hmac::Mac as _;
use serde_json::json;
use std::sync::Arc;
use tidegate_plugins::Keys;
pub use tidegate_plugins::{hex, unhex};

/// The chain's starting point, before record 1.
pub const GENESIS: [u8; 32] = [0; 32];
const RECORD_DOMAIN: &[u8] = b"tidegate-audit-record-v1\0";
const CHECKPOINT_DOMAIN: &[u8] = b"tidegate-audit-checkpoint-v1\0";

/// One persisted audit record, exactly as stored (its HMAC covers every other field). The text
/// columns records of one batch usually have in common are shared, not copied per record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Position in the chain, from 1.
    pub seq: i64,
    /// When the statement started, µs since the Unix epoch.
    pub at_us: i64,
    /// The audit plugin that produced it.
    pub plugin: Arc<str>,
    /// Broker user.
    pub username: Arc<str>,
    /// PostgreSQL role.
    pub role: Arc<str>,
    /// Database.
    pub database: Arc<str>,
    /// Statement kind.
    pub kind: String,
    /// Tables referenced, `schema.table` or `table`, comma-separated.
    pub tables: Arc<str>,
    /// Statement fingerprint.
    pub fingerprint: Arc<str>,
    /// `allow`, `deny`, `rewrite`.
    pub decision: String,
    /// The plugin that denied or rewrote it.
    pub decided_by: Option<String>,
    /// Rows returned or affected.
    pub rows: i64,
    /// Duration in µs.
    pub duration_us: i64,
    /// The error's SQLSTATE, if it failed.
    pub sqlstate: Option<String>,
    /// The plugin's labels as a JSON object.
    pub labels: Arc<str>,
    /// The version of the chain key that made `hash`.
    pub key_id: i32,
    /// HMAC-SHA-256 over the previous record's hash and this record's fields.
    pub hash: Vec<u8>,
}

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

fn field(mac: &mut HmacSha256, v: Option<&str>) {
    match v {
        Some(s) => {
            mac.update(&(s.len() as u32).to_be_bytes());
            mac.update(s.as_bytes());
        }
        None => mac.update(&u32::MAX.to_be_bytes()),
    }
}

/// Feeds `mac` what a record's HMAC covers: the previous hash and every field but the hash
/// itself, each length-prefixed so no two records encode alike (no buffer is built).
fn feed(mac: &mut HmacSha256, prev: &[u8], r: &Row) {
    mac.update(RECORD_DOMAIN);
    mac.update(prev);
    mac.update(&r.seq.to_be_bytes());
    mac.update(&r.at_us.to_be_bytes());
    for f in [
        Some(&*r.plugin),
        Some(&*r.username),
        Some(&*r.role),
        Some(&*r.database),
        Some(&r.kind),
        Some(&*r.tables),
        Some(&*r.fingerprint),
        Some(&r.decision),
        r.decided_by.as_deref(),
    ] {
        field(mac, f);
    }
    mac.update(&r.rows.to_be_bytes());
    mac.update(&r.duration_us.to_be_bytes());
    field(mac, r.sqlstate.as_deref());
    field(mac, Some(&*r.labels));
    mac.update(&r.key_id.to_be_bytes());
}

/// The chain key: one named key of `[[plugins.keys]]`, any version of which verifies.
pub struct ChainKey {
    keys: Keys,
    name: String,
    /// The current version and its keyed MAC state.
    current: (i32, HmacSha256),
}

impl ChainKey {
    /// The key named `name` in `keys`.
    pub fn new(keys: Keys, name: &str) -> Option<ChainKey> {
        let id = keys.current_id(name)?;
        let current = keys.mac_state(name, id)?;
        Some(ChainKey {
            current: (id as i32, current),
            keys,
            name: name.to_owned(),
        })
    }

    /// The version new records are made with.
    pub fn current_id(&self) -> i32 {
        self.current.0
    }

    /// A MAC keyed with version `id` (the current one is keyed once, then cloned).
    fn state(&self, id: i32) -> Option<HmacSha256> {
        if id == self.current.0 {
            return Some(self.current.1.clone());
        }
        self.keys.mac_state(&self.name, u32::try_from(id).ok()?)
    }

    /// Sets `r.hash` to link it after `prev` (with the current key version).
    pub fn seal(&self, prev: &[u8], r: &mut Row) {
        r.key_id = self.current.0;
        let mut mac = self.current.1.clone();
        feed(&mut mac, prev, r);
        r.hash = mac.finalize().into_bytes().to_vec();
    }

    /// Whether `r` is correctly linked after `prev` (compared in constant time).
    pub fn check(&self, prev: &[u8], r: &Row) -> bool {
        let Some(mut mac) = self.state(r.key_id) else {
            return false;
        };
        feed(&mut mac, prev, r);
        mac.verify_slice(&r.hash).is_ok()
    }

    /// A signed checkpoint line for the chain at `seq` with hash `hash`.
    pub fn checkpoint(&self, seq: i64, hash: &[u8], at_us: i64) -> String {
        let id = self.current.0;
        let mut mac = self.current.1.clone();
        mac.update(&checkpoint_bytes(seq, hash, at_us, id));
        let mac = mac.finalize().into_bytes();
        json!({
            "seq": seq,
            "hash": hex(hash),
            "at_us": at_us,
            "key_id": id,
            "mac": hex(&mac),
        })
        .to_string()
    }

    /// Reads a checkpoint line; `None` if it is malformed or its signature is wrong.
    pub fn read_checkpoint(&self, line: &str) -> Option<Checkpoint> {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        let seq = v.get("seq")?.as_i64()?;
        let hash = unhex(v.get("hash")?.as_str()?)?;
        let at_us = v.get("at_us")?.as_i64()?;
        let id = i32::try_from(v.get("key_id")?.as_i64()?).ok()?;
        let mac = unhex(v.get("mac")?.as_str()?)?;
        let mut m = self.state(id)?;
        m.update(&checkpoint_bytes(seq, &hash, at_us, id));
        m.verify_slice(&mac).ok()?;
        Some(Checkpoint { seq, hash, at_us })
    }
}

/// A verified checkpoint: the chain had reached `seq` with `hash` at `at_us`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Its record.
    pub seq: i64,
    /// That record's hash.
    pub hash: Vec<u8>,
    /// When it was written.
    pub at_us: i64,
}

fn checkpoint_bytes(seq: i64, hash: &[u8], at_us: i64, id: i32) -> Vec<u8> {
    let mut b = Vec::with_capacity(96);
    b.extend_from_slice(CHECKPOINT_DOMAIN);
    b.extend_from_slice(&seq.to_be_bytes());
    b.extend_from_slice(hash);
    b.extend_from_slice(&at_us.to_be_bytes());
    b.extend_from_slice(&id.to_be_bytes());
    b
}

/// Where a chain first breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    /// The first record that is missing, altered, out of place or forged.
    pub seq: i64,
    /// What is wrong there.
    pub reason: String,
}

/// A record the chain must reach, with the hash it must have there: a signed checkpoint, or the
/// chain head the table holds.
struct Mark {
    seq: i64,
    hash: Vec<u8>,
    /// Who says so, for the report.
    by: String,
}

/// Walks records in stored order (by `seq`), checking each link. Feed rows with
/// [`Verifier::push`]; [`Verifier::finish`] checks the checkpoints and the chain head.
pub struct Verifier<'a> {
    key: &'a ChainKey,
    prev: Vec<u8>,
    expected: i64,
    marks: Vec<Mark>,
    /// Hashes at marked positions, as found.
    at_marks: std::collections::HashMap<i64, Vec<u8>>,
    broken: Option<Break>,
}

impl<'a> Verifier<'a> {
    /// A walk from the genesis, checking against `checkpoints`.
    pub fn new(key: &'a ChainKey, checkpoints: Vec<Checkpoint>) -> Verifier<'a> {
        Verifier {
            key,
            prev: GENESIS.to_vec(),
            expected: 1,
            marks: checkpoints
                .into_iter()
                .map(|c| Mark {
                    seq: c.seq,
                    hash: c.hash,
                    by: format!("the checkpoint signed at {}", c.at_us),
                })
                .collect(),
            at_marks: Default::default(),
            broken: None,
        }
    }

    /// The chain head the table holds, read before the walk: the chain must reach it, and
    /// the record there must be the one the head names. Like a checkpoint, but not signed (it
    /// lives in the same database), so it catches a tail deleted without the head.
    pub fn expect_head(&mut self, seq: i64, hash: Vec<u8>) {
        if seq > 0 {
            self.marks.push(Mark {
                seq,
                hash,
                by: "the chain head".into(),
            });
        }
    }

    /// Checks the next record; returns false once the chain is broken (stop feeding).
    pub fn push(&mut self, r: &Row) -> bool {
        if self.broken.is_some() {
            return false;
        }
        let why = if r.seq > self.expected {
            Some(format!("record {} is missing", self.expected))
        } else if r.seq < self.expected {
            Some(format!(
                "record {} appears again after record {}",
                r.seq,
                self.expected - 1
            ))
        } else if !self.key.check(&self.prev, r) {
            Some(format!(
                "record {} does not match its hash: altered, moved or forged",
                r.seq
            ))
        } else {
            None
        };
        if let Some(reason) = why {
            self.broken = Some(Break {
                seq: self.expected.min(r.seq),
                reason,
            });
            return false;
        }
        if self.marks.iter().any(|m| m.seq == r.seq) {
            self.at_marks.insert(r.seq, r.hash.clone());
        }
        self.prev.clone_from(&r.hash);
        self.expected += 1;
        true
    }

    /// The verdict: `Ok(records checked)` or the first break.
    pub fn finish(self) -> Result<i64, Break> {
        if let Some(b) = self.broken {
            return Err(b);
        }
        let last = self.expected - 1;
        for m in &self.marks {
            if m.seq > last {
                return Err(Break {
                    seq: last + 1,
                    reason: format!(
                        "records {}..={} are missing: {} says the chain reaches {}",
                        last + 1,
                        m.seq,
                        m.by,
                        m.seq
                    ),
                });
            }
            if self.at_marks.get(&m.seq) != Some(&m.hash) {
                return Err(Break {
                    seq: m.seq,
                    reason: format!("record {} differs from {}", m.seq, m.by),
                });
            }
        }
        Ok(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ChainKey {
        let mut keys = Keys::default();
        keys.insert("audit", 1, [7; 32]);
        ChainKey::new(keys, "audit").expect("key")
    }

    fn chain(key: &ChainKey, n: i64) -> Vec<Row> {
        let mut prev = GENESIS.to_vec();
        (1..=n)
            .map(|seq| {
                let mut r = Row {
                    seq,
                    at_us: seq * 1000,
                    plugin: "audit".into(),
                    username: "app".into(),
                    role: "app".into(),
                    database: "db".into(),
                    kind: "read".into(),
                    tables: "t".into(),
                    fingerprint: "00".into(),
                    decision: "allow".into(),
                    decided_by: None,
                    rows: 1,
                    duration_us: 5,
                    sqlstate: None,
                    labels: "{}".into(),
                    key_id: 0,
                    hash: Vec::new(),
                };
                key.seal(&prev, &mut r);
                prev.clone_from(&r.hash);
                r
            })
            .collect()
    }

    fn walk(key: &ChainKey, rows: &[Row], head: Option<(i64, Vec<u8>)>) -> Result<i64, Break> {
        let mut v = Verifier::new(key, Vec::new());
        if let Some((seq, hash)) = head {
            v.expect_head(seq, hash);
        }
        for r in rows {
            if !v.push(r) {
                break;
            }
        }
        v.finish()
    }

    #[test]
    fn the_chain_must_reach_its_head_and_match_it() {
        let key = key();
        let rows = chain(&key, 10);
        let head = |i: usize| Some((rows[i].seq, rows[i].hash.clone()));
        assert_eq!(walk(&key, &rows, head(9)), Ok(10));
        // Records written after the head was read follow it: still intact.
        assert_eq!(walk(&key, &rows, head(6)), Ok(10));
        // An empty chain's head is the genesis.
        assert_eq!(walk(&key, &[], Some((0, GENESIS.to_vec()))), Ok(0));
        // The newest records deleted, the head left: the first missing one is named.
        let b = walk(&key, &rows[..7], head(9)).expect_err("tail removed");
        assert_eq!(b.seq, 8, "{}", b.reason);
        assert!(b.reason.contains("chain head"), "{}", b.reason);
        // A head naming another hash than the record at its position.
        let b = walk(&key, &rows, Some((10, vec![0; 32]))).expect_err("head differs");
        assert_eq!(b.seq, 10, "{}", b.reason);
        // Without a head, only the links are checked.
        assert_eq!(walk(&key, &rows[..7], None), Ok(7));
        // A record with a number already taken is a break, with or without an index to refuse it.
        let mut dup = rows.clone();
        dup.insert(5, rows[4].clone());
        let b = walk(&key, &dup, head(9)).expect_err("duplicate");
        assert_eq!(b.seq, 5, "{}", b.reason);
    }
}
