//! Knowing, for one atomic load, that the runtime is gone.
//!
//! After the runtime shuts down, `add` and a speculative read must fail
//! rather than work on an fd whose reactor is gone (their syscalls would still
//! work). Asking tokio (`poll_write_ready`) takes a lock, a cost every `add`
//! would pay. Instead a waker ([`RuntimeWatch`]) waits in the registration's
//! write slot, which nothing else uses and which, with `READABLE` interest
//! only, only the driver's shutdown (or the registration's end) wakes; until
//! then, checking is one atomic load. Woken means "ask tokio again", so a wake
//! for any other reason costs one question, never a wrong answer. A new fd
//! starts woken: its first check asks, and parks the waker.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use super::AsyncEventFd;

/// The waker parked in the registration's write slot: woken means the runtime
/// may have shut down since tokio was last asked.
pub(super) struct RuntimeWatch {
    woken: AtomicBool,
}

impl RuntimeWatch {
    /// A watch for a new registration: woken, so the first check asks tokio.
    pub(super) fn new() -> Arc<RuntimeWatch> {
        Arc::new(RuntimeWatch {
            woken: AtomicBool::new(true),
        })
    }
}

impl Wake for RuntimeWatch {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
    }
}

impl AsyncEventFd {
    /// Fails once the runtime's I/O driver has shut down; otherwise returns at
    /// once. Usually one atomic load.
    pub(super) fn check_runtime(&self) -> io::Result<()> {
        if self.runtime_watch.woken.load(Ordering::Acquire) {
            self.recheck_runtime()
        } else {
            Ok(())
        }
    }

    /// Asks tokio whether the driver has shut down, and parks the
    /// [`RuntimeWatch`] waker to hear of it if not yet.
    #[cold]
    fn recheck_runtime(&self) -> io::Result<()> {
        // Cleared before asking: a shutdown that lands after the question
        // wakes the watch, which sets it again.
        self.runtime_watch.woken.store(false, Ordering::Release);
        let waker = Waker::from(Arc::clone(&self.runtime_watch));
        // The registration has READABLE interest only, so its write readiness
        // is never set: `poll_write_ready` returns `Pending` and parks the
        // waker in the write slot, or returns the driver's error once it has
        // shut down.
        let Poll::Ready(answer) = self
            .inner
            .poll_write_ready(&mut Context::from_waker(&waker))
        else {
            return Ok(());
        };
        // Not parked: ask again next time.
        self.runtime_watch.woken.store(true, Ordering::Release);
        answer.map(drop)
    }
}
