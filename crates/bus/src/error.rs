//! The errors at this crate's boundary.

use std::fmt;

/// A bus capacity that cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CapacityError {
    /// A bus must retain at least one event.
    #[error("bus capacity must be at least 1")]
    Zero,
    /// The capacity is larger than [`MAX_CAPACITY`](crate::MAX_CAPACITY).
    #[error("bus capacity {requested} is larger than the maximum {max}")]
    TooLarge {
        /// The capacity asked for.
        requested: usize,
        /// The largest capacity a bus accepts.
        max: usize,
    },
}

/// Why [`Bus::cutover`](crate::Bus::cutover) did not make a new bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CutoverError {
    /// The new capacity cannot be used.
    #[error(transparent)]
    Capacity(#[from] CapacityError),
    /// The bus was closed, or already cut over to another bus: cut over the
    /// newest bus instead.
    #[error("the bus is closed or was already cut over")]
    Closed,
}

/// The bus is closed; the event that could not be published is handed back.
///
/// Publishing fails only after [`Bus::close`](crate::Bus::close), or once
/// every [`Bus`](crate::Bus) and [`Publisher`](crate::Publisher) handle of
/// the bus is gone. Publishing with no subscribers succeeds.
#[derive(PartialEq, Eq, Clone, Copy, thiserror::Error)]
#[error("the bus is closed")]
pub struct SendError<T>(pub T);

// Hand-written so that events, which may hold payloads, never reach logs.
impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SendError(..)")
    }
}

/// Why [`Subscriber::recv`](crate::Subscriber::recv) returned no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    /// The subscriber fell more than the capacity behind: this many events
    /// were overwritten before it read them. Its next receive returns the
    /// oldest event the bus still retains.
    #[error("the subscriber lagged behind and missed {0} events")]
    Lagged(u64),
    /// The bus is closed and every event it retained for this subscriber
    /// has been received.
    #[error("the bus is closed")]
    Closed,
}

/// Why [`Subscriber::try_recv`](crate::Subscriber::try_recv) returned no
/// event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TryRecvError {
    /// No event is ready; the bus is open.
    #[error("no event is ready")]
    Empty,
    /// The subscriber missed this many events; see [`RecvError::Lagged`].
    #[error("the subscriber lagged behind and missed {0} events")]
    Lagged(u64),
    /// The bus is closed and drained; see [`RecvError::Closed`].
    #[error("the bus is closed")]
    Closed,
}
