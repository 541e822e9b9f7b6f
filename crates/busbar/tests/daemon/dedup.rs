//! Idempotent publish end to end: a repeated `idempotency_key` is stored
//! once and every repeat is acknowledged with the original id, on every
//! transport, and still after a restart.

use std::io::{BufRead, BufReader, Write};
use std::net::Shutdown;

use serde_json::Value;

use crate::harness::{http, options, read_all, start_in, stop};

/// Sends `lines` after an acks hello on a socket and returns every answer
/// line as JSON.
fn raw_exchange<S: std::io::Read + Write>(
    mut s: S,
    lines: &[&str],
    close: impl FnOnce(&S),
) -> Vec<Value> {
    let mut input = String::from("{\"hello\":{\"acks\":true}}\n");
    for l in lines {
        input.push_str(l);
        input.push('\n');
    }
    s.write_all(input.as_bytes()).unwrap();
    close(&s);
    BufReader::new(s)
        .lines()
        .map(|l| serde_json::from_str(&l.expect("an answer")).unwrap())
        .collect()
}

fn keyed(stream: &str, key: &str, n: u32) -> String {
    format!(r#"{{"type":"order.created","stream":"{stream}","idempotency_key":"{key}","n":{n}}}"#)
}

#[test]
fn a_repeated_key_is_stored_once_and_acked_with_the_original_id_over_every_transport() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_in(dir.path(), &options());

    for (stream, tcp) in [("dedup-unix", false), ("dedup-tcp", true)] {
        let lines = [
            keyed(stream, "k1", 1),
            keyed(stream, "k1", 2),
            format!(r#"{{"type":"plain","stream":"{stream}"}}"#),
        ];
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        let send = |lines: &[&str]| {
            if tcp {
                raw_exchange(d.tcp().unwrap(), lines, |s| {
                    s.shutdown(Shutdown::Write).unwrap()
                })
            } else {
                raw_exchange(d.unix().unwrap(), lines, |s| {
                    s.shutdown(Shutdown::Write).unwrap()
                })
            }
        };
        let first = send(&lines);
        assert_eq!(first.len(), 3, "{stream}: {first:?}");
        let original = first[0]["id"].as_str().unwrap().to_owned();
        assert_eq!(first[0].get("duplicate"), None, "{stream}");
        assert_eq!(first[1]["id"], original.as_str(), "{stream}: {first:?}");
        assert_eq!(first[1]["duplicate"], true, "{stream}");
        assert_ne!(first[2]["id"], original.as_str());

        // A retry on another connection (a lost acknowledgement).
        let retry = send(&lines[..1]);
        assert_eq!(retry[0]["id"], original.as_str(), "{stream}: {retry:?}");
        assert_eq!(retry[0]["duplicate"], true);

        let events = read_all(&d, stream, None);
        assert_eq!(events.len(), 2, "{stream}: {events:?}");
        assert_eq!(events[0]["id"], original.as_str());
        assert_eq!(events[0]["data"]["n"], 1, "the first is the one kept");
    }

    // HTTP: an array holding a repeat, then the same request again.
    let body = format!(
        "[{},{}]",
        keyed("dedup-http", "h1", 1),
        keyed("dedup-http", "h2", 2)
    );
    let path = "/api/streams/dedup-http/events";
    let (status, first) = http(&d, "POST", path, None, Some(body.as_bytes()));
    assert_eq!(status, 201, "{first}");
    assert_eq!(first.get("duplicates"), None);
    let (status, again) = http(&d, "POST", path, None, Some(body.as_bytes()));
    assert_eq!(status, 201, "{again}");
    assert_eq!(again["ids"], first["ids"]);
    assert_eq!(again["duplicates"], 2);
    let twice = format!(
        "[{},{}]",
        keyed("dedup-http", "h3", 1),
        keyed("dedup-http", "h3", 2)
    );
    let (_, within) = http(&d, "POST", path, None, Some(twice.as_bytes()));
    assert_eq!(within["ids"][0], within["ids"][1]);
    assert_eq!(within["duplicates"], 1);
    assert_eq!(read_all(&d, "dedup-http", None).len(), 3);

    let metrics = d.metrics().unwrap();
    for (stream, hits) in [("dedup-unix", 2), ("dedup-tcp", 2), ("dedup-http", 3)] {
        let sample = format!("busbar_dedup_hits_total{{stream=\"{stream}\"}} {hits}");
        assert!(metrics.contains(&sample), "{sample} in\n{metrics}");
    }
    let ingested = "busbar_events_ingested_total{stream=\"dedup-tcp\",transport=\"tcp\"} 2";
    assert!(
        metrics.contains(ingested),
        "repeats are not counted as ingested:\n{metrics}"
    );
    stop(d);
}

#[test]
fn a_repeat_after_a_restart_is_acked_with_the_original_id() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_in(dir.path(), &options());
    let line = keyed("dedup-restart", "r1", 1);
    let send = |d: &busbar_testkit::Daemon| {
        raw_exchange(d.tcp().unwrap(), &[&line], |s| {
            s.shutdown(Shutdown::Write).unwrap()
        })
    };
    let first = send(&d);
    let original = first[0]["id"].as_str().unwrap().to_owned();
    stop(d);

    let d = start_in(dir.path(), &options());
    let again = send(&d);
    assert_eq!(again[0]["id"], original.as_str(), "{again:?}");
    assert_eq!(again[0]["duplicate"], true);
    assert_eq!(read_all(&d, "dedup-restart", None).len(), 1);
    stop(d);
}

#[test]
fn with_the_window_off_every_repeat_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_in(dir.path(), &options().env("BUSBAR_DEDUP_WINDOW", "0s"));
    let line = keyed("dedup-off", "k", 1);
    let answers = raw_exchange(d.unix().unwrap(), &[&line, &line], |s| {
        s.shutdown(Shutdown::Write).unwrap()
    });
    assert_ne!(answers[0]["id"], answers[1]["id"]);
    assert_eq!(answers[1].get("duplicate"), None);
    assert_eq!(read_all(&d, "dedup-off", None).len(), 2);
    stop(d);
}
