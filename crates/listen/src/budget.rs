//! The process's connection budget: file descriptors are shared by every
//! listener and the store, so a flood on one transport must not take the
//! descriptors the others (and the store's segment files) need. The
//! budget is the open-file limit less a reserve for the store and the
//! rest of the process, split in equal [`Budget::shares`], one per
//! listener: a flood spends its listener's share and no more.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Descriptors kept out of the connection budget by default: segment and
/// index files, the command socket, logs, DNS and the like.
pub const DEFAULT_FD_RESERVE: usize = 256;

/// How many connections every listener together may hold. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Budget {
    slots: Arc<Semaphore>,
    max: usize,
}

/// One connection's share of the [`Budget`], returned when dropped.
#[derive(Debug)]
pub struct BudgetPermit(#[allow(dead_code)] OwnedSemaphorePermit);

impl Budget {
    /// A budget of `max` connections (at least one).
    pub fn new(max: usize) -> Self {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        Budget {
            slots: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// The budget the open-file limit allows: the soft `RLIMIT_NOFILE`
    /// minus `reserve` descriptors kept for the store and the rest, capped
    /// at `cap` (`None`: no cap). Returns the budget and the limit it was
    /// computed from.
    pub fn from_open_file_limit(reserve: usize, cap: Option<usize>) -> (Budget, u64) {
        let limit = open_file_limit();
        let by_fds = usize::try_from(limit)
            .unwrap_or(usize::MAX)
            .saturating_sub(reserve)
            .max(1);
        let max = cap.map_or(by_fds, |c| c.min(by_fds));
        (Budget::new(max), limit)
    }

    /// This budget split in `parts` budgets of equal size (at least one
    /// slot each), one per listener: together they hold no more than this
    /// one, and none can take another's slots.
    pub fn shares(&self, parts: usize) -> Vec<Budget> {
        let parts = parts.max(1);
        (0..parts).map(|_| Budget::new(self.max / parts)).collect()
    }

    /// Takes a slot if one is free.
    pub fn try_take(&self) -> Option<BudgetPermit> {
        self.slots
            .clone()
            .try_acquire_owned()
            .ok()
            .map(BudgetPermit)
    }

    /// The size of the budget.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Slots free now.
    pub fn available(&self) -> usize {
        self.slots.available_permits()
    }
}

/// The soft open-file limit (`RLIMIT_NOFILE`), or 1024 where it cannot be
/// read.
pub fn open_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 1024;
    }
    limit.rlim_cur
}

/// A warning logged at most once per interval, with how many were
/// suppressed since the last one (a flood must not flood the log).
#[derive(Debug)]
pub(crate) struct Throttled {
    every: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl Throttled {
    pub(crate) fn new(every: Duration) -> Self {
        Throttled {
            every,
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(suppressed)` when a line may be written now.
    pub(crate) fn ready(&self) -> Option<u64> {
        let mut state = self.state.lock();
        let now = Instant::now();
        match state.0 {
            Some(last) if now.duration_since(last) < self.every => {
                state.1 += 1;
                None
            }
            _ => {
                let suppressed = std::mem::take(&mut state.1);
                state.0 = Some(now);
                Some(suppressed)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_shared_and_returned() {
        let b = Budget::new(2);
        let c = b.clone();
        let one = b.try_take().unwrap();
        let _two = c.try_take().unwrap();
        assert!(b.try_take().is_none());
        drop(one);
        assert_eq!(c.available(), 1);
        let (from_limit, limit) = Budget::from_open_file_limit(16, Some(8));
        assert!(limit > 16);
        assert_eq!(from_limit.max(), 8);
        let shares = from_limit.shares(3);
        assert_eq!(
            shares.iter().map(Budget::max).collect::<Vec<_>>(),
            [2, 2, 2]
        );
        let _taken: Vec<_> = (0..2).filter_map(|_| shares[0].try_take()).collect();
        assert!(shares[0].try_take().is_none());
        assert!(
            shares[1].try_take().is_some(),
            "one share spent, the others whole"
        );
    }

    #[test]
    fn throttled_lines_count_what_they_suppress() {
        let t = Throttled::new(Duration::from_secs(60));
        assert_eq!(t.ready(), Some(0));
        assert_eq!(t.ready(), None);
        assert_eq!(t.ready(), None);
        let t2 = Throttled::new(Duration::ZERO);
        assert_eq!(t2.ready(), Some(0));
        assert_eq!(t2.ready(), Some(0));
    }
}
