//! Live feeds: one per stream with subscribers. A tailer task follows the
//! stream's log and broadcasts each new event to every live subscriber
//! through a [`busbar_bus::Bus`]: bounded and lossy, so a slow subscriber
//! misses events (and is told how many) but never slows the tailer or the
//! others. Each event's message is rendered once per subscription id and
//! shared ([`LiveEvent::frame`]).
//!
//! Because the feed is fed from the log, a subscriber that must not lose
//! anything can always go back to the log for what it missed.
//!
//! A tailer that falls further behind than the stream's retention never
//! sees the events trimmed before it read them. It counts them (the
//! store's [`busbar_store::StreamInfo::added`] against the events it read)
//! and marks the next event it carries with how many went by
//! ([`LiveEvent::skipped`]), so live subscribers are told of those too.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use busbar_bus::{Bus, RecvError, Subscriber};
use busbar_engine::Engine;
use busbar_event::{Event, EventId, StreamName};
use busbar_store::ReadQuery;
use parking_lot::Mutex;

use crate::protocol::event_frame;

/// Distinct subscription ids whose `event` message an event keeps, built
/// once and shared by every subscriber using that id.
const FRAME_SLOTS: usize = 4;

/// An event as the feed carries it. Its `event` message is rendered by
/// the first subscriber that needs it, once per subscription id, and
/// shared with every other subscriber using that id.
#[derive(Debug)]
pub struct LiveEvent {
    /// The event.
    pub event: Event,
    /// Events of the stream removed (trimmed or deleted) before the feed
    /// read them, just before this one.
    pub skipped: u64,
    /// `event` messages already built, by subscription id. Clients of one
    /// kind (a dashboard, an overlay) tend to use the same ids, so a
    /// thousand subscribers usually share one message (a reference count)
    /// instead of building a thousand copies. `None` for an event of a feed
    /// with one subscriber, which builds its message for itself (and frees
    /// it where it is written, not on the tailer's thread).
    frames: Option<Box<FrameSlots>>,
}

type FrameSlots = [OnceLock<(Box<str>, Utf8Bytes)>; FRAME_SLOTS];

impl LiveEvent {
    /// An event of the feed whose message is built once per subscription
    /// id and shared.
    pub fn new(event: Event) -> LiveEvent {
        LiveEvent {
            event,
            skipped: 0,
            frames: Some(Box::default()),
        }
    }

    /// An event of a feed with a single subscriber: nothing to share.
    fn unshared(event: Event) -> LiveEvent {
        LiveEvent {
            event,
            skipped: 0,
            frames: None,
        }
    }

    /// The `{"type":"event","sub":<sub>,"event":...}` message for
    /// subscription `sub` of `stream` (the feed's stream).
    pub fn frame(&self, stream: &StreamName, sub: &str) -> Utf8Bytes {
        let Some(slots) = &self.frames else {
            return event_frame(stream, sub, &self.event).into();
        };
        for slot in slots.iter() {
            let (id, frame) =
                slot.get_or_init(|| (sub.into(), event_frame(stream, sub, &self.event).into()));
            if **id == *sub {
                return frame.clone();
            }
        }
        // More distinct ids than slots: this one gets its own copy.
        event_frame(stream, sub, &self.event).into()
    }
}

/// How often an idle tailer looks at the log without a wake-up.
const IDLE_POLL: Duration = Duration::from_millis(250);
/// Events a tailer reads from the log, and publishes, between two yields.
const TAIL_BATCH: usize = 256;

struct Feed {
    bus: Bus<Arc<LiveEvent>>,
    subscribers: AtomicUsize,
}

/// The live feeds of every stream.
pub struct Feeds {
    engine: Arc<Engine>,
    capacity: usize,
    feeds: Mutex<HashMap<StreamName, Arc<Feed>>>,
}

impl std::fmt::Debug for Feeds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feeds")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

/// A live subscription to one stream's feed. Dropping it unsubscribes; the
/// tailer stops when its last subscriber leaves.
pub struct FeedReceiver {
    rx: Subscriber<Arc<LiveEvent>>,
    feed: Arc<Feed>,
}

/// What a live receive gives.
#[derive(Debug)]
pub enum Received {
    /// The next event.
    Event(Arc<LiveEvent>),
    /// This many events went by unseen; the next receive continues after
    /// them.
    Lagged(u64),
    /// The feed ended (shutdown).
    Closed,
}

/// What a batched live receive gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batch {
    /// This many events were added.
    Events(usize),
    /// This many events went by unseen (none were added); the next receive
    /// continues after them.
    Lagged(u64),
    /// The feed ended (shutdown).
    Closed,
}

impl FeedReceiver {
    /// The next event, or how many were missed.
    ///
    /// # Cancel safety
    /// Cancel safe: a cancelled receive loses nothing.
    pub async fn recv(&mut self) -> Received {
        match self.rx.recv().await {
            Ok(e) => Received::Event(e),
            Err(RecvError::Lagged(n)) => Received::Lagged(n),
            Err(RecvError::Closed) => Received::Closed,
        }
    }

    /// Waits for at least one event and moves up to `limit` ready ones into
    /// `out`: a busy feed is drained in batches, with one wake-up for many
    /// events.
    ///
    /// # Cancel safety
    /// Cancel safe: `out` is only extended when the future completes.
    pub async fn recv_many(&mut self, out: &mut Vec<Arc<LiveEvent>>, limit: usize) -> Batch {
        match self.rx.recv_many(out, limit.max(1)).await {
            Ok(n) => Batch::Events(n),
            Err(RecvError::Lagged(n)) => Batch::Lagged(n),
            Err(RecvError::Closed) => Batch::Closed,
        }
    }
}

impl Drop for FeedReceiver {
    fn drop(&mut self) {
        self.feed.subscribers.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Feeds {
    /// Feeds over `engine`'s streams, each buffering `capacity` events for
    /// its slowest live subscriber.
    pub fn new(engine: Arc<Engine>, capacity: usize) -> Arc<Feeds> {
        Arc::new(Feeds {
            engine,
            capacity: capacity.max(1),
            feeds: Mutex::new(HashMap::new()),
        })
    }

    /// Subscribes to `stream`'s live events: every event appended after
    /// this call (and possibly a few before it).
    pub async fn subscribe(self: &Arc<Self>, stream: &StreamName) -> FeedReceiver {
        if let Some(rx) = self.join(stream) {
            return rx;
        }
        // The stream may not exist yet: its feed then starts at the beginning.
        let start = self
            .engine
            .store()
            .info(stream)
            .await
            .map(|i| Position {
                last: i.last_id,
                added: i.added,
            })
            .unwrap_or_default();
        let mut feeds = self.feeds.lock();
        if let Some(feed) = feeds
            .get(stream)
            .filter(|f| f.subscribers.load(Ordering::Acquire) > 0)
        {
            feed.subscribers.fetch_add(1, Ordering::AcqRel);
            return FeedReceiver {
                rx: feed.bus.subscribe(),
                feed: feed.clone(),
            };
        }
        let bus = Bus::new(self.capacity).unwrap_or_else(|e| {
            tracing::error!(error = %e, "invalid live feed capacity; using 4096");
            Bus::new(4096).expect("4096 is a valid capacity")
        });
        let rx = bus.subscribe();
        let feed = Arc::new(Feed {
            bus,
            subscribers: AtomicUsize::new(1),
        });
        feeds.insert(stream.clone(), feed.clone());
        tokio::spawn(tail(self.clone(), stream.clone(), feed.clone(), start));
        FeedReceiver { rx, feed }
    }

    fn join(&self, stream: &StreamName) -> Option<FeedReceiver> {
        let feeds = self.feeds.lock();
        let feed = feeds.get(stream)?;
        if feed.subscribers.load(Ordering::Acquire) == 0 {
            return None;
        }
        feed.subscribers.fetch_add(1, Ordering::AcqRel);
        Some(FeedReceiver {
            rx: feed.bus.subscribe(),
            feed: feed.clone(),
        })
    }

    /// Number of streams with a running feed.
    pub fn active(&self) -> usize {
        self.feeds
            .lock()
            .values()
            .filter(|f| f.subscribers.load(Ordering::Acquire) > 0)
            .count()
    }
}

/// Where a feed starts: the stream's last id and its
/// [`busbar_store::StreamInfo::added`], from one look at the stream.
#[derive(Debug, Clone, Copy, Default)]
struct Position {
    last: EventId,
    added: u64,
}

/// Counts what the log lost before the tailer read it.
#[derive(Debug)]
struct Skips {
    /// `added` when the feed started.
    base: u64,
    /// Events read since.
    read: u64,
    /// Events found missing so far.
    skipped: u64,
    /// Of those, how many the next event carried still has to report.
    pending: u64,
}

impl Skips {
    /// After a read that reached the end of the stream as it was when
    /// `added` was taken (before the read): how many more events are now
    /// known to have been removed unread. Every event counted in `added`
    /// was either read or removed; events appended after `added` was taken
    /// and read already only make the count low for a while, never high.
    fn newly_skipped(&mut self, added: u64) -> u64 {
        let missing = added.saturating_sub(self.base).saturating_sub(self.read);
        let new = missing.saturating_sub(self.skipped);
        self.skipped += new;
        self.pending += new;
        new
    }
}

async fn tail(feeds: Arc<Feeds>, stream: StreamName, feed: Arc<Feed>, start: Position) {
    let engine = &feeds.engine;
    let mut last = start.last;
    let mut skips = Skips {
        base: start.added,
        read: 0,
        skipped: 0,
        pending: 0,
    };
    loop {
        if feed.subscribers.load(Ordering::Acquire) == 0 {
            let mut map = feeds.feeds.lock();
            if feed.subscribers.load(Ordering::Acquire) == 0 {
                if map.get(&stream).is_some_and(|f| Arc::ptr_eq(f, &feed)) {
                    map.remove(&stream);
                }
                return;
            }
        }
        let mut appended = engine.subscribe_appends();
        appended.mark_unchanged();
        loop {
            let Some(from) = last.successor() else { return };
            let q = ReadQuery::range(from, EventId::MAX, TAIL_BATCH);
            // Taken before the read, so every event it counts was appended
            // before the read began.
            let added = engine.store().added(&stream).await.ok();
            // A stream that does not exist (yet) has nothing to tail.
            let events = engine.store().read(&stream, &q).await.unwrap_or_default();
            let n = events.len();
            skips.read += n as u64;
            let skipped = match added {
                Some(added) if n < TAIL_BATCH => skips.newly_skipped(added),
                _ => 0,
            };
            if skipped > 0 {
                tracing::debug!(stream = %stream, skipped, "live feed fell behind the stream's retention");
            }
            // Events a lone subscriber takes carry no shared messages.
            let shared = feed.subscribers.load(Ordering::Relaxed) > 1;
            for event in events {
                last = event.id();
                // No subscriber is fine: they come and go. Rendering is
                // left to the subscribers (see `LiveEvent::frame`).
                let mut live = if shared {
                    LiveEvent::new(event)
                } else {
                    LiveEvent::unshared(event)
                };
                // With nothing read, the count waits for the next event.
                live.skipped = std::mem::take(&mut skips.pending);
                let _ = feed.bus.publish(Arc::new(live));
            }
            if n < TAIL_BATCH {
                break;
            }
            // Let the subscribers this batch woke run before reading more.
            // They were woken on this thread; a tailer that kept reading a
            // busy stream would publish far ahead of them and make every
            // one of them lag.
            tokio::task::yield_now().await;
        }
        if engine.readiness().is_shutting_down() {
            return;
        }
        let _ = tokio::time::timeout(IDLE_POLL, appended.changed()).await;
    }
}
