//! Helpers shared by the test files: timeouts that also catch lost wakeups,
//! fd flags as `fcntl` reports them, and a way to see that a thread is
//! blocked in a syscall without sleeping for a guessed time.

#![allow(dead_code, reason = "each test file uses a subset of the helpers")]

use std::fmt::Debug;
use std::future::Future;
use std::io::{self, ErrorKind};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};

pub mod child;
#[cfg(target_os = "linux")]
pub mod kernel;

/// The limit for an await that must finish: generous, since a loaded
/// machine (or `taskset -c 0`) may be slow; correctness never depends on it.
pub const LIMIT: Duration = Duration::from_secs(10);

/// Fails unless `elapsed` is clearly below `limit`.
///
/// A future whose waker was lost still completes when `tokio::time::timeout`
/// polls it once more at the deadline; finishing at 90% of the limit or later
/// is taken as that case.
#[track_caller]
fn assert_well_before(elapsed: Duration, limit: Duration, what: &str) {
    assert!(
        elapsed < limit.mul_f64(0.9),
        "{what} finished only after {elapsed:?} of a {limit:?} limit: \
         it was most likely woken by the timeout, not by its own waker"
    );
}

/// Awaits `fut`, failing if it does not finish within `limit`, or if it
/// finishes only at (90% or more of) the limit.
pub async fn must_finish<F: Future>(limit: Duration, fut: F) -> F::Output {
    let start = Instant::now();
    let outcome = tokio::time::timeout(limit, fut).await;
    let elapsed = start.elapsed();
    match outcome {
        Ok(value) => {
            assert_well_before(elapsed, limit, "the future");
            value
        }
        Err(_) => panic!("the future did not finish within {limit:?} (a lost wakeup?)"),
    }
}

/// [`must_finish`] with [`LIMIT`].
pub async fn finish<F: Future>(fut: F) -> F::Output {
    must_finish(LIMIT, fut).await
}

/// Receives from `rx`, failing on timeout, on a disconnected channel, or when
/// the value only arrives at (90% or more of) the limit.
#[track_caller]
pub fn recv_within<T>(rx: &mpsc::Receiver<T>, limit: Duration) -> T {
    let start = Instant::now();
    match rx.recv_timeout(limit) {
        Ok(value) => {
            assert_well_before(start.elapsed(), limit, "the receive");
            value
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("nothing received within {limit:?}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            panic!("the sender hung up (its thread panicked?)")
        }
    }
}

/// The runtime flavor a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// `Builder::new_current_thread`.
    CurrentThread,
    /// `Builder::new_multi_thread` with two workers.
    MultiThread,
}

/// Builds a runtime of `flavor` with I/O and time enabled.
pub fn runtime(flavor: Flavor) -> tokio::runtime::Runtime {
    let mut builder = match flavor {
        Flavor::CurrentThread => tokio::runtime::Builder::new_current_thread(),
        Flavor::MultiThread => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(2);
            builder
        }
    };
    builder.enable_all().build().expect("build a tokio runtime")
}

/// The limit for a whole test run by [`must_return`] / [`run_isolated`].
pub const TEST_LIMIT: Duration = Duration::from_secs(30);

/// Runs `f` on a thread of its own and returns its result, failing if it
/// does not return within `limit` (or only at 90% of it).
///
/// A future that spins (is always ready to run, never pending) hangs the
/// thread polling it, which no `tokio::time::timeout` can interrupt; this
/// watchdog turns that into a test failure instead of a hung test run.
#[track_caller]
pub fn must_return<T, F>(limit: Duration, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        // If the test thread gave up waiting, nobody cares about the result.
        if tx.send(f()).is_err() {
            eprintln!("a watched thread finished after its test gave up");
        }
    });
    let start = Instant::now();
    match rx.recv_timeout(limit) {
        Ok(value) => {
            assert_well_before(start.elapsed(), limit, "the test body");
            handle.join().expect("the watched thread");
            value
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("the test body did not return within {limit:?}: stuck in a busy loop or a lost wakeup")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => panic!("the watched thread ended without a result"),
        },
    }
}

/// Runs the future made by `f` on a fresh runtime of `flavor`, on a watched
/// thread (see [`must_return`], with [`TEST_LIMIT`]).
#[track_caller]
pub fn run_isolated<F, Fut>(flavor: Flavor, f: F) -> Fut::Output
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future,
    Fut::Output: Send + 'static,
{
    must_return(TEST_LIMIT, move || runtime(flavor).block_on(f()))
}

/// Whether `FD_CLOEXEC` is set, as `fcntl(F_GETFD)` reports it.
pub fn is_cloexec(fd: impl AsFd) -> bool {
    let bits = fcntl(fd.as_fd(), FcntlArg::F_GETFD).expect("fcntl(F_GETFD)");
    FdFlag::from_bits_retain(bits).contains(FdFlag::FD_CLOEXEC)
}

/// Whether `O_NONBLOCK` is set, as `fcntl(F_GETFL)` reports it.
pub fn is_nonblocking(fd: impl AsFd) -> bool {
    let bits = fcntl(fd.as_fd(), FcntlArg::F_GETFL).expect("fcntl(F_GETFL)");
    OFlag::from_bits_retain(bits).contains(OFlag::O_NONBLOCK)
}

/// Whether the kernel tells an eventfd's mode: its fdinfo has an
/// `eventfd-semaphore:` line (Linux 6.2+). Where it does not, an adopted fd
/// has an unknown mode and `is_semaphore()` is `false` (the rule is on
/// `TryFrom<OwnedFd> for EventFd`).
pub fn fdinfo_tells_mode(fd: impl AsFd) -> bool {
    let fd = fd.as_fd().as_raw_fd();
    std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
        .expect("read fdinfo")
        .lines()
        .any(|line| line.starts_with("eventfd-semaphore:"))
}

/// The running kernel's `(major, minor)` version, from
/// `/proc/sys/kernel/osrelease`, for the tests of behaviour that needs a
/// newer kernel than the crate (README, "Platforms").
pub fn kernel_version() -> (u32, u32) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("read osrelease");
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse().expect("a kernel version number"));
    let major = numbers.next().expect("the major version");
    let minor = numbers.next().expect("the minor version");
    (major, minor)
}

/// Sets or clears `O_NONBLOCK` directly with `fcntl`, behind the crate's back.
pub fn set_nonblocking(fd: impl AsFd, nonblocking: bool) {
    let bits = fcntl(fd.as_fd(), FcntlArg::F_GETFL).expect("fcntl(F_GETFL)");
    let mut flags = OFlag::from_bits_retain(bits);
    flags.set(OFlag::O_NONBLOCK, nonblocking);
    fcntl(fd.as_fd(), FcntlArg::F_SETFL(flags)).expect("fcntl(F_SETFL)");
}

/// The syscall a thread is blocked in, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syscall {
    /// `read(2)`.
    Read,
    /// `write(2)`.
    Write,
    /// `poll(2)` or `ppoll(2)` (whichever libc's `poll` makes), with the fd
    /// first in its `pollfd` array.
    Poll,
}

impl Syscall {
    fn is(self, number: i64) -> bool {
        match self {
            Syscall::Read => number == nix::libc::SYS_read,
            Syscall::Write => number == nix::libc::SYS_write,
            Syscall::Poll => number == nix::libc::SYS_ppoll || is_legacy_poll(number),
        }
    }

    /// The fd the call is on, from its first argument as `/proc` shows it.
    fn fd(self, tid: i32, first_arg: u64) -> Option<i64> {
        match self {
            Syscall::Read | Syscall::Write => i64::try_from(first_arg).ok(),
            Syscall::Poll => first_polled_fd(tid, first_arg),
        }
    }
}

/// Whether `number` is `poll(2)`, which newer architectures do not have.
#[cfg(any(target_arch = "x86_64", target_arch = "x86", target_arch = "arm"))]
fn is_legacy_poll(number: i64) -> bool {
    number == nix::libc::SYS_poll
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "x86", target_arch = "arm")))]
fn is_legacy_poll(_: i64) -> bool {
    false
}

/// The fd of the first `pollfd` at `address` in this process, read through
/// `/proc/self/mem`: the array lives (on the polling thread's stack) until the
/// call returns, and the caller checks afterwards that it has not.
fn first_polled_fd(tid: i32, address: u64) -> Option<i64> {
    use std::os::unix::fs::FileExt;
    let mem = std::fs::File::open(format!("/proc/self/task/{tid}/mem")).ok()?;
    // `struct pollfd` starts with its `int fd`.
    let mut fd = [0u8; 4];
    mem.read_exact_at(&mut fd, address).ok()?;
    Some(i64::from(i32::from_ne_bytes(fd)))
}

/// The calling thread's kernel thread id, to hand to
/// [`wait_until_blocked_in`].
pub fn thread_id() -> i32 {
    nix::unistd::gettid().as_raw()
}

/// Waits until thread `tid` of this process sleeps inside `syscall` on `fd`,
/// as `/proc/self/task/<tid>/syscall` and `/proc/self/task/<tid>/stat` show.
///
/// This proves the thread is blocked in the kernel rather than guessing it
/// with a sleep: the short pauses between looks only give it time to get
/// there, and the assertions that follow never depend on their length.
///
/// # Panics
///
/// If the thread is not seen blocked there within [`LIMIT`].
#[track_caller]
pub fn wait_until_blocked_in(tid: i32, syscall: Syscall, fd: impl AsRawFd) {
    let fd = fd.as_raw_fd();
    let start = Instant::now();
    loop {
        if is_blocked_in(tid, syscall, fd) {
            return;
        }
        assert!(
            start.elapsed() < LIMIT,
            "thread {tid} was not seen blocked in {syscall:?} on fd {fd} within {LIMIT:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Whether thread `tid` sleeps inside `syscall` on `fd` right now: the
/// single look of [`wait_until_blocked_in`], for a caller that must also
/// watch for the call ending.
pub fn is_blocked_in(tid: i32, syscall: Syscall, fd: i32) -> bool {
    let in_call = || {
        let Ok(line) = std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall")) else {
            return false;
        };
        let mut fields = line.split_whitespace();
        let number = fields.next().and_then(|n| n.parse::<i64>().ok());
        let first_arg = fields
            .next()
            .and_then(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).ok());
        match (number, first_arg) {
            (Some(number), Some(arg)) => {
                syscall.is(number) && syscall.fd(tid, arg) == Some(i64::from(fd))
            }
            _ => false,
        }
    };
    if !in_call() {
        return false;
    }
    // Inside the syscall is not enough: it must be asleep there ('S').
    let Ok(stat) = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")) else {
        return false;
    };
    // The state follows the parenthesised command name, which may hold spaces.
    let asleep = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        == Some("S");
    // Still there after the look at its arguments (see `first_polled_fd`).
    asleep && in_call()
}

#[cfg(feature = "tokio")]
pub mod tasks;

/// Generates `name::current_thread` and `name::multi_thread` from one async
/// body, each run by [`run_isolated`] on a fresh runtime of that flavor.
#[cfg(feature = "tokio")]
#[allow(unused_macros, reason = "only the async test files use it")]
///
/// With `serial = path;` first, each test holds the guard that `path()`
/// returns while it runs (for tests that measure the whole process).
macro_rules! both_flavors {
    (serial = $serial:path; $($rest:tt)*) => {
        both_flavors!(@tests [Some($serial())] $($rest)*);
    };
    (@tests [$hold:expr] $($(#[$meta:meta])* async fn $name:ident() $body:block)*) => {
        $(
            $(#[$meta])*
            mod $name {
                #[allow(unused_imports, reason = "not every body uses every import")]
                use super::*;

                #[test]
                fn current_thread() {
                    let _serial = $hold;
                    util::run_isolated(util::Flavor::CurrentThread, || async $body)
                }

                #[test]
                fn multi_thread() {
                    let _serial = $hold;
                    util::run_isolated(util::Flavor::MultiThread, || async $body)
                }
            }
        )*
    };
    ($($rest:tt)*) => {
        both_flavors!(@tests [None::<()>] $($rest)*);
    };
}

/// Asserts that `result` is an error of `kind`, and returns it.
#[track_caller]
pub fn assert_kind<T: Debug>(result: io::Result<T>, kind: ErrorKind) -> io::Error {
    let err = result.expect_err("expected an error");
    assert_eq!(err.kind(), kind, "unexpected error {err:?}");
    err
}

/// Asserts that `result` is the error an `AsyncEventFd` gives once its
/// runtime has shut down: kind `Other`, holding a `RuntimeShutdown`.
#[cfg(feature = "tokio")]
#[track_caller]
pub fn assert_shutdown_error<T: Debug>(result: io::Result<T>) {
    let err = assert_kind(result, ErrorKind::Other);
    assert!(
        err.get_ref()
            .and_then(|inner| inner.downcast_ref::<async_eventfd::RuntimeShutdown>())
            .is_some(),
        "not a RuntimeShutdown: {err:?}"
    );
}

/// A fresh `AsyncEventFd` in counter mode on the current runtime.
#[cfg(feature = "tokio")]
pub fn new_efd() -> async_eventfd::AsyncEventFd {
    async_eventfd::AsyncEventFd::new().expect("AsyncEventFd::new")
}

/// A semaphore-mode `AsyncEventFd` holding `initial` units.
#[cfg(feature = "tokio")]
pub fn semaphore_efd(initial: u32) -> async_eventfd::AsyncEventFd {
    let efd = async_eventfd::EventFd::builder()
        .semaphore(true)
        .initial(initial)
        .build()
        .expect("build a semaphore eventfd");
    async_eventfd::AsyncEventFd::try_from(efd).expect("register")
}

/// More reads (each with a count waiting) than any back-off `read` may start
/// with before it tries `read(2)` ahead of readiness.
#[cfg(feature = "tokio")]
pub const WARM_UP_READS: usize = 1_100;

/// Reads [`WARM_UP_READS`] single counts, so that later reads run in the
/// read-first state as well as in the readiness-first state of a fresh fd.
#[cfg(feature = "tokio")]
pub async fn warm_up(efd: &async_eventfd::AsyncEventFd) {
    for _ in 0..WARM_UP_READS {
        efd.try_add(1).expect("try_add");
        assert_eq!(finish(efd.read()).await.expect("warm-up read"), 1);
    }
    assert_kind(efd.try_read(), ErrorKind::WouldBlock);
}

/// Starts `threads` plain threads, each adding 1 `adds` times to a clone of
/// `efd`; join them to see that every add succeeded.
pub fn thread_writers(
    efd: &async_eventfd::EventFd,
    threads: u64,
    adds: u64,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..threads)
        .map(|_| {
            let writer = efd.try_clone().expect("try_clone");
            std::thread::spawn(move || {
                for _ in 0..adds {
                    writer.add(1).expect("add from a plain thread");
                }
            })
        })
        .collect()
}
