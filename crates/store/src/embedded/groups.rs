//! Consumer groups on the writer thread: [`WriterHost`] gives the shared
//! group operations (`crate::group::host`) the stream's state, its events,
//! its dead-letter stream and a way to log ops in the active segment.
//!
//! A group op is logged as a control record in the stream's active segment,
//! so it is ordered and group-committed with the stream's appends. Each new
//! segment starts with a snapshot of every group, so recovery needs only
//! the active segment: the snapshot, then the ops after it.
//!
//! Dead-lettering appends to `<stream>:dlq` first (fsynced under `always`)
//! and logs the removal from the pending list after; a crash between the two
//! is repaired on open by [`reconcile_dead_letters`].

use std::collections::BTreeMap;

use busbar_event::{Event, EventBatch, EventId, StreamName};
use parking_lot::RwLockWriteGuard;

use super::files::WStream;
use super::format::Control;
use super::stream::StreamState;
use super::writer::{Finish, GroupRun, Writer};
use crate::group::host::GroupHost;
use crate::group::state::apply;
use crate::group::{dlq_stream, encode_op, DlqOrigin, GroupOp, GroupState};
use crate::{Durability, ReadQuery, Result, StoreError};

static NO_GROUPS: BTreeMap<String, GroupState> = BTreeMap::new();

/// The writer seen from one stream's group operations.
pub(crate) struct WriterHost<'a> {
    writer: &'a mut Writer,
    stream: StreamName,
    state: Option<RwLockWriteGuard<'a, StreamState>>,
}

impl Writer {
    /// Runs a group operation with the stream's state locked for writing.
    /// A stream broken by an earlier failure is recovered first; when that
    /// fails, the operation sees no stream and fails.
    pub(crate) fn run_group(&mut self, stream: StreamName, run: GroupRun) -> Finish {
        let usable = self.streams.contains_key(&stream) && self.existing(&stream).is_ok();
        let handle = usable
            .then(|| self.streams.get(&stream).map(|ws| ws.handle.clone()))
            .flatten();
        let state = handle.as_ref().map(|h| h.state.write());
        let mut host = WriterHost {
            writer: self,
            stream,
            state,
        };
        run(&mut host)
    }
}

impl WriterHost<'_> {
    fn state(&self) -> Result<&StreamState> {
        self.state
            .as_deref()
            .ok_or_else(|| StoreError::NoSuchStream {
                stream: self.stream.clone(),
            })
    }

    fn check(&self) -> Result<()> {
        if self.writer.closed {
            return Err(StoreError::Closed);
        }
        self.state().map(|_| ())
    }

    /// The stream's last id (appends not yet published included).
    pub(crate) fn last_id(&self) -> Result<EventId> {
        self.check()?;
        self.writer
            .streams
            .get(&self.stream)
            .map(|ws| ws.clock.last())
            .ok_or_else(|| StoreError::NoSuchStream {
                stream: self.stream.clone(),
            })
    }
}

fn first_events(state: &StreamState, from: EventId, count: usize) -> Result<Vec<Event>> {
    let snapshot = state.snapshot(from, EventId::MAX);
    snapshot.read(&ReadQuery::all(count))
}

impl GroupHost for WriterHost<'_> {
    fn stream(&self) -> &StreamName {
        &self.stream
    }

    fn groups(&self) -> &BTreeMap<String, GroupState> {
        self.state.as_deref().map_or(&NO_GROUPS, |s| &s.groups)
    }

    fn events_after(&mut self, after: EventId, count: usize) -> Result<Vec<Event>> {
        self.check()?;
        match after.successor() {
            Some(from) => first_events(self.state()?, from, count),
            None => Ok(Vec::new()),
        }
    }

    fn event(&mut self, id: EventId) -> Result<Option<Event>> {
        self.check()?;
        let state = self.state()?;
        let snapshot = state.snapshot(id, id);
        Ok(snapshot.read(&ReadQuery::all(1))?.pop())
    }

    fn append_dead_letters(&mut self, batch: EventBatch) -> Result<Vec<EventId>> {
        self.check()?;
        let dlq = dlq_stream(&self.stream)?;
        let ids = self.writer.append(&dlq, batch, false)?.ids;
        if self.writer.config.durability == Durability::Always {
            // Durable before the removal from the pending list is logged:
            // a crash in between leaves the entry in the dead-letter stream
            // and still pending, which the next open reconciles. A failed
            // sync fails this operation and breaks the streams it concerns,
            // which the commit recovers. The segment first, then the names
            // of any new files, as at every commit.
            self.writer.sync_stream(&dlq)?;
            self.writer.sync_dirs()?;
        }
        Ok(ids)
    }

    fn apply(&mut self, op: GroupOp) -> Result<()> {
        self.check()?;
        let mut bytes = std::mem::take(&mut self.writer.scratch);
        bytes.clear();
        encode_op(&op, &mut bytes);
        let framed = Control::GroupOp(bytes).encode();
        let ws =
            self.writer
                .streams
                .get_mut(&self.stream)
                .ok_or_else(|| StoreError::NoSuchStream {
                    stream: self.stream.clone(),
                })?;
        let logged = log_record(ws, &framed);
        if ws.active.broken {
            self.writer.broken_in_group.push(self.stream.clone());
        }
        self.writer.note(logged)?;
        if let Some(state) = self.state.as_deref_mut() {
            apply(&mut state.groups, &op);
        }
        Ok(())
    }
}

fn log_record(ws: &mut WStream, framed: &[u8]) -> Result<()> {
    ws.active.write(framed)?;
    ws.dirty = true;
    ws.unsynced = true;
    Ok(())
}

/// Completes dead-letter moves a crash interrupted: an entry found in
/// `<stream>:dlq` after a group's last recorded move whose original is still
/// pending in that group is removed from the pending list now. Runs on open,
/// before the writer starts.
pub(crate) fn reconcile_dead_letters(streams: &mut BTreeMap<StreamName, WStream>) -> Result<()> {
    let names: Vec<StreamName> = streams.keys().cloned().collect();
    for name in names {
        let Ok(dlq) = dlq_stream(&name) else { continue };
        let Some(dlq_handle) = streams.get(&dlq).map(|ws| ws.handle.clone()) else {
            continue;
        };
        let Some(ws) = streams.get_mut(&name) else {
            continue;
        };
        let handle = ws.handle.clone();
        let mut state = handle.state.write();
        let watermarks: Vec<(String, EventId)> = state
            .groups
            .iter()
            .map(|(g, s)| (g.clone(), s.dlq_watermark))
            .collect();
        for (group, watermark) in watermarks {
            let Some(from) = watermark.successor() else {
                continue;
            };
            let entries = {
                let dlq_state = dlq_handle.state.read();
                first_events(&dlq_state, from, usize::MAX)?
            };
            for entry in entries {
                let Some(origin) = DlqOrigin::of(&entry) else {
                    continue;
                };
                let pending = state
                    .groups
                    .get(&group)
                    .is_some_and(|g| g.pending.contains_key(&origin.original_id));
                if origin.group != group || origin.stream != name.as_str() || !pending {
                    continue;
                }
                tracing::warn!(
                    stream = %name,
                    group = %group,
                    id = %origin.original_id,
                    "completing a dead-letter move interrupted by a crash"
                );
                let op = GroupOp::Remove {
                    group: group.clone(),
                    ids: vec![origin.original_id],
                    dlq_id: Some(entry.id()),
                };
                let mut bytes = Vec::new();
                encode_op(&op, &mut bytes);
                log_record(ws, &Control::GroupOp(bytes).encode())?;
                apply(&mut state.groups, &op);
            }
        }
        if ws.unsynced {
            ws.active.sync()?;
            ws.unsynced = false;
            ws.dirty = false;
            // The records above extend the active segment readers see.
            if let Some(last) = state.segments.last_mut() {
                last.len = ws.active.len;
            }
        }
    }
    Ok(())
}
