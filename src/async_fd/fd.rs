//! The seam where the wake protocols meet the fd: [`Fd`], the counter's two
//! syscalls and the reactor's waits, as the protocols use them.
//!
//! In the library the fd is [`Registered`]: an `EventFd` on tokio's
//! `AsyncFd`, each method one call into tokio or the kernel. The loom models
//! (`loom_tests.rs`) put a modelled counter and reactor behind the same trait
//! and run the production protocols (`reader.rs`, `writer.rs`,
//! `runtime_watch.rs`) on it. Everything above this trait is the code under
//! proof; everything below it is trusted (tokio, the kernel).

use std::future::Future;
use std::io;
use std::os::fd::OwnedFd;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::unix::{AsyncFd, AsyncFdReadyGuard};
use tokio::io::Interest;
use tokio::runtime::Handle;
use tokio::task::coop::RestoreOnPending;
use tokio::task::JoinHandle;

use super::runtime_watch::shutdown_error;
use crate::EventFd;

/// The fd under the wake protocols. Errors of the reactor's waits are
/// tokio's, unmapped: the protocols pass them through `driver_error`.
pub(super) trait Fd {
    /// A reported read readiness, until cleared.
    type ReadGuard<'a>: ReadGuard
    where
        Self: 'a;
    /// A `WRITABLE` registration of a dup of the fd, made for one waiting add.
    type WriteWait;
    /// A back-off sleep (see `writer.rs`).
    type Sleep;
    /// Progress through the task's cooperative budget.
    type Budget: Budget;

    /// `write(2)` of `n`: `WouldBlock` when the counter has no room.
    fn add(&self, n: u64) -> io::Result<()>;
    /// `read(2)`: `WouldBlock` when the counter is 0.
    fn read(&self) -> io::Result<u64>;
    /// Waits for read readiness, one waker per waiting future.
    fn readable(&self) -> impl Future<Output = io::Result<Self::ReadGuard<'_>>>;
    /// Polls for read readiness, one waker slot for all callers.
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<Self::ReadGuard<'_>>>;
    /// Asks the reactor whether it has shut down: an error if so, otherwise
    /// `Pending` with `cx`'s waker parked until it does (see
    /// `runtime_watch.rs`).
    fn poll_shutdown(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// A registration for `EPOLLOUT`, for one waiting add.
    fn register_writable(&self) -> io::Result<Self::WriteWait>;
    /// Waits for `EPOLLOUT` on `wait`.
    fn poll_writable(
        &self,
        wait: &Self::WriteWait,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<Writable>>;
    /// Starts a back-off sleep of `delay`.
    fn sleep(&self, delay: Duration) -> Self::Sleep;
    /// Polls a back-off sleep; an error means the runtime is gone.
    fn poll_sleep(&self, sleep: &mut Self::Sleep, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Spends one unit of the task's cooperative budget, or `Pending` (the
    /// task is woken at once) when it is used up.
    fn poll_proceed(&self, cx: &mut Context<'_>) -> Poll<Self::Budget>;
}

/// A reported read readiness.
pub(super) trait ReadGuard {
    /// Forgets the readiness, unless an event came after it was reported.
    fn clear_ready(&mut self);
}

/// A unit of cooperative budget spent on a read.
pub(super) trait Budget {
    /// The read made progress, so the unit stays spent.
    fn made_progress(&self);
}

/// What `EPOLLOUT` on a waiting add's registration says.
pub(super) enum Writable {
    /// Room may have been made: add again (the readiness is cleared, so the
    /// next wait is for a newer event).
    Again,
    /// The kernel's overflow state (`EPOLLERR`, kept by tokio as a final
    /// `WRITE_CLOSED`): drop the registration and back off.
    Overflow,
}

/// An `EventFd` registered with a tokio runtime: the library's [`Fd`].
pub(super) struct Registered {
    pub(super) inner: AsyncFd<EventFd>,
    /// The runtime the fd is registered with; a waiting `add` registers its
    /// write wait there, whichever executor polls it.
    pub(super) handle: Handle,
}

impl Fd for Registered {
    type ReadGuard<'a> = AsyncFdReadyGuard<'a, EventFd>;
    type WriteWait = AsyncFd<OwnedFd>;
    type Sleep = JoinHandle<()>;
    type Budget = RestoreOnPending;

    #[inline]
    fn add(&self, n: u64) -> io::Result<()> {
        self.inner.get_ref().add(n)
    }

    #[inline]
    fn read(&self) -> io::Result<u64> {
        self.inner.get_ref().read()
    }

    #[inline]
    fn readable(&self) -> impl Future<Output = io::Result<Self::ReadGuard<'_>>> {
        self.inner.readable()
    }

    #[inline]
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<Self::ReadGuard<'_>>> {
        self.inner.poll_read_ready(cx)
    }

    #[inline]
    fn poll_shutdown(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The registration has READABLE interest only, so its write readiness
        // is never set: `poll_write_ready` returns `Pending` and parks the
        // waker in the write slot, or returns the driver's error once it has
        // shut down.
        self.inner.poll_write_ready(cx).map_ok(drop)
    }

    /// A `WRITABLE`-only registration of a dup of the fd (epoll keys its
    /// entries by fd number, so the dup gets an entry of its own).
    fn register_writable(&self) -> io::Result<AsyncFd<OwnedFd>> {
        let dup: OwnedFd = self.inner.get_ref().try_clone()?.into();
        let _entered = self.handle.enter();
        #[allow(
            unsafe_code,
            reason = "the fd stays open and unchanged while registered"
        )]
        // SAFETY: `dup` is a fresh fd that the returned `AsyncFd` owns: it stays
        // open, and `as_raw_fd` keeps returning it, until the `AsyncFd` is
        // dropped.
        let registered = unsafe { AsyncFd::register_with_interest(dup, Interest::WRITABLE) };
        registered.map_err(|e| e.into_parts().1)
    }

    fn poll_writable(
        &self,
        wait: &AsyncFd<OwnedFd>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<Writable>> {
        let mut guard = ready!(wait.poll_write_ready(cx))?;
        if guard.ready().is_write_closed() {
            Poll::Ready(Ok(Writable::Overflow))
        } else {
            guard.clear_ready();
            Poll::Ready(Ok(Writable::Again))
        }
    }

    fn sleep(&self, delay: Duration) -> JoinHandle<()> {
        // On a blocking thread, since the runtime's timer may be disabled.
        self.handle
            .spawn_blocking(move || std::thread::sleep(delay))
    }

    fn poll_sleep(&self, sleep: &mut JoinHandle<()>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The sleep cannot panic: it fails only when the runtime is gone.
        std::pin::Pin::new(sleep)
            .poll(cx)
            .map_err(|_| shutdown_error())
    }

    #[inline]
    fn poll_proceed(&self, cx: &mut Context<'_>) -> Poll<RestoreOnPending> {
        tokio::task::coop::poll_proceed(cx)
    }
}

impl ReadGuard for AsyncFdReadyGuard<'_, EventFd> {
    #[inline]
    fn clear_ready(&mut self) {
        AsyncFdReadyGuard::clear_ready(self);
    }
}

impl Budget for RestoreOnPending {
    #[inline]
    fn made_progress(&self) {
        RestoreOnPending::made_progress(self);
    }
}
