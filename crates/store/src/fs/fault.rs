//! [`FaultFs`]: another [`Fs`] with errors injected on purpose, for tests
//! that fill the disk or break it under the real engine.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use super::{Fs, FsFile};

/// An error to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// `ENOSPC`: no space left on the device.
    NoSpace,
    /// `EDQUOT`: the disk quota is exhausted.
    QuotaExceeded,
    /// `EIO`: an input/output error.
    Io,
}

impl Fault {
    /// The operating system's error this fault stands for.
    pub fn error(self) -> io::Error {
        io::Error::from_raw_os_error(match self {
            Fault::NoSpace => 28,
            Fault::QuotaExceeded => 122,
            Fault::Io => 5,
        })
    }
}

/// The kind of operation a fault is injected into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FaultOp {
    /// [`FsFile::write_all`]: the first half of the buffer is written, then
    /// the call fails, as a write that runs out of space does.
    Write,
    /// Creating a file or directory ([`Fs::create_new`], [`Fs::create`],
    /// [`Fs::create_dir_all`]): nothing is created.
    Create,
    /// [`FsFile::read_at`] and [`Fs::read`].
    Read,
    /// [`FsFile::sync_data`] and [`Fs::sync_dir`]: nothing is synced.
    Sync,
}

const OPS: [FaultOp; 4] = [
    FaultOp::Write,
    FaultOp::Create,
    FaultOp::Read,
    FaultOp::Sync,
];

fn slot(op: FaultOp) -> usize {
    OPS.iter().position(|o| *o == op).unwrap_or(0)
}

/// One rule: which operations fail, on which paths, how often.
///
/// ```
/// use busbar_store::fs::{Fault, FaultOp, Injection};
/// // The next fdatasync of a segment file fails with EIO.
/// let rule = Injection::new(FaultOp::Sync, Fault::Io).matching(".seg").once();
/// # let _ = rule;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injection {
    op: FaultOp,
    fault: Fault,
    path_contains: Option<String>,
    remaining: Option<u64>,
}

impl Injection {
    /// `op` fails with `fault` on every path until cleared.
    pub fn new(op: FaultOp, fault: Fault) -> Self {
        Injection {
            op,
            fault,
            path_contains: None,
            remaining: None,
        }
    }

    /// Only on paths containing `text`.
    pub fn matching(mut self, text: impl Into<String>) -> Self {
        self.path_contains = Some(text.into());
        self
    }

    /// Only the next `n` matching operations fail.
    pub fn times(mut self, n: u64) -> Self {
        self.remaining = Some(n);
        self
    }

    /// Only the next matching operation fails.
    pub fn once(self) -> Self {
        self.times(1)
    }
}

#[derive(Debug, Default)]
struct Rules {
    list: Vec<Injection>,
    injected: [u64; 4],
    /// File syncs wait while this is set.
    hold_syncs: bool,
    /// File syncs waiting now.
    held: usize,
    /// What [`Fs::available_space`] answers instead of the inner file
    /// system.
    available: Option<u64>,
}

#[derive(Debug, Default)]
struct State {
    rules: Mutex<Rules>,
    released: Condvar,
}

impl State {
    fn check(&self, op: FaultOp, path: &Path) -> io::Result<()> {
        match self.rules.lock().check(op, path) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Waits while file syncs are held.
    fn gate(&self) {
        let mut rules = self.rules.lock();
        if !rules.hold_syncs {
            return;
        }
        rules.held += 1;
        while rules.hold_syncs {
            self.released.wait(&mut rules);
        }
        rules.held -= 1;
    }
}

impl Rules {
    /// The error to inject into `op` on `path`, if a rule says so.
    fn check(&mut self, op: FaultOp, path: &Path) -> Option<io::Error> {
        let path = path.to_string_lossy();
        let i = self.list.iter().position(|r| {
            r.op == op && r.path_contains.as_deref().is_none_or(|t| path.contains(t))
        })?;
        let rule = &mut self.list[i];
        let fault = rule.fault;
        if let Some(n) = rule.remaining.as_mut() {
            *n -= 1;
            if *n == 0 {
                self.list.remove(i);
            }
        }
        self.injected[slot(op)] += 1;
        Some(fault.error())
    }
}

/// A file system that fails on purpose: wraps another [`Fs`] and injects
/// errors by [`Injection`] rules. Clones share the rules, so a test keeps
/// one clone and gives the store another.
///
/// ```
/// use std::sync::Arc;
/// use busbar_store::embedded::EmbeddedConfig;
/// use busbar_store::fs::{Fault, FaultFs, FaultOp, RealFs};
///
/// let faults = FaultFs::new(RealFs);
/// let mut config = EmbeddedConfig::new("data");
/// config.fs = Arc::new(faults.clone());
/// faults.fail_writes(Fault::NoSpace); // the disk is full
/// assert_eq!(faults.injected(FaultOp::Write), 0);
/// faults.clear(); // space is back
/// ```
#[derive(Debug, Clone)]
pub struct FaultFs {
    inner: Arc<dyn Fs>,
    state: Arc<State>,
}

impl FaultFs {
    /// Wraps `inner`; nothing fails until a rule is added.
    pub fn new(inner: impl Fs) -> Self {
        FaultFs::wrap(Arc::new(inner))
    }

    /// Wraps a shared `inner`.
    pub fn wrap(inner: Arc<dyn Fs>) -> Self {
        FaultFs {
            inner,
            state: Arc::default(),
        }
    }

    /// Adds a rule. Rules are tried in the order they were added; the first
    /// that matches decides.
    pub fn inject(&self, injection: Injection) {
        self.state.rules.lock().list.push(injection);
    }

    /// Every write and every file creation fails with `fault` until
    /// [`FaultFs::clear`]: a full disk.
    pub fn fail_writes(&self, fault: Fault) {
        self.inject(Injection::new(FaultOp::Write, fault));
        self.inject(Injection::new(FaultOp::Create, fault));
    }

    /// Every read fails with `fault` until cleared.
    pub fn fail_reads(&self, fault: Fault) {
        self.inject(Injection::new(FaultOp::Read, fault));
    }

    /// Every `fdatasync` (files and directories) fails with `fault` until
    /// cleared.
    pub fn fail_syncs(&self, fault: Fault) {
        self.inject(Injection::new(FaultOp::Sync, fault));
    }

    /// Removes every rule (the counts stay).
    pub fn clear(&self) {
        self.state.rules.lock().list.clear();
    }

    /// How many errors were injected into `op` so far.
    pub fn injected(&self, op: FaultOp) -> u64 {
        self.state.rules.lock().injected[slot(op)]
    }

    /// Makes every file `fdatasync` wait (after its fault rules are
    /// checked) until [`FaultFs::release_syncs`]. With the writer held in a
    /// sync, a test can queue requests that will then form one commit group.
    pub fn hold_syncs(&self) {
        self.state.rules.lock().hold_syncs = true;
    }

    /// Lets held syncs go on.
    pub fn release_syncs(&self) {
        self.state.rules.lock().hold_syncs = false;
        self.state.released.notify_all();
    }

    /// How many file syncs are waiting now.
    pub fn syncs_held(&self) -> usize {
        self.state.rules.lock().held
    }

    /// Makes [`Fs::available_space`] answer `bytes` (`None`: ask the inner
    /// file system again). With writes failing, a test says whether the
    /// disk looks full to a store that checks before it writes.
    pub fn set_available_space(&self, bytes: Option<u64>) {
        self.state.rules.lock().available = bytes;
    }

    /// How many errors were injected so far, all operations together.
    pub fn injected_total(&self) -> u64 {
        self.state.rules.lock().injected.iter().sum()
    }

    fn check(&self, op: FaultOp, path: &Path) -> io::Result<()> {
        self.state.check(op, path)
    }

    fn wrap_file(&self, path: &Path, file: Box<dyn FsFile>) -> Box<dyn FsFile> {
        Box::new(FaultFile {
            inner: file,
            path: path.to_path_buf(),
            state: self.state.clone(),
        })
    }
}

#[derive(Debug)]
struct FaultFile {
    inner: Box<dyn FsFile>,
    path: PathBuf,
    state: Arc<State>,
}

impl FaultFile {
    fn check(&self, op: FaultOp) -> io::Result<()> {
        self.state.check(op, &self.path)
    }
}

impl FsFile for FaultFile {
    fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        if let Err(e) = self.check(FaultOp::Write) {
            self.inner.write_all(&buf[..buf.len() / 2])?;
            return Err(e);
        }
        self.inner.write_all(buf)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.check(FaultOp::Sync)?;
        self.state.gate();
        self.inner.sync_data()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.check(FaultOp::Read)?;
        self.inner.read_at(buf, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }

    fn size(&self) -> io::Result<u64> {
        self.inner.size()
    }
}

impl Fs for FaultFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.check(FaultOp::Create, path)?;
        self.inner.create_dir_all(path)
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        self.inner.read_dir(path)
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        self.check(FaultOp::Create, path)?;
        let file = self.inner.create_new(path)?;
        Ok(self.wrap_file(path, file))
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        self.check(FaultOp::Create, path)?;
        let file = self.inner.create(path)?;
        Ok(self.wrap_file(path, file))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let file = self.inner.open_append(path)?;
        Ok(self.wrap_file(path, file))
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let file = self.inner.open_read(path)?;
        Ok(self.wrap_file(path, file))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.check(FaultOp::Read, path)?;
        self.inner.read(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_file(path)
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_dir_all(path)
    }

    fn file_size(&self, path: &Path) -> io::Result<u64> {
        self.inner.file_size(path)
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        self.inner.exists(path)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.check(FaultOp::Sync, path)?;
        self.inner.sync_dir(path)
    }

    fn available_space(&self, path: &Path) -> io::Result<u64> {
        let set = self.state.rules.lock().available;
        match set {
            Some(bytes) => Ok(bytes),
            None => self.inner.available_space(path),
        }
    }
}
