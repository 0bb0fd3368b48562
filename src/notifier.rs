//! `Notifier`: a cheap, cloneable writer for the code that wakes a reader.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Arc;

/// A handle that makes an eventfd's counter readable, from any thread, task
/// or signal handler.
///
/// Made by [`EventFd::notifier`](crate::EventFd::notifier) (and
/// `AsyncEventFd::notifier` with the `tokio` feature): one `dup` of the fd,
/// close-on-exec if the original is. Cloning a `Notifier` does not `dup`
/// again: every clone shares that one fd, so handing a notifier to each of a
/// thousand callbacks costs one fd, not a thousand. The fd is closed when the
/// last clone is dropped.
///
/// [`notify`](Notifier::notify) is the doorbell: "there is something to
/// read", with a full counter counting as rung. [`add`](Notifier::add) is
/// the exact add, for a writer that counts.
///
/// A `Notifier` only writes. The counter, its mode and the nonblocking flag
/// belong to the eventfd it was made from (the dup shares them).
///
/// # Examples
///
/// ```
/// use async_eventfd::EventFd;
///
/// # fn main() -> std::io::Result<()> {
/// let efd = EventFd::new()?;
/// let notifier = efd.notifier()?;
/// let threads: Vec<_> = (0..4)
///     .map(|_| {
///         let notifier = notifier.clone(); // no new fd
///         std::thread::spawn(move || notifier.notify())
///     })
///     .collect();
/// for thread in threads {
///     thread.join().expect("the notifying thread")?;
/// }
/// assert_eq!(efd.read()?, 4);
/// # Ok(())
/// # }
/// ```
///
/// # References
///
/// [eventfd(2)](https://man7.org/linux/man-pages/man2/eventfd.2.html),
/// [signal-safety(7)](https://man7.org/linux/man-pages/man7/signal-safety.7.html)
#[derive(Clone)]
pub struct Notifier {
    fd: Arc<OwnedFd>,
}

impl Notifier {
    /// Takes ownership of a fd already known to be an eventfd.
    pub(crate) fn from_eventfd_fd(fd: OwnedFd) -> Notifier {
        Notifier { fd: Arc::new(fd) }
    }

    /// Makes the counter readable: one `write(2)` adding 1.
    ///
    /// A counter too full to take 1 more (at [`MAX_COUNT`](crate::MAX_COUNT))
    /// is readable already, so on a nonblocking fd that `WouldBlock` is
    /// `Ok(())`: `notify` never waits and never fails for a full counter.
    /// Each successful `notify` adds exactly 1, so a reader that counts sees
    /// every one made while the counter had room.
    ///
    /// # Signal handlers
    ///
    /// `notify` is async-signal-safe: it takes no lock, allocates nothing
    /// (its errors carry only an OS error code), and makes one `write(2)`,
    /// which POSIX lists as async-signal-safe. It may be called from a signal
    /// handler. Like any syscall it sets `errno` on failure; a handler that
    /// cares restores `errno` before returning.
    ///
    /// # Blocking fds
    ///
    /// On a blocking fd (made with
    /// [`nonblocking(false)`](crate::EventFdBuilder::nonblocking), or
    /// adopted as one), `write(2)` itself waits while the counter is full, so
    /// `notify` waits there too, until a read makes room. The counter gets
    /// full only if someone adds close to `MAX_COUNT` (it takes 2^64 - 2
    /// notifies to fill it otherwise). A notifier that must never wait, in a
    /// signal handler above all, should be made from a nonblocking eventfd
    /// (the default).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_eventfd::{EventFd, MAX_COUNT};
    ///
    /// # fn main() -> std::io::Result<()> {
    /// let efd = EventFd::new()?;
    /// let notifier = efd.notifier()?;
    /// notifier.notify()?;
    /// notifier.notify()?;
    /// assert_eq!(efd.read()?, 2);
    ///
    /// efd.add(MAX_COUNT)?;
    /// notifier.notify()?; // full: already readable, so Ok
    /// assert_eq!(efd.read()?, MAX_COUNT);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// - [`io::ErrorKind::Interrupted`]: on a blocking fd with a full
    ///   counter, the wait was interrupted by a signal handler installed
    ///   without `SA_RESTART`.
    /// - Other errors of `write(2)`, which an open eventfd does not return in
    ///   practice.
    pub fn notify(&self) -> io::Result<()> {
        match crate::eventfd::add(self.fd.as_fd(), 1) {
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => Ok(()),
            other => other,
        }
    }

    /// Adds `n` to the counter with one `write(2)`: exactly
    /// [`EventFd::add`](crate::EventFd::add) on the shared fd.
    ///
    /// Async-signal-safe as [`notify`](Notifier::notify) is. Unlike
    /// `notify`, a full counter is an error (or a wait, on a blocking fd):
    /// a writer that counts must know its units did not land.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// let efd = async_eventfd::EventFd::new()?;
    /// let notifier = efd.notifier()?;
    /// notifier.add(40)?;
    /// notifier.add(2)?;
    /// assert_eq!(efd.read()?, 42);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`EventFd::add`](crate::EventFd::add):
    /// - [`io::ErrorKind::InvalidInput`] (raw OS error `EINVAL`): `n` is
    ///   `u64::MAX`; checked before any syscall, so the counter is unchanged.
    /// - [`io::ErrorKind::WouldBlock`]: the counter has no room for `n` and
    ///   the fd is nonblocking.
    /// - [`io::ErrorKind::Interrupted`]: a blocking add was interrupted by a
    ///   signal handler installed without `SA_RESTART`.
    pub fn add(&self, n: u64) -> io::Result<()> {
        crate::eventfd::add(self.fd.as_fd(), n)
    }
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifier")
            .field("fd", &self.fd.as_raw_fd())
            .finish()
    }
}

impl AsFd for Notifier {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Notifier {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
