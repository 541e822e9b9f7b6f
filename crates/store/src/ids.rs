//! Id assignment shared by every backend: explicit ids are checked against
//! the stream's [`IdClock`] before anything is written, then every event of
//! the batch gets its id.

use busbar_event::{EventBatch, EventId, IdClock, StreamName};

use crate::{Result, StoreError};

/// Checks explicit ids against `clock` without changing it, so a batch with
/// one bad id is refused whole.
pub(crate) fn check_ids(
    stream: &StreamName,
    clock: IdClock,
    batch: &EventBatch,
    now: u64,
) -> Result<()> {
    if !batch.has_explicit_ids() {
        return Ok(());
    }
    let mut probe = clock;
    for requested in batch.requested_ids() {
        match requested {
            Some(id) => {
                probe.accept(id).map_err(|e| StoreError::IdNotGreater {
                    stream: stream.clone(),
                    requested: e.requested,
                    last: e.last,
                })?;
            }
            None => {
                probe.next_at(now);
            }
        }
    }
    Ok(())
}

/// Assigns ids from `clock` (already checked with [`check_ids`]).
pub(crate) fn assign_ids(clock: &mut IdClock, batch: &mut EventBatch, now: u64) -> Vec<EventId> {
    let mut ids = Vec::with_capacity(batch.len());
    batch.assign(now, |requested| {
        let id = match requested {
            Some(id) => clock.accept(id).unwrap_or_else(|_| clock.next_at(now)),
            None => clock.next_at(now),
        };
        ids.push(id);
        id
    });
    ids
}
