//! How an add waits for room.
//!
//! Almost every add is one `write(2)` that finds room. When the counter is
//! too full, the add waits for `EPOLLOUT` through a `WRITABLE` registration of
//! its own on a dup of the fd, made for that wait and dropped after it, so
//! that reads never wake the reactor otherwise (see `readiness.rs` for why the
//! main registration is `READABLE` only).
//!
//! # The kernel's overflow state
//!
//! A kernel writer (`eventfd_signal` from io_uring, AIO, KVM ...) that finds
//! the counter at `MAX_COUNT` pushes it to `u64::MAX`. epoll then reports
//! `EPOLLERR`, which tokio keeps as a final `WRITE_CLOSED` on the
//! registration: waiting on it again would spin. The waiting add drops that
//! registration, sleeps (a back-off of 2, 4 ... 128 ms, on a blocking thread,
//! since the runtime's timer may be disabled) and registers anew.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::runtime_watch::{driver_error, shutdown_error};
use super::AsyncEventFd;

impl AsyncEventFd {
    /// The slow path of `add`: the counter has no room for `n`.
    pub(super) async fn add_when_room(&self, n: u64) -> io::Result<()> {
        let mut backoff = Backoff::default();
        loop {
            let writable = self.register_writable()?;
            loop {
                let mut guard = writable.writable().await.map_err(driver_error)?;
                match self.inner.get_ref().add(n) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if guard.ready().is_write_closed() {
                            // The overflow state (see the module docs).
                            break;
                        }
                        guard.clear_ready();
                    }
                    done => return done,
                }
            }
            drop(writable);
            self.sleep(backoff.next()).await?;
            self.check_runtime()?;
            match self.inner.get_ref().add(n) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                done => return done,
            }
        }
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
        registered.map_err(|e| driver_error(e.into_parts().1))
    }

    /// Sleeps without needing the runtime's timer (which may be disabled):
    /// used only while the kernel holds the counter in its overflow state.
    async fn sleep(&self, duration: Duration) -> io::Result<()> {
        self.handle
            .spawn_blocking(move || std::thread::sleep(duration))
            .await
            // The sleep cannot panic: it failed because the runtime is gone.
            .map_err(|_| shutdown_error())
    }
}

/// The state `poll_add` keeps between polls while the counter is full.
#[derive(Default)]
pub(super) struct PollWriter {
    state: Mutex<PollWriterState>,
    /// Set while `state` holds a registration, so that the common `poll_add`
    /// (the counter has room) takes no lock.
    waiting: AtomicBool,
}

#[derive(Default)]
struct PollWriterState {
    registration: Option<AsyncFd<OwnedFd>>,
    backoff: Backoff,
}

impl PollWriter {
    fn lock(&self) -> MutexGuard<'_, PollWriterState> {
        // The lock guards no invariant that a panic could break.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Drops the write registration, if any, so reads stop waking the
    /// reactor with `EPOLLOUT`.
    pub(super) fn release(&self) {
        if self.waiting.swap(false, Ordering::AcqRel) {
            *self.lock() = PollWriterState::default();
        }
    }

    pub(super) fn poll_add(
        &self,
        efd: &AsyncEventFd,
        cx: &mut Context<'_>,
        n: u64,
    ) -> Poll<io::Result<()>> {
        let mut state = self.lock();
        loop {
            if state.registration.is_none() {
                state.registration = Some(efd.register_writable()?);
                self.waiting.store(true, Ordering::Release);
            }
            let Some(registration) = state.registration.as_ref() else {
                continue;
            };
            let mut guard = match registration.poll_write_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(guard)) => guard,
                Poll::Ready(Err(e)) => {
                    *state = PollWriterState::default();
                    self.waiting.store(false, Ordering::Release);
                    return Poll::Ready(Err(driver_error(e)));
                }
            };
            match efd.inner.get_ref().add(n) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !guard.ready().is_write_closed() {
                        guard.clear_ready();
                        continue;
                    }
                    // The overflow state (see the module docs): wake this
                    // task again after a pause, from a blocking thread.
                    drop(guard);
                    state.registration = None;
                    let delay = state.backoff.next();
                    let waker = cx.waker().clone();
                    drop(efd.handle.spawn_blocking(move || {
                        std::thread::sleep(delay);
                        waker.wake();
                    }));
                    return Poll::Pending;
                }
                done => {
                    drop(guard);
                    *state = PollWriterState::default();
                    self.waiting.store(false, Ordering::Release);
                    return Poll::Ready(done);
                }
            }
        }
    }
}

/// The pause before registering anew in the overflow state: 2, 4 ... 128 ms.
#[derive(Default)]
struct Backoff(u32);

impl Backoff {
    fn next(&mut self) -> Duration {
        self.0 = (self.0 + 1).min(7);
        Duration::from_millis(1 << self.0)
    }
}
