//! Which node a transaction goes to: a healthy replica only when every statement it starts
//! with is provably read-only (tidegate-sql), outside transactions and pinned sessions;
//! everything else, and everything doubtful, to the primary.

use super::{Session, Stmt};
use crate::proto::{self, Reader};
use tidegate_sql::{NoLookup, TxControl};
use tokio::io::{AsyncRead, AsyncWrite};

/// A leading comment that forces the primary.
const PRIMARY_HINT: &[u8] = b"/* tidegate:primary */";

/// Recognizes `SET tidegate.route = 'primary' | 'any'` (also `TO`, unquoted, a trailing `;`)
/// and `RESET tidegate.route`; returns whether reads must stay on the primary.
pub(super) fn route_setting(sql: &[u8]) -> Option<bool> {
    let text = std::str::from_utf8(sql)
        .ok()?
        .trim()
        .trim_end_matches(';')
        .trim();
    let lower = text.to_ascii_lowercase();
    if lower == "reset tidegate.route" {
        return Some(false);
    }
    let rest = lower.strip_prefix("set")?;
    let rest = rest.trim_start();
    let rest = rest.strip_prefix("session").map_or(rest, str::trim_start);
    let rest = rest.strip_prefix("tidegate.route")?.trim_start();
    let value = rest
        .strip_prefix('=')
        .or_else(|| rest.strip_prefix("to"))?
        .trim()
        .trim_matches('\'');
    match value {
        "primary" => Some(true),
        "any" | "default" => Some(false),
        _ => None,
    }
}

impl<R, W> Session<R, W>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    /// Whether replicas may be considered at all for the next transaction.
    fn routing_possible(&self) -> bool {
        !self.primary_only
            && self.pools.len() > 1
            && !self.pinned
            && self.tx_status == b'I'
            && !self.recently_on_primary()
    }

    /// Read-your-writes: the client used the primary within the configured window, so a
    /// replica may not have replayed what it wrote.
    fn recently_on_primary(&self) -> bool {
        match (
            self.last_primary,
            self.sh.config.routing.read_your_writes_window.get(),
        ) {
            (Some(t), Some(window)) => t.elapsed() < window,
            _ => false,
        }
    }

    /// The next replica in round-robin order that is not banned.
    pub(super) fn pick_replica(&mut self) -> Option<usize> {
        let nodes = self.pools.len();
        if nodes < 2 {
            return None;
        }
        // Any node but the writer may serve reads: after a promotion the old primary's slot
        // may hold a replica.
        let writer = self.sh.writer();
        for _ in 0..nodes {
            self.next_replica = self.next_replica.wrapping_add(1);
            let node = self.next_replica % nodes;
            if node == writer {
                continue;
            }
            // Node 0 is only read from once the monitor has seen it as a healthy standby.
            let h = &self.sh.health[node];
            let lagging = h.lagging.load(std::sync::atomic::Ordering::Relaxed)
                || (node == 0 && !h.standby.load(std::sync::atomic::Ordering::Relaxed));
            if !lagging && !self.pools[node].is_banned() {
                return Some(node);
            }
        }
        None
    }

    /// Whether `sql` (a statement text) is provably read-only, or starts a READ ONLY
    /// transaction. Only computed when replicas are configured.
    pub(super) fn sql_read_only(&self, sql: &[u8]) -> bool {
        if self.pools.len() < 2 {
            return false;
        }
        let trimmed = sql.trim_ascii_start();
        if trimmed.starts_with(PRIMARY_HINT) {
            return false;
        }
        let Ok(text) = std::str::from_utf8(sql) else {
            return false;
        };
        let c = self.sh.classes.classify(text, &NoLookup);
        c.read_only || c.tx == Some(TxControl::Begin { read_only: true })
    }

    /// Routing for a simple query about to start a transaction.
    pub(super) fn route_read_only(&self, sql: &[u8]) -> bool {
        self.routing_possible() && self.sql_read_only(sql)
    }

    /// Routing for an extended-protocol batch whose first message has read-only-ness `first`
    /// (and, for a Parse, defines statement `parsed`): the rest of the batch, up to its Sync,
    /// must already be buffered and read-only too.
    pub(super) fn batch_read_only(&self, first: bool, parsed: Option<&[u8]>) -> bool {
        if !first || !self.routing_possible() {
            return false;
        }
        let buf = &self.rbuf[..];
        let mut pos = 0;
        // The unnamed statement as this batch redefines it.
        let mut unnamed: Option<bool> = self.unnamed.as_ref().map(|s| s.read_only);
        // Named statements this batch parses (all read-only so far, or we would have stopped).
        let mut named_here: Vec<&[u8]> = Vec::new();
        match parsed {
            Some([]) => unnamed = Some(true),
            Some(name) => named_here.push(name),
            None => {}
        }
        loop {
            let Ok(Some(h)) = proto::header(&buf[pos..], self.sh.config.limits.max_message_bytes)
            else {
                return false; // The batch is not all here: the primary is always safe.
            };
            let Some(msg) = buf.get(pos..pos + h.total) else {
                return false;
            };
            let mut r = Reader::new(&msg[proto::HEADER_LEN..]);
            let ok = match h.tag {
                b'S' => return true,
                b'E' | b'H' => true,
                b'P' => match (r.cstr(), r.cstr()) {
                    (Some(name), Some(query)) => {
                        let ro = self.sql_read_only(query);
                        if name.is_empty() {
                            unnamed = Some(ro);
                        } else if ro {
                            named_here.push(name);
                        }
                        ro
                    }
                    _ => false,
                },
                b'B' => match (r.cstr(), r.cstr()) {
                    (Some(_), Some(stmt)) => {
                        named_here.contains(&stmt) || self.named_read_only(stmt, unnamed)
                    }
                    _ => false,
                },
                b'D' => match (r.u8(), r.cstr()) {
                    (Some(b'S'), Some(stmt)) => {
                        named_here.contains(&stmt) || self.named_read_only(stmt, unnamed)
                    }
                    (Some(b'P'), Some(_)) => true,
                    _ => false,
                },
                _ => false,
            };
            if !ok {
                return false;
            }
            pos += h.total;
        }
    }

    fn named_read_only(&self, name: &[u8], unnamed: Option<bool>) -> bool {
        if name.is_empty() {
            unnamed.unwrap_or(false)
        } else {
            self.stmts.get(name).is_some_and(|s: &Stmt| s.read_only)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::route_setting;

    #[test]
    fn the_route_setting_is_recognized() {
        assert_eq!(route_setting(b"SET tidegate.route = 'primary'"), Some(true));
        assert_eq!(route_setting(b"set tidegate.route to any;"), Some(false));
        assert_eq!(
            route_setting(b"SET SESSION tidegate.route = primary"),
            Some(true)
        );
        assert_eq!(route_setting(b"RESET tidegate.route"), Some(false));
        assert_eq!(route_setting(b"SET tidegate.route = 'elsewhere'"), None);
        assert_eq!(route_setting(b"SET search_path = x"), None);
        assert_eq!(
            route_setting(b"SET tidegate.route = 'primary'; SELECT 1"),
            None
        );
    }
}
