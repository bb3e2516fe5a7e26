//! The admin console, as PgBouncer's: a client of `[admin] users` connecting to the virtual
//! database `admin.database` (`tidegate`) gets no server connection but a small command
//! language over the simple query protocol — `SHOW POOLS | CLIENTS | SERVERS | STATS |
//! DATABASES | CONFIG | PLUGINS | CACHE | REPLICAS | SLOW`, `RELOAD`, `PAUSE [db]`, `RESUME
//! [db]`, `KILL db`, `RECONNECT [db]`, `SHUTDOWN`. Column names follow PgBouncer's where the
//! concept is the same, so its dashboards and scripts read ours.
//!
//! PAUSE holds every new checkout of the matching pools and answers once their lent
//! connections are back (transactions in flight finish); RESUME releases the held checkouts.
//! Nothing is lost either way: a held client just waits.

mod settings;
pub mod show;

use crate::client::shared::Shared;
use crate::upstream::backend::Pool;
use crate::wire::kind::{ClientMsg, TxStatus};
use crate::wire::proto::{self, FrameError, Severity};
use bytes::BytesMut;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest console message accepted.
const MAX_MESSAGE: usize = 64 * 1024;

/// What a command answers: rows, or a bare command tag, or an error.
pub(crate) enum Answer {
    /// A result set: columns, rows, and the tag's verb.
    Rows(&'static [&'static str], Vec<Vec<Option<String>>>),
    /// A command tag (`PAUSE`, `RELOAD`…).
    Done(&'static str),
    /// An error with its SQLSTATE.
    Error(&'static str, String),
}

/// Serves an admin console client until it leaves (or the broker shuts down).
pub async fn serve<S>(
    sh: Arc<Shared>,
    mut stream: S,
    mut rbuf: BytesMut,
    user: Arc<str>,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut out = BytesMut::with_capacity(1024);
    greet(&mut out);
    stream.write_all(&out).await?;
    out.clear();
    tracing::info!(user = %user, "admin console session");
    let mut skip_until_sync = false;
    loop {
        let (tag, msg) = match proto::split_frame(&mut rbuf, MAX_MESSAGE) {
            Ok(Some(f)) => f,
            Ok(None) => {
                let n = tokio::select! {
                    n = stream.read_buf(&mut rbuf) => n?,
                    _ = sh.shutdown.token().cancelled() => {
                        proto::error(&mut out, Severity::Fatal, "57P01", "terminating connection due to administrator command");
                        stream.write_all(&out).await?;
                        return Ok(());
                    }
                };
                if n == 0 {
                    return Ok(());
                }
                continue;
            }
            Err(e) => {
                let code = match e {
                    FrameError::TooLarge { .. } => "54000",
                    _ => "08P01",
                };
                proto::error(&mut out, Severity::Fatal, code, &e.to_string());
                stream.write_all(&out).await?;
                return Ok(());
            }
        };
        match ClientMsg::of(tag) {
            ClientMsg::Terminate => return Ok(()),
            ClientMsg::Query => {
                let sql = msg[proto::HEADER_LEN..]
                    .strip_suffix(b"\0")
                    .unwrap_or(&msg[proto::HEADER_LEN..]);
                let sql = String::from_utf8_lossy(sql);
                run_query(&sh, &user, &sql, &mut out).await;
                proto::ready(&mut out, TxStatus::Idle);
            }
            ClientMsg::Sync => {
                skip_until_sync = false;
                proto::ready(&mut out, TxStatus::Idle);
            }
            ClientMsg::Flush => {}
            _ if skip_until_sync => {}
            _ => {
                // Parse, Bind… : answered once, then everything up to Sync is ignored, as a
                // server does after an error.
                skip_until_sync = true;
                proto::error(
                    &mut out,
                    Severity::Error,
                    "0A000",
                    "the admin console accepts only the simple query protocol",
                );
            }
        }
        stream.write_all(&out).await?;
        out.clear();
    }
}

/// AuthenticationOk, the parameters psql and drivers read, a key, ReadyForQuery.
fn greet(out: &mut BytesMut) {
    proto::simple(
        out,
        crate::wire::kind::ServerMsg::Authentication,
        &0i32.to_be_bytes(),
    );
    for (k, v) in [
        ("server_version", "15.0 (TideGate admin console)"),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
        ("TimeZone", "UTC"),
        ("application_name", ""),
    ] {
        proto::parameter_status(out, k, v);
    }
    proto::backend_key(out, 0, 0);
    proto::ready(out, TxStatus::Idle);
}

/// Runs each `;`-separated command of a Query, appending its answer.
async fn run_query(sh: &Arc<Shared>, user: &str, sql: &str, out: &mut BytesMut) {
    let commands: Vec<&str> = sql
        .split(';')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    if commands.is_empty() {
        proto::simple(out, crate::wire::kind::ServerMsg::EmptyQuery, &[]);
        return;
    }
    for command in commands {
        tracing::info!(user, command, "admin console command");
        match execute(sh, command).await {
            Answer::Rows(columns, rows) => proto::text_result(out, columns, &rows, "SHOW"),
            Answer::Done(tag) => {
                let mut t = tag.as_bytes().to_vec();
                t.push(0);
                proto::simple(out, crate::wire::kind::ServerMsg::CommandComplete, &t);
            }
            Answer::Error(code, message) => {
                proto::error(out, Severity::Error, code, &message);
                return; // The rest of the query is not run, as in PostgreSQL.
            }
        }
    }
}

/// One command.
pub(crate) async fn execute(sh: &Arc<Shared>, command: &str) -> Answer {
    let words: Vec<&str> = command.split_whitespace().collect();
    let upper: Vec<String> = words.iter().map(|w| w.to_ascii_uppercase()).collect();
    let arg = words.get(1).map(|w| unquote(w));
    match upper
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["SHOW", what] => show::show(sh, what),
        ["RELOAD"] => reload(sh).await,
        ["PAUSE"] | ["PAUSE", _] => pause(sh, arg.as_deref()).await,
        ["RESUME"] | ["RESUME", _] => {
            let pools = matching(sh, arg.as_deref());
            if pools.is_empty() {
                return no_database(arg.as_deref());
            }
            for p in &pools {
                p.activity.resume();
            }
            Answer::Done("RESUME")
        }
        ["RECONNECT"] | ["RECONNECT", _] => {
            let pools = matching(sh, arg.as_deref());
            if pools.is_empty() {
                return no_database(arg.as_deref());
            }
            for p in &pools {
                p.reconnect();
            }
            Answer::Done("RECONNECT")
        }
        ["KILL", _] => kill(sh, arg.as_deref().unwrap_or_default()),
        ["KILL"] => Answer::Error("42601", "KILL needs a database: KILL db".into()),
        ["SHUTDOWN"] => {
            tracing::warn!("SHUTDOWN from the admin console");
            sh.console.shutdown.cancel();
            Answer::Done("SHUTDOWN")
        }
        _ => Answer::Error(
            "42601",
            format!(
                "unknown admin console command \"{command}\"; try SHOW POOLS|CLIENTS|SERVERS|\
                 STATS|DATABASES|CONFIG|PLUGINS|CACHE|REPLICAS|SLOW, RELOAD, PAUSE [db], \
                 RESUME [db], KILL db, RECONNECT [db], SHUTDOWN"
            ),
        ),
    }
}

fn unquote(w: &str) -> String {
    w.trim_matches('"').to_owned()
}

fn no_database(db: Option<&str>) -> Answer {
    Answer::Error(
        "3D000",
        format!("no pool for database \"{}\"", db.unwrap_or("*")),
    )
}

/// The pools of `db` (every pool without one).
fn matching(sh: &Shared, db: Option<&str>) -> Vec<Arc<Pool>> {
    sh.pools
        .all()
        .into_iter()
        .filter(|p| db.is_none_or(|d| p.key.database == d))
        .collect()
}

async fn reload(sh: &Shared) -> Answer {
    let Some(tx) = sh.console.reload.get() else {
        return Answer::Error(
            "55000",
            "RELOAD is unavailable: this broker was started without a configuration file".into(),
        );
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    if tx.send(reply).await.is_err() {
        return Answer::Error("55000", "the reload task is not running".into());
    }
    match answer.await {
        Ok(Ok(_)) => Answer::Done("RELOAD"),
        Ok(Err(e)) => Answer::Error("F0000", format!("reload failed, nothing changed: {e}")),
        Err(_) => Answer::Error("55000", "the reload task is not running".into()),
    }
}

/// PAUSE: new checkouts wait; answered once every lent connection of the pools is back.
async fn pause(sh: &Shared, db: Option<&str>) -> Answer {
    let pools = matching(sh, db);
    if pools.is_empty() {
        return no_database(db);
    }
    for p in &pools {
        p.activity.pause();
    }
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    loop {
        tick.tick().await;
        if pools.iter().all(|p| p.outstanding() == 0) {
            return Answer::Done("PAUSE");
        }
        if pools.iter().all(|p| !p.activity.is_paused()) {
            // RESUMEd from another console before the pause completed.
            return Answer::Error("55000", "resumed before the pause completed".into());
        }
    }
}

/// KILL db: its clients get 57P01 and are disconnected; its server connections close.
fn kill(sh: &Shared, db: &str) -> Answer {
    let pools = matching(sh, Some(db));
    if pools.is_empty() {
        return no_database(Some(db));
    }
    for (_, slot) in sh.cancels.sessions() {
        if slot.info.database == db {
            slot.kill();
        }
    }
    for p in &pools {
        p.reconnect();
    }
    Answer::Done("KILL")
}
