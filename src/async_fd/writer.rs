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

use std::future::poll_fn;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::PoisonError;
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;

use super::fd::{Fd, Writable};
use super::runtime_watch::driver_error;
use super::sync::{AtomicBool, AtomicUsize, Mutex, MutexGuard};
use super::Protocol;

impl<F: Fd> Protocol<F> {
    /// `AsyncEventFd::add`.
    pub(super) async fn add(&self, n: u64) -> io::Result<()> {
        self.check_runtime()?;
        match self.fd.add(n) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.add_when_room(n).await,
            done => done,
        }
    }

    /// `AsyncEventFd::poll_add`.
    pub(super) fn poll_add(&self, cx: &mut Context<'_>, n: u64) -> Poll<io::Result<()>> {
        self.check_runtime()?;
        match self.fd.add(n) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            done => {
                self.poll_writer.release(self);
                return Poll::Ready(done);
            }
        }
        self.poll_writer.poll_add(self, cx, n)
    }

    /// The slow path of `add`: the counter has no room for `n`.
    async fn add_when_room(&self, n: u64) -> io::Result<()> {
        let mut wait = DropWait {
            proto: self,
            wait: RoomWait::default(),
        };
        poll_fn(|cx| wait.wait.poll_add(self, cx, n)).await
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
pub(super) struct Room {
    /// How many wakers are parked; changed only under the lock.
    parked: AtomicUsize,
    state: Mutex<RoomState>,
}

impl Default for Room {
    fn default() -> Room {
        Room {
            parked: AtomicUsize::new(0),
            state: Mutex::new(RoomState::default()),
        }
    }
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

    /// `parked` and the wakers actually parked, for the loom models' checks
    /// that nothing is left behind.
    #[cfg(all(test, async_eventfd_loom))]
    pub(super) fn parked(&self) -> (usize, usize) {
        let state = self.lock();
        (self.parked.load(Ordering::SeqCst), state.wakers.len())
    }
}

/// What an add keeps while it waits for room (see the module docs).
struct RoomWait<F: Fd> {
    /// Its id in [`Room`], once it has waited.
    id: Option<u64>,
    /// The `WRITABLE` registration, while not in a back-off sleep.
    registration: Option<F::WriteWait>,
    /// The back-off sleep in the overflow state.
    sleep: Option<F::Sleep>,
    backoff: Backoff,
}

impl<F: Fd> Default for RoomWait<F> {
    fn default() -> RoomWait<F> {
        RoomWait {
            id: None,
            registration: None,
            sleep: None,
            backoff: Backoff::default(),
        }
    }
}

impl<F: Fd> RoomWait<F> {
    /// Adds `n` if there is room; otherwise `Pending`, with `cx`'s waker
    /// parked in [`Room`] and in the registration or the sleep.
    fn poll_add(
        &mut self,
        proto: &Protocol<F>,
        cx: &mut Context<'_>,
        n: u64,
    ) -> Poll<io::Result<()>> {
        let id = match self.id {
            Some(id) => id,
            None => *self.id.insert(proto.room.id()),
        };
        loop {
            // Parked before the add: see `Room`.
            proto.room.park(id, cx.waker());
            proto.check_runtime()?;
            match proto.fd.add(n) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                done => return Poll::Ready(done),
            }
            if let Some(sleep) = self.sleep.as_mut() {
                ready!(proto.fd.poll_sleep(sleep, cx))?;
                self.sleep = None;
            }
            let registration = match self.registration.as_ref() {
                Some(registration) => registration,
                None => self
                    .registration
                    .insert(proto.fd.register_writable().map_err(driver_error)?),
            };
            match ready!(proto.fd.poll_writable(registration, cx)).map_err(driver_error)? {
                Writable::Overflow => {
                    // The overflow state (see the module docs).
                    self.registration = None;
                    self.sleep = Some(proto.fd.sleep(self.backoff.next()));
                }
                // The add above found no room after this readiness was
                // reported, or before a newer event (then the tick made the
                // clear a no-op); the loop adds again before it waits.
                Writable::Again => {}
            }
        }
    }

    /// Ends the wait: takes the waker out of [`Room`] and drops the
    /// registration.
    fn release(&mut self, proto: &Protocol<F>) {
        if let Some(id) = self.id {
            proto.room.leave(id);
        }
        *self = RoomWait::default();
    }
}

/// An `add().await` in progress: ends its [`RoomWait`] however the future
/// ends (finished or dropped).
struct DropWait<'a, F: Fd> {
    proto: &'a Protocol<F>,
    wait: RoomWait<F>,
}

impl<F: Fd> Drop for DropWait<'_, F> {
    fn drop(&mut self) {
        self.wait.release(self.proto);
    }
}

/// The wait `poll_add` keeps between polls while the counter is full.
pub(super) struct PollWriter<F: Fd> {
    state: Mutex<RoomWait<F>>,
    /// Set while `state` holds a wait, so that the common `poll_add` (the
    /// counter has room) takes no lock.
    waiting: AtomicBool,
}

impl<F: Fd> Default for PollWriter<F> {
    fn default() -> PollWriter<F> {
        PollWriter {
            state: Mutex::new(RoomWait::default()),
            waiting: AtomicBool::new(false),
        }
    }
}

impl<F: Fd> PollWriter<F> {
    fn lock(&self) -> MutexGuard<'_, RoomWait<F>> {
        // The lock guards no invariant that a panic could break.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ends the wait, if any, so reads stop waking the reactor with
    /// `EPOLLOUT`.
    fn release(&self, proto: &Protocol<F>) {
        if self.waiting.swap(false, Ordering::AcqRel) {
            self.lock().release(proto);
        }
    }

    fn poll_add(&self, proto: &Protocol<F>, cx: &mut Context<'_>, n: u64) -> Poll<io::Result<()>> {
        let mut wait = self.lock();
        self.waiting.store(true, Ordering::Release);
        let done = wait.poll_add(proto, cx, n);
        if done.is_ready() {
            wait.release(proto);
            self.waiting.store(false, Ordering::Release);
        }
        done
    }

    /// Whether a wait is kept (the flag, and the state under the lock), for
    /// the loom models' checks that nothing is left behind.
    #[cfg(all(test, async_eventfd_loom))]
    pub(super) fn kept(&self) -> (bool, bool) {
        let wait = self.lock();
        let kept = wait.id.is_some() || wait.registration.is_some() || wait.sleep.is_some();
        (self.waiting.load(Ordering::Acquire), kept)
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
