//! Subscriber churn against the real daemon: WebSockets join and leave at
//! 100 Hz while a publisher keeps writing, and the live hub must give back
//! everything they took — its counts and its memory.
//!
//! Each of [`CHURNERS`] threads opens a WebSocket every 10 ms that
//! subscribes to the stream and joins `session:<id>` and
//! `broadcast:session:<id>`, and retires the oldest of its [`RING`] open
//! ones: with a close frame, by ending the TCP stream without one (FIN),
//! by resetting it (RST), or after unsubscribing and leaving both rooms;
//! one in three first waits for an event.
//!
//! # What is measured
//!
//! Counts come from `/api/ops/sockets`, `/api/ops/rooms` and the
//! `busbar_ws_clients`, `busbar_ws_subscriptions`, `busbar_ws_rooms` and
//! `busbar_live_feeds` gauges of `/metrics`. Memory is the daemon's
//! `RssAnon` from `/proc/<pid>/status`: the anonymous part of its resident
//! set, where the heap lives. The file-backed part (`RssFile`, reported as
//! part of `VmRSS`) grows as code paths run for the first time, which says
//! nothing about leaks, so it is printed but not judged.
//!
//! Stored events must not grow memory either, or they would hide a leak or
//! fake one: the daemon runs the memory backend, every publish trims its
//! stream to [`KEEP`] events (`?maxlen=`), the events name a fixed set of
//! sessions, and the live feed's ring is small. A dashboard stays connected
//! for the whole test, so the feed and its ring live throughout instead of
//! being torn down and rebuilt each time the churn pauses.
//!
//! # Why two equal phases
//!
//! An allocator keeps some memory it has freed, and its caches settle over
//! the first connections: some growth right after a warm-up is the
//! allocator, not a leak. So the churn runs in three phases — a warm-up,
//! then two phases of [`PHASE`] cycles each — and every phase ends with the
//! churners' sockets closed and the counts back to the dashboard alone.
//! A daemon that gives back what each connection took grows by next to
//! nothing in the second phase; one that leaks `L` bytes per connection
//! grows by about `PHASE × L` in each.
//!
//! # The bound
//!
//! [`LEAK_PER_CYCLE`] (512 bytes) per cycle: at most 1.25 MiB over the
//! second phase, and 2.5 MiB since the warm-up. A healthy daemon measured
//! 0–400 KiB over the second phase and 0–700 KiB since the warm-up. Leaving
//! one registry entry behind per connection (its address, counters and the
//! names of its two rooms) measured 750–900 bytes per cycle, and a
//! forgotten 1 KiB buffer 1.1–1.4 KiB: both fail.

use std::io::ErrorKind;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::error::ProtocolError;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Error as WsError, Message};

use crate::harness::{http, options, start_in, Daemon};

type Ws = tungstenite::WebSocket<MaybeTlsStream<std::net::TcpStream>>;

/// The stream every subscriber reads and the publisher writes.
const STREAM: &str = "churn";
/// Events the stream keeps (`?maxlen=` on every publish).
const KEEP: u64 = 1000;
/// Sessions the events belong to; each churner joins one of them.
const SESSIONS: usize = 4;
/// Threads each opening a WebSocket every [`TICK`].
const CHURNERS: usize = 2;
/// 100 Hz per churner.
const TICK: Duration = Duration::from_millis(10);
/// WebSockets each churner keeps open: each lives `RING × TICK`, long
/// enough to receive events before it leaves.
const RING: usize = 6;
/// Connect/disconnect cycles of the warm-up.
const WARM_UP: usize = 600;
/// Cycles of each of the two measured phases.
const PHASE: usize = 2500;
/// Memory a healthy daemon may gain per connection once warm.
const LEAK_PER_CYCLE: u64 = 512;

/// The ops journal keeps every connect and disconnect, up to its bound:
/// a small bound here, so what the journal rightly keeps (in memory, with
/// this backend) is not taken for what a connection leaks.
const CONFIG: &str = r#"
[storage]
backend = "memory"

[live]
feed_capacity = 512

[journal]
max_events = 500
"#;

#[test]
fn subscriber_churn_returns_counts_and_memory_to_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_in(dir.path(), &options().config(CONFIG));
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = Publisher::start(&d, stop.clone());
    let anchor = Anchor::start(&d, stop.clone());
    let baseline = wait_for_counts(&d, &Counts::anchor_only(), "the dashboard alone");

    let started = Instant::now();
    churn(&d, WARM_UP);
    let warm = settle(&d, &baseline, "warm-up");
    churn(&d, PHASE);
    let first = settle(&d, &baseline, "first phase");
    churn(&d, PHASE);
    let second = settle(&d, &baseline, "second phase");
    let cycles = WARM_UP + 2 * PHASE;
    let elapsed = started.elapsed();

    stop.store(true, Ordering::Relaxed);
    let published = publisher.join();
    let delivered = anchor.join();
    wait_for_counts(&d, &Counts::default(), "nobody");

    println!(
        "{cycles} churn cycles in {elapsed:.1?} ({:.0}/s), {published} events published, \
         {delivered} delivered to the dashboard",
        cycles as f64 / elapsed.as_secs_f64()
    );
    for (name, m) in [("warm", &warm), ("first", &first), ("second", &second)] {
        println!(
            "after {name:>6}: RssAnon {} KiB, VmRSS {} KiB",
            m.anon >> 10,
            m.rss >> 10
        );
    }
    assert!(published > 0 && delivered > 0, "traffic flowed throughout");
    let (Some(warm), Some(first), Some(second)) = (warm.anon(), first.anon(), second.anon()) else {
        eprintln!("memory not checked: no /proc/<pid>/status here");
        return;
    };
    let phase_bound = PHASE as u64 * LEAK_PER_CYCLE;
    let second_growth = second.saturating_sub(first);
    println!(
        "second phase: {PHASE} cycles, grew {} KiB ({} B/cycle), bound {} KiB",
        second_growth >> 10,
        second_growth / PHASE as u64,
        phase_bound >> 10
    );
    assert!(
        second_growth < phase_bound,
        "the daemon kept {second_growth} bytes over {PHASE} connections after warming up \
         ({} per connection)",
        second_growth / PHASE as u64
    );
    let total_bound = 2 * phase_bound;
    let total_growth = second.saturating_sub(warm);
    println!(
        "since warm-up: {} cycles, grew {} KiB, bound {} KiB",
        2 * PHASE,
        total_growth >> 10,
        total_bound >> 10
    );
    assert!(
        total_growth < total_bound,
        "the daemon kept {total_growth} bytes over {} connections since warming up",
        2 * PHASE
    );
}

/// How one churned WebSocket ends.
#[derive(Debug, Clone, Copy)]
enum Leaving {
    /// A close frame, and the daemon's answer.
    Close,
    /// The client's side of the TCP stream ends (FIN) without a close
    /// frame.
    Eof,
    /// The TCP stream reset (RST), as a crashed client's kernel would.
    Reset,
    /// Unsubscribe and leave both rooms, then a close frame.
    LeaveFirst,
}

const LEAVINGS: [Leaving; 4] = [
    Leaving::Close,
    Leaving::Eof,
    Leaving::Reset,
    Leaving::LeaveFirst,
];

/// Runs `cycles` connect/disconnect cycles over [`CHURNERS`] threads and
/// returns once every churned socket is closed on the client's side.
fn churn(d: &Daemon, cycles: usize) {
    let url = ws_url(d);
    let threads: Vec<JoinHandle<()>> = (0..CHURNERS)
        .map(|t| {
            let url = url.clone();
            let share = cycles / CHURNERS + usize::from(t < cycles % CHURNERS);
            std::thread::spawn(move || churner(&url, t, share))
        })
        .collect();
    for t in threads {
        t.join().expect("churner");
    }
}

/// One churner: every tick a new subscriber joins and the oldest of the
/// ring leaves, each in its own way.
fn churner(url: &str, thread: usize, cycles: usize) {
    let mut ring: std::collections::VecDeque<(usize, Ws)> = Default::default();
    let mut next = Instant::now();
    for i in 0..cycles {
        next += TICK;
        match next.checked_duration_since(Instant::now()) {
            Some(wait) => std::thread::sleep(wait),
            // Behind (a loaded machine): go on at once, without a burst
            // to catch up.
            None => next = Instant::now(),
        }
        ring.push_back((i, join(url, &session_of(thread, i))));
        if ring.len() > RING {
            let (n, ws) = ring.pop_front().unwrap();
            leave(ws, n, &session_of(thread, n));
        }
    }
    for (n, ws) in ring {
        leave(ws, n, &session_of(thread, n));
    }
}

fn session_of(thread: usize, i: usize) -> String {
    format!("s{}", (thread + i) % SESSIONS)
}

/// A new subscriber: a stream subscription and both rooms of `session`,
/// each acknowledged before it counts as joined.
fn join(url: &str, session: &str) -> Ws {
    let (mut ws, _) = tungstenite::connect(url).expect("websocket");
    if let MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    }
    send(&mut ws, json!({"op":"subscribe","id":"c","stream":STREAM}));
    for room in [
        format!("session:{session}"),
        format!("broadcast:session:{session}"),
    ] {
        send(&mut ws, json!({"op":"join","room":room,"stream":STREAM}));
    }
    let mut acks = 0;
    while acks < 3 {
        let v = next(&mut ws);
        match v["type"].as_str() {
            Some("subscribed" | "joined") => acks += 1,
            Some("error") => panic!("refused: {v}"),
            _ => {}
        }
    }
    ws
}

/// Ends subscriber number `n` of a churner.
fn leave(mut ws: Ws, n: usize, session: &str) {
    if n % 3 == 0 {
        while next(&mut ws)["type"] != "event" {}
    }
    match LEAVINGS[n % LEAVINGS.len()] {
        Leaving::Close => close(ws),
        Leaving::Eof => {
            if let MaybeTlsStream::Plain(s) = ws.get_ref() {
                s.shutdown(std::net::Shutdown::Write).unwrap();
            }
            until_closed(ws);
        }
        Leaving::Reset => {
            if let MaybeTlsStream::Plain(s) = ws.get_ref() {
                reset_on_close(s);
            }
            drop(ws);
        }
        Leaving::LeaveFirst => {
            send(&mut ws, json!({"op":"unsubscribe","id":"c"}));
            for room in [
                format!("session:{session}"),
                format!("broadcast:session:{session}"),
            ] {
                send(&mut ws, json!({"op":"leave","room":room}));
            }
            let mut left = 0;
            while left < 2 {
                if next(&mut ws)["type"] == "left" {
                    left += 1;
                }
            }
            close(ws);
        }
    }
}

/// Sends a close frame and waits for the daemon to close its side.
fn close(mut ws: Ws) {
    ws.close(None).expect("close frame");
    until_closed(ws);
}

/// Reads until the daemon closes the connection, with or without echoing
/// a close frame.
fn until_closed(mut ws: Ws) {
    loop {
        match ws.read() {
            Ok(_) => {}
            Err(
                WsError::ConnectionClosed
                | WsError::AlreadyClosed
                | WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake),
            ) => return,
            Err(WsError::Io(e)) if e.kind() == ErrorKind::ConnectionReset => return,
            Err(e) => panic!("waiting for the daemon to close: {e}"),
        }
    }
}

/// Makes dropping `s` send a RST instead of a FIN.
fn reset_on_close(s: &std::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket we own, with a pointer to a live
    // `linger` and its exact size.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER: {}", std::io::Error::last_os_error());
}

fn ws_url(d: &Daemon) -> String {
    d.http_url().replacen("http://", "ws://", 1) + "/ws"
}

fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).unwrap();
}

/// The next JSON message (control frames skipped).
fn next(ws: &mut Ws) -> Value {
    loop {
        if let Message::Text(t) = ws.read().expect("message") {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

/// Publishes batches into [`STREAM`], trimmed to [`KEEP`] events, until
/// told to stop; every event names one of the [`SESSIONS`].
struct Publisher {
    thread: JoinHandle<u64>,
}

impl Publisher {
    fn start(d: &Daemon, stop: Arc<AtomicBool>) -> Publisher {
        let url = format!("{}/api/streams/{STREAM}/events?maxlen={KEEP}", d.http_url());
        let thread = std::thread::spawn(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(10)))
                .build()
                .into();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let batch: Vec<Value> = (0..8)
                    .map(|_| {
                        n += 1;
                        json!({
                            "type": "frame",
                            "session": format!("s{}", n as usize % SESSIONS),
                            "ts": now_ms(),
                            "n": n,
                        })
                    })
                    .collect();
                let status = agent
                    .post(&url)
                    .header("content-type", "application/json")
                    .send(serde_json::to_vec(&batch).unwrap())
                    .expect("publish")
                    .status();
                assert_eq!(status, 201, "publish refused");
                std::thread::sleep(Duration::from_millis(5));
            }
            n
        });
        Publisher { thread }
    }

    /// Events published.
    fn join(self) -> u64 {
        self.thread.join().expect("publisher")
    }
}

/// A dashboard connected for the whole test: its subscription keeps the
/// stream's feed (and its ring) alive while the churn comes and goes.
struct Anchor {
    thread: JoinHandle<u64>,
}

impl Anchor {
    fn start(d: &Daemon, stop: Arc<AtomicBool>) -> Anchor {
        let (mut ws, _) = tungstenite::connect(ws_url(d)).expect("websocket");
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
        }
        send(&mut ws, json!({"op":"hello","role":"dashboard"}));
        send(
            &mut ws,
            json!({"op":"subscribe","id":"all","stream":STREAM}),
        );
        send(
            &mut ws,
            json!({"op":"join","room":"session:s0","stream":STREAM}),
        );
        let events = Arc::new(AtomicU64::new(0));
        let thread = std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match ws.read() {
                    Ok(Message::Text(t)) if t.contains(r#""type":"event""#) => {
                        events.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(WsError::Io(e))
                        if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(e) => panic!("the dashboard lost its connection: {e}"),
                }
            }
            close(ws);
            events.load(Ordering::Relaxed)
        });
        Anchor { thread }
    }

    /// Events the dashboard received.
    fn join(self) -> u64 {
        self.thread.join().expect("dashboard")
    }
}

/// What the live hub holds, as its ops endpoints and gauges report it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Counts {
    /// `/api/ops/sockets`: connections.
    sockets: u64,
    /// `/api/ops/sockets`: stream subscriptions over all connections.
    subscriptions: u64,
    /// `/api/ops/sockets`: room memberships over all connections.
    joined: u64,
    /// `/api/ops/rooms`: rooms with a member.
    rooms: u64,
    /// `busbar_ws_clients`, summed over roles.
    clients_gauge: u64,
    /// `busbar_ws_subscriptions{kind="stream"}`.
    subscriptions_gauge: u64,
    /// `busbar_ws_subscriptions{kind="room"}`.
    joined_gauge: u64,
    /// `busbar_ws_rooms`.
    rooms_gauge: u64,
    /// `busbar_live_feeds`.
    feeds: u64,
}

impl Counts {
    /// The dashboard alone: one subscription, one room, one feed.
    fn anchor_only() -> Counts {
        Counts {
            sockets: 1,
            subscriptions: 1,
            joined: 1,
            rooms: 1,
            clients_gauge: 1,
            subscriptions_gauge: 1,
            joined_gauge: 1,
            rooms_gauge: 1,
            feeds: 1,
        }
    }

    fn read(d: &Daemon) -> Counts {
        let (status, sockets) = http(d, "GET", "/api/ops/sockets", None, None);
        assert_eq!(status, 200, "{sockets}");
        let sockets = sockets["sockets"].as_array().unwrap();
        let (status, rooms) = http(d, "GET", "/api/ops/rooms", None, None);
        assert_eq!(status, 200, "{rooms}");
        let metrics = d.metrics().unwrap();
        let gauge = |prefix: &str| -> u64 {
            metrics
                .lines()
                .filter(|l| l.starts_with(prefix))
                .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
                .sum()
        };
        Counts {
            sockets: sockets.len() as u64,
            subscriptions: sockets
                .iter()
                .map(|s| s["subscriptions"].as_u64().unwrap())
                .sum(),
            joined: sockets
                .iter()
                .map(|s| s["joinedRooms"].as_array().unwrap().len() as u64)
                .sum(),
            rooms: rooms["rooms"].as_object().unwrap().len() as u64,
            clients_gauge: gauge("busbar_ws_clients{"),
            subscriptions_gauge: gauge("busbar_ws_subscriptions{kind=\"stream\"}"),
            joined_gauge: gauge("busbar_ws_subscriptions{kind=\"room\"}"),
            rooms_gauge: gauge("busbar_ws_rooms "),
            feeds: gauge("busbar_live_feeds "),
        }
    }
}

/// Waits until the counts are `want`; returns them.
fn wait_for_counts(d: &Daemon, want: &Counts, what: &str) -> Counts {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = Counts::read(d);
        if got == *want {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "counts did not return to {what}: want {want:?}, got {got:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The daemon's memory, in bytes (0 where `/proc` is missing).
#[derive(Debug, Clone, Copy)]
struct Memory {
    /// `RssAnon`: heap and other anonymous pages.
    anon: u64,
    /// `VmRSS`: everything resident, code included.
    rss: u64,
}

impl Memory {
    fn read(pid: u32) -> Option<Memory> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| -> Option<u64> {
            let line = status.lines().find(|l| l.starts_with(name))?;
            let kib: u64 = line[name.len()..]
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()?;
            Some(kib << 10)
        };
        Some(Memory {
            anon: field("RssAnon:")?,
            rss: field("VmRSS:")?,
        })
    }

    fn anon(&self) -> Option<u64> {
        (self.anon > 0).then_some(self.anon)
    }
}

/// Once the churn of a phase is over: the counts must be back to
/// `baseline`; then the lowest of a few memory samples, so a publish or a
/// delivery in flight does not count as growth.
fn settle(d: &Daemon, baseline: &Counts, phase: &str) -> Memory {
    wait_for_counts(d, baseline, &format!("the baseline after the {phase}"));
    std::thread::sleep(Duration::from_millis(300));
    // The allocator hands freed pages back over its decay time (one
    // second, see the binary's jemalloc settings): read over longer than
    // that and keep the lowest.
    let mut low = Memory { anon: 0, rss: 0 };
    for _ in 0..10 {
        if let Some(m) = Memory::read(d.addresses().pid) {
            if low.anon == 0 || m.anon < low.anon {
                low = m;
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    low
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}
