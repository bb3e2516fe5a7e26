//! The audit table in PostgreSQL, through `sqlx`: brought up to date with TideGate's
//! migrations before first use, written in batches, read back in chain order. The migrations
//! (`migrations/`, embedded: [`crate::upstream::migrations`]) alone define the table, its chain
//! head and, with TimescaleDB, the hypertable; this module only reads and writes them.
//!
//! The table has no index. Each index costs the primary CPU on every record, and every
//! statement through the broker leaves one. What a unique index on `seq` used to do — refuse a
//! second writer's record with a number already taken — a one-row head table does once per
//! batch: a batch moves the head from the number it was linked after to its own newest record,
//! in the same transaction as its `COPY`, or is not written at all.

use super::chain::{Row, GENESIS};
use crate::upstream::migrations::{self, MigrateError};
use futures_util::TryStreamExt;
use sqlx::{PgPool, Row as _};
use std::sync::Arc;
use tidegate_config::Config;

/// Why the audit tables could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// TideGate's migrations could not be applied to the audit database, so its audit tables
    /// may be missing or out of date.
    #[error(
        "the audit tables in database {database:?} could not be brought up to date: {source}; \
         run `tidegate migrate` against that database (`[migrations] database`, default the \
         upstream database)"
    )]
    Migrations {
        /// The audit database.
        database: String,
        /// Why the migrations failed.
        #[source]
        source: MigrateError,
    },
    /// A connection or query failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The audit table of one configuration.
#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    /// The database holding the tables.
    database: String,
    /// `"schema"."table"`, from validated identifiers.
    table: String,
    /// The one-row chain head beside the table: the newest record's (seq, hash).
    head: String,
    /// The `COPY … FROM STDIN` every batch is written with.
    copy: String,
    /// Moves the head from the record a batch was linked after (`$3`) to its newest (`$1`, `$2`).
    advance: String,
}

/// What became of a batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Written {
    /// Its records are in the table.
    Yes,
    /// Nothing was written: the head no longer stands where the batch was linked (another
    /// writer extended the chain, or the head row is gone). Link it again after [`Store::last`].
    Moved,
}

/// The columns, in insert and select order.
const COLUMNS: &str = "seq, at, plugin, username, role, database, kind, tables, fingerprint, \
                       decision, decided_by, rows, duration_us, sqlstate, labels, key_id, hash";

impl Store {
    /// Connects lazily to the audit database on the primary.
    pub fn new(config: &Config) -> Store {
        let database = config.audit.database(config);
        let pool = crate::upstream::own_db::lazy_pool(config, database, "tidegate-audit", 2);
        let (table, head) = names(config);
        Store {
            pool,
            copy: format!("COPY {table} ({COLUMNS}) FROM STDIN (FORMAT binary)"),
            advance: format!("UPDATE {head} SET seq = $1, hash = $2 WHERE seq = $3"),
            table,
            head,
            database: database.to_owned(),
        }
    }

    /// Brings the audit database up to date with TideGate's migrations (advisory-locked, as
    /// `tidegate migrate` runs them: what another process applied is not applied again), then
    /// gives the chain a head if it has none. Migration v5 creates the head at the newest
    /// record, or at seq 0 and the all-zero genesis hash for an empty table; a head row
    /// deleted since is put back the same way.
    pub async fn ensure(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        match migrations::apply(&mut conn).await {
            Ok(applied) => {
                for m in applied {
                    tracing::info!(
                        version = m.version,
                        description = m.description,
                        database = %self.database,
                        "audit: migration applied"
                    );
                }
            }
            Err(source) => {
                // Ending the session releases the advisory lock sqlx may still hold.
                let _ = conn.close().await;
                return Err(StoreError::Migrations {
                    database: self.database.clone(),
                    source,
                });
            }
        }
        drop(conn);
        // Only a missing head reads the table (a full scan: there is no index); the NOT EXISTS
        // is checked once, before the scan.
        let (t, head) = (&self.table, &self.head);
        sqlx::query(&format!(
            "INSERT INTO {head} (seq, hash) \
             SELECT seq, hash FROM ((SELECT seq, hash FROM {t} ORDER BY seq DESC LIMIT 1) \
                                    UNION ALL SELECT 0, $1) newest \
             WHERE NOT EXISTS (SELECT FROM {head}) ORDER BY seq DESC LIMIT 1 \
             ON CONFLICT DO NOTHING"
        ))
        .bind(&GENESIS[..])
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The chain head: the newest record's (seq, hash), `(0, GENESIS)` for an empty chain, or
    /// `None` when there is no head row (before [`Store::ensure`], or deleted by hand).
    pub async fn last(&self) -> sqlx::Result<Option<(i64, Vec<u8>)>> {
        let sql = format!("SELECT seq, hash FROM {}", self.head);
        let row = sqlx::query(&sql).fetch_optional(&self.pool).await?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    /// Writes `rows`, linked after record `after`, in one transaction: the head moves from
    /// `after` to the newest of them, and one binary `COPY` adds them. COPY spends the least
    /// server CPU per row — no SQL or arrays to take apart — which matters because every
    /// statement through the broker leaves a record. `buf` is scratch space, kept by the caller
    /// from batch to batch so a large buffer is not allocated and freed for each one.
    pub async fn insert(
        &self,
        rows: &[Row],
        after: i64,
        buf: &mut Vec<u8>,
    ) -> sqlx::Result<Written> {
        let Some(newest) = rows.last() else {
            return Ok(Written::Yes);
        };
        copy_binary(rows, buf);
        let mut tx = self.pool.begin().await?;
        let moved = sqlx::query(&self.advance)
            .bind(newest.seq)
            .bind(&newest.hash[..])
            .bind(after)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 0;
        if moved {
            tx.rollback().await?;
            return Ok(Written::Moved);
        }
        let mut copy = tx.copy_in_raw(&self.copy).await?;
        if let Err(e) = copy.send(&buf[..]).await {
            // Fail the COPY (nothing is written) and leave the connection usable; if even that
            // fails, the pool's check on the next acquire drops the connection.
            let _ = copy.abort("tidegate: audit batch not sent").await;
            return Err(e);
        }
        copy.finish().await?;
        tx.commit().await?;
        Ok(Written::Yes)
    }

    /// Every record in chain order, streamed to `each` until it returns false. One query:
    /// PostgreSQL sorts the table once (there is no index to walk) and rows arrive as it sends
    /// them, so memory here stays flat however long the chain.
    pub async fn walk(&self, mut each: impl FnMut(&Row) -> bool) -> sqlx::Result<()> {
        let sql = self.select("ORDER BY seq, ctid");
        let mut rows = sqlx::query(&sql).fetch(&self.pool);
        while let Some(r) = rows.try_next().await? {
            if !each(&row_of(&r)) {
                break;
            }
        }
        Ok(())
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

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 00:00:00 UTC).
const PG_EPOCH_US: i64 = 946_684_800_000_000;

/// `rows` in COPY's binary format, fields in [`COLUMNS`] order, into `b` (cleared first).
fn copy_binary(rows: &[Row], b: &mut Vec<u8>) {
    fn int8(b: &mut Vec<u8>, v: i64) {
        b.extend_from_slice(&8i32.to_be_bytes());
        b.extend_from_slice(&v.to_be_bytes());
    }
    fn bytes(b: &mut Vec<u8>, v: Option<&[u8]>) {
        match v {
            Some(v) => {
                b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                b.extend_from_slice(v);
            }
            None => b.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
    b.clear();
    b.reserve(23 + rows.len() * 320);
    b.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    b.extend_from_slice(&0i32.to_be_bytes()); // flags
    b.extend_from_slice(&0i32.to_be_bytes()); // header extension length
    for r in rows {
        b.extend_from_slice(&17i16.to_be_bytes());
        int8(b, r.seq);
        int8(b, r.at_us.saturating_sub(PG_EPOCH_US));
        for text in [
            &*r.plugin,
            &r.username,
            &r.role,
            &r.database,
            &r.kind,
            &r.tables,
            &r.fingerprint,
            &r.decision,
        ] {
            bytes(b, Some(text.as_bytes()));
        }
        bytes(b, r.decided_by.as_deref().map(str::as_bytes));
        int8(b, r.rows);
        int8(b, r.duration_us);
        bytes(b, r.sqlstate.as_deref().map(str::as_bytes));
        bytes(b, Some(r.labels.as_bytes()));
        b.extend_from_slice(&4i32.to_be_bytes());
        b.extend_from_slice(&r.key_id.to_be_bytes());
        bytes(b, Some(&r.hash));
    }
    b.extend_from_slice(&(-1i16).to_be_bytes());
}

/// Text column `i`, borrowed from the row and copied once into the shared string.
fn text(r: &sqlx::postgres::PgRow, i: usize) -> Arc<str> {
    r.get::<&str, _>(i).into()
}

fn row_of(r: &sqlx::postgres::PgRow) -> Row {
    Row {
        seq: r.get(0),
        at_us: r.get(1),
        plugin: text(r, 2),
        username: text(r, 3),
        role: text(r, 4),
        database: text(r, 5),
        kind: r.get(6),
        tables: text(r, 7),
        fingerprint: text(r, 8),
        decision: r.get(9),
        decided_by: r.get(10),
        rows: r.get(11),
        duration_us: r.get(12),
        sqlstate: r.get(13),
        labels: text(r, 14),
        key_id: r.get(15),
        hash: r.get(16),
    }
}

/// The audit table and its chain head, `"schema"."table"` and `"schema"."table_head"`.
fn names(config: &Config) -> (String, String) {
    let (schema, table) = config.audit.table_parts();
    let head = format!("\"{schema}\".{}", sibling(table, "head"));
    (format!("\"{schema}\".\"{table}\""), head)
}

/// The quoted name `<table>_<suffix>` of an index or table beside `table` (bare or
/// `"schema"."table"`).
fn sibling(table: &str, suffix: &str) -> String {
    let bare: String = table
        .split('.')
        .next_back()
        .unwrap_or(table)
        .trim_matches('"')
        .to_owned();
    format!("\"{bare}_{suffix}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What this store reads and writes — the table, its columns, the head — is what the
    /// migrations create.
    #[test]
    fn the_migrations_create_what_the_store_uses() {
        let config =
            Config::from_toml("[[users]]\nname = \"app\"\npassword = \"app\"\n").expect("valid");
        let (table, head) = names(&config);
        assert_eq!(table, "\"tidegate_audit\".\"events\"");
        let sql: String = migrations::migrator()
            .iter()
            .map(|m| m.sql.to_string())
            .collect();
        for t in [&table, &head] {
            assert!(
                sql.contains(&format!("CREATE TABLE IF NOT EXISTS {t} (")),
                "{t}"
            );
        }
        for column in COLUMNS.split(", ") {
            assert!(sql.contains(&format!("\n    {column} ")), "{column}");
        }
        assert!(sql.contains(&format!("INSERT INTO {head} (seq, hash)")));
    }
}
