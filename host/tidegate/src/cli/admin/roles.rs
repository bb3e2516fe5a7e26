//! `tidegate roles sync`: PostgreSQL's own GRANTs as the second wall behind the access-control
//! plugin. For every role of the plugin's `roles`, a PostgreSQL role `tidegate_<role>` that can
//! log in and is not a superuser holds exactly the privileges the role's rules imply
//! ([`Grants::grants`]) on the schemas, tables and sequences of the configured database, and
//! nothing more: privileges beyond them, role memberships and superuser-like attributes are
//! revoked. Broker users act as those roles (`[[users]] role = "tidegate_reader"`), so a
//! statement the classifier misjudges meets a permission error from the server.
//!
//! What a rule means (the mapping is [`Grants::grants`]'s, shared with `tidegate role create`):
//! - `read`: USAGE on the schema, SELECT on its tables, views, materialized views, foreign
//!   tables and sequences;
//! - `write`: USAGE on the schema, INSERT, UPDATE, DELETE and TRUNCATE (TideGate classifies
//!   TRUNCATE as a write) on tables, USAGE and UPDATE on sequences (`nextval` for serial
//!   columns);
//! - `ddl`: USAGE and CREATE on the schema (PostgreSQL lets only a table's owner alter or drop
//!   it: nothing to grant for that);
//! - `utility`, `transaction`: nothing (no PostgreSQL privilege corresponds).
//!
//! Patterns: `schema.*` is every table of the schema, `*` every schema of the database except
//! PostgreSQL's (`pg_*`, `information_schema`), TideGate's own (`tidegate`, `tidegate_audit`)
//! and TimescaleDB's internal ones (`_timescaledb_*`, `timescaledb_*`); `table` means
//! `public.table`. Grants are on the objects that exist when the sync runs; for whole schemas
//! the sync also sets the upstream user's default privileges (`ALTER DEFAULT PRIVILEGES IN
//! SCHEMA`), so tables that user creates later are covered without another sync.
//!
//! The sync reads and changes, in one transaction under an advisory lock: the role's
//! attributes (LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS), its
//! memberships in other roles (revoked), its privileges on the schemas (except `pg_*` and
//! `information_schema`) and the tables and sequences in them, and the upstream user's default
//! privileges for it. Column privileges, database privileges and what PUBLIC holds are left
//! alone. Running it again changes nothing.

use super::edit::{self, AccessConfig};
use super::rules::{quote_ident, Grant, Grants, Object, Pattern, Privilege, Rule};
use anyhow::Context;
use live::{holds, live, statements};
use sqlx::postgres::PgConnection;
use sqlx::Connection;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;
use tidegate_config::{Config, PluginKind};

mod live;

/// The PostgreSQL role an access-control role becomes: this prefix and its name.
pub const PREFIX: &str = "tidegate_";

/// Serializes concurrent syncs (`pg_advisory_xact_lock`), e.g. several `tidegate migrate`.
const LOCK_KEY: i64 = 0x7469_6465_726f_6c65; // "tiderole"

/// The PostgreSQL role for access-control role `rbac`.
pub fn pg_role_name(rbac: &str) -> anyhow::Result<String> {
    let name = format!("{PREFIX}{rbac}");
    if name.len() > 63 || rbac.is_empty() || rbac.contains('\0') {
        anyhow::bail!(
            "access-control role {rbac:?}: the PostgreSQL role {name:?} would not be a valid \
             name (1 to 63 bytes, no NUL)"
        );
    }
    Ok(name)
}

/// `tidegate roles …`
#[derive(Debug, clap::Subcommand)]
pub enum RolesCommand {
    /// Make PostgreSQL role `tidegate_<role>` hold exactly the GRANTs each access-control role's
    /// rules imply (created if missing, LOGIN, never superuser; extra privileges revoked), and
    /// report what each holds.
    Sync(SyncArgs),
}

/// `tidegate roles sync`
#[derive(Debug, clap::Args)]
pub struct SyncArgs {
    /// Configuration file.
    #[arg(long, short)]
    pub config: PathBuf,
    /// The access-control plugin's chain name, when there are several.
    #[arg(long)]
    pub plugin: Option<String>,
    /// Print what would change; change nothing.
    #[arg(long)]
    pub plan: bool,
}

/// Runs a `tidegate roles` command.
pub fn roles(cmd: RolesCommand) -> anyhow::Result<()> {
    let RolesCommand::Sync(a) = cmd;
    let config = Config::load(&a.config)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let report = rt.block_on(sync(&config, a.plugin.as_deref(), !a.plan))?;
    print!("{}", report.human());
    Ok(())
}

/// The step `tidegate migrate` runs after the migrations: [`sync`] when the chain has one
/// access-control plugin; `None` when it has none (nothing to mirror).
pub async fn sync_for_migrate(config: &Config) -> anyhow::Result<Option<Report>> {
    let n = config
        .plugins
        .chain
        .iter()
        .filter(|e| e.kind == PluginKind::AccessControl)
        .count();
    match n {
        0 => Ok(None),
        1 => sync(config, None, true).await.map(Some),
        _ => anyhow::bail!(
            "several access-control plugins: run `tidegate roles sync --plugin NAME` for the one \
             whose roles PostgreSQL should mirror"
        ),
    }
}

/// What a sync did (or, with `--plan`, would do).
#[derive(Debug, Clone)]
pub struct Report {
    /// Whether the statements were run.
    pub applied: bool,
    /// One entry per access-control role, in name order.
    pub roles: Vec<RolePlan>,
}

/// One role's part of a [`Report`].
#[derive(Debug, Clone)]
pub struct RolePlan {
    /// The access-control role.
    pub rbac: String,
    /// Its PostgreSQL role.
    pub pg_role: String,
    /// The `[[users]]` that act as it.
    pub users: Vec<String>,
    /// The statements run (or to run), in order.
    pub statements: Vec<String>,
    /// Rules that name an object that does not exist.
    pub notes: Vec<String>,
    /// What the role holds: after the sync, or now with `--plan`.
    pub holds: Vec<String>,
}

impl Report {
    /// Statements run or to run, over every role.
    pub fn changes(&self) -> usize {
        self.roles.iter().map(|r| r.statements.len()).sum()
    }

    /// The human-readable report.
    pub fn human(&self) -> String {
        let mut out = String::new();
        let verb = if self.applied { "ran" } else { "would run" };
        for r in &self.roles {
            let _ = write!(out, "role {} -> PostgreSQL role {}", r.rbac, r.pg_role);
            if !r.users.is_empty() {
                let _ = write!(out, " (acted as by {})", r.users.join(", "));
            }
            out.push('\n');
            for s in &r.statements {
                let _ = writeln!(out, "  {verb}: {s}");
            }
            for n in &r.notes {
                let _ = writeln!(out, "  note: {n}");
            }
            for h in &r.holds {
                let _ = writeln!(out, "  holds: {h}");
            }
        }
        let n = self.changes();
        let _ = match (n, self.applied) {
            (0, _) => writeln!(out, "roles sync: in sync, nothing to change"),
            (n, true) => writeln!(out, "roles sync: {n} change(s) applied"),
            (n, false) => writeln!(
                out,
                "roles sync --plan: {n} change(s) to make; nothing changed"
            ),
        };
        out
    }
}

/// What a privilege is on, as the sync tracks it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    Schema(String),
    Table(String, String),
    Sequence(String, String),
    /// The upstream user's default privileges in a schema for an object type (`r` tables, `S`
    /// sequences, `f` functions, `T` types).
    Defaults(String, char),
}

impl Target {
    /// `GRANT {p} ON …` / `REVOKE {p} ON …` for `role`.
    fn statement(&self, privileges: &[String], role: &str, grant: bool) -> String {
        let ps = privileges.join(", ");
        let (verb, prep) = if grant {
            ("GRANT", "TO")
        } else {
            ("REVOKE", "FROM")
        };
        let role = quote_ident(role);
        match self {
            Target::Schema(s) => format!("{verb} {ps} ON SCHEMA {} {prep} {role}", quote_ident(s)),
            Target::Table(s, t) => format!(
                "{verb} {ps} ON TABLE {}.{} {prep} {role}",
                quote_ident(s),
                quote_ident(t)
            ),
            Target::Sequence(s, t) => format!(
                "{verb} {ps} ON SEQUENCE {}.{} {prep} {role}",
                quote_ident(s),
                quote_ident(t)
            ),
            Target::Defaults(s, o) => {
                let what = match o {
                    'r' => "TABLES",
                    'S' => "SEQUENCES",
                    'f' => "FUNCTIONS",
                    'T' => "TYPES",
                    _ => "SCHEMAS",
                };
                format!(
                    "ALTER DEFAULT PRIVILEGES IN SCHEMA {} {verb} {ps} ON {what} {prep} {role}",
                    quote_ident(s)
                )
            }
        }
    }

    /// How `holds` shows it.
    fn describe(&self) -> String {
        match self {
            Target::Schema(s) => format!("SCHEMA {}", quote_ident(s)),
            Target::Table(s, t) => format!("TABLE {}.{}", quote_ident(s), quote_ident(t)),
            Target::Sequence(s, t) => format!("SEQUENCE {}.{}", quote_ident(s), quote_ident(t)),
            Target::Defaults(s, o) => format!(
                "default privileges of new {} in SCHEMA {}",
                if *o == 'S' { "sequences" } else { "tables" },
                quote_ident(s)
            ),
        }
    }
}

/// A privilege (its SQL keyword) on a target.
type Item = (Target, String);

/// The database's schemas and relations, as the sync sees them.
struct Catalog {
    /// Every schema but PostgreSQL's.
    schemas: Vec<String>,
    /// (schema, name, relkind) of every table-like relation and sequence in them.
    relations: Vec<(String, String, char)>,
}

/// Schemas that are not PostgreSQL's own (SQL condition on `n.nspname`).
const USER_SCHEMAS: &str = "n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'";

/// Schemas `*` does not cover: TideGate's and TimescaleDB's internals.
fn internal_schema(s: &str) -> bool {
    s == "tidegate"
        || s == "tidegate_audit"
        || s.starts_with("_timescaledb")
        || s.starts_with("timescaledb_")
}

impl Catalog {
    async fn read(conn: &mut PgConnection) -> anyhow::Result<Catalog> {
        let schemas = sqlx::query_scalar::<_, String>(&format!(
            "SELECT n.nspname::text FROM pg_namespace n WHERE {USER_SCHEMAS} ORDER BY 1"
        ))
        .fetch_all(&mut *conn)
        .await
        .context("listing schemas")?;
        let relations = sqlx::query_as::<_, (String, String, String)>(&format!(
            "SELECT n.nspname::text, c.relname::text, c.relkind::text FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND {USER_SCHEMAS} ORDER BY 1, 2"
        ))
        .fetch_all(&mut *conn)
        .await
        .context("listing tables")?
        .into_iter()
        .map(|(s, t, k)| (s, t, k.chars().next().unwrap_or('r')))
        .collect();
        Ok(Catalog { schemas, relations })
    }

    fn has_schema(&self, s: &str) -> bool {
        self.schemas.iter().any(|x| x == s)
    }
}

/// What a table privilege means on a sequence.
fn sequence_privileges(p: Privilege) -> &'static [&'static str] {
    match p {
        Privilege::Select => &["SELECT"],
        Privilege::Insert => &["USAGE"],
        Privilege::Update => &["UPDATE"],
        _ => &[],
    }
}

/// `rules` with `*` replaced by every schema it covers.
fn expand_any(rules: &[Rule], catalog: &Catalog) -> Vec<Rule> {
    rules
        .iter()
        .map(|r| {
            let mut tables = Vec::new();
            for p in &r.tables {
                if *p == Pattern::Any {
                    tables.extend(
                        catalog
                            .schemas
                            .iter()
                            .filter(|s| !internal_schema(s))
                            .map(|s| Pattern::Schema(s.clone())),
                    );
                } else {
                    tables.push(p.clone());
                }
            }
            Rule {
                kind_names: r.kind_names.clone(),
                kinds: r.kinds.clone(),
                tables,
            }
        })
        .collect()
}

/// The privileges `rules` imply on what exists now, and notes on what they name but does not.
fn desired(rules: &[Rule], catalog: &Catalog) -> (BTreeSet<Item>, Vec<String>) {
    let grants: BTreeSet<Grant> = expand_any(rules, catalog)
        .iter()
        .flat_map(Rule::grants)
        .collect();
    let mut out = BTreeSet::new();
    let mut notes = BTreeSet::new();
    let relation = |out: &mut BTreeSet<Item>, s: &str, t: &str, kind: char, p: Privilege| {
        if kind == 'S' {
            for sp in sequence_privileges(p) {
                out.insert((Target::Sequence(s.into(), t.into()), (*sp).to_owned()));
            }
        } else {
            out.insert((Target::Table(s.into(), t.into()), p.as_sql().to_owned()));
        }
    };
    for g in grants {
        let p = g.privilege;
        match &g.on {
            Object::Schema(s) => {
                if catalog.has_schema(s) {
                    out.insert((Target::Schema(s.clone()), p.as_sql().to_owned()));
                } else {
                    notes.insert(format!("schema {} does not exist", quote_ident(s)));
                }
            }
            Object::AllTablesIn(s) => {
                if !catalog.has_schema(s) {
                    notes.insert(format!("schema {} does not exist", quote_ident(s)));
                    continue;
                }
                for (rs, rt, kind) in catalog.relations.iter().filter(|r| r.0 == *s) {
                    relation(&mut out, rs, rt, *kind, p);
                }
                out.insert((Target::Defaults(s.clone(), 'r'), p.as_sql().to_owned()));
                for sp in sequence_privileges(p) {
                    out.insert((Target::Defaults(s.clone(), 'S'), (*sp).to_owned()));
                }
            }
            Object::Table(s, t) => {
                match catalog.relations.iter().find(|r| r.0 == *s && r.1 == *t) {
                    Some((rs, rt, kind)) => relation(&mut out, rs, rt, *kind, p),
                    None => {
                        notes.insert(format!(
                            "table {}.{} does not exist: nothing granted on it (sync again once \
                             it does)",
                            quote_ident(s),
                            quote_ident(t)
                        ));
                    }
                }
            }
        }
    }
    (out, notes.into_iter().collect())
}

async fn connect(config: &Config) -> anyhow::Result<PgConnection> {
    let p = &config.upstream.primary;
    let opts = crate::upstream::own_db::options(config, &p.database, "tidegate roles sync");
    PgConnection::connect_with(&opts).await.with_context(|| {
        format!(
            "connecting to the primary {}:{} as {} (database {})",
            p.host, p.port, p.user, p.database
        )
    })
}

/// Mirrors the access-control plugin's roles (the one named `plugin`, or the only one) as
/// PostgreSQL roles on the primary's database, as the upstream user; with `apply` false,
/// only plans. One transaction: a failure changes nothing.
pub async fn sync(config: &Config, plugin: Option<&str>, apply: bool) -> anyhow::Result<Report> {
    let entry = edit::access_control(config, plugin)?;
    let ac = AccessConfig::of(entry)?;
    let mut conn = connect(config).await?;
    let mut tx = conn.begin().await.context("starting a transaction")?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(LOCK_KEY)
        .execute(&mut *tx)
        .await
        .context("taking the roles sync lock")?;
    let catalog = Catalog::read(&mut tx).await?;
    let mut roles = Vec::new();
    for (rbac, rules) in &ac.roles {
        let pg_role = pg_role_name(rbac)?;
        let (want, notes) = desired(rules, &catalog);
        let before = live(&mut tx, &pg_role).await?;
        let stmts = statements(&pg_role, before.as_ref(), &want);
        let now = if apply && !stmts.is_empty() {
            for sql in &stmts {
                sqlx::raw_sql(sql)
                    .execute(&mut *tx)
                    .await
                    .with_context(|| format!("{sql}: failed on the primary"))?;
            }
            live(&mut tx, &pg_role).await?
        } else {
            before
        };
        let users = config
            .users
            .iter()
            .filter(|u| u.role.as_deref() == Some(pg_role.as_str()))
            .map(|u| u.name.clone())
            .collect();
        roles.push(RolePlan {
            rbac: rbac.clone(),
            pg_role,
            users,
            statements: stmts,
            notes,
            holds: holds(now.as_ref()),
        });
    }
    if apply {
        tx.commit().await.context("committing")?;
    } else {
        tx.rollback().await.context("rolling back")?;
    }
    Ok(Report {
        applied: apply,
        roles,
    })
}

/// `tidegate check`'s warnings: a `[[users]]` entry whose access-control roles are restricted
/// (no rule of theirs grants every kind on `*`) but that acts as the upstream user, so a
/// statement the classifier misjudges runs with that user's privileges (often a superuser's).
/// Only the configuration is read: whether another role is a superuser is not known here.
pub fn check_warnings(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let upstream = &config.upstream.primary;
    for entry in config
        .plugins
        .chain
        .iter()
        .filter(|e| e.kind == PluginKind::AccessControl)
    {
        let Ok(ac) = AccessConfig::of(entry) else {
            continue;
        };
        for user in &config.users {
            if !entry.users.is_empty() && !entry.users.contains(&user.name) {
                continue;
            }
            if user.role(upstream) != upstream.user {
                continue;
            }
            let privileges = super::check::privileges(&ac, &user.name, &user.roles);
            let everything = privileges.unrestricted
                || privileges.rules.iter().any(|(_, r)| {
                    r.kinds.len() == super::rules::Kind::ALL.len()
                        && r.tables.contains(&Pattern::Any)
                });
            if everything {
                continue;
            }
            let suggestion = match privileges.roles.first() {
                Some(r) => format!(
                    "run `tidegate roles sync` and set role = \"{PREFIX}{r}\" in its [[users]] entry"
                ),
                None => "give it a `role` with only the privileges it needs".to_owned(),
            };
            out.push(format!(
                "user {:?} is restricted by access-control plugin {} but acts as the upstream \
                 user {:?} (no [[users]] role of its own): a statement TideGate misjudges runs \
                 with that role's privileges; {suggestion}",
                user.name, entry.name, upstream.user
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests;
