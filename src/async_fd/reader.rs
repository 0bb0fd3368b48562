//! The read path: how reads wait (readiness), and reading before waiting.
//!
//! # How readiness is kept (the part that must never lose a wakeup)
//!
//! The fd is registered with tokio for `READABLE` only. eventfd signals
//! `EPOLLOUT` on every read; a `WRITABLE` registration would wake the reactor
//! once per read for nothing. A write that has to wait (the counter is full,
//! which almost never happens) takes a registration of its own for that wait
//! (see `writer.rs`).
//!
//! Reads wait through tokio's readiness *futures* (`AsyncFd::readable`), which
//! keep one waker per waiting future, so any number of tasks can wait on one
//! `AsyncEventFd`. (`AsyncFd::poll_read_ready` keeps only the last waker: two
//! tasks waiting through it would starve each other.)
//!
//! Readiness is cleared only when it is known to be stale:
//!
//! - after a read that returned `WouldBlock`;
//! - in counter mode, after a successful read: that read took the whole
//!   counter, and tokio's readiness tick makes `clear_ready` a no-op if an event
//!   arrived after the guard was handed out, so a write that lands after the
//!   read is not lost. This saves one `EAGAIN` read per wakeup.
//! - never after a successful read in semaphore mode: the read took 1 and can
//!   leave a count behind; with an edge-triggered registration, clearing would
//!   lose that count's wakeup for good.
//!
//! # Reading before waiting, when that pays
//!
//! When a plain thread on the same CPU answers a task, its count is usually
//! in the counter before the task asks again, while tokio has not polled
//! epoll yet: a readiness-first read then parks the task and pays an
//! `epoll_wait` and a trip through the scheduler for a count that was already
//! there. A read-first loop avoids that, but between two tasks (where the
//! count is never there yet) it pays an `EAGAIN` read per wakeup instead.
//! `read` (and `poll_read`, so the `Stream` too) therefore tries the `read(2)`
//! first only while doing so keeps succeeding ([`Speculation`]): after the
//! n-th miss in a row it waits through the reactor for the next 0, 1, 3, 7
//! ... up to 1023 reads before trying again. A new fd starts backed off (63
//! reads through the reactor), so one of thousands of rarely woken fds never
//! pays a speculative `EAGAIN`. Between two tasks this costs one `EAGAIN` per
//! 1024 reads; for a thread that answers on the same CPU it saves an
//! `epoll_wait` per wakeup.
//!
//! A speculative read is an ordinary read, so it never loses or duplicates a
//! count; it touches no readiness, so it cannot lose a wakeup. It checks for a
//! shut-down runtime first (see `runtime_watch.rs`) and spends tokio's
//! cooperative budget, as the readiness path does.

use std::future::poll_fn;
use std::io;
use std::sync::atomic::Ordering;
use std::task::{ready, Context, Poll};

use super::fd::{Budget, Fd, ReadGuard};
use super::runtime_watch::driver_error;
use super::sync::AtomicU32;
use super::Protocol;

impl<F: Fd> Protocol<F> {
    /// `AsyncEventFd::read`.
    pub(super) async fn read(&self) -> io::Result<u64> {
        if let Some(done) = poll_fn(|cx| self.poll_speculative_read(cx)).await {
            return done;
        }
        loop {
            if let Some(done) =
                self.read_when_ready(self.fd.readable().await.map_err(driver_error)?)
            {
                return done;
            }
        }
    }

    /// `AsyncEventFd::poll_read`.
    pub(super) fn poll_read(&self, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        if let Some(done) = ready!(self.poll_speculative_read(cx)) {
            return Poll::Ready(done);
        }
        loop {
            if let Some(done) =
                self.read_when_ready(ready!(self.fd.poll_read_ready(cx)).map_err(driver_error)?)
            {
                return Poll::Ready(done);
            }
        }
    }

    /// `AsyncEventFd::try_read`.
    pub(super) fn try_read(&self) -> io::Result<u64> {
        let value = self.fd.read()?;
        self.room.made();
        Ok(value)
    }

    /// One read under a readiness guard: `Some` with the result, or `None`
    /// when the counter was empty (readiness is then cleared: wait again).
    ///
    /// This is where readiness is cleared (see the module docs).
    fn read_when_ready(&self, mut guard: F::ReadGuard<'_>) -> Option<io::Result<u64>> {
        match self.fd.read() {
            Ok(value) => {
                if !self.read_may_leave_count {
                    guard.clear_ready();
                }
                self.room.made();
                Some(Ok(value))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                guard.clear_ready();
                None
            }
            Err(e) => Some(Err(e)),
        }
    }

    /// One read before waiting for readiness, when [`Speculation`] says it
    /// pays: `Some` with the result if the counter was non-zero (or the read
    /// failed otherwise), `None` on `WouldBlock` or when not speculating.
    fn poll_speculative_read(&self, cx: &mut Context<'_>) -> Poll<Option<io::Result<u64>>> {
        if !self.speculation.should_try() {
            return Poll::Ready(None);
        }
        if let Err(e) = self.check_runtime() {
            return Poll::Ready(Some(Err(e)));
        }
        // A task whose reads keep succeeding still yields now and then.
        let budget = ready!(self.fd.poll_proceed(cx));
        match self.fd.read() {
            Ok(value) => {
                budget.made_progress();
                self.speculation.hit();
                self.room.made();
                Poll::Ready(Some(Ok(value)))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.speculation.miss();
                Poll::Ready(None)
            }
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }
}

/// Decides whether `read` tries `read(2)` before waiting for readiness (why:
/// see the module docs).
///
/// Speculate while speculation succeeds; after the n-th consecutive miss,
/// skip it for the next 2^(n-1) - 1 reads (0, 1, 3, 7 ... 1023). A new fd
/// starts as if after `INITIAL_MISSES` misses. Relaxed atomics: the state is a
/// hint, and any value is correct.
pub(super) struct Speculation {
    /// Reads left before the next speculation.
    skip: AtomicU32,
    /// Consecutive misses (capped), for the doubling.
    misses: AtomicU32,
}

impl Default for Speculation {
    fn default() -> Speculation {
        Speculation {
            skip: AtomicU32::new((1 << (Self::INITIAL_MISSES - 1)) - 1),
            misses: AtomicU32::new(Self::INITIAL_MISSES),
        }
    }
}

impl Speculation {
    /// A state after `misses` misses with `skip` reads left to skip, for the
    /// loom models (a fresh fd would skip 63 reads first).
    #[cfg(all(test, async_eventfd_loom))]
    pub(super) fn after(misses: u32, skip: u32) -> Speculation {
        Speculation {
            skip: AtomicU32::new(skip),
            misses: AtomicU32::new(misses),
        }
    }

    const MAX_SHIFT: u32 = 10;
    /// A fresh fd waits through the reactor for its first 63 reads.
    const INITIAL_MISSES: u32 = 7;

    fn should_try(&self) -> bool {
        let skip = self.skip.load(Ordering::Relaxed);
        if skip == 0 {
            return true;
        }
        self.skip.store(skip - 1, Ordering::Relaxed);
        false
    }

    fn hit(&self) {
        if self.misses.load(Ordering::Relaxed) != 0 {
            self.misses.store(0, Ordering::Relaxed);
        }
    }

    fn miss(&self) {
        let misses = self.misses.load(Ordering::Relaxed).min(Self::MAX_SHIFT);
        self.misses.store(misses + 1, Ordering::Relaxed);
        self.skip.store((1 << misses) - 1, Ordering::Relaxed);
    }
}
