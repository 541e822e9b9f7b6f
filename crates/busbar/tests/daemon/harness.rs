//! Starts the real `busbar serve` on a temporary data directory with
//! ephemeral ports and talks to it over every transport.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
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

/// A running daemon. Killed on drop.
pub struct Daemon {
    child: Option<Child>,
    pub dir: PathBuf,
    pub addrs: Value,
    log: PathBuf,
}

/// Options of one start.
#[derive(Default, Clone)]
pub struct Options {
    pub config: Option<String>,
    pub env: Vec<(String, String)>,
}

impl Options {
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.to_owned(), v.to_owned()));
        self
    }

    pub fn config(mut self, toml: &str) -> Self {
        self.config = Some(toml.to_owned());
        self
    }
}

impl Daemon {
    /// Starts a daemon on `dir` (created if needed).
    pub fn start_in(dir: &Path, options: &Options) -> Daemon {
        std::fs::create_dir_all(dir).unwrap();
        let log = dir.join(format!("daemon-{}.log", unique()));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_busbar"));
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--tcp-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
            .env_remove("BUSBAR_CONFIG")
            .env("BUSBAR_LOG_LEVEL", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some(toml) = &options.config {
            let path = dir.join("busbar.toml");
            std::fs::write(&path, toml).unwrap();
            cmd.arg("--config").arg(path);
        }
        for (k, v) in &options.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("busbar starts");
        let mut d = Daemon {
            child: Some(child),
            dir: dir.to_owned(),
            addrs: Value::Null,
            log,
        };
        d.wait_ready();
        d
    }

    fn wait_ready(&mut self) {
        let path = self.dir.join("data").join("run").join("addresses.json");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // A file left by a killed daemon names another pid.
            if let Ok(bytes) = std::fs::read(&path) {
                if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
                    if v["pid"].as_i64() == Some(i64::from(self.pid())) {
                        self.addrs = v;
                        return;
                    }
                }
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!(
                    "busbar exited with {status} before it was ready:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "busbar not ready in 20s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the daemon logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn backend(&self) -> &str {
        self.addrs["backend"].as_str().unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    pub fn unix(&self) -> UnixStream {
        let s = UnixStream::connect(self.addrs["events_socket"].as_str().unwrap()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    pub fn tcp(&self) -> TcpStream {
        let s = TcpStream::connect(self.addrs["tcp"].as_str().unwrap()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    pub fn http_url(&self) -> String {
        format!("http://{}", self.addrs["http"].as_str().unwrap())
    }

    /// `/metrics` as text (within 10 s).
    pub fn metrics(&self) -> String {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(std::time::Duration::from_secs(10)))
            .build()
            .into();
        agent
            .get(&format!("{}/metrics", self.http_url()))
            .call()
            .expect("/metrics")
            .body_mut()
            .read_to_string()
            .unwrap()
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "no exit 20s after SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
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
        Transport::Unix => exchange(d.unix(), Some(&hello), lines, |s| {
            s.shutdown(Shutdown::Write).unwrap()
        }),
        Transport::Tcp => exchange(d.tcp(), Some(&hello), lines, |s| {
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
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let url = format!("{}{path}", d.http_url());
    let auth = token.map(|t| format!("Bearer {t}"));
    let result = match (method, body) {
        ("POST", Some(b)) => {
            let mut r = agent.post(&url).header("content-type", "application/json");
            if let Some(a) = &auth {
                r = r.header("authorization", a);
            }
            r.send(b)
        }
        _ => {
            let mut r = agent.get(&url);
            if let Some(a) = &auth {
                r = r.header("authorization", a);
            }
            r.call()
        }
    };
    let mut resp = result.unwrap();
    let status = resp.status().as_u16();
    let text = resp
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_string()
        .unwrap();
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
