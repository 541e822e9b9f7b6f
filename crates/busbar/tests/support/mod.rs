//! Runs `busbar bench` for the benches' shape tests.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// `busbar bench <args> --json --work-dir <work>`, which must succeed; its
/// report. Every daemon it started must have removed its data directory.
pub fn report(args: &[&str], work: &Path) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_busbar"))
        .arg("bench")
        .args(args)
        .arg("--json")
        .arg("--work-dir")
        .arg(work)
        .env_remove("BUSBAR_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {stderr}");
    let report = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(std::fs::read_dir(work).unwrap().count(), 0, "data left");
    report
}

/// `busbar bench <args>`, which must fail; what it said.
pub fn refusal(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_busbar"))
        .arg("bench")
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success(), "bench {args:?} ran");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts that `latency` (µs) holds sane percentiles.
pub fn assert_latency(latency: &Value, context: &Value) {
    for p in ["p50", "p99", "p999", "max", "mean"] {
        assert!(latency[p].as_f64().unwrap() > 0.0, "{p} in {context}");
    }
    let at = |p: &str| latency[p].as_f64().unwrap();
    assert!(
        at("p50") <= at("p99") && at("p99") <= at("max"),
        "{context}"
    );
}
