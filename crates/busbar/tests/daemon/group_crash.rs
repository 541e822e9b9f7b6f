//! Consumer groups under failure, through the real daemon: consumers that
//! die mid-batch, and the daemon killed with SIGKILL while it delivers and
//! while it moves events to the dead-letter stream.
//!
//! Fast enough for CI by default; `BUSBAR_LONG_CRASH=1` runs many more
//! rounds and events. Randomness is seeded and the seed printed
//! (`BUSBAR_TEST_SEED` replays one).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::group_client::{
    ack_op, create_group, deliveries, ids, long_mode, publish_n, read_op, tcp_addr, unix_path,
    Conn, Rng,
};
use crate::harness::{options, read_all, start_in, Daemon};

/// An id as a sortable pair.
fn key(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').expect("an id");
    (ms.parse().unwrap(), seq.parse().unwrap())
}

/// What the consumers saw, in the order they saw it.
#[derive(Default)]
struct Seen {
    /// Delivery counts of each id, in the order they arrived.
    deliveries: HashMap<String, Vec<u64>>,
    /// Ids whose ack was answered as acked.
    acked: BTreeSet<String>,
    /// Ids an ack was sent for (answered or not: the daemon may have died
    /// after making it durable and before answering).
    ack_sent: BTreeSet<String>,
    /// Ids published and acknowledged by the daemon.
    published: BTreeSet<String>,
    /// Broken promises found on the way.
    violations: Vec<String>,
}

impl Seen {
    fn delivered(&mut self, got: &[crate::group_client::Delivery]) {
        for g in got {
            if self.acked.contains(&g.id) {
                self.violations.push(format!(
                    "{} delivered (count {}) after its ack",
                    g.id, g.count
                ));
            }
            let counts = self.deliveries.entry(g.id.clone()).or_default();
            if counts.last().is_some_and(|last| g.count <= *last) {
                self.violations.push(format!(
                    "{}: delivery count went from {:?} to {}",
                    g.id,
                    counts.last(),
                    g.count
                ));
            }
            counts.push(g.count);
        }
    }
}

fn start(dir: &Path) -> Daemon {
    start_in(
        dir,
        &options()
            .env("BUSBAR_DURABILITY", "always")
            .env("BUSBAR_GROUP_SWEEP_INTERVAL", "100ms"),
    )
}

/// (a) A consumer reads a batch, acks part of it (or none) and disconnects.
/// After `ack_wait` the rest goes to other consumers; in the end every
/// event is acked, and each event's delivery counts are exactly 1, 2, ...
#[test]
fn consumers_killed_mid_batch_leave_their_events_to_others() {
    let mut rng = Rng::from_env("consumers_killed_mid_batch");
    let events = if long_mode() { 20_000 } else { 600 };
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path());
    let mut admin = Conn::tcp(&d, None);
    create_group(
        &mut admin,
        "crash-a",
        "g",
        json!({"ack_wait_ms": 300, "max_deliver": 1000}),
    );
    let published = publish_n(&mut admin, "crash-a", "t", events);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let deadline = Instant::now() + Duration::from_secs(if long_mode() { 600 } else { 60 });

    let workers: Vec<JoinHandle<()>> = (0..4)
        .map(|w| {
            let seen = seen.clone();
            let mut rng = Rng::from_seed(rng.next());
            let (tcp, unix) = (tcp_addr(&d), unix_path(&d));
            std::thread::spawn(move || {
                let mut generation = 0;
                while seen.lock().unwrap().acked.len() < events && Instant::now() < deadline {
                    generation += 1;
                    let name = format!("w{w}-{generation}");
                    let mut c = if generation % 2 == 0 {
                        Conn::tcp_at(&tcp, None)
                    } else {
                        Conn::unix_at(&unix)
                    };
                    // A consumer lives for a few batches, then dies or leaves.
                    for _ in 0..rng.range(1, 4) {
                        let count = rng.range(1, 60);
                        let got = deliveries(&c.call(read_op("crash-a", "g", &name, count, 100)));
                        seen.lock().unwrap().delivered(&got);
                        let all: Vec<String> = got.iter().map(|g| g.id.clone()).collect();
                        let dies = rng.range(0, 10) < 3;
                        let keep = if dies {
                            rng.range(0, all.len() as u64 + 1) as usize
                        } else {
                            all.len()
                        };
                        if keep > 0 {
                            let a = c.call(ack_op("crash-a", "g", &name, &all[..keep]));
                            let acked = ids(&a, "acked");
                            assert_eq!(acked, all[..keep], "{a}");
                            seen.lock().unwrap().acked.extend(acked);
                        }
                        if dies {
                            break;
                        }
                    }
                    c.kill();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let seen = seen.lock().unwrap();
    assert!(seen.violations.is_empty(), "{:#?}", seen.violations);
    assert_eq!(
        seen.acked.len(),
        events,
        "every event acked before the deadline"
    );
    let mut redelivered = 0;
    for id in &published {
        let counts = &seen.deliveries[id];
        let expected: Vec<u64> = (1..=counts.len() as u64).collect();
        assert_eq!(counts, &expected, "{id}: delivery counts are exact");
        redelivered += usize::from(counts.len() > 1);
    }
    assert!(redelivered > 0, "some consumer died holding events");
    let info = admin.call(json!({"op": "group", "stream": "crash-a", "group": "g"}));
    assert_eq!(info["group"]["pending"], 0, "{info}");
}

/// Runs consumers (and optionally a producer) against `d` until `stop`
/// or until the daemon dies under them.
fn spawn_load(
    d: &Daemon,
    stream: &'static str,
    seen: &Arc<Mutex<Seen>>,
    rng: &mut Rng,
    stop: &Arc<AtomicBool>,
    produce: bool,
) -> Vec<JoinHandle<()>> {
    let mut out = Vec::new();
    if produce {
        let (seen, stop, tcp) = (seen.clone(), stop.clone(), tcp_addr(d));
        out.push(std::thread::spawn(move || {
            let Some(mut c) = Conn::try_tcp_at(&tcp) else {
                return;
            };
            while !stop.load(Ordering::Relaxed) {
                let Some(got) = c.try_publish(stream, 20) else {
                    return;
                };
                seen.lock().unwrap().published.extend(got);
            }
        }));
    }
    for w in 0..3 {
        let (seen, stop, tcp) = (seen.clone(), stop.clone(), tcp_addr(d));
        let mut rng = Rng::from_seed(rng.next());
        out.push(std::thread::spawn(move || {
            let Some(mut c) = Conn::try_tcp_at(&tcp) else {
                return;
            };
            let name = format!("c{w}");
            while !stop.load(Ordering::Relaxed) {
                let count = rng.range(1, 40);
                let Some(a) = c.try_call(read_op(stream, "g", &name, count, 100)) else {
                    return;
                };
                if a.get("error").is_some() {
                    return;
                }
                let got = deliveries(&a);
                seen.lock().unwrap().delivered(&got);
                // Some batches are left unacked: redelivered after ack_wait.
                if got.is_empty() || rng.range(0, 10) < 2 {
                    continue;
                }
                let all: Vec<String> = got.iter().map(|g| g.id.clone()).collect();
                seen.lock().unwrap().ack_sent.extend(all.iter().cloned());
                let Some(a) = c.try_call(ack_op(stream, "g", &name, &all)) else {
                    return;
                };
                if a.get("acked").is_some() {
                    seen.lock().unwrap().acked.extend(ids(&a, "acked"));
                }
            }
        }));
    }
    out
}

/// (b) SIGKILL while consumers read and ack under `always`, restarted on
/// the same data directory: every published event is delivered, delivery
/// counts never go backwards, acked events never come back.
#[test]
fn sigkill_during_delivery_loses_nothing_and_redelivers_no_acked_event() {
    let mut rng = Rng::from_env("sigkill_during_delivery");
    let rounds = if long_mode() { 25 } else { 4 };
    let dir = tempfile::tempdir().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    for round in 0..rounds {
        let d = start(dir.path());
        if round == 0 {
            let mut admin = Conn::tcp(&d, None);
            create_group(
                &mut admin,
                "crash-b",
                "g",
                json!({"ack_wait_ms": 400, "max_deliver": 10_000}),
            );
        }
        let stop = Arc::new(AtomicBool::new(false));
        let load = spawn_load(&d, "crash-b", &seen, &mut rng, &stop, true);
        std::thread::sleep(Duration::from_millis(rng.range(200, 1200)));
        d.kill();
        stop.store(true, Ordering::Relaxed);
        for t in load {
            t.join().unwrap();
        }
    }
    // Drain everything that is left.
    let d = start(dir.path());
    let mut c = Conn::tcp(&d, None);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = deliveries(&c.call(read_op("crash-b", "g", "drain", 500, 500)));
        seen.lock().unwrap().delivered(&got);
        if !got.is_empty() {
            let all: Vec<String> = got.iter().map(|g| g.id.clone()).collect();
            let a = c.call(ack_op("crash-b", "g", "drain", &all));
            seen.lock().unwrap().acked.extend(ids(&a, "acked"));
            continue;
        }
        let info = c.call(json!({"op": "group", "stream": "crash-b", "group": "g"}));
        if info["group"]["pending"] == 0 && info["group"]["lag"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "not drained: {info}");
    }
    let seen = seen.lock().unwrap();
    assert!(seen.violations.is_empty(), "{:#?}", seen.violations);
    assert!(!seen.published.is_empty());
    let missing: Vec<&String> = seen
        .published
        .iter()
        .filter(|id| !seen.deliveries.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "published, never delivered: {missing:?}"
    );
    // An event whose ack went unanswered (the daemon died after making it
    // durable) is done without its ack being seen; any other must have
    // been acked.
    let unacked: Vec<&String> = seen
        .published
        .iter()
        .filter(|id| !seen.acked.contains(*id) && !seen.ack_sent.contains(*id))
        .collect();
    assert!(unacked.is_empty(), "never acked: {unacked:?}");
}

/// Where each event of `stream` is for `group`: pending, dead-lettered
/// (with how many dead-letter entries) or not yet delivered.
fn placement(d: &Daemon, stream: &str, group: &str, all: &[String]) -> Result<(), String> {
    let mut c = Conn::tcp(d, None);
    let info = c.call(json!({"op": "group", "stream": stream, "group": group}));
    let cursor = key(info["group"]["last_delivered_id"].as_str().unwrap());
    let pending: BTreeMap<String, serde_json::Value> = c
        .call(json!({"op": "pending", "stream": stream, "group": group, "count": 10_000}))
        ["pending"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap().to_owned(), p.clone()))
        .collect();
    let mut dlq: BTreeMap<String, u32> = BTreeMap::new();
    let mut dlq_entries: BTreeMap<String, String> = BTreeMap::new();
    for e in read_all(d, &format!("{stream}:dlq"), None) {
        if e["meta"]["group"] == group {
            let original = e["meta"]["original_id"].as_str().unwrap().to_owned();
            *dlq.entry(original.clone()).or_default() += 1;
            dlq_entries.insert(original, format!("{} {}", e["id"], e["meta"]));
        }
    }
    let mut wrong = Vec::new();
    for (id, n) in &dlq {
        if *n > 1 {
            wrong.push(format!("{id} is {n} times in the dead-letter stream"));
        }
    }
    for id in all {
        let places = u32::from(pending.contains_key(id))
            + dlq.get(id).copied().unwrap_or(0)
            + u32::from(key(id) > cursor);
        if places != 1 {
            wrong.push(format!(
                "{id} is in {places} places (pending {}, dlq {} {}, undelivered {})",
                pending.get(id).map_or("no".to_owned(), ToString::to_string),
                dlq.get(id).copied().unwrap_or(0),
                dlq_entries.get(id).map_or("", String::as_str),
                key(id) > cursor
            ));
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!("group {group}: {wrong:#?}"))
    }
}

/// [`placement`], looked at again while it fails: the sweeper may move an
/// entry from the pending list to the dead-letter stream between the two
/// reads (entries only move forward, so such a move shows as "in two
/// places" for a moment, never as lost). A wrong placement that stays is
/// reported.
fn settled_placement(d: &Daemon, stream: &str, group: &str, all: &[String]) -> Result<(), String> {
    let mut last = Ok(());
    for _ in 0..10 {
        last = placement(d, stream, group, all);
        if last.is_ok() {
            return last;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    last
}

fn spawn_nackers(
    d: &Daemon,
    stream: &'static str,
    group: &'static str,
    stop: &Arc<AtomicBool>,
) -> Vec<JoinHandle<()>> {
    (0..2)
        .map(|w| {
            let (stop, tcp) = (stop.clone(), tcp_addr(d));
            std::thread::spawn(move || {
                let Some(mut c) = Conn::try_tcp_at(&tcp) else {
                    return;
                };
                let name = format!("n{w}");
                while !stop.load(Ordering::Relaxed) {
                    let Some(a) = c.try_call(read_op(stream, group, &name, 25, 50)) else {
                        return;
                    };
                    if a.get("deliveries").is_none() {
                        return;
                    }
                    let all: Vec<String> = deliveries(&a).into_iter().map(|g| g.id).collect();
                    if all.is_empty() {
                        continue;
                    }
                    let nack = json!({"op": "nack", "stream": stream, "group": group,
                        "consumer": name, "ids": all, "error": "always fails"});
                    if c.try_call(nack).is_none() {
                        return;
                    }
                }
            })
        })
        .collect()
}

/// (c) SIGKILL while consumers nack everything and events move to the
/// dead-letter stream: after each restart every event is in exactly one
/// place (pending, dead-lettered once, or not yet delivered), and in the
/// end every event is in the dead-letter stream exactly once per group.
#[test]
fn sigkill_during_dead_letter_moves_keeps_each_event_in_one_place() {
    let mut rng = Rng::from_env("sigkill_during_dead_letter_moves");
    let (rounds, events) = if long_mode() { (25, 5000) } else { (5, 300) };
    let dir = tempfile::tempdir().unwrap();
    let published = {
        let d = start(dir.path());
        let mut admin = Conn::tcp(&d, None);
        let policy = |max: u32| json!({"ack_wait_ms": 200, "max_deliver": max});
        create_group(&mut admin, "crash-c", "once", policy(1));
        create_group(&mut admin, "crash-c", "twice", policy(2));
        let ids = publish_n(&mut admin, "crash-c", "t", events);
        d.kill();
        ids
    };
    for _ in 0..rounds {
        let d = start(dir.path());
        for group in ["once", "twice"] {
            if let Err(e) = settled_placement(&d, "crash-c", group, &published) {
                panic!("after a restart: {e}");
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut load = spawn_nackers(&d, "crash-c", "once", &stop);
        load.extend(spawn_nackers(&d, "crash-c", "twice", &stop));
        std::thread::sleep(Duration::from_millis(rng.range(100, 900)));
        d.kill();
        stop.store(true, Ordering::Relaxed);
        for t in load {
            t.join().unwrap();
        }
    }
    // Finish: nack until every event is dead-lettered in both groups.
    let d = start(dir.path());
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = spawn_nackers(&d, "crash-c", "once", &stop);
    load.extend(spawn_nackers(&d, "crash-c", "twice", &stop));
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut c = Conn::tcp(&d, None);
    for group in ["once", "twice"] {
        loop {
            let info = c.call(json!({"op": "group", "stream": "crash-c", "group": group}));
            if info["group"]["pending"] == 0 && info["group"]["lag"] == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "not drained: {info}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    for group in ["once", "twice"] {
        settled_placement(&d, "crash-c", group, &published).unwrap();
        let in_dlq: BTreeSet<String> = read_all(&d, "crash-c:dlq", None)
            .iter()
            .filter(|e| e["meta"]["group"] == group)
            .map(|e| e["meta"]["original_id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(in_dlq.len(), published.len(), "group {group}");
    }
}
