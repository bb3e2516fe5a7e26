//! The admin console's tables as JSON for `admin.users`: `GET /admin/pools`, `/admin/clients`,
//! `/admin/servers`, `/admin/stats`, `/admin/databases`, `/admin/config`, `/admin/plugins`,
//! `/admin/cache`, `/admin/replicas`, `/admin/slow` (each an array of objects keyed by the
//! console's column names), and `GET /admin/slow-queries?top=N&since_seconds=S`: the
//! fingerprint table with every figure it keeps.

use super::error::ApiError;
use super::HttpState;
use crate::client::console::show;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The routes.
pub fn routes() -> Router<Arc<HttpState>> {
    Router::new()
        .route("/admin/slow-queries", get(slow_queries))
        .route("/admin/{subject}", get(table))
}

async fn table(
    State(st): State<Arc<HttpState>>,
    headers: HeaderMap,
    Path(subject): Path<String>,
) -> Result<Response, ApiError> {
    st.require_admin(&headers).await?;
    let Some((columns, rows)) = show::table(&st.sh, &subject) else {
        return Err(ApiError::not_found(&format!(
            "no such admin table; one of {}",
            show::SUBJECTS.join(", ")
        )));
    };
    let objects: Vec<serde_json::Map<String, serde_json::Value>> = rows
        .into_iter()
        .map(|row| {
            columns
                .iter()
                .zip(row)
                .map(|(c, v)| {
                    (
                        (*c).to_owned(),
                        v.map_or(serde_json::Value::Null, Into::into),
                    )
                })
                .collect()
        })
        .collect();
    Ok(axum::Json(objects).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SlowQuery {
    top: Option<usize>,
    since_seconds: Option<u64>,
}

async fn slow_queries(
    State(st): State<Arc<HttpState>>,
    headers: HeaderMap,
    Query(q): Query<SlowQuery>,
) -> Result<Response, ApiError> {
    st.require_admin(&headers).await?;
    let since = q
        .since_seconds
        .map(|s| SystemTime::now() - Duration::from_secs(s));
    let mut all = st.sh.queries.top.snapshot(since);
    all.truncate(q.top.unwrap_or(20));
    Ok(axum::Json(all).into_response())
}
