//! A stream's shared state (segments, trim floor, deleted ids) and the read
//! and trim computations over it. The writer thread is the only mutator;
//! readers take the read lock just long enough to copy what they need.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use busbar_event::{Event, EventId};
use parking_lot::RwLock;

use super::format::{is_event, Control};
use super::segment::Segment;
use crate::group::GroupState;
use crate::{ReadQuery, Result, StreamInfo};
use busbar_event::StreamName;

/// Shared state of one stream.
#[derive(Debug)]
pub(crate) struct StreamState {
    pub segments: Vec<Segment>,
    /// Events with ids below this are trimmed.
    pub floor: EventId,
    /// Deleted ids at or above the floor.
    pub deleted: BTreeSet<EventId>,
    /// Last id assigned (kept when everything is trimmed).
    pub last_id: EventId,
    /// Trimmed events still physically present (below the floor).
    pub hidden: u64,
    /// Events ever appended ([`StreamInfo::added`]).
    pub added: u64,
    /// Consumer groups.
    pub groups: BTreeMap<String, GroupState>,
}

#[derive(Debug)]
pub(crate) struct StreamHandle {
    pub name: StreamName,
    pub state: RwLock<StreamState>,
}

impl StreamState {
    pub(crate) fn length(&self) -> u64 {
        let total: u64 = self.segments.iter().map(|s| s.count).sum();
        total - self.hidden - self.deleted.len() as u64
    }

    /// Recomputes `hidden` after the floor moved or segments were dropped.
    pub(crate) fn recount_hidden(&mut self) -> Result<()> {
        let mut hidden = 0;
        for seg in &self.segments {
            if seg.first_id.is_some_and(|f| f >= self.floor) {
                break;
            }
            hidden += seg.count_below(self.floor)?;
        }
        self.hidden = hidden;
        Ok(())
    }

    pub(crate) fn apply(&mut self, control: &Control) {
        match control {
            Control::Trim(floor) => {
                if *floor > self.floor {
                    self.floor = *floor;
                    self.deleted = self.deleted.split_off(floor);
                }
            }
            Control::Delete(ids) => {
                self.deleted
                    .extend(ids.iter().filter(|id| **id >= self.floor));
            }
            Control::GroupOp(_) | Control::GroupSnapshot(_) => {}
        }
    }

    /// Live events with ids greater than `cursor` (a group's lag).
    pub(crate) fn count_after(&self, cursor: EventId) -> Result<u64> {
        let from = cursor.successor().unwrap_or(EventId::MAX).max(self.floor);
        let mut n = 0;
        for seg in &self.segments {
            let (Some(first), Some(last)) = (seg.first_id, seg.last_id) else {
                continue;
            };
            if last < from {
                continue;
            }
            let below = seg.count_below(from)?;
            let deleted = self.deleted.range(from.max(first)..=last).count() as u64;
            // A given index file's counts are taken as they are (a stale
            // one is rebuilt only when it cannot be right): a count that
            // disagrees with the entries must not wrap around.
            n += seg.count.saturating_sub(below).saturating_sub(deleted);
        }
        Ok(n)
    }

    pub(crate) fn info(&self, name: &StreamName) -> Result<StreamInfo> {
        let first_id = if self.length() == 0 {
            None
        } else {
            self.first_live()?
        };
        Ok(StreamInfo {
            name: name.clone(),
            length: self.length(),
            first_id,
            last_id: self.last_id,
            bytes: self.segments.iter().map(|s| s.event_bytes).sum(),
            segments: self.segments.len() as u64,
            partitions: 1,
            added: self.added,
        })
    }

    fn first_live(&self) -> Result<Option<EventId>> {
        let snapshot = self.snapshot(self.floor, EventId::MAX);
        let mut out = None;
        snapshot.scan_forward(|e| {
            out = Some(e.id());
            false
        })?;
        Ok(out)
    }

    /// Whether a segment holds an event with exactly this id (deletions
    /// aside; reads the files under the caller's lock).
    pub(crate) fn holds(&self, id: EventId) -> Result<bool> {
        let mut held = false;
        self.snapshot(id, id).scan_forward(|e| {
            held = e.id() == id;
            false
        })?;
        Ok(held)
    }

    /// Copies what a read of `[start, end]` needs, so the lock can be
    /// released before any file is touched.
    pub(crate) fn snapshot(&self, start: EventId, end: EventId) -> Snapshot {
        let start = start.max(self.floor);
        let segments = self
            .segments
            .iter()
            .filter(|s| {
                s.count > 0
                    && s.first_id.is_some_and(|f| f <= end)
                    && s.last_id.is_some_and(|l| l >= start)
            })
            .cloned()
            .collect();
        let deleted = if start <= end {
            self.deleted
                .range((Bound::Included(start), Bound::Included(end)))
                .copied()
                .collect()
        } else {
            BTreeSet::new()
        };
        Snapshot {
            segments,
            start,
            end,
            deleted,
        }
    }

    /// The id of the first event kept when keeping the newest `keep` live
    /// events; `None` when nothing needs to go. Whole segments are skipped
    /// by their counts; within the target segment the sparse index jumps
    /// close to the event when no deletion complicates the count.
    pub(crate) fn floor_for_maxlen(&self, keep: u64) -> Result<Option<EventId>> {
        let length = self.length();
        if length <= keep {
            return Ok(None);
        }
        let mut skip = length - keep;
        for seg in &self.segments {
            let (Some(first), Some(last)) = (seg.first_id, seg.last_id) else {
                continue;
            };
            let below = seg.count_below(self.floor)?;
            let deleted_in = self.deleted.range(first..=last).count() as u64;
            let live = seg.count.saturating_sub(below).saturating_sub(deleted_in);
            if skip >= live {
                skip -= live;
                continue;
            }
            let (from, mut ordinal, target) = if deleted_in == 0 {
                let target = below + skip;
                let i = seg.index.partition_point(|e| e.ordinal <= target);
                let entry = seg.index[i.saturating_sub(1)];
                (entry.offset, entry.ordinal, Some(target))
            } else {
                let entry = seg
                    .seek(self.floor)
                    .map_or((seg.len, 0), |e| (e.offset, e.ordinal));
                (entry.0, entry.1, None)
            };
            let mut reader = seg.reader(from);
            while let Some((_, body)) = reader.next_frame()? {
                if !is_event(&body) {
                    continue;
                }
                let id = super::format::event_id(&body);
                match target {
                    Some(t) => {
                        if ordinal == t {
                            return Ok(Some(id));
                        }
                    }
                    None => {
                        if id >= self.floor && !self.deleted.contains(&id) {
                            if skip == 0 {
                                return Ok(Some(id));
                            }
                            skip -= 1;
                        }
                    }
                }
                ordinal += 1;
            }
        }
        // Everything goes: the floor moves past the last id.
        Ok(Some(self.last_id.successor().unwrap_or(EventId::MAX)))
    }
}

/// A read's private copy of the stream's layout.
#[derive(Debug)]
pub(crate) struct Snapshot {
    segments: Vec<Segment>,
    start: EventId,
    end: EventId,
    deleted: BTreeSet<EventId>,
}

impl Snapshot {
    fn live(&self, id: EventId) -> bool {
        id >= self.start && id <= self.end && !self.deleted.contains(&id)
    }

    /// Visits live events in `[start, end]` oldest first until `visit`
    /// returns false.
    pub(crate) fn scan_forward(&self, mut visit: impl FnMut(Event) -> bool) -> Result<()> {
        if self.start > self.end {
            return Ok(());
        }
        for seg in &self.segments {
            let from = seg.seek(self.start).map_or(seg.len, |e| e.offset);
            let mut reader = seg.reader(from);
            while let Some((_, body)) = reader.next_frame()? {
                if !is_event(&body) {
                    continue;
                }
                let event = Event::from_body(body)?;
                let id = event.id();
                if id > self.end {
                    return Ok(());
                }
                if self.live(id) && !visit(event) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Visits live events newest first until `visit` returns false. Walks
    /// the sparse index backwards one block at a time.
    pub(crate) fn scan_backward(&self, mut visit: impl FnMut(Event) -> bool) -> Result<()> {
        if self.start > self.end {
            return Ok(());
        }
        let mut block = Vec::new();
        for seg in self.segments.iter().rev() {
            let last_block = seg.index.partition_point(|e| e.id <= self.end);
            for b in (0..last_block).rev() {
                let from = seg.index[b].offset;
                let to = seg.index.get(b + 1).map_or(seg.len, |e| e.offset);
                let mut reader = seg.reader(from);
                block.clear();
                while let Some((offset, body)) = reader.next_frame()? {
                    if offset >= to {
                        break;
                    }
                    if !is_event(&body) {
                        continue;
                    }
                    let event = Event::from_body(body)?;
                    if self.live(event.id()) {
                        block.push(event);
                    }
                }
                while let Some(event) = block.pop() {
                    if !visit(event) {
                        return Ok(());
                    }
                }
                if seg.index[b].id < self.start {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Runs `query` (bounds already folded into the snapshot).
    pub(crate) fn read(&self, query: &ReadQuery) -> Result<Vec<Event>> {
        let mut out = Vec::with_capacity(query.count.min(1024));
        let visit = |e: Event| {
            if query.matches(&e) {
                out.push(e);
            }
            out.len() < query.count
        };
        if query.count == 0 {
            return Ok(Vec::new());
        }
        if query.reverse {
            self.scan_backward(visit)?;
        } else {
            self.scan_forward(visit)?;
        }
        Ok(out)
    }
}
