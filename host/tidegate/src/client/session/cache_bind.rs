//! The result cache for the extended protocol: a Bind of a cacheable prepared statement,
//! followed in the same buffered batch by an optional Describe of its portal, an Execute of
//! all rows and a Sync, is answered from the cache (BindComplete, the recorded reply,
//! ReadyForQuery) or recorded as it is relayed. Anything else in the batch passes through.

use super::cache::Fill;
use super::{ClientRead, DirectWrite};
use super::{Pending, Result, Session};
use crate::cache::Lookup;
use crate::wire::kind::{ClientMsg, NameKind};
use crate::wire::proto::{self, Reader};
use bytes::Buf;
use tidegate_sql::Kind;

/// A Bind as the cache needs it.
pub(super) struct Bound<'a> {
    pub(super) portal: &'a [u8],
    pub(super) statement: &'a [u8],
    pub(super) param_formats: Vec<i16>,
    pub(super) params: Vec<Option<&'a [u8]>>,
    pub(super) result_formats: Vec<i16>,
}

/// The Bind's parameters as text where they are sent as text: they let the time range be
/// read; binary ones stay unknown.
fn text_params<'a>(b: &Bound<'a>) -> Vec<Option<&'a str>> {
    b.params
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let format = match b.param_formats.as_slice() {
                [] => 0,
                [one] => *one,
                many => many.get(i).copied().unwrap_or(1),
            };
            p.filter(|_| format == 0)
                .and_then(|v| std::str::from_utf8(v).ok())
        })
        .collect()
}

pub(super) fn read_bind(body: &[u8]) -> Option<Bound<'_>> {
    let mut r = Reader::new(body);
    let portal = r.cstr()?;
    let statement = r.cstr()?;
    let n = usize::try_from(r.i16()?).ok()?;
    let param_formats = (0..n).map(|_| r.i16()).collect::<Option<Vec<_>>>()?;
    let n = usize::try_from(r.i16()?).ok()?;
    let mut params = Vec::with_capacity(n);
    for _ in 0..n {
        let len = r.i32()?;
        params.push(if len < 0 {
            None
        } else {
            Some(r.bytes(usize::try_from(len).ok()?)?)
        });
    }
    let n = usize::try_from(r.i16()?).ok()?;
    let result_formats = (0..n).map(|_| r.i16()).collect::<Option<Vec<_>>>()?;
    r.rest().is_empty().then_some(Bound {
        portal,
        statement,
        param_formats,
        params,
        result_formats,
    })
}

/// The rest of the batch after a Bind of `portal`: `Some((described, bytes, bytes before the
/// Sync))` when it is exactly [Describe portal] Execute(portal, all rows) Sync, all buffered.
pub(super) fn rest_of_batch(buf: &[u8], portal: &[u8]) -> Option<(bool, usize, usize)> {
    let mut pos = 0;
    let mut next = || {
        let h = proto::header(&buf[pos..], usize::MAX).ok()??;
        let msg = buf.get(pos..pos + h.total)?;
        pos += h.total;
        Some((h.client(), &msg[proto::HEADER_LEN..], pos))
    };
    let (mut kind, mut body, _) = next()?;
    let described = kind == ClientMsg::Describe;
    if described {
        let mut r = Reader::new(body);
        if NameKind::of(r.u8()?) != NameKind::Portal || r.cstr()? != portal || !r.rest().is_empty()
        {
            return None;
        }
        (kind, body, _) = next()?;
    }
    let mut r = Reader::new(body);
    if kind != ClientMsg::Execute || r.cstr()? != portal || r.i32()? != 0 || !r.rest().is_empty() {
        return None;
    }
    let (kind, sync, end) = next()?;
    (kind == ClientMsg::Sync).then_some((described, end, end - sync.len() - proto::HEADER_LEN))
}

impl<R, W> Session<R, W>
where
    R: ClientRead,
    W: DirectWrite,
{
    /// Before a Bind is sent: answers it and the rest of its batch from the cache, or arranges
    /// for the reply to be recorded. Returns whether it was answered.
    pub(super) async fn cache_bind(&mut self, msg: &[u8]) -> Result<bool> {
        let Some(cache) = self.result_cache() else {
            return Ok(false);
        };
        // Only a batch whose earlier replies the broker itself gives (or none).
        if !self
            .pending
            .iter()
            .all(|p| matches!(p, Pending::Synthetic(_)))
        {
            return Ok(false);
        }
        let Some(b) = read_bind(&msg[proto::HEADER_LEN..]) else {
            return Ok(false);
        };
        let Some((described, len, _)) = rest_of_batch(&self.rbuf, b.portal) else {
            return Ok(false);
        };
        let stmt = match b.statement {
            [] => self.unnamed.as_ref(),
            name => self.stmts.get(name),
        };
        let Some(stmt) = stmt else {
            return Ok(false);
        };
        let body = stmt.body.clone();
        let sql = body.split(|&c| c == 0).next().unwrap_or_default();
        let Ok(text) = std::str::from_utf8(sql) else {
            return Ok(false);
        };
        let fp = tidegate_sql::Fingerprint(stmt.fp);
        let class = self
            .catalog
            .classes
            .classify_fingerprinted(text, fp, &self.catalog.lookup);
        if !(class.kind == Kind::Read && class.read_only && self.cache_admits(&cache, fp)) {
            return Ok(false);
        }
        let texts = text_params(&b);
        let Some(deps) = self.cache_plan(&cache, text, fp, &class, &texts).await else {
            return Ok(false);
        };
        // The statement's parameter types are part of its text's meaning.
        let protocol = if described {
            ClientMsg::Describe
        } else {
            ClientMsg::Execute
        };
        let key = self.cache_key(
            protocol,
            &body,
            &b.params,
            &b.param_formats,
            &b.result_formats,
        );
        match cache.lookup(&self.topo.config.cache, key, &deps.gens).await {
            Lookup::Hit(e) if !described || !e.description.is_empty() => {
                cache.admission.record(fp.0, true);
                self.rbuf.advance(len);
                self.serve_hit(&cache, &e, true);
                Ok(true)
            }
            Lookup::Miss { gens, leader } => {
                cache.admission.record(fp.0, false);
                self.cache
                    .start_fill(Fill::new(key, gens, deps.ttl, leader, described));
                Ok(false)
            }
            _ => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};

    fn msg(out: &mut BytesMut, kind: ClientMsg, body: &[u8]) {
        out.put_u8(kind.byte());
        out.put_i32(4 + body.len() as i32);
        out.put_slice(body);
    }

    #[test]
    fn only_describe_execute_sync_batches_qualify() {
        let mut b = BytesMut::new();
        msg(&mut b, ClientMsg::Describe, b"P\0");
        msg(&mut b, ClientMsg::Execute, b"\0\0\0\0\0");
        msg(&mut b, ClientMsg::Sync, b"");
        assert_eq!(rest_of_batch(&b, b""), Some((true, b.len(), b.len() - 5)));
        assert_eq!(rest_of_batch(&b, b"other"), None);
        assert_eq!(
            rest_of_batch(&b[..b.len() - 1], b""),
            None,
            "Sync not buffered yet"
        );
        let mut e = BytesMut::new();
        msg(&mut e, ClientMsg::Execute, b"\0\0\0\0\x0a"); // a row limit: portal may be suspended
        msg(&mut e, ClientMsg::Sync, b"");
        assert_eq!(rest_of_batch(&e, b""), None);
        let mut f = BytesMut::new();
        msg(&mut f, ClientMsg::Execute, b"\0\0\0\0\0");
        msg(&mut f, ClientMsg::Flush, b"");
        assert_eq!(rest_of_batch(&f, b""), None);
    }

    #[test]
    fn binds_are_read_with_nulls_and_formats() {
        let body = b"p\0s\0\0\x01\0\x01\0\x02\0\0\0\x012\xff\xff\xff\xff\0\x01\0\x01";
        let b = read_bind(body).expect("valid");
        assert_eq!((b.portal, b.statement), (&b"p"[..], &b"s"[..]));
        assert_eq!(b.param_formats, vec![1]);
        assert_eq!(b.params, vec![Some(&b"2"[..]), None]);
        assert_eq!(b.result_formats, vec![1]);
        assert!(read_bind(&body[..body.len() - 1]).is_none());
    }
}
