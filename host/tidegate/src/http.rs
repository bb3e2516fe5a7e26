//! The HTTP/JSON endpoint (`listen.http`): SQL over HTTP, the time-series API and the table
//! repository, health and readiness, and the OpenAPI description.
//!
//! Every statement a request makes runs in an in-process broker session ([`wire`]), so it
//! passes the same classification, plugins, cache and routing as a PostgreSQL client's. The
//! connection loop is hyper's HTTP/1 with a timer, so `http.header_read_timeout` is enforced
//! (hyper has no header timeout without one); bodies are read under `http.max_body_bytes`;
//! each request runs under `http.request_timeout` and `http.max_concurrent`.

mod auth;
mod console;
pub mod error;
pub mod health;
mod ingest;
mod lifecycle;
mod metrics;
mod openapi;
mod series;
mod sql;
mod tables;
pub mod values;
pub mod wire;

use crate::client::shared::Shared;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
pub use error::ApiError;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// The header naming the database a request is for (default: `upstream.primary.database`).
pub const DATABASE_HEADER: &str = "x-tidegate-database";

/// State the handlers share.
pub struct HttpState {
    /// The broker.
    pub sh: Arc<Shared>,
    /// Idle in-process sessions.
    pub conns: wire::Conns,
    auth: auth::AuthCache,
    inflight: AtomicUsize,
    /// Series tables and table shapes, by database.
    pub catalog: series::Registry,
    connections: AtomicUsize,
    /// The readiness probe's connection to the primary.
    probe: crate::upstream::own_db::DbPools,
    /// Requests answered, by route pattern (never the path a client sent) and status.
    pub requests: std::sync::Mutex<std::collections::HashMap<(String, u16), u64>>,
}

/// Who a request acts as, and where.
#[derive(Clone)]
pub struct Who {
    /// The broker user.
    pub user: Arc<str>,
    /// The database.
    pub database: String,
}

impl HttpState {
    /// A session for `who`.
    pub async fn conn(&self, who: &Who) -> Result<wire::Conn, ApiError> {
        self.conns.get(&self.sh, &who.user, &who.database).await
    }

    /// How long a request may run.
    pub fn request_timeout(&self) -> Duration {
        match self.sh.config().http.request_timeout.0 {
            0 => Duration::from_secs(86_400),
            ms => Duration::from_millis(ms),
        }
    }

    /// Whether `user` is one of `admin.users` (operators' endpoints and detail).
    pub fn is_admin(&self, user: &str) -> bool {
        self.sh
            .config()
            .admin
            .users
            .iter()
            .any(|u| u.as_str() == user)
    }

    /// Authenticates a request and refuses it (403) unless its user is an admin.
    pub async fn require_admin(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let who = self.who(headers).await?;
        if !self.is_admin(&who.user) {
            return Err(ApiError::forbidden("not an admin user (admin.users)"));
        }
        Ok(())
    }

    /// Authenticates a request and picks its database.
    pub async fn who(&self, headers: &HeaderMap) -> Result<Who, ApiError> {
        let user = self.auth.authenticate(&self.sh, headers).await?;
        let database = match headers.get(DATABASE_HEADER) {
            Some(v) => v
                .to_str()
                .ok()
                .filter(|d| !d.is_empty() && d.len() < 64 && !d.contains('\0'))
                .ok_or_else(|| ApiError::bad_request("malformed X-TideGate-Database"))?
                .to_owned(),
            None => self.sh.config().upstream.primary.database.clone(),
        };
        Ok(Who { user, database })
    }
}

/// The body's media type when it is one of `accepted` (lower case; parameters such as
/// `charset` are allowed), else 415. Every endpoint whose body runs statements checks this
/// before anything else: a browser's cross-site form can only send
/// `application/x-www-form-urlencoded`, `multipart/form-data` or `text/plain` without asking
/// first (CORS), so it cannot make a request with a type an endpoint takes.
pub fn body_type(headers: &HeaderMap, accepted: &[&'static str]) -> Result<&'static str, ApiError> {
    let refused = || ApiError::unsupported_media_type(accepted);
    let mut values = headers.get_all(axum::http::header::CONTENT_TYPE).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(refused());
    };
    let essence = value
        .to_str()
        .map_err(|_| refused())?
        .split(';')
        .next()
        .unwrap_or("")
        .trim();
    accepted
        .iter()
        .find(|a| a.eq_ignore_ascii_case(essence))
        .copied()
        .ok_or_else(refused)
}

/// Reads a request body under `http.max_body_bytes` (413 beyond it, before reading it all
/// when Content-Length already says so).
pub async fn read_body(
    st: &HttpState,
    headers: &HeaderMap,
    body: Body,
) -> Result<bytes::Bytes, ApiError> {
    let max = st.sh.config().http.max_body_bytes;
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // Refused before its end, the rest of the body is still on the connection: the client is
    // told the connection closes, so it does not send its next request after the leftovers.
    let refused = |mut e: ApiError| {
        e.close = true;
        Err(e)
    };
    let too_large = || ApiError::too_large(&format!("the body is over {max} bytes"));
    if declared.is_some_and(|n| n > max as u64) {
        return refused(too_large());
    }
    match http_body_util::Limited::new(body, max).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => refused(too_large()),
        Err(_) => refused(ApiError::bad_request("the body could not be read")),
    }
}

/// The routes.
pub fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/admin/status", get(admin_status))
        .route("/openapi.json", get(openapi::document))
        .merge(sql::routes())
        .merge(series::routes())
        .merge(ingest::routes())
        .merge(tables::routes())
        .merge(lifecycle::routes())
        .merge(console::routes())
        .merge(metrics::routes())
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(axum::middleware::from_fn_with_state(state.clone(), admit))
        .with_state(state)
}

/// At most `http.max_concurrent` requests run at once; more are answered 429 at once.
async fn admit(State(st): State<Arc<HttpState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = admit_counted(&st, req, next).await;
    *st.requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry((route, response.status().as_u16()))
        .or_default() += 1;
    response
}

async fn admit_counted(st: &HttpState, req: Request, next: Next) -> Response {
    // Probes are never refused; a /readyz with credentials costs their check and is counted.
    let path = req.uri().path();
    let probe = path == "/healthz"
        || (path == "/readyz"
            && !req
                .headers()
                .contains_key(axum::http::header::AUTHORIZATION));
    if probe {
        return next.run(req).await;
    }
    let max = st.sh.config().http.max_concurrent;
    if st.inflight.fetch_add(1, Ordering::AcqRel) >= max {
        st.inflight.fetch_sub(1, Ordering::AcqRel);
        return ApiError::busy().into_response();
    }
    struct Release<'a>(&'a AtomicUsize);
    impl Drop for Release<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::AcqRel);
        }
    }
    let _release = Release(&st.inflight);
    next.run(req).await
}

async fn healthz() -> Response {
    axum::Json(serde_json::json!({ "status": "ok" })).into_response()
}

/// Ready: not shutting down, the primary answers, every configured plugin is loaded and not
/// quarantined, and the audit table (when there is an audit hook) takes records — while it does
/// not, every statement is refused. Anyone learns which part is not ready (booleans only); the
/// detail (plugin files, counters, load errors, the audit writer's reason) is for
/// `http.admin_users`, as on `/admin/status`. Credentials that do not make an admin get the
/// short answer, never a 401: a probe's status is only ever 200 or 503.
async fn readyz(State(st): State<Arc<HttpState>>, headers: HeaderMap) -> Response {
    let sh = &st.sh;
    let topo = sh.topology();
    let shutting_down = sh.shutdown.is_raised();
    let checks = health::checks(&st).await;
    let primary = checks
        .first()
        .is_some_and(|c| c.status == health::Status::Ok);
    let plugins = crate::policy::status(sh.topology().plugins.as_deref());
    let plugins_ok = plugins.iter().all(|p| p["ready"] == true)
        && (topo.config.plugins.chain.is_empty() || topo.plugins.is_some());
    let audit = crate::client::shared::audit_sink(sh);
    let audit_ok = audit.as_ref().map(|a| a.available().is_ok());
    let ready = !shutting_down && primary && plugins_ok && audit_ok != Some(false);
    // Not ready is down; otherwise the worst part (a replica, Redis, jobs) decides.
    let health = if ready {
        checks
            .iter()
            .map(|c| c.status)
            .max()
            .unwrap_or(health::Status::Ok)
    } else {
        health::Status::Down
    };
    let admin = headers.contains_key(axum::http::header::AUTHORIZATION)
        && match st.auth.authenticate(sh, &headers).await {
            Ok(user) => st.is_admin(&user),
            Err(_) => false,
        };
    let (plugins, audit): (serde_json::Value, serde_json::Value) = if admin {
        (
            serde_json::Value::from(plugins),
            audit.map(|a| a.status()).into(),
        )
    } else {
        (
            serde_json::json!({ "ready": plugins_ok }),
            audit_ok.map(|ok| serde_json::json!({ "ready": ok })).into(),
        )
    };
    let mut body = serde_json::json!({
        "status": if ready { "ready" } else { "not_ready" },
        "shutting_down": shutting_down,
        "primary": primary,
        "plugins": plugins,
        "audit": audit,
    });
    // Others get the bare status above; admins each part's.
    if admin {
        body["health"] = serde_json::to_value(health).unwrap_or_default();
        body["checks"] = serde_json::to_value(&checks).unwrap_or_default();
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

/// For the users in `http.admin_users`: plugins (versions, counters, quarantine, the last load
/// error), clients, the configuration generation, reload and routing counters, and each
/// node's reads, writes, bans and retries.
async fn admin_status(
    State(st): State<Arc<HttpState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    st.require_admin(&headers).await?;
    let topo = st.sh.topology();
    let stats = &st.sh.stats;
    let body = serde_json::json!({
        "generation": topo.generation,
        "clients": st.sh.clients.load(Ordering::Relaxed),
        "http_connections": st.connections.load(Ordering::Relaxed),
        "http_in_flight": st.inflight.load(Ordering::Relaxed),
        "reloads": stats.reloads.load(Ordering::Relaxed),
        "reload_failures": stats.reload_failures.load(Ordering::Relaxed),
        "routing": {
            "read_your_writes_redirects": stats.ryw_redirects.load(Ordering::Relaxed),
            "no_healthy_replica": stats.no_replica.load(Ordering::Relaxed),
        },
        "nodes": topo.nodes.iter().map(|n| serde_json::json!({
            "address": n.addr(),
            "reads": n.stats.reads.load(Ordering::Relaxed),
            "writes": n.stats.writes.load(Ordering::Relaxed),
            "bans": n.stats.bans.load(Ordering::Relaxed),
            "retries": n.stats.retries.load(Ordering::Relaxed),
        })).collect::<Vec<_>>(),
        "plugins": crate::policy::status(st.sh.topology().plugins.as_deref()),
        "audit": crate::client::shared::audit_sink(&st.sh).map(|a| a.status()),
    });
    Ok(axum::Json(body).into_response())
}

/// Serves HTTP on `listener` until the broker shuts down.
pub async fn serve(listener: TcpListener, sh: Arc<Shared>) {
    let state = Arc::new(HttpState {
        sh: sh.clone(),
        conns: wire::Conns::default(),
        auth: auth::AuthCache::default(),
        inflight: AtomicUsize::new(0),
        catalog: series::Registry::default(),
        connections: AtomicUsize::new(0),
        requests: Default::default(),
        probe: crate::upstream::own_db::DbPools::new("tidegate-ready", 1),
    });
    let app = router(state.clone());
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "accepting HTTP requests");
    }
    let shutdown = sh.shutdown.token().clone();
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let config = sh.config();
        if state.connections.fetch_add(1, Ordering::AcqRel) >= config.http.max_connections {
            state.connections.fetch_sub(1, Ordering::AcqRel);
            drop(tcp);
            continue;
        }
        let _ = tcp.set_nodelay(true);
        let (app, state, shutdown) = (app.clone(), state.clone(), shutdown.clone());
        let header_timeout = config.http.header_read_timeout.duration();
        tokio::spawn(async move {
            let svc = hyper_util::service::TowerToHyperService::new(app);
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(tcp), svc);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "HTTP connection ended");
                    }
                }
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            state.connections.fetch_sub(1, Ordering::AcqRel);
        });
    }
    state.conns.clear();
}
