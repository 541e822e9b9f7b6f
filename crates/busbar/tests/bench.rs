//! `busbar bench ingest` end to end, with tiny counts and without Redis.
//! Checks the shape of the report, never the speed.

mod support;

#[test]
fn bench_ingest_reports_json_for_each_transport() {
    let work = tempfile::tempdir().unwrap();
    let report = support::report(
        &[
            "ingest",
            "--durability",
            "memory",
            "--no-redis",
            "--producers",
            "2",
            "--pipeline",
            "8",
            "--events",
            "200",
            "--transport",
            "both",
            "--max-seconds",
            "30",
            "--rounds",
            "2",
        ],
        work.path(),
    );

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
        support::assert_latency(&run["latency_us"], run);
    }
}

#[test]
fn bench_ingest_refuses_a_remote_redis() {
    let said = support::refusal(&[
        "ingest",
        "--durability",
        "memory",
        "--events",
        "10",
        "--redis-url",
        "redis://192.0.2.1:6379",
    ]);
    assert!(said.contains("loopback"), "{said}");
}
