//! `tidegate timescale plan | apply | status`: the declared lifecycle (`[timescale]`) shown as
//! a plan, applied, and reported.

use crate::config::Config;
use crate::timescale::{self, TimescaleError};
use std::path::PathBuf;

/// `tidegate timescale …`
#[derive(Debug, clap::Subcommand)]
pub enum TimescaleCommand {
    /// Print what `apply` would change, as SQL with one line of why each. Exit status: 0 in
    /// sync, 2 changes to make, 1 could not plan.
    Plan(Args),
    /// Make the catalog what `[timescale]` declares (advisory-locked, one object per
    /// transaction, idempotent). Exit status: 0 done, 1 failed.
    Apply(ApplyArgs),
    /// Chunks, compression, continuous aggregates' watermarks and jobs.
    Status(Args),
}

/// Options of `plan` and `status`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Configuration file.
    #[arg(long, short)]
    pub config: PathBuf,
    /// JSON on standard output instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Options of `apply`.
#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// The options `plan` and `status` take.
    #[command(flatten)]
    pub args: Args,
    /// Drop and recreate continuous aggregates whose definition changed (their rows are
    /// re-materialized).
    #[arg(long)]
    pub allow_recreate: bool,
}

/// Runs a `tidegate timescale` command; returns the exit status.
pub fn run(cmd: TimescaleCommand) -> i32 {
    let args = match &cmd {
        TimescaleCommand::Plan(a) | TimescaleCommand::Status(a) => a,
        TimescaleCommand::Apply(a) => &a.args,
    };
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    crate::cli::logging::init(&config.log);
    let json = args.json;
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("starting the runtime: {e}");
            return 1;
        }
    };
    let out = rt.block_on(async {
        match &cmd {
            TimescaleCommand::Plan(_) => {
                let plan = timescale::plan(&config).await?;
                let code = if !plan.errors.is_empty() {
                    1
                } else if plan.is_empty() {
                    0
                } else {
                    2
                };
                Ok::<_, TimescaleError>((render(json, &plan, plan.human()), code))
            }
            TimescaleCommand::Apply(a) => {
                let applied = timescale::apply(&config, a.allow_recreate).await?;
                Ok((render(json, &applied, applied.human()), 0))
            }
            TimescaleCommand::Status(_) => {
                let status = timescale::status(&config).await?;
                Ok((render(json, &status, status.human()), 0))
            }
        }
    });
    match out {
        Ok((text, code)) => {
            print!("{text}");
            code
        }
        Err(e) => {
            eprintln!("tidegate timescale: {e}");
            1
        }
    }
}

fn render<T: serde::Serialize>(json: bool, value: &T, human: String) -> String {
    if json {
        serde_json::to_string_pretty(value).map_or(human, |s| s + "\n")
    } else {
        human
    }
}
