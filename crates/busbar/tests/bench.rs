//! `busbar bench ingest` end to end, with tiny counts and without Redis.
//! Checks the shape of the report, never the speed.

use std::process::Command;

use serde_json::Value;

#[test]
fn bench_ingest_reports_json_for_each_transport() {
    let work = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_busbar"))
        .args([
            "bench",
            "ingest",
            "--durability",
            "memory",
            "--no-redis",
            "--json",
        ])
        .args(["--producers", "2", "--pipeline", "8", "--events", "200"])
        .args([
            "--transport",
            "both",
            "--max-seconds",
            "30",
            "--rounds",
            "2",
        ])
        .arg("--work-dir")
        .arg(work.path())
        .env_remove("BUSBAR_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();

    assert_eq!(report["producers"], 2);
    assert_eq!(report["pipeline"], 8);
    assert_eq!(report["events"], 200);
    assert_eq!(report["rounds"], 2);
    assert_eq!(report["redis"]["reachable"], false);
    assert!(report["busbar_idle_rss_kib"].as_u64().unwrap() > 0);
    let scenarios = report["scenarios"].as_array().unwrap();
    assert_eq!(scenarios.len(), 1, "memory only, no lone producer");
    let memory = &scenarios[0];
    assert_eq!(memory["name"], "memory");
    assert_eq!(memory["busbar_flags"], "--memory");
    assert_eq!(memory["redis_config"], "appendonly no");
    assert!(memory["ratios"].as_array().unwrap().is_empty());
    let runs = memory["runs"].as_array().unwrap();
    let transports: Vec<&str> = runs
        .iter()
        .map(|r| r["transport"].as_str().unwrap())
        .collect();
    assert_eq!(transports, ["tcp", "unix"]);
    for run in runs {
        assert_eq!(run["system"], "busbar");
        assert_eq!(run["events"], 200);
        assert!(run["events_per_sec"].as_f64().unwrap() > 0.0, "{run}");
        assert!(run["seconds"].as_f64().unwrap() > 0.0, "{run}");
        assert_eq!(run["round_events_per_sec"].as_array().unwrap().len(), 2);
        for p in ["p50", "p99", "p999", "max", "mean"] {
            assert!(run["latency_us"][p].as_f64().unwrap() > 0.0, "{p} in {run}");
        }
    }
    // The daemon's temporary data directory is gone.
    assert_eq!(std::fs::read_dir(work.path()).unwrap().count(), 0);
}

#[test]
fn bench_ingest_refuses_a_remote_redis() {
    let out = Command::new(env!("CARGO_BIN_EXE_busbar"))
        .args([
            "bench",
            "ingest",
            "--durability",
            "memory",
            "--events",
            "10",
        ])
        .args(["--redis-url", "redis://192.0.2.1:6379"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
}
