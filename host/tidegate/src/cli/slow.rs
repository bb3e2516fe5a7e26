//! `tidegate slow-queries` (the seed's `SlowQueryAnalyzer.get_slow_queries`): the heaviest
//! statements of the primary's database by total time, from `pg_stat_statements`, each with
//! TideGate's fingerprint (the one the audit table, cache rules and the console's `SHOW SLOW`
//! use: constants and `$n` hash alike, so pg_stat_statements' normalized text fingerprints
//! like the statements clients sent), its counts, block I/O and planning time, and for the top
//! entries an `EXPLAIN` (never `ANALYZE` unless `--analyze`) read into findings in plain words.
//! The broker's own per-fingerprint figures (p50/p95/p99, cache hit ratio, route) are on its
//! admin console (`SHOW SLOW`) and `/admin/slow-queries`.

use crate::config::Config;
use crate::upstream::own_db;
use serde::Serialize;
use sqlx::postgres::PgConnection;
use sqlx::{ConnectOptions as _, Row as _};
use std::path::PathBuf;

/// `tidegate slow-queries`
#[derive(Debug, clap::Args)]
pub struct SlowArgs {
    /// Configuration file.
    #[arg(long, short)]
    pub config: PathBuf,
    /// How many statements to list.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// How many of them to EXPLAIN.
    #[arg(long, default_value_t = 3)]
    pub explain: usize,
    /// EXPLAIN ANALYZE (runs the statements; never without this flag).
    #[arg(long)]
    pub analyze: bool,
    /// JSON on standard output instead of text.
    #[arg(long)]
    pub json: bool,
}

/// One statement.
#[derive(Debug, Serialize)]
pub struct SlowQuery {
    /// TideGate's fingerprint.
    pub fingerprint: String,
    /// pg_stat_statements' normalized text.
    pub query: String,
    /// Executions.
    pub calls: i64,
    /// Total execution time, ms.
    pub total_ms: f64,
    /// Mean, ms.
    pub mean_ms: f64,
    /// Slowest, ms.
    pub max_ms: f64,
    /// Rows returned or affected.
    pub rows: i64,
    /// Shared blocks hit.
    pub shared_blks_hit: i64,
    /// Shared blocks read.
    pub shared_blks_read: i64,
    /// Temporary blocks written.
    pub temp_blks_written: i64,
    /// Total planning time, ms (0 unless `pg_stat_statements.track_planning`).
    pub planning_ms: f64,
    /// What the plan shows, in plain words.
    pub findings: Vec<String>,
}

/// Runs the command; returns the exit status.
pub fn run(args: SlowArgs) -> i32 {
    let Some((config, rt)) = super::setup(&args.config) else {
        return 1;
    };
    match rt.block_on(slow_queries(&config, &args)) {
        Ok(list) if args.json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&list).unwrap_or_default()
            );
            0
        }
        Ok(list) => {
            print_text(&list);
            0
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

fn print_text(list: &[SlowQuery]) {
    if list.is_empty() {
        println!("no statements recorded by pg_stat_statements yet");
    }
    for (i, q) in list.iter().enumerate() {
        println!(
            "{:>2}. {}  calls {}  total {:.1} ms  mean {:.2} ms  max {:.2} ms  rows {}  blocks hit {} read {}  temp {}  planning {:.1} ms",
            i + 1,
            q.fingerprint,
            q.calls,
            q.total_ms,
            q.mean_ms,
            q.max_ms,
            q.rows,
            q.shared_blks_hit,
            q.shared_blks_read,
            q.temp_blks_written,
            q.planning_ms
        );
        println!("    {}", q.query);
        for f in &q.findings {
            println!("    - {f}");
        }
    }
}

/// The `top` heaviest statements, the first `explain` of them explained.
pub async fn slow_queries(config: &Config, args: &SlowArgs) -> anyhow::Result<Vec<SlowQuery>> {
    let db = config.upstream.primary.database.clone();
    let mut conn = own_db::options(config, &db, "tidegate slow-queries")
        .connect()
        .await?;
    let installed: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'pg_stat_statements')",
    )
    .fetch_one(&mut conn)
    .await?;
    if !installed {
        anyhow::bail!(
            "pg_stat_statements is not installed in {db}: add it to shared_preload_libraries, \
             restart PostgreSQL and run CREATE EXTENSION pg_stat_statements"
        );
    }
    let rows = sqlx::query(
        "SELECT query, calls, total_exec_time, mean_exec_time, max_exec_time, rows, \
                shared_blks_hit, shared_blks_read, temp_blks_written, total_plan_time \
         FROM pg_stat_statements \
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
           AND query NOT ILIKE '%pg_stat_statements%' \
           AND toplevel \
         ORDER BY total_exec_time DESC LIMIT $1",
    )
    .bind(args.top as i64)
    .fetch_all(&mut conn)
    .await?;
    let hypertables = hypertables(&mut conn).await;
    let mut out = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        let query: String = r.try_get("query")?;
        let mut findings = Vec::new();
        if i < args.explain {
            findings = explain(&mut conn, &query, args.analyze, &hypertables).await;
        }
        out.push(SlowQuery {
            fingerprint: tidegate_plugins::fingerprint_hex(
                tidegate_sql::fingerprint(query.as_bytes()).0,
            ),
            calls: r.try_get("calls")?,
            total_ms: r.try_get("total_exec_time")?,
            mean_ms: r.try_get("mean_exec_time")?,
            max_ms: r.try_get("max_exec_time")?,
            rows: r.try_get("rows")?,
            shared_blks_hit: r.try_get("shared_blks_hit")?,
            shared_blks_read: r.try_get("shared_blks_read")?,
            temp_blks_written: r.try_get("temp_blks_written")?,
            planning_ms: r.try_get("total_plan_time")?,
            query,
            findings,
        });
    }
    Ok(out)
}

/// A hypertable and the continuous aggregates over it.
struct Hypertable {
    schema: String,
    name: String,
    caggs: Vec<String>,
}

async fn hypertables(conn: &mut PgConnection) -> Vec<Hypertable> {
    let rows = sqlx::query(
        "SELECT h.hypertable_schema, h.hypertable_name, \
                coalesce(array_agg(c.view_schema || '.' || c.view_name) \
                         FILTER (WHERE c.view_name IS NOT NULL), '{}') AS caggs \
         FROM timescaledb_information.hypertables h \
         LEFT JOIN timescaledb_information.continuous_aggregates c \
           ON c.hypertable_schema = h.hypertable_schema AND c.hypertable_name = h.hypertable_name \
         GROUP BY 1, 2",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap_or_default(); // No TimescaleDB: no hypertables.
    rows.iter()
        .filter_map(|r| {
            Some(Hypertable {
                schema: r.try_get(0).ok()?,
                name: r.try_get(1).ok()?,
                caggs: r.try_get(2).ok()?,
            })
        })
        .collect()
}

/// The number of `$n` parameters in a normalized statement.
fn parameters(query: &str) -> usize {
    tidegate_sql::literals(query)
        .iter()
        .filter_map(|l| match l.kind {
            tidegate_sql::LiteralKind::Param(n) => Some(n),
            _ => None,
        })
        .max()
        .unwrap_or(0)
}

/// pg_stat_statements writes a typed constant (`interval '1 day'`) as `interval $2`, which
/// PREPARE cannot read: such a parameter becomes a cast (`$2::interval`).
fn typed_params(query: &str) -> String {
    const TYPES: [&str; 5] = ["interval", "timestamptz", "timestamp", "date", "time"];
    let mut out = String::with_capacity(query.len());
    let mut words = query.split(' ').peekable();
    while let Some(w) = words.next() {
        let typed = TYPES.iter().find(|t| w.eq_ignore_ascii_case(t));
        let next = words.peek().copied().unwrap_or("");
        let digits = next.trim_start_matches('$');
        let param_len = 1 + digits.chars().take_while(char::is_ascii_digit).count();
        match typed {
            Some(t) if next.starts_with('$') && param_len > 1 => {
                let (param, rest) = next.split_at(param_len);
                out.push_str(&format!("{param}::{t}{rest}"));
                words.next();
            }
            _ => out.push_str(w),
        }
        if words.peek().is_some() {
            out.push(' ');
        }
    }
    out
}

/// EXPLAIN the statement (its generic plan when it has parameters) and read the plan.
async fn explain(
    conn: &mut PgConnection,
    query: &str,
    analyze: bool,
    hypertables: &[Hypertable],
) -> Vec<String> {
    let first = query.split_whitespace().next().unwrap_or("");
    if !["select", "with", "table", "values"].contains(&first.to_ascii_lowercase().as_str()) {
        return vec!["not a read: not explained".into()];
    }
    let n = parameters(query);
    let options = if analyze {
        "ANALYZE, FORMAT JSON"
    } else {
        "FORMAT JSON"
    };
    let plan: Result<serde_json::Value, sqlx::Error> = async {
        if n == 0 {
            sqlx::raw_sql(&format!("EXPLAIN ({options}) {query}"))
                .fetch_one(&mut *conn)
                .await?
                .try_get::<serde_json::Value, _>(0)
        } else {
            // The generic plan: the one that does not depend on the parameters' values.
            sqlx::raw_sql(&format!(
                "SET plan_cache_mode = force_generic_plan; DEALLOCATE ALL; PREPARE tidegate_slow AS {}",
                typed_params(query)
            ))
            .execute(&mut *conn)
            .await?;
            let nulls = vec!["NULL"; n].join(", ");
            let plan = sqlx::raw_sql(&format!(
                "EXPLAIN ({options}) EXECUTE tidegate_slow({nulls})"
            ))
            .fetch_one(&mut *conn)
            .await?
            .try_get::<serde_json::Value, _>(0);
            let _ = sqlx::raw_sql("DEALLOCATE ALL; RESET plan_cache_mode")
                .execute(&mut *conn)
                .await;
            plan
        }
    }
    .await;
    match plan {
        Ok(p) => findings(&p, query, hypertables),
        Err(e) => vec![format!("could not explain it: {e}")],
    }
}

/// Plain-words findings from an EXPLAIN (FORMAT JSON) result.
fn findings(plan: &serde_json::Value, query: &str, hypertables: &[Hypertable]) -> Vec<String> {
    let mut scans = Vec::new();
    if let Some(root) = plan.get(0).and_then(|p| p.get("Plan")) {
        walk(root, &mut scans);
    }
    let mut out = Vec::new();
    let chunk_scans = scans
        .iter()
        .filter(|s| s.schema == "_timescaledb_internal")
        .count();
    let lower = query.to_ascii_lowercase();
    for h in hypertables {
        let named = lower.contains(&h.name.to_ascii_lowercase());
        if !named {
            continue;
        }
        let seq_on_chunks = scans.iter().any(|s| {
            s.node == "Seq Scan" && s.schema == "_timescaledb_internal" && s.filter.is_none()
        });
        if seq_on_chunks {
            out.push(format!(
                "sequential scan of hypertable {}.{} without a time predicate: every chunk is read; \
                 add a time range to the WHERE clause",
                h.schema, h.name
            ));
        }
        if chunk_scans > 1 {
            out.push(format!(
                "{chunk_scans} chunks of {}.{} scanned: chunks were not excluded (a time \
                 predicate on the partitioning column with constants lets the planner skip them)",
                h.schema, h.name
            ));
        }
        if lower.contains("time_bucket") && !h.caggs.is_empty() {
            out.push(format!(
                "a continuous aggregate over {}.{} may answer this: {}",
                h.schema,
                h.name,
                h.caggs.join(", ")
            ));
        }
    }
    for s in &scans {
        if s.node == "Seq Scan" && s.schema != "_timescaledb_internal" {
            match &s.filter {
                Some(f)
                    if s.rows_removed.unwrap_or(s.plan_rows as i64) > 0 || s.plan_rows > 100.0 =>
                {
                    out.push(format!(
                        "sequential scan of {}.{} filtering on {f}: an index on the filtered \
                         column(s) may be missing",
                        s.schema, s.relation
                    ));
                }
                None if s.plan_rows > 10_000.0 => out.push(format!(
                    "sequential scan of all of {}.{} (about {:.0} rows)",
                    s.schema, s.relation, s.plan_rows
                )),
                _ => {}
            }
        }
    }
    if out.is_empty() {
        out.push("no problem found in the plan".into());
    }
    out
}

/// A scan node of a plan.
struct Scan {
    node: String,
    schema: String,
    relation: String,
    filter: Option<String>,
    plan_rows: f64,
    rows_removed: Option<i64>,
}

fn walk(node: &serde_json::Value, out: &mut Vec<Scan>) {
    let text = |k: &str| node.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    if let Some(relation) = text("Relation Name") {
        out.push(Scan {
            node: text("Node Type").unwrap_or_default(),
            schema: text("Schema").unwrap_or_else(|| "public".into()),
            relation,
            filter: text("Filter"),
            plan_rows: node
                .get("Plan Rows")
                .and_then(|v| v.as_f64())
                .unwrap_or(0.0),
            rows_removed: node.get("Rows Removed by Filter").and_then(|v| v.as_i64()),
        });
    }
    for child in node
        .get("Plans")
        .and_then(|p| p.as_array())
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        walk(child, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_constants_become_casts() {
        assert_eq!(
            typed_params(
                "SELECT show_chunks($1, older_than => interval $2) c WHERE t > timestamptz $3,"
            ),
            "SELECT show_chunks($1, older_than => $2::interval) c WHERE t > $3::timestamptz,"
        );
        assert_eq!(
            typed_params("SELECT interval_col FROM t"),
            "SELECT interval_col FROM t"
        );
    }

    #[test]
    fn parameters_are_counted_by_their_highest_number() {
        assert_eq!(parameters("SELECT * FROM t WHERE a = $1 AND b = $2"), 2);
        assert_eq!(parameters("SELECT 1"), 0);
    }

    #[test]
    fn a_filtered_seq_scan_is_a_missing_index_and_chunk_scans_are_named() {
        let plan = serde_json::json!([{"Plan": {"Node Type": "Append", "Plans": [
            {"Node Type": "Seq Scan", "Relation Name": "_hyper_1_1_chunk", "Schema": "_timescaledb_internal", "Plan Rows": 1000.0},
            {"Node Type": "Seq Scan", "Relation Name": "_hyper_1_2_chunk", "Schema": "_timescaledb_internal", "Plan Rows": 1000.0},
            {"Node Type": "Seq Scan", "Relation Name": "accounts", "Schema": "public", "Plan Rows": 5000.0, "Filter": "(owner = 7)"}
        ]}}]);
        let h = [Hypertable {
            schema: "public".into(),
            name: "metrics".into(),
            caggs: vec!["public.metrics_hourly".into()],
        }];
        let f = findings(
            &plan,
            "select time_bucket('1 hour', time), avg(v) from metrics group by 1",
            &h,
        );
        let all = f.join("\n");
        assert!(
            all.contains("sequential scan of hypertable public.metrics without a time predicate"),
            "{all}"
        );
        assert!(all.contains("2 chunks of public.metrics scanned"), "{all}");
        assert!(
            all.contains(
                "continuous aggregate over public.metrics may answer this: public.metrics_hourly"
            ),
            "{all}"
        );
        assert!(
            all.contains("sequential scan of public.accounts filtering on (owner = 7): an index"),
            "{all}"
        );
    }
}
