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
    #[schema(value_type = String)]
    pub topic: Arc<str>,
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

enum State {
    /// Held by a request whose transaction is running; the sender is the request's, shared
    /// by all its ids, and says `true` once the request completed or let go.
    InFlight(Arc<watch::Sender<bool>>),
    /// Where the event is: topic (shared), partition, offset.
    Done(Arc<str>, i32, i64),
}

struct Entry {
    hash: [u8; 32],
    at_ms: i64,
    state: State,
}

/// What reserving a request's event ids found. All of a request's ids are reserved at once,
/// under one lock: either every new id is held, or none is.
pub enum Reservation {
    /// Every new id (by index into the request) is now held by this request; the others were
    /// already published with the same content, and here are their receipts. The caller must
    /// [`Index::complete`] or [`Index::release`] the new ones.
    Held {
        /// Indexes of the ids to produce.
        fresh: Vec<usize>,
        /// Indexes and original receipts of the ids already published.
        duplicates: Vec<(usize, Receipt)>,
    },
    /// These ids (indexes) were already used for different content. Nothing is held.
    Conflict(Vec<usize>),
    /// An id is being published by another request right now: wait for this, then reserve
    /// again. Nothing is held.
    Wait(watch::Receiver<bool>),
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

    /// Reserve a request's event ids, each with the hash of its content.
    pub fn reserve(&self, ids: &[(&str, [u8; 32])]) -> Reservation {
        let mut inner = self.lock();
        let now = now_ms();
        self.evict(&mut inner, now);
        let mut duplicates = Vec::new();
        let mut conflicts = Vec::new();
        let mut wait = None;
        for (i, (id, hash)) in ids.iter().enumerate() {
            let Some(e) = inner.map.get(*id) else {
                continue;
            };
            if e.hash != *hash {
                conflicts.push(i);
                continue;
            }
            match &e.state {
                State::Done(topic, partition, offset) => duplicates.push((
                    i,
                    Receipt {
                        topic: topic.clone(),
                        partition: *partition,
                        offset: *offset,
                        event_id: id.to_string(),
                        duplicate: true,
                    },
                )),
                State::InFlight(tx) => wait = Some(tx.subscribe()),
            }
        }
        if !conflicts.is_empty() {
            return Reservation::Conflict(conflicts);
        }
        if let Some(rx) = wait {
            return Reservation::Wait(rx);
        }
        // Nothing stands in the way: hold every new id (under the same lock, so no other
        // request saw them free in between).
        let tx = Arc::new(watch::channel(false).0);
        let mut fresh = Vec::with_capacity(ids.len() - duplicates.len());
        let mut known = duplicates.iter().map(|(i, _)| *i).peekable();
        for (i, (id, hash)) in ids.iter().enumerate() {
            if known.next_if_eq(&i).is_some() {
                continue;
            }
            inner.map.insert(
                id.to_string(),
                Entry {
                    hash: *hash,
                    at_ms: now,
                    state: State::InFlight(tx.clone()),
                },
            );
            fresh.push(i);
        }
        Reservation::Held { fresh, duplicates }
    }

    /// The held ids are on the log in `topic`, each at its (partition, offset).
    pub fn complete<'a>(&self, topic: &str, placed: impl IntoIterator<Item = (&'a str, i32, i64)>) {
        let mut inner = self.lock();
        let now = now_ms();
        let topic = inner.topic(topic);
        let mut woken: Option<Arc<watch::Sender<bool>>> = None;
        for (id, partition, offset) in placed {
            let Some(e) = inner.map.get_mut(id) else {
                continue;
            };
            let done = State::Done(topic.clone(), partition, offset);
            if let State::InFlight(tx) = std::mem::replace(&mut e.state, done) {
                wake_once(&mut woken, tx);
            }
            e.at_ms = now;
            inner.order.push_back((now, id.to_string()));
        }
    }

    /// The held ids were not published: forget them, and wake whoever waits.
    pub fn release<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        let mut inner = self.lock();
        let mut woken: Option<Arc<watch::Sender<bool>>> = None;
        for id in ids {
            if let Some(e) = inner.map.get(id)
                && let State::InFlight(tx) = &e.state
            {
                wake_once(&mut woken, tx.clone());
                inner.map.remove(id);
            }
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

/// Tell a request's waiters it settled, once per request: consecutive ids of one request
/// share its sender.
fn wake_once(woken: &mut Option<Arc<watch::Sender<bool>>>, tx: Arc<watch::Sender<bool>>) {
    if woken.as_ref().is_some_and(|w| Arc::ptr_eq(w, &tx)) {
        return;
    }
    tx.send_replace(true);
    *woken = Some(tx);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn held(r: Reservation) -> (Vec<usize>, Vec<(usize, Receipt)>) {
        match r {
            Reservation::Held { fresh, duplicates } => (fresh, duplicates),
            Reservation::Conflict(c) => panic!("conflict at {c:?}"),
            Reservation::Wait(_) => panic!("wait"),
        }
    }

    #[test]
    fn same_id_same_content_is_a_duplicate_different_content_a_conflict() {
        let idx = Index::new(Duration::from_secs(60), 10);
        assert_eq!(held(idx.reserve(&[("a", [1; 32])])).0, [0]);
        assert!(matches!(idx.reserve(&[("a", [2; 32])]), Reservation::Conflict(c) if c == [0]));
        let Reservation::Wait(mut rx) = idx.reserve(&[("a", [1; 32])]) else {
            panic!("in flight")
        };
        assert!(!*rx.borrow_and_update());
        idx.complete("t", [("a", 3, 7)]);
        assert!(*rx.borrow_and_update(), "the waiter is woken");
        let (fresh, duplicates) = held(idx.reserve(&[("a", [1; 32]), ("b", [1; 32])]));
        assert_eq!(fresh, [1]);
        let (i, r) = &duplicates[0];
        assert!(*i == 0 && r.duplicate && &*r.topic == "t" && r.partition == 3 && r.offset == 7);
        idx.release(["b"]);
        assert_eq!(held(idx.reserve(&[("b", [1; 32])])).0, [0]);
    }

    #[test]
    fn a_request_holds_all_its_new_ids_or_none() {
        let idx = Index::new(Duration::from_secs(60), 10);
        held(idx.reserve(&[("busy", [1; 32])]));
        held(idx.reserve(&[("used", [1; 32])]));
        idx.complete("t", [("used", 0, 1)]);
        // One id in flight elsewhere: nothing of this request is held...
        let Reservation::Wait(mut rx) = idx.reserve(&[("x", [0; 32]), ("busy", [1; 32])]) else {
            panic!("wait")
        };
        // ... and one used for other content: nothing either.
        assert!(matches!(
            idx.reserve(&[("y", [0; 32]), ("used", [2; 32])]),
            Reservation::Conflict(c) if c == [1]
        ));
        assert_eq!(idx.len(), 2, "neither x nor y was held");
        idx.release(["busy"]);
        assert!(*rx.borrow_and_update(), "a release wakes the waiter too");
        let (fresh, duplicates) = held(idx.reserve(&[("x", [0; 32]), ("busy", [1; 32])]));
        assert!(fresh == [0, 1] && duplicates.is_empty());
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
        assert_eq!(held(idx.reserve(&[("a", [0; 32])])).0, [0]);
    }
}
