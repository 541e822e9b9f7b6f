//! Readiness: whether the daemon should receive traffic, and why not.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

/// One reason the daemon is not ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum NotReady {
    /// Recovery of the data directory is still running.
    Recovering,
    /// The daemon is draining before exit.
    ShuttingDown,
    /// A probe write to the data directory failed.
    StorageNotWritable {
        /// The operating system's error.
        error: String,
    },
    /// Free space on the data directory's disk is below the threshold.
    DiskNearlyFull {
        /// Bytes free.
        free_bytes: u64,
        /// The threshold.
        min_free_bytes: u64,
    },
    /// The store's disk is full: publishes are refused (`storage_full`)
    /// until space returns, which the store notices by itself. Reads keep
    /// working, and consumers too while the store's space reserve lasts.
    StorageFull {
        /// The file whose write failed.
        path: String,
        /// Since when (ms since the epoch).
        since_ms: u64,
    },
    /// The store's writes fail for another reason (`storage_error`);
    /// each write tries again.
    StorageFailing {
        /// What failed (no payloads).
        error: String,
        /// Since when (ms since the epoch).
        since_ms: u64,
    },
}

impl NotReady {
    /// The reason a store's write health gives, if it is not `Ok`.
    pub fn from_write_health(health: busbar_store::WriteHealth) -> Option<NotReady> {
        match health {
            busbar_store::WriteHealth::Full { path, since_ms } => Some(NotReady::StorageFull {
                path: path.display().to_string(),
                since_ms,
            }),
            busbar_store::WriteHealth::Failed { reason, since_ms } => {
                Some(NotReady::StorageFailing {
                    error: reason,
                    since_ms,
                })
            }
            _ => None,
        }
    }
}

/// Tracks readiness state.
#[derive(Debug)]
pub struct Readiness {
    data_dir: Option<PathBuf>,
    min_free_bytes: u64,
    recovering: AtomicBool,
    shutting_down: AtomicBool,
}

impl Readiness {
    /// Readiness for a daemon storing under `data_dir` (None: memory).
    pub fn new(data_dir: Option<PathBuf>, min_free_bytes: u64) -> Self {
        Readiness {
            data_dir,
            min_free_bytes,
            recovering: AtomicBool::new(false),
            shutting_down: AtomicBool::new(false),
        }
    }

    /// Marks recovery as running or done.
    pub fn set_recovering(&self, on: bool) {
        self.recovering.store(on, Ordering::Release);
    }

    /// Marks the daemon as draining.
    pub fn set_shutting_down(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    /// Whether the daemon is draining.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// Free bytes on the data directory's disk (`None` for a store without
    /// one, or when the system cannot tell).
    pub fn free_space(&self) -> Option<u64> {
        fs2::available_space(self.data_dir.as_ref()?).ok()
    }

    /// Every reason the daemon is not ready (empty: ready). Does a small
    /// probe write, so call it per readiness request, not per event.
    pub fn check(&self) -> Vec<NotReady> {
        let mut reasons = Vec::new();
        if self.recovering.load(Ordering::Acquire) {
            reasons.push(NotReady::Recovering);
        }
        if self.is_shutting_down() {
            reasons.push(NotReady::ShuttingDown);
        }
        if let Some(dir) = &self.data_dir {
            if let Err(e) = probe_write(dir) {
                reasons.push(NotReady::StorageNotWritable {
                    error: e.to_string(),
                });
            }
            if let Ok(free) = fs2::available_space(dir) {
                if free < self.min_free_bytes {
                    reasons.push(NotReady::DiskNearlyFull {
                        free_bytes: free,
                        min_free_bytes: self.min_free_bytes,
                    });
                }
            }
        }
        reasons
    }
}

fn probe_write(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(".ready-probe");
    std::fs::write(&probe, b"ok")?;
    std::fs::remove_file(probe)
}
