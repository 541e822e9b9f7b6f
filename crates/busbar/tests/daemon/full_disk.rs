//! A real full disk: the daemon's data directory on a 24 MiB tmpfs, filled
//! up by another file. Publishes are refused with `storage_full` and the
//! daemon says why (`/readyz`, `/health`, `/metrics`), while a consumer
//! group drains and acks everything in the space the reserve gave back;
//! once the other file is gone the daemon takes publishes again by itself,
//! and nothing acknowledged (to a producer or by the group) is lost.
//!
//! Mounting needs root. Without it the test is skipped with its reason,
//! except under `CI=true`, where it must run.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::harness::{eventually, http, options, read_all, start_in, stop, Daemon};

const RESERVE: u64 = 4 * 1024 * 1024;

/// A tmpfs mounted for the test, unmounted when dropped (also when the test
/// fails).
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` at `at`; `None` (after saying why) where
    /// this machine does not let the test mount one.
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output();
        let why = match out {
            Ok(o) if o.status.success() => return Some(Tmpfs(at.to_owned())),
            Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_owned(),
            Err(e) => e.to_string(),
        };
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("CI must run the full-disk test, but mounting a tmpfs failed: {why}");
        }
        eprintln!("skipping the full-disk test: cannot mount a tmpfs ({why})");
        None
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let done = Command::new("umount").arg(&self.0).status();
        if !done.is_ok_and(|s| s.success()) {
            // Something still holds a file in it: detach it now, it goes
            // when that ends.
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

fn post(d: &Daemon, path: &str, body: &Value) -> (u16, Value) {
    http(d, "POST", path, None, Some(body.to_string().as_bytes()))
}

/// Publishes `n` events in one request: their ids, or the refusal.
fn publish(d: &Daemon, from: usize, n: usize) -> Result<Vec<String>, (u16, Value)> {
    let events: Vec<Value> = (from..from + n)
        .map(|i| json!({"type": "order.created", "n": i, "pad": "x".repeat(200)}))
        .collect();
    let (status, v) = post(d, "/api/streams/orders/events", &json!(events));
    if status != 201 {
        return Err((status, v));
    }
    Ok(v["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap().to_owned())
        .collect())
}

/// Reads and acks through group `g` until nothing is left; the ids acked.
fn drain(d: &Daemon) -> Vec<String> {
    let mut acked = Vec::new();
    loop {
        let (status, read) = post(
            d,
            "/api/streams/orders/groups/g/read",
            &json!({"consumer": "c", "count": 100}),
        );
        assert_eq!(status, 200, "group read: {read}");
        let ids: Vec<String> = read["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["event"]["id"].as_str().unwrap().to_owned())
            .collect();
        if ids.is_empty() {
            return acked;
        }
        let (status, answer) = post(
            d,
            "/api/streams/orders/groups/g/ack",
            &json!({"consumer": "c", "ids": ids}),
        );
        assert_eq!(status, 200, "ack: {answer}");
        assert_eq!(answer["acked"].as_array().unwrap().len(), ids.len());
        acked.extend(ids);
    }
}

/// Writes `path` until the disk has no room left.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![1u8; 64 * 1024];
    loop {
        if let Err(e) = file.write_all(&chunk) {
            assert_eq!(e.raw_os_error(), Some(28), "filling the disk: {e}");
            return;
        }
    }
}

fn reasons(v: &Value) -> Vec<String> {
    v["reasons"]
        .as_array()
        .map(|r| {
            r.iter()
                .map(|x| x["reason"].as_str().unwrap_or("?").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn stored_ids(d: &Daemon) -> Vec<String> {
    read_all(d, "orders", None)
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_full_tmpfs_refuses_publishes_lets_consumers_ack_and_recovers_with_nothing_lost() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let Some(_tmpfs) = Tmpfs::mount(&data, "24m") else {
        return;
    };
    let opts = options().config(
        r#"
[storage]
reserve = "4 MiB"
segment_size = "1 MiB"

[readiness]
min_free_disk = "0"
"#,
    );
    let d = start_in(dir.path(), &opts);
    let (status, v) = post(
        &d,
        "/api/streams/orders/groups",
        &json!({"name": "g", "start": "beginning"}),
    );
    assert_eq!(status, 201, "{v}");
    assert_eq!(
        std::fs::metadata(data.join("RESERVE")).unwrap().len(),
        RESERVE
    );
    let mut acked = Vec::new();
    for _ in 0..10 {
        acked.extend(publish(&d, acked.len(), 50).expect("room to publish"));
    }

    // Another file takes every byte left.
    let filler = dir.path().join("data").join("filler");
    fill(&filler);
    let refusal = loop {
        match publish(&d, acked.len(), 50) {
            Ok(ids) => acked.extend(ids),
            Err(refusal) => break refusal,
        }
        assert!(acked.len() < 100_000, "the disk never filled");
    };
    assert_eq!(refusal.0, 507, "{}", refusal.1);
    assert_eq!(refusal.1["error"], "storage_full");
    assert!(!data.join("RESERVE").exists(), "the reserve is given back");
    // Refused up front, with room in the space the reserve freed.
    let again = publish(&d, acked.len(), 1).expect_err("still refused");
    assert_eq!(again.1["error"], "storage_full");
    let (status, ready) = http(&d, "GET", "/readyz", None, None);
    assert_eq!(status, 503, "{ready}");
    assert!(
        reasons(&ready).contains(&"storage_full".to_owned()),
        "{ready}"
    );
    let (_, health) = http(&d, "GET", "/health", None, None);
    assert_eq!(health["status"], "degraded", "{health}");
    assert!(
        reasons(&health).contains(&"storage_full".to_owned()),
        "{health}"
    );
    let metrics = d.metrics().unwrap();
    assert!(
        metrics.contains("busbar_storage_write_state 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("busbar_storage_reserve_bytes 0\n"),
        "{metrics}"
    );

    // Reads and the consumer group go on: everything published is acked.
    assert_eq!(stored_ids(&d), acked);
    assert_eq!(
        drain(&d),
        acked,
        "the group drains every acknowledged event"
    );

    // Space returns; nobody publishes, and the daemon notices by itself.
    std::fs::remove_file(&filler).unwrap();
    eventually("/readyz to say ready", || {
        http(&d, "GET", "/readyz", None, None).0 == 200
    });
    assert_eq!(
        std::fs::metadata(data.join("RESERVE")).unwrap().len(),
        RESERVE
    );
    let metrics = d.metrics().unwrap();
    assert!(
        metrics.contains("busbar_storage_write_state 0\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("busbar_storage_reserve_bytes {RESERVE}\n")),
        "{metrics}"
    );
    let after = publish(&d, acked.len(), 5).expect("publishes go through again");
    acked.extend(after.iter().cloned());

    // Across a restart: every acknowledged event is there, and the group
    // delivers only what it never acked.
    stop(d);
    let d = start_in(dir.path(), &opts);
    assert_eq!(stored_ids(&d), acked, "no acknowledged event is lost");
    assert_eq!(drain(&d), after, "nothing acked is delivered again");
    stop(d);
}
