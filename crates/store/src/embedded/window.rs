//! The duplicate window on the writer thread ([`crate::Dedup`]): a keyed
//! batch is planned against its stream's window, its new events written
//! like any other, and their keys remembered once the write succeeded. A
//! stream's window is rebuilt from its log before first use after an open
//! or a recovery, so what it remembers is what the log holds.

use busbar_event::{now_ms, Event, EventBatch, EventId, StreamName};

use super::stream::StreamHandle;
use super::writer::Writer;
use crate::{Appended, ReadQuery, Result};

/// Events read back per step while rebuilding a window.
const REBUILD_CHUNK: usize = 1024;

impl Writer {
    /// Appends a batch that carries idempotency keys, through the stream's
    /// window (`dedup`: answer repeats instead of storing them).
    pub(crate) fn append_keyed(
        &mut self,
        name: &StreamName,
        mut batch: EventBatch,
        dedup: bool,
    ) -> Result<Appended> {
        let deduper = self.dedup.clone();
        let now = now_ms();
        let ws = self.stream_for_append(name)?;
        if ws.window_stale {
            ws.window = deduper.rebuild(newest_first(&ws.handle), now);
            ws.window_stale = false;
        }
        // Taken out while the events are written (the write may roll or
        // recover the stream); a recovery meanwhile marks it stale.
        let mut window = std::mem::take(&mut ws.window);
        let plan = deduper.plan(&mut window, &mut batch, dedup, now);
        let stored = self.append_events(name, batch, now);
        let appended = stored.map(|ids| deduper.finish(name, &mut window, plan, ids, now));
        if let Some(ws) = self.streams.get_mut(name) {
            ws.window = window;
        }
        appended
    }
}

/// A stream's events, newest first, read lazily from what readers see. A
/// read that fails ends it, said in the log: the window then remembers
/// what was read before.
fn newest_first(handle: &StreamHandle) -> impl Iterator<Item = Event> + '_ {
    let mut end = Some(EventId::MAX);
    let mut chunk = Vec::new().into_iter();
    std::iter::from_fn(move || loop {
        if let Some(e) = chunk.next() {
            return Some(e);
        }
        let upto = end.take()?;
        let query = ReadQuery::range(EventId::ZERO, upto, REBUILD_CHUNK).reversed();
        let snapshot = handle.state.read().snapshot(EventId::ZERO, upto);
        match snapshot.read(&query) {
            Ok(events) => {
                end = events.last().and_then(|e| e.id().predecessor());
                if events.len() < REBUILD_CHUNK {
                    end = None;
                }
                chunk = events.into_iter();
            }
            Err(e) => {
                tracing::error!(stream = %handle.name, error = %e, "cannot read the log back to rebuild the duplicate window; keys older than the failed read are forgotten");
                return None;
            }
        }
    })
}
