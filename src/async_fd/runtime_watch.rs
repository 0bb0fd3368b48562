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
//!
//! Every error that means "the runtime is gone" leaves through
//! [`driver_error`], so that it holds a [`RuntimeShutdown`] a caller can
//! recognise.

use std::error::Error;
use std::fmt;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use super::fd::Fd;
use super::sync::AtomicBool;
use super::Protocol;

/// The error inside every [`io::Error`] that an
/// [`AsyncEventFd`](crate::AsyncEventFd) returns because the runtime it is
/// registered with has shut down (or is shutting down).
///
/// Such an error has kind [`io::ErrorKind::Other`];
/// [`io::Error::get_ref`] downcasts to `RuntimeShutdown`. It comes from every
/// method that needs the runtime: `read`, `add` (waiting or not),
/// `poll_read`, `poll_add`, the `Stream`, and registering with a runtime
/// that is gone. `try_read` and `try_add` never need the runtime (each is
/// one syscall), so they keep working.
///
/// # Examples
///
/// ```
/// use async_eventfd::{AsyncEventFd, RuntimeShutdown};
///
/// # fn main() -> std::io::Result<()> {
/// let rt = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
/// let efd = AsyncEventFd::new_in(rt.handle())?;
/// drop(rt);
/// let err = futures::executor::block_on(efd.add(1)).unwrap_err();
/// assert_eq!(err.kind(), std::io::ErrorKind::Other);
/// assert!(err.get_ref().and_then(|e| e.downcast_ref::<RuntimeShutdown>()).is_some());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeShutdown;

impl fmt::Display for RuntimeShutdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the tokio runtime the eventfd is registered with has shut down")
    }
}

impl Error for RuntimeShutdown {}

/// An `io::Error` of kind `Other` holding a [`RuntimeShutdown`].
pub(super) fn shutdown_error() -> io::Error {
    io::Error::other(RuntimeShutdown)
}

/// Recognises tokio's "runtime is shutting down" errors, the only errors its
/// readiness calls return and the only registration errors without an OS
/// error code, and turns them into [`shutdown_error`]; passes the rest
/// through.
pub(super) fn driver_error(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::Other && e.raw_os_error().is_none() {
        shutdown_error()
    } else {
        e
    }
}

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

impl<F: Fd> Protocol<F> {
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
        let Poll::Ready(answer) = self.fd.poll_shutdown(&mut Context::from_waker(&waker)) else {
            return Ok(());
        };
        // Not parked: ask again next time.
        self.runtime_watch.woken.store(true, Ordering::Release);
        answer.map_err(driver_error)
    }
}
