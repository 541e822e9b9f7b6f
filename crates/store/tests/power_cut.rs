//! Simulated power loss: the real engine runs on [`SimFs`], which knows
//! what was synced. Each cycle opens the store, appends from several tasks
//! at once (group commit) while consumer groups read, ack and dead-letter,
//! cuts the power at a random moment, and checks what comes back: every
//! event acknowledged under `always` is there exactly once, intact and in
//! order; opening twice gives the same answer; groups only name events that
//! exist. A second test does the same under `interval` and checks that only
//! events acknowledged after the last completed `sync` can be lost.
//!
//! Cuts follow each other on one disk in chains of [`CHAIN`] cycles (the
//! store reopens after each cut onto what the previous cuts left); a long
//! run starts a fresh disk after each chain, so its memory and the cost of
//! reading everything back stay bounded.
//!
//! CI runs 50 cycles of each (a few seconds). `BUSBAR_POWER_CUTS=1000` runs
//! 1,000; `BUSBAR_POWER_CUT_SEED=<n>` replays a seed (printed on failure).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use busbar_event::{EventBatch, EventId, NewEvent, StreamName};
use busbar_store::embedded::{EmbeddedConfig, EmbeddedStore};
use busbar_store::fs::{CutMode, Fs, SimFs};
use busbar_store::group::{dlq_stream, GroupConfig, GroupStart, NackOptions};
use busbar_store::{Durability, ReadQuery, Store, StoreError};
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const APPENDERS: usize = 3;

/// Cycles on one disk before a long run starts a fresh one.
const CHAIN: usize = 50;

fn cycles() -> usize {
    std::env::var("BUSBAR_POWER_CUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50)
}

fn seed() -> u64 {
    std::env::var("BUSBAR_POWER_CUT_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random)
}

fn stream() -> StreamName {
    StreamName::new("s").unwrap()
}

/// A disk whose data directory (and every directory above it) exists
/// durably, as a data directory does before the store first opens.
fn disk(dir: &Path) -> SimFs {
    let fs = SimFs::new();
    fs.create_dir_all(dir).unwrap();
    for d in dir.ancestors() {
        fs.sync_dir(d).unwrap();
    }
    fs
}

fn open(dir: &Path, fs: &SimFs, durability: Durability) -> Result<EmbeddedStore, StoreError> {
    let mut c = EmbeddedConfig::new(dir);
    c.durability = durability;
    c.segment_bytes = 4096;
    c.index_interval_bytes = 512;
    c.fs = Arc::new(fs.clone());
    EmbeddedStore::open(c)
}

/// Everything a reader can see of the store, for comparing two opens.
#[derive(Debug, PartialEq, Eq)]
struct View {
    events: BTreeMap<String, Vec<(EventId, Vec<u8>)>>,
    groups: BTreeMap<String, (EventId, Vec<EventId>)>,
}

async fn view(store: &EmbeddedStore) -> View {
    let mut events = BTreeMap::new();
    let mut groups = BTreeMap::new();
    for s in store.streams().await.unwrap() {
        let all = store.read(&s, &ReadQuery::all(usize::MAX)).await.unwrap();
        events.insert(
            s.to_string(),
            all.iter().map(|e| (e.id(), e.payload().to_vec())).collect(),
        );
        for g in store.groups(&s).await.unwrap() {
            let pending = store
                .pending(&s, &g.name, None, EventId::ZERO, EventId::MAX, usize::MAX)
                .await
                .unwrap()
                .iter()
                .map(|p| p.id)
                .collect();
            groups.insert(format!("{s}/{}", g.name), (g.last_delivered_id, pending));
        }
    }
    View { events, groups }
}

/// The checks every reopen must pass; `must_have` are events that were
/// durable when the power went.
fn check(view: &View, must_have: &BTreeMap<EventId, Vec<u8>>, what: &str) {
    let none = Vec::new();
    let events = view.events.get("s").unwrap_or(&none);
    assert!(
        events.windows(2).all(|w| w[0].0 < w[1].0),
        "{what}: ids do not strictly increase"
    );
    let mut payloads = BTreeSet::new();
    for (id, payload) in events {
        assert!(
            payloads.insert(payload.clone()),
            "{what}: event {id} is stored twice"
        );
    }
    let found: BTreeMap<EventId, &Vec<u8>> = events.iter().map(|(id, p)| (*id, p)).collect();
    for (id, payload) in must_have {
        match found.get(id) {
            Some(p) => assert_eq!(*p, payload, "{what}: event {id} damaged"),
            None => panic!("{what}: acknowledged event {id} lost"),
        }
    }
    let last = events.last().map_or(EventId::ZERO, |e| e.0);
    for (name, (cursor, pending)) in &view.groups {
        assert!(
            *cursor <= last || events.is_empty(),
            "{what}: group {name} delivered up to {cursor}, past the last event {last}"
        );
        for id in pending {
            assert!(
                found.contains_key(id),
                "{what}: group {name} has {id} pending, which does not exist"
            );
        }
    }
    let dlq = dlq_stream(&stream()).unwrap().to_string();
    for (id, payload) in view.events.get(&dlq).unwrap_or(&none) {
        let entry = serde_json::from_slice::<serde_json::Value>(payload).ok();
        assert!(entry.is_some(), "{what}: dead letter {id} does not parse");
    }
}

/// One cycle's workload: appenders and group traffic until the power goes.
/// Returns what was acknowledged, and what a completed `sync` covered.
struct Work {
    acked: Mutex<BTreeMap<EventId, Vec<u8>>>,
    synced: Mutex<BTreeMap<EventId, Vec<u8>>>,
    appends: AtomicUsize,
    /// The power went: errors are expected from now on.
    cut: std::sync::atomic::AtomicBool,
}

async fn appender(store: Arc<EmbeddedStore>, work: Arc<Work>, cycle: usize, task: usize) {
    for n in 0u64.. {
        let size = 1 + (n as usize + task) % 4;
        let payloads: Vec<String> = (0..size)
            .map(|i| format!(r#"{{"c":{cycle},"t":{task},"n":{n},"i":{i}}}"#))
            .collect();
        let mut b = EventBatch::new();
        for p in &payloads {
            b.push(&NewEvent::new("t", p.as_bytes())).unwrap();
        }
        match store.append(&stream(), b, Default::default()).await {
            Ok(ids) => {
                let mut acked = work.acked.lock();
                for (id, p) in ids.into_iter().zip(payloads) {
                    acked.insert(id, p.into_bytes());
                }
                drop(acked);
                work.appends.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                if !work.cut.load(Ordering::Relaxed) {
                    panic!("an append failed before the power cut: {e}");
                }
                return;
            }
        }
    }
}

async fn groups(store: Arc<EmbeddedStore>, work: Arc<Work>) {
    let s = stream();
    let dead = GroupConfig {
        max_deliver: 1,
        ..GroupConfig::default()
    };
    for (g, config) in [("g", GroupConfig::default()), ("d", dead)] {
        match store
            .create_group(&s, g, GroupStart::Beginning, config)
            .await
        {
            Ok(_) | Err(StoreError::GroupExists { .. }) => {}
            Err(_) => return,
        }
    }
    // Each read is acked one read later, so some entries are always
    // pending and the pending list (and the group snapshot every new
    // segment starts with) stays small.
    let mut unacked = Vec::new();
    // Reads that deliver nothing touch no file: stop at the cut.
    while !work.cut.load(Ordering::Relaxed) {
        let Ok(read) = store.read_group(&s, "g", "c", 5).await else {
            return;
        };
        if store.ack(&s, "g", Some("c"), &unacked).await.is_err() {
            return;
        }
        unacked = read.deliveries.iter().map(|d| d.event.id()).collect();
        let Ok(read) = store.read_group(&s, "d", "c", 3).await else {
            return;
        };
        let ids: Vec<EventId> = read.deliveries.iter().map(|d| d.event.id()).collect();
        // max_deliver 1: a nack dead-letters.
        if store
            .nack(&s, "d", "c", &ids, NackOptions::default())
            .await
            .is_err()
        {
            return;
        }
        tokio::task::yield_now().await;
    }
}

async fn syncer(store: Arc<EmbeddedStore>, work: Arc<Work>) {
    while !work.cut.load(Ordering::Relaxed) {
        let before = work.acked.lock().clone();
        if store.sync().await.is_err() {
            return;
        }
        work.synced.lock().extend(before);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn run(durability: Durability, name: &str) {
    let cycles = cycles();
    let seed = seed();
    println!("{name}: {cycles} cycles, BUSBAR_POWER_CUT_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let mut fs = disk(dir);
    // Under `always`: everything acknowledged. Under `interval`: what a
    // completed sync covered.
    let mut must_have: BTreeMap<EventId, Vec<u8>> = BTreeMap::new();
    let mut verified = 0;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    for cycle in 0..cycles {
        let what = format!("{name} cycle {cycle} (BUSBAR_POWER_CUT_SEED={seed})");
        if cycle > 0 && cycle % CHAIN == 0 {
            // Check what the chain's last cut left, then start a fresh disk.
            rt.block_on(async {
                let store = open(dir, &fs, durability).unwrap_or_else(|e| panic!("{what}: {e}"));
                check(&view(&store).await, &must_have, &what);
            });
            verified += must_have.len();
            must_have.clear();
            fs = disk(dir);
        }
        let target = rng.gen_range(0..40usize);
        let mode = match rng.gen_range(0..4) {
            0 => CutMode::Drop,
            1 => CutMode::Torn,
            2 => CutMode::Zeros,
            _ => CutMode::Any,
        };
        let next = rt.block_on(async {
            let store =
                open(dir, &fs, durability).unwrap_or_else(|e| panic!("{what}: open failed: {e}"));
            let first = view(&store).await;
            check(&first, &must_have, &what);
            store.close().await.unwrap();
            drop(store);
            let store =
                open(dir, &fs, durability).unwrap_or_else(|e| panic!("{what}: reopen failed: {e}"));
            assert_eq!(view(&store).await, first, "{what}: two opens disagree");

            let store = Arc::new(store);
            let work = Arc::new(Work {
                acked: Mutex::new(BTreeMap::new()),
                synced: Mutex::new(BTreeMap::new()),
                appends: AtomicUsize::new(0),
                cut: std::sync::atomic::AtomicBool::new(false),
            });
            let mut tasks = Vec::new();
            for task in 0..APPENDERS {
                tasks.push(tokio::spawn(appender(
                    store.clone(),
                    work.clone(),
                    cycle,
                    task,
                )));
            }
            tasks.push(tokio::spawn(groups(store.clone(), work.clone())));
            if durability != Durability::Always {
                tasks.push(tokio::spawn(syncer(store.clone(), work.clone())));
            }
            while work.appends.load(Ordering::Relaxed) < target
                && !tasks.iter().any(|t| t.is_finished())
            {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            work.cut.store(true, Ordering::Relaxed);
            let next = fs.power_cut(mode, &mut rng);
            for t in tasks {
                t.await.unwrap();
            }
            drop(store);
            let acked = std::mem::take(&mut *work.acked.lock());
            let synced = std::mem::take(&mut *work.synced.lock());
            (next, acked, synced)
        });
        let (next_fs, acked, synced) = next;
        fs = next_fs;
        must_have.extend(if durability == Durability::Always {
            acked
        } else {
            synced
        });
    }
    // The last cut, checked too.
    rt.block_on(async {
        let what = format!("{name} after the last cycle (BUSBAR_POWER_CUT_SEED={seed})");
        let store = open(dir, &fs, durability).unwrap_or_else(|e| panic!("{what}: {e}"));
        check(&view(&store).await, &must_have, &what);
    });
    verified += must_have.len();
    println!(
        "{name}: {cycles} cycles, {verified} durable events verified, {:.1?}",
        started.elapsed()
    );
}

#[test]
fn power_cuts_under_always_lose_nothing_acknowledged() {
    run(Durability::Always, "always");
}

#[test]
fn power_cuts_under_interval_lose_only_what_followed_the_last_sync() {
    run(Durability::Interval(Duration::from_millis(5)), "interval");
}
