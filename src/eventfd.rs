//! The owned, synchronous eventfd.

use std::fmt;
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};

use crate::{EventFdBuilder, Notifier};

/// An owned Linux eventfd: a kernel `u64` counter behind a file descriptor.
///
/// Writers [`add`](EventFd::add) to the counter, readers [`read`](EventFd::read)
/// it back: in counter mode a read takes the whole value and resets it to 0, in
/// semaphore mode a read takes 1. The fd is readable while the counter is
/// non-zero and writable while at least 1 more fits below [`MAX_COUNT`](crate::MAX_COUNT).
///
/// Every method takes `&self` (the kernel counter is the lock), so an
/// `EventFd` can be shared through an [`Arc`](std::sync::Arc). The fd is closed
/// on drop. [`try_clone`](EventFd::try_clone) makes a second fd on the same
/// counter; [`notifier`](EventFd::notifier) makes a [`Notifier`], a writer
/// whose clones share one fd, for threads, callbacks and signal handlers.
/// [`wait_timeout`](EventFd::wait_timeout) lets a plain thread wait with a
/// deadline.
///
/// [`EventFd::new`] makes a nonblocking, close-on-exec fd in counter mode;
/// [`EventFd::builder`] chooses otherwise.
///
/// # Examples
///
/// ```
/// use async_eventfd::EventFd;
///
/// # fn main() -> std::io::Result<()> {
/// let efd = EventFd::new()?;
/// efd.add(2)?;
/// efd.add(3)?;
/// assert_eq!(efd.read()?, 5); // adds coalesce; a read takes them all
/// assert_eq!(
///     efd.read().unwrap_err().kind(),
///     std::io::ErrorKind::WouldBlock
/// );
/// # Ok(())
/// # }
/// ```
///
/// # References
///
/// [eventfd(2)](https://man7.org/linux/man-pages/man2/eventfd.2.html)
pub struct EventFd {
    fd: OwnedFd,
    semaphore: bool,
    /// False only for an adopted fd whose mode the kernel does not tell (see
    /// [`TryFrom<OwnedFd>`](EventFd#impl-TryFrom%3COwnedFd%3E-for-EventFd)).
    mode_known: bool,
}

impl EventFd {
    /// Creates an eventfd with counter 0, nonblocking and close-on-exec, in
    /// counter (not semaphore) mode.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// let efd = async_eventfd::EventFd::new()?;
    /// assert!(!efd.is_semaphore());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`EventFdBuilder::build`]: `EMFILE`/`ENFILE` (too many open
    /// files; recognise them by [`raw_os_error`](io::Error::raw_os_error),
    /// not by kind) and `ENOMEM` ([`io::ErrorKind::OutOfMemory`]).
    pub fn new() -> io::Result<EventFd> {
        EventFd::builder().build()
    }

    /// Returns a builder to choose the initial value, semaphore mode,
    /// blocking mode and close-on-exec.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// let efd = async_eventfd::EventFd::builder()
    ///     .initial(3)
    ///     .semaphore(true)
    ///     .build()?;
    /// assert_eq!(efd.read()?, 1);
    /// assert_eq!(efd.read()?, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn builder() -> EventFdBuilder {
        EventFdBuilder::default()
    }

    /// Reads the counter with one `read(2)`.
    ///
    /// In counter mode, returns the counter and resets it to 0. In semaphore
    /// mode, returns 1 and decrements the counter. If the counter is 0, a
    /// nonblocking fd fails with [`io::ErrorKind::WouldBlock`] and a blocking
    /// one waits until another writer adds.
    ///
    /// The value can be `u64::MAX` in one case only: the kernel itself
    /// (eventfd_signal from io_uring, AIO, KVM...) pushed the counter past
    /// [`MAX_COUNT`](crate::MAX_COUNT), which eventfd(2) calls an overflow.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// let efd = async_eventfd::EventFd::new()?;
    /// efd.add(7)?;
    /// assert_eq!(efd.read()?, 7);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// - [`io::ErrorKind::WouldBlock`]: the counter is 0 and the fd is
    ///   nonblocking.
    /// - [`io::ErrorKind::Interrupted`]: a blocking read was interrupted by a
    ///   signal handler installed without `SA_RESTART`.
    /// - [`io::ErrorKind::UnexpectedEof`]: the kernel returned fewer than 8
    ///   bytes, which eventfd(2) never does.
    pub fn read(&self) -> io::Result<u64> {
        let mut buf = [0u8; 8];
        let n = nix::unistd::read(&self.fd, &mut buf).map_err(io::Error::from)?;
        if n != buf.len() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(u64::from_ne_bytes(buf))
    }

    /// Adds `n` to the counter with one `write(2)`.
    ///
    /// The fd becomes readable, and every waiter is woken. `add(0)` is allowed
    /// and changes nothing. If the sum would pass [`MAX_COUNT`](crate::MAX_COUNT), a nonblocking
    /// fd fails with [`io::ErrorKind::WouldBlock`] and a blocking one waits
    /// until a read makes room.
    ///
    /// `add` is async-signal-safe: one syscall, no allocation, no lock, even on
    /// its error paths. It may be called from a signal handler.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// let efd = async_eventfd::EventFd::new()?;
    /// efd.add(1)?;
    /// efd.add(0)?;
    /// assert_eq!(efd.read()?, 1);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// - [`io::ErrorKind::InvalidInput`] (raw OS error `EINVAL`): `n` is
    ///   `u64::MAX`, which eventfd(2) refuses; checked before any syscall, so
    ///   the counter is unchanged.
    /// - [`io::ErrorKind::WouldBlock`]: the counter has no room for `n` and
    ///   the fd is nonblocking.
    /// - [`io::ErrorKind::Interrupted`]: a blocking add was interrupted by a
    ///   signal handler installed without `SA_RESTART`.
    pub fn add(&self, n: u64) -> io::Result<()> {
        add(self.fd.as_fd(), n)
    }

    /// Creates a second fd on the same counter.
    ///
    /// The new fd shares the counter, the semaphore mode and the nonblocking
    /// flag (one open file description); it gets close-on-exec if and only if
    /// this one has it.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// let efd = async_eventfd::EventFd::new()?;
    /// let writer = efd.try_clone()?;
    /// std::thread::spawn(move || writer.add(1)).join().unwrap()?;
    /// assert_eq!(efd.read()?, 1);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// The errors of `fcntl(F_DUPFD[_CLOEXEC])`, chiefly `EMFILE` (too many
    /// open files).
    pub fn try_clone(&self) -> io::Result<EventFd> {
        let cloexec = fd_flags(self.fd.as_fd())?.contains(FdFlag::FD_CLOEXEC);
        let arg = if cloexec {
            FcntlArg::F_DUPFD_CLOEXEC(0)
        } else {
            FcntlArg::F_DUPFD(0)
        };
        let raw = fcntl(self.fd.as_fd(), arg).map_err(io::Error::from)?;
        Ok(EventFd {
            fd: owned_from_new_fd(raw),
            semaphore: self.semaphore,
            mode_known: self.mode_known,
        })
    }

    /// Returns a [`Notifier`] on this counter: a cheap, cloneable writer for
    /// threads, callbacks and signal handlers.
    ///
    /// Makes one `dup` of the fd (close-on-exec if this one is, as
    /// [`try_clone`](EventFd::try_clone)); clones of the notifier share it.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// let efd = async_eventfd::EventFd::new()?;
    /// let notifier = efd.notifier()?;
    /// std::thread::spawn(move || notifier.notify())
    ///     .join()
    ///     .expect("the notifying thread")?;
    /// assert_eq!(efd.read()?, 1);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`try_clone`](EventFd::try_clone): the errors of
    /// `fcntl(F_DUPFD[_CLOEXEC])`, chiefly `EMFILE` (too many open files).
    pub fn notifier(&self) -> io::Result<Notifier> {
        Ok(Notifier::from_eventfd_fd(self.try_clone()?.fd))
    }

    /// Waits up to `timeout` for the counter to be non-zero, then reads it as
    /// [`read`](EventFd::read) does: `Ok(Some(value))`, or `Ok(None)` if the
    /// time ran out with nothing read.
    ///
    /// For plain threads, which have no reactor to wait with. Works on
    /// blocking and nonblocking fds alike and never waits (much) past the
    /// timeout, even on a blocking fd shared with other readers: the read
    /// after the wait cannot block (`preadv2(2)` with `RWF_NOWAIT`), and if
    /// another reader took the count first, the wait goes on with the time
    /// left. A signal that interrupts the wait is retried with the time left
    /// too. [`Duration::ZERO`] checks once and never waits. The wait is
    /// `poll(2)`, whose timeout is in milliseconds: a timeout is rounded up
    /// to the next one.
    ///
    /// On kernels before Linux 5.12, which lack `RWF_NOWAIT` for eventfds,
    /// the read is a plain `read(2)`: there, on a *blocking* fd whose count
    /// another reader takes between the wait and the read, the read waits for
    /// the next add. Nonblocking fds, and blocking fds with one reader, are
    /// not affected.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// # fn main() -> std::io::Result<()> {
    /// let efd = async_eventfd::EventFd::new()?;
    /// assert_eq!(efd.wait_timeout(Duration::from_millis(10))?, None);
    ///
    /// let notifier = efd.notifier()?;
    /// std::thread::spawn(move || notifier.add(3));
    /// assert_eq!(efd.wait_timeout(Duration::from_secs(10))?, Some(3));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// The errors of `poll(2)` and of [`read`](EventFd::read) other than
    /// `WouldBlock` and `Interrupted` (both retried): with an open eventfd,
    /// [`io::ErrorKind::OutOfMemory`] (`ENOMEM` from `poll`) in practice.
    pub fn wait_timeout(&self, timeout: Duration) -> io::Result<Option<u64>> {
        crate::wait::wait_timeout(self.fd.as_fd(), timeout)
    }

    /// Returns whether reads take 1 (semaphore mode) rather than the whole
    /// counter.
    ///
    /// For an fd adopted on a kernel before Linux 6.2 the mode is unknown and
    /// this returns `false` (see
    /// [`TryFrom<OwnedFd>`](EventFd#impl-TryFrom%3COwnedFd%3E-for-EventFd)).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// let efd = async_eventfd::EventFd::builder().semaphore(true).build()?;
    /// assert!(efd.is_semaphore());
    /// # Ok(())
    /// # }
    /// ```
    pub fn is_semaphore(&self) -> bool {
        self.semaphore
    }

    /// Wraps an fd that eventfd(2) has just made with the given mode.
    pub(crate) fn from_created(fd: OwnedFd, semaphore: bool) -> EventFd {
        EventFd {
            fd,
            semaphore,
            mode_known: true,
        }
    }

    /// Wraps an adopted eventfd whose mode fdinfo told (`Some`), or did not
    /// (`None`).
    fn adopted(fd: OwnedFd, semaphore: Option<bool>) -> EventFd {
        EventFd {
            fd,
            semaphore: semaphore.unwrap_or(false),
            mode_known: semaphore.is_some(),
        }
    }

    /// What `TryFrom<OwnedFd>` makes of an eventfd on a kernel whose fdinfo
    /// does not tell the mode.
    #[cfg(all(test, feature = "tokio"))]
    pub(crate) fn adopted_with_unknown_mode(fd: OwnedFd) -> EventFd {
        EventFd::adopted(fd, None)
    }

    /// Whether a successful read may leave a count behind: semaphore mode, or
    /// an unknown mode (the rule for kernels before 6.2, on
    /// [`TryFrom<OwnedFd>`](EventFd#impl-TryFrom%3COwnedFd%3E-for-EventFd)).
    #[cfg(feature = "tokio")]
    pub(crate) fn may_be_semaphore(&self) -> bool {
        self.semaphore || !self.mode_known
    }

    /// Returns whether the fd is nonblocking, as `fcntl(F_GETFL)` reports it
    /// now (dups share the flag, so another handle may have changed it).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// let efd = async_eventfd::EventFd::builder().nonblocking(false).build()?;
    /// assert!(!efd.is_nonblocking()?);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// The errors of `fcntl(F_GETFL)`, which on an open fd has none in
    /// practice.
    pub fn is_nonblocking(&self) -> io::Result<bool> {
        Ok(status_flags(self.fd.as_fd())?.contains(OFlag::O_NONBLOCK))
    }

    /// Sets or clears `O_NONBLOCK` on the open file description (and so on
    /// every dup of it).
    #[cfg(feature = "tokio")]
    pub(crate) fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        let mut flags = status_flags(self.fd.as_fd())?;
        if flags.contains(OFlag::O_NONBLOCK) == nonblocking {
            return Ok(());
        }
        flags.set(OFlag::O_NONBLOCK, nonblocking);
        fcntl(self.fd.as_fd(), FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
        Ok(())
    }
}

/// The one implementation of [`EventFd::add`] and
/// [`Notifier::add`](crate::Notifier::add): one `write(2)`.
///
/// Async-signal-safe, error paths included: `io::Error::from(Errno)` and
/// `from_raw_os_error` pack the code into the error without allocating.
pub(crate) fn add(fd: BorrowedFd<'_>, n: u64) -> io::Result<()> {
    if n == u64::MAX {
        return Err(io::Error::from_raw_os_error(Errno::EINVAL as i32));
    }
    let written = nix::unistd::write(fd, &n.to_ne_bytes()).map_err(io::Error::from)?;
    if written != 8 {
        return Err(io::ErrorKind::WriteZero.into());
    }
    Ok(())
}

fn status_flags(fd: BorrowedFd<'_>) -> io::Result<OFlag> {
    let bits = fcntl(fd, FcntlArg::F_GETFL).map_err(io::Error::from)?;
    Ok(OFlag::from_bits_retain(bits))
}

fn fd_flags(fd: BorrowedFd<'_>) -> io::Result<FdFlag> {
    let bits = fcntl(fd, FcntlArg::F_GETFD).map_err(io::Error::from)?;
    Ok(FdFlag::from_bits_retain(bits))
}

#[allow(
    unsafe_code,
    reason = "the one place a raw fd from the kernel becomes owned"
)]
fn owned_from_new_fd(raw: RawFd) -> OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: `raw` was just returned by a successful fcntl(F_DUPFD*), so it is
    // a valid open fd that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(raw) }
}

impl fmt::Debug for EventFd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventFd")
            .field("fd", &self.fd.as_raw_fd())
            .field("semaphore", &self.semaphore)
            .finish()
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl From<EventFd> for OwnedFd {
    /// Hands the fd over without closing it.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::os::fd::OwnedFd;
    /// # fn main() -> std::io::Result<()> {
    /// let fd: OwnedFd = async_eventfd::EventFd::new()?.into();
    /// let back = async_eventfd::EventFd::try_from(fd)?;
    /// back.add(1)?;
    /// # Ok(())
    /// # }
    /// ```
    fn from(efd: EventFd) -> OwnedFd {
        efd.fd
    }
}

impl TryFrom<OwnedFd> for EventFd {
    type Error = io::Error;

    /// Adopts an fd received from elsewhere: inherited from a parent, passed
    /// with `SCM_RIGHTS`, or made by a C library.
    ///
    /// The fd is checked to be an eventfd (its `/proc/self/fd` link names
    /// `anon_inode:[eventfd]`). The semaphore mode is read from the
    /// `eventfd-semaphore:` line of `/proc/self/fdinfo/N`; the nonblocking
    /// flag stays as the fd has it (see [`EventFd::is_nonblocking`]).
    ///
    /// # Kernels before Linux 6.2
    ///
    /// Their fdinfo has no `eventfd-semaphore:` line, and the mode cannot be
    /// learned without changing the counter, so an adopted fd has an unknown
    /// mode and is treated as a semaphore: an `AsyncEventFd` made from it
    /// never clears readiness after a successful read, so no wakeup is lost
    /// whatever the mode (a counter-mode fd pays one extra `EAGAIN` read per
    /// wakeup; the opposite guess would strand the units a semaphore read
    /// leaves behind). [`EventFd::is_semaphore`] returns `false` there, and
    /// reads follow the kernel's mode either way.
    ///
    /// On failure the fd is dropped, and so closed.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::os::fd::OwnedFd;
    /// use async_eventfd::EventFd;
    ///
    /// # fn main() -> std::io::Result<()> {
    /// let original = EventFd::builder().semaphore(true).initial(2).build()?;
    /// let fd: OwnedFd = original.into();
    /// let adopted = EventFd::try_from(fd)?;
    /// // The kernel's mode rules the reads, on every kernel (`is_semaphore`
    /// // is true on Linux 6.2+, false before: see above).
    /// assert_eq!(adopted.read()?, 1);
    /// assert_eq!(adopted.read()?, 1);
    ///
    /// let not_an_eventfd: OwnedFd = std::fs::File::open("/dev/null")?.into();
    /// let err = EventFd::try_from(not_an_eventfd).unwrap_err();
    /// assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// - [`io::ErrorKind::InvalidInput`]: the fd is not an eventfd (a pipe, a
    ///   socket, a regular file...).
    /// - [`io::ErrorKind::NotFound`]: `/proc` is not mounted, so the fd cannot
    ///   be checked.
    fn try_from(fd: OwnedFd) -> io::Result<EventFd> {
        let raw = fd.as_raw_fd();
        let target = fs::read_link(format!("/proc/self/fd/{raw}"))?;
        if target.as_os_str() != "anon_inode:[eventfd]" {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("fd {raw} is not an eventfd (it is {})", target.display()),
            ));
        }
        let semaphore = fs::read_to_string(format!("/proc/self/fdinfo/{raw}"))
            .ok()
            .and_then(|info| semaphore_from_fdinfo(&info));
        Ok(EventFd::adopted(fd, semaphore))
    }
}

/// The mode an eventfd's fdinfo text tells: `None` without an
/// `eventfd-semaphore:` line (Linux before 6.2).
fn semaphore_from_fdinfo(info: &str) -> Option<bool> {
    info.lines()
        .find_map(|line| line.strip_prefix("eventfd-semaphore:"))
        .map(|value| value.trim() == "1")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/proc/self/fdinfo/N` of a semaphore eventfd on Linux 6.1 (no mode
    /// line) and on 6.2+.
    const FDINFO_6_1: &str = "pos:\t0\nflags:\t02004002\nmnt_id:\t15\nino:\t1057\n\
                              eventfd-count:                2\neventfd-id: 3\n";
    const FDINFO_6_2: &str = "pos:\t0\nflags:\t02004002\nmnt_id:\t15\nino:\t1057\n\
                              eventfd-count:                2\neventfd-id: 3\n\
                              eventfd-semaphore: 1\n";

    #[test]
    fn fdinfo_tells_the_mode_from_linux_6_2_only() {
        assert_eq!(semaphore_from_fdinfo(FDINFO_6_1), None);
        assert_eq!(semaphore_from_fdinfo(FDINFO_6_2), Some(true));
        let counter = FDINFO_6_2.replace("eventfd-semaphore: 1", "eventfd-semaphore: 0");
        assert_eq!(semaphore_from_fdinfo(&counter), Some(false));
    }

    /// The fallback a 6.1 kernel gets: a semaphore fd adopted without its
    /// mode reports counter mode, reads as the kernel says, and counts as a
    /// possible semaphore for `AsyncEventFd`.
    #[test]
    fn an_adopted_fd_of_unknown_mode_reads_exactly_and_may_be_a_semaphore() {
        let made = EventFd::builder()
            .semaphore(true)
            .initial(2)
            .build()
            .expect("eventfd");
        let adopted = EventFd::adopted(made.into(), semaphore_from_fdinfo(FDINFO_6_1));
        assert!(!adopted.is_semaphore());
        #[cfg(feature = "tokio")]
        assert!(adopted.may_be_semaphore());
        assert_eq!(adopted.read().expect("read 1"), 1);
        assert_eq!(adopted.read().expect("read 2"), 1);
        assert_eq!(
            adopted.read().expect_err("empty").kind(),
            io::ErrorKind::WouldBlock
        );
    }
}
