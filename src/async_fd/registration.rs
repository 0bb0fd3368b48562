//! Registering an [`EventFd`] with a tokio runtime, on any thread, without
//! losing the fd when that fails.
//!
//! The registration comes first and the switch to nonblocking after it: a
//! failed registration then gives the `EventFd` back exactly as it came (same
//! fd, same counter, same blocking flag), with nothing to undo.

use std::error::Error;
use std::fmt;
use std::io;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::runtime::Handle;

use super::fd::Registered;
use super::runtime_watch::driver_error;
use super::{AsyncEventFd, Protocol};
use crate::EventFd;

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
    /// - [`io::ErrorKind::Other`]: called outside a tokio runtime (the error
    ///   holds tokio's `TryCurrentError`), or the runtime is shutting down.
    /// - The errors of [`EventFd::new`] and of the `epoll_ctl` registration.
    ///
    /// # Panics
    ///
    /// Panics, as tokio's own registration does, if the runtime was built
    /// without its I/O driver (`enable_io`/`enable_all` not called).
    pub fn new() -> io::Result<AsyncEventFd> {
        // Check for a runtime before making an fd we would only close again.
        let handle = Handle::try_current().map_err(io::Error::other)?;
        AsyncEventFd::new_in(&handle)
    }

    /// Creates a fresh [`EventFd::new`] and registers it with `handle`'s
    /// runtime.
    ///
    /// Works from any thread, inside a runtime context or not: a plain
    /// thread can make an `AsyncEventFd` for a runtime and hand it over.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_eventfd::AsyncEventFd;
    ///
    /// # fn main() -> std::io::Result<()> {
    /// let rt = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
    /// let handle = rt.handle().clone();
    /// // A plain thread, outside any runtime context.
    /// let efd = std::thread::spawn(move || AsyncEventFd::new_in(&handle))
    ///     .join()
    ///     .expect("the thread")?;
    /// efd.try_add(2)?;
    /// assert_eq!(rt.block_on(efd.read())?, 2);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// - [`io::ErrorKind::Other`]: the runtime has shut down; the error holds
    ///   a [`RuntimeShutdown`](crate::RuntimeShutdown).
    /// - The errors of [`EventFd::new`] and of the `epoll_ctl` registration.
    ///
    /// # Panics
    ///
    /// Panics, as tokio's own registration does, if the runtime was built
    /// without its I/O driver.
    pub fn new_in(handle: &Handle) -> io::Result<AsyncEventFd> {
        Ok(AsyncEventFd::try_new_in(EventFd::new()?, handle)?)
    }

    /// Registers an existing [`EventFd`] with the current tokio runtime, and
    /// gives it back if that fails.
    ///
    /// As `AsyncEventFd::try_from(efd)`: a blocking `EventFd` is switched to
    /// nonblocking (and so is every dup of it), once registered. On failure,
    /// [`TryNewError::into_parts`] returns the `EventFd` unchanged: the same
    /// open fd, the same counter, the same blocking flag.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_eventfd::{AsyncEventFd, EventFd};
    ///
    /// # fn main() -> std::io::Result<()> {
    /// let efd = EventFd::builder().initial(3).build()?;
    /// // Outside a runtime: the fd comes back, counter and all.
    /// let (efd, err) = AsyncEventFd::try_new(efd).unwrap_err().into_parts();
    /// assert_eq!(err.kind(), std::io::ErrorKind::Other);
    /// assert_eq!(efd.read()?, 3);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// A [`TryNewError`] holding the `EventFd` and the cause:
    ///
    /// - [`io::ErrorKind::Other`]: called outside a tokio runtime (the cause
    ///   holds tokio's `TryCurrentError`), or the runtime has shut down (the
    ///   cause holds a [`RuntimeShutdown`](crate::RuntimeShutdown)).
    /// - The errors of the `epoll_ctl` registration and of `fcntl`.
    ///
    /// # Panics
    ///
    /// Panics, as tokio's own registration does, if the runtime was built
    /// without its I/O driver.
    pub fn try_new(efd: EventFd) -> Result<AsyncEventFd, TryNewError> {
        match Handle::try_current() {
            Ok(handle) => AsyncEventFd::try_new_in(efd, &handle),
            Err(e) => Err(TryNewError {
                efd,
                error: io::Error::other(e),
            }),
        }
    }

    /// Registers an existing [`EventFd`] with `handle`'s runtime, and gives
    /// it back if that fails.
    ///
    /// As [`try_new`](AsyncEventFd::try_new), from any thread, inside a
    /// runtime context or not.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_eventfd::{AsyncEventFd, EventFd};
    ///
    /// # fn main() -> std::io::Result<()> {
    /// let rt = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
    /// let efd = EventFd::builder().initial(1).build()?;
    /// let efd = AsyncEventFd::try_new_in(efd, rt.handle())?;
    /// assert_eq!(rt.block_on(efd.read())?, 1);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// A [`TryNewError`] holding the `EventFd` and the cause:
    ///
    /// - [`io::ErrorKind::Other`]: the runtime has shut down (the cause holds
    ///   a [`RuntimeShutdown`](crate::RuntimeShutdown)).
    /// - The errors of the `epoll_ctl` registration and of `fcntl`.
    ///
    /// # Panics
    ///
    /// Panics, as tokio's own registration does, if the runtime was built
    /// without its I/O driver.
    pub fn try_new_in(efd: EventFd, handle: &Handle) -> Result<AsyncEventFd, TryNewError> {
        // A read may leave a count behind in semaphore mode, and an adopted
        // fd of unknown mode may be in it (the rule: `EventFd`'s
        // `TryFrom<OwnedFd>`); readiness is then never cleared after a read.
        let read_may_leave_count = efd.may_be_semaphore();
        let entered = handle.enter();
        #[allow(
            unsafe_code,
            reason = "the fd stays open and unchanged while registered"
        )]
        // SAFETY: the `AsyncFd` owns `efd`, whose `OwnedFd` stays open and is
        // never replaced while registered (`AsyncEventFd` offers no `get_mut`),
        // so `as_raw_fd` keeps returning the same open fd until the `AsyncFd`
        // is dropped or `into_inner` deregisters it.
        let registered = unsafe { AsyncFd::register_with_interest(efd, Interest::READABLE) };
        drop(entered);
        let inner = match registered {
            Ok(inner) => inner,
            Err(e) => {
                let (efd, error) = e.into_parts();
                return Err(TryNewError {
                    efd,
                    error: driver_error(error),
                });
            }
        };
        // Only now, so that a failed registration has nothing to undo.
        if let Err(error) = inner.get_ref().set_nonblocking(true) {
            return Err(TryNewError {
                efd: inner.into_inner(),
                error,
            });
        }
        let fd = Registered {
            inner,
            handle: handle.clone(),
        };
        Ok(AsyncEventFd {
            proto: Protocol::new(fd, read_may_leave_count),
        })
    }
}

impl TryFrom<EventFd> for AsyncEventFd {
    type Error = io::Error;

    /// Registers an existing [`EventFd`] with the current tokio runtime.
    ///
    /// A blocking `EventFd` is switched to nonblocking. The flag lives on the
    /// open file description, so every dup of the fd (from
    /// [`EventFd::try_clone`], `fork`, or `SCM_RIGHTS`) becomes nonblocking
    /// too; a plain-thread writer using such a dup then gets `WouldBlock`
    /// instead of waiting when the counter is full.
    ///
    /// On failure the `EventFd` is closed; [`AsyncEventFd::try_new`] gives it
    /// back instead.
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
    /// As [`AsyncEventFd::try_new`], with the `EventFd` dropped.
    ///
    /// # Panics
    ///
    /// Panics, as tokio's own registration does, if the runtime was built
    /// without its I/O driver.
    fn try_from(efd: EventFd) -> io::Result<AsyncEventFd> {
        Ok(AsyncEventFd::try_new(efd)?)
    }
}

/// The error of [`AsyncEventFd::try_new`] and [`AsyncEventFd::try_new_in`]:
/// the registration failed, and here is the [`EventFd`] back.
///
/// # Examples
///
/// ```
/// use async_eventfd::{AsyncEventFd, EventFd};
///
/// # fn main() -> std::io::Result<()> {
/// let efd = EventFd::builder().nonblocking(false).build()?;
/// let err = AsyncEventFd::try_new(efd).unwrap_err();
/// println!("{err}");
/// let (efd, cause) = err.into_parts();
/// assert_eq!(cause.kind(), std::io::ErrorKind::Other);
/// assert!(!efd.is_nonblocking()?); // untouched
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct TryNewError {
    efd: EventFd,
    error: io::Error,
}

impl TryNewError {
    /// Returns the `EventFd`, unchanged (same fd, counter and blocking flag),
    /// and the cause of the failure.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_eventfd::{AsyncEventFd, EventFd};
    ///
    /// # fn main() -> std::io::Result<()> {
    /// let efd = EventFd::builder().initial(4).build()?;
    /// let (efd, _cause) = AsyncEventFd::try_new(efd).unwrap_err().into_parts();
    /// assert_eq!(efd.read()?, 4);
    /// # Ok(())
    /// # }
    /// ```
    pub fn into_parts(self) -> (EventFd, io::Error) {
        (self.efd, self.error)
    }
}

impl fmt::Display for TryNewError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot register the eventfd with a tokio runtime: {}",
            self.error
        )
    }
}

impl Error for TryNewError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.error)
    }
}

impl From<TryNewError> for io::Error {
    /// Returns the cause (same kind, OS error and inner error), dropping the
    /// `EventFd`.
    fn from(err: TryNewError) -> io::Error {
        err.error
    }
}
