//! The `busbar serve` child a bench runs against, started by
//! `busbar-testkit`: its own temporary data directory, ephemeral loopback
//! ports, none of the operator's `BUSBAR_*` settings (they would change
//! what is measured), warnings only in its log. Waiting for it to start and
//! stop happens on the blocking pool, so an interrupt is handled meanwhile.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use busbar_testkit::Options;

use crate::{procfs, BenchError};

/// A running `busbar serve`; killed (and its data removed) on drop.
pub(crate) struct Daemon {
    inner: busbar_testkit::Daemon,
    pub(crate) tcp: SocketAddr,
    pub(crate) http: SocketAddr,
    pub(crate) unix: PathBuf,
}

impl Daemon {
    /// Starts `exe serve` with `args` (durability flags) in a temporary
    /// directory under `work_dir` (default: the system's), and waits until
    /// it listens.
    pub(crate) async fn start(
        exe: &Path,
        args: &[&str],
        work_dir: Option<&Path>,
    ) -> Result<Daemon, BenchError> {
        let mut options = Options::new(exe)
            .args(args)
            .without_busbar_env()
            .log_level("warn");
        if let Some(dir) = work_dir {
            options = options.temp_dir_in(dir);
        }
        let inner = blocking(move || busbar_testkit::Daemon::start(&options)).await??;
        let a = inner.addresses();
        Ok(Daemon {
            tcp: a.tcp,
            http: a.http,
            unix: a.events_socket.clone(),
            inner,
        })
    }

    fn pid(&self) -> u32 {
        self.inner.addresses().pid
    }

    /// Deletes `stream` (`DELETE /api/streams/<stream>`), so the next
    /// round starts empty; a stream that does not exist is fine.
    pub(crate) fn delete_stream(&self, stream: &str) -> Result<(), BenchError> {
        let path = format!("/api/streams/{stream}");
        match self.inner.http("DELETE", &path, None, None)? {
            (200 | 404, _) => Ok(()),
            (status, body) => Err(failure(
                &self.inner,
                format!(
                    "answered DELETE {path} with {status}: {}",
                    body.chars().take(200).collect::<String>()
                ),
            )),
        }
    }

    /// Resident memory now and at its peak, in KiB.
    pub(crate) fn memory_kib(&self) -> Option<(u64, u64)> {
        procfs::memory_kib(self.pid())
    }

    /// CPU time the daemon used so far (all threads, user + system).
    pub(crate) fn cpu_time(&self) -> Option<Duration> {
        procfs::cpu_time(self.pid())
    }

    /// SIGTERM, then waits for the drain; an error if it did not exit
    /// cleanly.
    pub(crate) async fn stop(self) -> Result<(), BenchError> {
        let Daemon { mut inner, .. } = self;
        let (inner, status) = blocking(move || {
            let status = inner.stop();
            (inner, status)
        })
        .await?;
        match status? {
            s if s.success() => Ok(()),
            s => Err(failure(&inner, format!("exited with {s} at shutdown"))),
        }
    }
}

/// `what` went wrong, with the end of the daemon's log.
fn failure(daemon: &busbar_testkit::Daemon, what: String) -> BenchError {
    let log = daemon.log();
    let lines: Vec<&str> = log.lines().collect();
    BenchError::Daemon {
        what,
        log: lines[lines.len().saturating_sub(20)..].join("\n"),
    }
}

/// Runs `f` on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, BenchError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BenchError::io("a daemon's start or stop failed", std::io::Error::other(e)))
}
