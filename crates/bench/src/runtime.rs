//! The client runtime every scenario runs its load on, and the way a run
//! ends early on SIGINT or SIGTERM: the scenario's future is dropped, so
//! what it set up (Redis' settings, the daemon) is put back or stopped by
//! its `Drop`.

use std::future::Future;

use tokio::runtime::{Builder, Runtime};
use tokio::signal::unix::{signal, SignalKind};

use crate::BenchError;

/// One thread driving every connection when `threads` is 1, else a
/// runtime with that many workers.
pub(crate) fn runtime(threads: usize) -> Result<Runtime, BenchError> {
    if threads <= 1 {
        Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(BenchError::Runtime)
    } else {
        multi_thread(threads)
    }
}

/// `threads` workers, beside the thread that waits for them.
pub(crate) fn multi_thread(threads: usize) -> Result<Runtime, BenchError> {
    Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .map_err(BenchError::Runtime)
}

/// Runs `bench` to its end, or until SIGINT or SIGTERM:
/// [`BenchError::Interrupted`].
pub(crate) fn until_interrupted<T>(
    runtime: &Runtime,
    bench: impl Future<Output = Result<T, BenchError>>,
) -> Result<T, BenchError> {
    runtime.block_on(async {
        let mut term = signal(SignalKind::terminate())
            .map_err(|e| BenchError::io("cannot handle SIGTERM", e))?;
        tokio::select! {
            result = bench => result,
            _ = tokio::signal::ctrl_c() => Err(BenchError::Interrupted),
            _ = term.recv() => Err(BenchError::Interrupted),
        }
    })
}
