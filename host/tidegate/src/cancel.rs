//! Broker-issued cancel keys.
//!
//! Each client gets a random (process id, secret) pair from the broker, never a server's. A
//! CancelRequest is honoured only if both match a live session, and then only the server
//! connection that session holds at that moment is cancelled; a forged or stale key cancels
//! nothing.

use crate::backend::Target;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// What a session publishes for cancellation.
pub struct CancelSlot {
    /// The servers the session may hold connections to, by node index.
    targets: Mutex<Vec<Target>>,
    /// The held server connection's (pid, secret) packed into one word; 0 = none held.
    backend: AtomicU64,
    /// The node of the held connection.
    node: AtomicUsize,
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

    /// The session holds no server connection.
    pub fn detach(&self) {
        self.backend.store(0, Ordering::Release);
    }

    fn backend(&self) -> Option<(i32, i32)> {
        match self.backend.load(Ordering::Acquire) {
            0 => None,
            p => Some(((p >> 32) as u32 as i32, p as u32 as i32)),
        }
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
        let slot = Arc::new(CancelSlot {
            targets: Mutex::new(targets),
            backend: AtomicU64::new(0),
            node: AtomicUsize::new(0),
        });
        let mut map = self.lock();
        let (pid, secret) = loop {
            let pid = rand::random::<i32>() & 0x7fff_ffff;
            if pid != 0 && !map.contains_key(&pid) {
                break (pid, rand::random::<i32>());
            }
        };
        map.insert(pid, (secret, slot.clone()));
        Registration {
            registry: self,
            pid,
            secret,
            slot,
        }
    }

    /// Handles a CancelRequest: returns where to send the real cancel, if the key is valid and
    /// its session holds a server connection.
    pub fn resolve(&self, pid: i32, secret: i32) -> Option<(Target, (i32, i32))> {
        let map = self.lock();
        let (s, slot) = map.get(&pid)?;
        if *s != secret {
            return None;
        }
        let key = slot.backend()?;
        let node = slot.node.load(Ordering::Acquire);
        let target = slot
            .targets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(node)?
            .clone();
        Some((target, key))
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
        let (_, key) = reg.resolve(r.pid, r.secret).expect("valid key");
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
}
