//! Connected live clients, over WebSocket or a socket handed over by the
//! ingest listener: transport, tenant, role, session, joined rooms,
//! counters.
//!
//! A connection has the tenant of its caller's principal (none for an
//! untenanted token, a trusted socket or a daemon without tokens), and so
//! do its joins and leaves, so the ops routes show a tenant-bound caller
//! only its own connections ([`Sockets::rooms_of`]).
//!
//! A connection registers on accept and gets a [`SocketGuard`]; dropping the
//! guard — however the connection ends, cleanly, abruptly or by a panic in
//! its task — removes the socket and its room memberships, so membership
//! can never leak.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use busbar_engine::{Journal, OpsEvent, Transport};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a connection says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Publishes events (a relay agent).
    Producer,
    /// Watches sessions live.
    Dashboard,
    /// Shows a session to an audience, through the broadcast delay.
    Overlay,
    /// Subscribes to streams.
    Consumer,
}

impl Role {
    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Producer => "producer",
            Role::Dashboard => "dashboard",
            Role::Overlay => "overlay",
            Role::Consumer => "consumer",
        }
    }
}

/// What `/api/ops/sockets` reports for one connection.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SocketInfo {
    /// Connection id.
    pub id: u64,
    /// `ws`, or `unix` / `tcp` for an ingest connection that switched to
    /// the live protocol.
    pub transport: &'static str,
    /// Its caller's tenant (`None`: no tenant).
    pub tenant: Option<String>,
    /// Declared role (consumer until a hello says otherwise).
    pub role: Role,
    /// Declared session, if any.
    pub session: Option<String>,
    /// Peer address (`unix:pid=<pid>` on the Unix socket).
    pub remote: String,
    /// When it connected (ms since the epoch).
    pub connected_at: u64,
    /// Rooms it has joined.
    pub joined_rooms: Vec<String>,
    /// Open stream subscriptions.
    pub subscriptions: u32,
    /// Messages sent to it.
    pub sent: u64,
    /// Events it missed (lossy subscriptions that fell behind).
    pub dropped: u64,
}

/// A join or leave, for the ops API (runbook: compare joins and leaves).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SocketEvent {
    /// `connect`, `disconnect`, `join` or `leave`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Connection id.
    pub socket: u64,
    /// The connection's tenant.
    pub tenant: Option<String>,
    /// The room, for joins and leaves.
    pub room: Option<String>,
    /// When (ms since the epoch).
    pub at_ms: u64,
}

#[derive(Debug)]
struct Entry {
    transport: Transport,
    tenant: Option<String>,
    role: Role,
    session: Option<String>,
    remote: String,
    connected_at: u64,
    rooms: BTreeSet<String>,
    subscriptions: u32,
    sent: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
}

#[derive(Debug, Default)]
struct Inner {
    sockets: BTreeMap<u64, Entry>,
    events: VecDeque<SocketEvent>,
}

/// The registry of connected sockets.
#[derive(Debug)]
pub struct Sockets {
    inner: Mutex<Inner>,
    next: AtomicU64,
    max_events: usize,
    /// Where connects, hellos, joins, leaves and disconnects are also
    /// journaled (`socket:*`, `session:stop`).
    journal: Option<Journal>,
}

impl Default for Sockets {
    fn default() -> Self {
        Sockets::new(1000)
    }
}

impl Sockets {
    /// A registry keeping the last `max_events` joins and leaves.
    pub fn new(max_events: usize) -> Self {
        Sockets {
            inner: Mutex::new(Inner::default()),
            next: AtomicU64::new(1),
            max_events,
            journal: None,
        }
    }

    /// The same registry, journaling what happens to connections in
    /// `journal` as well.
    #[must_use]
    pub fn with_journal(mut self, journal: Journal) -> Self {
        self.journal = Some(journal);
        self
    }

    fn record(
        &self,
        inner: &mut Inner,
        kind: &'static str,
        (socket, tenant): (u64, Option<String>),
        room: Option<String>,
        now_ms: u64,
    ) {
        if let Some(journal) = &self.journal {
            let mut event = OpsEvent::new(journal_kind(kind), "socket")
                .tenant(tenant.as_deref())
                .field("socket", socket);
            event.at_ms = now_ms;
            if let Some(room) = &room {
                event = event.field("room", room.as_str());
            }
            if let Some(e) = inner.sockets.get(&socket) {
                event = describe(event, e);
            }
            journal.record(event);
        }
        if inner.events.len() >= self.max_events {
            inner.events.pop_front();
        }
        inner.events.push_back(SocketEvent {
            kind,
            socket,
            tenant,
            room,
            at_ms: now_ms,
        });
    }

    /// Registers a new connection of a caller of `tenant`.
    pub fn register(
        self: &Arc<Self>,
        transport: Transport,
        tenant: Option<String>,
        remote: String,
        now_ms: u64,
    ) -> SocketGuard {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let sent = Arc::new(AtomicU64::new(0));
        let dropped = Arc::new(AtomicU64::new(0));
        let mut inner = self.inner.lock();
        inner.sockets.insert(
            id,
            Entry {
                transport,
                tenant: tenant.clone(),
                role: Role::Consumer,
                session: None,
                remote,
                connected_at: now_ms,
                rooms: BTreeSet::new(),
                subscriptions: 0,
                sent: sent.clone(),
                dropped: dropped.clone(),
            },
        );
        self.record(&mut inner, "connect", (id, tenant.clone()), None, now_ms);
        SocketGuard {
            registry: self.clone(),
            id,
            tenant,
            sent,
            dropped,
        }
    }

    /// Every connection, oldest first.
    pub fn list(&self) -> Vec<SocketInfo> {
        self.list_where(|_| true)
    }

    /// One connection, if it is open.
    pub fn get(&self, id: u64) -> Option<SocketInfo> {
        self.list_where(|sid| sid == id).pop()
    }

    fn list_where(&self, keep: impl Fn(u64) -> bool) -> Vec<SocketInfo> {
        self.inner
            .lock()
            .sockets
            .iter()
            .filter(|(id, _)| keep(**id))
            .map(|(id, e)| SocketInfo {
                id: *id,
                transport: e.transport.as_str(),
                tenant: e.tenant.clone(),
                role: e.role,
                session: e.session.clone(),
                remote: e.remote.clone(),
                connected_at: e.connected_at,
                joined_rooms: e.rooms.iter().cloned().collect(),
                subscriptions: e.subscriptions,
                sent: e.sent.load(Ordering::Relaxed),
                dropped: e.dropped.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Connections by transport (`ws`, `unix`, `tcp`) and role.
    pub fn count_by_transport_and_role(&self) -> BTreeMap<(&'static str, Role), u64> {
        let mut out = BTreeMap::new();
        for e in self.inner.lock().sockets.values() {
            *out.entry((e.transport.as_str(), e.role)).or_default() += 1;
        }
        out
    }

    /// Members of each room.
    pub fn rooms(&self) -> BTreeMap<String, u64> {
        self.rooms_of(|_| true)
    }

    /// Members of each room among the connections whose tenant `sees`
    /// accepts (a room with none of them is left out).
    pub fn rooms_of(&self, sees: impl Fn(Option<&str>) -> bool) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for e in self.inner.lock().sockets.values() {
            if !sees(e.tenant.as_deref()) {
                continue;
            }
            for r in &e.rooms {
                *out.entry(r.clone()).or_default() += 1;
            }
        }
        out
    }

    /// Open subscriptions over all connections.
    pub fn subscriptions(&self) -> u64 {
        self.inner
            .lock()
            .sockets
            .values()
            .map(|e| u64::from(e.subscriptions))
            .sum()
    }

    /// Number of connections.
    pub fn len(&self) -> usize {
        self.inner.lock().sockets.len()
    }

    /// Whether nobody is connected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Recent connects, disconnects, joins and leaves, oldest first.
    pub fn events(&self) -> Vec<SocketEvent> {
        self.inner.lock().events.iter().cloned().collect()
    }
}

/// The journal's type for a registry event.
fn journal_kind(kind: &'static str) -> &'static str {
    match kind {
        "connect" => "socket:connect",
        "disconnect" => "socket:disconnect",
        "join" => "socket:join",
        "leave" => "socket:leave",
        other => other,
    }
}

/// Adds what is known of a connection to its ops event.
fn describe(event: OpsEvent, e: &Entry) -> OpsEvent {
    let mut event = event
        .field("transport", e.transport.as_str())
        .field("role", e.role.as_str())
        .field("remote", e.remote.as_str())
        .field(
            "rooms",
            e.rooms
                .iter()
                .map(|r| Value::from(r.as_str()))
                .collect::<Vec<_>>(),
        );
    if let Some(session) = &e.session {
        event = event.field("session", session.as_str());
    }
    event
}

/// A registered connection; dropping it unregisters.
#[derive(Debug)]
pub struct SocketGuard {
    registry: Arc<Sockets>,
    id: u64,
    tenant: Option<String>,
    sent: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
}

impl SocketGuard {
    /// The connection id.
    pub fn id(&self) -> u64 {
        self.id
    }

    fn with(&self, f: impl FnOnce(&mut Entry)) {
        if let Some(e) = self.registry.inner.lock().sockets.get_mut(&self.id) {
            f(e);
        }
    }

    /// Sets the declared role and session.
    pub fn hello(&self, role: Role, session: Option<String>) {
        self.with(|e| {
            e.role = role;
            e.session = session;
        });
        if let Some(journal) = &self.registry.journal {
            let inner = self.registry.inner.lock();
            if let Some(e) = inner.sockets.get(&self.id) {
                let event = OpsEvent::new("socket:hello", "socket")
                    .tenant(self.tenant.as_deref())
                    .field("socket", self.id);
                journal.record(describe(event, e));
            }
        }
    }

    /// Joins a room (idempotent); returns whether it was new.
    pub fn join(&self, room: &str, now_ms: u64) -> bool {
        let mut inner = self.registry.inner.lock();
        let new = inner
            .sockets
            .get_mut(&self.id)
            .is_some_and(|e| e.rooms.insert(room.to_owned()));
        if new {
            let who = (self.id, self.tenant.clone());
            self.registry
                .record(&mut inner, "join", who, Some(room.to_owned()), now_ms);
        }
        new
    }

    /// Leaves a room; returns whether it was a member.
    pub fn leave(&self, room: &str, now_ms: u64) -> bool {
        let mut inner = self.registry.inner.lock();
        let was = inner
            .sockets
            .get_mut(&self.id)
            .is_some_and(|e| e.rooms.remove(room));
        if was {
            let who = (self.id, self.tenant.clone());
            self.registry
                .record(&mut inner, "leave", who, Some(room.to_owned()), now_ms);
        }
        was
    }

    /// Adds `delta` (±1) to the subscription count.
    pub fn subscriptions(&self, delta: i32) {
        self.with(|e| e.subscriptions = e.subscriptions.saturating_add_signed(delta));
    }

    /// Counts messages sent.
    pub fn sent(&self, n: u64) {
        self.sent.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts events missed.
    pub fn dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        let now = busbar_event::now_ms();
        let mut inner = self.registry.inner.lock();
        let who = || (self.id, self.tenant.clone());
        let rooms: Vec<String> = inner
            .sockets
            .get(&self.id)
            .map(|e| e.rooms.iter().cloned().collect())
            .unwrap_or_default();
        for room in rooms {
            self.registry
                .record(&mut inner, "leave", who(), Some(room), now);
        }
        // Recorded while the entry is still there, so it names its role,
        // session and peer.
        self.registry
            .record(&mut inner, "disconnect", who(), None, now);
        if let Some(e) = inner.sockets.remove(&self.id) {
            if let (Some(journal), Some(session)) = (&self.registry.journal, &e.session) {
                let mut event = OpsEvent::new("session:stop", "session")
                    .tenant(self.tenant.as_deref())
                    .field("session", session.as_str())
                    .field("socket", self.id)
                    .field("reason", "disconnected");
                event.at_ms = now;
                journal.record(event);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropping_the_guard_cleans_up_rooms() {
        let reg = Arc::new(Sockets::default());
        let a = reg.register(Transport::WebSocket, None, "127.0.0.1:1".into(), 1);
        let b = reg.register(Transport::Unix, Some("t".into()), "unix".into(), 1);
        a.hello(Role::Dashboard, Some("s1".into()));
        assert!(a.join("session:s1", 2));
        assert!(!a.join("session:s1", 2));
        b.join("session:s1", 3);
        assert_eq!(reg.rooms()["session:s1"], 2);
        assert_eq!(reg.rooms_of(|t| t == Some("t"))["session:s1"], 1);
        assert!(reg.rooms_of(|t| t == Some("u")).is_empty());
        assert_eq!(reg.list()[1].tenant.as_deref(), Some("t"));
        let counts = reg.count_by_transport_and_role();
        assert_eq!(counts[&("ws", Role::Dashboard)], 1);
        assert_eq!(counts[&("unix", Role::Consumer)], 1);
        assert_eq!(reg.list()[1].transport, "unix");
        drop(a);
        assert_eq!(reg.rooms()["session:s1"], 1);
        drop(b);
        assert!(reg.rooms().is_empty());
        assert!(reg.is_empty());
        let of_t = reg.events().iter().filter(|e| e.tenant.is_some()).count();
        assert_eq!(of_t, 4, "b's connect, join, leave and disconnect");
        let kinds: Vec<&str> = reg.events().iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [
                "connect",
                "connect",
                "join",
                "join",
                "leave",
                "disconnect",
                "leave",
                "disconnect"
            ]
        );
    }
}
