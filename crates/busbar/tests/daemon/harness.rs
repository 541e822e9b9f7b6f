//! Starts the real `busbar serve` (through `busbar-testkit`) and talks to
//! it over every transport.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::path::Path;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use serde_json::Value;

/// A transport a producer can publish over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Unix,
    Tcp,
    Http,
}

pub const ALL: [Transport; 3] = [Transport::Unix, Transport::Tcp, Transport::Http];

pub use busbar_testkit::{Daemon, Options};

/// Options that start this crate's `busbar`.
pub fn options() -> Options {
    Options::new(env!("CARGO_BIN_EXE_busbar"))
}

/// Starts a daemon on `dir`; a daemon that does not start fails the test
/// with the end of its log.
pub fn start_in(dir: &Path, options: &Options) -> Daemon {
    Daemon::start_in(dir, options).unwrap_or_else(|e| panic!("{e}"))
}

/// SIGTERM, then the exit status; a daemon that does not exit fails the
/// test with the end of its log.
pub fn stop(mut d: Daemon) -> ExitStatus {
    d.stop().unwrap_or_else(|e| panic!("{e}"))
}

/// One answer: an id or an error reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Id(String),
    Error(String),
}

impl Answer {
    fn from_json(v: &Value) -> Answer {
        match v.get("id").and_then(Value::as_str) {
            Some(id) => Answer::Id(id.to_owned()),
            None => Answer::Error(v["error"].as_str().unwrap_or("?").to_owned()),
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Answer::Id(id) => id,
            Answer::Error(e) => panic!("expected an id, got error {e}"),
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            Answer::Error(e) => e,
            Answer::Id(id) => panic!("expected an error, got id {id}"),
        }
    }
}

/// Sends `hello` (if any) and `lines` on a socket, half-closes it and reads
/// every answer until the daemon closes.
pub fn exchange<S: Read + Write>(
    mut s: S,
    hello: Option<&str>,
    lines: &[String],
    shutdown: impl FnOnce(&S),
) -> Vec<Answer> {
    let mut input = String::new();
    if let Some(h) = hello {
        input.push_str(h);
        input.push('\n');
    }
    for l in lines {
        input.push_str(l);
        input.push('\n');
    }
    s.write_all(input.as_bytes()).unwrap();
    shutdown(&s);
    let mut out = Vec::new();
    for line in BufReader::new(s).lines() {
        let line = line.expect("answers arrive before the read timeout");
        out.push(Answer::from_json(&serde_json::from_str(&line).unwrap()));
    }
    out
}

/// Publishes `lines` over `transport` with acks on; one answer per line
/// (HTTP: one request per line, so each is judged alone like on a socket).
pub fn publish(
    d: &Daemon,
    transport: Transport,
    token: Option<&str>,
    lines: &[String],
) -> Vec<Answer> {
    let hello = match token {
        Some(t) => format!("{{\"hello\":{{\"acks\":true,\"token\":\"{t}\"}}}}"),
        None => "{\"hello\":{\"acks\":true}}".to_owned(),
    };
    match transport {
        Transport::Unix => exchange(d.unix().unwrap(), Some(&hello), lines, |s| {
            s.shutdown(Shutdown::Write).unwrap()
        }),
        Transport::Tcp => exchange(d.tcp().unwrap(), Some(&hello), lines, |s| {
            s.shutdown(Shutdown::Write).unwrap()
        }),
        Transport::Http => lines
            .iter()
            .map(|l| {
                let stream = serde_json::from_str::<Value>(l)
                    .ok()
                    .and_then(|v| v["stream"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| "events".to_owned());
                let (status, v) = http(
                    d,
                    "POST",
                    &format!("/api/streams/{stream}/events"),
                    token,
                    Some(l.as_bytes()),
                );
                if (200..300).contains(&status) {
                    Answer::Id(v["ids"][0].as_str().unwrap().to_owned())
                } else {
                    Answer::Error(v["error"].as_str().unwrap_or("?").to_owned())
                }
            })
            .collect(),
    }
}

/// One HTTP request; returns the status and the JSON body.
pub fn http(
    d: &Daemon,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
) -> (u16, Value) {
    let (status, text) = d.http(method, path, token, body).unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Every event of `stream`, oldest first, read over HTTP page by page.
pub fn read_all(d: &Daemon, stream: &str, token: Option<&str>) -> Vec<Value> {
    let mut out = Vec::new();
    let mut from = "-".to_owned();
    loop {
        let (status, v) = http(
            d,
            "GET",
            &format!("/api/streams/{stream}/events?from={from}&limit=5000"),
            token,
            None,
        );
        if status == 404 {
            return out;
        }
        assert_eq!(status, 200, "{v}");
        out.extend(v["events"].as_array().unwrap().iter().cloned());
        match v["next"].as_str() {
            Some(next) => from = next.to_owned(),
            None => return out,
        }
    }
}

/// Waits until `f` holds (fire-and-forget publishes land without answers).
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
