//! The ways to wake a task that `async-eventfd` is measured against, for the
//! `eventfd-bench` binary and the criterion benchmarks: two hand-written
//! loops around tokio's `AsyncFd<EventFd>` ([`AsyncFdRw`], [`AsyncFdR`]),
//! the in-process floor ([`NotifyCounter`]: no fd, no syscall) and the
//! `tokio-eventfd` crate ([`TokioEventfd`]).
//!
//! Each has a `read` that waits for a non-zero count and takes it, and an
//! `add`. Those on an fd also give the fd ([`AsFd`]/[`AsRawFd`]), so a plain
//! thread can wake the task with one `write(2)`.

use std::fmt;
use std::future::poll_fn;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{ready, Poll};

use async_eventfd::EventFd;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::sync::Notify;

/// A fresh nonblocking `EventFd`, registered with the current runtime for
/// `interest`.
pub(crate) fn register(interest: Interest) -> io::Result<AsyncFd<EventFd>> {
    let efd = EventFd::new()?;
    // SAFETY: the `AsyncFd` owns `efd`, whose fd stays open and unchanged
    // until the `AsyncFd` is dropped (nothing here swaps it).
    let afd = unsafe { AsyncFd::register_with_interest(efd, interest) };
    afd.map_err(|e| e.into_parts().1)
}

/// A hand-written `AsyncFd<EventFd>` with READABLE|WRITABLE interest whose
/// readiness is cleared only when a syscall returns `WouldBlock`
/// (`AsyncFdReadyGuard::try_io`): tokio's idiomatic loop.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// use eventfd_bench::baselines::AsyncFdRw;
///
/// let chan = AsyncFdRw::new()?;
/// chan.add(2).await?;
/// assert_eq!(chan.read().await?, 2);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct AsyncFdRw(AsyncFd<EventFd>);

impl AsyncFdRw {
    /// A new counter at 0, registered with the current tokio runtime.
    ///
    /// # Errors
    ///
    /// Those of `eventfd(2)` and of the registration (outside a runtime:
    /// kind `Other`).
    pub fn new() -> io::Result<AsyncFdRw> {
        register(Interest::READABLE | Interest::WRITABLE).map(AsyncFdRw)
    }

    /// Waits for a non-zero count and takes it all.
    ///
    /// # Errors
    ///
    /// Any error of `read(2)` but `WouldBlock`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the count is taken by the last step, one syscall.
    pub async fn read(&self) -> io::Result<u64> {
        loop {
            let mut guard = self.0.readable().await?;
            if let Ok(result) = guard.try_io(|afd| afd.get_ref().read()) {
                return result;
            }
        }
    }

    /// Adds `n`, waiting while the counter has no room for it.
    ///
    /// # Errors
    ///
    /// Any error of `write(2)` but `WouldBlock` (`n == u64::MAX`:
    /// `InvalidInput`).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: `n` is added by the last step, one syscall.
    pub async fn add(&self, n: u64) -> io::Result<()> {
        loop {
            let mut guard = self.0.writable().await?;
            if let Ok(result) = guard.try_io(|afd| afd.get_ref().add(n)) {
                return result;
            }
        }
    }
}

/// A hand-written `AsyncFd<EventFd>` with READABLE-only interest whose
/// readiness is cleared after every read, since a successful read drains
/// the counter; `add` is a plain write.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// use eventfd_bench::baselines::AsyncFdR;
///
/// let chan = AsyncFdR::new()?;
/// chan.add(3)?;
/// assert_eq!(chan.read().await?, 3);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct AsyncFdR(AsyncFd<EventFd>);

impl AsyncFdR {
    /// A new counter at 0, registered with the current tokio runtime.
    ///
    /// # Errors
    ///
    /// Those of `eventfd(2)` and of the registration (outside a runtime:
    /// kind `Other`).
    pub fn new() -> io::Result<AsyncFdR> {
        register(Interest::READABLE).map(AsyncFdR)
    }

    /// Waits for a non-zero count and takes it all.
    ///
    /// # Errors
    ///
    /// Any error of `read(2)` but `WouldBlock`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the count is taken by the last step, one syscall.
    pub async fn read(&self) -> io::Result<u64> {
        loop {
            let mut guard = self.0.readable().await?;
            match guard.get_inner().read() {
                Ok(value) => {
                    // The read took the whole counter: readiness is stale. An
                    // event that arrived after the guard bumps tokio's tick
                    // and makes this clear a no-op.
                    guard.clear_ready();
                    return Ok(value);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => guard.clear_ready(),
                Err(e) => return Err(e),
            }
        }
    }

    /// Adds `n` with one `write(2)`, without waiting: the benchmarks never
    /// fill the counter.
    ///
    /// # Errors
    ///
    /// Those of `write(2)`: `WouldBlock` when the counter has no room for `n`.
    pub fn add(&self, n: u64) -> io::Result<()> {
        self.0.get_ref().add(n)
    }
}

/// A counter and a `tokio::sync::Notify`: no fd at all, so it works within
/// one process only. `notify_one` keeps a permit when nobody waits, so no
/// wakeup is lost.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use eventfd_bench::baselines::NotifyCounter;
///
/// let chan = NotifyCounter::new();
/// chan.add(4);
/// assert_eq!(chan.read().await, 4);
/// # }
/// ```
#[derive(Debug, Default)]
pub struct NotifyCounter {
    notify: Notify,
    count: AtomicU64,
}

impl NotifyCounter {
    /// A new counter at 0.
    pub fn new() -> NotifyCounter {
        NotifyCounter::default()
    }

    /// Adds `n` and wakes the waiter (or leaves it a permit).
    pub fn add(&self, n: u64) {
        self.count.fetch_add(n, Ordering::AcqRel);
        self.notify.notify_one();
    }

    /// Waits for a non-zero count and takes it all.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the count is taken without an await after it.
    pub async fn read(&self) -> u64 {
        loop {
            let value = self.count.swap(0, Ordering::AcqRel);
            if value > 0 {
                return value;
            }
            self.notify.notified().await;
        }
    }
}

/// The `tokio-eventfd` crate's `EventFd`, read and written as its users do:
/// `AsyncRead`/`AsyncWrite` of 8 bytes through `&mut`, so each task needs a
/// handle of its own ([`TokioEventfd::try_clone`], a dup with its own
/// registration).
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// use eventfd_bench::baselines::TokioEventfd;
///
/// let mut rx = TokioEventfd::new()?;
/// let mut tx = rx.try_clone()?;
/// tx.add(5).await?;
/// assert_eq!(rx.read().await?, 5);
/// # Ok(())
/// # }
/// ```
pub struct TokioEventfd(tokio_eventfd::EventFd);

impl TokioEventfd {
    /// A new counter at 0 (not a semaphore), registered with the current
    /// tokio runtime.
    ///
    /// # Errors
    ///
    /// Those of `eventfd(2)` and of the registration.
    pub fn new() -> io::Result<TokioEventfd> {
        tokio_eventfd::EventFd::new(0, false).map(TokioEventfd)
    }

    /// Another handle to the same counter: a dup of the fd, registered anew.
    ///
    /// # Errors
    ///
    /// Those of `dup(2)` and of the registration.
    pub fn try_clone(&self) -> io::Result<TokioEventfd> {
        self.0.try_clone().map(TokioEventfd)
    }

    /// Waits for a non-zero count and takes it all (`poll_read` of 8 bytes).
    ///
    /// # Errors
    ///
    /// Those of `read(2)`; `UnexpectedEof` on a short read.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the count is taken by the last step, one syscall.
    pub async fn read(&mut self) -> io::Result<u64> {
        let mut buf = [0u8; 8];
        let efd = &mut self.0;
        let n = poll_fn(|cx| {
            let mut rb = ReadBuf::new(&mut buf);
            ready!(Pin::new(&mut *efd).poll_read(cx, &mut rb))?;
            Poll::Ready(Ok::<_, io::Error>(rb.filled().len()))
        })
        .await?;
        if n != 8 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(u64::from_ne_bytes(buf))
    }

    /// Adds `n` (`poll_write` of 8 bytes), waiting while there is no room.
    ///
    /// # Errors
    ///
    /// Those of `write(2)`; `WriteZero` on a short write.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: `n` is added by the last step, one syscall.
    pub async fn add(&mut self, n: u64) -> io::Result<()> {
        let buf = n.to_ne_bytes();
        let efd = &mut self.0;
        let written = poll_fn(|cx| Pin::new(&mut *efd).poll_write(cx, &buf)).await?;
        if written != 8 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        Ok(())
    }
}

impl fmt::Debug for TokioEventfd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TokioEventfd")
            .field(&self.0.as_raw_fd())
            .finish()
    }
}

/// `AsFd` and `AsRawFd` for the baselines on an fd.
macro_rules! fd_of {
    ($($ty:ident),*) => {$(
        impl AsFd for $ty {
            fn as_fd(&self) -> BorrowedFd<'_> {
                self.0.as_fd()
            }
        }

        impl AsRawFd for $ty {
            fn as_raw_fd(&self) -> RawFd {
                self.0.as_raw_fd()
            }
        }
    )*};
}

fd_of!(AsyncFdRw, AsyncFdR, TokioEventfd);
