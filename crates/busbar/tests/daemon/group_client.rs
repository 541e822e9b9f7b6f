//! A consumer speaking the group ops of the socket protocol, for tests.

use std::io::{BufRead, BufReader, Write};
use std::net::Shutdown;
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::Daemon;

/// One delivery: id, delivery count, the event.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: String,
    pub count: u64,
    pub event: Value,
}

enum Socket {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
}

impl Socket {
    fn try_clone(&self) -> std::io::Result<Socket> {
        Ok(match self {
            Socket::Tcp(s) => Socket::Tcp(s.try_clone()?),
            Socket::Unix(s) => Socket::Unix(s.try_clone()?),
        })
    }

    fn shutdown(&self) {
        let _ = match self {
            Socket::Tcp(s) => s.shutdown(Shutdown::Both),
            Socket::Unix(s) => s.shutdown(Shutdown::Both),
        };
    }
}

impl std::io::Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Socket::Tcp(s) => s.read(buf),
            Socket::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Socket::Tcp(s) => s.write(buf),
            Socket::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A connection in acks mode.
pub struct Conn {
    reader: BufReader<Socket>,
    writer: Socket,
}

impl Conn {
    /// A TCP connection; sends a hello with acks (and the token, if any).
    pub fn tcp(d: &Daemon, token: Option<&str>) -> Conn {
        Conn::tcp_at(&tcp_addr(d), token)
    }

    /// A TCP connection to `addr`, with a hello asking for acks.
    pub fn tcp_at(addr: &str, token: Option<&str>) -> Conn {
        let s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut c = Conn::over(Socket::Tcp(s));
        let hello = match token {
            Some(t) => json!({"hello": {"acks": true, "token": t}}),
            None => json!({"hello": {"acks": true}}),
        };
        c.send(&hello);
        c
    }

    /// A TCP connection to `addr` with acks on; `None` when the daemon is
    /// gone.
    pub fn try_tcp_at(addr: &str) -> Option<Conn> {
        let s = std::net::TcpStream::connect(addr).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
        let mut c = Conn::over(Socket::Tcp(s));
        c.writer.write_all(b"{\"hello\":{\"acks\":true}}\n").ok()?;
        Some(c)
    }

    /// A Unix-socket connection whose first line is an op (no hello).
    pub fn unix(d: &Daemon) -> Conn {
        Conn::unix_at(&unix_path(d))
    }

    /// A Unix-socket connection to `path`.
    pub fn unix_at(path: &str) -> Conn {
        let s = std::os::unix::net::UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Conn::over(Socket::Unix(s))
    }

    fn over(s: Socket) -> Conn {
        Conn {
            reader: BufReader::new(s.try_clone().unwrap()),
            writer: s,
        }
    }

    /// Sends one line.
    pub fn send(&mut self, v: &Value) {
        self.send_raw(&v.to_string());
    }

    /// Sends text as one line.
    pub fn send_raw(&mut self, line: &str) {
        let mut text = line.to_owned();
        text.push('\n');
        self.writer.write_all(text.as_bytes()).unwrap();
    }

    /// Reads one answer line.
    pub fn recv(&mut self) -> Value {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).expect("an answer line");
        assert!(n > 0, "the daemon closed the connection");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad answer {line:?}: {e}"))
    }

    /// Reads one answer line; `None` when the connection broke.
    pub fn try_recv(&mut self) -> Option<Value> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(n) if n > 0 => serde_json::from_str(&line).ok(),
            _ => None,
        }
    }

    /// Sends a line and reads its answer.
    pub fn call(&mut self, v: Value) -> Value {
        self.send(&v);
        self.recv()
    }

    /// Sends a line and reads its answer; `None` when the connection broke.
    pub fn try_call(&mut self, v: Value) -> Option<Value> {
        let mut text = v.to_string();
        text.push('\n');
        self.writer.write_all(text.as_bytes()).ok()?;
        self.try_recv()
    }

    /// Publishes `n` events; their ids, or `None` when the connection broke
    /// before every answer arrived (the events answered before are lost to
    /// the caller, which only counts answered ones).
    pub fn try_publish(&mut self, stream: &str, n: usize) -> Option<Vec<String>> {
        let mut text = String::new();
        for i in 0..n {
            text.push_str(&json!({"type": "t", "stream": stream, "n": i}).to_string());
            text.push('\n');
        }
        self.writer.write_all(text.as_bytes()).ok()?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.try_recv()?["id"].as_str()?.to_owned());
        }
        Some(out)
    }

    /// Closes both directions at once (a consumer that dies).
    pub fn kill(self) {
        self.writer.shutdown();
    }
}

/// The daemon's TCP address.
pub fn tcp_addr(d: &Daemon) -> String {
    d.addresses().tcp.to_string()
}

/// The daemon's events socket.
pub fn unix_path(d: &Daemon) -> String {
    d.addresses().events_socket.display().to_string()
}

/// A `read` op.
pub fn read_op(stream: &str, group: &str, consumer: &str, count: u64, block_ms: u64) -> Value {
    json!({"op": "read", "stream": stream, "group": group, "consumer": consumer,
           "count": count, "block_ms": block_ms})
}

/// An `ack` op.
pub fn ack_op(stream: &str, group: &str, consumer: &str, ids: &[String]) -> Value {
    json!({"op": "ack", "stream": stream, "group": group, "consumer": consumer, "ids": ids})
}

/// The deliveries of a `read` or `claim` answer.
pub fn deliveries(answer: &Value) -> Vec<Delivery> {
    answer["deliveries"]
        .as_array()
        .unwrap_or_else(|| panic!("not a delivery answer: {answer}"))
        .iter()
        .map(|d| Delivery {
            id: d["id"].as_str().unwrap().to_owned(),
            count: d["delivery_count"].as_u64().unwrap(),
            event: d["event"].clone(),
        })
        .collect()
}

/// The ids of an answer's list member.
pub fn ids(answer: &Value, member: &str) -> Vec<String> {
    answer[member]
        .as_array()
        .unwrap_or_else(|| panic!("no {member} in {answer}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

/// Creates a group (from the beginning) with the given policy.
pub fn create_group(c: &mut Conn, stream: &str, group: &str, policy: Value) {
    let mut op = json!({"op": "create_group", "stream": stream, "group": group, "start": "0"});
    for (k, v) in policy.as_object().unwrap() {
        op[k] = v.clone();
    }
    let answer = c.call(op);
    assert_eq!(answer["group"]["name"], group, "{answer}");
}

/// Publishes `n` events of `ty` to `stream` on `c`; returns their ids.
pub fn publish_n(c: &mut Conn, stream: &str, ty: &str, n: usize) -> Vec<String> {
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&json!({"type": ty, "stream": stream, "n": i}).to_string());
        text.push('\n');
    }
    c.writer.write_all(text.as_bytes()).unwrap();
    (0..n)
        .map(|_| {
            let a = c.recv();
            a["id"]
                .as_str()
                .unwrap_or_else(|| panic!("publish refused: {a}"))
                .to_owned()
        })
        .collect()
}

/// A seeded xorshift generator: tests print the seed so a failure can be
/// replayed with `BUSBAR_TEST_SEED`.
pub struct Rng(u64);

impl Rng {
    /// From `BUSBAR_TEST_SEED`, or the clock; prints the seed.
    pub fn from_env(test: &str) -> Rng {
        let seed = std::env::var("BUSBAR_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("{test}: seed {seed} (BUSBAR_TEST_SEED={seed} replays it)");
        Rng::from_seed(seed)
    }

    /// From a seed.
    pub fn from_seed(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `[lo, hi)`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }
}

/// Whether the long crash runs are asked for (`BUSBAR_LONG_CRASH=1`).
pub fn long_mode() -> bool {
    std::env::var("BUSBAR_LONG_CRASH").is_ok_and(|v| v == "1")
}
