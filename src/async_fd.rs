//! `AsyncEventFd`: the eventfd on tokio's reactor.
//!
//! # How readiness is kept (the part that must never lose a wakeup)
//!
//! The fd is registered with tokio for `READABLE` only. eventfd signals
//! `EPOLLOUT` on every read; a `WRITABLE` registration would wake the reactor
//! once per read for nothing. A write that has to wait (the counter is full,
//! which almost never happens) takes a registration of its own for that wait;
//! see [`AsyncEventFd::add`].
//!
//! Reads wait through tokio's readiness *futures* ([`AsyncFd::readable`]), which
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
//! [`AsyncEventFd::read`] (and [`AsyncEventFd::poll_read`], so the `Stream`
//! too) therefore tries the `read(2)` first only while doing so keeps
//! succeeding (`Speculation`): after the n-th miss in a row it waits
//! through the reactor for the next 0, 1, 3, 7 ... up to 1023 reads before
//! trying again. A new fd starts backed off (63 reads through the reactor), so
//! one of thousands of rarely woken fds never pays a speculative `EAGAIN`.
//! A speculative read is an ordinary read, so it never loses or duplicates a
//! count; it touches no readiness, so it cannot lose a wakeup.
//! It checks for a shut-down runtime first and spends tokio's cooperative
//! budget, as the readiness path does.
//!
//! # Knowing that the runtime is gone
//!
//! After the runtime shuts down, `add` and a speculative read must fail
//! rather than work on an fd whose reactor is gone. Asking tokio takes a lock,
//! so instead a waker (`RuntimeWatch`) waits in the registration's write slot,
//! which nothing else uses and only the driver's shutdown wakes: the check on
//! every call is one atomic load.

use std::fmt;
use std::future::poll_fn;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{ready, Context, Poll, Wake, Waker};
use std::time::Duration;

use tokio::io::unix::{AsyncFd, AsyncFdReadyGuard};
use tokio::io::Interest;
use tokio::runtime::Handle;

use crate::EventFd;

/// An eventfd registered with a tokio runtime: `read().await` waits until the
/// counter is non-zero, `add(n).await` waits while it is full.
///
/// Every method takes `&self`: put an `AsyncEventFd` in an
/// [`Arc`] and any number of tasks can read and add at once.
/// Writers that are not tasks (a plain thread, a signal handler, a child
/// process, the kernel) write to the same counter through a clone of the fd:
/// `get_ref().try_clone()`.
///
/// Three ways to use it, as for tokio's own I/O types:
///
/// - [`read`](AsyncEventFd::read) / [`add`](AsyncEventFd::add): `async fn`s,
///   cancel safe;
/// - [`try_read`](AsyncEventFd::try_read) / [`try_add`](AsyncEventFd::try_add):
///   never wait;
/// - [`poll_read`](AsyncEventFd::poll_read) /
///   [`poll_add`](AsyncEventFd::poll_add): for hand-written futures.
///
/// With the `stream` feature it is also a `futures_core::Stream` of
/// reads.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use async_eventfd::AsyncEventFd;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let efd = Arc::new(AsyncEventFd::new()?);
/// let writer = Arc::clone(&efd);
/// tokio::spawn(async move { writer.add(5).await });
/// assert_eq!(efd.read().await?, 5);
/// # Ok(())
/// # }
/// ```
///
/// # References
///
/// [eventfd(2)](https://man7.org/linux/man-pages/man2/eventfd.2.html)
pub struct AsyncEventFd {
    inner: AsyncFd<EventFd>,
    /// The runtime the fd is registered with; a waiting `add` registers its
    /// write wait there, whichever executor polls it.
    handle: Handle,
    /// Semaphore mode, or a mode the kernel did not tell: a successful read
    /// may leave a count behind, so it must not clear readiness.
    read_may_leave_count: bool,
    /// The write registration of a `poll_add` that is waiting for room.
    poll_writer: PollWriter,
    /// Whether `read` tries the syscall before waiting for readiness.
    speculation: Speculation,
    /// Tells `add` and the speculative read that the runtime may have shut
    /// down.
    runtime_watch: Arc<RuntimeWatch>,
}

impl AsyncEventFd {
    /// Creates a fresh [`EventFd::new`] (counter 0, counter mode) and registers
    /// it with the current tokio runtime.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let efd = async_eventfd::AsyncEventFd::new()?;
    /// efd.add(1).await?;
    /// assert_eq!(efd.read().await?, 1);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// Outside a runtime, an error instead of a panic:
    ///
    /// ```
    /// let err = async_eventfd::AsyncEventFd::new().unwrap_err();
    /// assert_eq!(err.kind(), std::io::ErrorKind::Other);
    /// ```
    ///
    /// # Errors
    ///
    /// - [`io::ErrorKind::Other`]: called outside a tokio runtime (the error's
    ///   source is tokio's `TryCurrentError`), or the runtime is shutting down.
    /// - The errors of [`EventFd::new`] and of the `epoll_ctl` registration.
    ///
    /// # Panics
    ///
    /// Panics, as tokio's own registration does, if the runtime was built
    /// without its I/O driver (`enable_io`/`enable_all` not called).
    pub fn new() -> io::Result<AsyncEventFd> {
        // Check for a runtime before making an fd we would only close again.
        Handle::try_current().map_err(io::Error::other)?;
        AsyncEventFd::try_from(EventFd::new()?)
    }

    /// Reads the counter, waiting until it is non-zero.
    ///
    /// Returns as [`EventFd::read`]: the whole counter (which is then 0), or 1
    /// in semaphore mode. Any number of tasks may wait at once; each count is
    /// read by exactly one of them.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let efd = async_eventfd::AsyncEventFd::new()?;
    /// let writer = efd.get_ref().try_clone()?;
    /// std::thread::spawn(move || writer.add(3));
    /// assert_eq!(efd.read().await?, 3);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// - [`io::ErrorKind::Other`]: the runtime the fd is registered with has
    ///   shut down (also for a read that was already waiting).
    /// - Any other error of [`EventFd::read`] except `WouldBlock`, which is
    ///   waited out.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe. The read is one syscall with no `.await`
    /// after it: a dropped `read()` future has either not read (the count
    /// stays in the counter for the next reader) or has already returned.
    pub async fn read(&self) -> io::Result<u64> {
        if let Some(done) = poll_fn(|cx| self.poll_speculative_read(cx)).await {
            return done;
        }
        loop {
            if let Some(done) = self.read_when_ready(self.inner.readable().await?) {
                return done;
            }
        }
    }

    /// Adds `n` to the counter, waiting while it has no room.
    ///
    /// Almost always this is a single `write(2)`. Only when the counter is
    /// too full for `n` (near [`MAX_COUNT`](crate::MAX_COUNT)) does it wait
    /// until a read makes room, and then add.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let efd = async_eventfd::AsyncEventFd::new()?;
    /// efd.add(2).await?;
    /// efd.add(3).await?;
    /// assert_eq!(efd.read().await?, 5);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// - [`io::ErrorKind::InvalidInput`]: `n` is `u64::MAX`; nothing is added.
    /// - [`io::ErrorKind::Other`]: the runtime the fd is registered with has
    ///   shut down (also for an add that was already waiting).
    /// - Any other error of [`EventFd::add`] except `WouldBlock`, which is
    ///   waited out.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe. The add is one syscall with no `.await`
    /// after it: a dropped `add()` future has either added `n` (and then
    /// returned) or added nothing.
    pub async fn add(&self, n: u64) -> io::Result<()> {
        self.check_runtime()?;
        match self.inner.get_ref().add(n) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.add_when_room(n).await,
            done => done,
        }
    }

    /// Reads the counter if it is non-zero, without waiting.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let efd = async_eventfd::AsyncEventFd::new()?;
    /// assert_eq!(efd.try_read().unwrap_err().kind(), std::io::ErrorKind::WouldBlock);
    /// efd.try_add(4)?;
    /// assert_eq!(efd.try_read()?, 4);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`EventFd::read`]: [`io::ErrorKind::WouldBlock`] when the counter is
    /// 0.
    pub fn try_read(&self) -> io::Result<u64> {
        self.inner.get_ref().read()
    }

    /// Adds `n` to the counter if it has room, without waiting.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let efd = async_eventfd::AsyncEventFd::new()?;
    /// efd.try_add(async_eventfd::MAX_COUNT)?;
    /// assert_eq!(efd.try_add(1).unwrap_err().kind(), std::io::ErrorKind::WouldBlock);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`EventFd::add`]: [`io::ErrorKind::WouldBlock`] when the counter
    /// has no room for `n`, [`io::ErrorKind::InvalidInput`] for `u64::MAX`.
    pub fn try_add(&self, n: u64) -> io::Result<()> {
        self.inner.get_ref().add(n)
    }

    /// Polls for a read, for hand-written futures and `poll`-based traits.
    ///
    /// Returns `Poll::Ready` with the value when the counter was non-zero;
    /// otherwise `Poll::Pending`, and `cx`'s waker is woken when it may be.
    ///
    /// Only the waker of the **latest** call is kept (one slot, as for
    /// tokio's `poll_read_ready`): if two tasks poll the same `AsyncEventFd`
    /// through `poll_read`, only the last one is woken. Tasks that share an
    /// `AsyncEventFd` should use [`read`](AsyncEventFd::read), which keeps a
    /// waker per waiting future.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::future::poll_fn;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let efd = async_eventfd::AsyncEventFd::new()?;
    /// efd.add(9).await?;
    /// let value = poll_fn(|cx| efd.poll_read(cx)).await?;
    /// assert_eq!(value, 9);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`read`](AsyncEventFd::read).
    pub fn poll_read(&self, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        if let Some(done) = ready!(self.poll_speculative_read(cx)) {
            return Poll::Ready(done);
        }
        loop {
            if let Some(done) = self.read_when_ready(ready!(self.inner.poll_read_ready(cx))?) {
                return Poll::Ready(done);
            }
        }
    }

    /// Polls for an add of `n`, for hand-written futures.
    ///
    /// Returns `Poll::Ready(Ok(()))` once `n` was added. While the counter
    /// has no room it returns `Poll::Pending` and wakes `cx`'s waker when a
    /// read has made room. As for [`poll_read`](AsyncEventFd::poll_read),
    /// only the latest waker is kept: one task at a time should wait through
    /// `poll_add`; tasks that share use [`add`](AsyncEventFd::add).
    ///
    /// A `poll_add` that returned `Pending` keeps a write registration until
    /// a later `poll_add` (from any caller) succeeds; it costs nothing while
    /// the counter has room.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::future::poll_fn;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let efd = async_eventfd::AsyncEventFd::new()?;
    /// poll_fn(|cx| efd.poll_add(cx, 2)).await?;
    /// assert_eq!(efd.read().await?, 2);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`add`](AsyncEventFd::add).
    pub fn poll_add(&self, cx: &mut Context<'_>, n: u64) -> Poll<io::Result<()>> {
        self.check_runtime()?;
        match self.inner.get_ref().add(n) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            done => {
                self.poll_writer.release();
                return Poll::Ready(done);
            }
        }
        self.poll_writer.poll_add(self, cx, n)
    }

    /// Returns the [`EventFd`] underneath, for example to
    /// [`try_clone`](EventFd::try_clone) a writer for a plain thread.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let efd = async_eventfd::AsyncEventFd::new()?;
    /// let writer = efd.get_ref().try_clone()?;
    /// std::thread::spawn(move || writer.add(1)).join().unwrap()?;
    /// assert_eq!(efd.read().await?, 1);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// None.
    pub fn get_ref(&self) -> &EventFd {
        self.inner.get_ref()
    }

    /// Deregisters the fd from the runtime and returns the [`EventFd`],
    /// without closing it and without touching the counter.
    ///
    /// The fd stays nonblocking.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let efd = async_eventfd::AsyncEventFd::new()?;
    /// efd.add(2).await?;
    /// let plain = efd.into_inner();
    /// assert_eq!(plain.read()?, 2);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// None: a failed deregistration (the runtime is gone) is ignored, as
    /// the fd is no longer in its epoll set.
    pub fn into_inner(self) -> EventFd {
        self.inner.into_inner()
    }

    /// One read under a readiness guard: `Some` with the result, or `None`
    /// when the counter was empty (readiness is then cleared: wait again).
    ///
    /// This is where readiness is cleared (see the module docs): after
    /// `WouldBlock`, and after a successful read only when that read took the
    /// whole counter.
    fn read_when_ready(
        &self,
        mut guard: AsyncFdReadyGuard<'_, EventFd>,
    ) -> Option<io::Result<u64>> {
        match guard.get_inner().read() {
            Ok(value) => {
                if !self.read_may_leave_count {
                    guard.clear_ready();
                }
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
    /// Fails like a waiting read once the runtime has shut down, and respects
    /// tokio's cooperative budget (a task whose reads keep succeeding still
    /// yields now and then).
    fn poll_speculative_read(&self, cx: &mut Context<'_>) -> Poll<Option<io::Result<u64>>> {
        if !self.speculation.should_try() {
            return Poll::Ready(None);
        }
        if let Err(e) = self.check_runtime() {
            return Poll::Ready(Some(Err(e)));
        }
        let budget = ready!(tokio::task::coop::poll_proceed(cx));
        match self.inner.get_ref().read() {
            Ok(value) => {
                budget.made_progress();
                self.speculation.hit();
                Poll::Ready(Some(Ok(value)))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.speculation.miss();
                Poll::Ready(None)
            }
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    /// Fails once the runtime's I/O driver has shut down; otherwise returns at
    /// once. Usually one atomic load: see [`RuntimeWatch`].
    fn check_runtime(&self) -> io::Result<()> {
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

    /// The slow path of `add`: the counter has no room for `n`. Waits for
    /// `EPOLLOUT` through a registration of its own, made now and dropped
    /// when the add is done, so that reads never wake the reactor otherwise.
    async fn add_when_room(&self, n: u64) -> io::Result<()> {
        let mut backoff = Backoff::default();
        loop {
            let writable = self.register_writable()?;
            loop {
                let mut guard = writable.writable().await?;
                match self.inner.get_ref().add(n) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if guard.ready().is_write_closed() {
                            // The kernel pushed the counter to u64::MAX (an
                            // "overflow": eventfd_signal from io_uring, AIO,
                            // KVM...). epoll then reports EPOLLERR, which tokio
                            // keeps as a final WRITE_CLOSED: waiting on this
                            // registration again would spin. Drop it, wait a
                            // little, and register anew.
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
        // SAFETY: `dup` is a fresh fd that the returned `AsyncFd` owns: it stays
        // open, and `as_raw_fd` keeps returning it, until the `AsyncFd` is
        // dropped.
        #[allow(unsafe_code, reason = "tokio's registration is unsafe since 1.53.3")]
        let registered = unsafe { AsyncFd::register_with_interest(dup, Interest::WRITABLE) };
        registered.map_err(|e| e.into_parts().1)
    }

    /// Sleeps without needing the runtime's timer (which may be disabled):
    /// used only while the kernel holds the counter in its overflow state.
    async fn sleep(&self, duration: Duration) -> io::Result<()> {
        self.handle
            .spawn_blocking(move || std::thread::sleep(duration))
            .await
            .map_err(io::Error::other)
    }
}

/// Whether the runtime's I/O driver may have shut down since it was last asked.
///
/// After a shutdown, `add` and a speculative read must fail (their syscalls
/// would still work, on an fd whose reactor is gone). Asking tokio
/// (`poll_write_ready`) takes a lock, a cost every `add` would pay. Instead
/// this waker waits in the registration's write slot, which nothing else uses
/// and which, with `READABLE` interest only, only the driver's shutdown (or
/// the registration's end) wakes; until then, checking is one atomic load.
/// Woken means "ask tokio again", so a wake for any other reason costs one
/// question, never a wrong answer. A new fd starts woken: its first check asks,
/// and parks the waker.
struct RuntimeWatch {
    woken: AtomicBool,
}

impl Wake for RuntimeWatch {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
    }
}

/// Decides whether `read` tries `read(2)` before waiting for readiness.
///
/// Speculate while speculation succeeds; after the n-th consecutive miss,
/// skip it for the next 2^(n-1) - 1 reads (0, 1, 3, 7 ... 1023): an isolated
/// miss costs nothing more, a run of misses backs off. A new fd starts as if
/// after `INITIAL_MISSES` misses, so an fd that is read only now
/// and then (one of thousands, each woken rarely) never pays a speculative
/// `EAGAIN`. Between two tasks this costs one `EAGAIN` per 1024 reads; for a
/// thread that answers on the same CPU it saves an `epoll_wait` per wakeup.
/// Relaxed atomics: the state is a hint, and any value is correct.
struct Speculation {
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

/// The state `poll_add` keeps between polls while the counter is full.
#[derive(Default)]
struct PollWriter {
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
    fn release(&self) {
        if self.waiting.swap(false, Ordering::AcqRel) {
            *self.lock() = PollWriterState::default();
        }
    }

    fn poll_add(&self, efd: &AsyncEventFd, cx: &mut Context<'_>, n: u64) -> Poll<io::Result<()>> {
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
                    return Poll::Ready(Err(e));
                }
            };
            match efd.inner.get_ref().add(n) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !guard.ready().is_write_closed() {
                        guard.clear_ready();
                        continue;
                    }
                    // The kernel's overflow state (see `add_when_room`): wake
                    // this task again after a pause, from a blocking thread.
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

#[derive(Default)]
struct Backoff(u32);

impl Backoff {
    fn next(&mut self) -> Duration {
        self.0 = (self.0 + 1).min(7);
        Duration::from_millis(1 << self.0)
    }
}

impl TryFrom<EventFd> for AsyncEventFd {
    type Error = io::Error;

    /// Registers an existing [`EventFd`] with the current tokio runtime.
    ///
    /// A blocking `EventFd` is switched to nonblocking first. The flag lives
    /// on the open file description, so every dup of the fd (from
    /// [`EventFd::try_clone`], `fork`, or `SCM_RIGHTS`) becomes nonblocking
    /// too; a plain-thread writer using such a dup then gets `WouldBlock`
    /// instead of waiting when the counter is full.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_eventfd::{AsyncEventFd, EventFd};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let efd = EventFd::builder().semaphore(true).initial(2).build()?;
    /// let efd = AsyncEventFd::try_from(efd)?;
    /// assert_eq!(efd.read().await?, 1);
    /// assert_eq!(efd.read().await?, 1);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// - [`io::ErrorKind::Other`]: called outside a tokio runtime, or the
    ///   runtime is shutting down.
    /// - The errors of `fcntl` and of the `epoll_ctl` registration.
    ///
    /// # Panics
    ///
    /// Panics, as tokio's own registration does, if the runtime was built
    /// without its I/O driver.
    fn try_from(efd: EventFd) -> io::Result<AsyncEventFd> {
        let handle = Handle::try_current().map_err(io::Error::other)?;
        efd.set_nonblocking(true)?;
        // An adopted fd whose mode the kernel does not tell counts as
        // semaphore mode: never clearing after a read is always safe.
        let read_may_leave_count = efd.may_be_semaphore();
        // SAFETY: the `AsyncFd` owns `efd`, whose `OwnedFd` stays open and is
        // never replaced while registered (`AsyncEventFd` offers no `get_mut`),
        // so `as_raw_fd` keeps returning the same open fd until the `AsyncFd`
        // is dropped or `into_inner` deregisters it.
        #[allow(unsafe_code, reason = "tokio's registration is unsafe since 1.53.3")]
        let registered = unsafe { AsyncFd::register_with_interest(efd, Interest::READABLE) };
        let inner = registered.map_err(|e| e.into_parts().1)?;
        Ok(AsyncEventFd {
            inner,
            handle,
            read_may_leave_count,
            poll_writer: PollWriter::default(),
            speculation: Speculation::default(),
            runtime_watch: Arc::new(RuntimeWatch {
                woken: AtomicBool::new(true),
            }),
        })
    }
}

impl fmt::Debug for AsyncEventFd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncEventFd")
            .field("fd", self.inner.get_ref())
            .finish_non_exhaustive()
    }
}

impl AsFd for AsyncEventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.get_ref().as_fd()
    }
}

impl AsRawFd for AsyncEventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::OwnedFd;
    use std::time::{Duration, Instant};

    use super::AsyncEventFd;
    use crate::EventFd;

    /// An adopted fd whose mode the kernel does not tell (Linux before 6.2
    /// prints no `eventfd-semaphore:` line) may be in semaphore mode: a read
    /// that took 1 must not clear readiness, or the units left behind are
    /// never woken for.
    #[tokio::test(flavor = "current_thread")]
    async fn unknown_mode_adopted_semaphore_fd_reads_every_unit() {
        let made = EventFd::builder()
            .semaphore(true)
            .initial(3)
            .build()
            .expect("eventfd");
        let fd: OwnedFd = made.into();
        // What `TryFrom<OwnedFd>` builds on a kernel without the fdinfo line.
        let adopted = EventFd::adopted_with_unknown_mode(fd);
        let efd = AsyncEventFd::try_from(adopted).expect("register");
        for unit in 0..3 {
            let limit = Duration::from_secs(2);
            let start = Instant::now();
            let value = tokio::time::timeout(limit, efd.read())
                .await
                .unwrap_or_else(|_| panic!("read of unit {unit} lost its wakeup"))
                .expect("read");
            assert!(
                start.elapsed() < limit * 9 / 10,
                "read of unit {unit} finished only at the deadline"
            );
            assert_eq!(value, 1);
        }
        assert_eq!(
            efd.try_read().expect_err("empty").kind(),
            std::io::ErrorKind::WouldBlock
        );
    }
}
