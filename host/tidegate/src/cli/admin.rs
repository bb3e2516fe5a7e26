//! Administration commands: access-control roles (`tidegate role create | assign | check`),
//! field encryption (`tidegate encrypt | decrypt`) and the result cache's invalidation trigger
//! (`tidegate cache trigger`).
//!
//! Role commands edit the configuration file in place (comments and layout kept, the result
//! validated before an atomic replace), mirror the rules as PostgreSQL roles and GRANTs on the
//! primary (unless `--no-db`), then signal the running broker to reload. Verdicts and
//! validation come from the configured access-control plugin itself, loaded as the broker
//! loads it.

pub mod cache_trigger;
pub mod check;
pub mod crypt;
pub mod edit;
pub mod pg;
pub mod plugin;
pub mod roles;
pub mod rules;
pub mod signal;

use anyhow::Context;
use edit::{AccessConfig, ConfigFile, EditError};
use rules::{Kind, RoleError, Rule};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use tidegate_config::Config;
use tidegate_plugins::Principal;

/// `tidegate role …`
#[derive(Debug, clap::Subcommand)]
pub enum RoleCommand {
    /// Define (or redefine) an access-control role in the configuration file and as a
    /// PostgreSQL role with the matching GRANTs.
    Create(CreateArgs),
    /// Give a broker user a role: `[[users]] roles` in the file, and GRANT of the PostgreSQL
    /// role to the user's PostgreSQL role.
    Assign(AssignArgs),
    /// Show a user's roles and rules, and what the access-control plugin and PostgreSQL each
    /// allow it.
    Check(CheckArgs),
}

/// Where `role create` and `role assign` make their change.
#[derive(Debug, clap::Args)]
pub struct EditTarget {
    /// Configuration file.
    #[arg(long, short)]
    pub config: PathBuf,
    /// The access-control plugin's chain name, when there are several.
    #[arg(long)]
    pub plugin: Option<String>,
    /// Edit only the file; leave PostgreSQL alone.
    #[arg(long)]
    pub no_db: bool,
}

/// `tidegate role create`
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// The role (also the PostgreSQL role's name).
    pub name: String,
    /// A rule, KIND[,KIND]:PATTERN[,PATTERN]. Kinds: read, write, ddl, utility, transaction, *.
    /// Patterns: *, schema.*, schema.table, table. Repeat for several rules.
    #[arg(long = "allow", value_name = "KINDS:TABLES")]
    pub allow: Vec<String>,
    /// Where the change is made.
    #[command(flatten)]
    pub target: EditTarget,
}

/// `tidegate role assign`
#[derive(Debug, clap::Args)]
pub struct AssignArgs {
    /// The broker user (`[[users]] name`).
    pub user: String,
    /// The role, defined in the access-control plugin's roles.
    pub role: String,
    /// Where the change is made.
    #[command(flatten)]
    pub target: EditTarget,
}

/// `tidegate role check`
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The broker user (`[[users]] name`).
    pub user: String,
    /// Configuration file.
    #[arg(long, short)]
    pub config: PathBuf,
    /// A table to check (`schema.table` or `table`); repeatable. None: statements without a
    /// table.
    #[arg(long = "table", value_name = "TABLE")]
    pub tables: Vec<String>,
    /// A statement kind to check (read, write, ddl, utility, transaction, *); repeatable.
    /// Default: every kind.
    #[arg(long = "kind", value_name = "KIND")]
    pub kinds: Vec<String>,
    /// The access-control plugin's chain name, when there are several.
    #[arg(long)]
    pub plugin: Option<String>,
    /// Do not ask PostgreSQL.
    #[arg(long)]
    pub no_db: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `tidegate encrypt`
#[derive(Debug, clap::Args)]
pub struct EncryptArgs {
    /// Configuration file (its `[[plugins.keys]]`).
    #[arg(long, short)]
    pub config: PathBuf,
    /// The key name; default: the key the encryption plugin configures for the column.
    #[arg(long)]
    pub key: Option<String>,
    /// The column the value is for, `table.column` or `schema.table.column` (the associated
    /// data is `table.column`).
    #[arg(long)]
    pub column: String,
    /// Take standard input byte for byte (otherwise one trailing newline is dropped).
    #[arg(long)]
    pub raw: bool,
}

/// `tidegate decrypt`
#[derive(Debug, clap::Args)]
pub struct DecryptArgs {
    /// Configuration file (its `[[plugins.keys]]`).
    #[arg(long, short)]
    pub config: PathBuf,
    /// The column the value was stored in, `table.column` or `schema.table.column`.
    #[arg(long)]
    pub column: String,
    /// Print the plaintext byte for byte (otherwise a newline follows it).
    #[arg(long)]
    pub raw: bool,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
}

/// Runs a `tidegate role` command.
pub fn role(cmd: RoleCommand) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        match cmd {
            RoleCommand::Create(a) => create(a).await,
            RoleCommand::Assign(a) => assign(a).await,
            RoleCommand::Check(a) => check(a).await,
        }
    })
}

async fn create(a: CreateArgs) -> anyhow::Result<()> {
    rules::check_role_name(&a.name)?;
    if a.allow.is_empty() {
        return Err(RoleError::NoRules.into());
    }
    let rules = a
        .allow
        .iter()
        .map(|r| Rule::parse_arg(r))
        .collect::<Result<Vec<_>, _>>()?;
    let mut file = ConfigFile::open(&a.target.config)?;
    let entry = edit::access_control(&file.config, a.target.plugin.as_deref())?;
    let plugin_name = entry.name.clone();
    let old = AccessConfig::of(entry)?.roles.get(&a.name).cloned();
    edit::set_role(&mut file.doc, &plugin_name, &a.name, &rules)?;
    let new_config = edit::validate(&a.target.config, &file.doc.to_string())?;
    let new_entry = edit::access_control(&new_config, Some(&plugin_name))?;
    AccessConfig::of(new_entry)?;
    plugin_accepts(&new_config, new_entry).await?;
    if !a.target.no_db {
        let mut conn = pg::connect(&file.config).await?;
        for sql in pg::define_role(&mut conn, &a.name, old.as_deref(), &rules).await? {
            println!("postgres: {sql}");
        }
    }
    let (config, changed) = save(&file, a.target.no_db)?;
    let what = if old.is_some() {
        "redefined"
    } else {
        "defined"
    };
    println!(
        "role {}: {what} with {} rule(s) in {} (plugin {plugin_name})",
        a.name,
        rules.len(),
        a.target.config.display()
    );
    report_change(&config, changed);
    Ok(())
}

/// Saves the edited file; the error says whether PostgreSQL was already changed.
fn save(file: &ConfigFile, no_db: bool) -> anyhow::Result<(Config, bool)> {
    file.save().with_context(|| {
        if no_db {
            "the configuration file was not changed".to_owned()
        } else {
            "PostgreSQL was updated, but the configuration file was not".to_owned()
        }
    })
}

async fn assign(a: AssignArgs) -> anyhow::Result<()> {
    let mut file = ConfigFile::open(&a.target.config)?;
    let entry = edit::access_control(&file.config, a.target.plugin.as_deref())?;
    if !AccessConfig::of(entry)?.roles.contains_key(&a.role) {
        return Err(EditError::UndefinedRole {
            role: a.role.clone(),
            plugin: entry.name.clone(),
        }
        .into());
    }
    let user = file
        .config
        .user(&a.user)
        .ok_or_else(|| EditError::UnknownUser(a.user.clone()))?;
    let pg_role = user.role(&file.config.upstream.primary).to_owned();
    let added = edit::assign_role(&mut file.doc, &a.user, &a.role)?;
    edit::validate(&a.target.config, &file.doc.to_string())?;
    if !a.target.no_db {
        let mut conn = pg::connect(&file.config).await?;
        let sql = pg::grant_membership(&mut conn, &a.role, &pg_role).await?;
        println!("postgres: {sql}");
    }
    let (config, changed) = save(&file, a.target.no_db)?;
    if added {
        println!(
            "user {}: role {} assigned in {}",
            a.user,
            a.role,
            a.target.config.display()
        );
    } else {
        println!("user {}: already had role {}", a.user, a.role);
    }
    report_change(&config, changed);
    Ok(())
}

fn report_change(config: &Config, changed: bool) {
    if changed {
        println!("{}", signal::after_change(config));
    } else {
        println!("the configuration file is unchanged");
    }
}

/// Loads the access-control plugin with `config` so its own `init` judges the configuration.
/// A plugin file that is not there (not built yet) is reported, not fatal.
async fn plugin_accepts(
    config: &Config,
    entry: &tidegate_config::PluginEntry,
) -> anyhow::Result<()> {
    let path = plugin::path(config, entry);
    if !path.exists() {
        eprintln!(
            "note: {} not found: the rules were checked by tidegate, not by the plugin itself",
            path.display()
        );
        return Ok(());
    }
    plugin::load(config, entry).await.map(drop).map_err(|e| {
        anyhow::anyhow!("the access-control plugin refuses the new configuration: {e}")
    })
}

async fn check(a: CheckArgs) -> anyhow::Result<()> {
    let config = Config::load(&a.config)?;
    let entry = edit::access_control(&config, a.plugin.as_deref())?;
    let ac = AccessConfig::of(entry)?;
    let user = config
        .user(&a.user)
        .ok_or_else(|| EditError::UnknownUser(a.user.clone()))?;
    let kinds: Vec<Kind> = check::parse_kinds(&a.kinds).map_err(anyhow::Error::msg)?;
    let tables = a
        .tables
        .iter()
        .map(|t| check::parse_table(t))
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    let pg_role = user.role(&config.upstream.primary).to_owned();
    let database = config.upstream.primary.database.clone();
    let principal = Arc::new(Principal {
        user: user.name.clone(),
        role: pg_role.clone(),
        roles: user.roles.clone(),
        database: database.clone(),
    });
    let loaded = plugin::load(&config, entry)
        .await
        .map_err(|e| anyhow::anyhow!("cannot load the access-control plugin: {e}"))?;
    let applies = entry.applies_to(&user.name, &database);
    let mut conn = if a.no_db {
        None
    } else {
        Some(pg::connect(&config).await?)
    };
    let asked: Vec<Option<&tidegate_plugins::TableRef>> = if tables.is_empty() {
        vec![None]
    } else {
        tables.iter().map(Some).collect()
    };
    let mut checks = Vec::new();
    for &kind in &kinds {
        for table in &asked {
            let refs: Vec<_> = table.iter().map(|t| (*t).clone()).collect();
            let verdict = if applies {
                Some(loaded.decide(&principal, kind, &refs).await)
            } else {
                None
            };
            let postgres = match conn.as_mut() {
                None => None,
                Some(c) => {
                    let t =
                        table.map(|t| (t.schema.as_deref().unwrap_or("public"), t.name.as_str()));
                    Some(pg::privileges(c, &pg_role, kind, t).await?)
                }
            };
            checks.push(check::Check {
                kind,
                table: table.cloned(),
                plugin: verdict,
                postgres,
            });
        }
    }
    let report = check::Report {
        user: user.name.clone(),
        pg_role,
        database,
        plugin: entry.name.clone(),
        privileges: check::privileges(&ac, &user.name, &user.roles),
        checks,
    };
    if a.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.human());
    }
    Ok(())
}

/// Reads standard input whole (values never come from arguments: those show in `ps`).
fn stdin_bytes() -> anyhow::Result<Vec<u8>> {
    let mut buf = Vec::new();
    std::io::stdin()
        .read_to_end(&mut buf)
        .context("reading standard input")?;
    Ok(buf)
}

fn without_newline(mut v: Vec<u8>) -> Vec<u8> {
    if v.last() == Some(&b'\n') {
        v.pop();
        if v.last() == Some(&b'\r') {
            v.pop();
        }
    }
    v
}

/// Runs `tidegate encrypt`: the plaintext on standard input, the stored value on standard
/// output.
pub fn encrypt(a: EncryptArgs) -> anyhow::Result<()> {
    let config = Config::load(&a.config)?;
    let key = match a.key {
        Some(k) => k,
        None => crypt::configured_key(&config, &a.column)
            .ok_or_else(|| crypt::CryptError::NoKey(a.column.clone()))?,
    };
    crypt::aad(&a.column)?;
    let mut plain = stdin_bytes()?;
    if !a.raw {
        plain = without_newline(plain);
    }
    for w in crypt::warnings(&config, &key, &a.column) {
        eprintln!("warning: {w}");
    }
    let stored = crypt::encrypt(&config, &key, &a.column, &plain)?;
    println!("{stored}");
    Ok(())
}

/// Runs `tidegate decrypt`: a stored value on standard input, its plaintext on standard output.
pub fn decrypt(a: DecryptArgs) -> anyhow::Result<()> {
    let config = Config::load(&a.config)?;
    crypt::aad(&a.column)?;
    let input = stdin_bytes()?;
    let stored = String::from_utf8_lossy(&input);
    let plain = crypt::decrypt(&config, &a.column, stored.trim())?;
    let mut out = std::io::stdout().lock();
    out.write_all(&plain).context("writing the plaintext")?;
    if !a.raw {
        out.write_all(b"\n").context("writing the plaintext")?;
    }
    out.flush().context("writing the plaintext")
}
