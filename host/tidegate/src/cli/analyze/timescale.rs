//! What TimescaleDB says: chunks and compression per hypertable, jobs whose last run failed.

use super::{Chart, Section, Verdict};
use sqlx::postgres::PgConnection;
use sqlx::Row as _;

fn not_installed(s: Section) -> Section {
    s.say(
        Verdict::Unknown,
        "TimescaleDB is not installed in this database",
        "nothing to check",
    )
}

fn unreadable(s: Section, what: &str, e: &sqlx::Error) -> Section {
    s.say(
        Verdict::Unknown,
        format!("could not read {what}: {e}"),
        "check the extension's version",
    )
}

pub(super) async fn hypertables(conn: &mut PgConnection, tsdb: bool) -> Section {
    let s = Section::new("hypertables", "Hypertables: chunks and compression");
    if !tsdb {
        return not_installed(s);
    }
    let rows = sqlx::query(
        "SELECT h.hypertable_schema || '.' || h.hypertable_name, h.num_chunks::bigint, \
                coalesce(c.before_compression_total_bytes, 0)::bigint, \
                coalesce(c.after_compression_total_bytes, 0)::bigint, \
                coalesce(c.number_compressed_chunks, 0)::bigint \
         FROM timescaledb_information.hypertables h \
         LEFT JOIN LATERAL hypertable_compression_stats(format('%I.%I', h.hypertable_schema, h.hypertable_name)::regclass) c ON true",
    )
    .fetch_all(&mut *conn)
    .await;
    let rows = match rows {
        Ok(r) => r,
        Err(e) => return unreadable(s, "hypertables", &e),
    };
    let mut s = s;
    s.columns = vec![
        "hypertable",
        "chunks",
        "compressed chunks",
        "compression ratio",
    ];
    let (mut labels, mut values) = (Vec::new(), Vec::new());
    let mut uncompressed = Vec::new();
    for r in &rows {
        let (name, chunks, before, after, compressed): (String, i64, i64, i64, i64) = match (
            r.try_get(0),
            r.try_get(1),
            r.try_get(2),
            r.try_get(3),
            r.try_get(4),
        ) {
            (Ok(a), Ok(b), Ok(c), Ok(d), Ok(e)) => (a, b, c, d, e),
            _ => continue,
        };
        let ratio = if after > 0 {
            before as f64 / after as f64
        } else {
            0.0
        };
        if compressed == 0 && chunks > 7 {
            uncompressed.push(name.clone());
        }
        labels.push(name.clone());
        values.push(chunks as f64);
        s.rows.push(vec![
            name,
            chunks.to_string(),
            compressed.to_string(),
            if ratio > 0.0 {
                format!("{ratio:.1}")
            } else {
                "-".into()
            },
        ]);
    }
    if rows.is_empty() {
        return s.say(
            Verdict::Ok,
            "no hypertables",
            "declare them under [timescale] and run tidegate timescale apply",
        );
    }
    s.chart = Some(Chart::Bars {
        labels,
        values,
        unit: "chunks".into(),
    });
    if uncompressed.is_empty() {
        s.say(
            Verdict::Ok,
            format!(
                "{} hypertables; old chunks are compressed where there are many",
                rows.len()
            ),
            "nothing to do",
        )
    } else {
        s.say(
            Verdict::Warn,
            format!(
                "{} has many chunks and none compressed",
                uncompressed.join(", ")
            ),
            "declare compress_after for it under [timescale] and run tidegate timescale apply",
        )
    }
}

pub(super) async fn failed_jobs(conn: &mut PgConnection, tsdb: bool) -> Section {
    let s = Section::new("failed-jobs", "Failed TimescaleDB jobs");
    if !tsdb {
        return not_installed(s);
    }
    let rows = sqlx::query(
        "SELECT j.job_id::text, j.proc_name::text, coalesce(j.hypertable_name::text, ''), \
                coalesce(s.last_run_started_at::text, ''), s.total_failures::bigint \
         FROM timescaledb_information.jobs j JOIN timescaledb_information.job_stats s USING (job_id) \
         WHERE s.last_run_status = 'Failed' ORDER BY s.last_run_started_at DESC",
    )
    .fetch_all(&mut *conn)
    .await;
    let rows = match rows {
        Ok(r) => r,
        Err(e) => return unreadable(s, "job_stats", &e),
    };
    let mut s = s;
    s.columns = vec!["job", "procedure", "hypertable", "last run", "failures"];
    for r in &rows {
        s.rows.push(vec![
            r.try_get(0).unwrap_or_default(),
            r.try_get(1).unwrap_or_default(),
            r.try_get(2).unwrap_or_default(),
            r.try_get(3).unwrap_or_default(),
            r.try_get::<i64, _>(4)
                .map(|n| n.to_string())
                .unwrap_or_default(),
        ]);
    }
    if rows.is_empty() {
        s.say(Verdict::Ok, "no job's last run failed", "nothing to do")
    } else {
        s.say(
            Verdict::Bad,
            format!("{} jobs failed their last run", rows.len()),
            "tidegate jobs --failed shows the errors; tidegate jobs run ID retries one",
        )
    }
}
