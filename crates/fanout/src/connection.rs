//! One live connection, whatever carries it: a reader loop handling client
//! ops, a writer task draining the bounded send queue with a write
//! deadline, heartbeats (where the transport has them), and the
//! connection's subscriptions (aborted when it ends).
//!
//! A transport gives [`serve`] its two halves: an [`Inbound`] that yields
//! what the client sent, and an [`Outbound`] that writes batches of
//! [`Outgoing`] messages (one write and one flush per batch).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use busbar_engine::{EngineError, Principal, Scope, Transport};
use busbar_event::{parse_event, EventBatch, EventError, EventId, StreamName};
use busbar_store::{AppendOptions, TypeFilter};
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::Interval;

use crate::protocol::{check_message, error_frame, ClientOp, From, SlowPolicy};
use crate::queue::SendQueue;
use crate::rooms::Room;
use crate::sockets::{Role, SocketGuard};
use crate::subscribe::{self, Filter, Outbox};

use crate::{CloseReason, Fanout, FanoutError, Outgoing};

pub use crate::transport::{Flow, Inbound, Incoming, Outbound};

/// The close reason of connections the hub closes as busbar shuts down.
const GOING_AWAY: CloseReason = CloseReason {
    code: 1001,
    reason: "going away",
};

/// How long a closing connection waits for its last frame to be written:
/// the answer to a client's close frame, or a too-slow client's 1008.
const GOODBYE: Duration = Duration::from_secs(1);

/// Most messages the writer encodes before one flush to the socket.
const WRITE_BATCH: usize = 128;

/// Aborts a subscription task when dropped.
struct Task(AbortHandle);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Conn {
    live: Arc<Fanout>,
    principal: Principal,
    /// What publishes are counted under.
    transport: Transport,
    out: Outbox,
    subs: HashMap<String, Task>,
    rooms: HashMap<String, Task>,
    hello_session: Option<String>,
    /// The role the last `hello` declared (consumer until one does).
    role: Role,
}

/// A connection's caller and where it came from.
#[derive(Debug)]
pub struct Caller {
    /// Who is calling (checked by the transport: a token, or trusted).
    pub principal: Principal,
    /// `WebSocket`, or the ingest socket it was handed over from.
    pub transport: Transport,
    /// Ends the connection when it turns true (the ingest listener's
    /// shutdown), besides the hub's own.
    pub shutdown: Option<watch::Receiver<bool>>,
}

/// Serves a connection until the client leaves, stops answering
/// heartbeats, or is closed for being too slow. `guard` is its entry in
/// the hub's socket registry ([`crate::sockets::Sockets::register`]).
pub async fn serve<I: Inbound, O: Outbound>(
    live: Arc<Fanout>,
    mut source: I,
    mut sink: O,
    caller: Caller,
    guard: SocketGuard,
) {
    let config = live.config.clone();
    let queue = Arc::new(SendQueue::new(config.send_queue));
    let (close, mut closed) = watch::channel(false);
    let guard = Arc::new(guard);
    let out = Outbox {
        hub: live.clone(),
        queue: queue.clone(),
        close: close.clone(),
        guard: guard.clone(),
        write_deadline: config.write_deadline,
    };

    // Writer: the only task that touches the sink. It takes every message
    // waiting (up to WRITE_BATCH), encodes them into the WebSocket's or
    // the line writer's buffer and flushes once: one write to the socket
    // for the batch, not one per message. A client that takes none of a
    // batch for `stall_timeout` is disconnected; a slower one just lets the
    // send queue fill, and its lossy subscriptions skip events (and say
    // so) while its connection stays.
    let writer_close = close.clone();
    let stall = config.stall_timeout;
    let writer_queue = queue.clone();
    let stalled = live.clone();
    let socket_id = guard.id();
    let mut writer = tokio::spawn(async move {
        let mut batch = Vec::with_capacity(WRITE_BATCH);
        while writer_queue.pop_many(&mut batch, WRITE_BATCH).await {
            match tokio::time::timeout(stall, sink.write(&mut batch)).await {
                Ok(Ok(Flow::More)) => {}
                Ok(_) => break,
                Err(_) => {
                    stalled.count_close("too_slow");
                    if let Some(suppressed) = stalled.slow_log.ready() {
                        tracing::info!(
                            socket = socket_id,
                            suppressed,
                            stall_ms = stall.as_millis() as u64,
                            "closing a live client that took nothing for the stall timeout"
                        );
                    }
                    break;
                }
            }
        }
        // Senders fail from now on instead of filling a queue nobody reads.
        writer_queue.close();
        let _ = writer_close.send(true);
        let _ = sink.close().await;
    });

    let mut conn = Conn {
        live: live.clone(),
        principal: caller.principal,
        transport: caller.transport,
        out,
        subs: HashMap::new(),
        rooms: HashMap::new(),
        hello_session: None,
        role: Role::Consumer,
    };
    let mut closing = live.closing.subscribe();
    let mut shutdown = caller.shutdown;
    let mut heartbeat = source
        .has_heartbeats()
        .then(|| tokio::time::interval(config.heartbeat));
    if let Some(h) = &mut heartbeat {
        h.tick().await;
    }
    let mut last_heard = Instant::now();
    // The client's input ended: write what is due, then close.
    let mut ended = false;
    // The client sent a close frame: answer it (the closing handshake).
    let mut goodbye = false;
    // Close with this reason (a rule broken, or busbar going away).
    let mut farewell: Option<CloseReason> = None;
    loop {
        tokio::select! {
            incoming = source.next() => {
                last_heard = Instant::now();
                match incoming {
                    Incoming::Text(text) => conn.handle(text.as_str()).await,
                    Incoming::Refused { reason, message } => conn.reply(error_frame(reason, &message, None)).await,
                    Incoming::Heard => {}
                    Incoming::Closed => break,
                    Incoming::CloseFrame => {
                        goodbye = true;
                        break;
                    }
                    Incoming::End => {
                        ended = true;
                        break;
                    }
                    Incoming::Violation(reason) => {
                        live.count_close(reason.reason);
                        farewell = Some(reason);
                        break;
                    }
                }
            }
            _ = tick(&mut heartbeat) => {
                if last_heard.elapsed() > config.heartbeat * 2 {
                    tracing::info!(socket = guard.id(), "closing a client that stopped answering heartbeats");
                    break;
                }
                if conn.out.queue.try_push(Outgoing::Ping).is_err() {
                    break;
                }
            }
            _ = closed.changed() => break,
            // The hub only ever flips this to true: shutting down.
            Ok(()) = closing.changed() => {
                farewell = Some(GOING_AWAY);
                break;
            }
            () = stopped(&mut shutdown) => {
                farewell = Some(GOING_AWAY);
                break;
            }
        }
    }
    // Subscriptions and rooms end with the connection; the guard (dropped
    // with the last Arc) removes the socket and its room memberships.
    drop(conn);
    if ended || farewell.is_some() {
        // Like an ingest producer that half-closes, the client gets the
        // answers to everything it sent: the writer stops at the `Close`,
        // after the messages queued before it (a WebSocket client gets the
        // reason as its close frame).
        let _ = tokio::time::timeout(config.write_deadline, async {
            if queue.push(Outgoing::Close(farewell)).await.is_ok() {
                let _ = (&mut writer).await;
            }
        })
        .await;
    } else if queue.is_closing() {
        // Cut off for being too slow: its close frame is the one message
        // left, written after the batch in flight, within a second or not
        // at all.
        let _ = tokio::time::timeout(GOODBYE, &mut writer).await;
    }
    queue.close();
    if goodbye {
        // The writer stops at the closed queue and closes the sink, which
        // sends the close frame the WebSocket queued in answer.
        let _ = tokio::time::timeout(GOODBYE, &mut writer).await;
    }
    let _ = close.send(true);
    writer.abort();
}

/// The next heartbeat, or never on a transport without them.
async fn tick(heartbeat: &mut Option<Interval>) {
    match heartbeat {
        Some(h) => {
            h.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Resolves once `shutdown` turns true or its sender is gone; never
/// without one.
async fn stopped(shutdown: &mut Option<watch::Receiver<bool>>) {
    match shutdown {
        Some(rx) => {
            let _ = rx.wait_for(|stop| *stop).await;
        }
        None => std::future::pending().await,
    }
}

impl Conn {
    async fn reply(&self, text: String) {
        let _ = self.out.send(text, SlowPolicy::Drop).await;
    }

    async fn fail(&self, e: &FanoutError, reference: Option<u64>) {
        let mut frame = error_frame(e.reason(), &e.to_string(), reference);
        if let Some(after) = e.retry_after() {
            // `..}` → `..,"retry_after_ms":n}`
            frame.pop();
            frame.push_str(&format!(",\"retry_after_ms\":{}}}", after.as_millis()));
        }
        self.reply(frame).await;
    }

    fn stream_name(&self, name: Option<&str>) -> Result<StreamName, FanoutError> {
        match name {
            Some(n) => Ok(StreamName::new(n).map_err(EngineError::from)?),
            None => Ok(self.live.engine.default_stream(&self.principal)),
        }
    }

    async fn handle(&mut self, text: &str) {
        match check_message(text, self.live.config.max_depth) {
            // Not JSON: serde_json says why (`bad_message`), as ever.
            Ok(()) | Err(EventError::MalformedJson { .. }) => {}
            Err(e) => {
                let e = EngineError::Event(e);
                self.live.engine.count_error(self.transport, &e);
                return self.fail(&FanoutError::Engine(e), None).await;
            }
        }
        let op = match ClientOp::parse(text) {
            Ok(op) => op,
            Err(reason) => return self.fail(&FanoutError::BadMessage { reason }, None).await,
        };
        let result = match op {
            ClientOp::Hello { role, session } => self.hello(role, session),
            ClientOp::Ping => {
                self.reply(r#"{"type":"pong"}"#.to_owned()).await;
                Ok(())
            }
            ClientOp::Subscribe {
                id,
                stream,
                types,
                tenant,
                key,
                from,
                slow,
            } => {
                self.subscribe(id, stream.as_deref(), types, tenant, key, from, slow)
                    .await
            }
            ClientOp::Unsubscribe { id } => {
                if self.subs.remove(&id).is_some() {
                    self.out.guard.subscriptions(-1);
                }
                Ok(())
            }
            ClientOp::Join { room, stream } => self.join(&room, stream.as_deref()).await,
            ClientOp::Leave { room } => {
                if self.rooms.remove(&room).is_some() {
                    self.out.guard.leave(&room, busbar_event::now_ms());
                }
                self.reply(serde_json::json!({"type": "left", "room": room}).to_string())
                    .await;
                Ok(())
            }
            ClientOp::Publish {
                reference,
                events,
                event,
            } => {
                let raw: Vec<&serde_json::value::RawValue> = events
                    .unwrap_or_default()
                    .into_iter()
                    .chain(event)
                    .collect();
                match self.publish(&raw).await {
                    Ok((ids, duplicates)) => {
                        let ids: Vec<String> = ids.iter().map(EventId::to_string).collect();
                        let mut ack =
                            serde_json::json!({"type": "ack", "ref": reference, "ids": ids});
                        if duplicates > 0 {
                            ack["duplicates"] = duplicates.into();
                        }
                        self.reply(ack.to_string()).await;
                        Ok(())
                    }
                    Err(e) => {
                        // The engine counts the refusals of its own publish.
                        if let FanoutError::BadEvent { source, .. } = &e {
                            self.live.engine.count_error(self.transport, source);
                        }
                        return self.fail(&e, reference).await;
                    }
                }
            }
            ClientOp::SetDelay { session, delay_ms } => self.set_delay(&session, delay_ms).await,
        };
        if let Err(e) = result {
            self.fail(&e, None).await;
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn subscribe(
        &mut self,
        id: String,
        stream: Option<&str>,
        types: Option<Vec<String>>,
        tenant: Option<String>,
        key: Option<String>,
        from: Result<From, &'static str>,
        slow: SlowPolicy,
    ) -> Result<(), FanoutError> {
        let stream = self.stream_name(stream)?;
        self.principal.require(Scope::Consume)?;
        self.principal.check_stream(&stream)?;
        if self.subs.len() >= self.live.config.max_subscriptions {
            return Err(FanoutError::TooManySubscriptions {
                limit: self.live.config.max_subscriptions,
            });
        }
        let from = from.map_err(|reason| FanoutError::BadMessage {
            reason: reason.to_owned(),
        })?;
        let filter = Filter {
            types: types.map(TypeFilter::new),
            // A tenant-bound token only ever sees its tenant's events.
            tenant: self.principal.tenant().map(str::to_owned).or(tenant),
            key,
            session: None,
        };
        // On the feed before `subscribed` goes out: every event appended
        // after the client reads that answer reaches the subscription.
        let rx = self.live.feeds.subscribe(&stream).await;
        let reader = self.reader(stream, id.clone(), filter, slow);
        let task = match from {
            From::Live => tokio::spawn(subscribe::live(reader, rx)),
            From::Id(start) => tokio::spawn(subscribe::resumable(reader, start, rx)),
            From::Time(ms) => tokio::spawn(subscribe::resumable(reader, EventId::new(ms, 0), rx)),
        };
        if self
            .subs
            .insert(id.clone(), Task(task.abort_handle()))
            .is_none()
        {
            self.out.guard.subscriptions(1);
        }
        self.reply(serde_json::json!({"type": "subscribed", "sub": id}).to_string())
            .await;
        Ok(())
    }

    fn reader(
        &self,
        stream: StreamName,
        sub: String,
        filter: Filter,
        policy: SlowPolicy,
    ) -> subscribe::Reader {
        subscribe::Reader {
            live: self.live.clone(),
            principal: self.principal.clone(),
            stream,
            sub,
            filter,
            policy,
            out: self.out.clone(),
        }
    }

    async fn join(&mut self, name: &str, stream: Option<&str>) -> Result<(), FanoutError> {
        let room: Room = name.parse()?;
        // The runbook's failure mode: an overlay on the live room shows
        // what the director delayed.
        if self.role == Role::Overlay && !matches!(room, Room::Broadcast(_)) {
            return Err(FanoutError::RoleForbids {
                role: self.role.as_str(),
                room: name.to_owned(),
            });
        }
        let stream = self.stream_name(stream)?;
        self.principal.require(Scope::Consume)?;
        self.principal.check_stream(&stream)?;
        if !self.rooms.contains_key(name) && self.rooms.len() >= self.live.config.max_subscriptions
        {
            return Err(FanoutError::TooManySubscriptions {
                limit: self.live.config.max_subscriptions,
            });
        }
        let filter = Filter {
            session: Some(room.session().to_owned()),
            tenant: self.principal.tenant().map(str::to_owned),
            ..Filter::default()
        };
        let task = match &room {
            Room::Session(_) => {
                let rx = self.live.feeds.subscribe(&stream).await;
                let reader = self.reader(stream, room.name(), filter, SlowPolicy::Drop);
                tokio::spawn(subscribe::live(reader, rx))
            }
            Room::Broadcast(_) => {
                let reader = self.reader(stream, room.name(), filter, SlowPolicy::Drop);
                tokio::spawn(subscribe::delayed(reader))
            }
        };
        // Re-joining replaces the old task (dropping it aborts it).
        self.rooms
            .insert(name.to_owned(), Task(task.abort_handle()));
        self.out.guard.join(name, busbar_event::now_ms());
        self.reply(serde_json::json!({"type": "joined", "room": name}).to_string())
            .await;
        Ok(())
    }

    /// Publishes a message's events; answers their ids in order and how
    /// many were repeats (idempotent publish: answered with the original's
    /// id, not stored again).
    async fn publish(
        &self,
        raw: &[&serde_json::value::RawValue],
    ) -> Result<(Vec<EventId>, usize), FanoutError> {
        let engine = &self.live.engine;
        let limits = busbar_event::Limits {
            max_event_bytes: self.live.config.max_message_bytes,
            max_depth: self.live.config.max_depth,
        };
        let default = engine.default_stream(&self.principal);
        let mut batches: Vec<(StreamName, EventBatch)> = Vec::new();
        let mut order = Vec::with_capacity(raw.len());
        let mut hello_frames = Vec::new();
        for (index, r) in raw.iter().enumerate() {
            let mut parsed =
                parse_event(r.get().as_bytes(), &limits).map_err(|e| FanoutError::BadEvent {
                    index,
                    source: EngineError::from(e),
                })?;
            // A tenant-bound token's events carry its tenant, as on every
            // other transport (its own subscriptions only see those).
            if parsed.tenant.is_none() {
                parsed.tenant = self.principal.tenant().map(std::borrow::Cow::Borrowed);
            }
            // Frames of a producer that said its session in hello count for
            // that session even when they do not repeat it (once published).
            if parsed.session.is_none() && self.hello_session.is_some() {
                hello_frames.push(parsed.ts);
            }
            let stream = parsed.stream.clone().unwrap_or_else(|| default.clone());
            engine
                .check_publish(&self.principal, &stream, parsed.tenant.as_deref())
                .map_err(|source| FanoutError::BadEvent { index, source })?;
            let at = match batches.iter().position(|(s, _)| *s == stream) {
                Some(at) => at,
                None => {
                    batches.push((stream, EventBatch::new()));
                    batches.len() - 1
                }
            };
            batches[at]
                .1
                .push_parsed(&parsed)
                .map_err(|e| FanoutError::BadEvent {
                    index,
                    source: EngineError::from(e),
                })?;
            order.push(at);
        }
        let mut ids_by_batch = Vec::with_capacity(batches.len());
        let mut duplicates = 0;
        for (stream, batch) in batches {
            let appended = engine
                .publish_detailed(
                    &self.principal,
                    &stream,
                    batch,
                    AppendOptions::default(),
                    self.transport,
                )
                .await?;
            duplicates += appended.duplicates.len();
            ids_by_batch.push(appended.ids.into_iter());
        }
        if let Some(session) = &self.hello_session {
            let now = busbar_event::now_ms();
            for ts in hello_frames {
                self.live
                    .sessions
                    .observe(self.principal.tenant(), session, ts, now);
            }
        }
        let ids = order
            .into_iter()
            .filter_map(|at| ids_by_batch[at].next())
            .collect();
        Ok((ids, duplicates))
    }

    /// A hello names the connection's role and, for a producer, its
    /// session, which must not be another tenant's (see
    /// [`crate::sessions`]); a refused hello changes nothing.
    fn hello(&mut self, role: Role, session: Option<String>) -> Result<(), FanoutError> {
        if let Some(id) = &session {
            let tenant = self.principal.tenant();
            self.live
                .sessions
                .claim(tenant, id, busbar_event::now_ms())
                .map_err(|_| FanoutError::SessionTaken {
                    session: id.clone(),
                })?;
        }
        self.out.guard.hello(role, session.clone());
        self.hello_session = session;
        self.role = role;
        Ok(())
    }

    /// Sets a session's broadcast delay: the director scope, and the
    /// session's tenant. A tenant-bound director claims a session nobody
    /// used yet; an untenanted one may direct any session, and its delay is
    /// kept with the session's owner.
    async fn set_delay(&self, session: &str, delay_ms: u64) -> Result<(), FanoutError> {
        self.principal.require(Scope::Director)?;
        let room: Room = format!("broadcast:session:{session}").parse()?;
        let delay = Duration::from_millis(delay_ms);
        self.live.delays.check(delay)?;
        let now = busbar_event::now_ms();
        let tenant = match self.principal.tenant() {
            Some(t) => {
                self.live
                    .sessions
                    .claim(Some(t), room.session(), now)
                    .map_err(|_| FanoutError::SessionTaken {
                        session: session.to_owned(),
                    })?;
                Some(t.to_owned())
            }
            None => self.live.sessions.owner(room.session()).flatten(),
        };
        self.live
            .delays
            .set(room.session(), tenant.as_deref(), delay)?;
        tracing::info!(session, ?tenant, delay_ms, "broadcast delay set");
        self.live.engine().administered(
            &self.principal,
            &busbar_engine::AdminAction::DelaySet {
                session: room.session(),
                tenant: tenant.as_deref(),
                delay_ms,
            },
        );
        self.live.sessions.record(
            "broadcast:delay:set",
            tenant.as_deref(),
            session,
            format!("broadcast delay set to {delay_ms} ms"),
            now,
        );
        self.reply(
            serde_json::json!({"type": "delay", "session": session, "delay_ms": delay_ms})
                .to_string(),
        )
        .await;
        Ok(())
    }
}
