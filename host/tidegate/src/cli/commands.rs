//! The `tidegate` command line: its subcommands and what each runs. `main.rs` only calls
//! [`run`].

use crate::broker::{Broker, Listeners};
use crate::config::{Config, ScramVerifier};
use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "tidegate", version, about = "A PostgreSQL-wire query broker")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker.
    Serve {
        /// Configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration file without touching the network; warn about users whose
    /// access-control roles are restricted but who act as the upstream user.
    Check {
        /// Configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration file and have the running broker load it (SIGHUP to the
    /// process in `runtime.pid_file`).
    Reload {
        /// Configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Read a password on standard input and print its SCRAM-SHA-256 verifier for `[[users]]`.
    HashPassword,
    /// The audit log: verify its hash chain, or list records.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Access-control roles: define them, assign them to users, check what a user may do.
    Role {
        #[command(subcommand)]
        command: crate::cli::admin::RoleCommand,
    },
    /// PostgreSQL's GRANTs as the second wall: `roles sync` makes PostgreSQL role
    /// `tidegate_<role>` hold exactly what each access-control role's rules imply.
    Roles {
        #[command(subcommand)]
        command: crate::cli::admin::roles::RolesCommand,
    },
    /// Read a value on standard input and print it encrypted as the encryption plugin stores
    /// it (`tgenc:v1:…`).
    Encrypt(crate::cli::admin::EncryptArgs),
    /// Read a stored `tgenc:v1:` value on standard input and print its plaintext.
    Decrypt(crate::cli::admin::DecryptArgs),
    /// The result cache.
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// `pg_dump` (directory format, parallel) with a manifest of versions, counts and
    /// checksums; `--verify DIR` restores a backup into a scratch database and compares.
    Backup(crate::cli::backup::BackupArgs),
    /// Restore a backup into a new database: checksums and the TimescaleDB version checked
    /// first, `timescaledb_pre_restore()`/`post_restore()` around `pg_restore`, counts compared.
    Restore(crate::cli::backup::RestoreArgs),
    /// Check the broker, the primary, each replica, Redis and TimescaleDB's jobs. Exit status:
    /// 0 ok, 1 degraded, 2 down.
    Health(crate::cli::health::HealthArgs),
    /// The heaviest statements (pg_stat_statements) with TideGate's fingerprints and EXPLAIN
    /// findings in plain words.
    SlowQueries(crate::cli::slow::SlowArgs),
    /// One page that says why the database is slow: top statements, latency over time, cache,
    /// pool waits, replica lag, sizes, indexes, bloat, buffer hits, hypertables, failed jobs
    /// (HTML with inline SVG, Markdown or JSON).
    Analyze(crate::cli::analyze::AnalyzeArgs),
    #[command(flatten)]
    Lifecycle(crate::cli::timescale::Lifecycle),
    /// Apply TideGate's pending schema migrations to the primary (advisory-locked: concurrent
    /// runs apply each migration once), then `roles sync` when the chain has an access-control
    /// plugin; or list the migrations' state with `--status`. Exit status: 0 done, 1 failed
    /// (the reason on standard error).
    Migrate {
        /// Configuration file (its [upstream.primary] and [migrations] sections).
        #[arg(long, short)]
        config: PathBuf,
        /// Only list each migration as applied (with its time) or pending; change nothing.
        #[arg(long)]
        status: bool,
    },
}

#[derive(Subcommand)]
enum CacheCommand {
    /// Install a trigger that makes writes to these tables made outside TideGate invalidate
    /// cached reads (NOTIFY tidegate_invalidate); `--drop` removes it.
    Trigger(crate::cli::admin::cache_trigger::TriggerArgs),
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check every record's link in the chain and the signed checkpoints; report the first
    /// broken record. Exit status: 0 intact, 1 broken, 2 could not check.
    Verify {
        /// Configuration file (its [audit] section and keys).
        #[arg(long, short)]
        config: PathBuf,
        /// Checkpoint file (default: audit.checkpoint_file).
        #[arg(long)]
        checkpoints: Option<PathBuf>,
    },
    /// Print records as JSON lines, oldest first (never parameter values: none are kept).
    Logs {
        /// Configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Only this broker user's records.
        #[arg(long)]
        user: Option<String>,
        /// From this time (anything PostgreSQL reads as timestamptz).
        #[arg(long)]
        from: Option<String>,
        /// Until this time (exclusive).
        #[arg(long)]
        to: Option<String>,
        /// At most this many records.
        #[arg(long, default_value_t = 1000)]
        limit: i64,
    },
}

fn audit_command(command: AuditCommand) -> anyhow::Result<()> {
    use crate::audit::verify::{self, Outcome};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let load = |path: &PathBuf| {
        Config::load(path).unwrap_or_else(|e| {
            eprintln!("{e}");
            std::process::exit(2);
        })
    };
    match command {
        AuditCommand::Verify {
            config,
            checkpoints,
        } => {
            let cfg = load(&config);
            match rt.block_on(verify::verify(&cfg, checkpoints.as_deref())) {
                Ok(Outcome::Intact {
                    records,
                    checkpoints,
                }) => {
                    println!("audit chain intact: {records} records, {checkpoints} checkpoints");
                    Ok(())
                }
                Ok(Outcome::Broken(b)) => {
                    println!("audit chain BROKEN at record {}: {}", b.seq, b.reason);
                    std::process::exit(1);
                }
                Err(e) => {
                    eprintln!("audit verify: {e:#}");
                    std::process::exit(2);
                }
            }
        }
        AuditCommand::Logs {
            config,
            user,
            from,
            to,
            limit,
        } => {
            let cfg = load(&config);
            let rows = rt.block_on(verify::logs(
                &cfg,
                user.as_deref(),
                from.as_deref(),
                to.as_deref(),
                limit,
            ))?;
            for r in rows {
                println!("{r}");
            }
            Ok(())
        }
    }
}

fn fail(e: &dyn std::fmt::Display) -> ! {
    eprintln!("tidegate migrate: {e}");
    std::process::exit(1);
}

/// `tidegate migrate`: one line per migration on standard output; errors on standard error
/// (notices, such as v3's without TimescaleDB, are logged there too), exit status 1.
fn migrate_command(config: PathBuf, status_only: bool) -> anyhow::Result<()> {
    use crate::cli::migrate;
    let cfg = Config::load(&config).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1);
    });
    crate::cli::logging::init(&cfg.log);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let applied = if status_only {
        None
    } else {
        Some(rt.block_on(migrate::run(&cfg)).unwrap_or_else(|e| fail(&e)))
    };
    let status = rt
        .block_on(migrate::status(&cfg))
        .unwrap_or_else(|e| fail(&e));
    for s in &status {
        println!("{s}");
    }
    if let Some(applied) = applied {
        println!("{} applied by this run", applied.len());
    }
    match rt.block_on(migrate::time_series_layout(&cfg)) {
        Ok(line) => println!("{line}"),
        Err(e) => eprintln!("time_series_data: not inspected: {e}"),
    }
    if let Some(s) = status.iter().find(|s| s.checksum_mismatch) {
        fail(&migrate::MigrateError::Changed(s.version));
    }
    if !status_only {
        let synced = rt
            .block_on(migrate::sync_roles(&cfg))
            .unwrap_or_else(|e| fail(&format!("roles sync: {e:#}")));
        if let Some(report) = synced {
            print!("{}", report.human());
        }
    }
    Ok(())
}

/// Parses the command line and runs the command.
pub fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match Config::load(&config) {
            Ok(c) => {
                println!(
                    "{}: ok ({} users, listening on {})",
                    config.display(),
                    c.users.len(),
                    c.listen.sql
                );
                for w in crate::cli::admin::roles::check_warnings(&c) {
                    eprintln!("warning: {w}");
                }
                Ok(())
            }
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        },
        Command::Reload { config } => {
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    eprintln!("not reloaded: the running configuration stays");
                    std::process::exit(1);
                }
            };
            use crate::cli::admin::signal::{signal_reload, Reload};
            match signal_reload(&cfg) {
                Reload::Signalled(pid) => {
                    println!(
                        "{}: ok; reload signalled to process {pid}",
                        config.display()
                    );
                    Ok(())
                }
                Reload::NoPidFile => anyhow::bail!(
                    "runtime.pid_file is not set in {}: send SIGHUP to the broker instead",
                    config.display()
                ),
                Reload::NotRunning(why) => anyhow::bail!("{why}"),
            }
        }
        Command::Audit { command } => audit_command(command),
        Command::Role { command } => crate::cli::admin::role(command),
        Command::Roles { command } => crate::cli::admin::roles::roles(command),
        Command::Encrypt(args) => crate::cli::admin::encrypt(args),
        Command::Decrypt(args) => crate::cli::admin::decrypt(args),
        Command::Cache {
            command: CacheCommand::Trigger(args),
        } => crate::cli::admin::cache_trigger::run(args),
        Command::Migrate { config, status } => migrate_command(config, status),
        Command::HashPassword => {
            let mut pw = String::new();
            std::io::stdin()
                .read_line(&mut pw)
                .context("reading the password")?;
            let pw = pw.trim_end_matches(['\r', '\n']);
            println!("{}", ScramVerifier::from_password(pw, 4096).to_pg_string());
            Ok(())
        }
        Command::Serve { config } => serve_command(config),
        Command::Lifecycle(command) => std::process::exit(crate::cli::timescale::run(command)),
        Command::Health(args) => std::process::exit(crate::cli::health::run(args)),
        Command::SlowQueries(args) => std::process::exit(crate::cli::slow::run(args)),
        Command::Analyze(args) => std::process::exit(crate::cli::analyze::run(args)),
        Command::Backup(args) => std::process::exit(crate::cli::backup::run_backup(args)),
        Command::Restore(args) => std::process::exit(crate::cli::backup::run_restore(args)),
    }
}

/// `tidegate serve`: migrations (when `migrations.on_start`), the listeners, then the broker
/// until SIGTERM or SIGINT.
fn serve_command(config: PathBuf) -> anyhow::Result<()> {
    let cfg = match Config::load(&config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    crate::cli::logging::init(&cfg.log);
    // One thread runs an event loop like PgBouncer's: on small machines it spends the
    // least CPU per transaction. More threads scale a busy broker across cores.
    let rt = match cfg.runtime.worker_threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            if n > 1 {
                b.worker_threads(n);
            }
            b.enable_all().build()
        }
    }
    .context("starting the runtime")?;
    rt.block_on(async move {
        // Before the listener exists: an instance whose migrations fail never accepts
        // a client.
        if cfg.migrations.on_start {
            match crate::cli::migrate::run(&cfg).await {
                Ok(applied) => tracing::info!(
                    applied = applied.len(),
                    database = cfg.migrations_database(),
                    "migrations are up to date"
                ),
                Err(e) => {
                    tracing::error!(error = %e, "migrations failed; not starting");
                    std::process::exit(1);
                }
            }
        }
        let listener =
            sql_listener(cfg.listen.sql).with_context(|| format!("binding {}", cfg.listen.sql))?;
        let http = match cfg.listen.http {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding {addr} (listen.http)"))?,
            ),
            None => None,
        };
        let pid_file = cfg.runtime.pid_file.clone();
        if let Some(f) = &pid_file {
            std::fs::write(f, format!("{}\n", std::process::id()))
                .with_context(|| format!("writing {f}"))?;
        }
        let mut broker = Broker::start(cfg).await?;
        broker.reload_on_sighup(config.clone())?;
        broker.watch_config_file(config.clone());
        broker
            .run(
                Listeners {
                    sql: listener,
                    http,
                },
                shutdown_signal(),
            )
            .await;
        if let Some(f) = &pid_file {
            let _ = std::fs::remove_file(f);
        }
        Ok(())
    })
}

/// Resolves on SIGTERM or SIGINT (SIGHUP reloads: see `crate::broker::reload::on_sighup`).
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the broker with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}

/// The SQL listener, with a backlog deep enough for a connection storm (the kernel caps it at
/// `net.core.somaxconn`): a burst of new clients waits in the queue rather than being dropped
/// and retried a second later.
fn sql_listener(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}
