//! Opening a stream directory: validate every segment, truncate a torn
//! tail, refuse (or quarantine) damage, rebuild missing or stale indexes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use busbar_event::{EventId, IdClock, StreamName};
use parking_lot::RwLock;

use super::files::{create_segment, sync_dir, Active, WStream};
use super::format::{
    scan_frames, Control, SegmentHeader, FLAG_GROUP_SNAPSHOT, HEADER_LEN, KIND_GROUP_SNAPSHOT,
};
use super::segment::{index_path, IndexFile, Segment, SegmentBuilder};
use super::stream::{StreamHandle, StreamState};
use super::{CorruptionPolicy, EmbeddedConfig};
use crate::fs::Fs;
use crate::{Result, StoreError};

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |e| StoreError::io(op, path, e)
}

/// Segment files of a stream directory, sorted by number.
fn segment_files(fs: &dyn Fs, dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for path in fs.read_dir(dir).map_err(io("list stream directory", dir))? {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if let Some(no) = name
            .strip_suffix(".seg")
            .and_then(|n| n.parse::<u64>().ok())
        {
            out.push((no, path));
        } else if name.ends_with(".tmp") {
            // An index write interrupted by a crash.
            fs.remove_file(&path)
                .map_err(io("remove temporary file", &path))?;
        }
    }
    out.sort();
    Ok(out)
}

fn quarantine(config: &EmbeddedConfig, stream: &StreamName, path: &Path) -> Result<()> {
    let fs = &*config.fs;
    let dir = config.dir.join("quarantine").join(stream.as_str());
    fs.create_dir_all(&dir)
        .map_err(io("create quarantine directory", &dir))?;
    for file in [path.to_path_buf(), index_path(path)] {
        if fs.exists(&file).map_err(io("quarantine segment", &file))? {
            let target = dir.join(file.file_name().unwrap_or_default());
            fs.rename(&file, &target)
                .map_err(io("quarantine segment", &file))?;
        }
    }
    Ok(())
}

/// The first [`HEADER_LEN`] bytes of a segment (fewer when it is shorter).
fn read_head(fs: &dyn Fs, path: &Path) -> Result<Vec<u8>> {
    let file = fs.open_read(path).map_err(io("open segment", path))?;
    let mut head = vec![0u8; HEADER_LEN as usize];
    let mut got = 0;
    while got < head.len() {
        match file.read_at(&mut head[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(StoreError::io("read segment header", path, e)),
        }
    }
    head.truncate(got);
    Ok(head)
}

/// A last segment whose header promises a group snapshot but whose first
/// record is not a whole one was torn while being created: nothing in it
/// was ever acknowledged, and the segment before it still holds the groups.
/// It is removed so that one becomes the active segment again.
fn drop_torn_snapshot_segment(fs: &dyn Fs, files: &mut Vec<(u64, PathBuf)>) -> Result<()> {
    if files.len() < 2 {
        return Ok(());
    }
    let Some((_, path)) = files.last() else {
        return Ok(());
    };
    let head = read_head(fs, path)?;
    let Ok(header) = SegmentHeader::decode(&head) else {
        return Ok(());
    };
    if header.flags & FLAG_GROUP_SNAPSHOT == 0 {
        return Ok(());
    }
    let data = fs.read(path).map_err(io("read segment", path))?;
    let mut whole = false;
    let _ = scan_frames(&data[HEADER_LEN as usize..], HEADER_LEN, |_, body| {
        whole = body.first() == Some(&KIND_GROUP_SNAPSHOT);
        Err("stop after the first record")
    });
    if !whole {
        tracing::warn!(file = %path.display(), "removing a segment torn while it was being created");
        fs.remove_file(path)
            .map_err(io("remove torn segment", path))?;
        files.pop();
    }
    Ok(())
}

/// Recovers one stream.
pub(crate) fn recover_stream(
    config: &EmbeddedConfig,
    name: &StreamName,
    dir: &Path,
) -> Result<WStream> {
    let (state, active, clock) = recover_parts(config, name, dir)?;
    let added = state.added;
    Ok(WStream {
        handle: Arc::new(StreamHandle {
            name: name.clone(),
            state: RwLock::new(state),
        }),
        dir: dir.to_path_buf(),
        clock,
        active,
        sealed: Vec::new(),
        dirty: false,
        unsynced: false,
        new: false,
        added,
        window: Default::default(),
        window_stale: true,
    })
}

/// Reads a stream back from disk: its shared state, its active segment
/// (synced once, so what it holds is known to be durable) and its id clock.
pub(crate) fn recover_parts(
    config: &EmbeddedConfig,
    name: &StreamName,
    dir: &Path,
) -> Result<(StreamState, Active, IdClock)> {
    let fs = &*config.fs;
    let mut files = segment_files(fs, dir)?;
    drop_torn_snapshot_segment(fs, &mut files)?;
    let interval = config.index_interval_bytes;
    let mut state = StreamState {
        segments: Vec::new(),
        floor: EventId::ZERO,
        deleted: Default::default(),
        last_id: EventId::ZERO,
        hidden: 0,
        added: 0,
        groups: Default::default(),
    };
    let mut last_active: Option<(u64, PathBuf, u64, SegmentBuilder)> = None;
    let mut next_no = 1;
    let count = files.len();
    for (i, (no, path)) in files.into_iter().enumerate() {
        next_no = no + 1;
        let is_last = i + 1 == count;
        // Only the header is read up front: a sealed segment with a valid
        // index file is never read in full on open.
        let len = fs.file_size(&path).map_err(io("stat segment", &path))?;
        let head = read_head(fs, &path)?;
        let header = match SegmentHeader::decode(&head) {
            Ok(h) => h,
            Err(reason) if is_last && len < HEADER_LEN => {
                // Created but its header never reached the disk: nothing in
                // it was ever acknowledged.
                tracing::warn!(file = %path.display(), reason, "removing a segment torn at creation");
                fs.remove_file(&path)
                    .map_err(io("remove torn segment", &path))?;
                continue;
            }
            Err(reason) => {
                let err = StoreError::Corrupt {
                    path: path.clone(),
                    offset: 0,
                    reason: reason.to_owned(),
                };
                match config.on_corruption {
                    CorruptionPolicy::Fail => return Err(err),
                    CorruptionPolicy::Quarantine => {
                        tracing::error!(error = %err, "quarantining damaged segment");
                        quarantine(config, name, &path)?;
                        continue;
                    }
                }
            }
        };
        state.last_id = state.last_id.max(header.prev_last_id);
        state.floor = state.floor.max(header.floor);

        let cached = (!is_last)
            .then(|| IndexFile::read(fs, &path))
            .flatten()
            .filter(|idx| idx.fits(len));
        let mut builder = match cached {
            Some(idx) => SegmentBuilder::from_index(&idx, interval),
            None => {
                let data = fs.read(&path).map_err(io("read segment", &path))?;
                let mut builder = SegmentBuilder::new(interval);
                builder.after = state.last_id;
                let scanned =
                    scan_frames(&data[HEADER_LEN as usize..], HEADER_LEN, |offset, body| {
                        builder.frame(offset, body)
                    });
                match scanned {
                    Ok(()) => {}
                    Err(bad) if is_last && bad.torn => {
                        tracing::warn!(
                            file = %path.display(),
                            offset = bad.offset,
                            dropped_bytes = len - bad.offset,
                            reason = bad.reason,
                            "truncating torn tail of the active segment"
                        );
                        let f = fs.open_append(&path).map_err(io("open segment", &path))?;
                        f.set_len(bad.offset)
                            .map_err(io("truncate segment", &path))?;
                        f.sync_data().map_err(io("sync segment", &path))?;
                    }
                    Err(bad) => {
                        let err = StoreError::Corrupt {
                            path: path.clone(),
                            offset: bad.offset,
                            reason: bad.reason.to_owned(),
                        };
                        match config.on_corruption {
                            CorruptionPolicy::Fail => return Err(err),
                            CorruptionPolicy::Quarantine => {
                                tracing::error!(
                                    error = %err,
                                    events_before_damage = builder.count,
                                    "quarantining damaged segment"
                                );
                                state.last_id =
                                    state.last_id.max(builder.last_id.unwrap_or_default());
                                quarantine(config, name, &path)?;
                                continue;
                            }
                        }
                    }
                }
                if !is_last {
                    builder.index_file(len).write(fs, &path)?;
                }
                builder
            }
        };
        for control in &builder.controls {
            state.apply(control);
        }
        if let Some(last) = builder.last_id {
            state.last_id = state.last_id.max(last);
        }
        let seg_len = if is_last {
            fs.file_size(&path).map_err(io("stat segment", &path))?
        } else {
            len
        };
        let file: Arc<dyn crate::fs::FsFile> =
            Arc::from(fs.open_read(&path).map_err(io("open segment", &path))?);
        state.segments.push(Segment {
            no,
            path: path.clone(),
            file,
            len: seg_len,
            count: builder.count,
            first_id: builder.first_id,
            last_id: builder.last_id,
            event_bytes: builder.event_bytes,
            index: builder.entries.clone(),
            sealed: !is_last,
        });
        if is_last {
            state.groups = std::mem::take(&mut builder.groups);
            last_active = Some((no, path, seg_len, builder));
        }
    }
    let floor = state.floor;
    state.deleted = state.deleted.split_off(&floor);
    // A deletion is only ever logged for events the stream holds; one that
    // names an event it does not hold is damage (its checksum held) and
    // would make the stream's length short. It is dropped, and said.
    let logged = std::mem::take(&mut state.deleted);
    let mut missing = 0usize;
    for id in logged {
        if state.holds(id)? {
            state.deleted.insert(id);
        } else {
            missing += 1;
        }
    }
    if missing > 0 {
        tracing::warn!(stream = %name, missing, "ignoring deletions of events the stream does not hold");
    }

    // The active segment: the last one, or a new one when the last was
    // quarantined or the directory is empty.
    let active = match last_active {
        Some((no, path, len, builder)) => {
            let file = fs.open_append(&path).map_err(io("open segment", &path))?;
            // What the segment holds may still be only in the page cache
            // (a process crash under `interval`): synced now, all of it is
            // what a later failed sync can be cut back to.
            file.sync_data().map_err(io("sync segment", &path))?;
            let read_file = Arc::from(fs.open_read(&path).map_err(io("open segment", &path))?);
            Active {
                no,
                path,
                file,
                read_file,
                len,
                synced_len: len,
                broken: false,
                published_entries: builder.entries.len(),
                builder,
            }
        }
        None => {
            if let Some(last) = state.segments.last_mut() {
                last.sealed = true;
            }
            let snapshot = if state.groups.is_empty() {
                Vec::new()
            } else {
                let json = serde_json::to_vec(&state.groups)
                    .map_err(|e| StoreError::io("encode group snapshot", dir, e.into()))?;
                Control::GroupSnapshot(json).encode()
            };
            let header = SegmentHeader {
                prev_last_id: state.last_id,
                floor: state.floor,
                flags: if snapshot.is_empty() {
                    0
                } else {
                    FLAG_GROUP_SNAPSHOT
                },
            };
            let (file, read_file, path) = create_segment(fs, dir, next_no, header, &snapshot)?;
            file.sync_data().map_err(io("sync segment", &path))?;
            sync_dir(fs, dir)?;
            let builder = SegmentBuilder::new(interval);
            state.segments.push(Segment {
                no: next_no,
                path: path.clone(),
                file: read_file.clone(),
                len: HEADER_LEN + snapshot.len() as u64,
                count: 0,
                first_id: None,
                last_id: None,
                event_bytes: 0,
                index: Vec::new(),
                sealed: false,
            });
            Active {
                no: next_no,
                path,
                file,
                read_file,
                len: HEADER_LEN + snapshot.len() as u64,
                synced_len: HEADER_LEN + snapshot.len() as u64,
                broken: false,
                builder,
                published_entries: 0,
            }
        }
    };
    state.recount_hidden()?;
    state.added = state.length();
    // New ids start above the floor as well as the last id: a floor past
    // the last id (only a damaged header or trim record holds one; trims
    // stop at the last id) would hide, from the next open on, events
    // appended below it now.
    let below_floor = state.floor.predecessor().unwrap_or(EventId::ZERO);
    let clock = IdClock::new(state.last_id.max(below_floor));
    Ok((state, active, clock))
}
