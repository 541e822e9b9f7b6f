//! Counters a host exports as metrics, and the hooks it can observe.
//!
//! The bus depends on no metrics library. A host reads [`BusStats`] when it
//! is scraped (`bus.stats()` takes one short lock to find the slowest
//! subscriber, nothing per event), and may install a [`BusObserver`] to hear
//! about lag and subscriber churn as it happens. The runbook's metrics map
//! onto the snapshot as:
//!
//! | metric | field |
//! |---|---|
//! | `bus_published_total` | [`BusStats::published_total`] |
//! | `bus_overflow_dropped_total` | [`BusStats::overflow_dropped_total`] |
//! | `bus_queue_depth` | [`BusStats::queue_depth`] |
//! | `bus_subscribers` | [`BusStats::subscribers`] |

use crate::loom::{lock, Arc, AtomicU64, CachePadded, Mutex, Ordering};

/// A snapshot of a bus's counters, from [`Bus::stats`](crate::Bus::stats).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BusStats {
    /// Events published, whether or not anyone was subscribed. Sequence
    /// numbers are shared across a [cutover](crate#cutover), so on the new
    /// bus this keeps counting from where the old one stopped: the counter
    /// does not reset when a host swaps buses.
    pub published_total: u64,
    /// Events that lagging subscribers skipped, summed over subscribers:
    /// each `Err(RecvError::Lagged(n))` handed out adds `n`. Shared by the
    /// buses of a cutover, like `published_total`.
    pub overflow_dropped_total: u64,
    /// The backlog of the slowest subscriber: the largest, over this bus's
    /// current subscribers, of `published_total` minus the sequence number
    /// the subscriber will take from the bus next, capped at `capacity`
    /// (events past that are no longer retained: they count as overflow
    /// when the subscriber gets to them). Events a subscriber has already
    /// moved into its read-ahead buffer (at most
    /// [`READ_AHEAD`](crate::READ_AHEAD)) count as taken. `0` with no
    /// subscribers.
    pub queue_depth: u64,
    /// Subscribers currently attached to this bus.
    pub subscribers: usize,
    /// The bus's capacity.
    pub capacity: usize,
    /// Whether the bus is closed (or was cut over to a new bus).
    pub closed: bool,
}

/// Hooks a host implements to hear about what the bus does, typically to
/// feed its own metrics. Every method has an empty default.
///
/// The bus calls these outside its locks, from the thread doing the work,
/// and never once per event: `lagged` once per `Lagged` error,
/// `subscribers_changed` once per subscribe or unsubscribe. Keep them cheap
/// (an atomic add, a gauge set); do not publish on or subscribe to the same
/// bus from inside them.
///
/// ```
/// use std::sync::{atomic::{AtomicU64, Ordering}, Arc};
/// use busbar_bus::{Bus, BusObserver};
///
/// #[derive(Default)]
/// struct Overflow(AtomicU64);
///
/// impl BusObserver for Overflow {
///     fn lagged(&self, skipped: u64) {
///         self.0.fetch_add(skipped, Ordering::Relaxed);
///     }
/// }
///
/// let overflow = Arc::new(Overflow::default());
/// let bus = Bus::<u64>::builder(2).observer(overflow.clone()).build()?;
/// let mut sub = bus.subscribe();
/// for i in 0..5 {
///     bus.publish(i).unwrap();
/// }
/// assert!(sub.try_recv().is_err()); // Lagged(3)
/// assert_eq!(overflow.0.load(Ordering::Relaxed), 3);
/// # Ok::<(), busbar_bus::CapacityError>(())
/// ```
pub trait BusObserver: Send + Sync + 'static {
    /// A subscriber was told it missed `skipped` events.
    fn lagged(&self, skipped: u64) {
        let _ = skipped;
    }

    /// The number of subscribers attached to the bus is now `subscribers`.
    /// The buses of a [cutover](crate#cutover) count together here: a
    /// subscriber moving from the old bus to the new one changes nothing.
    /// (Per bus, see [`BusStats::subscribers`].)
    fn subscribers_changed(&self, subscribers: usize) {
        let _ = subscribers;
    }

    /// The bus closed: its last handle went away or it was closed
    /// explicitly. Not called when a bus is cut over.
    fn closed(&self) {}
}

/// The position of one subscriber, written by it and read by `stats()`.
pub(crate) type Position = Arc<CachePadded<AtomicU64>>;

/// The positions of a bus's subscribers, so `stats()` can find the slowest.
#[derive(Debug)]
pub(crate) struct Positions {
    slab: Mutex<Slab>,
}

#[derive(Debug)]
struct Slab {
    cells: Vec<Option<Position>>,
    free: Vec<usize>,
    live: usize,
}

impl Positions {
    pub(crate) fn new() -> Self {
        Self {
            slab: Mutex::new(Slab {
                cells: Vec::new(),
                free: Vec::new(),
                live: 0,
            }),
        }
    }

    /// Adds a subscriber at `position`; returns its cell and its key.
    pub(crate) fn insert(&self, position: u64) -> (Position, usize) {
        let cell = Arc::new(CachePadded(AtomicU64::new(position)));
        let mut slab = lock(&self.slab);
        let key = match slab.free.pop() {
            Some(key) => {
                slab.cells[key] = Some(cell.clone());
                key
            }
            None => {
                slab.cells.push(Some(cell.clone()));
                slab.cells.len() - 1
            }
        };
        slab.live += 1;
        (cell, key)
    }

    /// Removes the subscriber with `key`.
    pub(crate) fn remove(&self, key: usize) {
        let mut slab = lock(&self.slab);
        if slab.cells.get_mut(key).and_then(Option::take).is_some() {
            slab.free.push(key);
            slab.live -= 1;
        }
    }

    /// Runs `f` under the lock if no subscriber is registered.
    pub(crate) fn if_empty<R>(&self, f: impl FnOnce() -> R) -> Option<R> {
        let slab = lock(&self.slab);
        (slab.live == 0).then(f)
    }

    /// The number of subscribers and the smallest position among them.
    pub(crate) fn slowest(&self) -> (usize, Option<u64>) {
        let slab = lock(&self.slab);
        let min = slab
            .cells
            .iter()
            .flatten()
            .map(|cell| cell.load(Ordering::Relaxed))
            .min();
        (slab.live, min)
    }
}
