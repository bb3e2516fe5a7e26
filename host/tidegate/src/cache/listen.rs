//! Writes made outside TideGate: tables given the trigger `tidegate cache trigger` installs
//! send `NOTIFY tidegate_invalidate, '<table>'` when a transaction that changed them commits.
//! The broker LISTENs in every database it caches reads of and bumps the table's counter.
//! While the listening connection is down nothing is heard, so every (re)connection bumps the
//! whole database's counter first. Tables without the trigger rely on TTLs.

use super::Cache;
use crate::upstream::backoff::Backoff;
use sqlx::postgres::PgListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tidegate_config::Config;

/// The channel the trigger notifies.
pub const CHANNEL: &str = "tidegate_invalidate";

/// The channel an instance notifies when a bump of its was lost (Redis unreachable): every
/// instance listening in that database must bump the global epoch before it serves again.
pub const LOST_CHANNEL: &str = "tidegate_cache_lost";

/// SQL that installs the trigger function (idempotent).
pub const FUNCTION: &str = "\
CREATE OR REPLACE FUNCTION public.tidegate_notify_change() RETURNS trigger \
LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_notify('tidegate_invalidate', TG_TABLE_NAME); RETURN NULL; END $$";

/// SQL that adds the statement-level trigger to `table` (a quoted, possibly qualified name).
pub fn trigger_sql(table: &str) -> String {
    format!(
        "DROP TRIGGER IF EXISTS tidegate_invalidate ON {table}; \
         CREATE TRIGGER tidegate_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE \
         ON {table} FOR EACH STATEMENT EXECUTE FUNCTION public.tidegate_notify_change()"
    )
}

/// SQL that removes it.
pub fn drop_trigger_sql(table: &str) -> String {
    format!("DROP TRIGGER IF EXISTS tidegate_invalidate ON {table}")
}

/// One database's listener: whether it has listened yet, and whether anyone gave up waiting.
pub struct Listening {
    ready: tokio::sync::watch::Sender<bool>,
    late: AtomicBool,
}

impl Cache {
    /// Tells every instance listening in `database` that a bump was lost (a NOTIFY through
    /// the primary): each of them bumps the global epoch before it serves again, as this one
    /// does. Only the local flag would leave the other instances serving what the lost bump
    /// should have invalidated.
    pub(super) fn publish_lost(&self, config: &Arc<Config>, database: &str) {
        if !config.cache.listen {
            return;
        }
        let pool = crate::upstream::own_db::lazy_pool(config, database, "tidegate-cache-lost", 1);
        let database = database.to_owned();
        tokio::spawn(async move {
            let sent = sqlx::query("SELECT pg_notify($1, '')")
                .bind(LOST_CHANNEL)
                .execute(&pool)
                .await;
            if let Err(e) = sent {
                tracing::warn!(database = %database, error = %e, "result cache: could not tell the other instances of a lost invalidation");
            }
        });
    }

    /// Starts listening in `database` unless already, and waits (up to 2 s) until it does, so
    /// that the entries this instance stores are covered by the notices.
    pub async fn listen(self: &Arc<Self>, config: &Arc<Config>, database: &str) {
        if !config.cache.listen {
            return;
        }
        let state = {
            let mut dbs = self.listening.lock().unwrap_or_else(|e| e.into_inner());
            match dbs.get(database) {
                Some(s) => s.clone(),
                None => {
                    let s = Arc::new(Listening {
                        ready: tokio::sync::watch::channel(false).0,
                        late: AtomicBool::new(false),
                    });
                    dbs.insert(database.to_owned(), s.clone());
                    let (me, config, db) = (self.clone(), config.clone(), database.to_owned());
                    let st = s.clone();
                    if let Some(every) = config.timescale.watch_interval.get() {
                        let jobs = JobWatch::new(&config, &db, every);
                        let (me, config, db) = (self.clone(), config.clone(), db.clone());
                        tokio::spawn(async move { me.watch_jobs(config, db, jobs).await });
                    }
                    tokio::spawn(async move { me.listen_loop(config, db, st).await });
                    s
                }
            }
        };
        let mut rx = state.ready.subscribe();
        let waited = tokio::time::timeout(Duration::from_secs(2), rx.wait_for(|r| *r)).await;
        if waited.is_err() {
            // Entries may be stored before the LISTEN: its first connection bumps everything.
            state.late.store(true, Ordering::SeqCst);
        }
    }

    async fn listen_loop(self: Arc<Self>, config: Arc<Config>, db: String, state: Arc<Listening>) {
        let whole_db = [format!("tg:d:{db}")];
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        loop {
            let pool = crate::upstream::own_db::lazy_pool(&config, &db, "tidegate-cache-listen", 1);
            let mut listener = match PgListener::connect_with(&pool).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::debug!(database = %db, error = %e, "cache: cannot listen yet");
                    tokio::time::sleep(backoff.pause()).await;
                    continue;
                }
            };
            if let Err(e) = listener.listen_all([CHANNEL, LOST_CHANNEL]).await {
                tracing::debug!(database = %db, error = %e, "cache: LISTEN failed");
                tokio::time::sleep(backoff.pause()).await;
                continue;
            }
            backoff.reset();
            // Anything may have changed while nobody listened — unless this is the first
            // LISTEN and every session is still waiting for it (nothing stored yet).
            let first = !state.ready.send_replace(true);
            if !first || state.late.load(Ordering::SeqCst) {
                self.invalidate(&config, &db, &whole_db).await;
            }
            loop {
                match listener.try_recv().await {
                    Ok(Some(n)) if n.channel() == LOST_CHANNEL => {
                        tracing::info!(database = %db, "result cache: another instance lost an invalidation; dropping every entry before the next hit");
                        self.lost_bump();
                    }
                    Ok(Some(n)) => {
                        let gens = self.table_gens(&config, &db, std::iter::once(n.payload()));
                        self.invalidate(&config, &db, &gens).await;
                    }
                    Ok(None) => {
                        // The connection was lost and is re-established by the next call.
                        self.invalidate(&config, &db, &whole_db).await;
                    }
                    Err(e) => {
                        tracing::debug!(database = %db, error = %e, "cache: listening connection failed");
                        break;
                    }
                }
            }
            tokio::time::sleep(backoff.pause()).await;
        }
    }

    /// Invalidates the cached reads of aggregates and hypertables whose refresh or retention
    /// jobs ran (see [`JobWatch`]); never returns.
    async fn watch_jobs(self: Arc<Self>, config: Arc<Config>, db: String, mut jobs: JobWatch) {
        loop {
            let ran = jobs.next().await;
            if !ran.is_empty() {
                tracing::debug!(database = %db, relations = ?ran, "cache: TimescaleDB jobs ran");
                let gens = self.table_gens(&config, &db, ran.iter().map(String::as_str));
                self.invalidate(&config, &db, &gens).await;
            }
        }
    }

    /// The generation keys of `tables` and their families (partitions, parents, chunks).
    fn table_gens<'a>(
        &self,
        config: &Arc<Config>,
        db: &str,
        tables: impl Iterator<Item = &'a str>,
    ) -> Vec<String> {
        let rels = self.relations.get(config, db, false);
        let mut gens = Vec::new();
        for table in tables {
            let family = rels
                .as_ref()
                .and_then(|r| r.by_name.get(table))
                .map(|r| r.family.clone())
                .unwrap_or_default();
            gens.extend(
                std::iter::once(table.to_owned())
                    .chain(family)
                    .map(|t| format!("tg:t:{db}:{t}")),
            );
        }
        gens
    }
}

/// TimescaleDB's jobs that change what reads return — continuous-aggregate refreshes and
/// retention — with the aggregate or hypertable they work on and their run counters. A run
/// that ends in failure may have committed part of its work (a refresh commits batch by batch),
/// so any change of the counters counts.
const JOB_RUNS: &str = "\
SELECT j.job_id, j.hypertable_name::text, \
       concat_ws(':', s.total_runs, s.total_successes, s.total_failures) \
FROM timescaledb_information.jobs j \
JOIN timescaledb_information.job_stats s ON s.job_id = j.job_id \
WHERE j.proc_name IN ('policy_refresh_continuous_aggregate', 'policy_retention') \
  AND j.hypertable_name IS NOT NULL";

/// Reads [`JOB_RUNS`] every `timescale.watch_interval` and yields the relations whose jobs
/// started or ended a run since the last read (a run TideGate did not make: the scheduler's, or
/// `CALL run_job` in psql). Without TimescaleDB it never yields.
struct JobWatch {
    pool: sqlx::PgPool,
    every: Duration,
    seen: Option<std::collections::HashMap<i32, String>>,
}

impl JobWatch {
    fn new(config: &Config, db: &str, every: Duration) -> JobWatch {
        JobWatch {
            pool: crate::upstream::own_db::lazy_pool(config, db, "tidegate-job-watch", 1),
            every,
            seen: None,
        }
    }

    /// Waits one interval, then returns what ran since the last call.
    async fn next(&mut self) -> Vec<String> {
        tokio::time::sleep(self.every).await;
        let pool = &self.pool;
        let runs: Result<Vec<(i32, String, String)>, sqlx::Error> = async {
            if !crate::upstream::own_db::has_timescaledb(pool).await? {
                return Ok(Vec::new());
            }
            sqlx::query_as(JOB_RUNS).fetch_all(pool).await
        }
        .await;
        let runs = match runs {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "cache: job runs not read");
                return Vec::new();
            }
        };
        let changed = match &self.seen {
            // The first read is the baseline: whatever ran before was covered by the LISTEN's
            // own start.
            None => Vec::new(),
            Some(before) => runs
                .iter()
                .filter(|(id, _, counters)| before.get(id) != Some(counters))
                .map(|(_, name, _)| name.clone())
                .collect(),
        };
        let now = runs.into_iter().map(|(id, _, c)| (id, c)).collect();
        self.seen = Some(now);
        changed
    }
}
