//! Fault injection with real syscall failures.
//!
//! Each case runs in a child process: this test binary, run again with
//! `EVENTFD_FAULT_CASE` naming the case, executing only the ignored `child`
//! test. The child makes a syscall fail for real, by a seccomp filter that
//! returns a chosen errno for one syscall (optionally only for one fd
//! number), by a lowered `RLIMIT_NOFILE`, or by a signal installed without
//! `SA_RESTART`. A filter can never be removed, and limits and signal
//! handlers belong to the whole process: the child keeps them from the
//! parent's other tests. The child prints one line: `ok`,
//! or `SKIP` with the reason (no seccomp here); a failed assertion exits
//! non-zero, and the parent test fails with the child's output.
//!
//! Each case asserts the exact `ErrorKind` and `raw_os_error`, that the
//! counter afterwards holds exactly what was added and not read, that no fd
//! was leaked, and that a later call works. The cases of `AsyncEventFd`
//! run with feature `tokio`; the others with any features.

mod util;

#[path = "faults/eintr.rs"]
mod eintr;
// The cases of `AsyncEventFd`'s registration with a runtime.
#[cfg(feature = "tokio")]
#[path = "faults/registration.rs"]
mod registration;

use std::io::{self, ErrorKind};
use std::os::fd::{AsRawFd, RawFd};

#[cfg(feature = "tokio")]
use async_eventfd::AsyncEventFd;
use async_eventfd::EventFd;
use nix::libc;
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

#[cfg(feature = "tokio")]
use util::Flavor;

/// Names the case a child runs.
const CASE_VAR: &str = "EVENTFD_FAULT_CASE";

/// What a case reports when it could not set its fault up.
type Outcome = Result<(), String>;

fn case(name: &str) -> fn() -> Outcome {
    match name {
        "eventfd2_emfile_seccomp" => || eventfd2_fails(libc::EMFILE),
        "eventfd2_enomem_seccomp" => || eventfd2_fails(libc::ENOMEM),
        "eventfd2_emfile_rlimit" => emfile_under_rlimit,
        #[cfg(feature = "tokio")]
        "epoll_ctl_enospc_on_registration" => || registration::registration_fails(libc::ENOSPC),
        #[cfg(feature = "tokio")]
        "epoll_ctl_enomem_on_registration" => || registration::registration_fails(libc::ENOMEM),
        #[cfg(feature = "tokio")]
        "dup_emfile_in_waiting_add_current_thread" => {
            || registration::dup_fails(Flavor::CurrentThread)
        }
        #[cfg(feature = "tokio")]
        "dup_emfile_in_waiting_add_multi_thread" => || registration::dup_fails(Flavor::MultiThread),
        #[cfg(feature = "tokio")]
        "epoll_ctl_enospc_in_waiting_add" => registration::write_registration_fails,
        "eintr_blocking_read" => eintr::interrupted_read,
        "eintr_blocking_add" => eintr::interrupted_add,
        "eintr_notifier_add" => eintr::interrupted_notifier_add,
        "eintr_wait_timeout" => eintr::interrupted_wait_timeout,
        other => panic!("no fault case named {other:?}"),
    }
}

/// The child's entry point; in the parent's own run it is ignored.
#[test]
#[ignore = "runs only in a child process started by the fault tests"]
fn child() {
    let Ok(name) = std::env::var(CASE_VAR) else {
        println!("no {CASE_VAR}: not a child of the fault tests, nothing to run");
        return;
    };
    match case(&name)() {
        // After libtest's `test child ... `, on a line of its own.
        Ok(()) => println!("\nfault case {name}: ok"),
        Err(why) => println!("\nfault case {name}: SKIP: {why}"),
    }
}

/// Runs `name` in a child process and asserts that it passed (or skipped,
/// saying why).
#[track_caller]
fn in_child(name: &str) {
    let output = util::child::run_test("child", &[(CASE_VAR, name.to_owned())]);
    assert!(output.status.success(), "fault case {name}: {output}");
    if let Some(line) = output.stdout.lines().find(|l| l.contains(": SKIP: ")) {
        println!("{line}");
        return;
    }
    assert!(
        output
            .stdout
            .lines()
            .any(|l| l == format!("fault case {name}: ok")),
        "the child did not run fault case {name}: {output}"
    );
}

/// `eventfd2` fails with `EMFILE` (a seccomp filter): `new`, `build` and
/// `AsyncEventFd::new` report it, and no fd is left behind.
#[test]
fn eventfd2_emfile_seccomp() {
    in_child("eventfd2_emfile_seccomp");
}

/// `eventfd2` fails with `ENOMEM`: `ErrorKind::OutOfMemory`, raw `ENOMEM`.
#[test]
fn eventfd2_enomem_seccomp() {
    in_child("eventfd2_enomem_seccomp");
}

/// A real `EMFILE` from the kernel, under a lowered `RLIMIT_NOFILE`; raising
/// it again makes `new` work.
#[test]
fn eventfd2_emfile_rlimit() {
    in_child("eventfd2_emfile_rlimit");
}

/// `epoll_ctl(EPOLL_CTL_ADD)` fails with `ENOSPC` (the `max_user_watches`
/// limit): `try_new` and `try_new_in` (from a plain thread) report it and
/// give the fd back unchanged and working, blocking or not; the conversion
/// to `io::Error` and `TryFrom<EventFd>` report it and close the fd; the
/// runtime keeps working.
#[cfg(feature = "tokio")]
#[test]
fn epoll_ctl_enospc_on_registration() {
    in_child("epoll_ctl_enospc_on_registration");
}

/// The same with `ENOMEM`.
#[cfg(feature = "tokio")]
#[test]
fn epoll_ctl_enomem_on_registration() {
    in_child("epoll_ctl_enomem_on_registration");
}

/// The `dup` inside an `add` that waits on a full counter fails with a real
/// `EMFILE`: the add fails, adds nothing, and a later waiting add works.
#[cfg(feature = "tokio")]
#[test]
fn dup_emfile_in_waiting_add_current_thread() {
    in_child("dup_emfile_in_waiting_add_current_thread");
}

/// The same on a multi-thread runtime.
#[cfg(feature = "tokio")]
#[test]
fn dup_emfile_in_waiting_add_multi_thread() {
    in_child("dup_emfile_in_waiting_add_multi_thread");
}

/// The write registration of a waiting `add` fails in `epoll_ctl`: the add
/// fails with `StorageFull`, adds nothing, leaks no fd, and a later add works.
#[cfg(feature = "tokio")]
#[test]
fn epoll_ctl_enospc_in_waiting_add() {
    in_child("epoll_ctl_enospc_in_waiting_add");
}

/// A signal without `SA_RESTART` interrupts a blocking `EventFd::read`:
/// `Interrupted`, raw `EINTR`, and no count is lost.
#[test]
fn eintr_blocking_read() {
    in_child("eintr_blocking_read");
}

/// A signal without `SA_RESTART` interrupts a blocking `EventFd::add` at
/// `MAX_COUNT`: `Interrupted`, raw `EINTR`, and nothing is added.
#[test]
fn eintr_blocking_add() {
    in_child("eintr_blocking_add");
}

/// A signal without `SA_RESTART` interrupts a `Notifier::add` blocked at
/// `MAX_COUNT` on a blocking fd: `Interrupted`, raw `EINTR`, nothing added.
#[test]
fn eintr_notifier_add() {
    in_child("eintr_notifier_add");
}

/// A signal without `SA_RESTART` interrupts `EventFd::wait_timeout` asleep
/// in `poll`, on blocking and nonblocking fds: the wait goes on, returns
/// the count added after the signal, and with nothing added runs its whole
/// timeout and returns `Ok(None)`.
#[test]
fn eintr_wait_timeout() {
    in_child("eintr_wait_timeout");
}

// ---- what the cases share -------------------------------------------------

/// Asserts that `result` failed with raw OS error `errno` and its exact
/// `ErrorKind`.
#[track_caller]
fn assert_os_error<T: std::fmt::Debug>(result: io::Result<T>, errno: i32) -> io::Error {
    let err = result.expect_err("expected an OS error");
    assert_eq!(err.raw_os_error(), Some(errno), "unexpected error {err:?}");
    let kind = match errno {
        libc::ENOMEM => ErrorKind::OutOfMemory,
        libc::ENOSPC => ErrorKind::StorageFull,
        libc::EINTR => ErrorKind::Interrupted,
        // std calls EMFILE `Uncategorized`, a kind stable Rust cannot name:
        // compare through std's own mapping (never `Other`, which is for
        // errors made by hand).
        libc::EMFILE => io::Error::from_raw_os_error(errno).kind(),
        _ => panic!("no expected kind for errno {errno}"),
    };
    assert_eq!(err.kind(), kind, "unexpected kind for {err:?}");
    assert_ne!(err.kind(), ErrorKind::Other, "the OS error was wrapped");
    err
}

/// Installs a seccomp filter on every thread of this process: `sysno` fails
/// with `errno` when every `(argument index, value)` of `args` matches; any
/// other syscall runs. `Err` says why seccomp is unavailable.
fn fail_syscall(sysno: i64, args: &[(u8, u64)], errno: i32) -> Outcome {
    let conditions = args
        .iter()
        .map(|&(index, value)| {
            SeccompCondition::new(index, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value)
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("seccomp condition: {e}"))?;
    let rules = if conditions.is_empty() {
        vec![]
    } else {
        vec![SeccompRule::new(conditions).map_err(|e| format!("seccomp rule: {e}"))?]
    };
    let arch = std::env::consts::ARCH
        .try_into()
        .map_err(|e| format!("seccomp has no filter for {}: {e}", std::env::consts::ARCH))?;
    let errno = u32::try_from(errno).expect("errno is positive");
    let filter = SeccompFilter::new(
        [(sysno, rules)].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(errno),
        arch,
    )
    .map_err(|e| format!("seccomp filter: {e}"))?;
    let program: BpfProgram = filter
        .try_into()
        .map_err(|e| format!("seccomp compile: {e}"))?;
    // Every thread: tokio's workers make syscalls on a test's behalf.
    seccompiler::apply_filter_all_threads(&program)
        .map_err(|e| format!("seccomp could not be installed: {e}"))
}

/// The number of open fds of this process.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("read /proc/self/fd")
        .count()
}

/// The fd number the next new fd will get (the lowest free one).
fn next_fd() -> RawFd {
    let probe = EventFd::new().expect("eventfd");
    probe.as_raw_fd()
}

/// Whether `fd` is open in this process.
#[cfg(feature = "tokio")]
fn is_open(fd: RawFd) -> bool {
    use nix::fcntl::{fcntl, FcntlArg};
    // SAFETY: F_GETFD only reads the flags of whatever `fd` is (or fails with
    // EBADF); the borrowed fd is used for this one call only.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    fcntl(borrowed, FcntlArg::F_GETFD).is_ok()
}

/// Lowers the soft `RLIMIT_NOFILE` so that no new fd can be opened, and
/// returns the previous limits for [`restore_nofile`].
fn exhaust_nofile() -> (u64, u64) {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    // A new fd gets the lowest free number, which must be below the limit.
    let limit = u64::try_from(next_fd()).expect("fd numbers are positive");
    setrlimit(Resource::RLIMIT_NOFILE, limit, hard).expect("setrlimit");
    (soft, hard)
}

fn restore_nofile((soft, hard): (u64, u64)) {
    setrlimit(Resource::RLIMIT_NOFILE, soft, hard).expect("setrlimit");
}

/// Asserts that `efd` holds exactly `expected` (reading it to 0), then that
/// it is empty.
#[track_caller]
fn assert_holds(efd: &EventFd, expected: u64) {
    let was_nonblocking = efd.is_nonblocking().expect("F_GETFL");
    util::set_nonblocking(efd, true);
    if expected != 0 {
        assert_eq!(efd.read().expect("read what is left"), expected);
    }
    util::assert_kind(efd.read(), ErrorKind::WouldBlock);
    util::set_nonblocking(efd, was_nonblocking);
}

// ---- eventfd2 ---------------------------------------------------------------

fn eventfd2_fails(errno: i32) -> Outcome {
    // tokio's own waker is an eventfd: the runtime comes before the filter.
    #[cfg(feature = "tokio")]
    let rt = util::runtime(Flavor::CurrentThread);
    let fds = open_fds();
    fail_syscall(libc::SYS_eventfd2, &[], errno)?;
    assert_os_error(EventFd::new(), errno);
    let builder = EventFd::builder()
        .initial(3)
        .semaphore(true)
        .nonblocking(false)
        .cloexec(false);
    assert_os_error(builder.build(), errno);
    #[cfg(feature = "tokio")]
    rt.block_on(async { assert_os_error(AsyncEventFd::new(), errno) });
    assert_eq!(open_fds(), fds, "a failed eventfd2 left an fd open");
    Ok(())
}

fn emfile_under_rlimit() -> Outcome {
    let fds = open_fds();
    let limits = exhaust_nofile();
    assert_os_error(EventFd::new(), libc::EMFILE);
    assert_os_error(EventFd::builder().initial(1).build(), libc::EMFILE);
    restore_nofile(limits);
    assert_eq!(open_fds(), fds, "a failed eventfd2 left an fd open");
    let efd = EventFd::builder()
        .initial(1)
        .build()
        .expect("eventfd after the limit rose");
    efd.add(2).expect("add");
    assert_holds(&efd, 3);
    Ok(())
}
