//! Removing events: exact and approximate trims, deletions, dropping whole
//! sealed segments, the store-wide retention applied after a roll, and
//! deleting whole streams.

use busbar_event::{now_ms, EventId, StreamName};

use super::files::{io, sync_dir};
use super::format::Control;
use super::segment::{index_path, Segment};
use super::writer::Writer;
use crate::trim::{is_approx, trim_floor};
use crate::{Durability, Result, StoreError, Trim};

impl Writer {
    /// Applies [`super::Retention`] to streams that sealed a segment.
    pub(crate) fn apply_retention(&mut self) {
        if self.closed {
            return;
        }
        for (name, trim) in std::mem::take(&mut self.approx_trims) {
            if let Err(e) = self.drop_segments(&name, trim) {
                tracing::error!(stream = %name, error = %e, "trim failed");
            }
        }
        if self.rolled.is_empty() {
            return;
        }
        let r = self.config.retention;
        let mut trims = Vec::new();
        if let Some(max) = r.max_len {
            trims.push(Trim::MaxLen { max, approx: true });
        }
        if let Some(age) = r.max_age {
            trims.push(Trim::MaxAge { age, approx: true });
        }
        if let Some(max) = r.max_bytes {
            trims.push(Trim::MaxBytes { max });
        }
        for name in std::mem::take(&mut self.rolled) {
            for trim in &trims {
                if let Err(e) = self.drop_segments(&name, *trim) {
                    tracing::error!(stream = %name, error = %e, "retention failed");
                }
            }
        }
    }

    /// Logs a control record in the stream's active segment and makes it
    /// durable (policy permitting) before it takes effect.
    pub(crate) fn log_control(&mut self, name: &StreamName, control: &Control) -> Result<()> {
        let always = self.config.durability == Durability::Always;
        let ws = self.existing(name)?;
        let written = ws.active.write(&control.encode());
        if ws.active.broken {
            self.broken_in_group.push(name.clone());
        }
        self.note(written)?;
        let ws = self.existing(name)?;
        ws.active.builder.controls.push(control.clone());
        ws.dirty = true;
        ws.unsynced = true;
        if always {
            self.sync_stream(name)?;
        }
        self.publish();
        Ok(())
    }

    pub(crate) fn trim(&mut self, name: &StreamName, trim: Trim) -> Result<u64> {
        let handle = self.existing(name)?.handle.clone();
        let before = handle.state.read().length();
        if !is_approx(trim) {
            let new_floor = {
                let st = handle.state.read();
                match trim {
                    Trim::MaxLen { max, .. } => st.floor_for_maxlen(max)?,
                    other => trim_floor(other),
                }
                // A floor past the last id would hide events appended later
                // with smaller ids than the floor; Redis keeps those too.
                .map(|f| f.min(st.last_id.successor().unwrap_or(EventId::MAX)))
                .filter(|f| *f > st.floor)
            };
            if let Some(floor) = new_floor {
                let control = Control::Trim(floor);
                self.log_control(name, &control)?;
                let mut st = handle.state.write();
                st.apply(&control);
                st.recount_hidden()?;
            }
        }
        self.drop_segments(name, trim)?;
        let after = handle.state.read().length();
        Ok(before.saturating_sub(after))
    }

    /// Drops whole sealed segments at the front that `trim` allows to go.
    pub(crate) fn drop_segments(&mut self, name: &StreamName, trim: Trim) -> Result<()> {
        let always = self.config.durability == Durability::Always;
        let fs = self.config.fs.clone();
        let ws = self.existing(name)?;
        let mut st = ws.handle.state.write();
        let mut length = st.length();
        let mut bytes: u64 = st.segments.iter().map(|s| s.event_bytes).sum();
        let id_floor = trim_floor(trim).unwrap_or(EventId::ZERO).max(st.floor);
        let mut drop_count = 0;
        for seg in &st.segments {
            if !seg.sealed || seg.no == ws.active.no {
                break;
            }
            let below_floor = seg.last_id.is_none_or(|l| l < id_floor);
            let live = seg.count
                - seg.count_below(st.floor)?
                - match (seg.first_id, seg.last_id) {
                    (Some(f), Some(l)) => st.deleted.range(f..=l).count() as u64,
                    _ => 0,
                };
            let allowed = below_floor
                || match trim {
                    Trim::MaxLen { max, .. } => length - live >= max,
                    Trim::MaxBytes { max } => bytes > max,
                    _ => false,
                };
            if !allowed {
                break;
            }
            length -= live;
            bytes -= seg.event_bytes;
            drop_count += 1;
        }
        if drop_count == 0 {
            return Ok(());
        }
        let dropped: Vec<Segment> = st.segments.drain(..drop_count).collect();
        if let Some(last) = dropped.last().and_then(|s| s.last_id) {
            st.deleted = st
                .deleted
                .split_off(&last.successor().unwrap_or(EventId::MAX));
        }
        st.recount_hidden()?;
        drop(st);
        for seg in &dropped {
            fs.remove_file(&seg.path)
                .map_err(io("remove segment", &seg.path))?;
            let idx = index_path(&seg.path);
            if let Err(e) = fs.remove_file(&idx) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    return Err(StoreError::io("remove index", &idx, e));
                }
            }
        }
        if always {
            sync_dir(&*fs, &ws.dir)?;
        }
        Ok(())
    }

    pub(crate) fn delete(&mut self, name: &StreamName, mut ids: Vec<EventId>) -> Result<u64> {
        let handle = self.existing(name)?.handle.clone();
        ids.sort_unstable();
        ids.dedup();
        let existing: Vec<EventId> = {
            let st = handle.state.read();
            let mut found = Vec::new();
            for id in ids {
                if id < st.floor || st.deleted.contains(&id) {
                    continue;
                }
                if st.holds(id)? {
                    found.push(id);
                }
            }
            found
        };
        if existing.is_empty() {
            return Ok(0);
        }
        let control = Control::Delete(existing);
        self.log_control(name, &control)?;
        handle.state.write().apply(&control);
        let Control::Delete(ids) = control else {
            return Ok(0);
        };
        Ok(ids.len() as u64)
    }

    pub(crate) fn delete_stream(&mut self, name: &StreamName) -> Result<bool> {
        let Some(ws) = self.streams.remove(name) else {
            return Ok(false);
        };
        let fs = self.config.fs.clone();
        // A directory created since the last sync is going away: nothing
        // in it needs syncing any more.
        self.dirs_to_sync.retain(|d| !d.starts_with(&ws.dir));
        self.shared.streams.write().remove(name);
        drop(ws.active);
        // Renamed first, so a crash mid-removal never leaves half a stream.
        let trash_dir = &self.shared.trash_dir;
        fs.create_dir_all(trash_dir)
            .map_err(io("create trash directory", trash_dir))?;
        let trash = trash_dir.join(format!("{}-{}", name.as_str(), now_ms()));
        fs.rename(&ws.dir, &trash)
            .map_err(io("move stream to trash", &ws.dir))?;
        sync_dir(&*fs, &self.shared.streams_dir)?;
        fs.remove_dir_all(&trash)
            .map_err(io("remove stream", &trash))?;
        Ok(true)
    }
}
