//! [`EventFd::wait_timeout`](crate::EventFd::wait_timeout): a plain thread
//! waits for the counter, with a deadline.
//!
//! The design: `poll(2)` for `POLLIN` with the time left, then a read that
//! cannot wait, `preadv2(2)` with `RWF_NOWAIT`; on `EAGAIN` (another reader
//! of the same counter took it between the two calls), poll again with the
//! time left. A plain `read(2)` after the poll would be wrong on a blocking
//! fd: if another reader won that race, the read would sleep until the next
//! add, maybe forever, whatever the timeout. Switching the fd to nonblocking
//! for the read is no fix either: `O_NONBLOCK` belongs to the open file
//! description, so every dup (another thread's handle, a child's) would see
//! it change. `RWF_NOWAIT` asks for "don't wait" on this one call only; the
//! eventfd supports it since Linux 5.12, and reads through it exactly as
//! `read(2)` does.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::libc;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// Waits up to `timeout` for the counter to be non-zero and reads it.
pub(crate) fn wait_timeout(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<Option<u64>> {
    // No deadline if `now + timeout` does not fit an `Instant`: wait "forever"
    // in slices of `PollTimeout::MAX`.
    let deadline = Instant::now().checked_add(timeout);
    let mut left = timeout;
    loop {
        match poll_in(fd, left) {
            Ok(true) => match read_nowait(fd) {
                Ok(value) => return Ok(Some(value)),
                // Another reader took the count after the poll: wait again.
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            },
            // Poll's own timeout, or a signal: both go round with the time
            // left, which ends the loop once it reaches zero.
            Ok(false) => {}
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
        if let Some(deadline) = deadline {
            left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
        }
    }
}

/// One `poll(2)` for `POLLIN`; `Ok(true)` if the fd is readable.
fn poll_in(fd: BorrowedFd<'_>, left: Duration) -> io::Result<bool> {
    // Milliseconds rounded up, so the wait is never shorter than asked: a
    // sub-millisecond rest rounded down to 0 would spin.
    let millis = i32::try_from(left.as_nanos().div_ceil(1_000_000)).unwrap_or(i32::MAX);
    let timeout = PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX);
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    let ready = poll(&mut fds, timeout).map_err(io::Error::from)?;
    // POLLERR alone (an overflowed counter) also comes with POLLIN, and a
    // read then returns u64::MAX; nothing else is expected on an eventfd.
    Ok(ready > 0)
}

/// Reads the counter as `read(2)` does, but fails with `WouldBlock` instead
/// of waiting, whatever the fd's blocking flag.
fn read_nowait(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut buf = [0u8; 8];
    let n = match preadv2_nowait(fd, &mut buf) {
        // Before Linux 5.12 (no RWF_NOWAIT on eventfds) or without preadv2
        // at all: a plain read, which on a blocking fd that lost the race
        // above waits for the next add. Documented on `wait_timeout`.
        Err(Errno::EOPNOTSUPP | Errno::ENOSYS) => {
            nix::unistd::read(fd, &mut buf).map_err(io::Error::from)?
        }
        other => other.map_err(io::Error::from)?,
    };
    if n != buf.len() {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(u64::from_ne_bytes(buf))
}

/// `preadv2(fd, [buf], offset -1, RWF_NOWAIT)`, as a raw syscall: the libc
/// wrapper is missing from glibc before 2.26 and from Android before API 33,
/// and a missing symbol would stop the program from loading at all.
#[allow(
    unsafe_code,
    reason = "preadv2 writes at most `buf.len()` bytes into `buf`, which outlives the call"
)]
fn preadv2_nowait(fd: BorrowedFd<'_>, buf: &mut [u8; 8]) -> Result<usize, Errno> {
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // Every argument as a `c_long`, the width syscall(2) reads. The offset
    // goes in two halves (low, high), as the kernel's preadv2 takes it on
    // every architecture; -1 in both is offset -1: "the current position",
    // as read(2) (an eventfd has none to move).
    let args: [libc::c_long; 6] = [
        libc::c_long::from(fd.as_raw_fd()),
        &iov as *const libc::iovec as libc::c_long,
        1,
        -1,
        -1,
        libc::c_long::from(libc::RWF_NOWAIT),
    ];
    // SAFETY: `iov` describes `buf`, 8 writable bytes borrowed mutably for
    // the whole call, and `iov` itself lives until it returns; `fd` is
    // borrowed, so it stays open.
    let n = unsafe {
        libc::syscall(
            libc::SYS_preadv2,
            args[0],
            args[1],
            args[2],
            args[3],
            args[4],
            args[5],
        )
    };
    Errno::result(n).map(|n| usize::try_from(n).unwrap_or(0))
}
