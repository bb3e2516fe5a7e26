//! One handler per client message type: each adds what it sends to the batch for the server
//! (and says [`Handled::Relayed`]) or answers, refuses or ends the session itself.

use super::{route, Pending, Result, Session};
use super::{ClientRead, DirectWrite};
use crate::client::stats::Route;
use crate::wire::kind::{ClientMsg, NameKind, ServerMsg};
use crate::wire::proto::{self, Reader};
use bytes::BytesMut;

/// What a client message's handler did.
pub(super) enum Handled {
    /// It is in the batch for the server: keep it for a retry, flush when the batch is large.
    Relayed,
    /// Done with it: go on (`true`) or end the session (`false`).
    Return(bool),
}

impl<R, W> Session<R, W>
where
    R: ClientRead,
    W: DirectWrite,
{
    /// A simple Query.
    pub(super) async fn on_query(&mut self, msg: &BytesMut) -> Result<Handled> {
        let Some(sql) = msg[proto::HEADER_LEN..].strip_suffix(b"\0") else {
            self.protocol_violation("08P01", "invalid Query message".into())
                .await?;
            return Ok(Handled::Return(false));
        };
        if self.pending.is_empty() {
            if let Some(route) = route::route_setting(sql) {
                // `SET tidegate.route` is the broker's own setting: answered here,
                // never sent to PostgreSQL, and it pins nothing.
                self.primary_only = route;
                proto::simple(&mut self.out, ServerMsg::CommandComplete, b"SET\0");
                proto::ready(&mut self.out, self.tx_status);
                self.measure_complete(b"SET\0", Route::Broker);
                self.request_done(Route::Broker, None);
                return Ok(Handled::Return(true));
            }
        }
        // The text as it runs (after any plugin rewrite), fingerprinted once for the
        // statistics, the cache and routing.
        let tidegate_sql::Shape { fp, effect, .. } = self.shape.read(sql);
        self.measure_sql(fp.0, sql);
        if self.own_session && self.signal_query(sql).await? {
            return Ok(Handled::Return(true));
        }
        if self.topo.config.cache.enabled && Box::pin(self.cache_query(sql, fp, effect)).await? {
            return Ok(Handled::Return(true));
        }
        let read_only = self.route_read_only(sql, fp) && !self.cache.filling();
        if !self.attach(true, read_only).await? {
            return Ok(Handled::Return(true));
        }
        self.note_effect(effect);
        if let Some(b) = self.backend.as_mut() {
            b.unnamed = None;
        }
        self.pending.push_back(Pending::Query { visible: true });
        self.bout.extend_from_slice(msg);
        Ok(Handled::Relayed)
    }

    /// Parse, Bind or Describe (the hooks, the cache and the statement mapping on the way).
    pub(super) async fn on_extended(
        &mut self,
        kind: ClientMsg,
        msg: &mut BytesMut,
    ) -> Result<Handled> {
        if kind == ClientMsg::Bind {
            if let Some(d) = self.open_portal(&msg[proto::HEADER_LEN..]) {
                self.deny(kind, d)?;
                return Ok(Handled::Return(true));
            }
        }
        if kind == ClientMsg::Bind && self.audit.is_none() && self.audited() {
            if let Some(d) = self.audit_refusal() {
                self.deny(kind, d)?;
                return Ok(Handled::Return(true));
            }
            self.audit_bind(msg);
        }
        if kind == ClientMsg::Bind && self.data_cols.is_some() {
            match Box::pin(self.bind_data_hooks(std::mem::take(msg))).await {
                Ok(m) => *msg = m,
                Err(d) => {
                    self.deny(kind, d)?;
                    return Ok(Handled::Return(true));
                }
            }
        }
        if kind == ClientMsg::Bind && self.topo.config.cache.enabled {
            self.cache_note_state_bind(msg);
        }
        if kind == ClientMsg::Bind && self.signal_stmts && Box::pin(self.signal_bind(msg)).await? {
            return Ok(Handled::Return(true));
        }
        if kind == ClientMsg::Bind
            && self.topo.config.cache.enabled
            && Box::pin(self.cache_bind(msg)).await?
        {
            return Ok(Handled::Return(true));
        }
        let go_on = if kind == ClientMsg::Parse {
            self.on_parse(msg).await?
        } else {
            self.on_bind_or_describe(kind, msg).await?
        };
        if go_on {
            self.keep_for_retry(msg);
        }
        Ok(Handled::Return(go_on))
    }

    /// Execute.
    pub(super) async fn on_execute(&mut self, msg: &BytesMut) -> Result<Handled> {
        self.audit_execute();
        if !self.attach(false, false).await? {
            return Ok(Handled::Return(true));
        }
        self.unsynced = true;
        self.pending.push_back(Pending::Execute);
        self.bout.extend_from_slice(msg);
        Ok(Handled::Relayed)
    }

    /// FunctionCall.
    pub(super) async fn on_function_call(&mut self, msg: &mut BytesMut) -> Result<Handled> {
        // FunctionCall (libpq large objects): one reply, then ReadyForQuery. It calls
        // a function by OID, out of sight of classification: under a policy chain it
        // is refused (and audited), as an unknown statement would be.
        match self.function_call_policy()? {
            None => {}
            Some(Some(instead)) => *msg = instead,
            Some(None) => return Ok(Handled::Return(true)),
        }
        if !self.attach(true, false).await? {
            return Ok(Handled::Return(true));
        }
        if let Some(b) = self.backend.as_mut() {
            b.unnamed = None;
        }
        self.pending.push_back(Pending::Query { visible: true });
        self.bout.extend_from_slice(msg);
        Ok(Handled::Relayed)
    }

    /// Close of a statement or portal.
    pub(super) async fn on_close(&mut self, msg: &BytesMut) -> Result<Handled> {
        let mut r = Reader::new(&msg[proto::HEADER_LEN..]);
        let (Some(target), Some(name)) = (r.u8().map(NameKind::of), r.cstr()) else {
            self.protocol_violation("08P01", "invalid Close message".into())
                .await?;
            return Ok(Handled::Return(false));
        };
        if target == NameKind::Portal {
            self.portals.remove(name);
        }
        if target == NameKind::Statement && !name.is_empty() {
            // Server-side statements are shared; only the client's name goes away.
            self.stmts.remove(name);
            self.push_synthetic(ServerMsg::CloseComplete);
        } else if let Some(b) = self.backend.as_mut() {
            if target == NameKind::Statement {
                b.unnamed = None;
                self.unnamed = None;
            }
            self.unsynced = true;
            self.pending.push_back(Pending::Close);
            self.bout.extend_from_slice(msg);
        } else {
            // No transaction is open, so no portal exists; the unnamed statement is
            // forgotten. Closing what does not exist is not an error in PostgreSQL.
            if target == NameKind::Statement {
                self.unnamed = None;
            }
            self.push_synthetic(ServerMsg::CloseComplete);
        }
        Ok(Handled::Relayed)
    }

    /// Sync.
    pub(super) fn on_sync(&mut self, msg: &BytesMut) -> Handled {
        if self.skip_until_sync && self.backend.is_some() {
            // A denied Parse mid-batch: the server still owes the earlier replies
            // and closes the batch itself.
            self.skip_until_sync = false;
            if !self.copy_in {
                self.pending.push_back(Pending::Sync);
                self.unsynced = false;
            }
            self.bout.extend_from_slice(msg);
        } else if self.skip_until_sync {
            self.skip_until_sync = false;
            self.drain_synthetic();
            proto::ready(&mut self.out, self.tx_status);
            self.request_done(Route::Broker, None);
        } else if self.backend.is_some() {
            // The server ignores Sync during copy-in, so no ReadyForQuery is owed.
            if !self.copy_in {
                self.pending.push_back(Pending::Sync);
                self.unsynced = false;
            }
            self.bout.extend_from_slice(msg);
        } else {
            self.drain_synthetic();
            proto::ready(&mut self.out, self.tx_status);
            self.request_done(Route::Broker, None);
        }
        Handled::Relayed
    }
}
