//! Crash test: a child process appends under `durability = always` from
//! several tasks and prints every acknowledged id; the parent kills it with
//! SIGKILL at random moments, reopens the store and checks that every
//! acknowledged event is present and intact. Repeated for many cycles on
//! the same directory.
//!
//! CI runs a short version; `scripts/crash-test.sh` runs a long one
//! (`BUSBAR_CRASH_CYCLES`, `BUSBAR_CRASH_SEED`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use busbar_event::{EventBatch, EventId, NewEvent, StreamName};
use busbar_store::embedded::{EmbeddedConfig, EmbeddedStore};
use busbar_store::{AppendOptions, Durability, ReadQuery, Store};
use rand::{Rng, SeedableRng};

const CHILD_ENV: &str = "BUSBAR_CRASH_CHILD_DIR";

fn config(dir: &str) -> EmbeddedConfig {
    let mut c = EmbeddedConfig::new(dir);
    c.durability = Durability::Always;
    c.segment_bytes = 64 * 1024;
    c
}

/// The child: append forever, printing `ACK <id> <task> <n>` per event.
fn child(dir: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = std::sync::Arc::new(EmbeddedStore::open(config(dir)).unwrap());
        let stream = StreamName::new("crash").unwrap();
        let mut tasks = Vec::new();
        for task in 0..4u32 {
            let store = store.clone();
            let stream = stream.clone();
            tasks.push(tokio::spawn(async move {
                for round in 0u64.. {
                    let mut b = EventBatch::new();
                    let size = 1 + (round % 7) as usize;
                    let payloads: Vec<String> = (0..size)
                        .map(|i| format!(r#"{{"task":{task},"n":{}}}"#, round * 10 + i as u64))
                        .collect();
                    for p in &payloads {
                        b.push(&NewEvent::new("crash.test", p.as_bytes())).unwrap();
                    }
                    let ids = store
                        .append(&stream, b, AppendOptions::default())
                        .await
                        .unwrap();
                    let mut out = String::new();
                    for (id, p) in ids.iter().zip(&payloads) {
                        out.push_str(&format!("ACK {id} {p}\n"));
                    }
                    print!("{out}");
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
}

#[test]
fn acknowledged_appends_survive_sigkill() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(&dir);
        return;
    }
    let cycles: usize = std::env::var("BUSBAR_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let seed: u64 = std::env::var("BUSBAR_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    println!("crash test: {cycles} cycles, BUSBAR_CRASH_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let dir_str = dir.path().to_str().unwrap().to_owned();
    let mut acked: BTreeMap<EventId, String> = BTreeMap::new();
    let stream = StreamName::new("crash").unwrap();

    for cycle in 0..cycles {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "acknowledged_appends_survive_sigkill",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &dir_str)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::sync_channel::<(EventId, String)>(1 << 16);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // A line cut by the kill has no closing brace: not an ack.
                let Some(rest) = line.strip_prefix("ACK ") else {
                    continue;
                };
                let Some((id, payload)) = rest.split_once(' ') else {
                    continue;
                };
                if !payload.ends_with('}') {
                    continue;
                }
                if tx.send((id.parse().unwrap(), payload.to_owned())).is_err() {
                    break;
                }
            }
        });
        // Let it get going, then kill it at a random moment.
        let first = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("child acknowledged nothing");
        acked.insert(first.0, first.1);
        let until = Instant::now() + Duration::from_millis(rng.gen_range(1..120));
        while Instant::now() < until {
            if let Ok((id, p)) = rx.recv_timeout(Duration::from_millis(1)) {
                acked.insert(id, p);
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        while let Ok((id, p)) = rx.try_recv() {
            acked.insert(id, p);
        }

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let store = EmbeddedStore::open(config(&dir_str))
                .unwrap_or_else(|e| panic!("cycle {cycle} (seed {seed}): reopen failed: {e}"));
            let events = store
                .read(&stream, &ReadQuery::all(usize::MAX))
                .await
                .unwrap();
            assert!(
                events.windows(2).all(|w| w[0].id() < w[1].id()),
                "ids out of order"
            );
            let found: BTreeMap<EventId, &[u8]> =
                events.iter().map(|e| (e.id(), e.payload())).collect();
            for (id, payload) in &acked {
                match found.get(id) {
                    Some(p) => assert_eq!(
                        *p,
                        payload.as_bytes(),
                        "cycle {cycle} (seed {seed}): event {id} damaged"
                    ),
                    None => panic!("cycle {cycle} (seed {seed}): acknowledged event {id} lost"),
                }
            }
            store.close().await.unwrap();
        });
    }
    println!("crash test: {} acknowledged events verified", acked.len());
}
