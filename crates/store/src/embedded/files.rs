//! Segment files as the writer holds them: the active segment of each
//! stream, creating a stream's first segment, sealing and rolling over to
//! the next, and undoing a write that failed half-way.
//!
//! Nothing here changes the writer's state until the file operations it
//! depends on have succeeded: a roll whose new segment cannot be created
//! leaves the old one active, a write that fails is cut back off the file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use busbar_event::{EventId, IdClock, StreamName};
use parking_lot::RwLock;

use super::format::{Control, SegmentHeader, FLAG_GROUP_SNAPSHOT, HEADER_LEN};
use super::segment::{segment_file_name, Segment, SegmentBuilder};
use super::stream::{StreamHandle, StreamState};
use crate::dedup::Window;
use crate::fs::{Fs, FsFile};
use crate::{Result, StoreError};

/// The writer's view of a stream's active segment.
#[derive(Debug)]
pub(crate) struct Active {
    pub no: u64,
    pub path: PathBuf,
    /// The append handle. Never synced again once a sync of it failed.
    pub file: Box<dyn FsFile>,
    pub read_file: Arc<dyn FsFile>,
    /// Bytes written (header included).
    pub len: u64,
    /// Bytes the last successful `fdatasync` of this file covered (0 while
    /// it never had one). A stream recovered after a failed sync is cut back
    /// to this length.
    pub synced_len: u64,
    /// A sync failed, or a failed write could not be cut back off the file:
    /// the stream takes no write until it is recovered from disk.
    pub broken: bool,
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
    /// Idempotency keys remembered ([`crate::Dedup`]).
    pub window: Window,
    /// The window no longer says what the log holds (the stream was just
    /// opened, or recovered after a failed write): it is rebuilt from the
    /// log before it is next used.
    pub window_stale: bool,
}

pub(crate) fn io<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |e| StoreError::io(op, path, e)
}

pub(crate) fn sync_dir(fs: &dyn Fs, dir: &Path) -> Result<()> {
    fs.sync_dir(dir).map_err(io("sync directory", dir))
}

/// A segment just created: its append handle, a read handle, its path.
pub(crate) type NewSegment = (Box<dyn FsFile>, Arc<dyn FsFile>, PathBuf);

/// Creates segment `no` of a stream in `dir`; returns the append handle,
/// a read handle, and the path. A file that cannot be written whole is
/// removed again, so a later attempt can create it.
pub(crate) fn create_segment(
    fs: &dyn Fs,
    dir: &Path,
    no: u64,
    header: SegmentHeader,
    first_records: &[u8],
) -> Result<NewSegment> {
    let path = dir.join(segment_file_name(no));
    let file = fs.create_new(&path).map_err(io("create segment", &path))?;
    let mut head = header.encode().to_vec();
    head.extend_from_slice(first_records);
    let opened = file
        .write_all(&head)
        .map_err(io("write segment header", &path))
        .and_then(|()| {
            fs.open_read(&path)
                .map(Arc::from)
                .map_err(io("open segment", &path))
        });
    match opened {
        Ok(read) => Ok((file, read, path)),
        Err(e) => {
            drop(file);
            if let Err(rm) = fs.remove_file(&path) {
                tracing::error!(file = %path.display(), error = %rm, "cannot remove a segment that failed at creation");
            }
            Err(e)
        }
    }
}

/// A new stream with an empty first segment in `streams_dir/<name>`.
pub(crate) fn new_stream(
    fs: &dyn Fs,
    streams_dir: &Path,
    name: &StreamName,
    index_interval: u64,
) -> Result<WStream> {
    let dir = streams_dir.join(name.as_str());
    fs.create_dir_all(&dir)
        .map_err(io("create stream directory", &dir))?;
    let (file, read_file, path) = create_segment(fs, &dir, 1, SegmentHeader::default(), &[])?;
    let handle = Arc::new(StreamHandle {
        name: name.clone(),
        state: RwLock::new(StreamState {
            segments: Vec::new(),
            floor: EventId::ZERO,
            deleted: Default::default(),
            last_id: EventId::ZERO,
            hidden: 0,
            added: 0,
            groups: Default::default(),
        }),
    });
    Ok(WStream {
        handle,
        dir,
        clock: IdClock::new(EventId::ZERO),
        active: Active {
            no: 1,
            path,
            file,
            read_file,
            len: HEADER_LEN,
            synced_len: 0,
            broken: false,
            builder: SegmentBuilder::new(index_interval),
            published_entries: 0,
        },
        sealed: Vec::new(),
        dirty: true,
        unsynced: true,
        new: true,
        added: 0,
        window: Window::default(),
        window_stale: false,
    })
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

    /// Appends `bytes`. A write that fails (part of it may have reached the
    /// file) is cut back off, so no partial frame stays in front of the next
    /// write; when even that fails the segment is marked broken.
    pub(crate) fn write(&mut self, bytes: &[u8]) -> Result<()> {
        if let Err(e) = self.file.write_all(bytes) {
            let err = StoreError::io("write segment", &self.path, e);
            if let Err(cut) = self.file.set_len(self.len) {
                tracing::error!(file = %self.path.display(), error = %cut, "cannot cut a failed write off the segment; the stream will be recovered from disk");
                self.broken = true;
            }
            return Err(err);
        }
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// `fdatasync`. A failure marks the segment broken: its descriptor is
    /// never synced again (see "What an I/O error does" in the module docs).
    pub(crate) fn sync(&mut self) -> Result<()> {
        match self.file.sync_data() {
            Ok(()) => {
                self.synced_len = self.len;
                Ok(())
            }
            Err(e) => {
                self.broken = true;
                Err(StoreError::io("sync segment", &self.path, e))
            }
        }
    }
}

/// Seals the active segment (fsync, index file) and starts the next one.
/// Returns the directory whose entries changed. On error the old segment
/// stays active (broken when its sync failed).
pub(crate) fn roll(fs: &dyn Fs, ws: &mut WStream) -> Result<PathBuf> {
    ws.active.sync()?;
    let active = &ws.active;
    active
        .builder
        .index_file(active.len)
        .write(fs, &active.path)?;
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
    let interval = active.builder.interval();
    let header = SegmentHeader {
        prev_last_id: ws.clock.last(),
        floor,
        flags: if snapshot.is_empty() {
            0
        } else {
            FLAG_GROUP_SNAPSHOT
        },
    };
    let (file, read_file, path) = create_segment(fs, &ws.dir, no, header, &snapshot)?;
    let mut sealed = active.shared_segment();
    sealed.sealed = true;
    ws.sealed.push(sealed);
    ws.active = Active {
        no,
        path,
        file,
        read_file,
        len: HEADER_LEN + snapshot.len() as u64,
        synced_len: 0,
        broken: false,
        builder: SegmentBuilder::new(interval),
        published_entries: 0,
    };
    ws.dirty = true;
    ws.unsynced = true;
    Ok(ws.dir.clone())
}
