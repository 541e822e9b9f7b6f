//! What the writer does when the disk fails it: the store's write health,
//! syncing with failures accounted to the streams they concern, and
//! recovering a stream from disk after a failed `fdatasync` (see "What an
//! I/O error does" in the module docs of [`super`]).

use std::path::Path;

use busbar_event::{now_ms, IdClock, StreamName};

use super::files::{io, sync_dir};
use super::format::HEADER_LEN;
use super::recovery::recover_parts;
use super::writer::Writer;
use crate::fs::Fs;
use crate::{Result, StoreError, WriteHealth};

/// What an error makes of the store's write health; `None` for errors that
/// say nothing about the disk (a bad id, a missing stream).
pub(crate) fn health_of(e: &StoreError) -> Option<WriteHealth> {
    match e {
        StoreError::Full { path, .. } => Some(WriteHealth::Full {
            path: path.clone(),
            since_ms: 0,
        }),
        StoreError::Io { .. } | StoreError::Corrupt { .. } => Some(WriteHealth::Failed {
            reason: e.to_string(),
            since_ms: 0,
        }),
        _ => None,
    }
}

/// Whether two health states are the same state (ignoring since when).
fn same_state(a: &WriteHealth, b: &WriteHealth) -> bool {
    match (a, b) {
        (WriteHealth::Ok, WriteHealth::Ok) => true,
        (WriteHealth::Full { path: p, .. }, WriteHealth::Full { path: q, .. }) => p == q,
        (WriteHealth::Failed { reason: r, .. }, WriteHealth::Failed { reason: s, .. }) => r == s,
        _ => false,
    }
}

/// Cuts `path` back to the `len` bytes the last successful sync covered,
/// through a fresh descriptor, and makes the cut durable. A file that never
/// had a successful sync is removed.
fn cut_back(fs: &dyn Fs, path: &Path, len: u64) -> Result<()> {
    if len < HEADER_LEN {
        return match fs.remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(StoreError::io("remove segment", path, e))
            }
            _ => Ok(()),
        };
    }
    let file = fs.open_append(path).map_err(io("open segment", path))?;
    if file.size().map_err(io("stat segment", path))? > len {
        file.set_len(len).map_err(io("truncate segment", path))?;
    }
    file.sync_data().map_err(io("sync segment", path))
}

impl Writer {
    /// Records what a write did to the store's health and passes its result
    /// on. A failure shows at once (before its caller is answered); a
    /// success only once its group committed, and the last write of a group
    /// decides.
    pub(crate) fn note<T>(&mut self, result: Result<T>) -> Result<T> {
        match &result {
            Ok(_) => self.last_write = Some(WriteHealth::Ok),
            Err(e) => {
                if let Some(h) = health_of(e) {
                    let kind = match h {
                        WriteHealth::Full { .. } => "full",
                        _ => "io",
                    };
                    self.config.metrics.write_errors.get([kind]).inc();
                    self.set_health(h.clone());
                    self.last_write = Some(h);
                }
            }
        }
        result
    }

    fn set_health(&mut self, next: WriteHealth) {
        match next {
            WriteHealth::Full { .. } => self.release_reserve(),
            // Writes into the space the reserve freed do not end the full
            // state: only the reserve coming back does.
            WriteHealth::Ok if self.reserve.refuses_appends() => return,
            _ => {}
        }
        let mut health = self.shared.health.lock();
        if same_state(&health, &next) {
            return;
        }
        let since_ms = now_ms();
        *health = match next {
            WriteHealth::Ok => {
                tracing::info!("writes go through again");
                WriteHealth::Ok
            }
            WriteHealth::Full { path, .. } => {
                tracing::error!(path = %path.display(), "disk full: writes fail until space is freed");
                WriteHealth::Full { path, since_ms }
            }
            WriteHealth::Failed { reason, .. } => {
                tracing::error!(%reason, "writes are failing");
                WriteHealth::Failed { reason, since_ms }
            }
        };
    }

    /// Ends a group: recovers the streams it broke, then sets the store's
    /// health from what happened.
    pub(crate) fn finish_group(&mut self) {
        let wrote = self.last_write.is_some();
        let mut broken: Vec<StreamName> = std::mem::take(&mut self.broken_in_group);
        if wrote {
            // A stream whose recovery failed earlier is tried again.
            broken.extend(
                self.streams
                    .iter()
                    .filter(|(_, ws)| ws.active.broken)
                    .map(|(name, _)| name.clone()),
            );
        }
        broken.sort();
        broken.dedup();
        let mut failure = None;
        for name in broken {
            let still = self.streams.get(&name).is_some_and(|ws| ws.active.broken);
            if still {
                if let Err(e) = self.repair(&name) {
                    failure = health_of(&e).or(failure);
                }
            }
        }
        let next = match (failure, self.last_write.take()) {
            (Some(h), _) => Some(h),
            (None, Some(WriteHealth::Ok)) if self.streams.values().any(|ws| ws.active.broken) => {
                None
            }
            (None, last) => last,
        };
        if let Some(next) = next {
            self.set_health(next);
        }
    }

    /// Syncs one stream's active segment now (dead letters, control
    /// records); a failure breaks the stream.
    pub(crate) fn sync_stream(&mut self, name: &StreamName) -> Result<()> {
        let Some(ws) = self.streams.get_mut(name) else {
            return Ok(());
        };
        match ws.active.sync() {
            Ok(()) => {
                ws.unsynced = false;
                Ok(())
            }
            Err(e) => {
                self.broken_in_group.push(name.clone());
                Err(e)
            }
        }
    }

    /// Syncs the directories whose entries changed, each only after the
    /// active segment of the stream it holds: a segment's name made durable
    /// before its header could come back from a power cut naming a file of
    /// zeros, which recovery rightly takes for damage. A directory whose
    /// stream is broken is left to that stream's recovery, which syncs it
    /// once the segment is cut back. A directory that fails may have lost
    /// entries: every stream in it is treated as crashed.
    pub(crate) fn sync_dirs(&mut self) -> Result<()> {
        let fs = self.config.fs.clone();
        let mut dirs = std::mem::take(&mut self.dirs_to_sync);
        dirs.sort();
        dirs.dedup();
        let mut first = None;
        for dir in dirs {
            let mut ready = true;
            for (name, ws) in self.streams.iter_mut().filter(|(_, ws)| ws.dir == dir) {
                if ws.active.broken {
                    ready = false;
                } else if ws.unsynced {
                    match ws.active.sync() {
                        Ok(()) => ws.unsynced = false,
                        Err(e) => {
                            self.broken_in_group.push(name.clone());
                            first.get_or_insert(e);
                            ready = false;
                        }
                    }
                }
            }
            if !ready {
                continue;
            }
            if let Err(e) = sync_dir(&*fs, &dir) {
                for (name, ws) in self.streams.iter_mut() {
                    if ws.dir.starts_with(&dir) {
                        ws.active.broken = true;
                        self.broken_in_group.push(name.clone());
                    }
                }
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Recovers a broken stream as a crash of that stream would: cuts its
    /// active segment back to what the last successful sync covered (never
    /// syncing the old descriptor again), reads it back from disk as on
    /// open, and swaps the result into the handle readers hold. Ids go on
    /// from the highest ever assigned. A stream that readers never saw is
    /// removed instead.
    pub(crate) fn repair(&mut self, name: &StreamName) -> Result<()> {
        let fs = self.config.fs.clone();
        let Some(ws) = self.streams.get(name) else {
            return Ok(());
        };
        let dir = ws.dir.clone();
        if ws.new {
            fs.remove_dir_all(&dir)
                .map_err(io("remove stream directory", &dir))?;
            sync_dir(&*fs, &self.shared.streams_dir)?;
            self.dirs_to_sync.retain(|d| !d.starts_with(&dir));
            self.streams.remove(name);
            tracing::warn!(stream = %name, "removed a new stream whose first writes failed");
            return Ok(());
        }
        let cut = ws.active.synced_len;
        let path = ws.active.path.clone();
        let (state, active, clock) = cut_back(&*fs, &path, cut)
            .and_then(|()| sync_dir(&*fs, &dir))
            .and_then(|()| recover_parts(&self.config, name, &dir))
            .inspect_err(|e| {
                tracing::error!(stream = %name, error = %e, "cannot recover the stream after a failed write; retrying on its next write");
            })?;
        let Some(ws) = self.streams.get_mut(name) else {
            return Ok(());
        };
        let mut st = ws.handle.state.write();
        let published: u64 = st.segments.iter().map(|s| s.count).sum();
        let recovered: u64 = state.segments.iter().map(|s| s.count).sum();
        let (added, last_id) = (st.added, st.last_id);
        *st = state;
        st.added = added;
        st.last_id = st.last_id.max(last_id);
        drop(st);
        let lost = published.saturating_sub(recovered);
        if lost > 0 {
            // Only possible under `interval` or `never`: events acknowledged
            // since the last successful sync, as a power loss would lose.
            // A later `sync` must not report them durable.
            tracing::warn!(stream = %name, events = lost, "events acknowledged since the last successful sync were lost with it");
            self.lost_since_sync.get_or_insert_with(|| {
                StoreError::io(
                    "sync segment",
                    &path,
                    std::io::Error::other(format!(
                        "{lost} acknowledged events were lost when the stream was recovered after a failed write"
                    )),
                )
            });
        }
        ws.clock = IdClock::new(ws.clock.last().max(clock.last()));
        ws.active = active;
        ws.sealed.clear();
        ws.dirty = false;
        ws.unsynced = false;
        ws.added = added;
        ws.window_stale = true;
        tracing::warn!(stream = %name, file = %path.display(), synced_len = cut, "recovered the stream from disk after a failed write");
        Ok(())
    }
}
