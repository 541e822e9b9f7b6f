//! Idempotent publish: the duplicate window.
//!
//! Each stream remembers, for a while, the `idempotency_key` of every event
//! it stored, with the id it stored it under. An append that asks for it
//! ([`AppendOptions::dedup`](crate::AppendOptions::dedup), which a
//! producer's publish sets) stores no event whose key the stream
//! remembers: the event is answered with the original's id instead, and
//! so is a repeat of a key earlier in the same batch. A relay that sends a
//! batch twice (a lost acknowledgement, a retry) therefore stores it once.
//! NATS JetStream's duplicate window is the model, and its default of two
//! minutes is ours.
//!
//! # What is remembered, and for how long
//! - A key is remembered from the append that first stored it (the first
//!   stays: busbar's own copies of an event, which store every event they
//!   are given, do not replace it) for [`Dedup::window`], measured from
//!   when the store received it.
//! - At most [`Dedup::max_keys`] keys per stream: past it the oldest are
//!   forgotten early and counted in `busbar_dedup_evicted_total{stream}`.
//!   A repeat of a forgotten key is stored again. Repeats answered with an
//!   earlier id are counted in `busbar_dedup_hits_total{stream}`.
//! - Deleting a stream forgets its keys. Trimming or deleting events does
//!   not: a repeat within the window is still answered with the id of the
//!   event it repeats, whether or not that event is still held.
//!
//! # Exact under concurrency
//! The window is consulted and updated where ids are assigned: on the
//! embedded store's writer thread and under a memory stream's lock. Two
//! appends racing with the same key store one event, and the other gets
//! its id. A store that fails an append (or the commit it was part of)
//! remembers none of its keys.
//!
//! # Memory
//! Keys are held as 128-bit hashes under a secret drawn when the store
//! opens (SipHash-1-3, twice), so a remembered key costs the same whatever
//! its length: 65 bytes in the map and the queue, plus their spare room
//! (both grow by doubling), about 8.5 MB for a stream at the default bound
//! of 100,000 keys. Only streams that receive keyed events hold a window,
//! and one whose keys all expired gives its memory back at its next
//! append. Two keys with the same hash would count as one: with 100,000
//! keys the chance is below 10^-28, and a producer who does not know the
//! secret cannot aim for it.
//!
//! # Restarts
//! The embedded store rebuilds a stream's window from the newest events of
//! its log before the stream's first keyed append after an open (or after
//! it recovered the stream from a failed write): those received within the
//! window, read newest first, until it holds `max_keys` keys. A retry that
//! comes after a restart is still answered with the original id. Events
//! trimmed or deleted before the restart are not read back, so their keys
//! are forgotten. The memory store keeps nothing across a restart, its keys
//! included.
//!
//! # Cost
//! An append whose batch carries no key pays two branches: no hashing, no
//! lock, no allocation. A keyed event costs two SipHash passes over its key
//! and a map lookup, and a new key a map and a queue insertion
//! (BENCHMARKS.md, "Idempotent publish").

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::Arc;
use std::time::Duration;

use busbar_event::{Event, EventBatch, EventId, StreamName};

use crate::{Appended, StoreMetrics};

/// The duplicate window of a store: how long, and how many keys per
/// stream, it remembers.
///
/// ```
/// use busbar_store::Dedup;
/// let d = Dedup::default();
/// assert_eq!(d.window.as_secs(), 120);
/// assert_eq!(d.max_keys, 100_000);
/// assert!(Dedup::OFF.is_off());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dedup {
    /// How long a key is remembered after the event that carried it was
    /// stored. Zero turns idempotent publish off.
    pub window: Duration,
    /// Keys remembered per stream at most; past it the oldest are
    /// forgotten early (and counted). Zero turns idempotent publish off.
    pub max_keys: usize,
}

impl Default for Dedup {
    /// Two minutes (NATS JetStream's default), 100,000 keys per stream.
    fn default() -> Self {
        Dedup {
            window: Duration::from_secs(120),
            max_keys: 100_000,
        }
    }
}

impl Dedup {
    /// Nothing remembered: every event is stored.
    pub const OFF: Dedup = Dedup {
        window: Duration::ZERO,
        max_keys: 0,
    };

    /// Whether idempotent publish is off.
    pub fn is_off(&self) -> bool {
        self.window.is_zero() || self.max_keys == 0
    }

    fn window_ms(&self) -> u64 {
        u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX)
    }
}

/// A hasher for keys that already are uniform hashes.
#[derive(Debug, Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

/// One stream's remembered keys.
#[derive(Debug, Default)]
pub(crate) struct Window {
    ids: HashMap<u128, EventId, BuildHasherDefault<Prehashed>>,
    /// The remembered keys, oldest first, with when each was stored (ms).
    order: VecDeque<(u128, u64)>,
}

impl Window {
    /// Keys remembered now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.order.len()
    }

    /// Forgets keys stored `window_ms` or longer before `now`. One branch
    /// when nothing is remembered.
    fn expire(&mut self, window_ms: u64, now: u64) {
        while let Some(&(hash, at)) = self.order.front() {
            if at.saturating_add(window_ms) > now {
                break;
            }
            self.order.pop_front();
            self.ids.remove(&hash);
        }
        if self.order.is_empty() && self.ids.capacity() > 0 {
            // A stream whose keys all expired gives its memory back.
            *self = Window::default();
        }
    }

    /// Forgets what expired by `now` on an append without keys, so a
    /// stream that stops sending keys gives its memory back. One branch
    /// when nothing is remembered.
    pub(crate) fn forget_expired(&mut self, window_ms: u64, now: u64) {
        if !self.order.is_empty() {
            self.expire(window_ms, now);
        }
    }

    /// Remembers `hash` as `id` unless it is remembered already; returns
    /// how many older keys this pushed out.
    fn remember(&mut self, hash: u128, id: EventId, at: u64, max_keys: usize) -> usize {
        match self.ids.entry(hash) {
            Entry::Occupied(_) => return 0,
            Entry::Vacant(v) => {
                v.insert(id);
            }
        }
        self.order.push_back((hash, at));
        let mut evicted = 0;
        while self.order.len() > max_keys {
            if let Some((old, _)) = self.order.pop_front() {
                self.ids.remove(&old);
                evicted += 1;
            }
        }
        evicted
    }
}

/// What happens to one keyed event of a batch.
#[derive(Debug, Clone, Copy)]
enum Fate {
    /// Stored, and its key remembered.
    New,
    /// Stored; its key was remembered already (an append without dedup).
    Known,
    /// Not stored: answered with the remembered id.
    Repeat(EventId),
    /// Not stored: answered with the id of the batch's event at this index.
    RepeatOf(usize),
}

/// What [`Deduper::plan`] decided for a batch, for [`Deduper::finish`].
#[derive(Debug)]
pub(crate) struct Plan {
    /// Events in the batch as given.
    len: usize,
    /// Every keyed event: its index, its key's hash and its fate.
    keyed: Vec<(usize, u128, Fate)>,
    /// Indexes of the events not stored, ascending.
    duplicates: Vec<usize>,
}

/// A store's duplicate window: its settings, its secret and its counters.
/// Each stream's [`Window`] is kept beside the stream, under the same
/// exclusion as its id clock.
#[derive(Debug, Clone)]
pub(crate) struct Deduper {
    config: Dedup,
    keys: (RandomState, RandomState),
    metrics: Arc<StoreMetrics>,
}

impl Deduper {
    pub(crate) fn new(config: Dedup, metrics: Arc<StoreMetrics>) -> Self {
        Deduper {
            config,
            keys: (RandomState::new(), RandomState::new()),
            metrics,
        }
    }

    /// Whether an append of `batch` has anything to do with the window:
    /// false for every batch without keys, and when the window is off.
    pub(crate) fn applies(&self, batch: &EventBatch) -> bool {
        batch.has_idempotency_keys() && !self.config.is_off()
    }

    /// How long a key is remembered, in ms.
    pub(crate) fn window_ms(&self) -> u64 {
        self.config.window_ms()
    }

    fn hash(&self, key: &str) -> u128 {
        (u128::from(self.keys.0.hash_one(key)) << 64) | u128::from(self.keys.1.hash_one(key))
    }

    /// Decides the fate of every keyed event of `batch` against `window`
    /// (after forgetting what expired by `now`), and drops the repeats from
    /// the batch when `dedup`. Changes nothing in the window: what is
    /// stored is remembered by [`Deduper::finish`], once the store has it.
    pub(crate) fn plan(
        &self,
        window: &mut Window,
        batch: &mut EventBatch,
        dedup: bool,
        now: u64,
    ) -> Plan {
        window.expire(self.config.window_ms(), now);
        let mut in_batch: HashMap<u128, usize, BuildHasherDefault<Prehashed>> = HashMap::default();
        let mut keyed = Vec::new();
        let mut duplicates = Vec::new();
        for (i, key) in batch.idempotency_keys().enumerate() {
            let Some(key) = key else { continue };
            let hash = self.hash(key);
            let earlier = match in_batch.entry(hash) {
                Entry::Occupied(first) => Some(*first.get()),
                Entry::Vacant(v) => {
                    v.insert(i);
                    None
                }
            };
            let fate = match (window.ids.get(&hash), earlier) {
                (Some(&id), _) if dedup => Fate::Repeat(id),
                (None, Some(first)) if dedup => Fate::RepeatOf(first),
                (Some(_), _) | (None, Some(_)) => Fate::Known,
                (None, None) => Fate::New,
            };
            if matches!(fate, Fate::Repeat(_) | Fate::RepeatOf(_)) {
                duplicates.push(i);
            }
            keyed.push((i, hash, fate));
        }
        if !duplicates.is_empty() {
            batch.retain(|i| duplicates.binary_search(&i).is_err());
        }
        Plan {
            len: batch.len() + duplicates.len(),
            keyed,
            duplicates,
        }
    }

    /// Answers every event of a planned batch, given the ids the store
    /// assigned to the events it kept, and remembers the new keys (stored
    /// at `now`), forgetting the oldest past the bound.
    pub(crate) fn finish(
        &self,
        stream: &StreamName,
        window: &mut Window,
        plan: Plan,
        stored: Vec<EventId>,
        now: u64,
    ) -> Appended {
        let mut ids = Vec::with_capacity(plan.len);
        let mut stored = stored.into_iter();
        let mut keyed = plan.keyed.iter().peekable();
        let mut evicted = 0;
        for i in 0..plan.len {
            let fate = keyed.next_if(|(at, ..)| *at == i);
            let id = match fate {
                Some((_, _, Fate::Repeat(id))) => *id,
                Some((_, _, Fate::RepeatOf(first))) => ids[*first],
                _ => stored.next().unwrap_or_default(),
            };
            if let Some((_, hash, Fate::New)) = fate {
                evicted += window.remember(*hash, id, now, self.config.max_keys);
            }
            ids.push(id);
        }
        if evicted > 0 {
            self.metrics
                .dedup_evicted
                .get([stream.as_str()])
                .add(evicted as u64);
        }
        if !plan.duplicates.is_empty() {
            self.metrics
                .dedup_hits
                .get([stream.as_str()])
                .add(plan.duplicates.len() as u64);
        }
        Appended {
            ids,
            duplicates: plan.duplicates,
        }
    }

    /// A window rebuilt from a stream's stored events, given newest first:
    /// the keys of those received within the window of `now`, until it
    /// holds `max_keys`. Stops taking events at the window's edge.
    pub(crate) fn rebuild(
        &self,
        newest_first: impl IntoIterator<Item = Event>,
        now: u64,
    ) -> Window {
        let mut window = Window::default();
        if self.config.is_off() {
            return window;
        }
        let window_ms = self.config.window_ms();
        let mut found = Vec::new();
        for event in newest_first {
            let at = event.received_ms();
            if at.saturating_add(window_ms) <= now || found.len() >= self.config.max_keys {
                break;
            }
            if let Some(key) = event.idempotency_key() {
                found.push((self.hash(key), event.id(), at));
            }
        }
        // Oldest first, so the first event with a key is the one kept.
        for (hash, id, at) in found.into_iter().rev() {
            window.remember(hash, id, at, self.config.max_keys);
        }
        window
    }
}

#[cfg(test)]
mod tests {
    use busbar_event::NewEvent;

    use super::*;

    fn batch(keys: &[Option<&str>]) -> EventBatch {
        let mut b = EventBatch::new();
        for key in keys {
            b.push(&NewEvent {
                idempotency_key: *key,
                ..NewEvent::new("t", b"{}")
            })
            .unwrap();
        }
        b
    }

    /// `e` as if received at `ms`.
    fn with_received(e: &Event, ms: u64) -> Event {
        let mut body = e.body().to_vec();
        body[32..40].copy_from_slice(&ms.to_le_bytes());
        Event::from_body(body.into()).unwrap()
    }

    fn ids(n: u64) -> Vec<EventId> {
        (1..=n).map(|s| EventId::new(1, s)).collect()
    }

    #[test]
    fn repeats_in_one_batch_get_the_first_id() {
        let d = Deduper::new(Dedup::default(), Arc::default());
        let s = StreamName::new("s").unwrap();
        let mut w = Window::default();
        let mut b = batch(&[Some("a"), None, Some("a"), Some("b")]);
        let plan = d.plan(&mut w, &mut b, true, 10);
        assert_eq!(b.len(), 3);
        let got = d.finish(&s, &mut w, plan, ids(3), 10);
        assert_eq!(got.ids, vec![ids(3)[0], ids(3)[1], ids(3)[0], ids(3)[2]]);
        assert_eq!(got.duplicates, vec![2]);
        assert_eq!(w.len(), 2);
    }

    #[test]
    fn without_dedup_every_event_is_stored_and_the_first_is_kept() {
        let d = Deduper::new(Dedup::default(), Arc::default());
        let s = StreamName::new("s").unwrap();
        let mut w = Window::default();
        let mut b = batch(&[Some("a"), Some("a")]);
        let plan = d.plan(&mut w, &mut b, false, 10);
        let got = d.finish(&s, &mut w, plan, ids(2), 10);
        assert_eq!(got.ids, ids(2));
        assert!(got.duplicates.is_empty());
        assert_eq!(w.ids.get(&d.hash("a")), Some(&ids(2)[0]));
    }

    #[test]
    fn keys_expire_and_the_bound_evicts_the_oldest() {
        let config = Dedup {
            window: Duration::from_millis(100),
            max_keys: 2,
        };
        let metrics = Arc::new(StoreMetrics::default());
        let d = Deduper::new(config, metrics.clone());
        let s = StreamName::new("s").unwrap();
        let mut w = Window::default();
        let mut b = batch(&[Some("a"), Some("b"), Some("c")]);
        let plan = d.plan(&mut w, &mut b, true, 0);
        d.finish(&s, &mut w, plan, ids(3), 0);
        assert_eq!(w.len(), 2);
        assert_eq!(metrics.dedup_evicted.get(["s"]).get(), 1);
        w.expire(100, 99);
        assert_eq!(w.len(), 2);
        w.expire(100, 100);
        assert_eq!(w.len(), 0);
        assert_eq!(w.ids.capacity(), 0);
    }

    #[test]
    fn a_rebuilt_window_stops_at_its_edge_and_bound() {
        let config = Dedup {
            window: Duration::from_millis(100),
            max_keys: 2,
        };
        let d = Deduper::new(config, Arc::default());
        // Newest first: "c" at 150, a keyless event at 130, "b" at 120,
        // "a" at 10 (outside the window at 200).
        let mut b = EventBatch::new();
        for key in [Some("c"), None, Some("b"), Some("a")] {
            b.push(&NewEvent {
                idempotency_key: key,
                ..NewEvent::new("t", b"{}")
            })
            .unwrap();
        }
        let mut seq = 10;
        let mut times = [150, 130, 120, 10].into_iter();
        b.assign(0, |_| {
            seq -= 1;
            EventId::new(0, seq)
        });
        let events: Vec<Event> = busbar_event::BatchIter::new(b.seal())
            .map(|e| with_received(&e, times.next().unwrap_or_default()))
            .collect();
        let w = d.rebuild(events.clone(), 200);
        assert_eq!(w.len(), 2);
        let w = d.rebuild(events[1..].iter().cloned(), 200);
        assert_eq!(w.len(), 1);
        assert_eq!(w.ids.get(&d.hash("b")), Some(&events[2].id()));
    }
}
