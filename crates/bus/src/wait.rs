//! The registry of subscribers parked on an empty bus.
//!
//! Publishers never lock it on their fast path: the bus's state word carries
//! a `WAITERS` bit that a subscriber sets (under this registry's lock, with a
//! compare-and-swap that also checks nothing was published meanwhile) before
//! it parks. A publisher's tail increment returns the previous state word;
//! only when that has the bit set does it lock the registry, take every
//! registered waker and clear the bit. So a burst of publishes wakes each
//! parked subscriber once, and a subscriber woken once drains everything
//! published since in one go.

use std::task::Waker;

use crate::loom::{lock, AtomicU64, Mutex, Ordering};
use crate::ring::{CLOSED, WAITERS};

/// Where a subscriber's waker sits in the registry, valid for one
/// generation (the registry's generation advances every time it is drained).
#[derive(Debug, Clone, Copy)]
pub(crate) struct WaitSlot {
    generation: u64,
    index: usize,
}

#[derive(Debug)]
struct Registry {
    entries: Vec<Option<Waker>>,
    /// Entries of this generation whose subscribers went away; reused so a
    /// bus with churning subscribers and no publishes stays bounded.
    free: Vec<usize>,
    /// An empty vector with capacity, swapped in when draining so draining
    /// does not allocate.
    spare: Vec<Option<Waker>>,
}

#[derive(Debug)]
pub(crate) struct Waiters {
    registry: Mutex<Registry>,
    /// Changed only under the registry lock; read without it to skip the
    /// lock when a subscriber's slot was already drained.
    generation: AtomicU64,
}

impl Waiters {
    pub(crate) fn new() -> Self {
        Self {
            registry: Mutex::new(Registry {
                entries: Vec::new(),
                free: Vec::new(),
                spare: Vec::new(),
            }),
            generation: AtomicU64::new(0),
        }
    }

    /// Registers `waker` to be woken by the next publish or close, provided
    /// the state word still equals `seen` apart from the `WAITERS` bit.
    /// Returns `false` (registering nothing) if it changed: the caller must
    /// look at the bus again instead of parking.
    pub(crate) fn register(
        &self,
        state: &AtomicU64,
        seen: u64,
        waker: &Waker,
        slot: &mut Option<WaitSlot>,
    ) -> bool {
        let mut registry = lock(&self.registry);
        let mut current = state.load(Ordering::Acquire);
        loop {
            if current & !WAITERS != seen & !WAITERS {
                return false;
            }
            if current & WAITERS != 0 {
                // Set by another subscriber; it cannot be cleared while we
                // hold the lock, so the next publisher will drain us too.
                break;
            }
            match state.compare_exchange_weak(
                current,
                current | WAITERS,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }
        debug_assert_eq!(current & CLOSED, 0, "a closed bus is never parked on");
        let generation = self.generation.load(Ordering::Relaxed);
        match *slot {
            Some(WaitSlot {
                generation: g,
                index,
            }) if g == generation => {
                let entry = &mut registry.entries[index];
                if !entry.as_ref().is_some_and(|w| w.will_wake(waker)) {
                    *entry = Some(waker.clone());
                }
            }
            _ => {
                let index = match registry.free.pop() {
                    Some(index) => {
                        registry.entries[index] = Some(waker.clone());
                        index
                    }
                    None => {
                        registry.entries.push(Some(waker.clone()));
                        registry.entries.len() - 1
                    }
                };
                *slot = Some(WaitSlot { generation, index });
            }
        }
        true
    }

    /// Withdraws a registration (a dropped or finished receive). Inlined
    /// check: this runs at the end of every receive, nearly always with
    /// nothing registered.
    #[inline]
    pub(crate) fn cancel(&self, slot: &mut Option<WaitSlot>) {
        if let Some(registered) = slot.take() {
            self.withdraw(registered);
        }
    }

    fn withdraw(&self, WaitSlot { generation, index }: WaitSlot) {
        if self.generation.load(Ordering::Acquire) != generation {
            // Already drained and woken: nothing of ours is left.
            return;
        }
        let mut registry = lock(&self.registry);
        if self.generation.load(Ordering::Relaxed) == generation {
            registry.entries[index] = None;
            registry.free.push(index);
        }
    }

    /// Wakes every registered subscriber and clears the `WAITERS` bit. The
    /// wakers run after the lock is released, so a waker that publishes on
    /// this bus cannot deadlock.
    pub(crate) fn wake_all(&self, state: &AtomicU64) {
        let mut batch = {
            let mut registry = lock(&self.registry);
            let spare = std::mem::take(&mut registry.spare);
            let batch = std::mem::replace(&mut registry.entries, spare);
            registry.free.clear();
            self.generation.fetch_add(1, Ordering::Release);
            state.fetch_and(!WAITERS, Ordering::Relaxed);
            batch
        };
        for waker in batch.drain(..).flatten() {
            waker.wake();
        }
        let mut registry = lock(&self.registry);
        if registry.spare.capacity() < batch.capacity() {
            registry.spare = batch;
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::task::Waker;

    /// Subscribers that park and go away, with nothing published to drain
    /// the registry, reuse its entries instead of growing it.
    #[test]
    fn churning_parked_subscribers_keep_the_registry_bounded() {
        let waiters = Waiters::new();
        let state = AtomicU64::new(0);
        for _ in 0..1000 {
            let mut slots: Vec<Option<WaitSlot>> = vec![None; 8];
            for slot in &mut slots {
                assert!(waiters.register(&state, 0, Waker::noop(), slot));
            }
            for slot in &mut slots {
                waiters.cancel(slot);
            }
        }
        assert_eq!(lock(&waiters.registry).entries.len(), 8);
        // Registering again in the same generation replaces, not appends.
        let mut slot = None;
        for _ in 0..10 {
            assert!(waiters.register(&state, 0, Waker::noop(), &mut slot));
        }
        assert_eq!(lock(&waiters.registry).entries.len(), 8);
        // A publish (state changed) refuses to park.
        assert!(!waiters.register(&state, 4, Waker::noop(), &mut slot));
        waiters.wake_all(&state);
        assert_eq!(state.load(Ordering::Relaxed) & WAITERS, 0);
        assert!(lock(&waiters.registry).entries.is_empty());
    }
}
