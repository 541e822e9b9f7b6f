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
//!
//! The tailer reads through the engine ([`Engine::read`] as the trusted
//! daemon, each subscriber having been checked when it subscribed), so
//! read limits and admission apply. A stream that does not exist yet has
//! nothing to tail; any other read error is not taken for "no events": it
//! is logged (once per kind of error until a read succeeds again),
//! counted in `busbar_live_feed_errors_total{reason}`, told to every
//! subscriber of the feed ([`Received::Failed`]), and the read is tried
//! again after a pause.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use busbar_bus::{Bus, RecvError, Subscriber};
use busbar_engine::{Engine, EngineError, Principal};
use busbar_event::{Event, EventId, StreamName};
use busbar_store::{ReadQuery, StoreError};
use parking_lot::Mutex;

use crate::protocol::event_frame;
use crate::Text;

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

type FrameSlots = [OnceLock<(Box<str>, Text)>; FRAME_SLOTS];

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
    pub fn frame(&self, stream: &StreamName, sub: &str) -> Text {
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

/// Why a feed could not read its stream (the store failed, or admission
/// refused the read): told to every subscriber, once per episode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedFailure {
    /// A stable reason (`storage_error`, `overloaded`...).
    pub reason: &'static str,
    /// What happened (never a payload).
    pub message: String,
}

/// What a feed carries.
#[derive(Debug, Clone)]
pub enum FeedItem {
    /// The next event.
    Event(Arc<LiveEvent>),
    /// The feed cannot read its stream for now; it keeps trying, and the
    /// events come once it can (nothing is skipped because of it).
    Failed(Arc<FeedFailure>),
}

struct Feed {
    bus: Bus<FeedItem>,
    subscribers: AtomicUsize,
    /// The failure of the episode going on, for subscribers that join
    /// after it was announced.
    failure: Mutex<Option<Arc<FeedFailure>>>,
}

/// The live feeds of every stream.
pub struct Feeds {
    engine: Arc<Engine>,
    metrics: Arc<crate::metrics::FanoutMetrics>,
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
    rx: Subscriber<FeedItem>,
    feed: Arc<Feed>,
}

/// What a live receive gives.
#[derive(Debug)]
pub enum Received {
    /// The next event.
    Event(Arc<LiveEvent>),
    /// The feed cannot read its stream for now (see [`FeedItem::Failed`]).
    Failed(Arc<FeedFailure>),
    /// This many events went by unseen; the next receive continues after
    /// them.
    Lagged(u64),
    /// The feed ended (shutdown).
    Closed,
}

/// What a batched live receive gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batch {
    /// This many items were added.
    Items(usize),
    /// This many events went by unseen (none were added); the next receive
    /// continues after them.
    Lagged(u64),
    /// The feed ended (shutdown).
    Closed,
}

impl FeedReceiver {
    /// Why the feed cannot read its stream, if it cannot now (a subscriber
    /// that joins during a failure learns of it here; later failures come
    /// as [`Received::Failed`]).
    pub fn failure(&self) -> Option<Arc<FeedFailure>> {
        self.feed.failure.lock().clone()
    }

    /// The next event, or how many were missed.
    ///
    /// # Cancel safety
    /// Cancel safe: a cancelled receive loses nothing.
    pub async fn recv(&mut self) -> Received {
        match self.rx.recv().await {
            Ok(FeedItem::Event(e)) => Received::Event(e),
            Ok(FeedItem::Failed(f)) => Received::Failed(f),
            Err(RecvError::Lagged(n)) => Received::Lagged(n),
            Err(RecvError::Closed) => Received::Closed,
        }
    }

    /// Waits for at least one item and moves up to `limit` ready ones into
    /// `out`: a busy feed is drained in batches, with one wake-up for many
    /// events.
    ///
    /// # Cancel safety
    /// Cancel safe: `out` is only extended when the future completes.
    pub async fn recv_many(&mut self, out: &mut Vec<FeedItem>, limit: usize) -> Batch {
        match self.rx.recv_many(out, limit.max(1)).await {
            Ok(n) => Batch::Items(n),
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
    pub fn new(
        engine: Arc<Engine>,
        metrics: Arc<crate::metrics::FanoutMetrics>,
        capacity: usize,
    ) -> Arc<Feeds> {
        Arc::new(Feeds {
            engine,
            metrics,
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
        // The stream may not exist yet: its feed then starts at the
        // beginning. Any other failure is the tailer's to report.
        let start = self
            .engine
            .position(&Principal::Trusted, stream)
            .await
            .map(|(last, added)| Position { last, added })
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
            failure: Mutex::new(None),
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

/// The first pause after a failed read; it doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(5);

/// Whether a read failed only because the stream does not exist (yet):
/// nothing to tail, not a failure.
fn no_stream(e: &EngineError) -> bool {
    matches!(e, EngineError::Store(StoreError::NoSuchStream { .. }))
}

/// A tailer's read failures: reported once per episode, retried with a
/// growing pause.
struct Failing {
    since: Option<&'static str>,
    pause: Duration,
}

impl Failing {
    /// Reports `e` (to the log and subscribers, once per reason) and waits
    /// before the next try.
    async fn failed(&mut self, feeds: &Feeds, feed: &Feed, stream: &StreamName, e: &EngineError) {
        let reason = e.reason();
        feeds.metrics.feed_errors.get([reason]).inc();
        if self.since != Some(reason) {
            tracing::warn!(stream = %stream, error = %e, "live feed cannot read its stream; retrying");
            let failure = Arc::new(FeedFailure {
                reason,
                message: format!("the live feed of `{stream}` cannot read it: {e}"),
            });
            *feed.failure.lock() = Some(failure.clone());
            let _ = feed.bus.publish(FeedItem::Failed(failure));
            self.since = Some(reason);
            self.pause = FIRST_RETRY;
        }
        let pause = e.retry_after().unwrap_or(self.pause).min(MAX_RETRY);
        tokio::time::sleep(pause).await;
        self.pause = (self.pause * 2).min(MAX_RETRY);
    }

    fn recovered(&mut self, feed: &Feed, stream: &StreamName) {
        if self.since.take().is_some() {
            *feed.failure.lock() = None;
            tracing::info!(stream = %stream, "live feed reads its stream again");
        }
    }
}

async fn tail(feeds: Arc<Feeds>, stream: StreamName, feed: Arc<Feed>, start: Position) {
    let engine = &feeds.engine;
    let trusted = Principal::Trusted;
    // No more than the engine grants, so a short answer is the end of the
    // stream.
    let batch = TAIL_BATCH.min(engine.config().max_read_count.max(1));
    let mut last = start.last;
    let mut skips = Skips {
        base: start.added,
        read: 0,
        skipped: 0,
        pending: 0,
    };
    let mut failing = Failing {
        since: None,
        pause: FIRST_RETRY,
    };
    'feed: loop {
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
            let q = ReadQuery::range(from, EventId::MAX, batch);
            // Taken before the read, so every event it counts was appended
            // before the read began.
            let added = match engine.added(&trusted, &stream).await {
                Ok(added) => Some(added),
                Err(e) if no_stream(&e) => None,
                Err(e) => {
                    failing.failed(&feeds, &feed, &stream, &e).await;
                    continue 'feed;
                }
            };
            let events = match engine.read_live(&trusted, &stream, q).await {
                Ok(events) => events,
                Err(e) if no_stream(&e) => Vec::new(),
                Err(e) => {
                    failing.failed(&feeds, &feed, &stream, &e).await;
                    continue 'feed;
                }
            };
            failing.recovered(&feed, &stream);
            let n = events.len();
            skips.read += n as u64;
            let skipped = match added {
                Some(added) if n < batch => skips.newly_skipped(added),
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
                let _ = feed.bus.publish(FeedItem::Event(Arc::new(live)));
            }
            if n < batch {
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
