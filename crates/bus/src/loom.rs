//! The synchronization types the concurrent core is written against.
//!
//! Normally these are `std`'s. Built with `RUSTFLAGS="--cfg loom"` they are
//! the [loom](https://docs.rs/loom) model checker's, so `tests/loom.rs` can
//! explore every interleaving of publishers and subscribers.

#[cfg(loom)]
pub(crate) use loom::{
    cell::UnsafeCell,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard,
    },
};

#[cfg(not(loom))]
pub(crate) use std::sync::{
    atomic::{AtomicU64, AtomicUsize, Ordering},
    Arc, Mutex, MutexGuard,
};

/// `std::cell::UnsafeCell` with loom's closure-based access API, so every
/// access is visible to the model checker under `cfg(loom)`.
#[cfg(not(loom))]
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    pub(crate) const fn new(value: T) -> Self {
        Self(std::cell::UnsafeCell::new(value))
    }

    #[inline]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    #[inline]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

/// Locks `mutex`, ignoring poisoning: every critical section in this crate
/// leaves its data consistent before anything in it can panic.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// One step of a bounded busy wait: a CPU hint for the first iterations,
/// then yielding the thread. Under loom every step yields, which is what
/// lets the model checker run the thread being waited for.
#[inline]
pub(crate) fn backoff(step: &mut u32) {
    #[cfg(loom)]
    {
        *step = step.wrapping_add(1);
        loom::thread::yield_now();
    }
    #[cfg(not(loom))]
    {
        if *step < 64 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
        *step = step.saturating_add(1);
    }
}

/// Runs a future to completion on the current thread, parking it while the
/// future is pending.
#[cfg(loom)]
pub(crate) fn block_on<F: std::future::Future>(future: F) -> F::Output {
    loom::future::block_on(future)
}

/// Runs a future to completion on the current thread, parking it while the
/// future is pending.
#[cfg(not(loom))]
pub(crate) fn block_on<F: std::future::Future>(future: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};

    struct Unpark(std::thread::Thread);

    impl Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }

        fn wake_by_ref(self: &std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }

    thread_local! {
        // One waker per thread, made on first use, so blocking receives do
        // not allocate.
        static WAKER: Waker = Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    }

    let mut future = std::pin::pin!(future);
    WAKER.with(|waker| {
        let mut cx = Context::from_waker(waker);
        loop {
            if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
                return output;
            }
            // A stale unpark token only costs one more poll.
            std::thread::park();
        }
    })
}

/// Pads and aligns a value to its own cache line pair, so a counter written
/// by one core does not slow down readers of its neighbours.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct CachePadded<T>(pub(crate) T);

impl<T> std::ops::Deref for CachePadded<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        &self.0
    }
}
