//! Conversions with [`vmm_sys_util::eventfd::EventFd`], the eventfd of the
//! rust-vmm crates (kvm-ioctls' `register_ioevent` and `register_irqfd` take
//! one).
//!
//! That type has no `AsFd`, `From<OwnedFd>` or `Into<OwnedFd>`, only the raw
//! fd traits, so each way crosses through a `RawFd` whose ownership moves
//! with it: the fd is handed over, never duplicated or closed.

use std::io;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};

use crate::EventFd;

#[cfg_attr(docsrs, doc(cfg(feature = "vmm-sys-util")))]
#[allow(
    unsafe_code,
    reason = "FromRawFd needs an fd that is open and owned by no one else: `into_raw_fd` just released it"
)]
impl From<EventFd> for vmm_sys_util::eventfd::EventFd {
    /// Hands the fd over to vmm-sys-util without closing it: the same fd
    /// number, the same counter, the same flags.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::os::fd::AsRawFd;
    ///
    /// # fn main() -> std::io::Result<()> {
    /// let efd = async_eventfd::EventFd::new()?;
    /// efd.add(2)?;
    /// let fd = efd.as_raw_fd();
    /// let vmm: vmm_sys_util::eventfd::EventFd = efd.into();
    /// assert_eq!(vmm.as_raw_fd(), fd);
    /// vmm.write(3)?;
    /// assert_eq!(vmm.read()?, 5);
    /// # Ok(())
    /// # }
    /// ```
    fn from(efd: EventFd) -> vmm_sys_util::eventfd::EventFd {
        let raw = OwnedFd::from(efd).into_raw_fd();
        // SAFETY: `raw` is an open eventfd whose only owner, the `OwnedFd`,
        // gave it up above; the vmm-sys-util `EventFd` becomes its one owner
        // and closes it on drop.
        unsafe { vmm_sys_util::eventfd::EventFd::from_raw_fd(raw) }
    }
}

#[cfg_attr(docsrs, doc(cfg(feature = "vmm-sys-util")))]
#[allow(
    unsafe_code,
    reason = "FromRawFd needs an fd that is open and owned by no one else: `into_raw_fd` just released it"
)]
impl TryFrom<vmm_sys_util::eventfd::EventFd> for EventFd {
    type Error = io::Error;

    /// Adopts a vmm-sys-util eventfd, checked as
    /// [`TryFrom<OwnedFd>`](EventFd#impl-TryFrom%3COwnedFd%3E-for-EventFd)
    /// checks any fd: the same fd number and counter, the semaphore mode
    /// (where the kernel tells it, Linux 6.2+) and nonblocking flag read from
    /// the fd.
    ///
    /// vmm-sys-util's `FromRawFd` accepts any fd, so its `EventFd` may hold
    /// something else; that is refused here. On failure the fd is closed, as
    /// `TryFrom<OwnedFd>` does.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_eventfd::EventFd;
    /// use vmm_sys_util::eventfd::{EventFd as VmmEventFd, EFD_NONBLOCK, EFD_SEMAPHORE};
    ///
    /// # fn main() -> std::io::Result<()> {
    /// let vmm = VmmEventFd::new(EFD_NONBLOCK | EFD_SEMAPHORE)?;
    /// vmm.write(2)?;
    /// let efd = EventFd::try_from(vmm)?;
    /// // Reads follow the kernel's mode on every kernel (`is_semaphore` is
    /// // true on Linux 6.2+, false before).
    /// assert_eq!(efd.read()?, 1);
    /// assert_eq!(efd.read()?, 1);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As `TryFrom<OwnedFd>`:
    /// - [`io::ErrorKind::InvalidInput`]: the fd is not an eventfd.
    /// - [`io::ErrorKind::NotFound`]: `/proc` is not mounted, so the fd
    ///   cannot be checked.
    fn try_from(vmm: vmm_sys_util::eventfd::EventFd) -> io::Result<EventFd> {
        let raw = vmm.into_raw_fd();
        // SAFETY: `raw` is open (the vmm-sys-util `EventFd` owned it until
        // `into_raw_fd` gave it up above), and nothing else owns it now.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        EventFd::try_from(fd)
    }
}
