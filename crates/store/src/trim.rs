//! What a [`Trim`] means in ids, shared by every backend.

use busbar_event::{now_ms, EventId};

use crate::Trim;

/// The id below which `trim` removes events, for id-based trims.
pub(crate) fn trim_floor(trim: Trim) -> Option<EventId> {
    match trim {
        Trim::MinId { id, .. } => Some(id),
        Trim::MaxAge { age, .. } => Some(EventId::new(
            now_ms().saturating_sub(age.as_millis() as u64),
            0,
        )),
        Trim::MaxLen { .. } | Trim::MaxBytes { .. } => None,
    }
}

/// Whether `trim` may keep more than it says so that only whole segments go
/// (`MaxBytes` always does).
pub(crate) fn is_approx(trim: Trim) -> bool {
    match trim {
        Trim::MaxLen { approx, .. } | Trim::MinId { approx, .. } | Trim::MaxAge { approx, .. } => {
            approx
        }
        Trim::MaxBytes { .. } => true,
    }
}
