//! Idempotency: an event id is accepted once.
//!
//! The index maps event id → (hash of the encoded record, receipt) for a window (24 h by
//! default) and a bounded number of ids. A request first *reserves* its ids: a new id is held
//! while its transaction runs, so a concurrent duplicate waits for the outcome instead of
//! producing a second copy; a known id with the same content returns the original receipt; with
//! different content it is a conflict. The index is filled from the log too (see
//! `crate::replay`): at start from `now - window`, then by tailing, so it survives restarts and
//! learns what other instances published.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

/// Proof that Kafka has an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Receipt {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset in that partition.
    pub offset: i64,
    /// The event's id.
    pub event_id: String,
    /// True when the event id was already published with the same content: this is the
    /// original receipt and nothing new was produced.
    pub duplicate: bool,
}

/// Hash of what an event id stands for: topic, key and the Avro body (without the schema id,
/// so the same event under a re-registered identical schema still matches).
pub fn content_hash(topic: &str, key: &[u8], value: &[u8]) -> [u8; 32] {
    let body = value
        .get(lienthong_contract::codec::HEADER_LEN..)
        .unwrap_or(value);
    let mut h = Sha256::new();
    h.update((topic.len() as u64).to_be_bytes());
    h.update(topic.as_bytes());
    h.update((key.len() as u64).to_be_bytes());
    h.update(key);
    h.update(body);
    h.finalize().into()
}

type Outcome = Option<Option<Receipt>>;

enum State {
    InFlight(watch::Sender<Outcome>),
    /// Where the event is: topic (shared), partition, offset.
    Done(Arc<str>, i32, i64),
}

struct Entry {
    hash: [u8; 32],
    at_ms: i64,
    state: State,
}

/// What a reservation found.
pub enum Reserve {
    /// New: the caller must produce it, then [`Index::complete`] or [`Index::release`].
    Fresh,
    /// Already published with the same content.
    Duplicate(Receipt),
    /// Already used for different content.
    Conflict,
    /// Being published by another request right now: wait, then reserve again.
    Wait(watch::Receiver<Outcome>),
}

#[derive(Default)]
struct Inner {
    map: HashMap<String, Entry>,
    order: VecDeque<(i64, String)>,
    topics: HashMap<String, Arc<str>>,
}

impl Inner {
    fn topic(&mut self, name: &str) -> Arc<str> {
        if let Some(t) = self.topics.get(name) {
            return t.clone();
        }
        let t: Arc<str> = Arc::from(name);
        self.topics.insert(name.to_string(), t.clone());
        t
    }
}

/// The event-id index.
pub struct Index {
    inner: Mutex<Inner>,
    window_ms: i64,
    max_entries: usize,
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Index {
    /// An empty index remembering ids for `window`, at most `max_entries` of them.
    pub fn new(window: Duration, max_entries: usize) -> Self {
        Index {
            inner: Mutex::new(Inner::default()),
            window_ms: i64::try_from(window.as_millis()).unwrap_or(i64::MAX),
            max_entries: max_entries.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many ids are remembered.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Whether no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn evict(&self, inner: &mut Inner, now: i64) {
        while let Some((at, _)) = inner.order.front() {
            let expired = now.saturating_sub(*at) > self.window_ms;
            if !expired && inner.map.len() <= self.max_entries {
                break;
            }
            let Some((at, id)) = inner.order.pop_front() else {
                break;
            };
            if let Some(e) = inner.map.get(&id)
                && e.at_ms == at
                && matches!(e.state, State::Done(..))
            {
                inner.map.remove(&id);
            }
        }
    }

    /// Reserve `event_id` for content `hash`.
    pub fn reserve(&self, event_id: &str, hash: [u8; 32]) -> Reserve {
        let mut inner = self.lock();
        let now = now_ms();
        self.evict(&mut inner, now);
        if let Some(e) = inner.map.get(event_id) {
            if e.hash != hash {
                return Reserve::Conflict;
            }
            return match &e.state {
                State::Done(topic, partition, offset) => Reserve::Duplicate(Receipt {
                    topic: topic.to_string(),
                    partition: *partition,
                    offset: *offset,
                    event_id: event_id.to_string(),
                    duplicate: true,
                }),
                State::InFlight(tx) => Reserve::Wait(tx.subscribe()),
            };
        }
        let (tx, _) = watch::channel(None);
        inner.map.insert(
            event_id.to_string(),
            Entry {
                hash,
                at_ms: now,
                state: State::InFlight(tx),
            },
        );
        Reserve::Fresh
    }

    /// The reserved id is on the log with `receipt`.
    pub fn complete(&self, receipt: &Receipt) {
        let mut inner = self.lock();
        let now = now_ms();
        let topic = inner.topic(&receipt.topic);
        if let Some(e) = inner.map.get_mut(&receipt.event_id) {
            if let State::InFlight(tx) = &e.state {
                tx.send_replace(Some(Some(receipt.clone())));
            }
            e.state = State::Done(topic, receipt.partition, receipt.offset);
            e.at_ms = now;
            inner.order.push_back((now, receipt.event_id.clone()));
        }
    }

    /// The reserved id was not published: forget it, and wake whoever waits.
    pub fn release(&self, event_id: &str) {
        let mut inner = self.lock();
        if let Some(e) = inner.map.get(event_id)
            && let State::InFlight(tx) = &e.state
        {
            tx.send_replace(Some(None));
            inner.map.remove(event_id);
        }
    }

    /// An event read from the log (written at `at_ms`); the first place of an id wins. `hash`
    /// is computed only for an id the index does not hold yet: most records the replay reads
    /// are this instance's own, already known.
    pub fn record(
        &self,
        hash: impl FnOnce() -> [u8; 32],
        event_id: &str,
        (topic, partition, offset): (&str, i32, i64),
        at_ms: i64,
    ) {
        let mut inner = self.lock();
        let now = now_ms();
        if now.saturating_sub(at_ms) > self.window_ms {
            return;
        }
        if inner.map.contains_key(event_id) {
            return;
        }
        let topic = inner.topic(topic);
        inner.order.push_back((at_ms, event_id.to_string()));
        inner.map.insert(
            event_id.to_string(),
            Entry {
                hash: hash(),
                at_ms,
                state: State::Done(topic, partition, offset),
            },
        );
        self.evict(&mut inner, now);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn receipt(id: &str) -> Receipt {
        Receipt {
            topic: "t".into(),
            partition: 0,
            offset: 7,
            event_id: id.into(),
            duplicate: false,
        }
    }

    #[test]
    fn same_id_same_content_is_a_duplicate_different_content_a_conflict() {
        let idx = Index::new(Duration::from_secs(60), 10);
        assert!(matches!(idx.reserve("a", [1; 32]), Reserve::Fresh));
        assert!(matches!(idx.reserve("a", [2; 32]), Reserve::Conflict));
        let Reserve::Wait(mut rx) = idx.reserve("a", [1; 32]) else {
            panic!("in flight")
        };
        idx.complete(&receipt("a"));
        assert_eq!(rx.borrow_and_update().clone(), Some(Some(receipt("a"))));
        match idx.reserve("a", [1; 32]) {
            Reserve::Duplicate(r) => assert!(r.duplicate && r.offset == 7),
            _ => panic!("duplicate"),
        }
        assert!(matches!(idx.reserve("b", [1; 32]), Reserve::Fresh));
        idx.release("b");
        assert!(matches!(idx.reserve("b", [1; 32]), Reserve::Fresh));
    }

    #[test]
    fn old_and_excess_ids_are_forgotten() {
        let idx = Index::new(Duration::from_secs(60), 3);
        idx.record(|| [0; 32], "old", ("t", 0, 1), now_ms() - 120_000);
        assert!(idx.is_empty());
        for id in ["a", "b", "c", "d"] {
            idx.record(|| [0; 32], id, ("t", 0, 1), now_ms());
        }
        assert_eq!(idx.len(), 3);
        assert!(matches!(idx.reserve("a", [0; 32]), Reserve::Fresh));
    }
}
