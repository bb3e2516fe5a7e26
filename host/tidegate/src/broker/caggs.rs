//! Continuous aggregates for the optimizer plugin: read from TimescaleDB's catalog
//! (`timescaledb_information.continuous_aggregates`) and handed to every optimizer-kind plugin
//! as its `continuous_aggregates` configuration, so it can rewrite a `time_bucket` aggregate
//! over a raw hypertable to read the aggregate instead.
//!
//! A plugin entry gets the aggregates of the one database it applies to (its only
//! `databases` entry, else `upstream.primary.database`); an entry for several databases gets
//! none, since a rewrite must never name a view another database lacks. Hand-written
//! `continuous_aggregates` win over discovery. The catalog is read when the chain is built
//! (start, reload) and every `plugins.cagg_refresh`; a change swaps the plugin in place.

use crate::broker::Control;
use serde_json::{json, Map, Value};
use sqlparser::ast::{Expr, FunctionArg, FunctionArgExpr, FunctionArguments, SelectItem, SetExpr};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlx::Row as _;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tidegate_config::{Config, PluginEntry, PluginKind};

const CAGGS: &str = "\
SELECT c.view_schema::text, c.view_name::text, c.hypertable_schema::text, \
       c.hypertable_name::text, c.view_definition::text, \
       (SELECT d.column_name::text FROM timescaledb_information.dimensions d \
         WHERE d.hypertable_schema = c.hypertable_schema AND d.hypertable_name = c.hypertable_name \
         ORDER BY d.dimension_number LIMIT 1) \
FROM timescaledb_information.continuous_aggregates c ORDER BY 1, 2";

/// The database whose aggregates `entry` gets, if exactly one.
fn entry_database<'a>(config: &'a Config, entry: &'a PluginEntry) -> Option<&'a str> {
    match entry.databases.as_slice() {
        [] => Some(&config.upstream.primary.database),
        [one] if one != "*" => Some(one),
        _ => None,
    }
}

/// Whether the broker discovers aggregates for `entry`.
fn injects(entry: &PluginEntry) -> bool {
    entry.kind == PluginKind::Optimizer && !entry.config.contains_key("continuous_aggregates")
}

/// `entry`'s configuration as the plugin gets it, with the discovered aggregates.
pub fn plugin_config(ctl: Option<&Control>, entry: &PluginEntry) -> Value {
    let mut v = serde_json::to_value(&entry.config).unwrap_or_else(|_| json!({}));
    if !injects(entry) {
        return v;
    }
    let found = ctl.and_then(|ctl| {
        ctl.caggs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&entry.name)
            .cloned()
    });
    if let (Some(found), Some(obj)) = (found, v.as_object_mut()) {
        if !found.is_empty() {
            obj.insert("continuous_aggregates".into(), Value::Array(found));
        }
    }
    v
}

/// Reads the aggregates of every optimizer entry's database into `ctl.caggs`; returns whether
/// anything changed. A database that cannot be read keeps what was known.
pub async fn discover(ctl: &Control, config: &Config) -> bool {
    let mut found: HashMap<String, Vec<Value>> = HashMap::new();
    let mut by_db: HashMap<String, Option<Vec<Value>>> = HashMap::new();
    for e in config.plugins.chain.iter().filter(|e| injects(e)) {
        let Some(db) = entry_database(config, e) else {
            continue;
        };
        if !by_db.contains_key(db) {
            let read = read(config, db).await;
            if let Err(err) = &read {
                tracing::debug!(database = db, error = %err, "continuous aggregates not read");
            }
            by_db.insert(db.to_owned(), read.ok());
        }
        match by_db.get(db).cloned().flatten() {
            Some(list) => {
                found.insert(e.name.clone(), list);
            }
            None => {
                let old = ctl.caggs.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(list) = old.get(&e.name) {
                    found.insert(e.name.clone(), list.clone());
                }
            }
        }
    }
    let mut current = ctl.caggs.lock().unwrap_or_else(|e| e.into_inner());
    let changed = *current != found;
    *current = found;
    changed
}

async fn read(config: &Config, database: &str) -> Result<Vec<Value>, sqlx::Error> {
    let pool = crate::upstream::own_db::lazy_pool(config, database, "tidegate-catalog", 1);
    let mut out = Vec::new();
    if crate::upstream::own_db::has_timescaledb(&pool).await? {
        for row in sqlx::query(CAGGS).fetch_all(&pool).await? {
            let view = format!(
                "{}.{}",
                row.try_get::<String, _>(0)?,
                row.try_get::<String, _>(1)?
            );
            let table = format!(
                "{}.{}",
                row.try_get::<String, _>(2)?,
                row.try_get::<String, _>(3)?
            );
            let definition: String = row.try_get(4)?;
            let time: Option<String> = row.try_get(5)?;
            match describe(&view, &table, time.as_deref(), &definition) {
                Some(v) => out.push(v),
                None => tracing::info!(
                    view,
                    "continuous aggregate not in a shape the optimizer rewrites to"
                ),
            }
        }
    }
    pool.close().await;
    Ok(out)
}

/// Re-reads the aggregates every `plugins.cagg_refresh` and swaps optimizer plugins whose
/// aggregates changed. Runs until shutdown.
pub async fn refresh(ctl: Arc<Control>) {
    let sh = ctl.shared.clone();
    loop {
        let every = sh.config().plugins.cagg_refresh.get();
        let Some(every) = every else {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(60)) => continue,
                _ = sh.shutdown.token().cancelled() => return,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = sh.shutdown.token().cancelled() => return,
        }
        let topo = sh.topology();
        if topo.plugins.is_some() && discover(&ctl, &topo.config).await {
            tracing::info!("continuous aggregates changed: reloading the optimizer plugins");
            crate::broker::plugins::swap_changed(&ctl).await;
        }
    }
}

/// The optimizer's description of a continuous aggregate from its view definition (as
/// `pg_get_viewdef` prints it), or `None` for a shape it cannot describe: the SELECT list must
/// be `time_bucket(<interval constant>, <time column>)`, plain columns, and aggregates of plain
/// columns (or `*`).
pub fn describe(
    view: &str,
    hypertable: &str,
    time_column: Option<&str>,
    definition: &str,
) -> Option<Value> {
    let stmts = Parser::new(&PostgreSqlDialect {})
        .with_recursion_limit(tidegate_sql::RECURSION_LIMIT)
        .try_with_sql(definition.trim().trim_end_matches(';'))
        .and_then(|mut p| p.parse_statements())
        .ok()?;
    let [sqlparser::ast::Statement::Query(q)] = stmts.as_slice() else {
        return None;
    };
    let SetExpr::Select(select) = q.body.as_ref() else {
        return None;
    };
    let (mut bucket, mut bucket_column, mut ht_time) = (None, None, None);
    let mut group_by = Vec::new();
    let mut aggregates = Map::new();
    for item in &select.projection {
        let (expr, alias) = match item {
            SelectItem::UnnamedExpr(e) => (e, None),
            SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias.value.clone())),
            _ => return None,
        };
        match expr {
            Expr::Identifier(_) | Expr::CompoundIdentifier(_) => {
                let name = column(expr)?;
                if alias.as_deref().is_some_and(|a| a != name) {
                    return None; // The optimizer needs group columns named as in the table.
                }
                group_by.push(Value::String(name));
            }
            Expr::Function(f) => {
                let name = f.name.to_string().to_ascii_lowercase();
                let args = args(&f.args)?;
                let alias = alias?;
                if name == "time_bucket" || name.ends_with(".time_bucket") {
                    let [width, time] = args.as_slice() else {
                        return None;
                    };
                    bucket = Some(interval_text(width)?);
                    ht_time = Some(column(time)?);
                    bucket_column = Some(alias);
                } else {
                    let cols = args
                        .iter()
                        .map(|a| match a {
                            Expr::Wildcard(_) => Some("*".to_owned()),
                            other => column(other),
                        })
                        .collect::<Option<Vec<_>>>()?;
                    aggregates.insert(format!("{name}({})", cols.join(", ")), Value::String(alias));
                }
            }
            _ => return None,
        }
    }
    let ht_time = ht_time?;
    if time_column.is_some_and(|t| t != ht_time) {
        return None;
    }
    Some(json!({
        "name": view,
        "hypertable": hypertable,
        "hypertable_time_column": ht_time,
        "bucket": bucket?,
        "time_column": bucket_column?,
        "group_by": group_by,
        "aggregates": aggregates,
    }))
}

fn args(a: &FunctionArguments) -> Option<Vec<Expr>> {
    let FunctionArguments::List(list) = a else {
        return None;
    };
    if list.duplicate_treatment.is_some() || !list.clauses.is_empty() {
        return None; // DISTINCT, ORDER BY, FILTER…: not a plain aggregate.
    }
    list.args
        .iter()
        .map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e.clone()),
            FunctionArg::Unnamed(FunctionArgExpr::Wildcard) => Some(Expr::Wildcard(
                sqlparser::ast::helpers::attached_token::AttachedToken::empty(),
            )),
            _ => None,
        })
        .collect()
}

/// A (possibly qualified) column reference's name.
fn column(e: &Expr) -> Option<String> {
    match e {
        Expr::Identifier(i) => Some(i.value.clone()),
        Expr::CompoundIdentifier(parts) => parts.last().map(|i| i.value.clone()),
        Expr::Nested(inner) => column(inner),
        _ => None,
    }
}

/// An interval constant as the optimizer reads widths: `'01:00:00'::interval` → `3600 seconds`,
/// `'1 day'::interval` → `1 day`.
fn interval_text(e: &Expr) -> Option<String> {
    let text = match e {
        Expr::Cast { expr, .. } => match expr.as_ref() {
            Expr::Value(v) => v.value.clone().into_string()?,
            _ => return None,
        },
        Expr::Interval(i) => match i.value.as_ref() {
            Expr::Value(v) => v.value.clone().into_string()?,
            _ => return None,
        },
        _ => return None,
    };
    // PostgreSQL prints sub-day widths as HH:MM:SS.
    let hms: Vec<&str> = text.split(':').collect();
    if let [h, m, s] = hms.as_slice() {
        let (h, m, s): (u64, u64, u64) = (h.parse().ok()?, m.parse().ok()?, s.parse().ok()?);
        return Some(format!("{} seconds", h * 3600 + m * 60 + s));
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typical_definition_is_described() {
        let def = r#" SELECT time_bucket('01:00:00'::interval, metrics."time") AS bucket,
    metrics.host,
    avg(metrics.cpu) AS avg_cpu,
    max(metrics.cpu) AS max_cpu,
    count(*) AS n
   FROM metrics
  GROUP BY (time_bucket('01:00:00'::interval, metrics."time")), metrics.host;"#;
        let v = describe("public.metrics_hourly", "public.metrics", Some("time"), def).unwrap();
        assert_eq!(
            v,
            json!({
                "name": "public.metrics_hourly",
                "hypertable": "public.metrics",
                "hypertable_time_column": "time",
                "bucket": "3600 seconds",
                "time_column": "bucket",
                "group_by": ["host"],
                "aggregates": {"avg(cpu)": "avg_cpu", "max(cpu)": "max_cpu", "count(*)": "n"},
            })
        );
        let daily = def.replace("'01:00:00'::interval", "'1 day'::interval");
        assert_eq!(describe("v", "t", None, &daily).unwrap()["bucket"], "1 day");
    }

    #[test]
    fn other_shapes_are_not_described() {
        for def in [
            "SELECT host, avg(cpu) AS a FROM metrics GROUP BY host",
            "SELECT time_bucket('1 hour'::interval, time) AS b, avg(cpu + 1) AS a FROM m GROUP BY 1",
            "SELECT time_bucket('1 hour'::interval, time) AS b, host AS h FROM m GROUP BY 1, 2",
            "SELECT time_bucket('1 hour'::interval, time) AS b, count(DISTINCT host) AS n FROM m GROUP BY 1",
            "not sql",
        ] {
            assert_eq!(describe("v", "t", Some("time"), def), None, "{def}");
        }
    }
}
