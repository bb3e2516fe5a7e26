//! The declared time-series lifecycle over HTTP, for `http.admin_users` only, as
//! `tidegate timescale` gives it on the command line: `GET /admin/timescale/plan`,
//! `POST /admin/timescale/apply[?allow_recreate=true]`, `GET /admin/timescale/status`.

use super::error::ApiError;
use super::HttpState;
use crate::timescale::{self, TimescaleError};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use std::sync::Arc;

/// The routes.
pub fn routes() -> Router<Arc<HttpState>> {
    Router::new()
        .route("/admin/timescale/plan", get(plan))
        .route("/admin/timescale/apply", post(apply))
        .route("/admin/timescale/status", get(status))
}

/// 422 for a declaration that cannot be applied, 409 for one that needs `allow_recreate` or
/// TimescaleDB, 503 when the database cannot be reached, 500 otherwise.
fn error(e: TimescaleError) -> ApiError {
    let message = e.to_string();
    match e {
        TimescaleError::Invalid(_) => ApiError::unprocessable(&message),
        TimescaleError::RecreateRefused(_) | TimescaleError::NotInstalled(_) => {
            ApiError::conflict(&message)
        }
        TimescaleError::Connect { .. } => ApiError::unavailable(&message),
        TimescaleError::Catalog(_) | TimescaleError::Statement { .. } => {
            ApiError::internal(&message)
        }
    }
}

async fn plan(State(st): State<Arc<HttpState>>, headers: HeaderMap) -> Result<Response, ApiError> {
    st.require_admin(&headers).await?;
    let plan = timescale::plan(&st.sh.config()).await.map_err(error)?;
    Ok(axum::Json(plan).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ApplyQuery {
    #[serde(default)]
    allow_recreate: bool,
}

async fn apply(
    State(st): State<Arc<HttpState>>,
    headers: HeaderMap,
    Query(q): Query<ApplyQuery>,
) -> Result<Response, ApiError> {
    st.require_admin(&headers).await?;
    let applied = timescale::apply(&st.sh.config(), q.allow_recreate)
        .await
        .map_err(error)?;
    Ok(axum::Json(applied).into_response())
}

async fn status(
    State(st): State<Arc<HttpState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    st.require_admin(&headers).await?;
    let status = timescale::status(&st.sh.config()).await.map_err(error)?;
    Ok(axum::Json(status).into_response())
}
