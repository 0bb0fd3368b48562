//! Registering an [`EventFd`] with a tokio runtime.

use std::io;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::runtime::Handle;

use super::readiness::Speculation;
use super::runtime_watch::RuntimeWatch;
use super::writer::PollWriter;
use super::AsyncEventFd;
use crate::EventFd;

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
        #[allow(
            unsafe_code,
            reason = "the fd stays open and unchanged while registered"
        )]
        // SAFETY: the `AsyncFd` owns `efd`, whose `OwnedFd` stays open and is
        // never replaced while registered (`AsyncEventFd` offers no `get_mut`),
        // so `as_raw_fd` keeps returning the same open fd until the `AsyncFd`
        // is dropped or `into_inner` deregisters it.
        let registered = unsafe { AsyncFd::register_with_interest(efd, Interest::READABLE) };
        let inner = registered.map_err(|e| e.into_parts().1)?;
        Ok(AsyncEventFd {
            inner,
            handle,
            read_may_leave_count,
            poll_writer: PollWriter::default(),
            speculation: Speculation::default(),
            runtime_watch: RuntimeWatch::new(),
        })
    }
}
