//! Conversions with `vmm_sys_util::eventfd::EventFd` (feature
//! `vmm-sys-util`): the fd moves, neither closed nor duplicated; the counter
//! and the modes come along; a non-eventfd is refused.

#![cfg(feature = "vmm-sys-util")]

mod util;

use std::io::ErrorKind;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd};

use async_eventfd::{EventFd, MAX_COUNT};
use nix::errno::Errno;
use vmm_sys_util::eventfd::{EventFd as VmmEventFd, EFD_NONBLOCK, EFD_SEMAPHORE};

use util::{assert_kind, is_cloexec, is_nonblocking};

#[test]
fn into_vmm_keeps_the_fd_number_the_counter_and_the_flags() {
    let efd = EventFd::builder().initial(5).build().expect("build");
    efd.add(37).expect("add");
    let fd = efd.as_raw_fd();
    let vmm = VmmEventFd::from(efd);
    assert_eq!(
        vmm.as_raw_fd(),
        fd,
        "the fd was handed over, not duplicated"
    );
    assert!(is_nonblocking(vmm_fd(&vmm)));
    assert!(is_cloexec(vmm_fd(&vmm)));
    assert_eq!(vmm.read().expect("vmm read"), 42);
    // Nonblocking as before: the empty counter is EAGAIN, not a wait.
    let err = assert_kind(vmm.read(), ErrorKind::WouldBlock);
    assert_eq!(err.raw_os_error(), Some(Errno::EAGAIN as i32));
}

#[test]
fn from_vmm_keeps_the_fd_number_and_the_counter() {
    let vmm = VmmEventFd::new(EFD_NONBLOCK).expect("vmm EventFd::new");
    vmm.write(9).expect("vmm write");
    let fd = vmm.as_raw_fd();
    let efd = EventFd::try_from(vmm).expect("adopt");
    assert_eq!(
        efd.as_raw_fd(),
        fd,
        "the fd was handed over, not duplicated"
    );
    assert!(!efd.is_semaphore());
    assert!(efd.is_nonblocking().expect("is_nonblocking"));
    assert_eq!(efd.read().expect("read"), 9);
}

#[test]
fn from_vmm_reads_the_semaphore_mode_and_the_blocking_flag_from_the_fd() {
    let vmm = VmmEventFd::new(EFD_SEMAPHORE).expect("vmm EventFd::new");
    vmm.write(2).expect("vmm write");
    let told = util::fdinfo_tells_mode(vmm_fd(&vmm));
    let efd = EventFd::try_from(vmm).expect("adopt");
    // Linux 6.2+ tells the mode; before, it is unknown and reported as
    // counter mode, while the reads below still follow the kernel's mode.
    assert_eq!(efd.is_semaphore(), told);
    assert!(!efd.is_nonblocking().expect("is_nonblocking"));
    assert_eq!(efd.read().expect("read"), 1);
    assert_eq!(efd.read().expect("read"), 1);
}

#[test]
fn a_round_trip_both_ways_keeps_the_fd_and_a_full_counter() {
    let efd = EventFd::new().expect("EventFd::new");
    efd.add(MAX_COUNT).expect("fill");
    let fd = efd.as_raw_fd();
    let vmm = VmmEventFd::from(efd);
    let back = EventFd::try_from(vmm).expect("adopt back");
    assert_eq!(back.as_raw_fd(), fd);
    let err = assert_kind(back.add(1), ErrorKind::WouldBlock);
    assert_eq!(err.raw_os_error(), Some(Errno::EAGAIN as i32));
    assert_eq!(back.read().expect("read"), MAX_COUNT);
}

#[test]
fn a_clone_made_on_the_vmm_side_shares_the_counter_after_conversion() {
    let efd = EventFd::new().expect("EventFd::new");
    let vmm = VmmEventFd::from(efd.try_clone().expect("try_clone"));
    let vmm_clone = vmm.try_clone().expect("vmm try_clone");
    vmm_clone.write(4).expect("vmm write");
    assert_eq!(efd.read().expect("read"), 4);
    let notifier = efd.notifier().expect("notifier");
    notifier.notify().expect("notify");
    assert_eq!(vmm.read().expect("vmm read"), 1);
}

#[test]
fn a_vmm_eventfd_holding_another_kind_of_fd_is_invalid_input() {
    let file = std::fs::File::open("/dev/null").expect("open /dev/null");
    let raw = file.into_raw_fd();
    // SAFETY: `raw` is an open fd that `into_raw_fd` released, so the
    // vmm-sys-util `EventFd` is its only owner (it does not check the kind).
    let not_an_eventfd = unsafe { VmmEventFd::from_raw_fd(raw) };
    let err = assert_kind(EventFd::try_from(not_an_eventfd), ErrorKind::InvalidInput);
    assert!(
        err.to_string().contains("not an eventfd"),
        "unexpected message: {err}"
    );
}

/// A borrowed view of a vmm-sys-util eventfd for the fcntl helpers, which
/// take `AsFd` (the vmm-sys-util type has only `AsRawFd`).
fn vmm_fd(vmm: &VmmEventFd) -> BorrowedFd<'_> {
    // SAFETY: the fd stays open while `vmm` is borrowed.
    unsafe { BorrowedFd::borrow_raw(vmm.as_raw_fd()) }
}
