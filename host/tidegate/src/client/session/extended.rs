//! Parse, Bind and Describe: statement names are mapped to the broker's shared server-side
//! statements, which are (re-)prepared on the attached connection when it lacks them.

use super::{Pending, Result, Session, SessionError, Stmt};
use crate::upstream::statements::{body_hash, server_name};
use crate::wire::proto::{self, Reader};
use bytes::{BufMut, Bytes, BytesMut};
use tidegate_sql::session_state;
use tokio::io::{AsyncRead, AsyncWrite};

impl<R, W> Session<R, W>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    pub(super) async fn on_parse(&mut self, msg: &BytesMut) -> Result<bool> {
        let body = &msg[proto::HEADER_LEN..];
        let mut r = Reader::new(body);
        let parsed = (|| {
            let name = r.cstr()?;
            let query = r.cstr()?;
            let n = r.i16()?;
            if n < 0 {
                return None;
            }
            r.bytes(n as usize * 4)?;
            r.rest().is_empty().then_some((name, query))
        })();
        let Some((name, query)) = parsed else {
            self.protocol_violation("08P01", "invalid Parse message".into())
                .await?;
            return Ok(false);
        };
        if !name.is_empty()
            && self.stmts.len() >= super::MAX_NAMED_STATEMENTS
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
            self.deny(b'P', d)?;
            return Ok(true);
        }
        let effect = session_state::scan(query);
        let read_only = self.sql_read_only(query);
        let writes = self.parse_writes.take();
        let cache_writes = self.cache_write_gens(query);
        let stmt_body = &body[name.len() + 1..];
        if !name.is_empty() && self.backend.is_none() && !effect.pin {
            // A statement some server already accepted needs no connection to be "parsed":
            // it is prepared on whichever connection later binds it.
            let shared = Bytes::copy_from_slice(stmt_body);
            let id = self.sh.statements.id(&shared);
            if self.pool.is_valid(id) {
                let stmt = Stmt {
                    id,
                    body: shared,
                    read_only,
                    writes,
                    cache_writes,
                    audit: None,
                    changes_state: effect.pin,
                };
                self.stmts.insert(Bytes::copy_from_slice(name), stmt);
                self.push_synthetic(b'1');
                return Ok(true);
            }
        }
        let route = self.batch_read_only(read_only, Some(name));
        if !self.attach(false, route).await? {
            return Ok(true);
        }
        self.note_effect(effect);
        let Some(b) = self.backend.as_mut() else {
            return Err(SessionError::Terminated("no server connection"));
        };
        if name.is_empty() {
            let id = body_hash(stmt_body);
            // Clients re-parse the same unnamed statement for every execution (pgbench -M
            // extended, most drivers): keep the copy we have rather than allocate anew.
            if self.unnamed.as_ref().map(|u| u.id) != Some(id) {
                self.unnamed = Some(Stmt {
                    id,
                    body: Bytes::copy_from_slice(stmt_body),
                    read_only,
                    writes,
                    cache_writes,
                    audit: None,
                    changes_state: effect.pin,
                });
            }
            b.unnamed = Some(id);
            self.unsynced = true;
            self.pending.push_back(Pending::Parse {
                visible: true,
                id: None,
            });
            self.bout.extend_from_slice(msg);
            return Ok(true);
        }
        let stmt_body = Bytes::copy_from_slice(stmt_body);
        let id = self.sh.statements.id(&stmt_body);
        let name = Bytes::copy_from_slice(name);
        if b.prepared.contains(&id) {
            self.push_synthetic(b'1');
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
        self.stmts.insert(
            name,
            Stmt {
                id,
                body: stmt_body,
                read_only,
                writes,
                cache_writes,
                audit: None,
                changes_state: effect.pin,
            },
        );
        Ok(true)
    }

    pub(super) async fn on_bind_or_describe(&mut self, tag: u8, msg: &BytesMut) -> Result<bool> {
        let body = &msg[proto::HEADER_LEN..];
        let mut r = Reader::new(body);
        // Bind: portal, statement, rest. Describe: kind byte, name.
        let (stmt_name, prefix_len) = if tag == b'B' {
            let Some(portal) = r.cstr() else {
                self.protocol_violation("08P01", "invalid Bind message".into())
                    .await?;
                return Ok(false);
            };
            let Some(stmt) = r.cstr() else {
                self.protocol_violation("08P01", "invalid Bind message".into())
                    .await?;
                return Ok(false);
            };
            (Some(stmt), portal.len() + 1)
        } else {
            let (Some(kind), Some(name)) = (r.u8(), r.cstr()) else {
                self.protocol_violation("08P01", "invalid Describe message".into())
                    .await?;
                return Ok(false);
            };
            match kind {
                b'S' => (Some(name), 1),
                b'P' => (None, 0),
                _ => {
                    self.protocol_violation("08P01", "invalid Describe kind".into())
                        .await?;
                    return Ok(false);
                }
            }
        };
        let first = match stmt_name {
            Some([]) => self.unnamed.as_ref().is_some_and(|s| s.read_only),
            Some(name) => self.stmts.get(name).is_some_and(|s| s.read_only),
            None => false,
        };
        if tag == b'B' {
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
        let next = if tag == b'B' {
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
            Some(name) => {
                match self.stmts.get(name).cloned() {
                    Some(stmt) => {
                        self.ensure_prepared(&stmt);
                        server_name(stmt.id, &mut self.name_buf);
                    }
                    // A statement this client never prepared: the server must report 26000,
                    // not find another client's statement (or unnamed statement) on the
                    // connection, so the name becomes one no statement can have.
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
                    tag,
                    &body[..prefix_len],
                    &self.name_buf,
                    rest,
                );
            }
        }
        self.pending.push_back(next);
        Ok(true)
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

/// Appends a Bind or Describe with `name` (NUL-terminated) in place of the client's name.
fn put_renamed(out: &mut BytesMut, tag: u8, prefix: &[u8], name: &[u8], rest: &[u8]) {
    out.put_u8(tag);
    out.put_i32((4 + prefix.len() + name.len() + rest.len()) as i32);
    out.put_slice(prefix);
    out.put_slice(name);
    out.put_slice(rest);
}

/// Appends a Parse message: `name` is NUL-terminated, `body` is query, NUL, parameter types.
pub(super) fn put_parse(out: &mut BytesMut, name: &[u8], body: &[u8]) {
    out.put_u8(b'P');
    out.put_i32((4 + name.len() + body.len()) as i32);
    out.put_slice(name);
    out.put_slice(body);
}
