//! `busbar bench fanout` end to end, with tiny counts and without NATS.
//! Checks the shape of the report and that events arrive, never the speed.

mod support;

#[test]
fn bench_fanout_reports_json_with_deliveries() {
    let work = tempfile::tempdir().unwrap();
    let report = support::report(
        &[
            "fanout",
            "--no-nats",
            "--clients",
            "1,5",
            "--events",
            "200",
            "--rounds",
            "1",
            "--max-seconds",
            "30",
            "--quiet-ms",
            "500",
        ],
        work.path(),
    );

    assert_eq!(report["nats"]["reachable"], false);
    assert_eq!(report["rounds"], 1);
    assert_eq!(report["publish_via"], "tcp");
    assert!(report["payload_bytes"].as_u64().unwrap() >= 200);
    let shapes = report["shapes"].as_array().unwrap();
    let counts: Vec<u64> = shapes
        .iter()
        .map(|s| s["subscribers"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, [1, 5]);
    for shape in shapes {
        assert_eq!(shape["events"], 200);
        assert!(shape["ratio"].is_null(), "no NATS, no ratio");
        let runs = shape["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 1, "busbar only");
        let run = &runs[0];
        let subscribers = shape["subscribers"].as_u64().unwrap();
        assert_eq!(run["system"], "busbar");
        assert_eq!(run["subscribers"], subscribers);
        assert_eq!(run["published"], 200);
        assert_eq!(run["expected"], 200 * subscribers);
        let delivered = run["delivered"].as_u64().unwrap();
        assert!(delivered > 0, "{run}");
        assert!(delivered + run["missed"].as_u64().unwrap() <= 200 * subscribers);
        assert!(run["min_delivered"].as_u64().unwrap() <= run["max_delivered"].as_u64().unwrap());
        for field in ["events_per_sec", "per_subscriber_events_per_sec", "seconds"] {
            assert!(run[field].as_f64().unwrap() > 0.0, "{field} in {run}");
        }
        support::assert_latency(&run["latency_us"], run);
        assert!(
            run["lag_notices"].is_u64() && run["subscriber_errors"] == 0,
            "{run}"
        );
        assert_eq!(run["rounds_events_per_sec"].as_array().unwrap().len(), 1);
    }
}

#[test]
fn bench_fanout_refuses_a_remote_nats_and_mismatched_counts() {
    let said = support::refusal(&[
        "fanout",
        "--clients",
        "1",
        "--events",
        "10",
        "--nats-addr",
        "192.0.2.1:4222",
    ]);
    assert!(said.contains("loopback"), "{said}");

    let said = support::refusal(&[
        "fanout",
        "--no-nats",
        "--clients",
        "1,2,3",
        "--events",
        "10,20",
    ]);
    assert!(said.contains("--events"), "{said}");
}
