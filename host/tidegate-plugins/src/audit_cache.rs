//! Reusing a deterministic audit plugin's answers. A plugin that declares itself
//! deterministic promises that its `on-audit` answer depends only on the event's principal,
//! fingerprint, kind, tables, decision, decided-by and SQLSTATE — not on its rows, duration
//! or time — so events alike in those get the answer the plugin gave the first of them, with
//! their own rows, duration and time. Every statement is audited, and the answer of the first
//! such event saves a plugin call for every later one (a call copies the whole event in and
//! the record out: most of an audit record's cost in the broker).
//!
//! An answer is kept only if the plugin passed rows, duration and time through unchanged, so
//! a plugin that blanks them is still called every time; failures are never kept.

use crate::types::{AuditEvent, AuditRecord};
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};

/// Answers kept at most (all are dropped when full: shapes in use come back at once).
const MAX_ENTRIES: usize = 10_000;

/// Kept answers, by a hash of (plugin version, the event's stable fields).
#[derive(Default)]
pub(crate) struct AuditCache {
    map: Mutex<HashMap<u64, Kept>>,
}

struct Kept {
    version: u64,
    /// The event the plugin answered, to tell a hash collision from a hit.
    event: AuditEvent,
    answer: Option<AuditRecord>,
}

impl AuditCache {
    /// The kept answer of plugin `version` for an event alike to `event`, with `event`'s own
    /// rows, duration and time; `None` when there is none.
    pub(crate) fn get(&self, version: u64, event: &AuditEvent) -> Option<Option<AuditRecord>> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let kept = map.get(&key(version, event))?;
        if kept.version != version || !alike(&kept.event, event) {
            return None;
        }
        Some(kept.answer.as_ref().map(|r| {
            let mut r = r.clone();
            r.event.rows = event.rows;
            r.event.duration_us = event.duration_us;
            r.event.at_us = event.at_us;
            r
        }))
    }

    /// Keeps plugin `version`'s `answer` to `event`, unless the plugin changed the event's
    /// rows, duration or time (then it must see every event).
    pub(crate) fn put(&self, version: u64, event: &AuditEvent, answer: &Option<AuditRecord>) {
        if let Some(r) = answer {
            let e = &r.event;
            if (e.rows, e.duration_us, e.at_us) != (event.rows, event.duration_us, event.at_us) {
                return;
            }
        }
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(
            key(version, event),
            Kept {
                version,
                event: event.clone(),
                answer: answer.clone(),
            },
        );
    }
}

fn key(version: u64, e: &AuditEvent) -> u64 {
    let mut h = DefaultHasher::new();
    version.hash(&mut h);
    let p = &e.principal;
    (&p.user, &p.role, &p.database, &p.roles).hash(&mut h);
    (&e.fingerprint, e.kind, &e.tables).hash(&mut h);
    (&e.decision, &e.decided_by, &e.sqlstate).hash(&mut h);
    h.finish()
}

/// Equal in everything but rows, duration and time.
fn alike(a: &AuditEvent, b: &AuditEvent) -> bool {
    (Arc::ptr_eq(&a.principal, &b.principal) || a.principal == b.principal)
        && a.fingerprint == b.fingerprint
        && a.kind == b.kind
        && a.tables == b.tables
        && a.decision == b.decision
        && a.decided_by == b.decided_by
        && a.sqlstate == b.sqlstate
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Principal, StatementKind, TableRef};

    fn event(user: &str, rows: u64) -> AuditEvent {
        AuditEvent {
            principal: Arc::new(Principal {
                user: user.into(),
                role: user.into(),
                roles: vec![],
                database: "db".into(),
            }),
            fingerprint: "00ff".into(),
            kind: StatementKind::Read,
            tables: [TableRef {
                schema: None,
                name: "t".into(),
            }]
            .into(),
            decision: "allow".into(),
            decided_by: None,
            rows,
            duration_us: rows * 10,
            sqlstate: None,
            at_us: rows as i64,
        }
    }

    fn record(e: &AuditEvent, label: &str) -> Option<AuditRecord> {
        Some(AuditRecord {
            event: e.clone(),
            labels: vec![("l".into(), label.into())],
        })
    }

    #[test]
    fn alike_events_share_an_answer_with_their_own_rows_duration_and_time() {
        let cache = AuditCache::default();
        let first = event("ann", 1);
        cache.put(7, &first, &record(&first, "x"));
        let later = event("ann", 5);
        let got = cache.get(7, &later).expect("hit").expect("a record");
        assert_eq!(got.labels, vec![("l".into(), "x".into())]);
        assert_eq!(
            (got.event.rows, got.event.duration_us, got.event.at_us),
            (5, 50, 5)
        );
        // Another user, another version, another SQLSTATE: misses.
        assert!(cache.get(7, &event("bob", 1)).is_none());
        assert!(cache.get(8, &later).is_none());
        let mut failed = event("ann", 1);
        failed.sqlstate = Some("42501".into());
        assert!(cache.get(7, &failed).is_none());
        // "Nothing to persist" is an answer too.
        cache.put(7, &failed, &None);
        assert_eq!(cache.get(7, &failed), Some(None));
    }

    #[test]
    fn an_answer_that_changed_rows_duration_or_time_is_not_kept() {
        let cache = AuditCache::default();
        let e = event("ann", 3);
        let mut blanked = record(&e, "x");
        if let Some(r) = blanked.as_mut() {
            r.event.rows = 0;
        }
        cache.put(1, &e, &blanked);
        assert!(cache.get(1, &e).is_none());
    }
}
