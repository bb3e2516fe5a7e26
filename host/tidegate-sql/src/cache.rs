//! A classification cache keyed by fingerprint, so sqlparser runs once per statement shape.

use crate::{classify, fingerprint, Classification, Fingerprint, FunctionLookup};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Classifications by fingerprint. Constants never change a classification (only the shape
/// does), so statements differing in constants share one entry.
pub struct ClassCache {
    map: Mutex<HashMap<Fingerprint, Arc<Classification>>>,
    capacity: usize,
}

impl ClassCache {
    /// A cache holding at most `capacity` shapes; when full it starts over (a burst of
    /// one-off statements cannot grow it without bound).
    pub fn new(capacity: usize) -> Self {
        ClassCache {
            map: Mutex::new(HashMap::with_capacity(capacity.min(4096))),
            capacity: capacity.max(1),
        }
    }

    /// The classification of `sql`, parsed only on a miss.
    pub fn classify(&self, sql: &str, lookup: &dyn FunctionLookup) -> Arc<Classification> {
        self.classify_fingerprinted(sql, fingerprint(sql.as_bytes()), lookup)
    }

    /// Like [`ClassCache::classify`], for a caller that already has `sql`'s fingerprint.
    pub fn classify_fingerprinted(
        &self,
        sql: &str,
        fp: Fingerprint,
        lookup: &dyn FunctionLookup,
    ) -> Arc<Classification> {
        if let Some(c) = self.get(fp) {
            return c;
        }
        let c = Arc::new(classify(sql, lookup));
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= self.capacity {
            map.clear();
        }
        map.insert(fp, c.clone());
        c
    }

    /// A cached classification.
    pub fn get(&self, fp: Fingerprint) -> Option<Arc<Classification>> {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&fp)
            .cloned()
    }

    /// Forgets every cached verdict, e.g. after the function lookup changed (new catalog
    /// snapshot, new allow/deny lists).
    pub fn clear(&self) {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Cached shapes.
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NoLookup;

    #[test]
    fn statements_differing_in_constants_share_one_entry() {
        let cache = ClassCache::new(10);
        for aid in 0..100 {
            let c = cache.classify(
                &format!("SELECT abalance FROM pgbench_accounts WHERE aid = {aid};"),
                &NoLookup,
            );
            assert!(c.read_only);
        }
        assert_eq!(cache.len(), 1);
        assert!(!cache.classify("UPDATE t SET a = 1", &NoLookup).read_only);
        assert_eq!(cache.len(), 2);
        for i in 0..20 {
            cache.classify(&format!("SELECT c{i} FROM t"), &NoLookup);
        }
        assert!(cache.len() <= 10);
    }
}
