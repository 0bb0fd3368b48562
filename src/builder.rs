//! `EventFdBuilder`: the options of a new eventfd.

use std::io;

use nix::sys::eventfd::EfdFlags;

use crate::EventFd;

/// Builds an [`EventFd`] with chosen options, like std's `OpenOptions`.
///
/// Defaults: initial value 0, counter mode, nonblocking, close-on-exec.
///
/// # Examples
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// let efd = async_eventfd::EventFd::builder()
///     .initial(1)
///     .nonblocking(true)
///     .cloexec(true)
///     .build()?;
/// assert_eq!(efd.read()?, 1);
/// # Ok(())
/// # }
/// ```
///
/// # References
///
/// [eventfd(2)](https://man7.org/linux/man-pages/man2/eventfd.2.html)
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct EventFdBuilder {
    initial: u32,
    semaphore: bool,
    nonblocking: bool,
    cloexec: bool,
}

impl Default for EventFdBuilder {
    fn default() -> EventFdBuilder {
        EventFdBuilder {
            initial: 0,
            semaphore: false,
            nonblocking: true,
            cloexec: true,
        }
    }
}

impl EventFdBuilder {
    /// Sets the counter's initial value (default 0).
    ///
    /// eventfd(2) takes an `unsigned int`, hence `u32`; use
    /// [`EventFd::add`] for more.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// let efd = async_eventfd::EventFd::builder().initial(42).build()?;
    /// assert_eq!(efd.read()?, 42);
    /// # Ok(())
    /// # }
    /// ```
    pub fn initial(mut self, value: u32) -> EventFdBuilder {
        self.initial = value;
        self
    }

    /// Chooses semaphore mode (default `false`): each read takes 1 instead of
    /// the whole counter.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// let efd = async_eventfd::EventFd::builder().semaphore(true).build()?;
    /// efd.add(2)?;
    /// assert_eq!(efd.read()?, 1);
    /// assert_eq!(efd.read()?, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn semaphore(mut self, semaphore: bool) -> EventFdBuilder {
        self.semaphore = semaphore;
        self
    }

    /// Chooses nonblocking mode (default `true`). A blocking `EventFd` waits
    /// in [`EventFd::read`] while empty and in [`EventFd::add`] while full.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// let efd = async_eventfd::EventFd::builder().nonblocking(false).build()?;
    /// efd.add(1)?;
    /// assert_eq!(efd.read()?, 1); // would block if the counter were 0
    /// # Ok(())
    /// # }
    /// ```
    pub fn nonblocking(mut self, nonblocking: bool) -> EventFdBuilder {
        self.nonblocking = nonblocking;
        self
    }

    /// Chooses close-on-exec (default `true`). Turn it off only to hand the
    /// fd to a program started with `exec`.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// let inheritable = async_eventfd::EventFd::builder().cloexec(false).build()?;
    /// # let _ = inheritable;
    /// # Ok(())
    /// # }
    /// ```
    pub fn cloexec(mut self, cloexec: bool) -> EventFdBuilder {
        self.cloexec = cloexec;
        self
    }

    /// Creates the eventfd with one `eventfd2(2)` call.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// let efd = async_eventfd::EventFd::builder().build()?;
    /// assert!(efd.is_nonblocking()?);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// The errors of eventfd(2), with the raw OS error kept:
    ///
    /// - `EMFILE`/`ENFILE`: too many open files in this process / in the
    ///   system. Their [`kind`](io::Error::kind) is one that stable Rust
    ///   cannot name (it prints as `Uncategorized`, and is not
    ///   [`io::ErrorKind::Other`]): recognise them by
    ///   `err.raw_os_error() == Some(libc::EMFILE)` (or `libc::ENFILE`).
    /// - `ENOMEM`: [`io::ErrorKind::OutOfMemory`].
    pub fn build(self) -> io::Result<EventFd> {
        let mut flags = EfdFlags::empty();
        flags.set(EfdFlags::EFD_SEMAPHORE, self.semaphore);
        flags.set(EfdFlags::EFD_NONBLOCK, self.nonblocking);
        flags.set(EfdFlags::EFD_CLOEXEC, self.cloexec);
        let efd = nix::sys::eventfd::EventFd::from_value_and_flags(self.initial, flags)
            .map_err(io::Error::from)?;
        Ok(EventFd::from_created(efd.into(), self.semaphore))
    }
}
