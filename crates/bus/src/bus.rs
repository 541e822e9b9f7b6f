//! The publishing side: [`Bus`], [`Publisher`] and [`BusBuilder`].

use std::marker::PhantomData;

use crate::error::{CapacityError, CutoverError, SendError};
use crate::loom::{Arc, AtomicU64, AtomicUsize, Ordering};
use crate::ring::{Layout, Shared, CLOSED};
use crate::stats::{BusObserver, BusStats};
use crate::subscriber::Subscriber;

/// A bounded, lossy broadcast bus: every [`Subscriber`] sees every event
/// published after it subscribed, unless it falls more than `capacity`
/// events behind.
///
/// `Bus` is the handle that owns the bus: it publishes, makes subscribers
/// and publishers, reports [`stats`](Bus::stats) and performs a
/// [cutover](crate#cutover). Clones are handles to the same bus. The bus
/// closes when its last `Bus` or [`Publisher`] handle is dropped, or on
/// [`close`](Bus::close).
///
/// ```
/// use busbar_bus::Bus;
///
/// let bus = Bus::<u64>::new(256)?;
/// let mut sub = bus.subscribe();
/// assert_eq!(bus.publish(7).unwrap(), 0); // sequence number 0
/// assert_eq!(sub.try_recv(), Ok(7));
/// # Ok::<(), busbar_bus::CapacityError>(())
/// ```
pub struct Bus<T> {
    shared: Arc<Shared<T>>,
}

/// A handle that publishes on a [`Bus`], for producer tasks; cheap to clone.
/// It keeps the bus open like a `Bus` handle does.
pub struct Publisher<T> {
    shared: Arc<Shared<T>>,
}

/// Configures a [`Bus`]: see [`Bus::builder`].
#[must_use]
pub struct BusBuilder<T> {
    capacity: usize,
    observer: Option<std::sync::Arc<dyn BusObserver>>,
    _events: PhantomData<fn() -> T>,
}

impl<T> BusBuilder<T> {
    /// Calls `observer` on lag and subscriber changes; see [`BusObserver`].
    pub fn observer(mut self, observer: std::sync::Arc<dyn BusObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Makes the bus.
    ///
    /// # Errors
    ///
    /// [`CapacityError`] if the capacity is 0 or larger than
    /// [`MAX_CAPACITY`](crate::MAX_CAPACITY).
    pub fn build(self) -> Result<Bus<T>, CapacityError> {
        let layout = Layout::new(self.capacity)?;
        Ok(Bus {
            shared: Arc::new(Shared::new(
                layout,
                0,
                Arc::new(AtomicU64::new(0)),
                Arc::new(AtomicUsize::new(0)),
                self.observer,
            )),
        })
    }
}

impl<T> Bus<T> {
    /// Makes a bus that retains the last `capacity` events for subscribers
    /// that fall behind. The capacity is used exactly as given (it is not
    /// rounded). The bus keeps at most `capacity + min(capacity / 4, 127) + 1`
    /// values alive (the newest `capacity` of them receivable; the rest
    /// wait to be overwritten), so its memory is bounded by the capacity.
    ///
    /// # Errors
    ///
    /// [`CapacityError::Zero`] for 0, [`CapacityError::TooLarge`] above
    /// [`MAX_CAPACITY`](crate::MAX_CAPACITY).
    pub fn new(capacity: usize) -> Result<Self, CapacityError> {
        Self::builder(capacity).build()
    }

    /// Configures a bus of `capacity` with more options (an observer).
    pub fn builder(capacity: usize) -> BusBuilder<T> {
        BusBuilder {
            capacity,
            observer: None,
            _events: PhantomData,
        }
    }

    /// Subscribes: the subscriber receives every event published from now
    /// on. After a cutover, subscribes to the newest bus.
    pub fn subscribe(&self) -> Subscriber<T> {
        Subscriber::attach(Shared::newest(&self.shared))
    }

    /// A publishing handle for a producer task.
    pub fn publisher(&self) -> Publisher<T> {
        self.shared.senders.fetch_add(1, Ordering::Relaxed);
        Publisher {
            shared: self.shared.clone(),
        }
    }

    /// The number of events the bus guarantees a subscriber can fall behind
    /// by without losing any.
    pub fn capacity(&self) -> usize {
        self.shared.capacity() as usize
    }

    /// The bus's counters; see [`BusStats`]. Takes one short lock to find
    /// the slowest subscriber; meant for metric scrapes, not per event.
    pub fn stats(&self) -> BusStats {
        let state = self.shared.state();
        let published_total = self.shared.tail_of(state);
        let (subscribers, slowest) = self.shared.positions.slowest();
        let queue_depth = slowest.map_or(0, |pos| {
            published_total
                .saturating_sub(pos)
                .min(self.shared.capacity())
        });
        BusStats {
            published_total,
            overflow_dropped_total: self.shared.overflow_total(),
            queue_depth,
            subscribers,
            capacity: self.capacity(),
            closed: state & CLOSED != 0,
        }
    }

    /// Closes the bus for every handle: further publishes fail with
    /// [`SendError`], and subscribers receive what the bus retains for them
    /// and then [`RecvError::Closed`](crate::RecvError::Closed). Closing a
    /// closed bus does nothing.
    pub fn close(&self) {
        self.shared.close();
    }

    /// Whether the bus is closed (or was cut over to a new bus).
    pub fn is_closed(&self) -> bool {
        self.shared.state() & CLOSED != 0
    }

    /// Moves the bus to a new capacity without losing or repeating an
    /// event for any subscriber: see [Cutover](crate#cutover).
    ///
    /// Returns the new bus, whose sequence numbers continue where this
    /// one's stop. This bus closes at once; its handles (`Bus` and
    /// [`Publisher`]) forward publishes to the new bus, and each subscriber
    /// of this bus moves to the new one by itself once it has received
    /// everything this bus retains for it. Only the returned handle (and
    /// its clones and publishers) keeps the new bus open.
    ///
    /// # Errors
    ///
    /// [`CutoverError::Capacity`] for an unusable capacity;
    /// [`CutoverError::Closed`] if this bus is closed or was already cut
    /// over (cut over the newest bus instead).
    pub fn cutover(&self, new_capacity: usize) -> Result<Bus<T>, CutoverError> {
        let layout = Layout::new(new_capacity)?;
        let shared = self.shared.cutover(layout).ok_or(CutoverError::Closed)?;
        Ok(Bus { shared })
    }
}

impl<T> Bus<T> {
    /// Publishes `value` to every subscriber, without waiting for any of
    /// them to receive it (see [Lagging](crate#lagging) for the one
    /// bounded exception); returns its sequence number. Publishing with no subscribers
    /// succeeds (the event is counted, and retained for nobody).
    ///
    /// On a bus that was cut over, publishes to the newest bus.
    ///
    /// # Errors
    ///
    /// [`SendError`], handing `value` back, if the bus is closed.
    pub fn publish(&self, value: T) -> Result<u64, SendError<T>> {
        publish_on(&self.shared, value)
    }
}

impl<T> Publisher<T> {
    /// Publishes `value`; see [`Bus::publish`].
    ///
    /// # Errors
    ///
    /// [`SendError`], handing `value` back, if the bus is closed.
    pub fn publish(&self, value: T) -> Result<u64, SendError<T>> {
        publish_on(&self.shared, value)
    }

    /// Whether the bus is closed (or was cut over to a new bus).
    pub fn is_closed(&self) -> bool {
        self.shared.state() & CLOSED != 0
    }
}

/// Publishes on `shared`, following cutovers.
fn publish_on<T>(shared: &Arc<Shared<T>>, value: T) -> Result<u64, SendError<T>> {
    let mut value = match shared.publish(value) {
        Ok(seq) => return Ok(seq),
        Err(value) => value,
    };
    let mut next = shared.forward();
    while let Some(bus) = next {
        value = match bus.publish(value) {
            Ok(seq) => {
                shared.set_forward(&bus);
                return Ok(seq);
            }
            Err(value) => value,
        };
        next = bus.forward();
    }
    Err(SendError(value))
}

impl<T> Clone for Bus<T> {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, Ordering::Relaxed);
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Clone for Publisher<T> {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, Ordering::Relaxed);
        Self {
            shared: self.shared.clone(),
        }
    }
}

fn release_sender<T>(shared: &Shared<T>) {
    if shared.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
        shared.close();
    }
}

impl<T> Drop for Bus<T> {
    fn drop(&mut self) {
        release_sender(&self.shared);
    }
}

impl<T> Drop for Publisher<T> {
    fn drop(&mut self) {
        release_sender(&self.shared);
    }
}

impl<T> std::fmt::Debug for Bus<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus").field("stats", &self.stats()).finish()
    }
}

impl<T> std::fmt::Debug for Publisher<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("closed", &self.is_closed())
            .finish()
    }
}
