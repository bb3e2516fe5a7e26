//! The time-series lifecycle on the command line: `tidegate timescale plan | apply | status`
//! (the declared state of `[timescale]`), and the seed's operations — `retention apply`,
//! `cleanup`, `compress`, `decompress`, `caggs`, `chunks`, `jobs`.

use crate::config::{Config, Interval};
use crate::timescale::{self, objects, ops, TimescaleError};
use std::future::Future;
use std::path::PathBuf;

/// The lifecycle's top-level commands (flattened into `tidegate`'s).
#[derive(Debug, clap::Subcommand)]
pub enum Lifecycle {
    /// The time-series lifecycle declared in `[timescale]`: plan, apply, status.
    Timescale {
        /// Its subcommand.
        #[command(subcommand)]
        command: TimescaleCommand,
    },
    /// Retention: remove data older than the declared `retention.drop_after` (or --older-than).
    Retention {
        /// Its subcommand.
        #[command(subcommand)]
        command: RetentionCommand,
    },
    /// Retention on every declared table that has one (the seed's `cleanup_old_data`):
    /// `drop_chunks` on hypertables, a batched, resumable DELETE on plain tables.
    Cleanup(OpArgs),
    /// Compress the eligible chunks now (older than the declared `compression.after`, or
    /// --older-than) and report the ratio.
    Compress(TableOpArgs),
    /// Decompress a hypertable's compressed chunks with data in a time range.
    Decompress(DecompressArgs),
    /// Continuous aggregates: create (as declared), refresh, list, drop.
    Caggs {
        /// Its subcommand.
        #[command(subcommand)]
        command: CaggsCommand,
    },
    /// A hypertable's chunks with their ranges, sizes and compression.
    Chunks(ChunksArgs),
    /// TimescaleDB's background jobs: list (--failed: their errors), or `run ID`.
    Jobs(JobsArgs),
}

/// `tidegate retention …`
#[derive(Debug, clap::Subcommand)]
pub enum RetentionCommand {
    /// Remove a table's old data (every declared table without TABLE).
    Apply(TableOpArgs),
}

/// Options of `cleanup`.
#[derive(Debug, clap::Args)]
pub struct OpArgs {
    /// Configuration file.
    #[arg(long, short)]
    pub config: PathBuf,
    /// Report what would be done, with the same numbers; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Instead of the declared age (e.g. "20d").
    #[arg(long, value_parser = Interval::parse)]
    pub older_than: Option<Interval>,
    /// JSON on standard output instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Options of `retention apply` and `compress`.
#[derive(Debug, clap::Args)]
pub struct TableOpArgs {
    /// Only this table (`schema.table`).
    pub table: Option<String>,
    /// The other options.
    #[command(flatten)]
    pub op: OpArgs,
}

/// Options of `decompress`.
#[derive(Debug, clap::Args)]
pub struct DecompressArgs {
    /// The hypertable.
    pub table: String,
    /// From this time (anything PostgreSQL reads as timestamptz).
    #[arg(long)]
    pub from: Option<String>,
    /// Until this time.
    #[arg(long)]
    pub to: Option<String>,
    /// Configuration file.
    #[arg(long, short)]
    pub config: PathBuf,
    /// List the chunks; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `tidegate caggs …`
#[derive(Debug, clap::Subcommand)]
pub enum CaggsCommand {
    /// Create a declared aggregate and its policies now (as `timescale apply` would).
    Create(CaggArgs),
    /// Materialize a window now (default: everything).
    Refresh(RefreshArgs),
    /// The aggregates with their watermarks and lag.
    List(Args),
    /// Drop an aggregate (a declared one comes back with the next `timescale apply`).
    Drop(CaggArgs),
}

/// An aggregate's name and the config.
#[derive(Debug, clap::Args)]
pub struct CaggArgs {
    /// `schema.view`
    pub name: String,
    /// Configuration file.
    #[arg(long, short)]
    pub config: PathBuf,
}

/// Options of `caggs refresh`.
#[derive(Debug, clap::Args)]
pub struct RefreshArgs {
    /// The aggregate and the config.
    #[command(flatten)]
    pub cagg: CaggArgs,
    /// The window's start (timestamptz; default: the beginning).
    #[arg(long)]
    pub from: Option<String>,
    /// The window's end (default: the end).
    #[arg(long)]
    pub to: Option<String>,
}

/// Options of `chunks`.
#[derive(Debug, clap::Args)]
pub struct ChunksArgs {
    /// The hypertable.
    pub table: String,
    /// The config and output format.
    #[command(flatten)]
    pub args: Args,
}

/// `tidegate jobs [--failed] [run ID]`
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct JobsArgs {
    /// `run ID`
    #[command(subcommand)]
    pub run: Option<JobsCommand>,
    /// The jobs' recorded errors instead of the jobs.
    #[arg(long)]
    pub failed: bool,
    /// Configuration file.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// JSON on standard output instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `tidegate jobs run ID`
#[derive(Debug, clap::Subcommand)]
pub enum JobsCommand {
    /// Run a job now, in the foreground.
    Run {
        /// `job_id`
        id: i32,
        /// Configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
}

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

/// Runs a lifecycle command; returns the exit status (0 done, 1 failed; `timescale plan`: 2
/// when there are changes to make).
pub fn run(cmd: Lifecycle) -> i32 {
    let progress = |line: &str| eprintln!("{line}");
    match cmd {
        Lifecycle::Timescale { command } => timescale(command),
        Lifecycle::Retention {
            command: RetentionCommand::Apply(a),
        } => with(&a.op.config, |c| async move {
            let r = ops::retention(
                &c,
                a.table.as_deref(),
                a.op.older_than,
                a.op.dry_run,
                &progress,
            )
            .await?;
            Ok((render(a.op.json, &r, r.human()), 0))
        }),
        Lifecycle::Cleanup(a) => with(&a.config, |c| async move {
            let r = ops::retention(&c, None, a.older_than, a.dry_run, &progress).await?;
            Ok((render(a.json, &r, r.human()), 0))
        }),
        Lifecycle::Compress(a) => with(&a.op.config, |c| async move {
            let r = ops::compress(
                &c,
                a.table.as_deref(),
                a.op.older_than,
                a.op.dry_run,
                &progress,
            )
            .await?;
            Ok((render(a.op.json, &r, r.human()), 0))
        }),
        Lifecycle::Decompress(a) => with(&a.config, |c| async move {
            let chunks =
                ops::decompress(&c, &a.table, a.from.as_deref(), a.to.as_deref(), a.dry_run)
                    .await?;
            let verb = if a.dry_run {
                "would decompress"
            } else {
                "decompressed"
            };
            Ok((format!("{}: {verb} {} chunks\n", a.table, chunks.len()), 0))
        }),
        Lifecycle::Caggs { command } => caggs(command),
        Lifecycle::Chunks(a) => with(&a.args.config, |c| async move {
            let chunks = objects::chunks(&c, &a.table).await?;
            Ok((
                render(a.args.json, &chunks, objects::chunks_human(&chunks)),
                0,
            ))
        }),
        Lifecycle::Jobs(a) => jobs(a),
    }
}

fn timescale(cmd: TimescaleCommand) -> i32 {
    match cmd {
        TimescaleCommand::Plan(a) => with(&a.config, |c| async move {
            let plan = timescale::plan(&c).await?;
            let code = if !plan.errors.is_empty() {
                1
            } else if plan.is_empty() {
                0
            } else {
                2
            };
            Ok((render(a.json, &plan, plan.human()), code))
        }),
        TimescaleCommand::Apply(a) => with(&a.args.config, |c| async move {
            let applied = timescale::apply(&c, a.allow_recreate).await?;
            Ok((render(a.args.json, &applied, applied.human()), 0))
        }),
        TimescaleCommand::Status(a) => with(&a.config, |c| async move {
            let status = timescale::status(&c).await?;
            Ok((render(a.json, &status, status.human()), 0))
        }),
    }
}

fn caggs(cmd: CaggsCommand) -> i32 {
    match cmd {
        CaggsCommand::Create(a) => with(&a.config, |c| async move {
            if !objects::declared_cagg(&c, &a.name) {
                return Err(TimescaleError::Invalid(vec![format!(
                    "{} is not declared in [[timescale.hypertables.continuous_aggregates]]",
                    a.name
                )]));
            }
            let name = tidegate_config::qualified(&a.name).unwrap_or_default();
            let only = timescale::plan::qname(&name);
            let applied = timescale::apply_to(&c, false, Some(&only)).await?;
            Ok((applied.human(), 0))
        }),
        CaggsCommand::Refresh(a) => with(&a.cagg.config, |c| async move {
            objects::refresh(&c, &a.cagg.name, a.from.as_deref(), a.to.as_deref()).await?;
            Ok((format!("{}: refreshed\n", a.cagg.name), 0))
        }),
        CaggsCommand::List(a) => with(&a.config, |c| async move {
            let status = timescale::status(&c).await?;
            let list = &status.continuous_aggregates;
            let mut text = status.human();
            if let Some(i) = text.find("continuous aggregates:") {
                text = text[i..].to_owned();
                if let Some(j) = text.find("jobs:") {
                    text.truncate(j);
                }
            }
            Ok((render(a.json, list, text), 0))
        }),
        CaggsCommand::Drop(a) => with(&a.config, |c| async move {
            objects::drop(&c, &a.name).await?;
            let again = if objects::declared_cagg(&c, &a.name) {
                " (it is declared: the next `timescale apply` creates it again)"
            } else {
                ""
            };
            Ok((format!("{}: dropped{again}\n", a.name), 0))
        }),
    }
}

fn jobs(a: JobsArgs) -> i32 {
    if let Some(JobsCommand::Run { id, config }) = a.run {
        return with(&config, |c| async move {
            objects::run_job(&c, id).await?;
            Ok((format!("job {id}: ran\n"), 0))
        });
    }
    let Some(config) = a.config else {
        eprintln!("tidegate jobs: --config is required");
        return 1;
    };
    with(&config, |c| async move {
        if a.failed {
            let errors = objects::job_errors(&c).await?;
            let mut text = String::new();
            for e in &errors {
                text.push_str(&format!(
                    "job {} at {}: {} {}\n",
                    e.job,
                    e.started.as_deref().unwrap_or("-"),
                    e.sqlerrcode.as_deref().unwrap_or("-"),
                    e.message.as_deref().unwrap_or("-")
                ));
            }
            text.push_str(&format!("{} failed runs\n", errors.len()));
            return Ok((render(a.json, &errors, text), 0));
        }
        let status = timescale::status(&c).await?;
        let mut text = status.human();
        if let Some(i) = text.find("jobs:") {
            text = text[i..].to_owned();
        }
        Ok((render(a.json, &status.jobs, text), 0))
    })
}

/// Loads the config, runs `f` on a single-threaded runtime, prints its text; the exit status.
fn with<F, Fut>(config: &std::path::Path, f: F) -> i32
where
    F: FnOnce(Config) -> Fut,
    Fut: Future<Output = Result<(String, i32), TimescaleError>>,
{
    let Some((config, rt)) = crate::cli::setup(config) else {
        return 1;
    };
    match rt.block_on(f(config)) {
        Ok((text, code)) => {
            print!("{text}");
            code
        }
        Err(e) => {
            eprintln!("tidegate: {e}");
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
