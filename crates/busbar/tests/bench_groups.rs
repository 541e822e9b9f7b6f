//! `busbar bench groups` end to end, with tiny counts, busbar alone: it
//! needs neither Redis nor NATS, and never touches a running one (peers
//! are given addresses where nothing listens). Checks the shape of the
//! report and that every event is delivered and acked, never the speed.

use serde_json::Value;

mod support;

/// A loopback address where nothing listens.
fn closed_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// Asserts that `s` measured every event of each of `rounds` rounds.
fn assert_measured(s: &Value, events: u64, rounds: usize) {
    assert!(s["failure"].is_null(), "{s}");
    let all = s["rounds"].as_array().unwrap();
    assert_eq!(all.len(), rounds, "{s}");
    for run in all.iter().chain([&s["median"]]) {
        assert_eq!(run["events"], events, "every event acked: {s}");
        let (rate, seconds) = (run["events_per_sec"].as_f64(), run["seconds"].as_f64());
        assert!(rate.unwrap() > 0.0 && seconds.unwrap() > 0.0, "{run}");
        let implied = events as f64 / seconds.unwrap();
        assert!((rate.unwrap() - implied).abs() < 1e-6 * implied, "{run}");
        support::assert_latency(&run["latency_us"], run);
    }
}

#[test]
fn bench_groups_reports_json_for_each_durability() {
    let work = tempfile::tempdir().unwrap();
    let report = support::report(
        &[
            "groups",
            "--systems",
            "busbar",
            "--durability",
            "both",
            "--events",
            "300",
            "--consumers",
            "3",
            "--batch",
            "20",
            "--rounds",
            "2",
            "--max-seconds",
            "30",
        ],
        work.path(),
    );

    assert_eq!(report["consumers"], 3);
    assert_eq!(report["batch"], 20);
    assert_eq!(report["events"], 300);
    assert_eq!(report["payload_bytes"], 200);
    assert_eq!(report["rounds"], 2);
    let systems = report["systems"].as_array().unwrap();
    let rows: Vec<(&str, &str)> = systems
        .iter()
        .map(|s| {
            (
                s["durability"].as_str().unwrap(),
                s["system"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(rows, [("memory", "busbar"), ("always", "busbar")]);
    for s in systems {
        assert_measured(s, 300, 2);
        assert!(s["busbar_ratio"].is_null(), "no peer, no ratio: {s}");
    }
}

#[test]
fn bench_groups_reports_unreachable_and_remote_peers_as_not_measured() {
    let work = tempfile::tempdir().unwrap();
    let (redis, nats) = (closed_port(), closed_port());
    let report = support::report(
        &[
            "groups",
            "--durability",
            "memory",
            "--events",
            "100",
            "--rounds",
            "1",
            "--max-seconds",
            "30",
            "--redis-addr",
            &redis,
            "--nats-addr",
            &nats,
        ],
        work.path(),
    );
    let systems = report["systems"].as_array().unwrap();
    let names: Vec<&str> = systems
        .iter()
        .map(|s| s["system"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["busbar", "redis", "nats"]);
    assert_measured(&systems[0], 100, 1);
    for (s, addr) in systems[1..].iter().zip([&redis, &nats]) {
        let failure = s["failure"].as_str().unwrap();
        assert!(
            failure.contains("cannot connect") && failure.contains(addr.as_str()),
            "{s}"
        );
        assert!(s["median"].is_null() && s["busbar_ratio"].is_null(), "{s}");
        assert!(s["rounds"].as_array().unwrap().is_empty(), "{s}");
    }

    // Only loopback peers are benchmarked: these are refused before any
    // connection is tried, and the table says so.
    let work = tempfile::tempdir().unwrap();
    let remote = support::report(
        &[
            "groups",
            "--systems",
            "redis,nats",
            "--events",
            "10",
            "--rounds",
            "1",
            "--redis-addr",
            "192.0.2.1:6379",
            "--nats-addr",
            "192.0.2.1:4222",
        ],
        work.path(),
    );
    let systems = remote["systems"].as_array().unwrap();
    assert_eq!(systems.len(), 4, "two systems at two levels");
    for s in systems {
        let failure = s["failure"].as_str().unwrap();
        assert!(failure.contains("loopback"), "{s}");
    }
}

#[test]
fn bench_groups_refuses_empty_work() {
    let said = support::refusal(&["groups", "--systems", "busbar", "--consumers", "0"]);
    assert!(said.contains("at least 1"), "{said}");
}
