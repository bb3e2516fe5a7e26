//! Broker-issued cancel keys.
//!
//! Each client gets a random (process id, secret) pair from the broker, never a server's. A
//! CancelRequest is honoured only if both match a live session, and then only the server
//! connection that session holds at that moment is cancelled; a forged or stale key cancels
//! nothing.
//!
//! A cancel reaches only the statement it was issued for: PostgreSQL signals the server
//! process asynchronously, so a connection released while a cancel for it is in flight could
//! run the next client's statement when the signal lands. A session that lets go of its
//! connection while a cancel is in flight closes it instead of returning it to the pool
//! ([`CancelSlot::detach`]); the two sides meet in sequentially consistent atomics, so either
//! the cancel sees the connection gone (and is not sent) or the session sees the cancel.

use crate::upstream::backend::Target;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// Broker-issued process ids start here: Linux never gives a process a higher id than
/// 2^22 (`PID_MAX_LIMIT`), so a broker id never equals a PostgreSQL backend's.
pub const FIRST_BROKER_PID: i32 = (1 << 22) + 1;

/// What a session publishes for cancellation.
pub struct CancelSlot {
    /// The broker-issued process id the client was given.
    pub pid: i32,
    /// The servers the session may hold connections to, by node index.
    targets: Mutex<Vec<Target>>,
    /// The held server connection's (pid, secret) packed into one word; 0 = none held.
    backend: AtomicU64,
    /// The node of the held connection.
    node: AtomicUsize,
    /// Cancels resolved for this session and not yet finished.
    in_flight: AtomicUsize,
    /// Who the client is (the admin console's SHOW CLIENTS).
    pub info: ClientInfo,
    /// KILL: the session ends at its next wait (the flag is read on every poll, the token
    /// wakes it).
    kill: CancellationToken,
    killed: std::sync::atomic::AtomicBool,
}

/// What SHOW CLIENTS tells of a session.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    /// The user it authenticated as.
    pub user: String,
    /// Its database.
    pub database: String,
    /// The PostgreSQL role its statements run as.
    pub role: String,
    /// Its address (`host:port`), or `internal` for an HTTP request's session.
    pub addr: String,
    /// Its `application_name` startup parameter.
    pub application_name: String,
    /// It connected over TLS.
    pub tls: bool,
    /// When it connected.
    pub connected: Option<std::time::SystemTime>,
}

impl CancelSlot {
    /// Records the server key of the connection the session now holds, on `node`.
    pub fn attach(&self, key: (i32, i32), node: usize) {
        let packed = ((key.0 as u32 as u64) << 32) | key.1 as u32 as u64;
        self.node.store(node, Ordering::Release);
        self.backend.store(packed, Ordering::Release);
    }

    /// The session's nodes changed (a configuration reload); it holds no connection now.
    pub fn retarget(&self, targets: Vec<Target>) {
        *self.targets.lock().unwrap_or_else(|e| e.into_inner()) = targets;
    }

    /// The session holds no server connection. Returns whether a cancel for the one it held
    /// may still be on its way: then that connection must be closed, not reused.
    #[must_use = "a connection with a cancel in flight must not be reused"]
    pub fn detach(&self) -> bool {
        self.backend.store(0, Ordering::SeqCst);
        self.in_flight.load(Ordering::SeqCst) > 0
    }

    /// The server process of the connection it holds, if any.
    pub fn server_pid(&self) -> Option<i32> {
        self.backend().map(|k| k.0)
    }

    /// The node of the connection it holds (meaningful while [`CancelSlot::server_pid`] is).
    pub fn node(&self) -> usize {
        self.node.load(Ordering::Acquire)
    }

    /// Ends the session (KILL): it sends 57P01 and closes at its next wait.
    pub fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        self.kill.cancel();
    }

    /// Whether [`CancelSlot::kill`] was called.
    pub fn is_killed(&self) -> bool {
        self.killed.load(Ordering::Acquire)
    }

    /// The token [`CancelSlot::kill`] cancels.
    pub fn kill_token(&self) -> &CancellationToken {
        &self.kill
    }

    fn backend(&self) -> Option<(i32, i32)> {
        match self.backend.load(Ordering::SeqCst) {
            0 => None,
            p => Some(((p >> 32) as u32 as i32, p as u32 as i32)),
        }
    }
}

/// A cancel on its way to a server: while it lives, the session it targets does not reuse
/// the connection (see [`CancelSlot::detach`]). Drop it once the server has answered.
pub struct InFlight {
    slot: Arc<CancelSlot>,
    /// Where to send it.
    pub target: Target,
    /// The server connection's own key.
    pub key: (i32, i32),
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.slot.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Live sessions' cancel keys.
#[derive(Default)]
pub struct CancelRegistry {
    sessions: Mutex<HashMap<i32, (i32, Arc<CancelSlot>)>>,
}

/// Removes the session's key when dropped.
pub struct Registration<'a> {
    registry: &'a CancelRegistry,
    /// The broker-issued process id.
    pub pid: i32,
    /// The broker-issued secret.
    pub secret: i32,
    /// The session's slot.
    pub slot: Arc<CancelSlot>,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.pid);
    }
}

impl CancelRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, (i32, Arc<CancelSlot>)>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Issues a fresh key for a session whose server connections go to `targets` (by node).
    pub fn register(&self, targets: Vec<Target>) -> Registration<'_> {
        self.register_client(targets, ClientInfo::default())
    }

    /// [`CancelRegistry::register`] for a client described by `info`.
    pub fn register_client(&self, targets: Vec<Target>, info: ClientInfo) -> Registration<'_> {
        let mut map = self.lock();
        let (pid, secret) = loop {
            let pid = rand::Rng::gen_range(&mut rand::thread_rng(), FIRST_BROKER_PID..=i32::MAX);
            if !map.contains_key(&pid) {
                break (pid, rand::random::<i32>());
            }
        };
        let slot = Arc::new(CancelSlot {
            pid,
            targets: Mutex::new(targets),
            backend: AtomicU64::new(0),
            node: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            info,
            kill: CancellationToken::new(),
            killed: std::sync::atomic::AtomicBool::new(false),
        });
        map.insert(pid, (secret, slot.clone()));
        Registration {
            registry: self,
            pid,
            secret,
            slot,
        }
    }

    /// Every live session: its broker-issued process id and slot.
    pub fn sessions(&self) -> Vec<(i32, Arc<CancelSlot>)> {
        self.lock()
            .iter()
            .map(|(pid, (_, slot))| (*pid, slot.clone()))
            .collect()
    }

    /// The live session the broker issued `pid` to.
    pub fn session(&self, pid: i64) -> Option<Arc<CancelSlot>> {
        let pid = i32::try_from(pid).ok().filter(|p| *p >= FIRST_BROKER_PID)?;
        self.lock().get(&pid).map(|(_, slot)| slot.clone())
    }

    /// Handles a CancelRequest: where to send the real cancel, if the key is valid and its
    /// session holds a server connection. Hold the answer until the cancel was sent.
    pub fn resolve(&self, pid: i32, secret: i32) -> Option<InFlight> {
        let slot = {
            let map = self.lock();
            let (s, slot) = map.get(&pid)?;
            if *s != secret {
                return None;
            }
            slot.clone()
        };
        Self::held(slot)
    }

    /// Where to send a cancel of the statement `slot`'s session is running, if it holds a
    /// server connection (`pg_cancel_backend` of a broker-issued id, once permitted).
    pub fn held(slot: Arc<CancelSlot>) -> Option<InFlight> {
        // Announced before the connection is read: a session detaching at the same time
        // either is seen to hold nothing here, or sees this cancel (both sides SeqCst).
        slot.in_flight.fetch_add(1, Ordering::SeqCst);
        let node = slot.node.load(Ordering::SeqCst);
        let found = slot.backend().and_then(|key| {
            let targets = slot.targets.lock().unwrap_or_else(|e| e.into_inner());
            Some((key, targets.get(node)?.clone()))
        });
        match found {
            Some((key, target)) => Some(InFlight { slot, target, key }),
            None => {
                slot.in_flight.fetch_sub(1, Ordering::SeqCst);
                None
            }
        }
    }
}

/// Sends a CancelRequest for `key` to the server.
pub async fn send_cancel(target: &Target, key: (i32, i32)) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect((target.host.as_str(), target.port)).await?;
    let mut buf = bytes::BytesMut::new();
    postgres_protocol::message::frontend::cancel_request(key.0, key.1, &mut buf);
    s.write_all(&buf).await?;
    // The server closes the socket when done; wait briefly so the request is not cut short.
    let mut sink = [0u8; 1];
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), s.read(&mut sink)).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            host: "127.0.0.1".into(),
            port: 1,
            user: "u".into(),
            database: "d".into(),
            password: None,
            keys: None,
            tls: Default::default(),
        }
    }

    #[test]
    fn only_the_exact_live_key_resolves() {
        let reg = CancelRegistry::default();
        let r = reg.register(vec![target()]);
        assert!(
            reg.resolve(r.pid, r.secret).is_none(),
            "no server connection held yet"
        );
        r.slot.attach((42, -7), 0);
        let key = reg.resolve(r.pid, r.secret).expect("valid key").key;
        assert_eq!(key, (42, -7));
        assert!(
            reg.resolve(r.pid, r.secret.wrapping_add(1)).is_none(),
            "forged secret"
        );
        assert!(reg.resolve(r.pid ^ 1, r.secret).is_none(), "forged pid");
        let (pid, secret) = (r.pid, r.secret);
        drop(r);
        assert!(reg.resolve(pid, secret).is_none(), "stale key");
    }

    #[test]
    fn a_connection_with_a_cancel_in_flight_is_not_reused() {
        let reg = CancelRegistry::default();
        let r = reg.register(vec![target()]);
        r.slot.attach((42, -7), 0);
        assert!(!r.slot.detach(), "no cancel: the connection may be reused");
        assert!(
            reg.resolve(r.pid, r.secret).is_none(),
            "nothing held: nothing sent"
        );
        r.slot.attach((42, -7), 0);
        let cancel = reg.resolve(r.pid, r.secret).expect("held");
        assert!(r.slot.detach(), "a cancel in flight: close the connection");
        drop(cancel);
        r.slot.attach((43, 1), 0);
        assert!(!r.slot.detach(), "the finished cancel no longer counts");
    }
}
