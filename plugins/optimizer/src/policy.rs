//! The optimizer's decision about a statement, from the rules in [`crate::guard`],
//! [`crate::cagg`] and [`crate::limit`].

use crate::config::{Policy, Unbounded};
use crate::scan::Scan;
use crate::{cagg, guard, limit};
use tidegate_plugin_sdk::prelude::*;
use tidegate_plugin_sdk::{Decision, Denial, Statement, StatementKind};

/// The SQLSTATE of an unbounded-scan denial: program_limit_exceeded (class 54, which clients
/// do not retry — unlike class 53, insufficient resources).
pub const SQLSTATE_UNBOUNDED: &str = "54000";

/// A decision, and a line for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// What to do with the statement.
    pub decision: Decision,
    /// What to log (at info level), if anything.
    pub log: Option<String>,
}

impl Outcome {
    fn allow() -> Self {
        Outcome {
            decision: Decision::Allow,
            log: None,
        }
    }
}

/// Decides about `stmt`:
///
/// 1. Only reads are considered; anything else is allowed.
/// 2. A read of a guarded hypertable with no condition on its time column is denied
///    (`unbounded = "reject"`) or allowed with a log line (`"allow"`).
/// 3. A single-table query with exactly a continuous aggregate's shape is rewritten to read
///    the aggregate.
/// 4. A plain SELECT reading a guarded hypertable without LIMIT gets `LIMIT max_rows`.
///
/// Text that does not lex is allowed unchanged: PostgreSQL will report the error.
pub fn decide(policy: &Policy, stmt: &Statement) -> Outcome {
    if stmt.kind != StatementKind::Read {
        return Outcome::allow();
    }
    let guarded = policy.hypertables_in(&stmt.tables);
    let caggs: Vec<_> = policy
        .caggs
        .iter()
        .filter(|c| stmt.tables.len() == 1 && c.hypertable.matches_ref(&stmt.tables[0]))
        .cloned()
        .collect();
    if guarded.is_empty() && caggs.is_empty() {
        return Outcome::allow();
    }
    let Some(scan) = Scan::new(&stmt.sql) else {
        return Outcome::allow();
    };
    let mut log = None;
    if let Some(h) = guarded
        .iter()
        .find(|h| !guard::bounded(&scan, &h.time_column))
    {
        let column = &h.time_column;
        let hint = format!("add a time range, e.g. WHERE {column} > now() - interval '1 day'");
        match policy.unbounded {
            Unbounded::Reject => {
                return Outcome {
                    decision: Decision::Deny(
                        Denial::new(
                            SQLSTATE_UNBOUNDED,
                            format!(
                                "unbounded scan of hypertable {}: no condition on its time \
                                 column {column} (tidegate optimizer)",
                                h.table
                            ),
                        )
                        .with_hint(hint),
                    ),
                    log: None,
                };
            }
            Unbounded::Allow => {
                log = Some(format!(
                    "unbounded read of hypertable {} by {}: {hint}",
                    h.table, stmt.principal.user
                ));
            }
        }
    }
    let rewritten = cagg::rewrite(&stmt.sql, &caggs);
    let limited = match policy.max_rows {
        Some(n) if !guarded.is_empty() => {
            limit::add_limit(rewritten.as_deref().unwrap_or(&stmt.sql), n)
        }
        _ => None,
    };
    let rewrote_cagg = rewritten.is_some();
    let decision = match limited.or(rewritten) {
        Some(sql) => {
            if rewrote_cagg {
                let line = format!(
                    "rewrote a query on {} to a continuous aggregate: {sql}",
                    stmt.tables[0]
                );
                log = Some(match log {
                    Some(l) => format!("{l}; {line}"),
                    None => line,
                });
            }
            Decision::Rewrite(sql)
        }
        None => Decision::Allow,
    };
    Outcome { decision, log }
}
