//! The primary PostgreSQL side of the role commands, through `sqlx`: roles, GRANTs and
//! PostgreSQL's own privilege answers. Every identifier is quoted ([`quote_ident`]); every
//! value is a bound parameter.

use super::rules::{quote_ident, statements, Grant, Grants, Object, Rule};
use super::rules::{Kind, Privilege};
use anyhow::Context;
use sqlx::postgres::PgConnection;
use sqlx::Connection;
use std::collections::BTreeSet;
use tidegate_config::Config;

/// Connects to `upstream.primary` as the broker's upstream user.
pub async fn connect(config: &Config) -> anyhow::Result<PgConnection> {
    let p = &config.upstream.primary;
    let opts = crate::upstream::own_db::options(config, &p.database, "tidegate admin");
    PgConnection::connect_with(&opts).await.with_context(|| {
        format!(
            "connecting to the primary {}:{} as {} (database {}); pass --no-db to edit only the file",
            p.host, p.port, p.user, p.database
        )
    })
}

async fn role_exists(conn: &mut PgConnection, role: &str) -> anyhow::Result<bool> {
    sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
        .bind(role)
        .fetch_one(conn)
        .await
        .context("looking up the role")
}

/// Whether the object a privilege is on exists (a REVOKE on a dropped table is skipped).
async fn object_exists(conn: &mut PgConnection, on: &Object) -> anyhow::Result<bool> {
    let (sql, name) = match on {
        Object::Schema(s) | Object::AllTablesIn(s) => {
            ("SELECT to_regnamespace($1) IS NOT NULL", quote_ident(s))
        }
        Object::Table(s, t) => (
            "SELECT to_regclass($1) IS NOT NULL",
            format!("{}.{}", quote_ident(s), quote_ident(t)),
        ),
    };
    sqlx::query_scalar::<_, bool>(sql)
        .bind(name)
        .fetch_one(conn)
        .await
        .context("looking up a schema or table")
}

/// Makes PostgreSQL role `role` hold exactly what `rules` mean, in one transaction: creates it
/// `NOLOGIN` when absent; when `old` rules are given (the role is being redefined) revokes what
/// they meant first, then grants what `rules` mean. Returns the statements run.
pub async fn define_role(
    conn: &mut PgConnection,
    role: &str,
    old: Option<&[Rule]>,
    rules: &[Rule],
) -> anyhow::Result<Vec<String>> {
    let mut tx = conn.begin().await.context("starting a transaction")?;
    let mut done = Vec::new();
    if role_exists(&mut tx, role).await? {
        if let Some(old) = old {
            let grants: BTreeSet<Grant> = old.iter().flat_map(Rule::grants).collect();
            for (on, sql) in statements(&grants, role, true) {
                if object_exists(&mut tx, &on).await? {
                    run(&mut tx, &sql).await?;
                    done.push(sql);
                }
            }
        }
    } else {
        let sql = format!("CREATE ROLE {} NOLOGIN", quote_ident(role));
        run(&mut tx, &sql).await?;
        done.push(sql);
    }
    let grants: BTreeSet<Grant> = rules.iter().flat_map(Rule::grants).collect();
    for (_, sql) in statements(&grants, role, false) {
        run(&mut tx, &sql).await?;
        done.push(sql);
    }
    tx.commit().await.context("committing")?;
    Ok(done)
}

/// `GRANT role TO member`. The role must exist.
pub async fn grant_membership(
    conn: &mut PgConnection,
    role: &str,
    member: &str,
) -> anyhow::Result<String> {
    if !role_exists(conn, role).await? {
        anyhow::bail!(
            "PostgreSQL role {role:?} does not exist on the primary: create it with \
             `tidegate role create {role} …` (without --no-db), or pass --no-db"
        );
    }
    if !role_exists(conn, member).await? {
        anyhow::bail!("PostgreSQL role {member:?} (the user's role) does not exist on the primary");
    }
    let sql = format!("GRANT {} TO {}", quote_ident(role), quote_ident(member));
    run(conn, &sql).await?;
    Ok(sql)
}

async fn run(conn: &mut PgConnection, sql: &str) -> anyhow::Result<()> {
    sqlx::raw_sql(sql)
        .execute(conn)
        .await
        .with_context(|| format!("{sql}: failed on the primary"))?;
    Ok(())
}

/// PostgreSQL's answer for `role` doing `kind` on `table` (`schema.table` or `table`, meaning
/// `public.table`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgAnswer {
    /// Each privilege the kind needs, and whether the role has it.
    Privileges(Vec<(Privilege, bool)>),
    /// PostgreSQL has no privilege for this (utility, transaction, or no table given).
    NotApplicable,
    /// The role does not exist.
    NoRole,
    /// The table (or schema) does not exist.
    NoTable,
}

impl PgAnswer {
    /// Allowed by PostgreSQL, when it has a say.
    pub fn allowed(&self) -> Option<bool> {
        match self {
            PgAnswer::Privileges(ps) => Some(ps.iter().all(|(_, ok)| *ok)),
            _ => None,
        }
    }
}

/// Asks PostgreSQL whether `role` holds the privileges `kind` needs on `table`.
pub async fn privileges(
    conn: &mut PgConnection,
    role: &str,
    kind: Kind,
    table: Option<(&str, &str)>,
) -> anyhow::Result<PgAnswer> {
    let needed: &[Privilege] = match kind {
        Kind::Read => &[Privilege::Select],
        Kind::Write => &[Privilege::Insert, Privilege::Update, Privilege::Delete],
        Kind::Ddl => &[Privilege::Create],
        Kind::Utility | Kind::Transaction => return Ok(PgAnswer::NotApplicable),
    };
    let Some((schema, name)) = table else {
        return Ok(PgAnswer::NotApplicable);
    };
    if !role_exists(conn, role).await? {
        return Ok(PgAnswer::NoRole);
    }
    let (object, sql) = if kind == Kind::Ddl {
        (
            Object::Schema(schema.to_owned()),
            "SELECT has_schema_privilege($1::name, $2::text, $3::text)",
        )
    } else {
        (
            Object::Table(schema.to_owned(), name.to_owned()),
            "SELECT has_table_privilege($1::name, $2::text, $3::text)",
        )
    };
    if !object_exists(conn, &object).await? {
        return Ok(PgAnswer::NoTable);
    }
    // has_table_privilege parses its text as a (quoted) qualified name; has_schema_privilege
    // takes the schema's name as it is.
    let target = match &object {
        Object::Table(s, t) => format!("{}.{}", quote_ident(s), quote_ident(t)),
        Object::Schema(s) | Object::AllTablesIn(s) => s.clone(),
    };
    let mut out = Vec::new();
    for &p in needed {
        let ok = sqlx::query_scalar::<_, bool>(sql)
            .bind(role)
            .bind(&target)
            .bind(p.as_sql())
            .fetch_one(&mut *conn)
            .await
            .context("asking PostgreSQL for privileges")?;
        out.push((p, ok));
    }
    Ok(PgAnswer::Privileges(out))
}
