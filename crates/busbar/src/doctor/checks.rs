//! The checks of `busbar doctor`, each answering a [`Verdict`].

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use busbar_config::{Addresses, Config};
use serde_json::{json, Value};

use super::{Outcome, Verdict, PROBE_STREAM, PROBE_TYPE};
use crate::client::Client;

/// The command a relay answers its sinks' state to. The relay is not
/// built yet; until a daemon registers it, the command socket answers
/// `unknown_command` and the check is skipped. Expected answer:
/// `{"ok":true,"sinks":[{"name":..,"healthy":bool,"error"?:".."}]}`.
const RELAY_STATUS: &str = r#"{"cmd":"relay","args":{"op":"status"}}"#;

/// The daemon of `run_file`, if it is there and its process is alive.
pub fn find_daemon(run_file: &Path) -> Result<Addresses, String> {
    let bytes = std::fs::read(run_file).map_err(|e| {
        format!(
            "cannot read {}: {e}: is `busbar serve` running with this data directory? (--data-dir)",
            run_file.display()
        )
    })?;
    let addresses: Addresses = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{} is not a run file: {e}", run_file.display()))?;
    let pid = libc::pid_t::try_from(addresses.pid)
        .map_err(|_| format!("{} names pid {}", run_file.display(), addresses.pid))?;
    // SAFETY: signal 0 only checks that the process exists.
    let alive = unsafe { libc::kill(pid, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    if !alive {
        return Err(format!(
            "{} names pid {}, which is not running: the daemon was killed or crashed",
            run_file.display(),
            addresses.pid
        ));
    }
    Ok(addresses)
}

/// A value that tells this run's probes from earlier ones.
pub fn nonce() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{:x}-{:x}", std::process::id(), nanos)
}

/// Publishes probe events and reads them back.
pub struct Probe<'a> {
    pub client: &'a Client,
    pub token: Option<&'a str>,
    pub timeout: Duration,
    pub nonce: String,
}

fn fail(detail: impl Into<String>) -> Verdict {
    (Outcome::Fail, detail.into())
}

impl Probe<'_> {
    fn event(&self, transport: &str) -> Value {
        json!({
            "type": PROBE_TYPE,
            "stream": PROBE_STREAM,
            "transport": transport,
            "probe": self.nonce,
        })
    }

    /// Reads `id` back over HTTP and checks it is this run's probe.
    fn read_back(&self, transport: &str, id: &str) -> Verdict {
        let query = [("from", id.to_owned()), ("limit", "1".to_owned())];
        let answer = match self
            .client
            .get(&format!("/api/streams/{PROBE_STREAM}/events"), &query)
        {
            Ok(answer) => answer,
            Err(e) => return fail(format!("published {id}, but reading it back failed: {e}")),
        };
        let event = &answer["events"][0];
        if event["id"] != id {
            return fail(format!("published {id}, but it is not in {PROBE_STREAM}"));
        }
        if event["data"]["probe"] != self.nonce.as_str() || event["data"]["transport"] != transport
        {
            return fail(format!("{id} read back is not the probe that was sent"));
        }
        (Outcome::Pass, format!("published and read back {id}"))
    }

    /// One probe over a socket line protocol (Unix or TCP).
    fn over_socket<S: std::io::Read + Write>(&self, transport: &str, mut stream: S) -> Verdict {
        let hello = match self.token {
            Some(token) => json!({"hello": {"acks": true, "token": token}}),
            None => json!({"hello": {"acks": true}}),
        };
        let lines = format!("{hello}\n{}\n", self.event(transport));
        if let Err(e) = stream.write_all(lines.as_bytes()) {
            return fail(format!("cannot send the probe: {e}"));
        }
        let mut answer = String::new();
        if let Err(e) = BufReader::new(&mut stream).read_line(&mut answer) {
            return fail(format!("no answer to the probe: {e}"));
        }
        let value: Value = serde_json::from_str(answer.trim()).unwrap_or(Value::Null);
        match value["id"].as_str() {
            Some(id) => self.read_back(transport, id),
            None if answer.trim().is_empty() => {
                fail("the daemon closed the connection without an answer")
            }
            None => fail(format!(
                "refused: {} ({})",
                value["message"].as_str().unwrap_or(answer.trim()),
                value["error"].as_str().unwrap_or("?")
            )),
        }
    }

    /// The events Unix socket.
    pub fn unix(&self, path: &Path) -> Verdict {
        let stream = match UnixStream::connect(path) {
            Ok(s) => s,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return fail(format!(
                    "{} does not exist: the socket file was removed",
                    path.display()
                ));
            }
            Err(e) => return fail(format!("cannot connect to {}: {e}", path.display())),
        };
        let _ = stream.set_read_timeout(Some(self.timeout));
        let _ = stream.set_write_timeout(Some(self.timeout));
        let verdict = self.over_socket("unix", &stream);
        let _ = stream.shutdown(Shutdown::Both);
        verdict
    }

    /// TCP ingest.
    pub fn tcp(&self, addr: SocketAddr) -> Verdict {
        if addr.port() == 0 {
            return (Outcome::Skip, "TCP ingest is not listening".to_owned());
        }
        let stream = match TcpStream::connect_timeout(&addr, self.timeout) {
            Ok(s) => s,
            Err(e) => return fail(format!("cannot connect to {addr}: {e}")),
        };
        let _ = stream.set_read_timeout(Some(self.timeout));
        let _ = stream.set_write_timeout(Some(self.timeout));
        let verdict = self.over_socket("tcp", &stream);
        let _ = stream.shutdown(Shutdown::Both);
        verdict
    }

    /// `POST /api/streams/busbar-doctor/events`.
    pub fn http(&self) -> Verdict {
        let answer = self.client.post_json(
            &format!("/api/streams/{PROBE_STREAM}/events"),
            &self.event("http"),
        );
        match answer {
            Ok(v) => match v["ids"][0].as_str() {
                Some(id) => self.read_back("http", id),
                None => fail(format!("unexpected answer: {v}")),
            },
            Err(e) => fail(e.to_string()),
        }
    }

    /// A `publish` message over `/ws`.
    pub fn websocket(&self, addr: SocketAddr) -> Verdict {
        use tungstenite::client::IntoClientRequest;
        use tungstenite::Message;

        let stream = match TcpStream::connect_timeout(&addr, self.timeout) {
            Ok(s) => s,
            Err(e) => return fail(format!("cannot connect to {addr}: {e}")),
        };
        let _ = stream.set_read_timeout(Some(self.timeout));
        let _ = stream.set_write_timeout(Some(self.timeout));
        let mut request = match format!("ws://{addr}/ws").into_client_request() {
            Ok(r) => r,
            Err(e) => return fail(format!("cannot build the request: {e}")),
        };
        if let Some(token) = self.token {
            match format!("Bearer {token}").parse() {
                Ok(value) => {
                    request.headers_mut().insert("authorization", value);
                }
                Err(_) => return fail("the token cannot be sent in a header"),
            }
        }
        let mut ws = match tungstenite::client(request, stream) {
            Ok((ws, _)) => ws,
            Err(e) => return fail(format!("handshake failed: {e}")),
        };
        let publish = json!({"op": "publish", "ref": 1, "event": self.event("websocket")});
        if let Err(e) = ws.send(Message::Text(publish.to_string().into())) {
            return fail(format!("cannot send the probe: {e}"));
        }
        let verdict = loop {
            let message = match ws.read() {
                Ok(Message::Text(text)) => text,
                Ok(Message::Close(frame)) => {
                    break fail(format!(
                        "closed before the ack: {}",
                        frame.map_or_else(String::new, |f| f.reason.to_string())
                    ))
                }
                Ok(_) => continue,
                Err(e) => break fail(format!("no ack: {e}")),
            };
            let value: Value = serde_json::from_str(message.as_str()).unwrap_or(Value::Null);
            match value["type"].as_str() {
                Some("ack") if value["ref"] == 1 => match value["ids"][0].as_str() {
                    Some(id) => break self.read_back("websocket", id),
                    None => break fail(format!("an ack without an id: {value}")),
                },
                Some("error") => {
                    break fail(format!(
                        "refused: {} ({})",
                        value["message"].as_str().unwrap_or("?"),
                        value["error"].as_str().unwrap_or("?")
                    ))
                }
                // Heartbeats and other notices.
                _ => continue,
            }
        };
        let _ = ws.close(None);
        verdict
    }
}

/// `GET /readyz`.
pub fn readyz(client: &Client) -> Verdict {
    match client.get("/readyz", &[]) {
        Ok(_) => (Outcome::Pass, "ready".to_owned()),
        Err(e) => fail(format!("not ready: {e}")),
    }
}

/// One line to the command socket, its answer.
fn command(socket: &Path, line: &str, timeout: Duration) -> Result<Value, String> {
    let mut stream = UnixStream::connect(socket).map_err(|e| {
        if e.kind() == ErrorKind::NotFound {
            format!(
                "{} does not exist: the socket file was removed",
                socket.display()
            )
        } else {
            format!("cannot connect to {}: {e}", socket.display())
        }
    })?;
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    writeln!(stream, "{line}").map_err(|e| format!("cannot send the command: {e}"))?;
    let _ = stream.shutdown(Shutdown::Write);
    let mut answer = String::new();
    BufReader::new(&stream)
        .read_line(&mut answer)
        .map_err(|e| format!("no answer: {e}"))?;
    serde_json::from_str(answer.trim()).map_err(|_| format!("unexpected answer: {}", answer.trim()))
}

/// `health` on the command socket.
pub fn command_health(socket: &Path, timeout: Duration) -> Verdict {
    match command(socket, r#"{"cmd":"health"}"#, timeout) {
        Ok(v) if v["status"] == "ok" => (
            Outcome::Pass,
            format!(
                "health ok, up {}s",
                v["uptime_seconds"].as_u64().unwrap_or(0)
            ),
        ),
        Ok(v) if v["ok"] == true => fail(format!("health {}: {}", v["status"], v["not_ready"])),
        Ok(v) => fail(format!("health failed: {}", v["message"])),
        Err(why) => fail(why),
    }
}

/// The relay sinks, as the relay's status command reports them.
pub fn relay(socket: &Path, timeout: Duration) -> Verdict {
    match command(socket, RELAY_STATUS, timeout) {
        Ok(v) if v["error"] == "unknown_command" => (
            Outcome::Skip,
            "no sinks configured (no relay in this daemon)".to_owned(),
        ),
        Ok(v) => relay_verdict(&v),
        Err(why) => fail(why),
    }
}

/// Judges a relay status answer.
fn relay_verdict(v: &Value) -> Verdict {
    if v["ok"] != true {
        return fail(format!(
            "relay status failed: {}",
            v["message"].as_str().unwrap_or("no reason given")
        ));
    }
    let sinks = v["sinks"].as_array().map(Vec::as_slice).unwrap_or_default();
    if sinks.is_empty() {
        return (Outcome::Skip, "no sinks configured".to_owned());
    }
    let broken: Vec<String> = sinks
        .iter()
        .filter(|s| s["healthy"] != true)
        .map(|s| {
            format!(
                "{}: {}",
                s["name"].as_str().unwrap_or("?"),
                s["error"].as_str().unwrap_or("unhealthy")
            )
        })
        .collect();
    if broken.is_empty() {
        (Outcome::Pass, format!("{} sinks healthy", sinks.len()))
    } else {
        fail(format!("unreachable: {}", broken.join("; ")))
    }
}

/// The data directory's free space against the store's reserve.
pub fn disk(data_dir: &Path, backend: &str, config: Option<&Path>) -> Verdict {
    if backend == "memory" {
        return (Outcome::Skip, "memory store: nothing on disk".to_owned());
    }
    let (reserve, floor, note) = match Config::load(config) {
        Ok(c) => (c.storage.reserve, c.readiness.min_free_disk, ""),
        Err(_) => {
            let c = Config::default();
            (
                c.storage.reserve,
                c.readiness.min_free_disk,
                " (config unreadable: defaults)",
            )
        }
    };
    let free = match fs2::available_space(data_dir) {
        Ok(free) => free,
        Err(e) => {
            return fail(format!(
                "cannot read the free space of {}: {e}",
                data_dir.display()
            ))
        }
    };
    let detail = format!(
        "{} free; reserve {reserve}, readiness floor {floor}{note}",
        human(free)
    );
    if free < reserve.bytes() {
        fail(format!(
            "{detail}: less than the reserve, appends will be refused"
        ))
    } else if free < floor.bytes() {
        fail(format!("{detail}: below the readiness floor"))
    } else {
        (Outcome::Pass, detail)
    }
}

/// Bytes in the largest binary unit that keeps one digit before the point.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_answers_are_judged_per_sink() {
        let none = relay_verdict(&json!({"ok": true, "sinks": []}));
        assert_eq!(none.0, Outcome::Skip);
        let good = relay_verdict(&json!({"ok": true, "sinks": [{"name": "up", "healthy": true}]}));
        assert_eq!(good.0, Outcome::Pass);
        let bad = relay_verdict(&json!({"ok": true, "sinks": [
            {"name": "up", "healthy": true},
            {"name": "cloud", "healthy": false, "error": "connection refused"},
        ]}));
        assert_eq!(bad.0, Outcome::Fail);
        assert!(bad.1.contains("cloud: connection refused"), "{}", bad.1);
    }

    #[test]
    fn free_space_reads_for_people() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(64 << 20), "64.0 MiB");
        assert_eq!(human(61 << 30 | 1 << 29), "61.5 GiB");
    }
}
