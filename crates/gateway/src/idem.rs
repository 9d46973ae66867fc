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
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use lienthong_encode::EventKey;
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

/// Where the log holds an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// Topic (shared by every entry of that topic).
    pub topic: Arc<str>,
    /// Partition.
    pub partition: i32,
    /// Offset in that partition.
    pub offset: i64,
}

impl Place {
    /// The receipt of the event `event_id` at this place.
    pub fn receipt(self, event_id: String, duplicate: bool) -> Receipt {
        Receipt {
            topic: self.topic,
            partition: self.partition,
            offset: self.offset,
            event_id,
            duplicate,
        }
    }
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
    /// Where the event is.
    Done(Place),
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
    /// already published with the same content, and here is where. The caller must
    /// [`Index::complete`] or [`Index::release`] the new ones.
    Held {
        /// Indexes of the ids to produce.
        fresh: Vec<usize>,
        /// Indexes and places of the ids already published.
        duplicates: Vec<(usize, Place)>,
    },
    /// These ids (indexes) were already used for different content. Nothing is held.
    Conflict(Vec<usize>),
    /// An id is being published by another request right now: wait for this, then reserve
    /// again. Nothing is held.
    Wait(watch::Receiver<bool>),
}

/// One of the index's tables: foldhash (seeded per table) is a few instructions for a key's
/// two words, where std's SipHash was a visible share of a request.
type KeyMap<V> = HashMap<EventKey, V, foldhash::fast::RandomState>;

/// How many tables hold the index's ids, a power of two. A hash table grows by moving every
/// entry into one twice its size, and it does so under the index's lock: with one table, the
/// growth at a million ids took a second (the new table's pages zeroed, then every entry moved;
/// measured 2026-12-04), in which no request could publish. Spread over 64 tables, each growth
/// moves a 64th of the ids.
const TABLES: usize = 64;
const _: () = assert!(TABLES.is_power_of_two() && TABLES > 1);

/// The index's ids, spread over [`TABLES`] tables by a hash of their own.
struct Tables {
    /// Picks an id's table (from the top bits of its hash).
    pick: foldhash::fast::RandomState,
    tables: Box<[KeyMap<Entry>]>,
}

impl Default for Tables {
    fn default() -> Self {
        Tables {
            pick: foldhash::fast::RandomState::default(),
            tables: (0..TABLES).map(|_| KeyMap::default()).collect(),
        }
    }
}

impl Tables {
    /// The table `key` belongs in.
    fn of(&self, key: &EventKey) -> usize {
        // The top bits of a hash seeded apart from the tables' own.
        (self.pick.hash_one(key) >> (64 - TABLES.trailing_zeros())) as usize
    }

    fn get(&self, key: &EventKey) -> Option<&Entry> {
        self.tables[self.of(key)].get(key)
    }

    fn get_mut(&mut self, key: &EventKey) -> Option<&mut Entry> {
        let t = self.of(key);
        self.tables[t].get_mut(key)
    }

    fn contains_key(&self, key: &EventKey) -> bool {
        self.tables[self.of(key)].contains_key(key)
    }

    fn insert(&mut self, key: EventKey, entry: Entry) {
        let t = self.of(&key);
        self.tables[t].insert(key, entry);
    }

    fn remove(&mut self, key: &EventKey) {
        let t = self.of(key);
        self.tables[t].remove(key);
    }

    /// How many ids the tables hold (for `Index::len`; eviction counts `order`).
    fn len(&self) -> usize {
        self.tables.iter().map(HashMap::len).sum()
    }
}

#[derive(Default)]
struct Inner {
    map: Tables,
    /// Ids in the order they were placed, with the time each was, for forgetting the oldest.
    /// Set aside whole at start (`max_entries` of 48 bytes, touched only as it fills): growing
    /// it by doubling had copied up to 96 MB under the lock, a pause of 50–100 ms.
    order: VecDeque<(i64, EventKey)>,
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
        let max_entries = max_entries.clamp(1, crate::config::MAX_IDEMPOTENCY_ENTRIES);
        Index {
            inner: Mutex::new(Inner {
                order: VecDeque::with_capacity(max_entries),
                ..Inner::default()
            }),
            window_ms: i64::try_from(window.as_millis()).unwrap_or(i64::MAX),
            max_entries,
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

    /// Forget the oldest published ids until none is older than the window and `room` more
    /// fit under the bound. Every published id has its place in `order`, so the bound holds
    /// for them exactly (the ids in flight come on top, bounded by the requests), and `order`
    /// never outgrows the room set aside for it.
    fn evict(&self, inner: &mut Inner, now: i64, room: usize) {
        while let Some((at, _)) = inner.order.front() {
            let expired = now.saturating_sub(*at) > self.window_ms;
            if !expired && inner.order.len() + room <= self.max_entries {
                break;
            }
            let Some((at, key)) = inner.order.pop_front() else {
                break;
            };
            if let Some(e) = inner.map.get(&key)
                && e.at_ms == at
                && matches!(e.state, State::Done(..))
            {
                inner.map.remove(&key);
            }
        }
    }

    /// Reserve a request's event ids, each with the hash of its content.
    pub fn reserve(&self, ids: &[(EventKey, [u8; 32])]) -> Reservation {
        let mut inner = self.lock();
        let now = now_ms();
        self.evict(&mut inner, now, 0);
        let mut duplicates = Vec::new();
        let mut conflicts = Vec::new();
        let mut wait = None;
        for (i, (key, hash)) in ids.iter().enumerate() {
            let Some(e) = inner.map.get(key) else {
                continue;
            };
            if e.hash != *hash {
                conflicts.push(i);
                continue;
            }
            match &e.state {
                State::Done(place) => duplicates.push((i, place.clone())),
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
        for (i, (key, hash)) in ids.iter().enumerate() {
            if known.next_if_eq(&i).is_some() {
                continue;
            }
            inner.map.insert(
                *key,
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
    pub fn complete(&self, topic: &str, placed: impl IntoIterator<Item = (EventKey, i32, i64)>) {
        let mut inner = self.lock();
        let now = now_ms();
        let topic = inner.topic(topic);
        let mut woken: Option<Arc<watch::Sender<bool>>> = None;
        for (key, partition, offset) in placed {
            let Some(e) = inner.map.get_mut(&key) else {
                continue;
            };
            let done = State::Done(Place {
                topic: topic.clone(),
                partition,
                offset,
            });
            if let State::InFlight(tx) = std::mem::replace(&mut e.state, done) {
                wake_once(&mut woken, tx);
            }
            e.at_ms = now;
            self.evict(&mut inner, now, 1);
            inner.order.push_back((now, key));
        }
    }

    /// The held ids were not published: forget them, and wake whoever waits.
    pub fn release(&self, keys: impl IntoIterator<Item = EventKey>) {
        let mut inner = self.lock();
        let mut woken: Option<Arc<watch::Sender<bool>>> = None;
        for key in keys {
            if let Some(e) = inner.map.get(&key)
                && let State::InFlight(tx) = &e.state
            {
                wake_once(&mut woken, tx.clone());
                inner.map.remove(&key);
            }
        }
    }

    /// Which of `keys` (read from the log) the index does not hold, by their indexes: for a
    /// batch of records, most of them this instance's own and known, under one lock.
    pub fn unknown(&self, keys: &[EventKey]) -> Vec<usize> {
        let inner = self.lock();
        (0..keys.len())
            .filter(|&i| !inner.map.contains_key(&keys[i]))
            .collect()
    }

    /// An event read from the log (written at `at_ms`); the first place of an id wins. `hash`
    /// is computed only for an id the index does not hold yet: most records the replay reads
    /// are this instance's own, already known.
    pub fn record(
        &self,
        hash: impl FnOnce() -> [u8; 32],
        key: EventKey,
        (topic, partition, offset): (&str, i32, i64),
        at_ms: i64,
    ) {
        let mut inner = self.lock();
        let now = now_ms();
        if now.saturating_sub(at_ms) > self.window_ms {
            return;
        }
        if inner.map.contains_key(&key) {
            return;
        }
        let topic = inner.topic(topic);
        self.evict(&mut inner, now, 1);
        inner.order.push_back((at_ms, key));
        inner.map.insert(
            key,
            Entry {
                hash: hash(),
                at_ms,
                state: State::Done(Place {
                    topic,
                    partition,
                    offset,
                }),
            },
        );
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

    /// The key of a made-up UUID numbered `n`.
    fn key(n: u32) -> EventKey {
        EventKey::parse(&format!("{n:08x}-0000-4000-8000-000000000000")).unwrap()
    }

    fn held(r: Reservation) -> (Vec<usize>, Vec<(usize, Place)>) {
        match r {
            Reservation::Held { fresh, duplicates } => (fresh, duplicates),
            Reservation::Conflict(c) => panic!("conflict at {c:?}"),
            Reservation::Wait(_) => panic!("wait"),
        }
    }

    #[test]
    fn an_event_key_is_equal_exactly_when_the_text_is() {
        let id = "6f0c2a5e-1d2b-4c7e-9a51-0e6b1b0f7a43";
        let k = EventKey::parse(id).unwrap();
        assert_eq!(EventKey::parse(id), Some(k));
        // The same UUID written in upper case is another text, so another key.
        let upper = EventKey::parse(&id.to_uppercase()).unwrap();
        assert_ne!(upper, k);
        assert_ne!(
            EventKey::parse("6F0c2a5e-1d2b-4c7e-9a51-0e6b1b0f7a43").unwrap(),
            EventKey::parse("6f0C2a5e-1d2b-4c7e-9a51-0e6b1b0f7a43").unwrap(),
            "which digit is upper case counts"
        );
        // Every digit counts, the last as much as the first.
        assert_ne!(
            EventKey::parse("6f0c2a5e-1d2b-4c7e-9a51-0e6b1b0f7a44"),
            Some(k)
        );
        assert_ne!(
            EventKey::parse("7f0c2a5e-1d2b-4c7e-9a51-0e6b1b0f7a43"),
            Some(k)
        );
        for not_an_id in [
            "",
            "a",
            "6f0c2a5e1d2b4c7e9a510e6b1b0f7a43",
            "6f0c2a5e-1d2b-4c7e-9a51-0e6b1b0f7a4",
            "6f0c2a5e-1d2b-4c7e-9a51-0e6b1b0f7a433",
            "6f0c2a5e-1d2b-4c7e-9a51_0e6b1b0f7a43",
            "6f0c2a5e-1d2b-4c7e-9a51-0e6b1b0f7a4g",
            "6f0c2a5e-1d2b-4c7e-9a51-0e6b1b0f7aé",
        ] {
            assert_eq!(EventKey::parse(not_an_id), None, "{not_an_id:?}");
        }
    }

    #[test]
    fn same_id_same_content_is_a_duplicate_different_content_a_conflict() {
        let (a, b) = (key(1), key(2));
        let idx = Index::new(Duration::from_secs(60), 10);
        assert_eq!(held(idx.reserve(&[(a, [1; 32])])).0, [0]);
        assert!(matches!(idx.reserve(&[(a, [2; 32])]), Reservation::Conflict(c) if c == [0]));
        let Reservation::Wait(mut rx) = idx.reserve(&[(a, [1; 32])]) else {
            panic!("in flight")
        };
        assert!(!*rx.borrow_and_update());
        idx.complete("t", [(a, 3, 7)]);
        assert!(*rx.borrow_and_update(), "the waiter is woken");
        let (fresh, duplicates) = held(idx.reserve(&[(a, [1; 32]), (b, [1; 32])]));
        assert_eq!(fresh, [1]);
        let (i, p) = &duplicates[0];
        assert!(*i == 0 && &*p.topic == "t" && p.partition == 3 && p.offset == 7);
        idx.release([b]);
        assert_eq!(held(idx.reserve(&[(b, [1; 32])])).0, [0]);
    }

    #[test]
    fn a_request_holds_all_its_new_ids_or_none() {
        let (busy, used, x, y) = (key(1), key(2), key(3), key(4));
        let idx = Index::new(Duration::from_secs(60), 10);
        held(idx.reserve(&[(busy, [1; 32])]));
        held(idx.reserve(&[(used, [1; 32])]));
        idx.complete("t", [(used, 0, 1)]);
        // One id in flight elsewhere: nothing of this request is held...
        let Reservation::Wait(mut rx) = idx.reserve(&[(x, [0; 32]), (busy, [1; 32])]) else {
            panic!("wait")
        };
        // ... and one used for other content: nothing either.
        assert!(matches!(
            idx.reserve(&[(y, [0; 32]), (used, [2; 32])]),
            Reservation::Conflict(c) if c == [1]
        ));
        assert_eq!(idx.len(), 2, "neither x nor y was held");
        idx.release([busy]);
        assert!(*rx.borrow_and_update(), "a release wakes the waiter too");
        let (fresh, duplicates) = held(idx.reserve(&[(x, [0; 32]), (busy, [1; 32])]));
        assert!(fresh == [0, 1] && duplicates.is_empty());
    }

    #[test]
    fn the_ids_read_from_the_log_that_are_new_here_are_told_apart() {
        let idx = Index::new(Duration::from_secs(60), 10);
        held(idx.reserve(&[(key(1), [1; 32])]));
        idx.record(|| [2; 32], key(2), ("t", 0, 1), now_ms());
        assert_eq!(idx.unknown(&[key(3), key(1), key(2), key(4)]), [0, 3]);
        assert!(idx.unknown(&[]).is_empty());
    }

    #[test]
    fn ids_are_spread_over_every_table_and_each_is_found_in_its_own() {
        let idx = Index::new(Duration::from_secs(60), 100_000);
        let keys: Vec<EventKey> = (0..5000).map(key).collect();
        for (n, k) in keys.iter().enumerate() {
            idx.record(|| [0; 32], *k, ("t", 0, n as i64), now_ms());
        }
        assert_eq!(idx.len(), 5000);
        {
            let inner = idx.lock();
            let sizes: Vec<usize> = inner.map.tables.iter().map(HashMap::len).collect();
            assert_eq!(sizes.iter().sum::<usize>(), 5000);
            // 5000 ids over 64 tables: about 78 each, none empty or holding most of them.
            assert!(
                sizes.iter().all(|&n| (20..300).contains(&n)),
                "uneven tables: {sizes:?}"
            );
        }
        assert!(idx.unknown(&keys).is_empty(), "every id is found");
        assert_eq!(idx.unknown(&[key(5000), key(1), key(5001)]), [0, 2]);
        // An id recorded twice is one id.
        idx.record(|| [0; 32], key(7), ("t", 0, 1), now_ms());
        assert_eq!(idx.len(), 5000);
        // Held then released: counted while held, gone after.
        held(idx.reserve(&[(key(6000), [0; 32]), (key(6001), [0; 32])]));
        assert_eq!(idx.len(), 5002);
        idx.release([key(6000), key(6001), key(6002)]);
        assert_eq!(idx.len(), 5000);
    }

    #[test]
    fn the_bound_counts_published_ids_and_the_queue_never_grows() {
        let idx = Index::new(Duration::from_secs(60), 3);
        let room = idx.lock().order.capacity();
        assert!(room >= 3);
        // Five ids in flight at once are all held: the bound is on what was published...
        let ids: Vec<_> = (1..=5).map(|n| (key(n), [0; 32])).collect();
        assert_eq!(held(idx.reserve(&ids)).0, [0, 1, 2, 3, 4]);
        assert_eq!(idx.len(), 5);
        // ... and once they are, the oldest two are forgotten as the newest are placed.
        idx.complete("t", (1..=5).map(|n| (key(n), 0, i64::from(n))));
        assert_eq!(idx.len(), 3);
        assert_eq!(idx.unknown(&[key(1), key(2), key(3), key(5)]), [0, 1]);
        for n in 6..=1000 {
            idx.record(|| [0; 32], key(n), ("t", 0, 1), now_ms());
        }
        assert_eq!(idx.len(), 3);
        let inner = idx.lock();
        assert_eq!(inner.order.len(), 3);
        assert_eq!(inner.order.capacity(), room, "the queue was never regrown");
    }

    #[test]
    fn old_and_excess_ids_are_forgotten() {
        let idx = Index::new(Duration::from_secs(60), 3);
        idx.record(|| [0; 32], key(0), ("t", 0, 1), now_ms() - 120_000);
        assert!(idx.is_empty());
        for n in 1..=4 {
            idx.record(|| [0; 32], key(n), ("t", 0, 1), now_ms());
        }
        assert_eq!(idx.len(), 3);
        assert_eq!(
            held(idx.reserve(&[(key(1), [0; 32])])).0,
            [0],
            "the oldest went first"
        );
        assert!(
            held(idx.reserve(&[(key(4), [0; 32])])).0.is_empty(),
            "the newest stayed"
        );
    }
}
