//! Id assignment shared by every backend: explicit ids are checked against
//! the stream's [`IdClock`] before anything is written, then every event of
//! the batch gets its id.

use busbar_event::{EventBatch, EventId, IdClock, StreamName};

use crate::{Result, StoreError};

/// Checks explicit ids against `clock` without changing it, so a batch with
/// one bad id is refused whole. Also refuses a batch that would need an id
/// past [`EventId::MAX`] (a stream whose last id is the largest there is,
/// through an explicit id): the clock has no greater id to give, and ids
/// must strictly increase.
pub(crate) fn check_ids(
    stream: &StreamName,
    clock: IdClock,
    batch: &EventBatch,
    now: u64,
) -> Result<()> {
    // Below the last millisecond a batch cannot run out of ids.
    if !batch.has_explicit_ids() && clock.last().ms < u64::MAX {
        return Ok(());
    }
    let not_greater = |requested, last| StoreError::IdNotGreater {
        stream: stream.clone(),
        requested,
        last,
    };
    let mut probe = clock;
    for requested in batch.requested_ids() {
        match requested {
            Some(id) => {
                probe
                    .accept(id)
                    .map_err(|e| not_greater(e.requested, e.last))?;
            }
            None if probe.last() == EventId::MAX => {
                return Err(not_greater(EventId::MAX, EventId::MAX));
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
