//! How an add waits for room.
//!
//! Almost every add is one `write(2)` that finds room. When the counter is
//! too full, the add waits, woken by whichever comes first:
//!
//! - a read through the same `AsyncEventFd` ([`Room`]): the read wakes the
//!   waiting adds itself, at once, with no trip through the reactor;
//! - `EPOLLOUT` (a read through any fd on the counter), through a
//!   `WRITABLE` registration of the add's own on a dup of the fd, made for
//!   that wait and dropped after it, so that reads never wake the reactor
//!   otherwise (see `reader.rs` for why the main registration is
//!   `READABLE` only);
//! - in the kernel's overflow state, the end of a back-off sleep.
//!
//! # The kernel's overflow state
//!
//! A kernel writer (`eventfd_signal` from io_uring, AIO, KVM ...) that finds
//! the counter at `MAX_COUNT` pushes it to `u64::MAX`. epoll then reports
//! `EPOLLERR`, which tokio keeps as a final `WRITE_CLOSED` on the
//! registration: waiting on it again would spin. The waiting add drops that
//! registration, sleeps (a back-off of 2, 4 ... 128 ms, on a blocking thread,
//! since the runtime's timer may be disabled) and registers anew. A read
//! through the same `AsyncEventFd` still ends the wait at once; only room
//! made through another fd waits for the sleep to end.

use std::future::{poll_fn, Future};
use std::io;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::task::JoinHandle;

use super::runtime_watch::{driver_error, shutdown_error};
use super::AsyncEventFd;

impl AsyncEventFd {
    /// The slow path of `add`: the counter has no room for `n`.
    pub(super) async fn add_when_room(&self, n: u64) -> io::Result<()> {
        let mut wait = DropWait {
            efd: self,
            wait: RoomWait::default(),
        };
        poll_fn(|cx| wait.wait.poll_add(self, cx, n)).await
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
}

/// The adds waiting for room, so that this `AsyncEventFd`'s own reads can
/// wake them.
///
/// Every successful read calls [`Room::made`]: one atomic load while no add
/// waits. A waiting add parks its waker *before* it tries the `write(2)` that
/// finds the counter full; a read that makes room after that `write(2)`
/// comes after it in the kernel's lock on the counter, so it sees the parked
/// waker and wakes it. Wakers are taken out when woken: an add parks again
/// each time it waits again, and a wait that was dropped costs at most one
/// wasted wake.
#[derive(Default)]
pub(super) struct Room {
    /// How many wakers are parked; changed only under the lock.
    parked: AtomicUsize,
    state: Mutex<RoomState>,
}

#[derive(Default)]
struct RoomState {
    next_id: u64,
    wakers: Vec<(u64, Waker)>,
}

impl Room {
    fn lock(&self) -> MutexGuard<'_, RoomState> {
        // The lock guards no invariant that a panic could break.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A read through this `AsyncEventFd` took from the counter: wakes the
    /// adds waiting for room, if any.
    #[inline]
    pub(super) fn made(&self) {
        if self.parked.load(Ordering::SeqCst) != 0 {
            self.wake_all();
        }
    }

    #[cold]
    fn wake_all(&self) {
        let wakers = {
            let mut state = self.lock();
            self.parked.store(0, Ordering::SeqCst);
            std::mem::take(&mut state.wakers)
        };
        for (_, waker) in wakers {
            waker.wake();
        }
    }

    /// A new id for a waiting add.
    fn id(&self) -> u64 {
        let mut state = self.lock();
        state.next_id += 1;
        state.next_id
    }

    /// Parks (or refreshes) the waker of the add `id`.
    fn park(&self, id: u64, waker: &Waker) {
        let mut state = self.lock();
        match state.wakers.iter_mut().find(|(parked, _)| *parked == id) {
            Some((_, parked)) => parked.clone_from(waker),
            None => {
                state.wakers.push((id, waker.clone()));
                self.parked.store(state.wakers.len(), Ordering::SeqCst);
            }
        }
    }

    /// Takes out the waker of the add `id`, which waits no more.
    fn leave(&self, id: u64) {
        let mut state = self.lock();
        state.wakers.retain(|(parked, _)| *parked != id);
        self.parked.store(state.wakers.len(), Ordering::SeqCst);
    }
}

/// What an add keeps while it waits for room (see the module docs).
#[derive(Default)]
struct RoomWait {
    /// Its id in [`Room`], once it has waited.
    id: Option<u64>,
    /// The `WRITABLE` registration, while not in a back-off sleep.
    registration: Option<AsyncFd<OwnedFd>>,
    /// The back-off sleep in the overflow state.
    sleep: Option<JoinHandle<()>>,
    backoff: Backoff,
}

impl RoomWait {
    /// Adds `n` if there is room; otherwise `Pending`, with `cx`'s waker
    /// parked in [`Room`] and in the registration or the sleep.
    fn poll_add(
        &mut self,
        efd: &AsyncEventFd,
        cx: &mut Context<'_>,
        n: u64,
    ) -> Poll<io::Result<()>> {
        let id = match self.id {
            Some(id) => id,
            None => *self.id.insert(efd.room.id()),
        };
        loop {
            // Parked before the add: see `Room`.
            efd.room.park(id, cx.waker());
            efd.check_runtime()?;
            match efd.inner.get_ref().add(n) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                done => return Poll::Ready(done),
            }
            if let Some(sleep) = self.sleep.as_mut() {
                // The sleep cannot panic: it fails only when the runtime is
                // gone.
                ready!(Pin::new(sleep).poll(cx)).map_err(|_| shutdown_error())?;
                self.sleep = None;
            }
            let registration = match self.registration.as_ref() {
                Some(registration) => registration,
                None => self.registration.insert(efd.register_writable()?),
            };
            let mut guard = ready!(registration.poll_write_ready(cx)).map_err(driver_error)?;
            if guard.ready().is_write_closed() {
                // The overflow state (see the module docs).
                drop(guard);
                self.registration = None;
                let delay = self.backoff.next();
                self.sleep = Some(efd.handle.spawn_blocking(move || std::thread::sleep(delay)));
            } else {
                // The add above found no room after this readiness was
                // reported, or before a newer event (then the tick makes this
                // a no-op); the loop adds again before it waits.
                guard.clear_ready();
            }
        }
    }

    /// Ends the wait: takes the waker out of [`Room`] and drops the
    /// registration.
    fn release(&mut self, efd: &AsyncEventFd) {
        if let Some(id) = self.id {
            efd.room.leave(id);
        }
        *self = RoomWait::default();
    }
}

/// An `add().await` in progress: ends its [`RoomWait`] however the future
/// ends (finished or dropped).
struct DropWait<'a> {
    efd: &'a AsyncEventFd,
    wait: RoomWait,
}

impl Drop for DropWait<'_> {
    fn drop(&mut self) {
        self.wait.release(self.efd);
    }
}

/// The wait `poll_add` keeps between polls while the counter is full.
#[derive(Default)]
pub(super) struct PollWriter {
    state: Mutex<RoomWait>,
    /// Set while `state` holds a wait, so that the common `poll_add` (the
    /// counter has room) takes no lock.
    waiting: AtomicBool,
}

impl PollWriter {
    fn lock(&self) -> MutexGuard<'_, RoomWait> {
        // The lock guards no invariant that a panic could break.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ends the wait, if any, so reads stop waking the reactor with
    /// `EPOLLOUT`.
    pub(super) fn release(&self, efd: &AsyncEventFd) {
        if self.waiting.swap(false, Ordering::AcqRel) {
            self.lock().release(efd);
        }
    }

    pub(super) fn poll_add(
        &self,
        efd: &AsyncEventFd,
        cx: &mut Context<'_>,
        n: u64,
    ) -> Poll<io::Result<()>> {
        let mut wait = self.lock();
        self.waiting.store(true, Ordering::Release);
        let done = wait.poll_add(efd, cx, n);
        if done.is_ready() {
            wait.release(efd);
            self.waiting.store(false, Ordering::Release);
        }
        done
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
