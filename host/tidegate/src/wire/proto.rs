//! PostgreSQL v3 message framing and the few messages the broker writes itself.
//!
//! The data plane never decodes row values: it only reads each message's tag and length to
//! find boundaries, and inspects the handful of message kinds that drive pooling (statement
//! names, ReadyForQuery, ErrorResponse). Lengths are validated before anything is buffered.
//! Messages the broker originates are encoded with `pgwire`'s message types.

use super::kind::{ClientMsg, Field, ServerMsg, TxStatus};
use bytes::{BufMut, BytesMut};
use pgwire::messages::response::{ErrorResponse, NoticeResponse, ReadyForQuery, TransactionStatus};
use pgwire::messages::startup::{BackendKeyData, ParameterStatus, SecretKey};
use pgwire::messages::Message;

/// Bytes of a regular message header: tag + length.
pub const HEADER_LEN: usize = 5;

/// A decoded message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The message type byte (see [`Header::client`] and [`Header::server`]).
    pub tag: u8,
    /// Total bytes on the wire, tag included.
    pub total: usize,
}

/// Why a byte stream is not a valid sequence of messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length field is below its own size.
    #[error("invalid message length {0}")]
    BadLength(i32),
    /// The length field exceeds the configured cap.
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Claimed length.
        len: usize,
        /// The cap.
        max: usize,
    },
}

/// Reads the header at the front of `buf` (if 5 bytes are there) and checks its length against
/// `max`. Nothing past the header is looked at, so a claimed 1 GB message allocates nothing.
#[inline]
pub fn header(buf: &[u8], max: usize) -> Result<Option<Header>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 {
        return Err(FrameError::BadLength(len));
    }
    let len = len as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok(Some(Header {
        tag: buf[0],
        total: len + 1,
    }))
}

impl Header {
    /// The kind of a message a client sent.
    #[inline]
    pub const fn client(&self) -> ClientMsg {
        ClientMsg::of(self.tag)
    }

    /// The kind of a message a server sent.
    #[inline]
    pub const fn server(&self) -> ServerMsg {
        ServerMsg::of(self.tag)
    }
}

/// Splits one complete message off the front of `buf`, or returns `None` if it is incomplete.
pub fn split_frame(buf: &mut BytesMut, max: usize) -> Result<Option<(u8, BytesMut)>, FrameError> {
    match header(buf, max)? {
        Some(h) if buf.len() >= h.total => Ok(Some((h.tag, buf.split_to(h.total)))),
        Some(h) => {
            buf.reserve(h.total - buf.len());
            Ok(None)
        }
        None => Ok(None),
    }
}

/// A cursor over a message body that never panics: every read is bounds-checked.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader over `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// A NUL-terminated string (without the NUL).
    pub fn cstr(&mut self) -> Option<&'a [u8]> {
        let rest = self.buf.get(self.pos..)?;
        let nul = memchr::memchr(0, rest)?;
        self.pos += nul + 1;
        Some(&rest[..nul])
    }

    /// A big-endian i16.
    pub fn i16(&mut self) -> Option<i16> {
        let b = self.buf.get(self.pos..self.pos + 2)?;
        self.pos += 2;
        Some(i16::from_be_bytes([b[0], b[1]]))
    }

    /// A big-endian i32.
    pub fn i32(&mut self) -> Option<i32> {
        let b = self.buf.get(self.pos..self.pos + 4)?;
        self.pos += 4;
        Some(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// `n` raw bytes.
    pub fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let b = self.buf.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(b)
    }

    /// One byte.
    pub fn u8(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    /// Everything not read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or(&[])
    }
}

/// Message severities the broker emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The statement failed; the session goes on.
    Error,
    /// The session ends.
    Fatal,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        }
    }
}

fn encode<M: Message>(m: &M, out: &mut BytesMut) {
    // Encoding into a BytesMut only fails for over-long messages, which the broker never builds.
    if let Err(e) = m.encode(out) {
        tracing::error!(error = %e, "failed to encode a broker message");
    }
}

/// Appends an ErrorResponse.
/// An ErrorResponse (severity ERROR) with a hint.
pub fn error_with_hint(out: &mut BytesMut, code: &str, message: &str, hint: Option<&str>) {
    let mut fields = vec![
        (Field::Severity.byte(), "ERROR".to_owned()),
        (Field::SeverityRaw.byte(), "ERROR".to_owned()),
        (Field::Code.byte(), code.to_owned()),
        (Field::Message.byte(), message.to_owned()),
    ];
    if let Some(h) = hint {
        fields.push((Field::Hint.byte(), h.to_owned()));
    }
    encode(&ErrorResponse::new(fields), out);
}

/// An ErrorResponse (or, with [`Severity::Fatal`], a FATAL one).
pub fn error(out: &mut BytesMut, severity: Severity, code: &str, message: &str) {
    let sev = severity.as_str().to_owned();
    encode(
        &ErrorResponse::new(vec![
            (Field::Severity.byte(), sev.clone()),
            (Field::SeverityRaw.byte(), sev),
            (Field::Code.byte(), code.to_owned()),
            (Field::Message.byte(), message.to_owned()),
        ]),
        out,
    );
}

/// Appends a NoticeResponse.
pub fn notice(out: &mut BytesMut, code: &str, message: &str) {
    encode(
        &NoticeResponse::new(vec![
            (Field::Severity.byte(), "NOTICE".into()),
            (Field::SeverityRaw.byte(), "NOTICE".into()),
            (Field::Code.byte(), code.to_owned()),
            (Field::Message.byte(), message.to_owned()),
        ]),
        out,
    );
}

/// Appends ReadyForQuery with the given status.
pub fn ready(out: &mut BytesMut, status: TxStatus) {
    let status = match status {
        TxStatus::InBlock => TransactionStatus::Transaction,
        TxStatus::Failed => TransactionStatus::Error,
        TxStatus::Idle | TxStatus::Other(_) => TransactionStatus::Idle,
    };
    encode(&ReadyForQuery::new(status), out);
}

/// Appends ParameterStatus.
pub fn parameter_status(out: &mut BytesMut, name: &str, value: &str) {
    encode(
        &ParameterStatus::new(name.to_owned(), value.to_owned()),
        out,
    );
}

/// Appends BackendKeyData.
pub fn backend_key(out: &mut BytesMut, pid: i32, secret: i32) {
    encode(&BackendKeyData::new(pid, SecretKey::I32(secret)), out);
}

/// Appends a message of the given kind ([`ServerMsg`] or [`ClientMsg`]) with a body the
/// caller encoded (ParseComplete, CloseComplete, DataRow, …).
pub fn simple(out: &mut BytesMut, kind: impl Into<u8>, body: &[u8]) {
    out.put_u8(kind.into());
    out.put_i32(body.len() as i32 + 4);
    out.put_slice(body);
}

/// Appends a whole text result as a simple query answers it: RowDescription (every column
/// `text`), one DataRow per row (`None` is NULL), and CommandComplete with `tag` (e.g. `SHOW`,
/// completed with the row count). ReadyForQuery is the caller's.
pub fn text_result(out: &mut BytesMut, columns: &[&str], rows: &[Vec<Option<String>>], tag: &str) {
    let mut rd = BytesMut::new();
    rd.put_i16(columns.len() as i16);
    for name in columns {
        rd.put_slice(name.as_bytes());
        rd.put_u8(0);
        rd.put_i32(0);
        rd.put_i16(0);
        rd.put_i32(25); // text
        rd.put_i16(-1);
        rd.put_i32(-1);
        rd.put_i16(0);
    }
    simple(out, ServerMsg::RowDescription, &rd);
    for row in rows {
        let mut d = BytesMut::new();
        d.put_i16(row.len() as i16);
        for f in row {
            match f {
                Some(v) => {
                    d.put_i32(v.len() as i32);
                    d.put_slice(v.as_bytes());
                }
                None => d.put_i32(-1),
            }
        }
        simple(out, ServerMsg::DataRow, &d);
    }
    simple(
        out,
        ServerMsg::CommandComplete,
        format!("{tag} {}\0", rows.len()).as_bytes(),
    );
}

/// Appends a one-row, one-column `boolean` result as PostgreSQL gives it for a function
/// call: RowDescription (unless `describe` is false: an Execute without a Describe gets
/// none), the DataRow in text (`t`/`f`) or binary, and CommandComplete `SELECT 1`.
pub fn bool_result(out: &mut BytesMut, column: &str, value: bool, binary: bool, describe: bool) {
    if describe {
        let mut rd = BytesMut::new();
        rd.put_i16(1);
        rd.put_slice(column.as_bytes());
        rd.put_u8(0);
        rd.put_i32(0);
        rd.put_i16(0);
        rd.put_i32(16); // bool
        rd.put_i16(1);
        rd.put_i32(-1);
        rd.put_i16(i16::from(binary));
        simple(out, ServerMsg::RowDescription, &rd);
    }
    let mut d = BytesMut::new();
    d.put_i16(1);
    d.put_i32(1);
    d.put_u8(match (binary, value) {
        (true, v) => u8::from(v),
        (false, true) => b't',
        (false, false) => b'f',
    });
    simple(out, ServerMsg::DataRow, &d);
    simple(out, ServerMsg::CommandComplete, b"SELECT 1\0");
}

/// The process id a NotificationResponse (header included) names, if it is well formed.
pub fn notification_pid(msg: &[u8]) -> Option<i32> {
    let b = msg.get(HEADER_LEN..HEADER_LEN + 4)?;
    Some(i32::from_be_bytes(b.try_into().ok()?))
}

/// Overwrites the process id of a NotificationResponse (header included).
pub fn set_notification_pid(msg: &mut [u8], pid: i32) {
    if let Some(b) = msg.get_mut(HEADER_LEN..HEADER_LEN + 4) {
        b.copy_from_slice(&pid.to_be_bytes());
    }
}

/// Appends Parse, Bind (text parameters, text results), Execute and Sync of the unnamed
/// statement `sql`.
pub fn extended_query(out: &mut BytesMut, sql: &str, params: &[&str]) {
    let mut body = BytesMut::new();
    body.put_u8(0);
    body.put_slice(sql.as_bytes());
    body.put_u8(0);
    body.put_i16(0);
    simple(out, ClientMsg::Parse.byte(), &body);
    body.clear();
    body.put_slice(b"\0\0");
    body.put_i16(0);
    body.put_i16(params.len() as i16);
    for p in params {
        body.put_i32(p.len() as i32);
        body.put_slice(p.as_bytes());
    }
    body.put_i16(0);
    simple(out, ClientMsg::Bind.byte(), &body);
    simple(out, ClientMsg::Execute.byte(), b"\0\0\0\0\0");
    simple(out, ClientMsg::Sync.byte(), &[]);
}

/// Appends a simple Query message.
pub fn query(out: &mut BytesMut, sql: &str) {
    out.put_u8(ClientMsg::Query.byte());
    out.put_i32(sql.len() as i32 + 5);
    out.put_slice(sql.as_bytes());
    out.put_u8(0);
}

/// The SQLSTATE (`C` field) of an ErrorResponse or NoticeResponse message (header included).
pub fn sqlstate(msg: &[u8]) -> Option<&str> {
    fields(msg)
        .find(|(k, _)| *k == Field::Code)
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
}

/// The fields of an ErrorResponse/NoticeResponse (header included), bounds-checked.
pub fn fields(msg: &[u8]) -> impl Iterator<Item = (Field, &[u8])> {
    let mut r = Reader::new(msg.get(HEADER_LEN..).unwrap_or(&[]));
    std::iter::from_fn(move || {
        let code = r.u8()?;
        if code == 0 {
            return None;
        }
        Some((Field::of(code), r.cstr()?))
    })
}

/// The SQLSTATE and message of an ErrorResponse (header included); `XX000` and an empty
/// message when absent.
pub fn error_fields(msg: &[u8]) -> (String, String) {
    let (mut code, mut message) = ("XX000".to_owned(), String::new());
    for (k, v) in fields(msg) {
        match k {
            Field::Code => code = String::from_utf8_lossy(v).into_owned(),
            Field::Message => message = String::from_utf8_lossy(v).into_owned(),
            _ => {}
        }
    }
    (code, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_rejects_short_and_oversized_lengths() {
        assert_eq!(header(b"Q\0\0\0\x03", 100), Err(FrameError::BadLength(3)));
        assert_eq!(
            header(b"Q\x3f\xff\xff\xff", 1 << 20),
            Err(FrameError::TooLarge {
                len: 0x3fffffff,
                max: 1 << 20
            })
        );
        assert_eq!(header(b"Q\0\0", 100), Ok(None));
        assert_eq!(
            header(b"Q\0\0\0\x05x", 100),
            Ok(Some(Header {
                tag: b'Q',
                total: 6
            }))
        );
    }

    #[test]
    fn split_frame_waits_for_the_whole_message() {
        let mut b = BytesMut::from(&b"Q\0\0\0\x09SEL"[..]);
        assert_eq!(split_frame(&mut b, 100), Ok(None));
        b.extend_from_slice(b"1\0X\0\0\0\x04");
        let (tag, m) = split_frame(&mut b, 100).expect("ok").expect("complete");
        assert_eq!((tag, &m[..]), (b'Q', &b"Q\0\0\0\x09SEL1\0"[..]));
        let (tag, _) = split_frame(&mut b, 100).expect("ok").expect("complete");
        assert_eq!(tag, b'X');
        assert!(b.is_empty());
    }

    #[test]
    fn error_fields_round_trip() {
        let mut out = BytesMut::new();
        error(&mut out, Severity::Fatal, "53300", "too many");
        assert_eq!(out[0], b'E');
        assert_eq!(sqlstate(&out), Some("53300"));
        // A truncated error never panics.
        assert_eq!(sqlstate(&out[..8]), None);
    }

    #[test]
    fn reader_is_bounds_checked() {
        let mut r = Reader::new(b"ab\0\x01");
        assert_eq!(r.cstr(), Some(&b"ab"[..]));
        assert_eq!(r.i16(), None);
        assert_eq!(r.u8(), Some(1));
        assert_eq!(r.cstr(), None);
        assert_eq!(r.bytes(usize::MAX), None);
    }
}
