//! Single-flight: while one session runs a missed read, identical misses wait for its reply
//! instead of running the query again.

use super::entry::Entry;
use super::key::Key;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

type Slot = watch::Sender<Option<Arc<Entry>>>;

/// The reads in flight, by key.
#[derive(Default)]
pub struct Flights {
    map: Arc<Mutex<HashMap<Key, Slot>>>,
}

/// What a missed read does.
pub enum Flight {
    /// Runs the query; [`Leader::complete`] hands the reply to the waiters.
    Leader(Leader),
    /// Waits for the leader's reply.
    Follower(watch::Receiver<Option<Arc<Entry>>>),
}

impl Flights {
    /// Joins the flight for `key`, leading it if there is none.
    pub fn join(&self, key: Key) -> Flight {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = map.get(&key) {
            return Flight::Follower(tx.subscribe());
        }
        let (tx, _) = watch::channel(None);
        map.insert(key, tx);
        Flight::Leader(Leader {
            key,
            map: self.map.clone(),
        })
    }

    /// Reads in flight (for tests and metrics).
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no read is in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The session running a missed read. Dropped without [`Leader::complete`] (an error, a
/// reply too large to keep, a lost connection), it releases its waiters to run the query
/// themselves.
pub struct Leader {
    key: Key,
    map: Arc<Mutex<HashMap<Key, Slot>>>,
}

impl Leader {
    /// Hands `entry` to every waiter and ends the flight.
    pub fn complete(self, entry: Arc<Entry>) {
        self.publish(entry);
    }

    /// Hands `entry` to every waiter, and to every read that joins until the leader is
    /// dropped (while the reply is being stored, a read of the same key is answered from
    /// memory instead of missing). Each reader still checks the entry's counters.
    pub fn publish(&self, entry: Arc<Entry>) {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = map.get(&self.key) {
            tx.send_replace(Some(entry));
        }
    }

    fn take(&self) -> Option<Slot> {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key)
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        drop(self.take());
    }
}

/// Waits up to `limit` for the leader's reply; `None` if it failed or took too long.
pub async fn wait(
    mut rx: watch::Receiver<Option<Arc<Entry>>>,
    limit: std::time::Duration,
) -> Option<Arc<Entry>> {
    let got = tokio::time::timeout(limit, rx.wait_for(|v| v.is_some())).await;
    match got {
        Ok(Ok(v)) => v.clone(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::time::Duration;

    #[tokio::test]
    async fn followers_get_the_leaders_reply_or_are_released() {
        let flights = Flights::default();
        let key = Key([7; 16]);
        let Flight::Leader(leader) = flights.join(key) else {
            panic!("first must lead")
        };
        let Flight::Follower(rx) = flights.join(key) else {
            panic!("second must follow")
        };
        let entry = Arc::new(Entry {
            gens: vec![1],
            description: Bytes::new(),
            body: Bytes::from_static(b"x"),
        });
        let waiter = tokio::spawn(wait(rx, Duration::from_secs(5)));
        leader.complete(entry.clone());
        assert_eq!(waiter.await.unwrap(), Some(entry));
        assert!(flights.is_empty());

        let Flight::Leader(leader) = flights.join(key) else {
            panic!("a new flight")
        };
        let Flight::Follower(rx) = flights.join(key) else {
            panic!("follows")
        };
        drop(leader);
        assert_eq!(wait(rx, Duration::from_secs(5)).await, None);
        assert!(flights.is_empty());
    }
}
