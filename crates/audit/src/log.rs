//! The writer: [`AuditLog`] opens (and if need be repairs) the file,
//! appends records on a thread of its own, and is the engine hook.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;

use busbar_engine::{AdminAction, Hook, Principal};
use busbar_metrics::{names, Collector, Counter, Encoder, Family, Kind};
use fs2::FileExt;
use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::record::{Actor, Entry, Hash, Record};
use crate::verify::{verify, Break, Head, Problem};
use crate::AuditError;

/// Records waiting for the writer thread before new ones are refused
/// (counted and logged; the chain then says how many were lost).
pub const DEFAULT_QUEUE: usize = 1024;

/// What [`AuditLog::open`] does with a log whose chain is broken other
/// than by a torn last line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnBroken {
    /// Refuse to open, naming the first broken record; the file is left
    /// as it is for inspection.
    #[default]
    Fail,
    /// Keep the broken file as `<file>.broken-<ms>` and start a new chain
    /// whose first record (`audit.chain_restarted`) names it, where it
    /// broke and its last valid head.
    NewFile,
}

/// How to open an audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    /// The log file (its directory is created).
    pub path: PathBuf,
    /// What to do with a broken chain.
    pub on_broken: OnBroken,
    /// Records waiting for the writer at most.
    pub queue: usize,
}

impl AuditConfig {
    /// A log at `path`, refusing a broken chain, with the default queue.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        AuditConfig {
            path: path.into(),
            on_broken: OnBroken::Fail,
            queue: DEFAULT_QUEUE,
        }
    }
}

enum Msg {
    Record(Entry),
    /// Answered once every record sent before it is written (or failed).
    Sync(SyncSender<()>),
}

/// The audit log's figures, rendered by its [`Collector`].
#[derive(Debug)]
struct Shared {
    path: PathBuf,
    head: Mutex<Head>,
    records: Counter,
    /// Records that could not be written, by reason (`queue_full`,
    /// `closed`, `io`).
    write_errors: Family<Counter, 1>,
    /// Records missing from the chain since the last one written; the
    /// next write first adds an `audit.records_lost` record saying so.
    missed: AtomicU64,
}

impl Shared {
    fn failed(&self, reason: &str) {
        self.write_errors.get([reason]).inc();
        self.missed.fetch_add(1, Ordering::Relaxed);
    }
}

/// An open, hash-chained audit log (see the crate docs). Cheap to share;
/// implements [`Hook`] so the engine reports every administrative action
/// to it, and [`Collector`] for its metrics.
pub struct AuditLog {
    shared: Arc<Shared>,
    tx: Mutex<Option<SyncSender<Msg>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.shared.path)
            .field("head", &*self.shared.head.lock())
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens (or creates) the log, takes an exclusive lock on it, walks its
    /// chain and continues it from the newest valid record, on a writer
    /// thread of its own.
    ///
    /// A last line cut short (a crash during a write) is cut off, and an
    /// `audit.torn_tail_repaired` record saying how many bytes were
    /// removed, and their hash, is chained in its place. Any other break
    /// follows [`AuditConfig::on_broken`].
    ///
    /// Blocking: call it at start-up, or from `spawn_blocking`.
    ///
    /// # Errors
    /// [`AuditError::Io`], [`AuditError::Locked`] (another process writes
    /// this log), [`AuditError::Broken`] under [`OnBroken::Fail`].
    pub fn open(config: AuditConfig) -> Result<Arc<AuditLog>, AuditError> {
        let path = config.path.clone();
        let io = |what: &'static str| {
            let path = path.clone();
            move |source| AuditError::Io { what, path, source }
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io("create the directory of"))?;
        }
        let mut file = open_file(&path).map_err(io("open"))?;
        file.try_lock_exclusive()
            .map_err(|_| AuditError::Locked { path: path.clone() })?;
        let bytes = std::fs::read(&path).map_err(io("read"))?;
        let mut system = Vec::new();
        let head = match verify(&bytes, None) {
            Ok(v) => v.head,
            Err(b) if matches!(b.problem, Problem::TruncatedLastLine { .. }) => {
                let torn = &bytes[b.valid.valid_len as usize..];
                tracing::warn!(
                    path = %path.display(),
                    bytes = torn.len(),
                    "audit log ends in a torn line (a crash during a write); cutting it off"
                );
                file.set_len(b.valid.valid_len)
                    .and_then(|()| file.sync_all())
                    .map_err(io("cut the torn last line of"))?;
                system.push(entry(
                    "audit.torn_tail_repaired",
                    json!({
                        "offset": b.valid.valid_len,
                        "bytes": torn.len(),
                        "blake3": blake3::hash(torn).to_hex().to_string(),
                    }),
                ));
                b.valid.head
            }
            Err(b) => match config.on_broken {
                OnBroken::Fail => {
                    return Err(AuditError::Broken {
                        path: path.clone(),
                        broken: b,
                    })
                }
                OnBroken::NewFile => {
                    let kept = set_aside(&path, &b).map_err(io("set aside the broken"))?;
                    // The lock goes with the old file's descriptor.
                    file = open_file(&path).map_err(io("create"))?;
                    file.try_lock_exclusive()
                        .map_err(|_| AuditError::Locked { path: path.clone() })?;
                    system.push(entry(
                        "audit.chain_restarted",
                        json!({
                            "previous_file": kept,
                            "broken": b.to_string(),
                            "last_valid_head": b.valid.head.to_string(),
                        }),
                    ));
                    Head::EMPTY
                }
            },
        };
        file.seek(SeekFrom::End(0)).map_err(io("seek"))?;
        let shared = Arc::new(Shared {
            path: path.clone(),
            head: Mutex::new(head),
            records: Counter::default(),
            write_errors: Family::new(["reason"]),
            missed: AtomicU64::new(0),
        });
        // Every reason is exported from the start, at 0, so an alert on
        // its rate sees the series before the first error.
        for reason in ["queue_full", "closed", "io"] {
            shared.write_errors.get([reason]);
        }
        let mut writer = Writer {
            file,
            len: 0,
            shared: shared.clone(),
            broken: false,
        };
        writer.len = writer.file.metadata().map_err(io("stat"))?.len();
        for e in system {
            writer.append(e).map_err(io("write"))?;
        }
        let (tx, rx) = mpsc::sync_channel(config.queue.max(1));
        let thread = std::thread::Builder::new()
            .name("busbar-audit".to_owned())
            .spawn(move || writer.run(rx))
            .map_err(io("start the writer thread of"))?;
        tracing::info!(path = %path.display(), head = %head, "audit log open");
        Ok(Arc::new(AuditLog {
            shared,
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        }))
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// The chain head: the newest written record's `seq` and hash (hex).
    /// `(0, "00…0")` for an empty log.
    pub fn head(&self) -> (u64, String) {
        let head = *self.shared.head.lock();
        (head.seq, head.hash.to_hex())
    }

    /// Records written since the log was opened.
    pub fn records_written(&self) -> u64 {
        self.shared.records.get()
    }

    /// Records that could not be written since the log was opened.
    pub fn write_errors(&self) -> u64 {
        let mut n = 0;
        self.shared.write_errors.for_each(|_, c| n += c.get());
        n
    }

    /// Queues a record of `action` on `target` by `actor`. Never blocks:
    /// a record the writer cannot take (its queue is full, or the log is
    /// closed) is counted in `busbar_audit_write_errors_total`, logged as
    /// an error, and the next record written says how many were lost.
    pub fn record(&self, actor: Actor, action: &str, target: &str, params: Value) {
        let entry = Entry {
            ts: now_ms(),
            actor,
            action: action.to_owned(),
            target: target.to_owned(),
            params,
        };
        let tx = self.tx.lock().clone();
        let Some(tx) = tx else {
            self.shared.failed("closed");
            tracing::error!(action, target, "audit log closed: record not written");
            return;
        };
        match tx.try_send(Msg::Record(entry)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.shared.failed("queue_full");
                tracing::error!(action, target, "audit log queue full: record not written");
            }
            Err(TrySendError::Disconnected(_)) => {
                self.shared.failed("closed");
                tracing::error!(action, target, "audit writer stopped: record not written");
            }
        }
    }

    /// Waits until every record queued before this call is written (or
    /// has failed). Blocking.
    pub fn sync(&self) {
        let tx = self.tx.lock().clone();
        if let Some(tx) = tx {
            let (done, wait) = mpsc::sync_channel(1);
            if tx.send(Msg::Sync(done)).is_ok() {
                let _ = wait.recv();
            }
        }
    }

    /// Writes every queued record, stops the writer thread and releases
    /// the file; later records are counted as errors. Blocking; call it at
    /// shutdown, after the transports have stopped.
    pub fn close(&self) {
        drop(self.tx.lock().take());
        if let Some(thread) = self.thread.lock().take() {
            if thread.join().is_err() {
                tracing::error!("the audit writer thread panicked");
            }
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.close();
    }
}

impl Hook for AuditLog {
    fn name(&self) -> &'static str {
        "audit"
    }

    fn administered(&self, principal: &Principal, action: &AdminAction<'_>) {
        self.record(
            Actor::of(principal),
            action.name(),
            &action.target(),
            action.params(),
        );
    }
}

impl Collector for AuditLog {
    fn collect(&self, out: &mut Encoder<'_>) {
        let s = &self.shared;
        out.header(
            names::AUDIT_RECORDS,
            Kind::Counter,
            "Audit records written (fsynced) since the daemon started.",
        );
        out.sample(names::AUDIT_RECORDS, &[], s.records.get());
        out.counters(
            names::AUDIT_WRITE_ERRORS,
            "Audit records that could not be written, by reason (queue_full, closed, io).",
            &s.write_errors,
        );
        let head = *s.head.lock();
        out.header(
            names::AUDIT_HEAD,
            Kind::Gauge,
            "The audit chain's head: the value is its seq, the label the first 16 hex digits of its hash.",
        );
        out.sample(
            names::AUDIT_HEAD,
            &[("hash", &head.hash.prefix(16))],
            head.seq,
        );
    }
}

/// The thread that owns the file.
struct Writer {
    file: File,
    /// Bytes of complete records in the file.
    len: u64,
    shared: Arc<Shared>,
    /// Set when a failed write could not be undone: nothing more is
    /// appended after bytes that break the chain.
    broken: bool,
}

impl Writer {
    fn run(mut self, rx: Receiver<Msg>) {
        while let Ok(msg) = rx.recv() {
            match msg {
                Msg::Record(e) => self.write(e),
                Msg::Sync(done) => {
                    let _ = done.send(());
                }
            }
        }
        if let Err(e) = self.file.sync_all() {
            tracing::error!(error = %e, "cannot sync the audit log at close");
        }
    }

    /// Writes `e`, first saying how many records are missing before it.
    fn write(&mut self, e: Entry) {
        let (action, target) = (e.action.clone(), e.target.clone());
        let missed = self.shared.missed.swap(0, Ordering::Relaxed);
        if missed > 0 {
            let lost = entry("audit.records_lost", json!({ "count": missed }));
            if let Err(err) = self.append(lost) {
                self.shared.missed.fetch_add(missed, Ordering::Relaxed);
                self.failed(&action, &target, &err);
                return;
            }
        }
        if let Err(err) = self.append(e) {
            self.failed(&action, &target, &err);
        }
    }

    fn failed(&self, action: &str, target: &str, err: &std::io::Error) {
        self.shared.failed("io");
        tracing::error!(
            path = %self.shared.path.display(),
            action,
            target,
            error = %err,
            "cannot write an audit record"
        );
    }

    /// Appends one record and fsyncs it; on failure the file is cut back
    /// to its last complete record, so the chain stays intact.
    fn append(&mut self, e: Entry) -> std::io::Result<()> {
        if self.broken {
            return Err(std::io::Error::other(
                "an earlier failed write could not be undone; reopen the log",
            ));
        }
        let head = *self.shared.head.lock();
        let record = Record::chain(head.seq + 1, head.hash, e);
        let line = record.to_line();
        let written = self
            .file
            .write_all(&line)
            .and_then(|()| self.file.sync_data());
        if let Err(err) = written {
            // What reached the file is unknown (a partial line, or a whole
            // one whose fsync failed): cut back to the last record.
            let undone = self
                .file
                .set_len(self.len)
                .and_then(|()| self.file.sync_data());
            if let Err(undo) = undone {
                self.broken = true;
                tracing::error!(error = %undo, "cannot undo a failed audit write; the writer stops");
            }
            return Err(err);
        }
        self.len += line.len() as u64;
        let hash: Hash = record
            .hash
            .parse()
            .map_err(|e: String| std::io::Error::other(e))?;
        *self.shared.head.lock() = Head {
            seq: record.seq,
            hash,
        };
        self.shared.records.inc();
        Ok(())
    }
}

fn open_file(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
}

/// Renames a broken log to `<file>.broken-<ms>`; returns the new name.
fn set_aside(path: &Path, b: &Break) -> std::io::Result<String> {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".broken-{}", now_ms()));
    let kept = PathBuf::from(name);
    std::fs::rename(path, &kept)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir)?.sync_all()?;
    }
    tracing::error!(
        path = %path.display(),
        kept = %kept.display(),
        broken = %b,
        "audit chain broken: the file is kept aside and a new chain starts"
    );
    Ok(kept
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default())
}

fn entry(action: &str, params: Value) -> Entry {
    Entry {
        ts: now_ms(),
        actor: Actor::system(),
        action: action.to_owned(),
        target: "audit".to_owned(),
        params,
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
