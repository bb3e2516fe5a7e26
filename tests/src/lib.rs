//! The end-to-end test harness: real PostgreSQL servers started from `initdb`/`pg_ctl` on free
//! ports in private directories, and TideGate served in-process on `127.0.0.1:0`.
//!
//! Nothing here depends on the machine's long-running PostgreSQL or Redis: every test starts
//! what it needs and stops it when dropped.

#![allow(missing_docs)]

use anyhow::{bail, Context, Result};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tidegate::broker::{Listeners, Shared};
use tidegate_config::Config;
use tokio::sync::oneshot;

pub mod raw;
pub mod redis;

/// Where PostgreSQL 15's server binaries live (override with `PG_BIN`).
pub fn pg_bin() -> PathBuf {
    std::env::var_os("PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

fn is_root() -> bool {
    // SAFETY-free: geteuid has no preconditions; libc is only used for this.
    #[allow(unsafe_code)]
    unsafe {
        libc::geteuid() == 0
    }
}

/// Runs a PostgreSQL tool, as the `postgres` OS user when we are root (initdb refuses root).
fn pg_tool(tool: &str) -> Command {
    let path = pg_bin().join(tool);
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(path);
        c
    } else {
        Command::new(path)
    }
}

fn run(mut c: Command, what: &str) -> Result<Output> {
    let out = c.output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A new private directory for one test, owned by `postgres` when we are root.
pub fn fresh_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "tidegate-test-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    if is_root() {
        let mut c = Command::new("chown");
        c.args(["postgres:postgres"]).arg(&dir);
        run(c, "chown")?;
    }
    Ok(dir)
}

/// A private PostgreSQL 15 server.
pub struct Postgres {
    pub dir: PathBuf,
    pub port: u16,
}

impl Postgres {
    /// Initializes and starts a server with default test settings.
    pub fn start() -> Postgres {
        Self::start_with(&[])
    }

    /// Initializes and starts a server with extra `-c name=value` settings.
    pub fn start_with(settings: &[(&str, &str)]) -> Postgres {
        Self::try_start(settings).expect("start PostgreSQL")
    }

    fn try_start(settings: &[(&str, &str)]) -> Result<Postgres> {
        let dir = fresh_dir()?;
        let data = dir.join("data");
        let mut init = pg_tool("initdb");
        init.arg("-D").arg(&data).args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        ]);
        run(init, "initdb")?;
        let port = free_port();
        let pg = Postgres { dir, port };
        let mut conf = format!(
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             fsync = off\nfull_page_writes = off\nmax_connections = 300\n\
             log_line_prefix = '%m [%p] '\n",
            pg.dir.display()
        );
        for (k, v) in settings {
            conf.push_str(&format!("{k} = '{v}'\n"));
        }
        let conf_path = data.join("postgresql.auto.conf");
        let mut existing = std::fs::read_to_string(&conf_path).unwrap_or_default();
        existing.push_str(&conf);
        std::fs::write(&conf_path, existing)?;
        pg.pg_ctl_start()?;
        Ok(pg)
    }

    /// A streaming replica of this server (`pg_basebackup -R`), started and replaying.
    pub fn start_replica(&self) -> Postgres {
        self.try_start_replica().expect("start a replica")
    }

    fn try_start_replica(&self) -> Result<Postgres> {
        let dir = fresh_dir()?;
        let data = dir.join("data");
        let mut bb = pg_tool("pg_basebackup");
        bb.arg("-D")
            .arg(&data)
            .args([
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
            ])
            .arg("-p")
            .arg(self.port.to_string());
        run(bb, "pg_basebackup")?;
        let port = free_port();
        let replica = Postgres { dir, port };
        let conf_path = data.join("postgresql.auto.conf");
        let mut conf = std::fs::read_to_string(&conf_path).unwrap_or_default();
        conf.push_str(&format!(
            "port = {port}\nunix_socket_directories = '{}'\nhot_standby = on\n",
            replica.dir.display()
        ));
        std::fs::write(&conf_path, conf)?;
        replica.pg_ctl_start()?;
        Ok(replica)
    }

    /// Waits until this replica has replayed everything its primary has written so far.
    pub fn wait_caught_up(&self, primary: &Postgres) {
        let lsn = primary.sql("postgres", "SELECT pg_current_wal_lsn()");
        for _ in 0..500 {
            let done = self.sql(
                "postgres",
                &format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn"),
            );
            if done == "t" {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("replica did not catch up to {lsn}");
    }

    fn pg_ctl_start(&self) -> Result<()> {
        let mut c = pg_tool("pg_ctl");
        c.arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.log_path())
            .args(["-w", "-t", "30", "start"])
            .stdout(Stdio::null());
        run(c, "pg_ctl start")?;
        Ok(())
    }

    /// Promotes a replica to primary (`pg_ctl promote`).
    pub fn promote(&self) {
        let mut c = pg_tool("pg_ctl");
        c.arg("-D")
            .arg(self.dir.join("data"))
            .args(["-w", "promote"])
            .stdout(Stdio::null());
        run(c, "pg_ctl promote").expect("promote");
    }

    /// Makes PostgreSQL ask `role` for its password (SCRAM) on TCP connections; every other
    /// role keeps trust.
    pub fn require_scram_for(&self, role: &str) {
        let hba = self.dir.join("data").join("pg_hba.conf");
        let old = std::fs::read_to_string(&hba).expect("pg_hba.conf");
        let line = format!("host all {role} 127.0.0.1/32 scram-sha-256\n");
        std::fs::write(&hba, format!("{line}{old}")).expect("write pg_hba.conf");
        self.sql("postgres", "SELECT pg_reload_conf()");
    }

    /// Starts a stopped server again.
    pub fn restart(&self) {
        self.pg_ctl_start().expect("pg_ctl start");
    }

    /// Restarts the server with `pg_ctl restart -m <mode>` (`fast`, `immediate`) and waits
    /// until it accepts connections again.
    pub fn restart_with(&self, mode: &str) {
        let mut c = pg_tool("pg_ctl");
        c.arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.log_path())
            .args(["-w", "-t", "30", "-m", mode, "restart"])
            .stdout(Stdio::null());
        run(c, "pg_ctl restart").expect("pg_ctl restart");
    }

    /// Kills the postmaster with SIGKILL (its backends end when they notice), and waits until
    /// it is gone.
    pub fn kill_postmaster(&self) {
        let pidfile = self.dir.join("data").join("postmaster.pid");
        let pid = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.lines().next()?.trim().parse::<i32>().ok())
            .expect("postmaster.pid");
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        for _ in 0..100 {
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Starts a server that was killed, once its orphaned backends have let go of its shared
    /// memory (retrying for up to 20 s).
    pub fn restart_after_kill(&self) {
        for _ in 0..40 {
            if self.pg_ctl_start().is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        self.pg_ctl_start().expect("pg_ctl start after a kill");
    }

    /// Stops the server with `-m immediate` (a crash, as far as clients can tell) and waits
    /// until it is gone: a test that goes on while it still runs would see it answer.
    pub fn stop_immediate(&self) {
        let mut c = pg_tool("pg_ctl");
        c.arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "-w", "-t", "30", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let stopped = c.status().is_ok_and(|s| s.success());
        let pidfile = self.dir.join("data").join("postmaster.pid");
        assert!(
            stopped || !pidfile.exists(),
            "pg_ctl stop -m immediate failed and the server still runs"
        );
    }

    /// The server log.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// The server log's contents.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// A libpq URL for a direct connection.
    pub fn url(&self, db: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Runs SQL directly (psql, superuser) and returns stdout; panics on failure.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        let out = Command::new("psql")
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                &self.url(db),
                "-c",
                sql,
            ])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Connects directly with tokio-postgres.
    pub async fn connect(&self, db: &str) -> tokio_postgres::Client {
        connect(&self.url(db)).await.expect("direct connection")
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop_immediate();
        if std::env::var_os("TIDEGATE_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Connects with tokio-postgres and drives the connection in the background.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// TideGate served in-process.
pub struct Broker {
    pub addr: SocketAddr,
    /// The HTTP endpoint's address.
    pub http: SocketAddr,
    pub shared: Arc<Shared>,
    /// The broker's own side: reloads, plugin loading.
    pub control: Arc<tidegate::broker::Control>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// The config the tests start from: the upstream is `pg`, users `app`/`app` and friends.
pub fn base_config(pg: &Postgres, extra: &str) -> String {
    format!(
        r#"
[listen]
sql = "127.0.0.1:0"
[upstream.primary]
host = "127.0.0.1"
port = {port}
user = "postgres"
database = "postgres"
{extra}
[[users]]
name = "app"
password = "app"
"#,
        port = pg.port
    )
}

impl Broker {
    /// Starts TideGate in front of `pg` with `extra` TOML appended to the base config.
    pub async fn start(pg: &Postgres, extra: &str) -> Broker {
        let cfg = Config::from_toml(&base_config(pg, extra)).expect("valid test config");
        Self::start_config(cfg).await
    }

    /// Starts TideGate with a full config (its listen address is replaced by an ephemeral one),
    /// through the composition root, as `tidegate serve` does; the HTTP endpoint listens on an
    /// ephemeral port too.
    pub async fn start_config(cfg: Config) -> Broker {
        Self::start_with(cfg, None).await
    }

    async fn start_with(cfg: Config, file: Option<&std::path::Path>) -> Broker {
        let bind = || tokio::net::TcpListener::bind("127.0.0.1:0");
        let (sql, http) = (
            bind().await.expect("bind"),
            bind().await.expect("bind http"),
        );
        let addr = sql.local_addr().expect("addr");
        let http_addr = http.local_addr().expect("http addr");
        let mut broker = tidegate::broker::Broker::start(cfg)
            .await
            .expect("the broker starts");
        if let Some(path) = file {
            broker.watch_config_file(path.to_path_buf());
        }
        let shared = broker.shared().clone();
        let control = broker.control().clone();
        let (tx, rx) = oneshot::channel::<()>();
        let listeners = Listeners {
            sql,
            http: Some(http),
        };
        let task = tokio::spawn(broker.run(listeners, async move {
            let _ = rx.await;
        }));
        Broker {
            addr,
            http: http_addr,
            shared,
            control,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Like [`Broker::start`]; returns the HTTP endpoint's address too.
    pub async fn start_http(pg: &Postgres, extra: &str) -> (Broker, SocketAddr) {
        let broker = Self::start(pg, extra).await;
        let addr = broker.http;
        (broker, addr)
    }

    /// The HTTP endpoint's address.
    pub async fn serve_http(&self) -> SocketAddr {
        self.http
    }

    /// Starts TideGate from a configuration file, watching it for changes as `tidegate serve`
    /// does (its listen address is replaced by an ephemeral one).
    pub async fn start_file(path: &std::path::Path) -> Broker {
        let cfg = Config::load(path).expect("valid test config file");
        Self::start_with(cfg, Some(path)).await
    }

    /// A libpq URL through the broker.
    pub fn url(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "postgresql://{user}:{password}@127.0.0.1:{}/{db}",
            self.addr.port()
        )
    }

    /// The `app` user's URL for database `db`.
    pub fn app_url(&self, db: &str) -> String {
        self.url("app", "app", db)
    }

    /// Connects as `app` with tokio-postgres.
    pub async fn connect(&self, db: &str) -> tokio_postgres::Client {
        connect(&self.app_url(db))
            .await
            .expect("connection through TideGate")
    }

    /// Starts a graceful shutdown and waits for it to finish.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }

    /// The broker's task, to wait for a shutdown the broker starts itself (the admin
    /// console's SHUTDOWN).
    pub fn take_task(&mut self) -> tokio::task::JoinHandle<()> {
        self.task.take().expect("running")
    }

    /// Starts a graceful shutdown without waiting.
    pub fn begin_shutdown(&mut self) -> tokio::task::JoinHandle<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.take().expect("running")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The `tidegate` binary built for this test run (next to the test executable's `deps/`).
pub fn tidegate_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target profile directory");
    let bin = dir.join("tidegate");
    assert!(
        bin.exists(),
        "{} is missing: build the workspace first",
        bin.display()
    );
    bin
}

/// Runs `tidegate ARGS --config CONFIG` to completion.
pub fn tidegate_with(args: &[&str], config: &Path) -> Output {
    Command::new(tidegate_bin())
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run tidegate")
}

/// A finished command's standard output, then its standard error.
pub fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Writes `contents` to `path` as editors do: a temporary file renamed over the old one.
pub fn save_by_rename(path: &std::path::Path, contents: &str) {
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, contents).expect("write temp config");
    std::fs::rename(&tmp, path).expect("rename config");
}

/// Runs a client program (psql, pgbench) to completion without blocking the runtime.
pub async fn run_tool(program: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = tokio::process::Command::new(program);
    c.args(args).kill_on_drop(true);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output()
        .await
        .unwrap_or_else(|e| panic!("running {program}: {e}"))
}

/// The SQLSTATE of a tokio-postgres error, if the server sent one.
pub fn sqlstate(e: &tokio_postgres::Error) -> Option<String> {
    e.code().map(|c| c.code().to_owned())
}

/// Creates a database for one test (directly).
pub fn create_db(pg: &Postgres, name: &str) {
    pg.sql("postgres", &format!("CREATE DATABASE {name}"));
}

/// Waits until `f` is true or the timeout passes.
pub async fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

/// `tidegate audit verify --config file`: its exit code and output.
pub async fn audit_verify(file: &Path) -> (i32, String) {
    let out = run_tool(
        tidegate_bin().to_str().expect("path"),
        &["audit", "verify", "--config", file.to_str().expect("path")],
        &[],
    )
    .await;
    (out.status.code().unwrap_or(-1), output_text(&out))
}

/// Path of a file in the tests crate.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// The first column of the first row `sql` returns (simple protocol), as text.
pub async fn first_value(c: &tokio_postgres::Client, sql: &str) -> String {
    let rows = c
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{sql}: no row"))
}

/// `pgbench -i -s 1 -q` on `url`, asserting success.
pub async fn pgbench_init(url: &str) {
    let out = run_tool("pgbench", &["-i", "-s", "1", "-q", url], &[]).await;
    assert!(
        out.status.success(),
        "pgbench -i: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The "number of transactions actually processed" of a pgbench report.
pub fn pgbench_processed(report: &str) -> u64 {
    report
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|r| r.split('/').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no processed line in:\n{report}"))
}

/// The "number of failed transactions" of a pgbench report.
pub fn pgbench_failed(report: &str) -> u64 {
    report
        .lines()
        .find_map(|l| l.strip_prefix("number of failed transactions: "))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no failed-transactions line in:\n{report}"))
}

/// Whether the TimescaleDB extension is installed for the test PostgreSQL.
pub fn timescaledb_installed() -> bool {
    let Ok(out) = Command::new(pg_bin().join("pg_config"))
        .arg("--pkglibdir")
        .output()
    else {
        return false;
    };
    let lib = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Path::new(&lib).join("timescaledb.so").exists()
}

impl Postgres {
    /// A server with TimescaleDB preloaded and the extension created in `postgres`; `None`
    /// (after printing `skipped: TimescaleDB not installed`) when it is not installed.
    pub fn start_timescale() -> Option<Postgres> {
        Self::start_timescale_with(&[])
    }

    /// [`Postgres::start_timescale`] with more settings (e.g.
    /// `timescaledb.max_background_workers = 0`: no policy job runs by itself).
    pub fn start_timescale_with(settings: &[(&str, &str)]) -> Option<Postgres> {
        if !timescaledb_installed() {
            println!("skipped: TimescaleDB not installed");
            return None;
        }
        let mut all = vec![
            ("shared_preload_libraries", "timescaledb"),
            ("timescaledb.telemetry_level", "off"),
        ];
        all.extend_from_slice(settings);
        let pg = Self::start_with(&all);
        pg.sql("postgres", "CREATE EXTENSION IF NOT EXISTS timescaledb");
        Some(pg)
    }
}

/// Where the test command builds the first-party plugins (`plugins/target/wasm32-wasip2/release`).
pub fn built_plugins() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/target/wasm32-wasip2/release")
        .canonicalize()
        .expect("plugins are built: cd plugins && cargo build --release --target wasm32-wasip2");
    assert!(
        dir.join("access_control.wasm").exists(),
        "access_control.wasm is built"
    );
    dir
}

/// A fresh directory holding copies of the named built plugins (`encryption.wasm`, …).
pub fn plugin_dir_with(files: &[&str]) -> PathBuf {
    let dir = fresh_dir().expect("dir");
    for f in files {
        std::fs::copy(built_plugins().join(f), dir.join(f)).expect("copy plugin");
    }
    dir
}

// ──────────────────────────────────────────────────────────────────────────────────────────
// The HTTP/JSON endpoint (used by tests/tests/http.rs and tests/tests/series.rs).
// ──────────────────────────────────────────────────────────────────────────────────────────

/// How an [`Api`] client authenticates.
#[derive(Clone, Debug)]
pub enum ApiAuth {
    /// No Authorization header.
    None,
    /// `Basic user:password`.
    Basic(String, String),
    /// `Bearer token`.
    Bearer(String),
}

/// A client of the HTTP endpoint.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub auth: ApiAuth,
    pub client: reqwest::Client,
}

impl Api {
    /// A client of the endpoint at `addr`.
    pub fn new(addr: SocketAddr, auth: ApiAuth) -> Api {
        Api {
            base: format!("http://{addr}"),
            auth,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("reqwest client"),
        }
    }

    /// `app`/`app` with Basic authentication.
    pub fn app(addr: SocketAddr) -> Api {
        Self::new(addr, ApiAuth::Basic("app".into(), "app".into()))
    }

    /// A request to `path` (which starts with `/`), authenticated.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let rb = self.client.request(method, format!("{}{path}", self.base));
        match &self.auth {
            ApiAuth::None => rb,
            ApiAuth::Basic(u, p) => rb.basic_auth(u, Some(p)),
            ApiAuth::Bearer(t) => rb.bearer_auth(t),
        }
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.request(reqwest::Method::GET, path)
    }

    /// `POST path`.
    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.request(reqwest::Method::POST, path)
    }

    /// `POST /v1/sql` with `{sql, params}`: the status and the JSON reply.
    pub async fn sql(&self, sql: &str, params: serde_json::Value) -> (u16, serde_json::Value) {
        send_json(
            self.post("/v1/sql")
                .json(&serde_json::json!({ "sql": sql, "params": params })),
        )
        .await
    }
}

/// Sends `rb` and returns the status and the body as JSON (panics if it is not JSON).
pub async fn send_json(rb: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
    let (status, text) = send_text(rb).await;
    let v = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("reply ({status}) is not JSON: {e}: {text:?}"));
    (status, v)
}

/// Sends `rb` and returns the status and the body as text.
pub async fn send_text(rb: reqwest::RequestBuilder) -> (u16, String) {
    let r = rb.send().await.expect("HTTP request");
    let status = r.status().as_u16();
    let text = r.text().await.expect("HTTP body");
    (status, text)
}

/// Applies TideGate's migrations to `pg`'s `postgres` database (as `tidegate migrate` does).
pub async fn migrate(pg: &Postgres) {
    let cfg = Config::from_toml(&base_config(pg, "")).expect("valid test config");
    tidegate::cli::migrate::run(&cfg)
        .await
        .expect("migrations apply");
}

/// `tidegate roles sync` (applied) for `cfg`'s access-control plugin on `cfg`'s primary: the
/// PostgreSQL roles `tidegate_<role>` that `[[users]] role` names exist with their GRANTs
/// before a broker started from `cfg` logs in as them.
pub async fn sync_roles(cfg: &Config) {
    let report = tidegate::cli::admin::roles::sync(cfg, None, true)
        .await
        .unwrap_or_else(|e| panic!("tidegate roles sync: {e:#}"));
    assert!(!report.roles.is_empty(), "roles sync found no roles");
}
