//! A connection's send queue: bounded, filled by the connection's
//! subscriptions and replies, emptied by its one writer task.
//!
//! It is a mutex around a `VecDeque` rather than a channel because both
//! ends work in batches: a live subscription queues every event of a feed
//! batch under one lock and wakes the writer once, and the writer takes
//! everything waiting under one lock. (A channel costs a semaphore permit,
//! a list push and a wake-up check per message; with a thousand
//! connections that was the largest item of the fan-out profile.)
//!
//! Full: [`SendQueue::try_push_many`] queues what fits and says how much;
//! [`SendQueue::push`] waits for room. Closed (the writer ended or the
//! connection is going away): every push fails and the writer stops.

use std::collections::VecDeque;

use crate::message::Outgoing as Message;
use parking_lot::Mutex;
use tokio::sync::Notify;

/// The queue was closed: the connection is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Closed;

struct State {
    queue: VecDeque<Message>,
    closed: bool,
    /// Only the last message is left to write (see
    /// [`SendQueue::close_with`]): pushes fail, the writer takes it.
    closing: bool,
}

/// See the module docs.
pub(crate) struct SendQueue {
    state: Mutex<State>,
    capacity: usize,
    /// The writer waits here for messages (`notify_one` keeps a permit, so
    /// a message queued just before the writer waits is not missed).
    readable: Notify,
    /// Senders wait here for room.
    writable: Notify,
}

impl SendQueue {
    /// A queue of at most `capacity` messages (at least 1).
    pub(crate) fn new(capacity: usize) -> SendQueue {
        SendQueue {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                closed: false,
                closing: false,
            }),
            capacity: capacity.max(1),
            readable: Notify::new(),
            writable: Notify::new(),
        }
    }

    /// Queues `msg` if there is room now; `Ok(false)` when full.
    pub(crate) fn try_push(&self, msg: Message) -> Result<bool, Closed> {
        self.push_if_room(msg).map(|refused| refused.is_none())
    }

    /// Queues `msg` if there is room now, or hands it back.
    fn push_if_room(&self, msg: Message) -> Result<Option<Message>, Closed> {
        let mut state = self.state.lock();
        if state.closed || state.closing {
            return Err(Closed);
        }
        if state.queue.len() >= self.capacity {
            return Ok(Some(msg));
        }
        state.queue.push_back(msg);
        let was_empty = state.queue.len() == 1;
        drop(state);
        if was_empty {
            self.readable.notify_one();
        }
        Ok(None)
    }

    /// Queues messages from `msgs`, at most `count` of them (its length),
    /// until the queue is full; returns how many were queued. The rest are
    /// left in the iterator.
    pub(crate) fn try_push_many(
        &self,
        msgs: &mut impl Iterator<Item = Message>,
        count: usize,
    ) -> Result<usize, Closed> {
        let mut state = self.state.lock();
        if state.closed || state.closing {
            return Err(Closed);
        }
        let was_empty = state.queue.is_empty();
        let room = self.capacity.saturating_sub(state.queue.len()).min(count);
        let mut queued = 0;
        while queued < room {
            let Some(msg) = msgs.next() else { break };
            state.queue.push_back(msg);
            queued += 1;
        }
        drop(state);
        // The writer only waits on an empty queue.
        if was_empty && queued > 0 {
            self.readable.notify_one();
        }
        Ok(queued)
    }

    /// Queues `msg`, waiting for room.
    ///
    /// # Cancel safety
    /// Cancel safe: when cancelled, `msg` was not queued.
    pub(crate) async fn push(&self, mut msg: Message) -> Result<(), Closed> {
        loop {
            let room = self.writable.notified();
            tokio::pin!(room);
            // Registered before looking, so room made after the look wakes us.
            room.as_mut().enable();
            match self.push_if_room(msg)? {
                None => return Ok(()),
                Some(refused) => msg = refused,
            }
            room.await;
        }
    }

    /// Moves up to `limit` messages into `out`, waiting for at least one;
    /// `false` once the queue is closed (what was still queued is dropped).
    ///
    /// # Cancel safety
    /// Cancel safe: messages are only taken when it returns.
    pub(crate) async fn pop_many(&self, out: &mut Vec<Message>, limit: usize) -> bool {
        loop {
            {
                let mut state = self.state.lock();
                if state.closed {
                    return false;
                }
                if !state.queue.is_empty() {
                    let was_full = state.queue.len() >= self.capacity;
                    let n = state.queue.len().min(limit.max(1));
                    out.extend(state.queue.drain(..n));
                    drop(state);
                    if was_full {
                        self.writable.notify_waiters();
                    }
                    return true;
                }
            }
            self.readable.notified().await;
        }
    }

    /// Closes the queue: pushes fail from now on, waiting senders and the
    /// writer are woken.
    pub(crate) fn close(&self) {
        let mut state = self.state.lock();
        state.closed = true;
        state.queue.clear();
        drop(state);
        self.readable.notify_one();
        self.writable.notify_waiters();
    }

    /// Drops what is queued and leaves `last` (a close frame) as the only
    /// message still to write: pushes fail from now on, the writer takes
    /// `last` next. For a client that cannot keep up, so it learns why it
    /// is cut off without waiting behind what it could not take.
    pub(crate) fn close_with(&self, last: Message) {
        let mut state = self.state.lock();
        if state.closed || state.closing {
            return;
        }
        state.closing = true;
        state.queue.clear();
        state.queue.push_back(last);
        drop(state);
        self.readable.notify_one();
        self.writable.notify_waiters();
    }

    /// Whether [`SendQueue::close_with`] was called.
    pub(crate) fn is_closing(&self) -> bool {
        self.state.lock().closing
    }

    /// Whether the queue was closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.state.lock().closed
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    fn text(s: &'static str) -> Message {
        Message::Text(crate::Text::from_static(s))
    }

    #[tokio::test]
    async fn close_with_leaves_only_the_last_message() {
        let q = SendQueue::new(2);
        assert_eq!(q.try_push(text("a")), Ok(true));
        assert_eq!(q.try_push(text("b")), Ok(true));
        q.close_with(Message::Close(None));
        assert!(q.is_closing());
        assert_eq!(q.try_push(text("c")), Err(Closed));
        assert_eq!(q.push(text("d")).await, Err(Closed));
        let mut out = Vec::new();
        assert!(q.pop_many(&mut out, 10).await);
        assert!(matches!(out.as_slice(), [Message::Close(None)]));
    }

    #[tokio::test]
    async fn bounded_batched_and_closed() {
        let q = SendQueue::new(2);
        let mut msgs = [text("a"), text("b"), text("c")].into_iter();
        assert_eq!(q.try_push_many(&mut msgs, 3), Ok(2));
        assert_eq!(msgs.len(), 1, "what did not fit stays with the caller");
        assert_eq!(q.try_push(text("d")), Ok(false));
        let mut out = Vec::new();
        assert!(q.pop_many(&mut out, 10).await);
        assert_eq!(out.len(), 2);
        assert_eq!(q.try_push(text("e")), Ok(true));
        q.close();
        assert_eq!(q.try_push(text("f")), Err(Closed));
        assert!(!q.pop_many(&mut out, 10).await);
        assert!(q.is_closed());
    }

    #[tokio::test]
    async fn a_waiting_sender_gets_room_and_the_writer_wakes() {
        let q = Arc::new(SendQueue::new(1));
        assert_eq!(q.try_push(text("a")), Ok(true));
        let sender = tokio::spawn({
            let q = q.clone();
            async move { q.push(text("b")).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!sender.is_finished(), "no room yet");
        let mut out = Vec::new();
        assert!(q.pop_many(&mut out, 10).await);
        assert_eq!(sender.await.unwrap(), Ok(()));
        let writer = tokio::spawn({
            let q = q.clone();
            async move {
                let mut out = Vec::new();
                let mut n = 0;
                while q.pop_many(&mut out, 10).await {
                    n += out.drain(..).count();
                }
                n
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        q.close();
        assert_eq!(
            writer.await.unwrap(),
            1,
            "the writer took `b`, then stopped"
        );
    }
}
