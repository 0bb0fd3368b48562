//! Fork: child processes write to a counter whose tasks are waiting in the
//! parent; the parent's tasks read every unit, exactly.
//!
//! The counter is made with close-on-exec off, as a program that hands its
//! eventfd to children does. Two ways in:
//!
//! - `fork` without `exec`: the child inherits the very fd the parent's
//!   runtime has registered. The test process is multi-threaded (libtest,
//!   tokio's workers, the watchdog), and after `fork` the child has only the
//!   forking thread: a lock another thread held (the allocator's, stdout's)
//!   stays locked forever. So the child calls only async-signal-safe
//!   functions: `EventFd::add` (one `write(2)`, no allocation, no lock, and
//!   documented as async-signal-safe) and `_exit` (no atexit handlers, no
//!   stdio flush, no unwinding back into the test harness). It reports
//!   through its exit status alone.
//! - `exec`: this test binary runs again, finds the inherited fd number in
//!   its environment, adopts it with `TryFrom<OwnedFd>` and adds. The default
//!   (close-on-exec on) is checked too: that fd does not reach the child.

#![cfg(feature = "tokio")]

#[macro_use]
mod util;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use async_eventfd::{AsyncEventFd, EventFd};
use nix::libc;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use util::{finish, is_cloexec};

/// Reader tasks waiting on the counter.
const READERS: usize = 4;
/// Child processes, each adding its share.
const CHILDREN: u64 = 3;
/// Adds per child (counter mode): child `c` adds `c + 1` this many times.
const ADDS: u64 = 500;

/// A counter with close-on-exec off, registered with the current runtime.
fn inheritable(semaphore: bool) -> Arc<AsyncEventFd> {
    let efd = EventFd::builder()
        .semaphore(semaphore)
        .cloexec(false)
        .build()
        .expect("eventfd");
    assert!(!is_cloexec(&efd));
    Arc::new(AsyncEventFd::try_from(efd).expect("register"))
}

/// Starts [`READERS`] tasks that read until aborted, sending each value, and
/// returns once every one of them has started.
async fn start_readers(
    efd: &Arc<AsyncEventFd>,
) -> (Vec<JoinHandle<()>>, mpsc::UnboundedReceiver<u64>) {
    let (values, values_rx) = mpsc::unbounded_channel();
    let (started, mut started_rx) = mpsc::unbounded_channel();
    let readers = (0..READERS)
        .map(|_| {
            let efd = Arc::clone(efd);
            let values = values.clone();
            let started = started.clone();
            tokio::spawn(async move {
                started.send(()).expect("report start");
                loop {
                    let value = efd.read().await.expect("read");
                    values.send(value).expect("send the value read");
                }
            })
        })
        .collect();
    for _ in 0..READERS {
        finish(started_rx.recv()).await.expect("a reader started");
    }
    // Let them reach their first (pending) read before anyone forks.
    tokio::task::yield_now().await;
    (readers, values_rx)
}

/// Receives values until they sum to `expected` (failing past it), then
/// checks that the counter is empty and stops the readers.
async fn read_exactly(
    efd: &AsyncEventFd,
    readers: Vec<JoinHandle<()>>,
    mut values: mpsc::UnboundedReceiver<u64>,
    expected: u64,
) -> u64 {
    let mut sum = 0;
    let mut reads = 0;
    while sum < expected {
        sum += finish(values.recv()).await.expect("a reader died");
        reads += 1;
    }
    assert_eq!(sum, expected, "the readers read more than was added");
    util::assert_kind(efd.try_read(), std::io::ErrorKind::WouldBlock);
    for reader in readers {
        reader.abort();
        // An aborted reader was waiting on an empty counter: it read nothing.
        assert!(finish(reader).await.expect_err("aborted").is_cancelled());
    }
    assert!(
        values.try_recv().is_err(),
        "a value read after the sum was reached"
    );
    reads
}

/// Forks a child that adds `n` to `efd`, `times` times, then `_exit`s: 0 if
/// every add succeeded, 1 otherwise.
fn fork_adder(efd: &EventFd, n: u64, times: u64) -> Pid {
    // SAFETY: the child runs only async-signal-safe code (see the module
    // docs): `EventFd::add` is one write(2), allocation- and lock-free even on
    // its error path, and `_exit` leaves without running any Rust or libc
    // cleanup. It returns nowhere: no destructor of the parent's state runs.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Parent { child } => child,
        ForkResult::Child => {
            let mut code = 0;
            for _ in 0..times {
                if efd.add(n).is_err() {
                    code = 1;
                    break;
                }
            }
            // SAFETY: `_exit` is async-signal-safe and never returns.
            unsafe { libc::_exit(code) }
        }
    }
}

/// Reaps `child` and asserts that it exited with status 0.
async fn assert_exited_ok(child: Pid) {
    let status = finish(tokio::task::spawn_blocking(move || waitpid(child, None)))
        .await
        .expect("join the reaper")
        .expect("waitpid");
    assert_eq!(status, WaitStatus::Exited(child, 0), "child {child}");
}

both_flavors! {
    /// Forked children add while four tasks wait (counter mode): the sum
    /// read is exactly the sum added.
    async fn forked_children_add_while_tasks_wait() {
        let efd = inheritable(false);
        let (readers, values) = start_readers(&efd).await;
        let children: Vec<Pid> = (0..CHILDREN)
            .map(|c| fork_adder(efd.get_ref(), c + 1, ADDS))
            .collect();
        for child in children {
            assert_exited_ok(child).await;
        }
        let expected = ADDS * (1..=CHILDREN).sum::<u64>();
        read_exactly(&efd, readers, values, expected).await;
    }

    /// Forked children each add one batch to a semaphore counter while four
    /// tasks wait: exactly one read of 1 per unit.
    async fn forked_children_feed_a_semaphore_while_tasks_wait() {
        let efd = inheritable(true);
        let (readers, values) = start_readers(&efd).await;
        let children: Vec<Pid> = (0..CHILDREN)
            .map(|c| fork_adder(efd.get_ref(), 100 * (c + 1), 1))
            .collect();
        for child in children {
            assert_exited_ok(child).await;
        }
        let expected = 100 * (1..=CHILDREN).sum::<u64>();
        let reads = read_exactly(&efd, readers, values, expected).await;
        assert_eq!(reads, expected, "a semaphore read returned more than 1");
    }

    /// A child that `exec`s inherits the close-on-exec-off fd, adopts it and
    /// adds, while the parent's tasks wait; a default (close-on-exec) fd
    /// does not reach it.
    async fn exec_child_adopts_the_inherited_fd() {
        let efd = inheritable(false);
        let private = EventFd::new().expect("eventfd");
        assert!(is_cloexec(&private));
        let (readers, values) = start_readers(&efd).await;
        let envs = [
            (FD_VAR, efd.as_raw_fd().to_string()),
            (PRIVATE_FD_VAR, private.as_raw_fd().to_string()),
        ];
        let output = finish(tokio::task::spawn_blocking(move || {
            util::child::run_test("exec_child", &envs)
        }))
        .await
        .expect("join the child runner");
        assert!(output.status.success(), "exec child: {output}");
        assert!(
            output.stdout.lines().any(|l| l == EXEC_CHILD_OK),
            "the exec child did not run: {output}"
        );
        read_exactly(&efd, readers, values, ADDS * 2).await;
    }
}

/// The inherited fd's number, for the `exec` child.
const FD_VAR: &str = "EVENTFD_FORK_FD";
/// A close-on-exec fd's number in the parent, which the child must not have.
const PRIVATE_FD_VAR: &str = "EVENTFD_FORK_PRIVATE_FD";
const EXEC_CHILD_OK: &str = "exec child: added";

/// The `exec` child: adopts the inherited fd and adds 2, [`ADDS`] times.
#[test]
#[ignore = "runs only in a child process started by exec_child_adopts_the_inherited_fd"]
fn exec_child() {
    let (Ok(fd), Ok(private)) = (std::env::var(FD_VAR), std::env::var(PRIVATE_FD_VAR)) else {
        println!("no {FD_VAR}: not a child of the fork tests, nothing to run");
        return;
    };
    let fd: RawFd = fd.parse().expect("fd number");
    let private: RawFd = private.parse().expect("fd number");
    // The close-on-exec fd is gone (or its number reused by something that is
    // not that eventfd: this process opened nothing as an eventfd yet).
    let private_open = std::fs::read_link(format!("/proc/self/fd/{private}"))
        .map(|target| target.to_string_lossy().contains("eventfd"))
        .unwrap_or(false);
    assert!(
        !private_open,
        "a close-on-exec eventfd reached the exec'd child"
    );
    // SAFETY: the parent passed this fd (close-on-exec off) for this process
    // to own; nothing else in this process uses it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let efd = EventFd::try_from(owned).expect("adopt the inherited eventfd");
    assert!(!efd.is_semaphore());
    for _ in 0..ADDS {
        efd.add(2).expect("add through the inherited fd");
    }
    // After libtest's `test exec_child ... `, on a line of its own.
    println!("\n{EXEC_CHILD_OK}");
}
