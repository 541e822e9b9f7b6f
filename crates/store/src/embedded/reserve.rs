//! The space reserve ("ballast"): a file of [`EmbeddedConfig::reserve_bytes`]
//! at `<dir>/RESERVE` that holds disk space the store can give back when the
//! disk fills up.
//!
//! A full disk must not stop consumers: acks, nacks, deliveries and
//! dead-letter moves are records in the same segments as events, and so are
//! the trims and deletions an operator runs to free space. So when a write
//! fails for lack of space the writer deletes the reserve and from then on
//! refuses producer appends up front ([`StoreError::Full`], nothing written),
//! while every other record goes into the space the reserve freed.
//!
//! While the reserve is released the writer looks at the free space about
//! every [`EmbeddedConfig::space_check_interval`] (a watcher thread wakes it
//! when nothing else does). Once more than twice the reserve is free (the
//! reserve back, and as much again for appends, so the store does not flap
//! between full and not) it writes the reserve again and takes appends:
//! nobody has to try a write for the store to notice space came back.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use busbar_event::now_ms;
use tokio::sync::mpsc;

use super::files::io;
use super::writer::{Op, Writer};
use super::EmbeddedConfig;
use crate::fs::Fs;
use crate::{Result, StoreError, WriteHealth};

/// The reserve's file name in the data directory.
pub(crate) const RESERVE_FILE: &str = "RESERVE";

/// Bytes written per call while filling the reserve.
const CHUNK: usize = 1 << 20;

/// The reserve as the writer holds it.
#[derive(Debug)]
pub(crate) struct Reserve {
    dir: PathBuf,
    path: PathBuf,
    /// Its size; 0: no reserve, and a full disk fails writes as they come.
    bytes: u64,
    /// Whether the file is on disk now. Read by the watcher thread.
    released: Arc<AtomicBool>,
    every: Duration,
    last_check: Instant,
}

impl Reserve {
    /// Makes sure the reserve is on disk: keeps a file of the right size,
    /// writes it otherwise (or removes it when the reserve is off). A disk
    /// too full to hold it does not fail the open: the store starts with the
    /// reserve released, refusing appends until space returns.
    ///
    /// # Errors
    /// Any I/O error other than a full disk.
    pub(crate) fn open(config: &EmbeddedConfig) -> Result<Reserve> {
        let fs = &*config.fs;
        let path = config.dir.join(RESERVE_FILE);
        let reserve = Reserve {
            dir: config.dir.clone(),
            path: path.clone(),
            bytes: config.reserve_bytes,
            released: Arc::new(AtomicBool::new(false)),
            every: config.space_check_interval,
            last_check: Instant::now(),
        };
        let size = match fs.file_size(&path) {
            Ok(size) => Some(size),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(StoreError::io("look for the space reserve", &path, e)),
        };
        if size == Some(reserve.bytes) || (size.is_none() && reserve.bytes == 0) {
            config.metrics.reserve_bytes.set(gauge(reserve.bytes));
            return Ok(reserve);
        }
        if reserve.bytes == 0 {
            fs.remove_file(&path)
                .map_err(io("remove the space reserve", &path))?;
            return Ok(reserve);
        }
        match write_reserve(fs, &reserve.dir, &path, reserve.bytes) {
            Ok(()) => {
                config.metrics.reserve_bytes.set(gauge(reserve.bytes));
                Ok(reserve)
            }
            Err(e) => match StoreError::io("write the space reserve", &path, e) {
                StoreError::Full { .. } => {
                    tracing::error!(path = %path.display(), bytes = reserve.bytes, "no room for the space reserve: appends are refused until space is freed");
                    config.metrics.reserve_bytes.set(0);
                    reserve.released.store(true, Ordering::Release);
                    Ok(reserve)
                }
                other => Err(other),
            },
        }
    }

    /// Whether appends are refused up front: the reserve was given back to
    /// a full disk and not written again yet.
    pub(crate) fn refuses_appends(&self) -> bool {
        self.released.load(Ordering::Acquire)
    }

    /// The write health a store opened with the reserve released starts in.
    pub(crate) fn initial_health(&self) -> WriteHealth {
        if self.refuses_appends() {
            WriteHealth::Full {
                path: self.path.clone(),
                since_ms: now_ms(),
            }
        } else {
            WriteHealth::Ok
        }
    }

    /// Wakes the writer every check interval while the reserve is
    /// released, so it notices space coming back when nothing else is
    /// written. Does nothing when the reserve is off.
    pub(crate) fn spawn_watcher(&self, tx: mpsc::WeakSender<Op>) {
        if self.bytes == 0 {
            return;
        }
        let released = self.released.clone();
        let every = self.every;
        let _ = std::thread::Builder::new()
            .name("busbar-store-space".into())
            .spawn(move || loop {
                std::thread::sleep(every);
                // Weak, so a store dropped without `close` still stops.
                let Some(tx) = tx.upgrade() else { return };
                if !released.load(Ordering::Acquire) {
                    continue;
                }
                match tx.try_send(Op::Tick) {
                    Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            });
    }
}

impl Writer {
    /// Answers an append with [`StoreError::Full`] while the reserve is
    /// released, before anything is written; passes every other request on.
    pub(crate) fn refuse_when_full(&mut self, op: Op) -> Option<Op> {
        match op {
            Op::Append { reply, .. } if self.reserve.refuses_appends() => {
                let _ = reply.send(Err(StoreError::Full {
                    op: "append to",
                    path: self.reserve.dir.clone(),
                }));
                None
            }
            op => Some(op),
        }
    }

    /// Gives the reserve's space back to the disk after a write found it
    /// full. Does nothing when it is off or already released.
    pub(crate) fn release_reserve(&mut self) {
        let reserve = &mut self.reserve;
        if reserve.bytes == 0 || reserve.refuses_appends() {
            return;
        }
        reserve.released.store(true, Ordering::Release);
        reserve.last_check = Instant::now();
        self.config.metrics.reserve_bytes.set(0);
        match self.config.fs.remove_file(&reserve.path) {
            Ok(()) => {
                tracing::warn!(bytes = reserve.bytes, "disk full: released the space reserve; appends are refused until space returns, consumers and trims go on");
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::error!(path = %reserve.path.display(), error = %e, "disk full and the space reserve cannot be removed: appends are refused until space returns");
            }
        }
    }

    /// While the reserve is released, and at most once per check interval:
    /// writes it again when the disk has room for it and as much again,
    /// then takes appends again. Runs between commit groups only.
    pub(crate) fn watch_space(&mut self) {
        let reserve = &mut self.reserve;
        if !reserve.refuses_appends() || reserve.last_check.elapsed() < reserve.every {
            return;
        }
        reserve.last_check = Instant::now();
        let fs = self.config.fs.clone();
        let free = match fs.available_space(&reserve.dir) {
            Ok(free) => free,
            Err(e) => {
                tracing::warn!(dir = %reserve.dir.display(), error = %e, "cannot read the free space of the data directory");
                return;
            }
        };
        if free < reserve.bytes.saturating_mul(2) {
            return;
        }
        let (dir, path, bytes) = (reserve.dir.clone(), reserve.path.clone(), reserve.bytes);
        let written = write_reserve(&*fs, &dir, &path, bytes)
            .map_err(|e| StoreError::io("write the space reserve", &path, e));
        if self.note(written).is_err() {
            return;
        }
        self.reserve.released.store(false, Ordering::Release);
        self.config.metrics.reserve_bytes.set(gauge(bytes));
        tracing::info!(
            bytes,
            free_bytes = free,
            "space returned: the space reserve is back"
        );
        // No group is open: this sets the health from the reserve's write
        // alone (and retries the recovery of any broken stream).
        self.finish_group();
    }
}

/// Writes the reserve whole and makes it durable: its blocks must really be
/// allocated, or deleting it would free nothing. The bytes are not zeros,
/// so a compressing file system cannot store them in less space. A reserve
/// that cannot be written whole is removed again.
fn write_reserve(fs: &dyn Fs, dir: &Path, path: &Path, bytes: u64) -> std::io::Result<()> {
    let written = (|| {
        let file = fs.create(path)?;
        let chunk = incompressible(CHUNK);
        let mut left = bytes;
        while left > 0 {
            let n = left.min(CHUNK as u64) as usize;
            file.write_all(&chunk[..n])?;
            left -= n as u64;
        }
        file.sync_data()?;
        fs.sync_dir(dir)
    })();
    if written.is_err() {
        let _ = fs.remove_file(path);
    }
    written
}

/// `len` bytes of a fixed xorshift sequence.
fn incompressible(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn gauge(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}
