//! Subscription tasks: each turns a stream (live feed, log, or both) into
//! messages on a connection's bounded send queue.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Message;
use busbar_engine::Principal;
use busbar_event::{render_event, Event, EventId, StreamName};
use busbar_store::{ReadQuery, TypeFilter};
use tokio::sync::{mpsc, watch};

use crate::feed::Received;
use crate::protocol::{event_frame, SlowPolicy};
use crate::sockets::SocketGuard;
use crate::Live;

/// Events read from the log at a time when catching up or delaying.
const LOG_BATCH: usize = 512;
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
    pub tx: mpsc::Sender<Message>,
    pub close: watch::Sender<bool>,
    pub guard: Arc<SocketGuard>,
    pub write_deadline: Duration,
}

/// The connection is gone (or was closed for being too slow).
pub(crate) struct Gone;

impl Outbox {
    /// Queues a message, waiting for room. Under the disconnect policy a
    /// message that cannot be queued within the write deadline closes the
    /// connection.
    pub(crate) async fn send(&self, text: String, policy: SlowPolicy) -> Result<(), Gone> {
        let msg = Message::Text(text.into());
        let sent = match policy {
            SlowPolicy::Disconnect => {
                match tokio::time::timeout(self.write_deadline, self.tx.send(msg)).await {
                    Ok(r) => r.is_ok(),
                    Err(_) => {
                        tracing::info!(
                            socket = self.guard.id(),
                            "closing a client slower than the write deadline"
                        );
                        let _ = self.close.send(true);
                        false
                    }
                }
            }
            SlowPolicy::Drop => self.tx.send(msg).await.is_ok(),
        };
        if sent {
            self.guard.sent(1);
            Ok(())
        } else {
            Err(Gone)
        }
    }

    /// Queues a message if there is room now; `Ok(false)` when full.
    pub(crate) fn try_send(&self, text: String) -> Result<bool, Gone> {
        match self.tx.try_send(Message::Text(text.into())) {
            Ok(()) => {
                self.guard.sent(1);
                Ok(true)
            }
            Err(mpsc::error::TrySendError::Full(_)) => Ok(false),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Gone),
        }
    }
}

fn lagged_frame(sub: &str, missed: u64) -> String {
    serde_json::json!({"type": "lagged", "sub": sub, "missed": missed}).to_string()
}

/// A lossy live subscription: new events as they come; a slow client
/// misses events and is told how many.
pub(crate) async fn live(r: Reader) {
    let Reader {
        live,
        stream,
        sub,
        filter,
        policy,
        out,
        ..
    } = r;
    let mut rx = live.feeds.subscribe(&stream).await;
    let metrics = live.engine.metrics().clone();
    let mut missed = 0u64;
    loop {
        let event = match rx.recv().await {
            Received::Event(e) => e,
            Received::Lagged(n) => {
                missed += n;
                out.guard.dropped(n);
                metrics.ws_dropped.get(["live"]).add(n);
                continue;
            }
            Received::Closed => return,
        };
        if !filter.matches(&event.event) {
            continue;
        }
        if missed > 0 {
            match out.try_send(lagged_frame(&sub, missed)) {
                Ok(true) => missed = 0,
                Ok(false) => {}
                Err(Gone) => return,
            }
        }
        let frame = event_frame(&sub, &event.json);
        let delivered = match policy {
            SlowPolicy::Drop => match out.try_send(frame) {
                Ok(sent) => sent,
                Err(Gone) => return,
            },
            SlowPolicy::Disconnect => match out.send(frame, policy).await {
                Ok(()) => true,
                Err(Gone) => return,
            },
        };
        if delivered {
            metrics.ws_delivered.get(["live"]).inc();
        } else {
            missed += 1;
            out.guard.dropped(1);
            metrics.ws_dropped.get(["live"]).inc();
        }
    }
}

/// What a log-reading subscription needs.
pub(crate) struct Reader {
    pub live: Arc<Live>,
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
    async fn catch_up(&self, mut last: EventId, until: EventId) -> Option<EventId> {
        loop {
            let Some(from) = last.successor() else {
                return Some(last);
            };
            if from > until {
                return Some(last);
            }
            let q = ReadQuery::range(from, until, LOG_BATCH);
            let events = match self
                .live
                .engine
                .read(&self.principal, &self.stream, q)
                .await
            {
                Ok(events) => events,
                // A stream that does not exist yet has nothing to catch up on.
                Err(_) => return Some(last),
            };
            let n = events.len();
            for e in events {
                last = e.id();
                if self.filter.matches(&e) {
                    let mut json = Vec::with_capacity(e.body().len() + 64);
                    render_event(&mut json, &self.stream, &e);
                    let frame = event_frame(&self.sub, &String::from_utf8_lossy(&json));
                    self.out.send(frame, self.policy).await.ok()?;
                    self.live
                        .engine
                        .metrics()
                        .ws_delivered
                        .get(["resumable"])
                        .inc();
                }
            }
            if n < LOG_BATCH {
                return Some(last);
            }
        }
    }
}

/// A resumable subscription from `start` (inclusive): catch up from the
/// log, then go live; events the live feed skipped (lag) are read from the
/// log again, so nothing is lost and nothing repeats.
pub(crate) async fn resumable(r: Reader, start: EventId) {
    // Subscribe first: whatever is appended while catching up is in the feed.
    let mut rx = r.live.feeds.subscribe(&r.stream).await;
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
                        .send(event_frame(&r.sub, &e.json), r.policy)
                        .await
                        .is_err()
                    {
                        return;
                    }
                    r.live
                        .engine
                        .metrics()
                        .ws_delivered
                        .get(["resumable"])
                        .inc();
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
    let delay = r.live.delays.get(&session).as_millis() as u64;
    // Start with what the audience would be seeing now.
    let mut last = EventId::new(now.saturating_sub(delay), 0)
        .predecessor()
        .unwrap_or(EventId::ZERO);
    loop {
        let delay = r.live.delays.get(&session).as_millis() as u64;
        let horizon = EventId::new(busbar_event::now_ms().saturating_sub(delay), u64::MAX);
        match r.catch_up(last, horizon).await {
            Some(pos) => last = pos,
            None => return,
        }
        if r.out.tx.is_closed() {
            return;
        }
        tokio::time::sleep(DELAY_TICK).await;
    }
}
