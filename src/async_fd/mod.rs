//! `AsyncEventFd`: the type and its read, add, `try_`, `poll_` and accessor
//! methods. Its constructors (`new`, `new_in`, `try_new`, `try_new_in`,
//! `TryFrom<EventFd>`) are in `registration.rs`.
//!
//! The machinery lives in one file per job, each with its rationale:
//!
//! - `reader.rs`: the read path: how reads wait, when readiness is cleared
//!   (the part that must never lose a wakeup), and when `read` tries
//!   `read(2)` before waiting;
//! - `writer.rs`: the write path: how an add waits for room: woken by this
//!   fd's own reads, by `EPOLLOUT`, or after a back-off in the kernel's
//!   overflow state;
//! - `runtime_watch.rs`: how `add` and a speculative read learn, for one
//!   atomic load, that the runtime has shut down, and `RuntimeShutdown`, the
//!   error that says so;
//! - `registration.rs`: the constructors: registering an `EventFd` with a
//!   runtime, from any thread, and `TryNewError`, which gives the fd back;
//! - `fd.rs`: the seam where these protocols meet the fd (tokio's `AsyncFd`
//!   in the library, a modelled counter in the loom models, `loom_tests.rs`);
//!   `sync.rs`: the atomics and `Mutex` they use, std's or loom's.

mod fd;
#[cfg(all(test, async_eventfd_loom))]
mod loom_tests;
mod reader;
mod registration;
mod runtime_watch;
mod sync;
mod writer;

pub use self::registration::TryNewError;
pub use self::runtime_watch::RuntimeShutdown;

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::Arc;
use std::task::{Context, Poll};

use self::fd::{Fd, Registered};
use self::reader::Speculation;
use self::runtime_watch::RuntimeWatch;
use self::writer::{PollWriter, Room};
use crate::{EventFd, Notifier};

/// An eventfd registered with a tokio runtime: `read().await` waits until the
/// counter is non-zero, `add(n).await` waits while it is full.
///
/// Every method takes `&self`: put an `AsyncEventFd` in an
/// [`Arc`] and any number of tasks can read and add at once.
/// Writers that are not tasks (a plain thread, a signal handler, a C
/// callback) write to the same counter through a [`Notifier`] from
/// [`notifier`](AsyncEventFd::notifier); a child process or the kernel gets
/// the fd itself.
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
    proto: Protocol<Registered>,
}

/// The wake protocols of an `AsyncEventFd`, over the fd they meet at the
/// seam [`Fd`]: the library's [`Registered`], or a loom model's.
struct Protocol<F: Fd> {
    fd: F,
    /// Semaphore mode, or a mode the kernel did not tell: a successful read
    /// may leave a count behind, so it must not clear readiness.
    read_may_leave_count: bool,
    /// The wait of a `poll_add` that is waiting for room.
    poll_writer: PollWriter<F>,
    /// The adds waiting for room, woken by this `AsyncEventFd`'s reads.
    room: Room,
    /// Whether `read` tries the syscall before waiting for readiness.
    speculation: Speculation,
    /// Tells `add` and the speculative read that the runtime may have shut
    /// down.
    runtime_watch: Arc<RuntimeWatch>,
}

impl<F: Fd> Protocol<F> {
    fn new(fd: F, read_may_leave_count: bool) -> Protocol<F> {
        Protocol {
            fd,
            read_may_leave_count,
            poll_writer: PollWriter::default(),
            room: Room::default(),
            speculation: Speculation::default(),
            runtime_watch: RuntimeWatch::new(),
        }
    }
}

impl AsyncEventFd {
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
    /// let writer = efd.notifier()?;
    /// std::thread::spawn(move || writer.add(3));
    /// assert_eq!(efd.read().await?, 3);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// - [`io::ErrorKind::Other`] holding a [`RuntimeShutdown`]: the runtime
    ///   the fd is registered with has shut down (also for a read that was
    ///   already waiting).
    /// - Any other error of [`EventFd::read`] except `WouldBlock`, which is
    ///   waited out.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe. The read is one syscall with no `.await`
    /// after it: a dropped `read()` future has either not read (the count
    /// stays in the counter for the next reader) or has already returned.
    pub async fn read(&self) -> io::Result<u64> {
        self.proto.read().await
    }

    /// Adds `n` to the counter, waiting while it has no room.
    ///
    /// Almost always this is a single `write(2)`. Only when the counter is
    /// too full for `n` (near [`MAX_COUNT`](crate::MAX_COUNT)) does it wait
    /// until a read makes room, and then add. A read through this
    /// `AsyncEventFd` (`read`, `try_read`, `poll_read`, the `Stream`) ends the
    /// wait at once; a read through another fd on the counter ends it through
    /// the reactor, or, if the kernel has pushed the counter to `u64::MAX`
    /// (its overflow state), within a back-off of at most 128 ms.
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
    /// - [`io::ErrorKind::Other`] holding a [`RuntimeShutdown`]: the runtime
    ///   the fd is registered with has shut down (also for an add that was
    ///   already waiting).
    /// - Any other error of [`EventFd::add`] except `WouldBlock`, which is
    ///   waited out.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe. The add is one syscall with no `.await`
    /// after it: a dropped `add()` future has either added `n` (and then
    /// returned) or added nothing.
    pub async fn add(&self, n: u64) -> io::Result<()> {
        self.proto.add(n).await
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
    /// 0. It is one syscall that does not need the runtime, so it keeps
    /// working after the runtime has shut down.
    pub fn try_read(&self) -> io::Result<u64> {
        self.proto.try_read()
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
    /// It is one syscall that does not need the runtime, so it keeps working
    /// after the runtime has shut down.
    pub fn try_add(&self, n: u64) -> io::Result<()> {
        self.proto.fd.add(n)
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
        self.proto.poll_read(cx)
    }

    /// Polls for an add of `n`, for hand-written futures.
    ///
    /// Returns `Poll::Ready(Ok(()))` once `n` was added. While the counter
    /// has no room it returns `Poll::Pending` and wakes `cx`'s waker when a
    /// read has made room (as for [`add`](AsyncEventFd::add)). As for [`poll_read`](AsyncEventFd::poll_read),
    /// only the latest waker is kept: one task at a time should wait through
    /// `poll_add`; tasks that share use [`add`](AsyncEventFd::add).
    ///
    /// A `poll_add` that returned `Pending` keeps its wait (a write
    /// registration and a parked waker) until a later `poll_add` (from any
    /// caller) finishes; it costs nothing while the counter has room.
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
        self.proto.poll_add(cx, n)
    }

    /// Returns a [`Notifier`] on this counter: the writer to hand to a plain
    /// thread, a callback or a signal handler, as
    /// [`EventFd::notifier`] does for the fd underneath.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let efd = async_eventfd::AsyncEventFd::new()?;
    /// let notifier = efd.notifier()?;
    /// std::thread::spawn(move || notifier.notify()).join().unwrap()?;
    /// assert_eq!(efd.read().await?, 1);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`EventFd::notifier`]: the `dup(2)` of the fd failed (for example
    /// `EMFILE`).
    pub fn notifier(&self) -> io::Result<Notifier> {
        self.get_ref().notifier()
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
    pub fn get_ref(&self) -> &EventFd {
        self.proto.fd.inner.get_ref()
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
    /// A failed deregistration (the runtime is gone) is ignored, as the fd is
    /// no longer in its epoll set.
    pub fn into_inner(self) -> EventFd {
        self.proto.fd.inner.into_inner()
    }
}

impl fmt::Debug for AsyncEventFd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncEventFd")
            .field("fd", self.get_ref())
            .finish_non_exhaustive()
    }
}

impl AsFd for AsyncEventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.get_ref().as_fd()
    }
}

impl AsRawFd for AsyncEventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.proto.fd.inner.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::OwnedFd;
    use std::time::{Duration, Instant};

    use super::AsyncEventFd;
    use crate::EventFd;

    /// An adopted semaphore fd of unknown mode (the rule: `EventFd`'s
    /// `TryFrom<OwnedFd>`): a read that took 1 must not clear readiness, or
    /// the units left behind are never woken for.
    #[tokio::test(flavor = "current_thread")]
    #[cfg_attr(
        async_eventfd_loom,
        ignore = "loom's Mutex works only inside a model; the loom build runs the models"
    )]
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
