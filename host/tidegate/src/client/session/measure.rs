//! Measuring each request for [`crate::client::stats`]: it starts with the client's first
//! Query, Parse, Bind, Execute or FunctionCall after a ReadyForQuery and ends with the next
//! ReadyForQuery the client is sent (by the server, the cache or the broker). The statement's
//! fingerprint comes from the Query text or the bound statement; its text is kept (normalized,
//! constants removed) only when the fingerprint table does not know it yet.

use super::Session;
use super::{ClientRead, DirectWrite};
use crate::client::stats::{Kind, Route, Sample};
use crate::clock::Mono;
use std::time::Duration;

/// The request being measured.
#[derive(Default)]
pub(super) struct Request {
    start: Option<Mono>,
    fp: Option<u128>,
    text: Option<String>,
    kind: Option<Kind>,
    rows: u64,
    error: bool,
    /// The fingerprint this session last recorded: the table has it, so its text need not be
    /// kept nor the table asked (clients repeat their statements).
    known: Option<u128>,
}

impl Request {
    /// It is measured as statement `fp` already.
    pub(super) fn measures(&self, fp: u128) -> bool {
        self.fp == Some(fp)
    }
}

impl<R, W> Session<R, W>
where
    R: ClientRead,
    W: DirectWrite,
{
    /// A request message arrived: the clock starts at the first one.
    pub(super) fn measure_start(&mut self) {
        if self.req.start.is_none() {
            let now = Mono::now();
            self.req.start = Some(now);
            self.clock = Some(now);
        }
    }

    /// The request runs `sql` (a Query's text, or a Parse body: text, NUL, parameter types).
    pub(super) fn measure_sql(&mut self, fp: u128, sql: &[u8]) {
        if self.req.fp == Some(fp) {
            return;
        }
        self.req.fp = Some(fp);
        self.req.text = None;
        if self.req.known != Some(fp) && !self.sh.queries.top.contains(fp) {
            let end = sql.iter().position(|&b| b == 0).unwrap_or(sql.len());
            let text = String::from_utf8_lossy(&sql[..end]);
            self.req.text = Some(tidegate_sql::normalize(&text));
        }
    }

    /// A statement completed with CommandComplete `tag` on the attached server.
    pub(super) fn measure_complete(&mut self, tag: &[u8], route: Route) {
        let kind = Kind::of_tag(tag);
        self.req.kind = Some(kind);
        self.req.rows = self
            .req
            .rows
            .saturating_add(crate::client::stats::tag_rows(tag));
        self.sh.queries.statement(kind, route);
    }

    /// The client is shown an error with `sqlstate`.
    pub(super) fn measure_error(&mut self, sqlstate: &[u8]) {
        self.req.error = true;
        self.sh.queries.error(sqlstate);
    }

    /// The route of what the attached server answers.
    pub(super) fn server_route(&self) -> Route {
        if self.on_replica {
            Route::Replica
        } else {
            Route::Primary
        }
    }

    /// ReadyForQuery went to the client: the audit event and the measurement are done.
    pub(super) fn request_done(&mut self, route: Route, first_error: Option<[u8; 5]>) {
        self.audit_finish(first_error);
        let known = self.req.known;
        let req = std::mem::replace(
            &mut self.req,
            Request {
                known,
                ..Request::default()
            },
        );
        let Some(start) = req.start else { return };
        let now = Mono::now();
        self.clock = Some(now);
        let duration = now.since(start);
        let error = req.error || first_error.is_some();
        let kind = match req.kind {
            Some(k) if !error => k,
            _ => Kind::Other,
        };
        let q = &self.sh.queries;
        q.request(kind, duration);
        if let Some(fp) = req.fp {
            q.top.record(
                fp,
                req.text,
                Sample {
                    duration,
                    rows: req.rows,
                    error,
                    route,
                },
                now,
            );
            self.req.known = Some(fp);
            self.log_slow(fp, duration, route);
        }
    }

    fn log_slow(&self, fp: u128, duration: Duration, route: Route) {
        let Some(limit) = self.topo.config.log.slow_statement.get() else {
            return;
        };
        if duration >= limit {
            tracing::warn!(
                user = %self.user,
                fingerprint = %tidegate_plugins::fingerprint_hex(fp),
                duration_ms = duration.as_secs_f64() * 1000.0,
                route = route.name(),
                "slow statement"
            );
        }
    }
}
