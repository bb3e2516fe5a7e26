//! The `tidegate` command.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use tidegate::config::{Config, ScramVerifier};

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
    /// Validate a configuration file without touching the network.
    Check {
        /// Configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Read a password on standard input and print its SCRAM-SHA-256 verifier for `[[users]]`.
    HashPassword,
}

fn main() -> anyhow::Result<()> {
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
                Ok(())
            }
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        },
        Command::HashPassword => {
            let mut pw = String::new();
            std::io::stdin()
                .read_line(&mut pw)
                .context("reading the password")?;
            let pw = pw.trim_end_matches(['\r', '\n']);
            println!("{}", ScramVerifier::from_password(pw, 4096).to_pg_string());
            Ok(())
        }
        Command::Serve { config } => {
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    std::process::exit(1);
                }
            };
            tidegate::logging::init(&cfg.log);
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
                let listener = tokio::net::TcpListener::bind(cfg.listen.sql)
                    .await
                    .with_context(|| format!("binding {}", cfg.listen.sql))?;
                tidegate::server::run(listener, cfg, shutdown_signal()).await?;
                Ok(())
            })
        }
    }
}

/// Resolves on SIGTERM or SIGINT. SIGHUP is caught (so it cannot kill the process) and logged.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the broker with SIGKILL");
        return std::future::pending().await;
    };
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM received"); return; }
            _ = int.recv() => { tracing::info!("SIGINT received"); return; }
            _ = hup.recv() => tracing::info!("SIGHUP received: configuration reload is not implemented yet"),
        }
    }
}
