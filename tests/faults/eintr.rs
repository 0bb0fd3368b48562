//! Signals without `SA_RESTART` interrupting blocking calls: `EINTR`.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use async_eventfd::{EventFd, MAX_COUNT};
use nix::libc;
use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};

use super::util;
use super::{assert_holds, assert_os_error, Outcome};

/// How many times the `SIGUSR1` handler ran.
static SIGNALS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn count_signal(_: libc::c_int) {
    SIGNALS.fetch_add(1, Ordering::SeqCst);
}

/// Installs the counting `SIGUSR1` handler without `SA_RESTART`, so a
/// blocking syscall it interrupts fails with `EINTR` instead of restarting.
fn install_interrupting_handler() {
    let action = SigAction::new(
        SigHandler::Handler(count_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler only increments an atomic, which is
    // async-signal-safe; this child process has no other SIGUSR1 handler.
    unsafe { signal::sigaction(Signal::SIGUSR1, &action) }.expect("sigaction");
}

/// A call running on a thread of its own, seen asleep in a syscall.
struct Blocked<T> {
    tid: i32,
    fd: RawFd,
    pthread: nix::sys::pthread::Pthread,
    done: mpsc::Receiver<io::Result<T>>,
    thread: std::thread::JoinHandle<()>,
}

impl<T: Send + 'static> Blocked<T> {
    /// Runs `call` on `handle` (a dup of the counter's fd, or a notifier) on
    /// a thread of its own, and waits until that thread sleeps in `syscall`
    /// on the handle's fd.
    fn start<H: AsRawFd + Send + 'static>(
        handle: H,
        syscall: util::Syscall,
        call: fn(&H) -> io::Result<T>,
    ) -> Blocked<T> {
        let fd = handle.as_raw_fd();
        let (ids, ids_rx) = mpsc::channel();
        let (done, done_rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            ids.send((util::thread_id(), nix::sys::pthread::pthread_self()))
                .expect("send ids");
            done.send(call(&handle)).expect("send result");
        });
        let (tid, pthread) = util::recv_within(&ids_rx, util::LIMIT);
        util::wait_until_blocked_in(tid, syscall, fd);
        Blocked {
            tid,
            fd,
            pthread,
            done: done_rx,
            thread,
        }
    }

    /// Sends `SIGUSR1` to the thread and waits until the handler has run.
    fn interrupt(&self) {
        let before = SIGNALS.load(Ordering::SeqCst);
        nix::sys::pthread::pthread_kill(self.pthread, Signal::SIGUSR1).expect("pthread_kill");
        let start = Instant::now();
        while SIGNALS.load(Ordering::SeqCst) == before {
            assert!(start.elapsed() < util::LIMIT, "the handler never ran");
            std::thread::yield_now();
        }
    }

    /// Waits until the thread, interrupted, sleeps in `syscall` again,
    /// failing at once if the call returned instead.
    fn until_blocked_again(&self, syscall: util::Syscall) {
        let start = Instant::now();
        while !util::is_blocked_in(self.tid, syscall, self.fd) {
            if let Ok(result) = self.done.try_recv() {
                panic!(
                    "the call ended at the signal, with {:?}",
                    result.map(|_| ())
                );
            }
            assert!(
                start.elapsed() < util::LIMIT,
                "the thread did not wait in {syscall:?} again within {:?}",
                util::LIMIT
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// What the call returned.
    fn result(self) -> io::Result<T> {
        let result = util::recv_within(&self.done, util::LIMIT);
        self.thread.join().expect("the interrupted thread");
        result
    }
}

/// Runs `call` on a dup of `efd` on a thread of its own, interrupts it once
/// asleep in `syscall`, and returns what it returned; the handler ran once.
fn interrupt<T: Send + 'static>(
    efd: &EventFd,
    syscall: util::Syscall,
    call: fn(&EventFd) -> io::Result<T>,
) -> io::Result<T> {
    let blocked = Blocked::start(efd.try_clone().expect("try_clone"), syscall, call);
    let before = SIGNALS.load(Ordering::SeqCst);
    blocked.interrupt();
    let result = blocked.result();
    assert_eq!(
        SIGNALS.load(Ordering::SeqCst),
        before + 1,
        "the handler ran once"
    );
    result
}

pub(super) fn interrupted_read() -> Outcome {
    install_interrupting_handler();
    let efd = EventFd::builder()
        .nonblocking(false)
        .build()
        .expect("blocking eventfd");
    assert_os_error(
        interrupt(&efd, util::Syscall::Read, EventFd::read),
        libc::EINTR,
    );
    // Nothing was read, so a count added now is all there is.
    efd.add(3).expect("add");
    assert_os_error(
        interrupt(&efd, util::Syscall::Write, |efd| efd.add(MAX_COUNT)),
        libc::EINTR,
    );
    assert_holds(&efd, 3);
    // A later blocking read works.
    efd.add(1).expect("add");
    assert_eq!(efd.read().expect("blocking read with a count"), 1);
    Ok(())
}

pub(super) fn interrupted_add() -> Outcome {
    install_interrupting_handler();
    let efd = EventFd::builder()
        .nonblocking(false)
        .build()
        .expect("blocking eventfd");
    efd.add(MAX_COUNT).expect("fill the counter");
    assert_os_error(
        interrupt(&efd, util::Syscall::Write, |efd| efd.add(2)),
        libc::EINTR,
    );
    // The interrupted add added nothing: the counter holds MAX_COUNT only.
    assert_holds(&efd, MAX_COUNT);
    // A later blocking add works, and adds once.
    efd.add(2).expect("add after the interruption");
    assert_holds(&efd, 2);
    Ok(())
}

pub(super) fn interrupted_notifier_add() -> Outcome {
    install_interrupting_handler();
    let efd = EventFd::builder()
        .nonblocking(false)
        .build()
        .expect("blocking eventfd");
    efd.add(MAX_COUNT).expect("fill the counter");
    let notifier = efd.notifier().expect("notifier");
    let blocked = Blocked::start(notifier, util::Syscall::Write, |n| n.add(2));
    blocked.interrupt();
    assert_os_error(blocked.result(), libc::EINTR);
    // Nothing was added; a later add through a notifier adds once.
    assert_holds(&efd, MAX_COUNT);
    efd.notifier().expect("notifier").add(2).expect("add");
    assert_holds(&efd, 2);
    Ok(())
}

/// How long the interrupted `wait_timeout` that must run out waits.
const INTERRUPTED_TIMEOUT: Duration = Duration::from_secs(2);

pub(super) fn interrupted_wait_timeout() -> Outcome {
    install_interrupting_handler();
    for nonblocking in [false, true] {
        let efd = EventFd::builder()
            .nonblocking(nonblocking)
            .build()
            .expect("eventfd");
        // A signal mid-wait neither ends the wait nor loses the count added
        // after it.
        let waiting = Blocked::start(
            efd.try_clone().expect("try_clone"),
            util::Syscall::Poll,
            |efd| efd.wait_timeout(util::LIMIT.mul_f64(2.0)),
        );
        waiting.interrupt();
        waiting.until_blocked_again(util::Syscall::Poll);
        efd.add(3).expect("add");
        assert_eq!(waiting.result().expect("wait_timeout"), Some(3));
        assert_holds(&efd, 0);

        // A signal mid-wait on an empty counter: the wait still runs its
        // whole timeout, then reports `None`, not `Interrupted`.
        let waiting = Blocked::start(
            efd.try_clone().expect("try_clone"),
            util::Syscall::Poll,
            |efd| {
                let start = Instant::now();
                let result = efd.wait_timeout(INTERRUPTED_TIMEOUT);
                result.map(|value| (value, start.elapsed()))
            },
        );
        waiting.interrupt();
        let (value, waited) = waiting.result().expect("wait_timeout");
        assert_eq!(value, None);
        assert!(
            waited >= INTERRUPTED_TIMEOUT,
            "the wait ended after {waited:?}, before its {INTERRUPTED_TIMEOUT:?} timeout"
        );
        efd.add(1).expect("add");
        assert_holds(&efd, 1);
    }
    Ok(())
}
