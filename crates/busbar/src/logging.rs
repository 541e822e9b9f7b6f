//! Structured logs, plain or JSON, on stderr or in a file rotated by size;
//! the level can change while the daemon runs.
//!
//! Log lines carry stream names, counts, addresses and reasons; never event
//! payloads or token secrets.
//!
//! The filter sits behind a `tracing_subscriber::reload` handle
//! ([`LogControl`]): a config reload sets the configured level, and
//! `busbar cmd log-level debug '{"for":"10m"}'` sets another one for a
//! while, after which the configured level is back.
//!
//! `[log] file` is written through `file-rotate`: when the file passes
//! `[log] max_size` it becomes `<file>.1` (the others shift up, past
//! `[log] keep` they are deleted) and a new one is started. A line is
//! never split across two files. Writes are synchronous, as they are to
//! stderr, so a crash loses no line that was logged.

use std::io::IsTerminal;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use busbar_config::{LogConfig, LogFormat};
use busbar_ops::pack::LogTail;
use file_rotate::compression::Compression;
use file_rotate::suffix::AppendCount;
use file_rotate::{ContentLimit, FileRotate};
use parking_lot::Mutex;
use tracing_subscriber::fmt::writer::{BoxMakeWriter, MakeWriterExt};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// Changes the log level of the running process.
pub struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
    state: Mutex<Levels>,
    /// Bumped by every change, so a timer set by an earlier
    /// `log-level --for` does not undo a later change.
    generation: AtomicU64,
}

struct Levels {
    /// The level of the config in force.
    configured: String,
    /// The level in effect (the configured one, or a temporary one).
    current: String,
}

/// A level or filter that `EnvFilter` does not read.
#[derive(Debug)]
pub struct BadLevel(pub String);

impl std::fmt::Display for BadLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn filter(level: &str) -> Result<EnvFilter, BadLevel> {
    EnvFilter::try_new(level.trim()).map_err(|e| {
        BadLevel(format!(
            "invalid log level `{level}`: expected a level (error, warn, info, debug, trace) \
             or a filter such as info,busbar_ingest=debug: {e}"
        ))
    })
}

impl LogControl {
    /// The level in effect.
    pub fn current(&self) -> String {
        self.state.lock().current.clone()
    }

    /// The configured level.
    pub fn configured(&self) -> String {
        self.state.lock().configured.clone()
    }

    fn apply(&self, level: &str) -> Result<(), BadLevel> {
        let filter = filter(level)?;
        self.handle
            .reload(filter)
            .map_err(|e| BadLevel(format!("cannot change the log level: {e}")))
    }

    /// Sets the configured level (a config reload); it replaces a
    /// temporary level too.
    ///
    /// # Errors
    /// [`BadLevel`]; the level in effect stays.
    pub fn set_configured(&self, level: &str) -> Result<(), BadLevel> {
        let mut state = self.state.lock();
        self.apply(level)?;
        self.generation.fetch_add(1, Ordering::SeqCst);
        state.configured = level.to_owned();
        state.current = level.to_owned();
        Ok(())
    }

    /// Sets `level` now and, with `revert_after`, goes back to the
    /// configured level then (unless another change came first). Returns
    /// the level it replaced.
    ///
    /// # Errors
    /// [`BadLevel`]; the level in effect stays.
    pub fn set_for(
        self: &Arc<Self>,
        level: &str,
        revert_after: Option<Duration>,
    ) -> Result<String, BadLevel> {
        let mut state = self.state.lock();
        self.apply(level)?;
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let previous = std::mem::replace(&mut state.current, level.to_owned());
        if let Some(after) = revert_after {
            let control = Arc::downgrade(self);
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                if let Some(control) = control.upgrade() {
                    control.revert(generation);
                }
            });
        }
        Ok(previous)
    }

    fn revert(&self, generation: u64) {
        let mut state = self.state.lock();
        if self.generation.load(Ordering::SeqCst) != generation {
            return;
        }
        let configured = state.configured.clone();
        match self.apply(&configured) {
            Ok(()) => {
                state.current = configured.clone();
                drop(state);
                tracing::info!(level = %configured, "log level back to the configured one");
            }
            Err(e) => tracing::warn!(error = %e, "cannot restore the configured log level"),
        }
    }
}

/// Installs the global subscriber. Every line also goes to `tail`, the
/// newest lines support packs include.
pub fn init(config: &LogConfig, tail: Arc<LogTail>) -> anyhow::Result<Arc<LogControl>> {
    let (filter, handle) = reload::Layer::new(filter(&config.level).map_err(anyhow::Error::msg)?);
    let (writer, ansi) = match &config.file {
        Some(path) => (file_writer(path, config)?, false),
        None => (
            BoxMakeWriter::new(std::io::stderr),
            std::io::stderr().is_terminal(),
        ),
    };
    let writer = BoxMakeWriter::new(writer.and(move || tail.writer()));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(ansi);
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match config.format {
        LogFormat::Plain => registry.with(fmt).try_init(),
        LogFormat::Json => registry.with(fmt.json().flatten_event(true)).try_init(),
    };
    installed.map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))?;
    Ok(Arc::new(LogControl {
        handle,
        state: Mutex::new(Levels {
            configured: config.level.clone(),
            current: config.level.clone(),
        }),
        generation: AtomicU64::new(0),
    }))
}

fn file_writer(path: &Path, config: &LogConfig) -> anyhow::Result<BoxMakeWriter> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| {
            format!(
                "log.file: cannot create the directory {} for {}",
                dir.display(),
                path.display()
            )
        })?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.read(true).create(true).append(true).mode(0o640);
    // Opened once here so a file busbar cannot write is an error at start,
    // naming the key, rather than lines lost later.
    options
        .open(path)
        .with_context(|| format!("log.file: cannot open {}", path.display()))?;
    let rotating = FileRotate::new(
        path,
        AppendCount::new(config.keep),
        ContentLimit::BytesSurpassed(config.max_size.as_usize().max(1)),
        Compression::None,
        Some(options),
    );
    Ok(BoxMakeWriter::new(std::sync::Mutex::new(rotating)))
}
