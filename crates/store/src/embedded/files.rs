//! Segment files as the writer holds them: the active segment of each
//! stream, creating segments, sealing and rolling over, rotation and stream
//! deletion.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use busbar_event::IdClock;

use super::format::{Control, SegmentHeader, FLAG_GROUP_SNAPSHOT, HEADER_LEN};
use super::segment::{segment_file_name, Segment, SegmentBuilder};
use super::stream::StreamHandle;
use crate::{Result, StoreError};

/// The writer's view of a stream's active segment.
#[derive(Debug)]
pub(crate) struct Active {
    pub no: u64,
    pub path: PathBuf,
    pub file: File,
    pub read_file: Arc<File>,
    pub len: u64,
    pub builder: SegmentBuilder,
    /// Index entries already handed to readers.
    pub published_entries: usize,
}

/// A stream as the writer holds it.
#[derive(Debug)]
pub(crate) struct WStream {
    pub handle: Arc<StreamHandle>,
    pub dir: PathBuf,
    pub clock: IdClock,
    pub active: Active,
    /// Segments sealed since the last publish.
    pub sealed: Vec<Segment>,
    /// Written since the last publish.
    pub dirty: bool,
    /// Written since the last fsync.
    pub unsynced: bool,
    /// Not yet in the shared map.
    pub new: bool,
    /// Events ever appended ([`crate::StreamInfo::added`]), published with
    /// the rest.
    pub added: u64,
}

pub(crate) fn io<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |e| StoreError::io(op, path, e)
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("sync directory", dir))
}

/// Creates segment `no` of a stream in `dir`; returns the append handle,
/// a read handle, and the path.
pub(crate) fn create_segment(
    dir: &Path,
    no: u64,
    header: SegmentHeader,
    first_records: &[u8],
) -> Result<(File, Arc<File>, PathBuf)> {
    let path = dir.join(segment_file_name(no));
    let mut file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)
        .map_err(io("create segment", &path))?;
    let mut head = header.encode().to_vec();
    head.extend_from_slice(first_records);
    file.write_all(&head)
        .map_err(io("write segment header", &path))?;
    let read = File::open(&path).map_err(io("open segment", &path))?;
    Ok((file, Arc::new(read), path))
}

impl Active {
    pub(crate) fn shared_segment(&self) -> Segment {
        Segment {
            no: self.no,
            path: self.path.clone(),
            file: self.read_file.clone(),
            len: self.len,
            count: self.builder.count,
            first_id: self.builder.first_id,
            last_id: self.builder.last_id,
            event_bytes: self.builder.event_bytes,
            index: self.builder.entries.clone(),
            sealed: false,
        }
    }

    pub(crate) fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.file
            .write_all(bytes)
            .map_err(io("write segment", &self.path))?;
        self.len += bytes.len() as u64;
        Ok(())
    }
}

/// Seals the active segment (fsync, index file) and starts the next one.
/// Returns the directory whose entries changed.
pub(crate) fn roll(ws: &mut WStream) -> Result<PathBuf> {
    let active = &mut ws.active;
    active
        .file
        .sync_data()
        .map_err(io("sync segment", &active.path))?;
    active.builder.index_file(active.len).write(&active.path)?;
    let mut sealed = active.shared_segment();
    sealed.sealed = true;
    ws.sealed.push(sealed);
    // The new segment starts with the consumer groups as they are, so it
    // alone is enough to recover them once older segments are dropped.
    let (floor, snapshot) = {
        let st = ws.handle.state.read();
        let snapshot = (!st.groups.is_empty())
            .then(|| serde_json::to_vec(&st.groups).map(|j| Control::GroupSnapshot(j).encode()))
            .transpose()
            .map_err(|e| StoreError::io("encode group snapshot", &active.path, e.into()))?;
        (st.floor, snapshot.unwrap_or_default())
    };
    let no = active.no + 1;
    let header = SegmentHeader {
        prev_last_id: ws.clock.last(),
        floor,
        flags: if snapshot.is_empty() {
            0
        } else {
            FLAG_GROUP_SNAPSHOT
        },
    };
    let (file, read_file, path) = create_segment(&ws.dir, no, header, &snapshot)?;
    let interval = active.builder_interval();
    ws.active = Active {
        no,
        path,
        file,
        read_file,
        len: HEADER_LEN + snapshot.len() as u64,
        builder: SegmentBuilder::new(interval),
        published_entries: 0,
    };
    ws.dirty = true;
    ws.unsynced = true;
    Ok(ws.dir.clone())
}

impl Active {
    pub(crate) fn builder_interval(&self) -> u64 {
        self.builder.interval()
    }
}
