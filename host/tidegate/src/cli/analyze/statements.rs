//! What the statements cost: the heaviest by total time (`pg_stat_statements`) and
//! throughput and mean latency sampled once a second.

use super::{Chart, Section, Verdict};
use sqlx::postgres::PgConnection;
use sqlx::Row as _;
use std::time::Duration;

pub(super) async fn top_statements(conn: &mut PgConnection, pgss: bool) -> anyhow::Result<Section> {
    let s = Section::new("top-statements", "Top statements by total time");
    if !pgss {
        return Ok(s.say(
            Verdict::Unknown,
            "pg_stat_statements is not installed: statement times are not known",
            "add pg_stat_statements to shared_preload_libraries, restart, CREATE EXTENSION pg_stat_statements",
        ));
    }
    let rows = sqlx::query(
        "SELECT query, calls, total_exec_time, mean_exec_time, \
                sum(total_exec_time) OVER () AS all_time \
         FROM pg_stat_statements \
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
           AND toplevel AND query NOT ILIKE '%pg_stat_statements%' \
         ORDER BY total_exec_time DESC LIMIT 10",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut s = s;
    s.columns = vec!["fingerprint", "calls", "total ms", "mean ms", "query"];
    let mut labels = Vec::new();
    let mut values = Vec::new();
    let mut all: f64 = 0.0;
    for r in &rows {
        let query: String = r.try_get(0)?;
        let total: f64 = r.try_get(2)?;
        all = r.try_get(4)?;
        let fp = tidegate_plugins::fingerprint_hex(tidegate_sql::fingerprint(query.as_bytes()).0);
        labels.push(fp[..12.min(fp.len())].to_owned());
        values.push(total);
        s.rows.push(vec![
            fp,
            r.try_get::<i64, _>(1)?.to_string(),
            format!("{total:.1}"),
            format!("{:.2}", r.try_get::<f64, _>(3)?),
            query.chars().take(200).collect(),
        ]);
    }
    if rows.is_empty() {
        return Ok(s.say(
            Verdict::Ok,
            "no statement recorded yet",
            "run the workload, then analyze again",
        ));
    }
    let share = values[0] / all.max(f64::MIN_POSITIVE);
    s.chart = Some(Chart::Bars {
        labels,
        values,
        unit: "ms".into(),
    });
    Ok(if share > 0.5 {
        s.say(
            Verdict::Warn,
            format!(
                "one statement takes {:.0} % of all statement time",
                share * 100.0
            ),
            "start there: tidegate slow-queries shows its plan findings",
        )
    } else {
        s.say(
            Verdict::Ok,
            format!(
                "the heaviest statement takes {:.0} % of the time",
                share * 100.0
            ),
            "nothing dominates; look at the plan findings of the top three (tidegate slow-queries)",
        )
    })
}

/// Throughput and mean latency, one point per second for `seconds`.
pub(super) async fn latency(
    conn: &mut PgConnection,
    pgss: bool,
    seconds: u64,
) -> anyhow::Result<Section> {
    let s = Section::new("latency", "Latency over time");
    let mut last = counters(&mut *conn, pgss).await?;
    let mut tps = Vec::new();
    let mut mean = Vec::new();
    for i in 1..=seconds.max(1) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Reading the views is itself a transaction: not counted.
        let now = counters(&mut *conn, pgss).await?;
        let x = i as f64;
        tps.push((x, (now.0 - last.0 - 1.0).max(0.0)));
        let calls = now.1 - last.1;
        if calls > 0.0 {
            mean.push((x, (now.2 - last.2) / calls));
        }
        last = now;
    }
    let peak = tps.iter().map(|p| p.1).fold(0.0, f64::max);
    let mut s = s;
    s.columns = vec!["second", "transactions/s", "mean ms"];
    for (i, (x, t)) in tps.iter().enumerate() {
        let m = mean
            .iter()
            .find(|p| p.0 == *x)
            .map_or(String::new(), |p| format!("{:.3}", p.1));
        s.rows.push(vec![(i + 1).to_string(), format!("{t:.0}"), m]);
    }
    if pgss && !mean.is_empty() {
        let worst = mean.iter().map(|p| p.1).fold(0.0, f64::max);
        let avg = mean.iter().map(|p| p.1).sum::<f64>() / mean.len() as f64;
        s.chart = Some(Chart::Line {
            points: mean,
            unit: "ms".into(),
        });
        return Ok(if worst > 3.0 * avg.max(0.05) {
            s.say(
                Verdict::Warn,
                format!("mean latency {avg:.2} ms with a spike to {worst:.2} ms; up to {peak:.0} transactions/s"),
                "spikes with steady load point to locks, checkpoints or autovacuum: check pg_stat_activity wait events",
            )
        } else {
            s.say(
                Verdict::Ok,
                format!("mean latency {avg:.2} ms, steady; up to {peak:.0} transactions/s"),
                "nothing to do",
            )
        });
    }
    s.chart = Some(Chart::Line {
        points: tps,
        unit: "transactions/s".into(),
    });
    Ok(if pgss {
        s.say(
            Verdict::Ok,
            format!("no statements ran while sampling (up to {peak:.0} transactions/s)"),
            "analyze while the workload runs",
        )
    } else {
        s.say(
            Verdict::Unknown,
            format!("up to {peak:.0} transactions/s; latency needs pg_stat_statements"),
            "install pg_stat_statements to see latency",
        )
    })
}

/// Transactions, statement calls and statement time so far.
pub(super) async fn counters(c: &mut PgConnection, pgss: bool) -> anyhow::Result<(f64, f64, f64)> {
    let sql = if pgss {
        "SELECT (SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database())::float8, \
                coalesce(sum(calls), 0)::float8, coalesce(sum(total_exec_time), 0)::float8 \
         FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
    } else {
        "SELECT (xact_commit + xact_rollback)::float8, 0::float8, 0::float8 \
         FROM pg_stat_database WHERE datname = current_database()"
    };
    let r = sqlx::query(sql).fetch_one(c).await?;
    Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))
}
