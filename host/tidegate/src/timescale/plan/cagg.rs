//! Continuous aggregates: the view a declaration makes, the definition recorded in its
//! comment, and their reconciliation (created, or dropped and recreated when the recorded
//! definition differs), with their refresh and retention policies.

use super::policy::{self, Wanted, REFRESH, RETENTION};
use super::{literal, qname, Change, Plan};
use crate::timescale::live::{Live, Name};
use serde::Serialize;
use std::collections::BTreeMap;
use tidegate_config::{qualified, ContinuousAggregate, Hypertable};
use tidegate_sql::quote_ident as quote;

/// The declared definition, as recorded in the aggregate's comment.
#[derive(Serialize)]
struct Definition<'a> {
    hypertable: String,
    time_column: &'a str,
    bucket: String,
    group_by: &'a [String],
    aggregates: &'a BTreeMap<String, Vec<String>>,
}

/// The comment TideGate puts on an aggregate it creates: the definition it was made from.
pub fn definition_comment(h: &Hypertable, table: &Name, a: &ContinuousAggregate) -> String {
    let d = Definition {
        hypertable: qname(table),
        time_column: &h.time_column,
        bucket: a.bucket.pg(),
        group_by: &a.group_by,
        aggregates: &a.aggregates,
    };
    format!(
        "tidegate: {}",
        serde_json::to_string(&d).unwrap_or_default()
    )
}

/// `CREATE MATERIALIZED VIEW … WITH (timescaledb.continuous)` for `a` over `table`. Columns:
/// `bucket`, the group-by columns, then `<column>_<function>` per aggregate.
pub fn create_cagg(h: &Hypertable, table: &Name, view: &Name, a: &ContinuousAggregate) -> String {
    let time = quote(&h.time_column);
    let mut cols = vec![format!("time_bucket({}, {time}) AS bucket", a.bucket.sql())];
    cols.extend(a.group_by.iter().map(|g| quote(g)));
    for (col, fns) in &a.aggregates {
        for f in fns {
            let arg = match f.as_str() {
                "first" | "last" => format!("{}, {time}", quote(col)),
                _ => quote(col),
            };
            cols.push(format!("{f}({arg}) AS {}", quote(&format!("{col}_{f}"))));
        }
    }
    let mut group = vec!["bucket".to_owned()];
    group.extend(a.group_by.iter().map(|g| quote(g)));
    format!(
        "CREATE MATERIALIZED VIEW {} WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS \
         SELECT {} FROM {} GROUP BY {} WITH NO DATA",
        qname(view),
        cols.join(", "),
        qname(table),
        group.join(", ")
    )
}

/// Makes the aggregate `a` over `table` and its policies what is declared.
pub(super) fn reconcile(
    p: &mut Plan,
    h: &Hypertable,
    table: &Name,
    a: &ContinuousAggregate,
    live: &Live,
) {
    let Some(view) = qualified(&a.name) else {
        return;
    };
    let object = qname(&view);
    if let Some(kind) = live.squatters.get(&view) {
        p.errors.push(format!(
            "{object} exists and is not a continuous aggregate (relkind {kind}): rename or drop it"
        ));
        return;
    }
    let comment = definition_comment(h, table, a);
    let create = vec![
        create_cagg(h, table, &view, a),
        format!("COMMENT ON VIEW {object} IS {}", literal(&comment)),
    ];
    let mut fresh = true;
    match live.caggs.get(&view) {
        None => p.changes.push(Change {
            object: object.clone(),
            why: format!("no continuous aggregate: create it (over {})", qname(table)),
            statements: create,
            recreate: false,
        }),
        Some(c) if c.comment.as_deref() == Some(comment.as_str()) => fresh = false,
        Some(c) => {
            let mut statements = vec![format!("DROP MATERIALIZED VIEW {object}")];
            statements.extend(create);
            let how = if c
                .comment
                .as_deref()
                .is_some_and(|t| t.starts_with("tidegate: "))
            {
                "its definition differs from the declared one"
            } else {
                "it was not created from this declaration (no TideGate definition recorded)"
            };
            p.changes.push(Change {
                object: object.clone(),
                why: format!(
                    "{how}: drop and recreate, {} rows to re-materialize",
                    c.rows
                ),
                statements,
                recreate: true,
            });
        }
    }
    // A created or recreated aggregate has no policies yet: every declared one is added.
    let none = Live::default();
    let jobs = if fresh { &none } else { live };
    let refresh = a.refresh.as_ref().map(|r| Wanted {
        after: r.start_offset,
        refresh: Some((r.end_offset, r.every)),
    });
    policy::reconcile(p, &REFRESH, &view, jobs, refresh);
    let retention = a.retention.as_ref().map(|r| Wanted {
        after: r.drop_after,
        refresh: None,
    });
    policy::reconcile(p, &RETENTION, &view, jobs, retention);
}
