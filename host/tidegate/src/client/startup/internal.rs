//! In-process sessions: the HTTP endpoint's requests run through the same pipeline as a
//! network client's, over an in-memory stream, for a user the endpoint already authenticated.

use super::{application_name, session_pools};
use crate::client::cancel::ClientInfo;
use crate::client::shared::Shared;
use crate::client::Session;
use crate::upstream::backend::{BackendError, ClientCount, PoolError};
use crate::wire::proto;
use bytes::BytesMut;
use std::sync::Arc;

/// A session started in this process for an already authenticated user (the HTTP endpoint's
/// requests): the same pipeline as a network client's, over an in-memory stream.
pub struct InternalSession {
    /// The client end: speak the PostgreSQL protocol here, from the first message after the
    /// greeting (none is sent).
    pub stream: tokio::io::DuplexStream,
    /// The session's broker-issued cancel key.
    pub cancel_key: (i32, i32),
}

/// Why an in-process session could not start.
#[derive(Debug, thiserror::Error)]
pub enum InternalError {
    /// The user is not configured.
    #[error("unknown user")]
    UnknownUser,
    /// The upstream refused or could not be reached (its SQLSTATE and message).
    #[error("{1}")]
    Upstream(String, String),
}

/// Starts a session for `user` on `database` with `gucs` applied, as [`handle_connection`] does
/// after authentication, and returns its client end.
pub async fn open_internal(
    sh: &Arc<Shared>,
    user: &str,
    database: &str,
    gucs: Vec<(String, String)>,
) -> Result<InternalSession, InternalError> {
    let topo = sh.topology();
    let login = crate::client::login_target(&topo.config, user, database)
        .ok_or(InternalError::UnknownUser)?;
    let (pools, targets) = session_pools(sh, &topo, &login).await;
    if let Err(e) = pools[0].server_params().await {
        let (code, message) = match &e {
            PoolError::Connect(BackendError::Refused(raw)) => {
                let (code, message) = proto::error_fields(raw);
                (code, message)
            }
            other => (
                "08006".to_owned(),
                format!("could not connect to the upstream server: {other}"),
            ),
        };
        return Err(InternalError::Upstream(code, message));
    }
    let (client, server) = tokio::io::duplex(64 * 1024);
    let (key_tx, key_rx) = tokio::sync::oneshot::channel();
    let sh = sh.clone();
    let user: Arc<str> = user.into();
    let info = ClientInfo {
        user: user.to_string(),
        database: login.database.clone(),
        role: login.user.clone(),
        addr: "internal".into(),
        application_name: application_name(&gucs),
        tls: false,
        connected: Some(std::time::SystemTime::now()),
    };
    let counted = ClientCount::new(pools[0].clone());
    tokio::spawn(async move {
        let _counted = counted;
        let registration = sh.cancels.register_client(targets, info);
        let _ = key_tx.send((registration.pid, registration.secret));
        let slot = registration.slot.clone();
        let (r, w) = tokio::io::split(server);
        let session = Session::new(
            sh.clone(),
            topo,
            login,
            pools,
            user,
            r,
            w,
            BytesMut::new(),
            gucs,
            slot,
        );
        if let Err(e) = session.run().await {
            tracing::debug!(error = %e, "in-process session ended");
        }
        drop(registration);
    });
    let cancel_key = key_rx
        .await
        .map_err(|_| InternalError::Upstream("XX000".into(), "session did not start".into()))?;
    Ok(InternalSession {
        stream: client,
        cancel_key,
    })
}
