//! The concurrent core: a ring of slots, a state word and block locks.
//!
//! # Layout
//!
//! Events get consecutive sequence numbers. Event `s` lives in slot
//! `s % ring_len`. The ring is cut into blocks of `block` slots (an eighth
//! of the capacity rounded down to a power of two, between 1 and 64);
//! `ring_len = round_up(capacity, block) + block`, one block more than the
//! capacity, so the block being overwritten never holds an event the bus
//! still promises to retain (the newest `capacity`).
//!
//! ```text
//!  state word (one AtomicU64):  tail << 2 | CLOSED | WAITERS
//!    tail     number of events published so far (the next sequence number)
//!    CLOSED   no more publishes; set once, after the last tail increment
//!    WAITERS  some subscriber is parked in the wait registry
//!
//!  block word (one AtomicU64 per block):  generation << 32 | odd << 16 | even
//!    even/odd  subscribers copying out of the block, counted by the parity
//!              of the lap (sequence / ring_len) they read; 16 bits each:
//!              a subscriber counts itself only while it copies (at most
//!              `READ_AHEAD` clones, never across an await), so the count
//!              is bounded by the threads doing that at the same instant
//!    generation  bumped each time the publisher recycles the block; wraps
//! ```
//!
//! # Publishing
//!
//! Publishers serialize on a mutex that subscribers never take. Entering a
//! block at the start of lap `L`, the publisher bumps the block word (an
//! acquire-release read-modify-write) and waits until no subscriber of lap
//! `L - 1` is still copying out of it; those are by definition lagging, and
//! each holds the block only for at most one read-ahead batch of clones.
//! It then replaces the slot's value, increments the tail with release
//! ordering, and drops the overwritten value after unlocking. It wakes
//! parked subscribers only when the tail increment returned `WAITERS`.
//!
//! # Reading
//!
//! A subscriber at sequence `p` increments its lap's counter in `p`'s block
//! (acquire), then loads the state word (acquire). Both block operations
//! are read-modify-writes of the same word, so either the publisher's bump
//! came first and the subscriber's load sees a tail at least a ring ahead
//! (and reports a lag without touching a slot), or the subscriber came
//! first and the publisher waits for it. Everything below the tail and no
//! more than `capacity` behind it is then safe to clone, up to the end of
//! the block. The subscriber releases the counter and moves to the next
//! block for more.
//!
//! # Cutover
//!
//! A cutover closes the bus (under the writer lock, so no publish is in
//! flight) and records a successor whose sequence numbers start at the
//! final tail. Handles forward publishes to the newest bus they know of.
//! Subscribers drain the closed bus, then register on the successor before
//! leaving it. Once a cut-over bus has no subscriber left and nothing can
//! move onto it any more, its values are dropped (`release_abandoned`).

use crate::error::CapacityError;
use crate::loom::{
    backoff, lock, Arc, AtomicU64, AtomicUsize, CachePadded, Mutex, MutexGuard, Ordering,
    UnsafeCell,
};
use crate::stats::{BusObserver, Positions};
use crate::wait::Waiters;

/// Set in the state word once the bus is closed.
pub(crate) const CLOSED: u64 = 0b01;
/// Set in the state word while some subscriber may be parked.
pub(crate) const WAITERS: u64 = 0b10;
/// One published event in the state word.
const TAIL_ONE: u64 = 0b100;

/// One subscriber of an even lap in a block word (`<< 16` for odd laps).
const READER_ONE: u64 = 1;
const READER_MASK: u64 = 0xffff;
/// One recycling of a block in a block word.
const GENERATION_ONE: u64 = 1 << 32;

/// The largest capacity a bus accepts.
pub const MAX_CAPACITY: usize = 1 << 24;

/// The largest block: a subscriber's claim on a block covers at most this
/// many clones.
const MAX_BLOCK: usize = 64;

/// How capacity maps onto slots and blocks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layout {
    pub(crate) capacity: u64,
    block_shift: u32,
    nblocks: u64,
    ring_len: u64,
}

impl Layout {
    pub(crate) fn new(capacity: usize) -> Result<Self, CapacityError> {
        if capacity == 0 {
            return Err(CapacityError::Zero);
        }
        if capacity > MAX_CAPACITY {
            return Err(CapacityError::TooLarge {
                requested: capacity,
                max: MAX_CAPACITY,
            });
        }
        // An eighth of the capacity (as a power of two), so the extra block
        // costs at most a quarter more slots, and small buses stay small.
        let floor_pow2 = 1usize << (usize::BITS - 1 - capacity.leading_zeros());
        let block = (floor_pow2 / 8).clamp(1, MAX_BLOCK);
        let nblocks = capacity.div_ceil(block) + 1;
        Ok(Self {
            capacity: capacity as u64,
            block_shift: block.trailing_zeros(),
            nblocks: nblocks as u64,
            ring_len: (nblocks * block) as u64,
        })
    }

    fn block(&self) -> u64 {
        1 << self.block_shift
    }

    /// The block index, lap and slot index of sequence number `seq`.
    #[inline]
    fn locate(&self, seq: u64) -> (usize, u64, usize) {
        let absolute_block = seq >> self.block_shift;
        let block = absolute_block % self.nblocks;
        let lap = absolute_block / self.nblocks;
        let slot = (block << self.block_shift) | (seq & (self.block() - 1));
        (block as usize, lap, slot as usize)
    }
}

struct Slot<T> {
    value: UnsafeCell<Option<T>>,
}

// SAFETY: a slot's value is written only by the publisher holding the writer
// lock, after it has excluded every subscriber that could be reading that
// slot (see the module docs), and read only through `&T` to clone it, from
// any number of threads at once: hence `T: Sync` on top of `T: Send`.
unsafe impl<T: Send + Sync> Sync for Slot<T> {}
unsafe impl<T: Send> Send for Slot<T> {}

/// What only the publisher holding the writer lock touches.
#[derive(Debug)]
struct Writer {
    tail: u64,
    closed: bool,
    /// Every bus before this one along a chain of cutovers was released,
    /// so no subscriber is left that could still move onto this one.
    upstream_done: bool,
    /// The slots' values were dropped: the bus was cut over and every
    /// subscriber has moved on.
    released: bool,
}

/// The state behind every handle of one bus.
pub(crate) struct Shared<T> {
    state: CachePadded<AtomicU64>,
    layout: Layout,
    /// The first sequence number of this bus (the old bus's tail, after a
    /// cutover).
    base: u64,
    slots: Box<[Slot<T>]>,
    blocks: Box<[CachePadded<AtomicU64>]>,
    writer: Mutex<Writer>,
    pub(crate) waiters: Waiters,
    /// `Bus` and `Publisher` handles; the last one to go closes the bus.
    pub(crate) senders: AtomicUsize,
    pub(crate) positions: Positions,
    /// Shared along a chain of cutovers.
    overflow: Arc<AtomicU64>,
    /// Subscribers of every bus along a chain of cutovers, for the observer.
    attached: Arc<AtomicUsize>,
    /// The bus this one was cut over to; subscribers move there.
    successor: Mutex<Option<Arc<Shared<T>>>>,
    /// The newest bus known along the chain of cutovers; publishes through
    /// this bus's handles go there without walking the whole chain.
    forward: Mutex<Option<Arc<Shared<T>>>>,
    pub(crate) observer: Option<std::sync::Arc<dyn BusObserver>>,
}

/// The result of [`Shared::take`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Take {
    /// This many events were handed over.
    Got(usize),
    /// The subscriber's position was overwritten; it moved this many events
    /// ahead, to the oldest retained one.
    Lagged(u64),
    /// Nothing at the position yet; the state word as it was seen.
    Empty(u64),
}

/// A subscriber's claim on one block, released on drop (also when a clone
/// panics, so a publisher is never left waiting).
struct BlockGuard<'a> {
    word: &'a AtomicU64,
    one: u64,
}

impl Drop for BlockGuard<'_> {
    fn drop(&mut self) {
        self.word.fetch_sub(self.one, Ordering::Release);
    }
}

impl<T> Shared<T> {
    pub(crate) fn new(
        layout: Layout,
        base: u64,
        overflow: Arc<AtomicU64>,
        attached: Arc<AtomicUsize>,
        observer: Option<std::sync::Arc<dyn BusObserver>>,
    ) -> Self {
        let slots = (0..layout.ring_len)
            .map(|_| Slot {
                value: UnsafeCell::new(None),
            })
            .collect();
        let blocks = (0..layout.nblocks)
            .map(|_| CachePadded(AtomicU64::new(0)))
            .collect();
        Self {
            state: CachePadded(AtomicU64::new(base * TAIL_ONE)),
            layout,
            base,
            slots,
            blocks,
            writer: Mutex::new(Writer {
                tail: base,
                closed: false,
                upstream_done: true,
                released: false,
            }),
            waiters: Waiters::new(),
            senders: AtomicUsize::new(1),
            positions: Positions::new(),
            overflow,
            attached,
            successor: Mutex::new(None),
            forward: Mutex::new(None),
            observer,
        }
    }

    pub(crate) fn capacity(&self) -> u64 {
        self.layout.capacity
    }

    /// The state word, for `tail`, `CLOSED` and `WAITERS`.
    pub(crate) fn state(&self) -> u64 {
        self.state.load(Ordering::Acquire)
    }

    pub(crate) fn state_word(&self) -> &AtomicU64 {
        &self.state
    }

    pub(crate) fn overflow_total(&self) -> u64 {
        self.overflow.load(Ordering::Relaxed)
    }

    pub(crate) fn successor(&self) -> Option<Arc<Shared<T>>> {
        lock(&self.successor).clone()
    }

    /// The last bus along the chain of cutovers starting at `this`,
    /// starting from the newest one `this` knows of.
    pub(crate) fn newest(this: &Arc<Self>) -> Arc<Self> {
        let Some(mut newest) = this.forward() else {
            return this.clone();
        };
        while let Some(next) = newest.successor() {
            newest = next;
        }
        this.set_forward(&newest);
        newest
    }

    /// Counts a new subscriber. The observer hears the count across
    /// cutovers, which moving from one bus to the next does not change.
    pub(crate) fn subscriber_joined(&self) {
        let now = self.attached.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(observer) = &self.observer {
            observer.subscribers_changed(now);
        }
    }

    /// Counts a subscriber gone.
    pub(crate) fn subscriber_left(&self) {
        let now = self.attached.fetch_sub(1, Ordering::Relaxed) - 1;
        if let Some(observer) = &self.observer {
            observer.subscribers_changed(now);
        }
    }

    /// Publishes `value`, or hands it back if the bus is closed.
    pub(crate) fn publish(&self, value: T) -> Result<u64, T> {
        let mut writer = lock(&self.writer);
        if writer.closed {
            return Err(value);
        }
        let seq = writer.tail;
        let (block, lap, slot) = self.layout.locate(seq);
        if seq & (self.layout.block() - 1) == 0 && seq != self.base {
            self.recycle(block, lap);
        }
        // SAFETY: we hold the writer lock, the only place slots are written,
        // and `recycle` (or this bus starting mid-block, with nothing older
        // in it) guarantees no subscriber is copying this slot: subscribers
        // read only below the tail, which is `seq`.
        let old = self.slots[slot]
            .value
            .with_mut(|value_ptr| unsafe { (*value_ptr).replace(value) });
        writer.tail = seq + 1;
        let prev = self.state.fetch_add(TAIL_ONE, Ordering::Release);
        drop(writer);
        if prev & WAITERS != 0 {
            self.waiters.wake_all(&self.state);
        }
        drop(old);
        Ok(seq)
    }

    /// Waits until no subscriber of the lap before `lap` is copying out of
    /// `block`, which the publisher is about to overwrite.
    fn recycle(&self, block: usize, lap: u64) {
        let word = &self.blocks[block];
        let shift = if lap & 1 == 0 { 16 } else { 0 };
        let prev = word.fetch_add(GENERATION_ONE, Ordering::AcqRel);
        if (prev >> shift) & READER_MASK == 0 {
            return;
        }
        let mut step = 0;
        while (word.load(Ordering::Acquire) >> shift) & READER_MASK != 0 {
            backoff(&mut step);
        }
    }

    /// Closes the bus. Returns `false` if it was already closed.
    pub(crate) fn close(&self) -> bool {
        let writer = lock(&self.writer);
        if writer.closed {
            return false;
        }
        self.close_locked(writer, None);
        if let Some(observer) = &self.observer {
            observer.closed();
        }
        true
    }

    /// Closes the bus and makes a new one at `layout` that takes over from
    /// it: publishes are forwarded there and subscribers move there once
    /// they have read everything this bus holds. The new bus's sequence
    /// numbers start at this bus's tail. `None` if this bus is already
    /// closed.
    pub(crate) fn cutover(&self, layout: Layout) -> Option<Arc<Shared<T>>> {
        // Allocated before taking the lock, so publishers do not wait for it.
        let mut next = Shared::new(
            layout,
            0,
            self.overflow.clone(),
            self.attached.clone(),
            self.observer.clone(),
        );
        let writer = lock(&self.writer);
        if writer.closed {
            return None;
        }
        next.rebase(writer.tail);
        let next = Arc::new(next);
        self.close_locked(writer, Some(next.clone()));
        self.release_abandoned();
        Some(next)
    }

    /// Drops the retained values of cut-over buses, from this one on along
    /// the chain, that nobody can read any more, so old handles kept around
    /// do not keep events alive.
    ///
    /// A cut-over bus is released once no subscriber is registered on it
    /// (checked under the registry's lock) and every bus before it was
    /// released (so no subscriber can move onto it any more). That is safe:
    /// a subscriber reads only while registered; one moving across a
    /// cutover registers on the new bus before it leaves the old one; and
    /// one that registers on a released bus (a late `subscribe` through an
    /// old handle) starts at its final tail, where there is nothing to read.
    pub(crate) fn release_abandoned(&self) {
        if !self.try_release() {
            return;
        }
        let mut next = self.successor();
        while let Some(bus) = next {
            lock(&bus.writer).upstream_done = true;
            if !bus.try_release() {
                break;
            }
            next = bus.successor();
        }
    }

    fn try_release(&self) -> bool {
        if lock(&self.successor).is_none() {
            return false;
        }
        self.positions
            .if_empty(|| {
                let mut writer = lock(&self.writer);
                if !writer.upstream_done {
                    return false;
                }
                if !writer.released {
                    writer.released = true;
                    for slot in self.slots.iter() {
                        // SAFETY: see above; publishers of a closed bus
                        // return before touching a slot, and we hold the
                        // writer lock.
                        slot.value
                            .with_mut(|value_ptr| unsafe { *value_ptr = None });
                    }
                }
                true
            })
            .unwrap_or(false)
    }

    /// Whether this bus's values were released.
    pub(crate) fn is_released(&self) -> bool {
        lock(&self.writer).released
    }

    /// Where publishes through a closed bus's handles go: the newest bus
    /// seen so far along the chain.
    pub(crate) fn forward(&self) -> Option<Arc<Shared<T>>> {
        lock(&self.forward).clone()
    }

    /// Remembers `newest` as where to forward publishes.
    pub(crate) fn set_forward(&self, newest: &Arc<Shared<T>>) {
        let mut forward = lock(&self.forward);
        if !forward.as_ref().is_some_and(|f| Arc::ptr_eq(f, newest)) {
            *forward = Some(newest.clone());
        }
    }

    fn close_locked(&self, mut writer: MutexGuard<'_, Writer>, successor: Option<Arc<Shared<T>>>) {
        // Set before CLOSED is published: a subscriber that sees CLOSED
        // (acquire) sees the successor.
        lock(&self.forward).clone_from(&successor);
        *lock(&self.successor) = successor;
        writer.closed = true;
        let prev = self.state.fetch_or(CLOSED, Ordering::Release);
        drop(writer);
        if prev & WAITERS != 0 {
            self.waiters.wake_all(&self.state);
        }
    }

    /// Moves a bus nobody else can see yet to start at sequence `base`.
    fn rebase(&mut self, base: u64) {
        self.base = base;
        self.state = CachePadded(AtomicU64::new(base * TAIL_ONE));
        self.writer = Mutex::new(Writer {
            tail: base,
            closed: false,
            upstream_done: false,
            released: false,
        });
    }

    /// Where a new subscriber starts: the tail.
    pub(crate) fn tail(&self) -> u64 {
        self.state() / TAIL_ONE
    }

    /// The tail in a state word.
    pub(crate) fn tail_of(&self, state: u64) -> u64 {
        state / TAIL_ONE
    }

    /// Sequence number of the oldest event this bus still retains, given a
    /// state word.
    pub(crate) fn oldest(&self, state: u64) -> u64 {
        (state / TAIL_ONE)
            .saturating_sub(self.layout.capacity)
            .max(self.base)
    }
}

impl<T: Clone> Shared<T> {
    /// Hands the events from `*pos` on to `push`, at most `max` of them,
    /// advancing `*pos`. Reports a lag (moving `*pos` to the oldest retained
    /// event) only when it has handed nothing over in this call.
    pub(crate) fn take(&self, pos: &mut u64, max: usize, mut push: impl FnMut(T)) -> Take {
        let mut got = 0;
        while got < max {
            let seq = *pos;
            let (block, lap, mut slot) = self.layout.locate(seq);
            let one = READER_ONE << ((lap & 1) * 16);
            let word = &self.blocks[block];
            word.fetch_add(one, Ordering::Acquire);
            let guard = BlockGuard { word, one };
            let state = self.state.load(Ordering::Acquire);
            let tail = state / TAIL_ONE;
            if seq >= tail {
                drop(guard);
                return if got > 0 {
                    Take::Got(got)
                } else {
                    Take::Empty(state)
                };
            }
            let oldest = self.oldest(state);
            if seq < oldest {
                drop(guard);
                if got > 0 {
                    return Take::Got(got);
                }
                let skipped = oldest - seq;
                *pos = oldest;
                self.overflow.fetch_add(skipped, Ordering::Relaxed);
                if let Some(observer) = &self.observer {
                    observer.lagged(skipped);
                }
                return Take::Lagged(skipped);
            }
            let block_end = ((seq >> self.layout.block_shift) + 1) << self.layout.block_shift;
            let end = tail.min(block_end).min(seq + (max - got) as u64);
            while *pos < end {
                // SAFETY: `*pos` is below the tail (so its value was written
                // before the tail increment we acquired) and at most
                // `capacity` behind it, and our claim on the block keeps the
                // publisher from recycling the block until we release it.
                let value = self.slots[slot]
                    .value
                    .with(|value_ptr| unsafe { (*value_ptr).clone() });
                match value {
                    Some(value) => push(value),
                    None => unreachable!("a published slot holds its event"),
                }
                *pos += 1;
                slot += 1;
                got += 1;
            }
            drop(guard);
            if end == tail {
                break;
            }
        }
        Take::Got(got)
    }
}
