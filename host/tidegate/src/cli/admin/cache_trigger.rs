//! `tidegate cache trigger`: installs (or drops) the statement-level trigger that tells every
//! TideGate sharing the cache about writes made to a table without going through TideGate.

use crate::cache::listen::{drop_trigger_sql, trigger_sql, FUNCTION};
use anyhow::Context;
use std::path::PathBuf;
use tidegate_config::Config;

/// `tidegate cache trigger`
#[derive(Debug, clap::Args)]
pub struct TriggerArgs {
    /// Tables (`table` or `schema.table`).
    #[arg(required = true)]
    pub tables: Vec<String>,
    /// Configuration file (the upstream the trigger is installed on).
    #[arg(long, short)]
    pub config: PathBuf,
    /// Database (default: `upstream.primary.database`).
    #[arg(long, short)]
    pub database: Option<String>,
    /// Remove the trigger instead.
    #[arg(long)]
    pub drop: bool,
}

/// A `table` or `schema.table` argument as a quoted SQL name.
pub fn quoted_table(name: &str) -> anyhow::Result<String> {
    let parts: Vec<&str> = name.split('.').collect();
    anyhow::ensure!(
        (1..=2).contains(&parts.len()) && parts.iter().all(|p| !p.is_empty()),
        "{name:?} is not `table` or `schema.table`"
    );
    Ok(parts
        .iter()
        .map(|p| super::rules::quote_ident(p))
        .collect::<Vec<_>>()
        .join("."))
}

/// Runs `tidegate cache trigger`.
pub fn run(a: TriggerArgs) -> anyhow::Result<()> {
    let config = Config::load(&a.config)?;
    let database = a
        .database
        .unwrap_or_else(|| config.upstream.primary.database.clone());
    let mut sql = String::from("BEGIN;");
    if !a.drop {
        sql.push_str(FUNCTION);
        sql.push(';');
    }
    for t in &a.tables {
        let q = quoted_table(t)?;
        sql.push_str(&if a.drop {
            drop_trigger_sql(&q)
        } else {
            trigger_sql(&q)
        });
        sql.push(';');
    }
    sql.push_str("COMMIT");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let pool = crate::upstream::own_db::lazy_pool(&config, &database, "tidegate-admin", 1);
        sqlx::raw_sql(&sql)
            .execute(&pool)
            .await
            .with_context(|| format!("installing the cache trigger in {database}"))
    })?;
    let verb = if a.drop {
        "removed from"
    } else {
        "installed on"
    };
    println!("cache invalidation trigger {verb}: {}", a.tables.join(", "));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::quoted_table;

    #[test]
    fn table_names_are_quoted_part_by_part() {
        assert_eq!(quoted_table("t").unwrap(), "\"t\"");
        assert_eq!(quoted_table("s.t").unwrap(), "\"s\".\"t\"");
        assert_eq!(quoted_table("we\"ird").unwrap(), "\"we\"\"ird\"");
        assert!(quoted_table("a.b.c").is_err());
        assert!(quoted_table("a.").is_err());
    }
}
