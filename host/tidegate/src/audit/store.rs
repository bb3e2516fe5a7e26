//! The audit table in PostgreSQL, through `sqlx`: created on first use (a hypertable when
//! TimescaleDB is installed there), written in batches, read back in chain order.

use super::chain::Row;
use sqlx::{PgPool, Row as _};
use tidegate_config::Config;

/// The audit table of one configuration.
#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    /// `"schema"."table"`, from validated identifiers.
    table: String,
    schema: String,
}

/// The columns, in insert and select order.
const COLUMNS: &str = "seq, at, plugin, username, role, database, kind, tables, fingerprint, \
                       decision, decided_by, rows, duration_us, sqlstate, labels, key_id, hash";

impl Store {
    /// Connects lazily to the audit database on the primary.
    pub fn new(config: &Config) -> Store {
        let pool =
            crate::own_db::lazy_pool(config, config.audit.database(config), "tidegate-audit", 2);
        let (schema, table) = config.audit.table_parts();
        Store {
            pool,
            table: format!("\"{schema}\".\"{table}\""),
            schema: format!("\"{schema}\""),
        }
    }

    /// Creates the table if it is missing, as a hypertable when TimescaleDB is installed.
    pub async fn ensure(&self) -> sqlx::Result<()> {
        let t = &self.table;
        let ddl = format!(
            "CREATE SCHEMA IF NOT EXISTS {schema};
             CREATE TABLE IF NOT EXISTS {t} (
                 seq bigint NOT NULL,
                 at timestamptz NOT NULL,
                 plugin text NOT NULL,
                 username text NOT NULL,
                 role text NOT NULL,
                 database text NOT NULL,
                 kind text NOT NULL,
                 tables text NOT NULL,
                 fingerprint text NOT NULL,
                 decision text NOT NULL,
                 decided_by text,
                 rows bigint NOT NULL,
                 duration_us bigint NOT NULL,
                 sqlstate text,
                 labels text NOT NULL,
                 key_id integer NOT NULL,
                 hash bytea NOT NULL
             );
             CREATE UNIQUE INDEX IF NOT EXISTS {idx} ON {t} (seq, at);
             CREATE INDEX IF NOT EXISTS {uidx} ON {t} (username, at);",
            schema = self.schema,
            idx = index_name(t, "seq"),
            uidx = index_name(t, "user_at"),
        );
        sqlx::raw_sql(&ddl).execute(&self.pool).await?;
        if crate::own_db::has_timescaledb(&self.pool).await? {
            sqlx::query("SELECT create_hypertable($1::regclass, 'at', if_not_exists => true, migrate_data => true)")
                .bind(t)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// The newest record's (seq, hash), or `None` for an empty chain.
    pub async fn last(&self) -> sqlx::Result<Option<(i64, Vec<u8>)>> {
        let sql = format!(
            "SELECT seq, hash FROM {} ORDER BY seq DESC LIMIT 1",
            self.table
        );
        let row = sqlx::query(&sql).fetch_optional(&self.pool).await?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    /// Writes `rows` in one statement (one transaction: all or none).
    pub async fn insert(&self, rows: &[Row]) -> sqlx::Result<()> {
        macro_rules! col {
            ($f:ident) => {
                rows.iter().map(|r| r.$f.clone()).collect::<Vec<_>>()
            };
        }
        let sql = format!(
            "INSERT INTO {} ({COLUMNS}) SELECT s, timestamptz 'epoch' + a * interval '1 microsecond', \
             p, u, ro, d, k, t, f, de, db, n, du, ss, l, ki, h \
             FROM UNNEST($1::int8[], $2::int8[], $3::text[], $4::text[], $5::text[], $6::text[], \
             $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::int8[], $13::int8[], \
             $14::text[], $15::text[], $16::int4[], $17::bytea[]) \
             AS x(s, a, p, u, ro, d, k, t, f, de, db, n, du, ss, l, ki, h)",
            self.table
        );
        sqlx::query(&sql)
            .bind(col!(seq))
            .bind(col!(at_us))
            .bind(col!(plugin))
            .bind(col!(username))
            .bind(col!(role))
            .bind(col!(database))
            .bind(col!(kind))
            .bind(col!(tables))
            .bind(col!(fingerprint))
            .bind(col!(decision))
            .bind(col!(decided_by))
            .bind(col!(rows))
            .bind(col!(duration_us))
            .bind(col!(sqlstate))
            .bind(col!(labels))
            .bind(col!(key_id))
            .bind(col!(hash))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records in chain order with `seq` in `from..`, at most `limit`.
    pub async fn page(&self, from: i64, limit: i64) -> sqlx::Result<Vec<Row>> {
        let sql = self.select("WHERE seq >= $1 ORDER BY seq, ctid LIMIT $2");
        let rows = sqlx::query(&sql)
            .bind(from)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(row_of).collect())
    }

    /// Records of `user` (any if `None`) from `from` to `to` (timestamps PostgreSQL reads;
    /// open-ended if `None`), oldest first, at most `limit`.
    pub async fn logs(
        &self,
        user: Option<&str>,
        from: Option<&str>,
        to: Option<&str>,
        limit: i64,
    ) -> sqlx::Result<Vec<Row>> {
        let sql = self.select(
            "WHERE ($1::text IS NULL OR username = $1) \
             AND ($2::timestamptz IS NULL OR at >= $2::timestamptz) \
             AND ($3::timestamptz IS NULL OR at < $3::timestamptz) \
             ORDER BY seq LIMIT $4",
        );
        let rows = sqlx::query(&sql)
            .bind(user)
            .bind(from)
            .bind(to)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(row_of).collect())
    }

    fn select(&self, tail: &str) -> String {
        format!(
            "SELECT seq, (extract(epoch FROM at) * 1000000)::int8, plugin, username, role, \
             database, kind, tables, fingerprint, decision, decided_by, rows, duration_us, \
             sqlstate, labels, key_id, hash FROM {} {tail}",
            self.table
        )
    }
}

fn row_of(r: &sqlx::postgres::PgRow) -> Row {
    Row {
        seq: r.get(0),
        at_us: r.get(1),
        plugin: r.get(2),
        username: r.get(3),
        role: r.get(4),
        database: r.get(5),
        kind: r.get(6),
        tables: r.get(7),
        fingerprint: r.get(8),
        decision: r.get(9),
        decided_by: r.get(10),
        rows: r.get(11),
        duration_us: r.get(12),
        sqlstate: r.get(13),
        labels: r.get(14),
        key_id: r.get(15),
        hash: r.get(16),
    }
}

fn index_name(table: &str, suffix: &str) -> String {
    let bare: String = table
        .split('.')
        .next_back()
        .unwrap_or(table)
        .trim_matches('"')
        .to_owned();
    format!("\"{bare}_{suffix}\"")
}
