//! One segment file: its in-memory description, its sparse index, the
//! index file written when it is sealed, and a chunked reader.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use busbar_event::{EventId, FRAME_HEADER_LEN};
use bytes::{Bytes, BytesMut};

use super::format::{id_at, is_event, u64_at, Control, INDEX_MAGIC};
use crate::fs::{Fs, FsFile};
use crate::group::{decode_op, GroupState};
use crate::{Result, StoreError};
use std::collections::BTreeMap;

/// A sparse index entry: the event at `offset` has `id` and is the
/// `ordinal`-th event of its segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub id: EventId,
    pub offset: u64,
    pub ordinal: u64,
}

/// What the store knows about one segment file.
#[derive(Debug, Clone)]
pub(crate) struct Segment {
    pub no: u64,
    pub path: PathBuf,
    pub file: Arc<dyn FsFile>,
    /// Bytes readers may read (header included): the committed length.
    pub len: u64,
    /// Event records in the segment (deleted or trimmed ones included).
    pub count: u64,
    pub first_id: Option<EventId>,
    pub last_id: Option<EventId>,
    /// Bytes of event frames.
    pub event_bytes: u64,
    pub index: Vec<IndexEntry>,
    pub sealed: bool,
}

pub(crate) fn segment_file_name(no: u64) -> String {
    format!("{no:020}.seg")
}

pub(crate) fn index_path(segment: &Path) -> PathBuf {
    segment.with_extension("idx")
}

impl Segment {
    /// The entry to start a scan from when looking for the first event with
    /// id >= `id`: the last entry whose id is below it (or the first).
    pub(crate) fn seek(&self, id: EventId) -> Option<IndexEntry> {
        let i = self.index.partition_point(|e| e.id < id);
        self.index.get(i.saturating_sub(1)).copied()
    }

    /// A reader over `[from, self.len)`.
    pub(crate) fn reader(&self, from: u64) -> SegmentReader {
        SegmentReader {
            file: self.file.clone(),
            path: self.path.clone(),
            pos: from,
            end: self.len,
            buf: Bytes::new(),
            buf_start: from,
        }
    }

    /// Number of events with id < `floor` in this segment.
    pub(crate) fn count_below(&self, floor: EventId) -> Result<u64> {
        match (self.first_id, self.last_id) {
            (Some(first), Some(last)) => {
                if last < floor {
                    return Ok(self.count);
                }
                if first >= floor {
                    return Ok(0);
                }
            }
            _ => return Ok(0),
        }
        let Some(start) = self.seek(floor) else {
            return Ok(0);
        };
        let mut below = start.ordinal;
        let mut reader = self.reader(start.offset);
        while let Some((_, body)) = reader.next_frame()? {
            if !is_event(&body) {
                continue;
            }
            if id_at(&body, 16) >= floor {
                break;
            }
            below += 1;
        }
        Ok(below)
    }
}

/// Reads frames forward from a segment in 256 KiB chunks with `pread`, so
/// readers never hold a lock or the writer's file position.
#[derive(Debug)]
pub(crate) struct SegmentReader {
    file: Arc<dyn FsFile>,
    path: PathBuf,
    pos: u64,
    end: u64,
    buf: Bytes,
    buf_start: u64,
}

const CHUNK: usize = 256 * 1024;

impl SegmentReader {
    /// The next frame's offset and body, or `None` at the committed end.
    pub(crate) fn next_frame(&mut self) -> Result<Option<(u64, Bytes)>> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let header = self.take(FRAME_HEADER_LEN)?;
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let offset = self.pos - FRAME_HEADER_LEN as u64;
        if offset + (FRAME_HEADER_LEN + len) as u64 > self.end {
            return Err(self.corrupt(offset, "frame runs past the committed end"));
        }
        let body = self.take(len)?;
        if crc32c::crc32c(&body) != crc {
            return Err(self.corrupt(offset, "frame checksum mismatch"));
        }
        Ok(Some((offset, body)))
    }

    fn corrupt(&self, offset: u64, reason: &str) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            offset,
            reason: reason.to_owned(),
        }
    }

    fn take(&mut self, n: usize) -> Result<Bytes> {
        let in_buf = (self.pos - self.buf_start) as usize;
        if in_buf + n > self.buf.len() {
            let want = n.max(CHUNK).min((self.end - self.pos) as usize).max(n);
            let mut chunk = BytesMut::zeroed(want);
            self.file
                .read_exact_at(&mut chunk, self.pos)
                .map_err(|e| StoreError::io("read segment", &self.path, e))?;
            self.buf = chunk.freeze();
            self.buf_start = self.pos;
        }
        let at = (self.pos - self.buf_start) as usize;
        self.pos += n as u64;
        Ok(self.buf.slice(at..at + n))
    }
}

/// What a sealed segment's index file holds: everything recovery would
/// otherwise learn by scanning the segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IndexFile {
    pub segment_len: u64,
    pub count: u64,
    pub first_id: Option<EventId>,
    pub last_id: Option<EventId>,
    pub event_bytes: u64,
    pub entries: Vec<IndexEntry>,
    pub controls: Vec<Control>,
}

fn put_u64(v: &mut Vec<u8>, n: u64) {
    v.extend_from_slice(&n.to_le_bytes());
}

fn put_id(v: &mut Vec<u8>, id: EventId) {
    put_u64(v, id.ms);
    put_u64(v, id.seq);
}

impl IndexFile {
    /// Whether the index can describe a segment of `len` bytes: its
    /// length, and counts, sizes, offsets and ids that such a segment can
    /// hold. One that cannot (damage whose checksum held) is stale, and
    /// the segment is scanned instead of trusting it.
    pub(crate) fn fits(&self, len: u64) -> bool {
        let min_frame = (FRAME_HEADER_LEN + busbar_event::RECORD_HEADER_LEN) as u64;
        let room = len.saturating_sub(super::format::HEADER_LEN);
        let ids = match (self.first_id, self.last_id) {
            (Some(first), Some(last)) => first <= last && self.count > 0,
            (None, None) => self.count == 0,
            _ => false,
        };
        self.segment_len == len
            && ids
            && self.event_bytes <= room
            && self
                .count
                .checked_mul(min_frame)
                .is_some_and(|b| b <= self.event_bytes)
            && self.entries.len() as u64 <= self.count
            && self.entries.iter().all(|e| {
                e.offset >= super::format::HEADER_LEN && e.offset < len && e.ordinal < self.count
            })
    }

    /// Writes the index next to `segment` (temp file, fsync, rename). A
    /// temp file that cannot be completed is removed again.
    pub(crate) fn write(&self, fs: &dyn Fs, segment: &Path) -> Result<()> {
        let mut v = Vec::with_capacity(96 + self.entries.len() * 32);
        v.extend_from_slice(INDEX_MAGIC);
        put_u64(&mut v, self.segment_len);
        put_u64(&mut v, self.count);
        put_u64(&mut v, self.event_bytes);
        put_id(&mut v, self.first_id.unwrap_or_default());
        put_id(&mut v, self.last_id.unwrap_or_default());
        put_u64(&mut v, self.entries.len() as u64);
        for e in &self.entries {
            put_id(&mut v, e.id);
            put_u64(&mut v, e.offset);
            put_u64(&mut v, e.ordinal);
        }
        put_u64(&mut v, self.controls.len() as u64);
        for c in &self.controls {
            let framed = c.encode();
            put_u64(&mut v, framed.len() as u64);
            v.extend_from_slice(&framed);
        }
        let crc = crc32c::crc32c(&v);
        v.extend_from_slice(&crc.to_le_bytes());

        let path = index_path(segment);
        let tmp = path.with_extension("idx.tmp");
        let io = |op, e| StoreError::io(op, &tmp, e);
        let f = fs.create(&tmp).map_err(|e| io("create index", e))?;
        let written = f
            .write_all(&v)
            .map_err(|e| io("write index", e))
            .and_then(|()| f.sync_data().map_err(|e| io("sync index", e)));
        drop(f);
        if let Err(e) = written {
            let _ = fs.remove_file(&tmp);
            return Err(e);
        }
        fs.rename(&tmp, &path)
            .map_err(|e| StoreError::io("rename index", &path, e))
    }

    /// Reads an index file; `None` when it is missing or damaged (the
    /// caller rebuilds it by scanning the segment).
    pub(crate) fn read(fs: &dyn Fs, segment: &Path) -> Option<IndexFile> {
        let b = fs.read(&index_path(segment)).ok()?;
        if b.len() < 84 || &b[..8] != INDEX_MAGIC {
            return None;
        }
        let body = &b[..b.len() - 4];
        let crc = u32::from_le_bytes(b[b.len() - 4..].try_into().ok()?);
        if crc32c::crc32c(body) != crc {
            return None;
        }
        let count = u64_at(body, 16);
        let nonzero = |id: EventId| (count > 0).then_some(id);
        // Every count and length below comes from the file: checked against
        // what the file holds before anything is sized by it, so a damaged
        // index whose checksum holds is only stale, never a panic or a huge
        // allocation.
        let u64_in = |at: usize| body.get(at..at.checked_add(8)?).map(|_| u64_at(body, at));
        let mut at = 64;
        let n = usize::try_from(u64_in(at)?).ok()?;
        at += 8;
        let entries_end = n.checked_mul(32).and_then(|len| at.checked_add(len))?;
        if body.len() < entries_end {
            return None;
        }
        let entries = (0..n)
            .map(|i| {
                let e = at + i * 32;
                IndexEntry {
                    id: id_at(body, e),
                    offset: u64_at(body, e + 16),
                    ordinal: u64_at(body, e + 24),
                }
            })
            .collect();
        at = entries_end;
        let nc = u64_in(at)?;
        at += 8;
        let mut controls = Vec::new();
        for _ in 0..nc {
            let len = usize::try_from(u64_in(at)?).ok()?;
            at += 8;
            let framed = body.get(at..at.checked_add(len)?)?;
            // Each control takes at least a frame header, so the loop ends
            // with the file however large `nc` claims to be.
            let record = framed.get(FRAME_HEADER_LEN..)?;
            controls.push(Control::decode(record).ok()??);
            at += len;
        }
        Some(IndexFile {
            segment_len: u64_at(body, 8),
            count,
            event_bytes: u64_at(body, 24),
            first_id: nonzero(id_at(body, 32)),
            last_id: nonzero(id_at(body, 48)),
            entries,
            controls,
        })
    }
}

/// Builds a segment's metadata by scanning its records.
#[derive(Debug, Default)]
pub(crate) struct SegmentBuilder {
    pub count: u64,
    pub first_id: Option<EventId>,
    pub last_id: Option<EventId>,
    pub event_bytes: u64,
    pub entries: Vec<IndexEntry>,
    /// Trims and deletions (kept in the index file).
    pub controls: Vec<Control>,
    /// Consumer groups as of the segment's snapshot plus its ops (only
    /// meaningful for the active segment).
    pub groups: BTreeMap<String, GroupState>,
    /// Whether the first record was a group snapshot.
    pub starts_with_snapshot: bool,
    /// The stream's last id before this segment's first event: a scan
    /// refuses an event whose id is not above the one before it.
    pub after: EventId,
    frames: u64,
    since_entry: u64,
    interval: u64,
}

impl SegmentBuilder {
    /// Bytes of events between index entries.
    pub(crate) fn interval(&self) -> u64 {
        self.interval
    }

    pub(crate) fn new(interval: u64) -> Self {
        SegmentBuilder {
            interval,
            ..Default::default()
        }
    }

    pub(crate) fn from_index(index: &IndexFile, interval: u64) -> Self {
        SegmentBuilder {
            count: index.count,
            first_id: index.first_id,
            last_id: index.last_id,
            event_bytes: index.event_bytes,
            entries: index.entries.clone(),
            controls: index.controls.clone(),
            groups: BTreeMap::new(),
            starts_with_snapshot: false,
            after: EventId::ZERO,
            frames: 0,
            since_entry: 0,
            interval,
        }
    }

    /// Records an event frame of `frame_len` bytes at `offset`.
    pub(crate) fn event(&mut self, id: EventId, offset: u64, frame_len: u64) {
        if self.entries.is_empty() || self.since_entry >= self.interval {
            self.entries.push(IndexEntry {
                id,
                offset,
                ordinal: self.count,
            });
            self.since_entry = 0;
        }
        self.since_entry += frame_len;
        self.first_id.get_or_insert(id);
        self.last_id = Some(id);
        self.count += 1;
        self.event_bytes += frame_len;
    }

    /// Records any frame found by a scan.
    pub(crate) fn frame(
        &mut self,
        offset: u64,
        body: &[u8],
    ) -> std::result::Result<(), &'static str> {
        let first = self.frames == 0;
        self.frames += 1;
        match Control::decode(body)? {
            Some(Control::GroupSnapshot(json)) => {
                self.groups =
                    serde_json::from_slice(&json).map_err(|_| "group snapshot does not parse")?;
                if first {
                    self.starts_with_snapshot = true;
                }
            }
            Some(Control::GroupOp(bytes)) => {
                crate::group::state::apply(&mut self.groups, &decode_op(&bytes)?);
            }
            Some(c) => self.controls.push(c),
            None => {
                // A record whose checksum holds but whose lengths do not
                // add up is damage too: found here, it fails the open (or
                // quarantines the segment) instead of every later read.
                busbar_event::Event::check_body(body).map_err(|e| match e {
                    busbar_event::EventError::CorruptRecord { reason } => reason,
                    _ => "malformed event record",
                })?;
                // Ids strictly increase within a stream: one that does not
                // is damage, not an event to serve out of order.
                let id = id_at(body, 16);
                if id <= self.last_id.unwrap_or(self.after) {
                    return Err("event id is not above the one before it");
                }
                self.event(id, offset, (FRAME_HEADER_LEN + body.len()) as u64);
            }
        }
        Ok(())
    }

    pub(crate) fn index_file(&self, segment_len: u64) -> IndexFile {
        IndexFile {
            segment_len,
            count: self.count,
            first_id: self.first_id,
            last_id: self.last_id,
            event_bytes: self.event_bytes,
            entries: self.entries.clone(),
            controls: self.controls.clone(),
        }
    }
}
