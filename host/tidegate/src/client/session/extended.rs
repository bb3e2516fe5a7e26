//! Parse, Bind and Describe: statement names are mapped to the broker's shared server-side
//! statements, which are (re-)prepared on the attached connection when it lacks them.

use super::{ClientRead, DirectWrite};
use super::{Pending, Result, Session, SessionError, Stmt};
use crate::upstream::statements::{body_hash, server_name};
use crate::wire::kind::{ClientMsg, NameKind, ServerMsg};
use crate::wire::proto::{self, Reader};
use bytes::{BufMut, Bytes, BytesMut};
use tidegate_sql::session_state;

impl<R, W> Session<R, W>
where
    R: ClientRead,
    W: DirectWrite,
{
    pub(super) async fn on_parse(&mut self, msg: &BytesMut) -> Result<bool> {
        let body = &msg[proto::HEADER_LEN..];
        let Some((name, query)) = parse_fields(body) else {
            self.protocol_violation("08P01", "invalid Parse message".into())
                .await?;
            return Ok(false);
        };
        if !name.is_empty()
            && self.stmts.len() >= super::stmt::MAX_NAMED_STATEMENTS
            && !self.stmts.contains_key(name)
        {
            let d = tidegate_plugins::Denial {
                reason: format!(
                    "too many prepared statements: this session holds {} (deallocate some)",
                    self.stmts.len()
                ),
                sqlstate: "54000".into(),
                hint: None,
                plugin: "tidegate".into(),
            };
            self.deny(ClientMsg::Parse, d)?;
            return Ok(true);
        }
        let stmt_body = &body[name.len() + 1..];
        // Clients re-parse the same unnamed statement for every execution (pgbench -M
        // extended, most drivers): what depends on its text alone is known already.
        let again = self
            .unnamed
            .as_ref()
            .filter(|u| name.is_empty() && u.body[..] == *stmt_body);
        let repeat = again.is_some();
        let (fp, effect, signal) = match again {
            Some(u) => (tidegate_sql::Fingerprint(u.fp), u.effect, u.signal.clone()),
            None => (
                tidegate_sql::fingerprint(query),
                session_state::scan(query),
                if self.own_session {
                    signal_call(query)
                } else {
                    None
                },
            ),
        };
        let facts = StmtFacts {
            fp: fp.0,
            read_only: self.sql_read_only(query, fp),
            writes: self.parse_writes.take(),
            cache_writes: self.cache_write_gens(query),
            effect,
            signal,
            own_session: self.own_session,
            repeat,
        };
        self.signal_stmts |= facts.signal.is_some();
        if !name.is_empty() && self.backend.is_none() && !effect.pin {
            // A statement some server already accepted needs no connection to be "parsed":
            // it is prepared on whichever connection later binds it.
            let shared = Bytes::copy_from_slice(stmt_body);
            let id = self.sh.statements.id(&shared);
            if self.pool.is_valid(id) {
                self.stmts
                    .insert(Bytes::copy_from_slice(name), facts.into_stmt(id, shared));
                self.push_synthetic(ServerMsg::ParseComplete);
                return Ok(true);
            }
        }
        let route = self.batch_read_only(facts.read_only, Some(name));
        if !self.attach(false, route).await? {
            return Ok(true);
        }
        self.note_effect(effect);
        if name.is_empty() {
            self.parse_unnamed(msg, stmt_body, facts)
        } else {
            self.parse_named(name, stmt_body, facts)
        }
    }

    /// Parse of the unnamed statement on the attached connection: relayed as it came.
    fn parse_unnamed(
        &mut self,
        msg: &BytesMut,
        stmt_body: &[u8],
        facts: StmtFacts,
    ) -> Result<bool> {
        let Some(b) = self.backend.as_mut() else {
            return Err(SessionError::Terminated("no server connection"));
        };
        // The same text again: keep the copy we have rather than allocate anew, with the
        // facts that depend on more than its text (catalog, configuration, hooks) renewed.
        let id = match self.unnamed.as_mut() {
            Some(u) if facts.repeat => {
                u.read_only = facts.read_only;
                u.writes = facts.writes;
                u.cache_writes = facts.cache_writes;
                u.id
            }
            _ => {
                let id = body_hash(stmt_body);
                self.unnamed = Some(facts.into_stmt(id, Bytes::copy_from_slice(stmt_body)));
                id
            }
        };
        b.unnamed = Some(id);
        self.unsynced = true;
        self.pending.push_back(Pending::Parse {
            visible: true,
            id: None,
        });
        self.bout.extend_from_slice(msg);
        Ok(true)
    }

    /// Parse of a named statement: mapped to the shared server-side statement, prepared on
    /// the attached connection unless it already holds it.
    fn parse_named(&mut self, name: &[u8], stmt_body: &[u8], facts: StmtFacts) -> Result<bool> {
        let Some(b) = self.backend.as_mut() else {
            return Err(SessionError::Terminated("no server connection"));
        };
        let stmt_body = Bytes::copy_from_slice(stmt_body);
        let id = self.sh.statements.id(&stmt_body);
        if b.prepared.contains(&id) {
            self.push_synthetic(ServerMsg::ParseComplete);
        } else {
            b.prepared.insert(id);
            server_name(id, &mut self.name_buf);
            put_parse(&mut self.bout, &self.name_buf, &stmt_body);
            self.unsynced = true;
            self.pending.push_back(Pending::Parse {
                visible: true,
                id: Some(id),
            });
        }
        self.stmts
            .insert(Bytes::copy_from_slice(name), facts.into_stmt(id, stmt_body));
        Ok(true)
    }

    pub(super) async fn on_bind_or_describe(
        &mut self,
        kind: ClientMsg,
        msg: &BytesMut,
    ) -> Result<bool> {
        let body = &msg[proto::HEADER_LEN..];
        let Some((stmt_name, prefix_len)) = statement_named(kind, body) else {
            let what = if kind == ClientMsg::Bind {
                "invalid Bind message"
            } else {
                "invalid Describe message"
            };
            self.protocol_violation("08P01", what.into()).await?;
            return Ok(false);
        };
        let first = match stmt_name {
            Some([]) => self.unnamed.as_ref().is_some_and(|s| s.read_only),
            Some(name) => self.stmts.get(name).is_some_and(|s| s.read_only),
            None => false,
        };
        if kind == ClientMsg::Bind {
            let bound = match stmt_name {
                Some([]) => self.unnamed.as_ref(),
                Some(name) => self.stmts.get(name),
                None => None,
            }
            .filter(|s| !self.req.measures(s.fp))
            .map(|s| (s.fp, s.body.clone()));
            if let Some((fp, body)) = bound {
                self.measure_sql(fp, &body);
            }
            let gens = match stmt_name {
                Some([]) => self.unnamed.as_ref().and_then(|s| s.cache_writes.clone()),
                Some(name) => self.stmts.get(name).and_then(|s| s.cache_writes.clone()),
                None => None,
            };
            if let Some(g) = gens {
                self.cache_note_bind(&g);
            }
        }
        // A reply recorded for the cache must come from the primary.
        let route = self.batch_read_only(first && !self.cache.filling(), None);
        if !self.attach(false, route).await? {
            return Ok(true);
        }
        let described = match stmt_name {
            Some([]) => self.unnamed.as_ref().map(|s| s.id),
            Some(name) => self.stmts.get(name).map(|s| s.id),
            None => None,
        };
        let next = if kind == ClientMsg::Bind {
            Pending::Bind(described.and_then(|id| self.row_plans.get(&id).cloned()))
        } else {
            Pending::Describe(described)
        };
        self.unsynced = true;
        match stmt_name {
            None => self.bout.extend_from_slice(msg),
            Some([]) if self.unnamed.is_some() => {
                self.ensure_unnamed();
                self.bout.extend_from_slice(msg);
            }
            Some(name) => self.send_renamed(kind, body, prefix_len, name),
        }
        self.pending.push_back(next);
        Ok(true)
    }

    /// Sends a Bind or Describe naming the client's statement `name` under its shared
    /// server-side name, preparing it first where the connection lacks it.
    fn send_renamed(&mut self, kind: ClientMsg, body: &[u8], prefix_len: usize, name: &[u8]) {
        match self.stmts.get(name).cloned() {
            Some(stmt) => {
                self.ensure_prepared(&stmt);
                server_name(stmt.id, &mut self.name_buf);
            }
            // A statement this client never prepared: the server must report 26000, not
            // find another client's statement (or unnamed statement) on the connection, so
            // the name becomes one no statement can have.
            None => {
                self.name_buf.clear();
                self.name_buf.extend_from_slice(b"tg-unknown:");
                self.name_buf.extend_from_slice(name);
                self.name_buf.push(0);
            }
        }
        let rest = &body[prefix_len + name.len() + 1..];
        put_renamed(
            &mut self.bout,
            kind,
            &body[..prefix_len],
            &self.name_buf,
            rest,
        );
    }

    /// Prepares `stmt` on the attached connection if it lacks it; the reply is hidden.
    fn ensure_prepared(&mut self, stmt: &Stmt) {
        let Some(b) = self.backend.as_mut() else {
            return;
        };
        if b.prepared.insert(stmt.id) {
            server_name(stmt.id, &mut self.name_buf);
            put_parse(&mut self.bout, &self.name_buf, &stmt.body);
            self.pending.push_back(Pending::Parse {
                visible: false,
                id: Some(stmt.id),
            });
        }
    }

    /// Re-creates the client's unnamed statement if this connection holds another.
    fn ensure_unnamed(&mut self) {
        let (Some(b), Some(u)) = (self.backend.as_mut(), self.unnamed.as_ref()) else {
            return;
        };
        if b.unnamed != Some(u.id) {
            b.unnamed = Some(u.id);
            put_parse(&mut self.bout, b"\0", &u.body);
            self.pending.push_back(Pending::Parse {
                visible: false,
                id: None,
            });
        }
    }
}

/// What a statement's Parse tells about it, kept with its name.
struct StmtFacts {
    fp: u128,
    read_only: bool,
    writes: Option<super::fields::ParamWrites>,
    cache_writes: Option<std::sync::Arc<[String]>>,
    effect: session_state::Effect,
    signal: Option<std::sync::Arc<tidegate_sql::SignalCall>>,
    /// The Parse that made it may name the session's own server process or prepared
    /// statements.
    own_session: bool,
    /// It is the client's unnamed statement parsed again with the same body.
    repeat: bool,
}

/// The signal call `query` is, if it is one alone (it mentions the session's own process).
fn signal_call(query: &[u8]) -> Option<std::sync::Arc<tidegate_sql::SignalCall>> {
    let text = std::str::from_utf8(query).ok()?;
    tidegate_sql::signal_call(text).map(std::sync::Arc::new)
}

impl StmtFacts {
    fn into_stmt(self, id: u64, body: Bytes) -> Stmt {
        Stmt {
            id,
            may_end: super::retry::may_end_transaction(&body),
            read_only: self.read_only,
            writes: self.writes,
            cache_writes: self.cache_writes,
            audit: None,
            effect: self.effect,
            fp: self.fp,
            signal: self.signal,
            own_session: self.own_session,
            prepared_at: std::time::SystemTime::now(),
            body,
        }
    }
}

/// A Parse body's statement name and query, if it is well formed.
pub(super) fn parse_fields(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut r = Reader::new(body);
    let name = r.cstr()?;
    let query = r.cstr()?;
    let n = r.i16()?;
    if n < 0 {
        return None;
    }
    r.bytes(n as usize * 4)?;
    r.rest().is_empty().then_some((name, query))
}

/// A statement body's query text (`query NUL`) and its declared parameter types.
pub(super) fn query_and_types(body: &[u8]) -> (&[u8], Vec<u32>) {
    let mut r = Reader::new(body);
    let query = r.cstr().unwrap_or_default();
    let n = r.i16().unwrap_or(0).max(0);
    let types = (0..n).map_while(|_| r.i32().map(|t| t as u32)).collect();
    (query, types)
}

/// The statement a Bind or Describe names (`None` inside for a Describe of a portal) and the
/// length of what precedes the name; `None` if the message is malformed.
fn statement_named(kind: ClientMsg, body: &[u8]) -> Option<(Option<&[u8]>, usize)> {
    let mut r = Reader::new(body);
    if kind == ClientMsg::Bind {
        let portal = r.cstr()?;
        let stmt = r.cstr()?;
        return Some((Some(stmt), portal.len() + 1));
    }
    let target = NameKind::of(r.u8()?);
    let name = r.cstr()?;
    match target {
        NameKind::Statement => Some((Some(name), 1)),
        NameKind::Portal => Some((None, 0)),
        NameKind::Other(_) => None,
    }
}

/// Appends a Bind or Describe with `name` (NUL-terminated) in place of the client's name.
fn put_renamed(out: &mut BytesMut, kind: ClientMsg, prefix: &[u8], name: &[u8], rest: &[u8]) {
    out.put_u8(kind.byte());
    out.put_i32((4 + prefix.len() + name.len() + rest.len()) as i32);
    out.put_slice(prefix);
    out.put_slice(name);
    out.put_slice(rest);
}

/// Appends a Parse message of statement `name` (not NUL-terminated) for `query`, with the
/// parameter types `rest` of the client's Parse.
pub(super) fn put_parse_query(out: &mut BytesMut, name: &[u8], query: &str, rest: &[u8]) {
    out.put_u8(ClientMsg::Parse.byte());
    out.put_i32((4 + name.len() + 1 + query.len() + 1 + rest.len()) as i32);
    out.put_slice(name);
    out.put_u8(0);
    out.put_slice(query.as_bytes());
    out.put_u8(0);
    out.put_slice(rest);
}

/// Appends a Parse message: `name` is NUL-terminated, `body` is query, NUL, parameter types.
pub(super) fn put_parse(out: &mut BytesMut, name: &[u8], body: &[u8]) {
    out.put_u8(ClientMsg::Parse.byte());
    out.put_i32((4 + name.len() + body.len()) as i32);
    out.put_slice(name);
    out.put_slice(body);
}
