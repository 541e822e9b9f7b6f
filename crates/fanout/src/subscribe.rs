//! Subscription tasks: each turns a stream (live feed, log, or both) into
//! messages on a connection's bounded send queue.

use std::sync::Arc;
use std::time::Duration;

use busbar_engine::{EngineError, Principal};
use busbar_event::{Event, EventId, StreamName};
use busbar_store::{ReadQuery, StoreError, TypeFilter};
use tokio::sync::watch;

use crate::feed::{Batch, FeedFailure, FeedItem, FeedReceiver, Received};
use crate::protocol::{event_frame, push_str, SlowPolicy};
use crate::queue::{Closed, SendQueue};
use crate::sockets::SocketGuard;
use crate::{CloseReason, Fanout, Outgoing as Message, Text};

/// Events read from the log at a time when catching up or delaying.
const LOG_BATCH: usize = 512;
/// Events a live subscription takes from its feed at a time.
const LIVE_BATCH: usize = 128;
/// The first pause after a failed catch-up read; it doubles up to
/// [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// How often a delayed room looks for events that became due.
const DELAY_TICK: Duration = Duration::from_millis(50);

/// Which events a subscription wants.
#[derive(Debug, Clone, Default)]
pub(crate) struct Filter {
    pub types: Option<TypeFilter>,
    pub tenant: Option<String>,
    pub key: Option<String>,
    pub session: Option<String>,
}

impl Filter {
    pub(crate) fn matches(&self, e: &Event) -> bool {
        self.types
            .as_ref()
            .is_none_or(|t| t.matches(e.event_type()))
            && self.tenant.as_deref().is_none_or(|t| e.tenant() == Some(t))
            && self.key.as_deref().is_none_or(|k| e.key() == Some(k))
            && self
                .session
                .as_deref()
                .is_none_or(|s| e.session() == Some(s))
    }
}

/// The connection's side of a subscription: its send queue, its counters
/// and a way to close it.
#[derive(Clone)]
pub(crate) struct Outbox {
    pub hub: Arc<Fanout>,
    pub queue: Arc<SendQueue>,
    pub close: watch::Sender<bool>,
    pub guard: Arc<SocketGuard>,
    pub write_deadline: Duration,
}

/// The close reason of a `slow: "disconnect"` subscriber's connection when
/// it falls behind the write deadline: a policy close (RFC 6455 1008).
pub(crate) const TOO_SLOW: CloseReason = CloseReason {
    code: 1008,
    reason: "too slow",
};

/// The connection is gone (or was closed for being too slow).
pub(crate) struct Gone;

impl Outbox {
    /// Queues a message, waiting for room. Under the disconnect policy a
    /// message that cannot be queued within the write deadline closes the
    /// connection.
    pub(crate) async fn send(&self, text: impl Into<Text>, policy: SlowPolicy) -> Result<(), Gone> {
        let msg = Message::Text(text.into());
        let sent = match policy {
            SlowPolicy::Disconnect => {
                match tokio::time::timeout(self.write_deadline, self.queue.push(msg)).await {
                    Ok(r) => r.is_ok(),
                    Err(_) => {
                        self.hub.count_close("too_slow");
                        if let Some(suppressed) = self.hub.slow_log.ready() {
                            tracing::info!(
                                socket = self.guard.id(),
                                suppressed,
                                "closing a client slower than the write deadline (slow: disconnect)"
                            );
                        }
                        self.queue.close_with(Message::Close(Some(TOO_SLOW)));
                        let _ = self.close.send(true);
                        false
                    }
                }
            }
            SlowPolicy::Drop => self.queue.push(msg).await.is_ok(),
        };
        if sent {
            self.guard.sent(1);
            Ok(())
        } else {
            Err(Gone)
        }
    }

    /// Queues a message if there is room now; `Ok(false)` when full.
    pub(crate) fn try_send(&self, text: impl Into<Text>) -> Result<bool, Gone> {
        let queued = self
            .queue
            .try_push(Message::Text(text.into()))
            .map_err(|Closed| Gone)?;
        if queued {
            self.guard.sent(1);
        }
        Ok(queued)
    }

    /// Queues as many of `msgs`, in order, as there is room for now, under
    /// one lock; returns how many. `msgs` is left empty: what did not fit
    /// is dropped.
    pub(crate) fn try_send_many(&self, msgs: &mut Vec<Message>) -> Result<usize, Gone> {
        let count = msgs.len();
        let queued = self
            .queue
            .try_push_many(&mut msgs.drain(..), count)
            .map_err(|Closed| Gone)?;
        self.guard.sent(queued as u64);
        Ok(queued)
    }
}

/// `{"type":"lagged","sub":<sub>,"missed":<n>}`.
fn lagged_frame(sub: &str, missed: u64) -> String {
    let mut out = String::with_capacity(sub.len() + 48);
    out.push_str("{\"type\":\"lagged\",\"sub\":");
    push_str(&mut out, sub);
    out.push_str(",\"missed\":");
    out.push_str(&missed.to_string());
    out.push('}');
    out
}

/// A lossy live subscription: new events as they come; a slow client
/// misses events and is told how many. `rx` was subscribed before the
/// client was told `subscribed`, so every event appended after that
/// answer reaches it (unless it lags).
///
/// Events are taken from the feed up to [`LIVE_BATCH`] at a time: under
/// load one wake-up of this task covers many events.
pub(crate) async fn live(r: Reader, mut rx: FeedReceiver) {
    let Reader {
        live,
        stream,
        sub,
        filter,
        policy,
        out,
        ..
    } = r;
    let metrics = live.metrics();
    let delivered_total = metrics.delivered.get(["live"]);
    let dropped_total = metrics.dropped.get(["live"]);
    let mut missed = 0u64;
    let mut batch = Vec::with_capacity(LIVE_BATCH);
    let mut frames = Vec::with_capacity(LIVE_BATCH + 1);
    // A feed failing since before this subscription joined says so now.
    let mut failures: Vec<Arc<FeedFailure>> = rx.failure().into_iter().collect();
    for failure in failures.drain(..) {
        if out.try_send(failure_frame(&sub, &failure)).is_err() {
            return;
        }
    }
    loop {
        match rx.recv_many(&mut batch, LIVE_BATCH).await {
            Batch::Items(_) => {}
            Batch::Lagged(n) => {
                missed += n;
                out.guard.dropped(n);
                dropped_total.add(n);
                continue;
            }
            Batch::Closed => return,
        }
        // Events the log lost before the feed read them (retention ahead
        // of a busy feed) count as missed, like events the feed dropped.
        let skipped: u64 = batch
            .iter()
            .map(|item| match item {
                FeedItem::Event(e) => e.skipped,
                FeedItem::Failed(_) => 0,
            })
            .sum();
        if skipped > 0 {
            missed += skipped;
            out.guard.dropped(skipped);
            dropped_total.add(skipped);
        }
        let matching = batch.drain(..).filter_map(|item| match item {
            FeedItem::Event(e) => filter.matches(&e.event).then_some(e),
            FeedItem::Failed(f) => {
                failures.push(f);
                None
            }
        });
        let (delivered, dropped) = match policy {
            SlowPolicy::Drop => {
                // The notice of what was missed goes first, then the
                // batch's events, all under one lock of the send queue.
                let notice = missed > 0;
                if notice {
                    frames.push(Message::Text(lagged_frame(&sub, missed).into()));
                }
                frames.extend(matching.map(|e| Message::Text(e.frame(&stream, &sub))));
                let events = (frames.len() - usize::from(notice)) as u64;
                let Ok(queued) = out.try_send_many(&mut frames) else {
                    return;
                };
                if notice && queued > 0 {
                    missed = 0;
                }
                let delivered = (queued - usize::from(notice && queued > 0)) as u64;
                missed += events - delivered;
                (delivered, events - delivered)
            }
            SlowPolicy::Disconnect => {
                let mut delivered = 0;
                for event in matching {
                    if missed > 0 {
                        match out.try_send(lagged_frame(&sub, missed)) {
                            Ok(true) => missed = 0,
                            Ok(false) => {}
                            Err(Gone) => return,
                        }
                    }
                    let frame = event.frame(&stream, &sub);
                    if out.send(frame, policy).await.is_err() {
                        return;
                    }
                    delivered += 1;
                }
                (delivered, 0)
            }
        };
        delivered_total.add(delivered);
        if dropped > 0 {
            out.guard.dropped(dropped);
            dropped_total.add(dropped);
            if let Some(suppressed) = live.slow_log.ready() {
                tracing::info!(
                    socket = out.guard.id(),
                    dropped,
                    suppressed,
                    "a live client reads slower than its stream: skipping events (it is told how many)"
                );
            }
        }
        for failure in failures.drain(..) {
            if out.try_send(failure_frame(&sub, &failure)).is_err() {
                return;
            }
        }
    }
}

/// `{"type":"error","error":<reason>,"message":..,"sub":<sub>}`: the feed
/// of a subscription cannot read its stream for now (it keeps trying).
fn failure_frame(sub: &str, failure: &FeedFailure) -> String {
    serde_json::json!({
        "type": "error",
        "error": failure.reason,
        "message": failure.message,
        "sub": sub,
    })
    .to_string()
}

/// What a log-reading subscription needs.
pub(crate) struct Reader {
    pub live: Arc<Fanout>,
    pub principal: Principal,
    pub stream: StreamName,
    pub sub: String,
    pub filter: Filter,
    pub policy: SlowPolicy,
    pub out: Outbox,
}

impl Reader {
    /// Sends every matching event after `last` up to `until` from the log;
    /// returns the new position, or `None` when the connection is gone.
    ///
    /// A failed read (the store, or admission) is not the end of what
    /// there is: the client is told once, and the read is tried again
    /// until it succeeds, so a resumable subscription never skips events.
    async fn catch_up(&self, mut last: EventId, until: EventId) -> Option<EventId> {
        let mut retry = RETRY_FIRST;
        let mut told = false;
        loop {
            let Some(from) = last.successor() else {
                return Some(last);
            };
            if from > until {
                return Some(last);
            }
            // No more than the engine grants, so a full answer is told
            // from the end of what there is.
            let want = LOG_BATCH.min(self.live.engine.config().max_read_count.max(1));
            let q = ReadQuery::range(from, until, want);
            let events = match self
                .live
                .engine
                .read_live(&self.principal, &self.stream, q)
                .await
            {
                Ok(events) => events,
                // A stream that does not exist yet has nothing to catch up on.
                Err(EngineError::Store(StoreError::NoSuchStream { .. })) => return Some(last),
                Err(e) => {
                    if !told {
                        tracing::warn!(stream = %self.stream, error = %e, "live catch-up cannot read its stream; retrying");
                        let failure = FeedFailure {
                            reason: e.reason(),
                            message: format!("cannot read `{}`: {e}", self.stream),
                        };
                        self.out.try_send(failure_frame(&self.sub, &failure)).ok()?;
                        told = true;
                    }
                    if self.out.queue.is_closed() {
                        return None;
                    }
                    tokio::time::sleep(e.retry_after().unwrap_or(retry).min(RETRY_MAX)).await;
                    retry = (retry * 2).min(RETRY_MAX);
                    continue;
                }
            };
            let n = events.len();
            for e in events {
                last = e.id();
                if self.filter.matches(&e) {
                    let frame = event_frame(&self.stream, &self.sub, &e);
                    self.out.send(frame, self.policy).await.ok()?;
                    self.live.metrics().delivered.get(["resumable"]).inc();
                }
            }
            if n < want {
                return Some(last);
            }
        }
    }
}

/// A resumable subscription from `start` (inclusive): catch up from the
/// log, then go live; events the live feed skipped (lag) are read from the
/// log again, so nothing is lost and nothing repeats.
///
/// `rx` was subscribed before catching up starts, so whatever is appended
/// meanwhile is in the feed.
pub(crate) async fn resumable(r: Reader, start: EventId, mut rx: FeedReceiver) {
    let Some(mut last) = r
        .catch_up(start.predecessor().unwrap_or(EventId::ZERO), EventId::MAX)
        .await
    else {
        return;
    };
    loop {
        match rx.recv().await {
            Received::Event(e) => {
                let id = e.event.id();
                if id <= last {
                    continue;
                }
                last = id;
                if r.filter.matches(&e.event) {
                    if r.out
                        .send(e.frame(&r.stream, &r.sub), r.policy)
                        .await
                        .is_err()
                    {
                        return;
                    }
                    r.live.metrics().delivered.get(["resumable"]).inc();
                }
            }
            Received::Failed(failure) => {
                if r.out.try_send(failure_frame(&r.sub, &failure)).is_err() {
                    return;
                }
            }
            Received::Lagged(_) => {
                // Missed in the feed, never in the log.
                match r.catch_up(last, EventId::MAX).await {
                    Some(pos) => last = pos,
                    None => return,
                }
            }
            Received::Closed => return,
        }
    }
}

/// A `broadcast:session:<id>` room: the session's events, each delivered
/// once its id time is at least the session's current delay in the past.
pub(crate) async fn delayed(r: Reader) {
    let session = r.filter.session.clone().unwrap_or_default();
    let now = busbar_event::now_ms();
    let delay = r
        .live
        .delays
        .get(&session, r.principal.tenant())
        .as_millis() as u64;
    // Start with what the audience would be seeing now.
    let mut last = EventId::new(now.saturating_sub(delay), 0)
        .predecessor()
        .unwrap_or(EventId::ZERO);
    loop {
        let delay = r
            .live
            .delays
            .get(&session, r.principal.tenant())
            .as_millis() as u64;
        let horizon = EventId::new(busbar_event::now_ms().saturating_sub(delay), u64::MAX);
        match r.catch_up(last, horizon).await {
            Some(pos) => last = pos,
            None => return,
        }
        if r.out.queue.is_closed() {
            return;
        }
        tokio::time::sleep(DELAY_TICK).await;
    }
}
