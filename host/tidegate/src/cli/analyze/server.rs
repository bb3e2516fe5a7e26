//! What PostgreSQL says about its tables and servers: replica lag, sizes, unused and likely
//! missing indexes, dead rows, buffer hits.

use super::{mb, Chart, Section, Verdict};
use crate::config::Config;
use sqlx::postgres::PgConnection;
use sqlx::Row as _;

pub(super) async fn replica_lag(
    conn: &mut PgConnection,
    config: &Config,
) -> anyhow::Result<Section> {
    let rows = sqlx::query(
        "SELECT coalesce(application_name, client_addr::text, 'replica'), \
                coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), 0)::bigint, \
                coalesce(extract(epoch FROM replay_lag), 0)::float8 \
         FROM pg_stat_replication",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut s = Section::new("replica-lag", "Replica lag");
    s.columns = vec!["replica", "lag bytes", "lag s"];
    let max_s = config.routing.max_lag.duration().as_secs_f64();
    let mut worst: f64 = 0.0;
    let (mut labels, mut values) = (Vec::new(), Vec::new());
    for r in &rows {
        let name: String = r.try_get(0)?;
        let bytes: i64 = r.try_get(1)?;
        let secs: f64 = r.try_get(2)?;
        worst = worst.max(secs);
        labels.push(name.clone());
        values.push(bytes as f64);
        s.rows
            .push(vec![name, bytes.to_string(), format!("{secs:.3}")]);
    }
    if rows.is_empty() {
        return Ok(s.say(
            Verdict::Ok,
            "no replica streams from this primary",
            "nothing to do",
        ));
    }
    s.chart = Some(Chart::Bars {
        labels,
        values,
        unit: "bytes behind".into(),
    });
    Ok(if max_s > 0.0 && worst > max_s {
        s.say(
            Verdict::Bad,
            format!("a replica is {worst:.1} s behind (routing.max_lag {max_s:.1} s): its reads go to the primary"),
            "check the replica's I/O and long queries on it (hot_standby_feedback, max_standby_streaming_delay)",
        )
    } else {
        s.say(
            Verdict::Ok,
            format!("the worst replica is {worst:.3} s behind"),
            "nothing to do",
        )
    })
}

pub(super) async fn table_sizes(conn: &mut PgConnection) -> anyhow::Result<Section> {
    let rows = sqlx::query(
        "SELECT schemaname || '.' || relname, pg_table_size(relid), pg_indexes_size(relid), n_live_tup \
         FROM pg_stat_user_tables WHERE schemaname NOT LIKE '\\_timescaledb%' \
         ORDER BY pg_total_relation_size(relid) DESC LIMIT 10",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut s = Section::new("table-sizes", "Table and index sizes");
    s.columns = vec!["table", "table MB", "indexes MB", "rows (estimate)"];
    let (mut labels, mut values) = (Vec::new(), Vec::new());
    let mut total = 0.0;
    for r in &rows {
        let name: String = r.try_get(0)?;
        let (t, i, n): (i64, i64, i64) = (r.try_get(1)?, r.try_get(2)?, r.try_get(3)?);
        total += mb(t + i);
        labels.push(name.clone());
        values.push(mb(t + i));
        s.rows.push(vec![
            name,
            format!("{:.1}", mb(t)),
            format!("{:.1}", mb(i)),
            n.to_string(),
        ]);
    }
    if rows.is_empty() {
        return Ok(s.say(Verdict::Ok, "no user tables", "nothing to do"));
    }
    s.chart = Some(Chart::Bars {
        labels,
        values,
        unit: "MB".into(),
    });
    Ok(s.say(
        Verdict::Ok,
        format!("the ten largest tables hold {total:.1} MB with their indexes (hypertables' chunks are counted in the hypertables section)"),
        "large append-only tables are candidates for hypertables with compression and retention",
    ))
}

pub(super) async fn unused_indexes(conn: &mut PgConnection) -> anyhow::Result<Section> {
    let rows = sqlx::query(
        "SELECT s.schemaname || '.' || s.indexrelname, s.schemaname || '.' || s.relname, \
                pg_relation_size(s.indexrelid) \
         FROM pg_stat_user_indexes s JOIN pg_index i ON i.indexrelid = s.indexrelid \
         WHERE s.idx_scan = 0 AND NOT i.indisunique AND NOT i.indisprimary \
           AND s.schemaname NOT LIKE '\\_timescaledb%' \
         ORDER BY pg_relation_size(s.indexrelid) DESC LIMIT 20",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut s = Section::new("unused-indexes", "Unused indexes");
    s.columns = vec!["index", "table", "MB"];
    let mut total = 0.0;
    for r in &rows {
        let size: i64 = r.try_get(2)?;
        total += mb(size);
        s.rows.push(vec![
            r.try_get(0)?,
            r.try_get(1)?,
            format!("{:.2}", mb(size)),
        ]);
    }
    Ok(if rows.is_empty() {
        s.say(
            Verdict::Ok,
            "every non-unique index has been used since statistics were reset",
            "nothing to do",
        )
    } else {
        s.say(
            Verdict::Warn,
            format!("{} indexes never scanned ({total:.1} MB written on every insert for nothing)", rows.len()),
            "drop them after checking replicas and rare reports do not use them (statistics are per server)",
        )
    })
}

pub(super) async fn missing_indexes(conn: &mut PgConnection) -> anyhow::Result<Section> {
    let rows = sqlx::query(
        "SELECT schemaname || '.' || relname, seq_scan, seq_tup_read, coalesce(idx_scan, 0), n_live_tup \
         FROM pg_stat_user_tables \
         WHERE seq_scan > 0 AND n_live_tup > 10000 AND seq_tup_read / seq_scan > 10000 \
           AND seq_scan > coalesce(idx_scan, 0) AND schemaname NOT LIKE '\\_timescaledb%' \
         ORDER BY seq_tup_read DESC LIMIT 10",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut s = Section::new("missing-indexes", "Likely missing indexes");
    s.columns = vec![
        "table",
        "sequential scans",
        "rows read by them",
        "index scans",
        "rows",
    ];
    let (mut labels, mut values) = (Vec::new(), Vec::new());
    for r in &rows {
        let name: String = r.try_get(0)?;
        let read: i64 = r.try_get(2)?;
        labels.push(name.clone());
        values.push(read as f64);
        s.rows.push(vec![
            name,
            r.try_get::<i64, _>(1)?.to_string(),
            read.to_string(),
            r.try_get::<i64, _>(3)?.to_string(),
            r.try_get::<i64, _>(4)?.to_string(),
        ]);
    }
    if rows.is_empty() {
        return Ok(s.say(
            Verdict::Ok,
            "no large table is read mostly by sequential scans",
            "nothing to do",
        ));
    }
    s.chart = Some(Chart::Bars {
        labels,
        values,
        unit: "rows read sequentially".into(),
    });
    Ok(s.say(
        Verdict::Warn,
        format!("{} large tables are read mostly by sequential scans", rows.len()),
        "find the statements (tidegate slow-queries names the scan and its filter) and index the filtered columns",
    ))
}

pub(super) async fn bloat(conn: &mut PgConnection) -> anyhow::Result<Section> {
    let rows = sqlx::query(
        "SELECT schemaname || '.' || relname, n_dead_tup, n_live_tup, \
                coalesce(greatest(last_autovacuum, last_vacuum)::text, 'never') \
         FROM pg_stat_user_tables WHERE n_dead_tup > 0 ORDER BY n_dead_tup DESC LIMIT 10",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut s = Section::new("bloat", "Bloat estimate (dead rows)");
    s.columns = vec!["table", "dead rows", "live rows", "dead %", "last vacuum"];
    let (mut labels, mut values) = (Vec::new(), Vec::new());
    let mut worst: (f64, String) = (0.0, String::new());
    for r in &rows {
        let name: String = r.try_get(0)?;
        let (dead, live): (i64, i64) = (r.try_get(1)?, r.try_get(2)?);
        let pct = 100.0 * dead as f64 / (dead + live).max(1) as f64;
        if pct > worst.0 && dead > 1000 {
            worst = (pct, name.clone());
        }
        labels.push(name.clone());
        values.push(pct);
        s.rows.push(vec![
            name,
            dead.to_string(),
            live.to_string(),
            format!("{pct:.1}"),
            r.try_get(3)?,
        ]);
    }
    if rows.is_empty() {
        return Ok(s.say(Verdict::Ok, "no dead rows", "nothing to do"));
    }
    s.chart = Some(Chart::Bars {
        labels,
        values,
        unit: "% dead".into(),
    });
    Ok(if worst.0 > 20.0 {
        s.say(
            Verdict::Warn,
            format!("{} is {:.0} % dead rows", worst.1, worst.0),
            "autovacuum is behind there: lower its autovacuum_vacuum_scale_factor or VACUUM it",
        )
    } else {
        s.say(
            Verdict::Ok,
            "dead rows stay under 20 % everywhere",
            "nothing to do",
        )
    })
}

pub(super) async fn buffer_hits(conn: &mut PgConnection) -> anyhow::Result<Section> {
    let r = sqlx::query(
        "SELECT blks_hit, blks_read FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(&mut *conn)
    .await?;
    let (hit, read): (i64, i64) = (r.try_get(0)?, r.try_get(1)?);
    let ratio = hit as f64 / (hit + read).max(1) as f64;
    let mut s = Section::new("buffer-hits", "PostgreSQL buffer hit ratio");
    s.columns = vec!["blocks from shared buffers", "blocks read", "hit ratio"];
    s.rows.push(vec![
        hit.to_string(),
        read.to_string(),
        format!("{ratio:.4}"),
    ]);
    s.chart = Some(Chart::Bars {
        labels: vec!["from buffers".into(), "read".into()],
        values: vec![hit as f64, read as f64],
        unit: "blocks".into(),
    });
    Ok(if ratio < 0.95 && hit + read > 10_000 {
        s.say(
            Verdict::Warn,
            format!("{:.1} % of blocks came from shared buffers", ratio * 100.0),
            "the working set does not fit: raise shared_buffers, or compress old chunks so it does",
        )
    } else {
        s.say(
            Verdict::Ok,
            format!("{:.2} % of blocks came from shared buffers", ratio * 100.0),
            "nothing to do",
        )
    })
}
