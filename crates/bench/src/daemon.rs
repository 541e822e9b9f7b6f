//! The `busbar serve` child a bench runs against: its own temporary data
//! directory, ephemeral loopback ports, a clean environment.

use std::io::Read as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::BenchError;

/// How long a daemon may take to write its addresses, and to stop.
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The part of `<data-dir>/run/addresses.json` the bench reads.
#[derive(Debug, Deserialize)]
struct Addresses {
    pid: u32,
    tcp: SocketAddr,
    http: SocketAddr,
    events_socket: PathBuf,
}

/// A running `busbar serve`; stopped (and its data removed) on drop.
pub(crate) struct Daemon {
    child: Option<Child>,
    log: PathBuf,
    pub(crate) tcp: SocketAddr,
    pub(crate) http: SocketAddr,
    pub(crate) unix: PathBuf,
    // Dropped last: the data directory outlives the process.
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts `exe serve` with `args` (durability flags) and waits until it
    /// listens.
    pub(crate) async fn start(
        exe: &Path,
        args: &[&str],
        work_dir: Option<&Path>,
    ) -> Result<Daemon, BenchError> {
        let mut builder = tempfile::Builder::new();
        builder.prefix("busbar-bench-");
        let dir = match work_dir {
            Some(parent) => builder.tempdir_in(parent),
            None => builder.tempdir(),
        }
        .map_err(|e| BenchError::io("cannot create a temporary data directory", e))?;
        let data = dir.path().join("data");
        let log = dir.path().join("daemon.log");
        let log_file = std::fs::File::create(&log)
            .map_err(|e| BenchError::io(format!("cannot create {}", log.display()), e))?;
        let mut cmd = Command::new(exe);
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(&data)
            .args(["--tcp-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        // The operator's BUSBAR_* settings would change what is measured.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("BUSBAR_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("BUSBAR_LOG_LEVEL", "warn");
        let child = cmd.spawn().map_err(|source| BenchError::Spawn {
            exe: exe.to_owned(),
            source,
        })?;
        let mut daemon = Daemon {
            child: Some(child),
            log,
            tcp: SocketAddr::from(([127, 0, 0, 1], 0)),
            http: SocketAddr::from(([127, 0, 0, 1], 0)),
            unix: PathBuf::new(),
            _dir: dir,
        };
        let addresses = data.join("run").join("addresses.json");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(bytes) = std::fs::read(&addresses) {
                if let Ok(a) = serde_json::from_slice::<Addresses>(&bytes) {
                    if Some(a.pid) == daemon.pid() {
                        daemon.tcp = a.tcp;
                        daemon.http = a.http;
                        daemon.unix = a.events_socket;
                        return Ok(daemon);
                    }
                }
            }
            if let Some(child) = daemon.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(daemon.failure(format!("exited with {status} before it listened")));
                }
            }
            if Instant::now() > deadline {
                return Err(daemon.failure(format!(
                    "did not listen within {}s",
                    START_TIMEOUT.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Deletes `stream` (`DELETE /api/streams/<stream>`), so the next
    /// round starts empty; a stream that does not exist is fine.
    pub(crate) async fn delete_stream(&self, stream: &str) -> Result<(), BenchError> {
        let what = format!("cannot delete the stream {stream} over HTTP {}", self.http);
        let mut s = tokio::net::TcpStream::connect(self.http)
            .await
            .map_err(|e| BenchError::io(what.clone(), e))?;
        let request = format!(
            "DELETE /api/streams/{stream} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n",
            self.http
        );
        s.write_all(request.as_bytes())
            .await
            .map_err(|e| BenchError::io(what.clone(), e))?;
        let mut answer = Vec::new();
        tokio::time::timeout(STOP_TIMEOUT, s.read_to_end(&mut answer))
            .await
            .map_err(|_| BenchError::io(what.clone(), std::io::ErrorKind::TimedOut.into()))?
            .map_err(|e| BenchError::io(what.clone(), e))?;
        let status = answer.split(|&b| b == b' ').nth(1).unwrap_or_default();
        if status == b"200" || status == b"404" {
            return Ok(());
        }
        let line = answer.split(|&b| b == b'\r').next().unwrap_or_default();
        Err(BenchError::Daemon {
            what: format!("answered {}", String::from_utf8_lossy(line)),
            log: self.log_tail(),
        })
    }

    /// Resident memory now (`VmRSS`) and at its peak (`VmHWM`), in KiB.
    pub(crate) fn memory_kib(&self) -> Option<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        };
        Some((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// CPU time the daemon used so far (all threads, user + system).
    pub(crate) fn cpu_time(&self) -> Option<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()?)).ok()?;
        // Fields after the parenthesised command name; utime and stime are
        // the 14th and 15th fields of the line, in clock ticks.
        let rest = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        // SAFETY: sysconf has no memory effects.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let hz = u64::try_from(hz).ok().filter(|&h| h > 0)?;
        Some(Duration::from_nanos(ticks * 1_000_000_000 / hz))
    }

    fn failure(&mut self, what: String) -> BenchError {
        self.kill();
        BenchError::Daemon {
            what,
            log: self.log_tail(),
        }
    }

    fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// SIGTERM, then waits for the drain; an error if it did not exit
    /// cleanly.
    pub(crate) async fn stop(mut self) -> Result<(), BenchError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        terminate(&child);
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => {
                    return Err(BenchError::Daemon {
                        what: format!("exited with {status} at shutdown"),
                        log: self.log_tail(),
                    })
                }
                Ok(None) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(BenchError::Daemon {
                        what: format!("did not stop within {}s", STOP_TIMEOUT.as_secs()),
                        log: self.log_tail(),
                    });
                }
            }
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn terminate(child: &Child) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}
