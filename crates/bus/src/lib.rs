//! busbar's embeddable bus: a bounded, lossy, in-process broadcast channel.
//!
//! A [`Bus`] fans events out to any number of [`Subscriber`]s. Publishing
//! never blocks and never waits for a subscriber; memory is bounded by the
//! capacity; a subscriber that falls behind is told exactly how many events
//! it missed. Events are cloned once per subscriber, so make them cheap to
//! clone: `Arc<T>` or `bytes::Bytes` (several subscribers clone the same
//! event at once, from their own threads, so the bus is `Send` and `Sync`
//! when events are `Send + Sync`). The crate needs no particular async
//! runtime, and has [`Subscriber::recv_blocking`] for threads with none.
//! busbar's daemon builds its live fan-out on this crate; hosts embed it
//! directly.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use std::sync::Arc;
//! use busbar_bus::{Bus, RecvError};
//!
//! let bus = Bus::<Arc<String>>::new(256).unwrap();
//! let mut sub = bus.subscribe();
//! let consumer = tokio::spawn(async move {
//!     let mut seen = Vec::new();
//!     loop {
//!         match sub.recv().await {
//!             Ok(event) => seen.push(event),
//!             Err(RecvError::Lagged(n)) => eprintln!("missed {n} events"),
//!             Err(RecvError::Closed) => return seen,
//!         }
//!     }
//! });
//! bus.publish(Arc::new("one".to_owned())).unwrap();
//! bus.publish(Arc::new("two".to_owned())).unwrap();
//! drop(bus); // the last handle: the bus closes
//! assert_eq!(consumer.await.unwrap().len(), 2);
//! # }
//! ```
//!
//! Every subscriber owns its position: give each task its own
//! (`bus.subscribe()`), never share one between tasks; see
//! [`Subscriber`]'s "One subscriber per task".
//!
//! ## Lagging
//!
//! The bus retains the newest `capacity` events. A subscriber whose next
//! event is older than that has lagged: its next receive returns
//! [`RecvError::Lagged(n)`](RecvError::Lagged), `n` being exactly how many
//! events it missed, and the receive after that returns the oldest event
//! the bus still retains. The publisher does not wait for it: the one
//! moment a publisher can wait on a subscriber is when it recycles a block
//! that a lagging subscriber is copying out of at that very instant, and
//! then only until those (at most 64) clones are done. Every `n` handed
//! out is added to [`BusStats::overflow_dropped_total`] and reported to the
//! [`BusObserver`].
//!
//! ```
//! use busbar_bus::{Bus, TryRecvError};
//!
//! let bus = Bus::new(4)?;
//! let mut sub = bus.subscribe();
//! for i in 0..10u64 {
//!     bus.publish(i).unwrap(); // never waits for `sub`
//! }
//! assert_eq!(sub.try_recv(), Err(TryRecvError::Lagged(6))); // missed 0..=5
//! assert_eq!(sub.try_recv(), Ok(6)); // the oldest retained
//! assert_eq!(bus.stats().overflow_dropped_total, 6);
//! # Ok::<(), busbar_bus::CapacityError>(())
//! ```
//!
//! A subscriber copies events out of the bus [`READ_AHEAD`] at a time into
//! its own buffer, which `recv` then empties; events in that buffer are
//! already its own and are never lost to a lag.
//!
//! ## Closing
//!
//! The bus closes when its last [`Bus`] or [`Publisher`] handle is dropped,
//! or when [`Bus::close`] is called. After that, publishing fails with
//! [`SendError`], which hands the event back. Subscribers are not cut off:
//! each first receives every event the bus still retains for it, then gets
//! [`RecvError::Closed`] (a lagging one gets its `Lagged` first). Dropping
//! subscribers never closes anything, and publishing with no subscribers is
//! allowed and counted in [`BusStats::published_total`].
//!
//! ```
//! use busbar_bus::{Bus, TryRecvError};
//!
//! let bus = Bus::new(16)?;
//! let mut sub = bus.subscribe();
//! bus.publish("last words").unwrap();
//! drop(bus);
//! assert_eq!(sub.try_recv(), Ok("last words")); // drained first
//! assert_eq!(sub.try_recv(), Err(TryRecvError::Closed));
//! # Ok::<(), busbar_bus::CapacityError>(())
//! ```
//!
//! ## Cutover
//!
//! A bus's capacity is fixed; the runbook's two-bus cutover changes it
//! under load. [`Bus::cutover`] makes the new bus and switches over in one
//! step, so that a subscriber that keeps receiving neither loses nor
//! repeats an event:
//!
//! 1. `let new_bus = old_bus.cutover(new_capacity)?` closes the old bus and
//!    returns the new one, whose sequence numbers continue where the old
//!    one stopped.
//! 2. Publishers may be swapped to `new_bus` at leisure: until then,
//!    publishing through an old handle forwards to the new bus.
//! 3. Each old subscriber first receives what the old bus retains for it,
//!    then moves to the new bus by itself and continues with the event
//!    that follows by sequence number. No task has to be cancelled or
//!    respawned. (A subscriber that was lagging reports its `Lagged` on
//!    the old bus as usual; the cutover adds none.)
//! 4. Drop the old handles once the old bus's
//!    [`stats().subscribers`](BusStats::subscribers) is 0. Its
//!    `published_total` and `overflow_dropped_total` carry over to the new
//!    bus, so the counters a host exports do not reset.
//!
//! ```
//! use busbar_bus::Bus;
//!
//! let old = Bus::new(256)?;
//! let mut sub = old.subscribe();
//! old.publish(1).unwrap();
//! let new = old.cutover(1024)?;
//! old.publish(2).unwrap(); // forwarded to `new`
//! new.publish(3).unwrap();
//! assert_eq!(new.capacity(), 1024);
//! let seen: Vec<i32> = (0..3).map(|_| sub.try_recv().unwrap()).collect();
//! assert_eq!(seen, [1, 2, 3]); // no gap, no repeat
//! assert_eq!(old.stats().subscribers, 0); // `sub` moved to `new`
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Fairness and cost
//!
//! Publishers serialize on a short lock subscribers never take; they touch
//! the wake-up registry only when some subscriber is actually parked, and
//! then wake each parked subscriber once for a whole burst of events.
//! Subscribers copy events out a block at a time, under a per-block
//! counter instead of a lock per event, and yield to their executor after
//! a run of ready receives. A publisher that never yields therefore cannot
//! starve subscribers running on other threads. (It still monopolizes its
//! own thread: run a tight publishing loop on a thread of its own, or let
//! it yield now and then, so tasks woken on its thread get to run.)

#![warn(missing_docs)]

mod bus;
mod error;
mod loom;
mod ring;
mod stats;
mod subscriber;
mod wait;

pub use bus::{Bus, BusBuilder, Publisher};
pub use error::{CapacityError, CutoverError, RecvError, SendError, TryRecvError};
pub use ring::MAX_CAPACITY;
pub use stats::{BusObserver, BusStats};
pub use subscriber::{Recv, RecvMany, Subscriber, READ_AHEAD};
