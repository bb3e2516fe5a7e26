//! A session's memory of statement shapes the plugin chain has settled.
//!
//! Applications repeat a handful of statements with new literals. When the chain allowed a
//! fingerprint with every applicable `on-statement` hook deterministic (answered from the
//! decision cache or by a plugin that declared itself deterministic), the statement touched no
//! table with declared columns and was no DDL while data hooks apply (a DDL makes them forget
//! their column lookup), the next statement of that fingerprint gets
//! the same answer without being described again: no text copy, classification, decision-cache
//! lookups or data-hook checks — only its fingerprint and, for audit, the shape remembered.
//!
//! An entry holds while the chain, its [`HookSet::stamp`] (which changes when an applicable
//! plugin is swapped or quarantined) and the database catalog are the ones it was made under;
//! a change of any of them forgets every entry. Principal and database are fixed per session.
//!
//! [`HookSet::stamp`]: tidegate_plugins::HookSet::stamp

use super::audit::Shape;
use crate::upstream::catalog::DbCatalog;
use std::sync::Arc;
use tidegate_plugins::Chain;

/// Shapes remembered per session (oldest forgotten first).
const ENTRIES: usize = 8;

/// What the entries were made under.
struct Basis {
    chain: Arc<Chain>,
    catalog: Arc<DbCatalog>,
    stamp: u64,
}

/// The settled shapes of one session.
#[derive(Default)]
pub(super) struct Memo {
    basis: Option<Basis>,
    entries: Vec<(u128, Shape)>,
}

impl Memo {
    /// The shape settled for `fingerprint` under this chain, stamp and catalog.
    pub(super) fn get(
        &self,
        chain: &Arc<Chain>,
        catalog: &Arc<DbCatalog>,
        stamp: u64,
        fingerprint: u128,
    ) -> Option<&Shape> {
        if !self.holds(chain, catalog, stamp) {
            return None;
        }
        self.entries
            .iter()
            .find(|(fp, _)| *fp == fingerprint)
            .map(|(_, s)| s)
    }

    /// Remembers that `fingerprint` was settled, with its audit shape.
    pub(super) fn put(
        &mut self,
        chain: &Arc<Chain>,
        catalog: &Arc<DbCatalog>,
        stamp: u64,
        fingerprint: u128,
        shape: Shape,
    ) {
        if !self.holds(chain, catalog, stamp) {
            self.entries.clear();
            self.basis = Some(Basis {
                chain: chain.clone(),
                catalog: catalog.clone(),
                stamp,
            });
        }
        if self.entries.iter().any(|(fp, _)| *fp == fingerprint) {
            return;
        }
        if self.entries.len() == ENTRIES {
            self.entries.remove(0);
        }
        self.entries.push((fingerprint, shape));
    }

    fn holds(&self, chain: &Arc<Chain>, catalog: &Arc<DbCatalog>, stamp: u64) -> bool {
        self.basis.as_ref().is_some_and(|b| {
            b.stamp == stamp && Arc::ptr_eq(&b.chain, chain) && Arc::ptr_eq(&b.catalog, catalog)
        })
    }
}
