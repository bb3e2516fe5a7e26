//! Policy jobs — compression, retention, continuous-aggregate refresh — reconciled alike:
//! added when missing, replaced when an interval differs, removed when not declared.

use super::{literal, qname, same, Change, Plan};
use crate::timescale::live::{self, Live, Name};
use tidegate_config::Interval;

/// One kind of policy job: its procedure and the functions that add and remove it.
pub(super) struct PolicyKind {
    /// `timescaledb_information.jobs.proc_name`
    proc: &'static str,
    /// The function adding it, and the name of its interval argument.
    add: &'static str,
    after_arg: &'static str,
    /// The function removing it.
    remove: &'static str,
    /// How the plan names it.
    what: &'static str,
}

pub(super) const COMPRESSION: PolicyKind = PolicyKind {
    proc: live::COMPRESSION,
    add: "add_compression_policy",
    after_arg: "compress_after",
    remove: "remove_compression_policy",
    what: "compression",
};

pub(super) const RETENTION: PolicyKind = PolicyKind {
    proc: live::RETENTION,
    add: "add_retention_policy",
    after_arg: "drop_after",
    remove: "remove_retention_policy",
    what: "retention",
};

pub(super) const REFRESH: PolicyKind = PolicyKind {
    proc: live::REFRESH,
    add: "add_continuous_aggregate_policy",
    after_arg: "start_offset",
    remove: "remove_continuous_aggregate_policy",
    what: "refresh",
};

/// What a declared policy's job must hold: its interval, and for a refresh policy the end
/// offset and schedule.
pub(super) struct Wanted {
    pub(super) after: Interval,
    pub(super) refresh: Option<(Interval, Interval)>,
}

/// Makes `object`'s policy of `kind` what is declared: added when missing, removed and added
/// again when its intervals differ, removed when none is declared.
pub(super) fn reconcile(
    p: &mut Plan,
    kind: &PolicyKind,
    object: &Name,
    live: &Live,
    wanted: Option<Wanted>,
) {
    let job = live
        .jobs
        .iter()
        .find(|j| j.proc == kind.proc && j.object == *object);
    let name = qname(object);
    let remove = format!("SELECT {}({})", kind.remove, literal(&name));
    let (why, statements) = match (wanted, job) {
        (None, None) => return,
        (None, Some(j)) => (
            format!("a {} policy (job {}) that is not declared", kind.what, j.id),
            vec![remove],
        ),
        (Some(w), job) => {
            let mut add = format!(
                "SELECT {}({}, {} => {}",
                kind.add,
                literal(&name),
                kind.after_arg,
                w.after.sql()
            );
            if let Some((end, every)) = w.refresh {
                add.push_str(&format!(
                    ", end_offset => {}, schedule_interval => {}",
                    end.sql(),
                    every.sql()
                ));
            }
            add.push(')');
            let Some(j) = job else {
                p.changes.push(Change {
                    object: name,
                    why: format!("no {} policy", kind.what),
                    statements: vec![add],
                    recreate: false,
                });
                return;
            };
            let differs = !same(j.after_seconds, w.after.seconds())
                || w.refresh.is_some_and(|(end, every)| {
                    !same(j.end_seconds, end.seconds())
                        || !same(Some(j.schedule_seconds), every.seconds())
                });
            if !differs {
                return;
            }
            (
                format!(
                    "the {} policy (job {}) differs from the declared one",
                    kind.what, j.id
                ),
                vec![remove, add],
            )
        }
    };
    p.changes.push(Change {
        object: name,
        why,
        statements,
        recreate: false,
    });
}
