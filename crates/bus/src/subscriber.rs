//! The receiving side: one [`Subscriber`] per task.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::error::{RecvError, TryRecvError};
use crate::loom::{block_on, Arc, Ordering};
use crate::ring::{Shared, Take, CLOSED};
use crate::stats::Position;
use crate::wait::WaitSlot;

/// How many events a subscriber copies out of the bus at once into its own
/// read-ahead buffer; [`Subscriber::recv`] then hands them out one by one
/// without touching shared memory.
pub const READ_AHEAD: usize = 64;

/// Consecutive ready `recv`s after which a subscriber yields to its
/// executor once, so a subscriber that always finds events waiting cannot
/// keep other tasks on its thread (the publisher among them) from running.
const COOP_BUDGET: u32 = 128;

/// How many times in a row a subscriber that finds the bus empty yields to
/// its executor before it parks.
const IDLE_YIELDS: u32 = 4;

/// The receiving handle of a [`Bus`](crate::Bus): it owns its own position
/// in the stream of events.
///
/// A subscriber sees every event published after it subscribed, in order,
/// unless it falls more than the capacity behind, in which case it is told
/// how many it missed ([`RecvError::Lagged`]) and continues from the oldest
/// event the bus retains. See the [crate docs](crate) for lagging, closing
/// and cutover.
///
/// # One subscriber per task
///
/// `Subscriber` is deliberately not `Clone`. Every task that consumes the
/// bus calls [`Bus::subscribe`](crate::Bus::subscribe) (or
/// [`resubscribe`](Subscriber::resubscribe)) and owns the result. Sharing
/// one subscriber between tasks (an `Arc<Mutex<Subscriber<T>>>`) is the
/// runbook's anti-pattern: the tasks then split the events between them
/// instead of each seeing all of them, the order each task sees is
/// arbitrary, and a lag reported to one task is invisible to the others.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::sync::Arc;
/// use busbar_bus::Bus;
///
/// let bus = Bus::<Arc<str>>::new(256).unwrap();
/// let mut tasks = Vec::new();
/// for _ in 0..3 {
///     let mut sub = bus.subscribe(); // one each: right
///     tasks.push(tokio::spawn(async move { sub.recv().await.unwrap() }));
/// }
/// bus.publish(Arc::from("hello")).unwrap();
/// for task in tasks {
///     assert_eq!(&*task.await.unwrap(), "hello"); // every task saw it
/// }
/// # }
/// ```
///
/// There is no way to clone one:
///
/// ```compile_fail
/// let bus = busbar_bus::Bus::<u8>::new(16).unwrap();
/// let sub = bus.subscribe();
/// let twin = sub.clone(); // error: `Subscriber` is not `Clone`
/// ```
pub struct Subscriber<T> {
    shared: Arc<Shared<T>>,
    /// The sequence number of the next event to copy out of the bus.
    pos: u64,
    /// Events copied out of the bus and not yet handed out.
    buf: VecDeque<T>,
    /// `pos` as `stats()` sees it.
    position: Position,
    key: usize,
    wait: Option<WaitSlot>,
    streak: u32,
    /// Times in a row the bus was found empty and the subscriber yielded
    /// instead of parking.
    idle_yields: u32,
}

/// What a subscriber found when it looked at the bus.
enum Step {
    Ready,
    Lagged(u64),
    Closed,
    Empty(u64),
}

impl<T> Subscriber<T> {
    pub(crate) fn attach(shared: Arc<Shared<T>>) -> Self {
        // Registered before the start is read: a cut-over bus drops its
        // values only when nobody is registered (see `release_if_abandoned`).
        let (position, key) = shared.positions.insert(shared.tail());
        let pos = shared.tail();
        position.store(pos, Ordering::Relaxed);
        let buf = VecDeque::with_capacity(READ_AHEAD.min(shared.capacity() as usize));
        let subscriber = Self {
            shared,
            pos,
            buf,
            position,
            key,
            wait: None,
            streak: 0,
            idle_yields: 0,
        };
        subscriber.shared.subscriber_joined();
        subscriber
    }

    /// The sequence number of the next event this subscriber will receive
    /// if it does not lag. Sequence numbers are the ones
    /// [`Bus::publish`](crate::Bus::publish) returns, and run on across a
    /// [cutover](crate#cutover).
    pub fn position(&self) -> u64 {
        self.pos - self.buf.len() as u64
    }

    /// How many events this subscriber can receive right now: the ones
    /// still retained after its position (a lagging subscriber gets a
    /// `Lagged` error before them).
    pub fn backlog(&self) -> u64 {
        let state = self.shared.state();
        let from = self.pos.max(self.shared.oldest(state));
        self.buf.len() as u64 + self.shared.tail_of(state).saturating_sub(from)
    }

    /// A new subscriber of the same bus (the newest one, after a cutover)
    /// that starts at the next event published, as
    /// [`Bus::subscribe`](crate::Bus::subscribe) would. Use it to give
    /// another task its own subscriber.
    pub fn resubscribe(&self) -> Subscriber<T> {
        Subscriber::attach(Shared::newest(&self.shared))
    }

    /// Moves to the bus this one was cut over to, if any. Called once this
    /// bus is closed and drained, so `pos` is its final tail, which is where
    /// the successor's sequence numbers start.
    fn migrate(&mut self) -> bool {
        let Some(next) = self.shared.successor() else {
            return false;
        };
        // Registered on the new bus before leaving the old one, so the new
        // bus cannot be released in between (see `release_abandoned`).
        let (position, key) = next.positions.insert(self.pos);
        if self.shared.is_released() {
            // We subscribed to the old bus after everyone had left it: we
            // follow nothing yet, so start at the new bus's tail like any
            // new subscriber (its events may be released too).
            self.pos = next.tail();
            position.store(self.pos, Ordering::Relaxed);
        }
        self.shared.waiters.cancel(&mut self.wait);
        self.shared.positions.remove(self.key);
        self.shared.release_abandoned();
        self.shared = next;
        self.position = position;
        self.key = key;
        true
    }
}

impl<T: Clone> Subscriber<T> {
    /// Receives the next event, waiting for one to be published.
    ///
    /// # Errors
    ///
    /// [`RecvError::Lagged`] with the number of events missed if the
    /// subscriber fell more than the capacity behind; the next call returns
    /// the oldest retained event. [`RecvError::Closed`] once the bus is
    /// closed and everything it retained for this subscriber was received.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future before it completes loses no event
    /// (events are only taken when it returns them) and withdraws its
    /// wake-up registration.
    pub fn recv(&mut self) -> Recv<'_, T> {
        Recv { sub: self }
    }

    /// Receives the next event if one is ready, without waiting.
    ///
    /// # Errors
    ///
    /// [`TryRecvError::Empty`] if no event is ready on an open bus;
    /// otherwise as [`recv`](Subscriber::recv).
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        loop {
            match self.fill() {
                Step::Ready => {
                    if let Some(value) = self.buf.pop_front() {
                        return Ok(value);
                    }
                }
                Step::Lagged(skipped) => return Err(TryRecvError::Lagged(skipped)),
                Step::Closed => return Err(TryRecvError::Closed),
                Step::Empty(_) => return Err(TryRecvError::Empty),
            }
        }
    }

    /// Receives the next event, blocking the current thread until one is
    /// published: for hosts (or threads) without an async runtime.
    ///
    /// # Errors
    ///
    /// As [`recv`](Subscriber::recv).
    ///
    /// Do not call it from an async task: it blocks the executor's thread
    /// while it waits (use [`recv`](Subscriber::recv) there).
    pub fn recv_blocking(&mut self) -> Result<T, RecvError> {
        block_on(self.recv())
    }

    /// Receives at least one and at most `limit` events into `out`, waiting
    /// until one is published; returns how many were added. With
    /// `limit == 0` it returns `Ok(0)` at once.
    ///
    /// Draining in batches is the cheapest way to consume a busy bus:
    /// events are cloned from the bus straight into `out`.
    ///
    /// # Errors
    ///
    /// As [`recv`](Subscriber::recv). Events are never lost to an error:
    /// if some were added, `Ok` is returned and a lag or close discovered
    /// after them is reported by the next call.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`recv`](Subscriber::recv): `out` is only extended
    /// when the future completes.
    pub fn recv_many<'a>(&'a mut self, out: &'a mut Vec<T>, limit: usize) -> RecvMany<'a, T> {
        RecvMany {
            sub: self,
            out,
            limit,
        }
    }

    /// Moves up to `limit` ready events into `out` without waiting; returns
    /// how many were added.
    ///
    /// # Errors
    ///
    /// As [`try_recv`](Subscriber::try_recv), only when no event was added.
    pub fn try_recv_many(&mut self, out: &mut Vec<T>, limit: usize) -> Result<usize, TryRecvError> {
        match self.take_many(out, limit) {
            (Step::Ready, added) => Ok(added),
            (Step::Lagged(skipped), _) => Err(TryRecvError::Lagged(skipped)),
            (Step::Closed, _) => Err(TryRecvError::Closed),
            (Step::Empty(_), _) => Err(TryRecvError::Empty),
        }
    }

    /// Makes the read-ahead buffer non-empty if the bus has anything.
    fn fill(&mut self) -> Step {
        if !self.buf.is_empty() {
            return Step::Ready;
        }
        loop {
            let buf = &mut self.buf;
            let take = self
                .shared
                .take(&mut self.pos, READ_AHEAD, |v| buf.push_back(v));
            match self.after_take(take) {
                Some(step) => return step,
                None => continue,
            }
        }
    }

    /// Moves up to `limit` events into `out`, the buffered ones first.
    fn take_many(&mut self, out: &mut Vec<T>, limit: usize) -> (Step, usize) {
        let buffered = self.buf.len().min(limit);
        out.extend(self.buf.drain(..buffered));
        if buffered > 0 || limit == 0 {
            return (Step::Ready, buffered);
        }
        loop {
            let before = out.len();
            let take = self.shared.take(&mut self.pos, limit, |v| out.push(v));
            if let Some(step) = self.after_take(take) {
                return (step, out.len() - before);
            }
        }
    }

    /// Records the new position; turns a close into a move to the successor
    /// bus (`None`: look again) or into `Closed`.
    fn after_take(&mut self, take: Take) -> Option<Step> {
        self.position.store(self.pos, Ordering::Relaxed);
        match take {
            Take::Got(_) => {
                self.idle_yields = 0;
                Some(Step::Ready)
            }
            Take::Lagged(skipped) => Some(Step::Lagged(skipped)),
            Take::Empty(state) if state & CLOSED != 0 => {
                if self.migrate() {
                    None
                } else {
                    Some(Step::Closed)
                }
            }
            Take::Empty(state) => Some(Step::Empty(state)),
        }
    }

    /// Parks on `state` unless it changed; `false`: look again.
    ///
    /// The first `IDLE_YIELDS` times in a row the bus is found empty, the
    /// subscriber only yields: on a busy bus the next events usually arrive
    /// before it is polled again, which saves registering, being woken and
    /// letting the executor's thread go to sleep in between.
    fn park(&mut self, state: u64, cx: &Context<'_>) -> bool {
        if self.idle_yields < IDLE_YIELDS {
            self.idle_yields += 1;
            cx.waker().wake_by_ref();
            return true;
        }
        let parked = self.shared.waiters.register(
            self.shared.state_word(),
            state,
            cx.waker(),
            &mut self.wait,
        );
        if parked {
            self.streak = 0;
        }
        parked
    }

    /// Yields once every `COOP_BUDGET` ready polls.
    fn out_of_budget(&mut self, cx: &Context<'_>) -> bool {
        if self.streak < COOP_BUDGET {
            self.streak += 1;
            return false;
        }
        self.streak = 0;
        cx.waker().wake_by_ref();
        true
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<T, RecvError>> {
        if self.out_of_budget(cx) {
            return Poll::Pending;
        }
        loop {
            match self.fill() {
                Step::Ready => {
                    if let Some(value) = self.buf.pop_front() {
                        return Poll::Ready(Ok(value));
                    }
                }
                Step::Lagged(skipped) => return Poll::Ready(Err(RecvError::Lagged(skipped))),
                Step::Closed => return Poll::Ready(Err(RecvError::Closed)),
                Step::Empty(state) => {
                    if self.park(state, cx) {
                        return Poll::Pending;
                    }
                }
            }
        }
    }

    fn poll_recv_many(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut Vec<T>,
        limit: usize,
    ) -> Poll<Result<usize, RecvError>> {
        if self.out_of_budget(cx) {
            return Poll::Pending;
        }
        loop {
            match self.take_many(out, limit) {
                (Step::Ready, added) => return Poll::Ready(Ok(added)),
                (Step::Lagged(skipped), _) => return Poll::Ready(Err(RecvError::Lagged(skipped))),
                (Step::Closed, _) => return Poll::Ready(Err(RecvError::Closed)),
                (Step::Empty(state), _) => {
                    if self.park(state, cx) {
                        return Poll::Pending;
                    }
                }
            }
        }
    }
}

impl<T> Drop for Subscriber<T> {
    fn drop(&mut self) {
        self.shared.waiters.cancel(&mut self.wait);
        self.shared.positions.remove(self.key);
        self.shared.release_abandoned();
        self.shared.subscriber_left();
    }
}

impl<T> std::fmt::Debug for Subscriber<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("position", &self.position())
            .field("buffered", &self.buf.len())
            .finish_non_exhaustive()
    }
}

/// The future of [`Subscriber::recv`].
#[must_use = "futures do nothing unless polled"]
pub struct Recv<'a, T> {
    sub: &'a mut Subscriber<T>,
}

impl<T: Clone> Future for Recv<'_, T> {
    type Output = Result<T, RecvError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.get_mut().sub.poll_recv(cx)
    }
}

impl<T> Drop for Recv<'_, T> {
    fn drop(&mut self) {
        self.sub.shared.waiters.cancel(&mut self.sub.wait);
    }
}

/// The future of [`Subscriber::recv_many`].
#[must_use = "futures do nothing unless polled"]
pub struct RecvMany<'a, T> {
    sub: &'a mut Subscriber<T>,
    out: &'a mut Vec<T>,
    limit: usize,
}

impl<T: Clone> Future for RecvMany<'_, T> {
    type Output = Result<usize, RecvError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.sub.poll_recv_many(cx, this.out, this.limit)
    }
}

impl<T> Drop for RecvMany<'_, T> {
    fn drop(&mut self) {
        self.sub.shared.waiters.cancel(&mut self.sub.wait);
    }
}
