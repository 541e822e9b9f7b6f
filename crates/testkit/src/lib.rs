//! Starts the real `busbar serve` for tests and benches.
//!
//! [`Daemon::start`] runs the executable it is given (tests pass
//! `env!("CARGO_BIN_EXE_busbar")`, `busbar bench` its own path) as `busbar
//! serve` on a fresh temporary data directory, with TCP and HTTP on
//! ephemeral loopback ports, and returns once the daemon has written its
//! [`Addresses`] (the file whose `pid` is the child's: one left by an
//! earlier, killed daemon in the same directory is not taken for it).
//! [`Daemon::start_in`] does the same in a directory the caller keeps, so a
//! test can stop or kill a daemon and start another on the same data.
//!
//! The daemon's standard error goes to a log file in its directory
//! ([`Daemon::log`]); a daemon that exits early or never gets ready is
//! reported with the end of that log. A [`Daemon`] that is dropped is
//! killed; [`Daemon::stop`] sends SIGTERM and waits for the exit, so a
//! test can check the drain, and [`Daemon::kill`] sends SIGKILL, so it can
//! check recovery.
//!
//! ```no_run
//! use busbar_testkit::{Daemon, Options};
//!
//! let options = Options::new("target/debug/busbar").env("BUSBAR_DURABILITY", "always");
//! let mut daemon = Daemon::start(&options)?;
//! let metrics = daemon.metrics()?;
//! assert!(metrics.contains("busbar_"));
//! let status = daemon.stop()?;
//! assert!(status.success());
//! # Ok::<(), busbar_testkit::Error>(())
//! ```

#![warn(missing_docs)]

use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub use busbar_config::Addresses;

/// How long a daemon may take to write its addresses.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a daemon may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Read timeout of the connections and requests the kit opens.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Lines of the daemon's log an error carries.
const LOG_TAIL: usize = 40;
/// Largest HTTP answer read.
const MAX_BODY: u64 = 64 << 20;

/// Why a daemon could not be started, stopped or asked something.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file operation around the daemon failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// The executable could not be started.
    #[error("cannot start {exe}: {source}")]
    Spawn {
        /// The executable.
        exe: PathBuf,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// The daemon exited early, never got ready, or did not stop.
    #[error("busbar serve {what}; its log ends with:\n{log}")]
    Daemon {
        /// What went wrong.
        what: String,
        /// The end of its log.
        log: String,
    },
    /// An HTTP request failed or was answered with an unexpected status.
    #[error("{method} {url}: {message}")]
    Http {
        /// The method.
        method: String,
        /// The URL.
        url: String,
        /// What went wrong.
        message: String,
    },
}

fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    |source| Error::Io { what, source }
}

/// How to start a daemon.
#[derive(Debug, Clone)]
pub struct Options {
    exe: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    config: Option<String>,
    log_level: String,
    clear_busbar_env: bool,
    temp_parent: Option<PathBuf>,
}

impl Options {
    /// Starts `exe` (a `busbar` executable) with its defaults, logging at
    /// `info`. The caller's `BUSBAR_*` environment is passed on, so a suite
    /// can be run against another store with `BUSBAR_STORAGE_BACKEND`;
    /// only `BUSBAR_CONFIG` is dropped (a config file is given with
    /// [`Options::config`]).
    pub fn new(exe: impl Into<PathBuf>) -> Options {
        Options {
            exe: exe.into(),
            args: Vec::new(),
            env: Vec::new(),
            config: None,
            log_level: "info".to_owned(),
            clear_busbar_env: false,
            temp_parent: None,
        }
    }

    /// Adds `busbar serve` arguments (`--memory`, `--durability always`,
    /// `--config <file>`).
    pub fn args<I, S>(mut self, args: I) -> Options
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets an environment variable of the daemon (after every other).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Options {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// A config file's TOML, written to the daemon's directory as
    /// `busbar.toml` and passed with `--config`.
    pub fn config(mut self, toml: &str) -> Options {
        self.config = Some(toml.to_owned());
        self
    }

    /// The daemon's `BUSBAR_LOG_LEVEL` (default `info`).
    pub fn log_level(mut self, level: &str) -> Options {
        self.log_level = level.to_owned();
        self
    }

    /// Drops every `BUSBAR_*` variable of the caller's environment: an
    /// operator's settings would change what a bench measures.
    pub fn without_busbar_env(mut self) -> Options {
        self.clear_busbar_env = true;
        self
    }

    /// Where [`Daemon::start`] creates its temporary directory (default:
    /// the system's temporary directory).
    pub fn temp_dir_in(mut self, parent: impl Into<PathBuf>) -> Options {
        self.temp_parent = Some(parent.into());
        self
    }

    fn command(&self, dir: &Path, log: File) -> Result<Command, Error> {
        let mut cmd = Command::new(&self.exe);
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--tcp-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(toml) = &self.config {
            let path = dir.join("busbar.toml");
            std::fs::write(&path, toml)
                .map_err(io_error(format!("cannot write {}", path.display())))?;
            cmd.arg("--config").arg(path);
        }
        cmd.args(&self.args);
        cmd.env_remove("BUSBAR_CONFIG");
        if self.clear_busbar_env {
            for (key, _) in std::env::vars_os() {
                if key.to_string_lossy().starts_with("BUSBAR_") {
                    cmd.env_remove(key);
                }
            }
        }
        cmd.env("BUSBAR_LOG_LEVEL", &self.log_level);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        Ok(cmd)
    }
}

/// A running `busbar serve`. Killed when dropped; its temporary directory,
/// if [`Daemon::start`] made one, is removed after it.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    /// How the child exited, once it was waited for.
    exited: Option<ExitStatus>,
    dir: PathBuf,
    addresses: Addresses,
    log: PathBuf,
    // Dropped after the kill in `drop`: the data outlives the process.
    _temp: Option<tempfile::TempDir>,
}

impl Daemon {
    /// Starts a daemon on a fresh temporary directory and waits until it
    /// listens.
    ///
    /// # Errors
    /// [`Error::Spawn`], [`Error::Daemon`] (it exited or was not ready
    /// within 30 s; it is killed), [`Error::Io`].
    pub fn start(options: &Options) -> Result<Daemon, Error> {
        let mut builder = tempfile::Builder::new();
        builder.prefix("busbar-");
        let temp = match &options.temp_parent {
            Some(parent) => builder.tempdir_in(parent),
            None => builder.tempdir(),
        }
        .map_err(io_error("cannot create a temporary directory"))?;
        let mut daemon = Daemon::launch(temp.path(), options)?;
        daemon._temp = Some(temp);
        Ok(daemon)
    }

    /// Starts a daemon on `dir` (created if needed; data in `<dir>/data`)
    /// and waits until it listens. The directory is left as it is after the
    /// daemon ends.
    ///
    /// # Errors
    /// As [`Daemon::start`].
    pub fn start_in(dir: &Path, options: &Options) -> Result<Daemon, Error> {
        std::fs::create_dir_all(dir)
            .map_err(io_error(format!("cannot create {}", dir.display())))?;
        Daemon::launch(dir, options)
    }

    fn launch(dir: &Path, options: &Options) -> Result<Daemon, Error> {
        let (log, log_file) = new_log(dir)?;
        let child = options
            .command(dir, log_file)?
            .spawn()
            .map_err(|source| Error::Spawn {
                exe: options.exe.clone(),
                source,
            })?;
        let data = dir.join("data");
        let mut daemon = Daemon {
            child,
            exited: None,
            dir: dir.to_owned(),
            addresses: Addresses {
                pid: 0,
                backend: String::new(),
                tcp: ([127, 0, 0, 1], 0).into(),
                http: ([127, 0, 0, 1], 0).into(),
                events_socket: PathBuf::new(),
                commands_socket: PathBuf::new(),
            },
            log,
            _temp: None,
        };
        daemon.addresses = daemon.wait_for_addresses(&Addresses::path(&data))?;
        Ok(daemon)
    }

    fn wait_for_addresses(&mut self, path: &Path) -> Result<Addresses, Error> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(a) = std::fs::read(path)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<Addresses>(&bytes).ok())
                .filter(|a| a.pid == self.child.id())
            {
                return Ok(a);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(self.failure(format!("exited with {status} before it listened")));
            }
            if Instant::now() > deadline {
                return Err(self.failure(format!(
                    "did not listen within {}s",
                    START_TIMEOUT.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Where the daemon listens.
    pub fn addresses(&self) -> &Addresses {
        &self.addresses
    }

    /// The daemon's directory: its data is in `data/`, its log and config
    /// file beside it.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A connection to the events socket (10 s read timeout).
    ///
    /// # Errors
    /// The connect's.
    pub fn unix(&self) -> std::io::Result<UnixStream> {
        let s = UnixStream::connect(&self.addresses.events_socket)?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        Ok(s)
    }

    /// A connection to the TCP ingest listener (10 s read timeout).
    ///
    /// # Errors
    /// The connect's.
    pub fn tcp(&self) -> std::io::Result<TcpStream> {
        let s = TcpStream::connect(self.addresses.tcp)?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        Ok(s)
    }

    /// `http://<address>`, without a trailing slash.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addresses.http)
    }

    /// One HTTP request to `path` (`/api/...`) within 10 s; a JSON `body`
    /// for `POST` and `PUT`. Returns the status, whatever it is, and the
    /// body.
    ///
    /// # Errors
    /// [`Error::Http`] when there is no answer, or for a method other than
    /// GET, POST, PUT and DELETE.
    pub fn http(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&[u8]>,
    ) -> Result<(u16, String), Error> {
        let url = format!("{}{path}", self.http_url());
        let failed = |message: String| Error::Http {
            method: method.to_owned(),
            url: url.clone(),
            message,
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(IO_TIMEOUT))
            .build()
            .into();
        let body = body.unwrap_or_default();
        let answer = match method {
            "GET" => authorized(agent.get(&url), token).call(),
            "DELETE" => authorized(agent.delete(&url), token).call(),
            "POST" => authorized(json(agent.post(&url)), token).send(body),
            "PUT" => authorized(json(agent.put(&url)), token).send(body),
            _ => return Err(failed("not a method this kit sends".to_owned())),
        };
        let mut answer = answer.map_err(|e| failed(e.to_string()))?;
        let status = answer.status().as_u16();
        let text = answer
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_string()
            .map_err(|e| failed(e.to_string()))?;
        Ok((status, text))
    }

    /// `/metrics` as text, asked without a token (open while the daemon
    /// has none configured).
    ///
    /// # Errors
    /// [`Error::Http`], also for a status other than 200.
    pub fn metrics(&self) -> Result<String, Error> {
        self.metrics_as(None)
    }

    /// `/metrics` as text, asked with `token` (one with the `metrics` or
    /// `admin` scope when tokens are configured).
    ///
    /// # Errors
    /// [`Error::Http`], also for a status other than 200.
    pub fn metrics_as(&self, token: Option<&str>) -> Result<String, Error> {
        match self.http("GET", "/metrics", token, None)? {
            (200, text) => Ok(text),
            (status, _) => Err(Error::Http {
                method: "GET".to_owned(),
                url: format!("{}/metrics", self.http_url()),
                message: format!("answered {status}"),
            }),
        }
    }

    /// What the daemon logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn failure(&mut self, what: String) -> Error {
        self.kill_child();
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        Error::Daemon {
            what,
            log: lines[lines.len().saturating_sub(LOG_TAIL)..].join("\n"),
        }
    }

    /// Sends SIGTERM and waits for the exit (within 30 s), however it
    /// exits: the caller judges the status. The log and the directory stay
    /// until the daemon is dropped. A daemon that already exited is not
    /// signalled again.
    ///
    /// # Errors
    /// [`Error::Daemon`] when it did not exit in time (it is killed).
    pub fn stop(&mut self) -> Result<ExitStatus, Error> {
        if let Some(status) = self.exited {
            return Ok(status);
        }
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) on our own child's pid has no memory effects;
            // the child was not waited for, so the pid is still its own.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exited = Some(status);
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(self.failure(format!(
            "did not exit within {}s of SIGTERM",
            STOP_TIMEOUT.as_secs()
        )))
    }

    /// SIGKILL: the daemon gets no chance to flush anything.
    pub fn kill(mut self) {
        self.kill_child();
    }

    fn kill_child(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            self.exited = self.child.wait().ok();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill_child();
    }
}

fn authorized<B>(r: ureq::RequestBuilder<B>, token: Option<&str>) -> ureq::RequestBuilder<B> {
    match token {
        Some(t) => r.header("authorization", format!("Bearer {t}")),
        None => r,
    }
}

fn json(
    r: ureq::RequestBuilder<ureq::typestate::WithBody>,
) -> ureq::RequestBuilder<ureq::typestate::WithBody> {
    r.header("content-type", "application/json")
}

/// A new log file in `dir`: `daemon-1.log`, `daemon-2.log`... so a daemon
/// restarted on the same directory keeps the earlier logs.
fn new_log(dir: &Path) -> Result<(PathBuf, File), Error> {
    let mut n = 1;
    loop {
        let path = dir.join(format!("daemon-{n}.log"));
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => return Ok((path, file)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => n += 1,
            Err(e) => return Err(io_error(format!("cannot create {}", path.display()))(e)),
        }
    }
}
