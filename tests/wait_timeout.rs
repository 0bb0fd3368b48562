//! `EventFd::wait_timeout`: a plain thread waits for the counter with a
//! deadline, on blocking and nonblocking fds.

mod util;

use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::sync::{mpsc, Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use async_eventfd::{EventFd, MAX_COUNT};
use nix::errno::Errno;

use util::{assert_kind, must_return, recv_within, thread_id, LIMIT};

/// A short timeout for the waits that must run out.
const SHORT: Duration = Duration::from_millis(50);

fn eventfd(nonblocking: bool) -> EventFd {
    EventFd::builder()
        .nonblocking(nonblocking)
        .build()
        .expect("build an eventfd")
}

/// Runs `body` on a nonblocking and on a blocking eventfd, each on a watched
/// thread, so that a wait that never returns fails the test.
#[track_caller]
fn on_both_modes(body: fn(EventFd)) {
    for nonblocking in [true, false] {
        must_return(util::TEST_LIMIT, move || body(eventfd(nonblocking)));
    }
}

/// Asserts the counter is empty without waiting, on either mode.
#[track_caller]
fn assert_empty(efd: &EventFd) {
    assert_eq!(efd.wait_timeout(Duration::ZERO).expect("wait ZERO"), None);
}

#[test]
fn returns_the_whole_counter_at_once_when_it_is_non_zero() {
    on_both_modes(|efd| {
        efd.add(5).expect("add");
        efd.add(37).expect("add");
        assert_eq!(efd.wait_timeout(LIMIT).expect("wait"), Some(42));
        assert_empty(&efd);
    });
}

#[test]
fn returns_none_once_the_timeout_has_passed_and_takes_nothing() {
    on_both_modes(|efd| {
        let start = Instant::now();
        assert_eq!(efd.wait_timeout(SHORT).expect("wait"), None);
        let elapsed = start.elapsed();
        assert!(
            elapsed >= SHORT,
            "returned after {elapsed:?}, before {SHORT:?}"
        );
        assert!(elapsed < LIMIT, "returned only after {elapsed:?}");
        // The wait left the counter alone.
        efd.add(1).expect("add");
        assert_eq!(efd.wait_timeout(Duration::ZERO).expect("wait"), Some(1));
    });
}

#[test]
fn zero_checks_once_without_waiting() {
    on_both_modes(|efd| {
        // On a blocking fd too: an empty counter is None, not a wait.
        assert_eq!(efd.wait_timeout(Duration::ZERO).expect("empty"), None);
        efd.add(3).expect("add");
        assert_eq!(efd.wait_timeout(Duration::ZERO).expect("full"), Some(3));
        assert_eq!(efd.wait_timeout(Duration::ZERO).expect("emptied"), None);
    });
}

#[test]
fn wakes_when_another_thread_adds_during_the_wait() {
    on_both_modes(|efd| {
        let efd = Arc::new(efd);
        let waiter = Arc::clone(&efd);
        let (tid_tx, tid_rx) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::channel();
        let handle = thread::spawn(move || {
            tid_tx.send(thread_id()).expect("send tid");
            done_tx
                .send(waiter.wait_timeout(LIMIT))
                .expect("send result");
        });
        let tid = recv_within(&tid_rx, LIMIT);
        util::wait_until_blocked_in(tid, util::Syscall::Poll, efd.as_raw_fd());
        assert!(matches!(done_rx.try_recv(), Err(mpsc::TryRecvError::Empty)));
        let notifier = efd.notifier().expect("notifier");
        thread::spawn(move || notifier.add(7))
            .join()
            .expect("adding thread")
            .expect("add");
        // Well before LIMIT: woken by the add, not by the timeout.
        let value = recv_within(&done_rx, LIMIT).expect("wait_timeout");
        assert_eq!(value, Some(7));
        handle.join().expect("waiting thread");
        assert_empty(&efd);
    });
}

#[test]
fn semaphore_mode_returns_one_per_wait() {
    for nonblocking in [true, false] {
        must_return(util::TEST_LIMIT, move || {
            let efd = EventFd::builder()
                .semaphore(true)
                .nonblocking(nonblocking)
                .initial(3)
                .build()
                .expect("build a semaphore eventfd");
            for _ in 0..3 {
                assert_eq!(efd.wait_timeout(LIMIT).expect("wait"), Some(1));
            }
            assert_eq!(efd.wait_timeout(SHORT).expect("wait"), None);
        });
    }
}

#[test]
fn an_overflowed_counter_reads_back_at_its_maximum() {
    on_both_modes(|efd| {
        efd.add(MAX_COUNT).expect("fill");
        assert_eq!(efd.wait_timeout(LIMIT).expect("wait"), Some(MAX_COUNT));
    });
}

#[test]
fn a_timeout_too_large_for_a_deadline_still_returns_the_value() {
    on_both_modes(|efd| {
        efd.add(9).expect("add");
        assert_eq!(efd.wait_timeout(Duration::MAX).expect("wait"), Some(9));
    });
}

/// Two threads wait on one blocking fd and one unit arrives: exactly one
/// gets it, and the other returns `None` at its timeout instead of sleeping
/// in `read(2)` until an add that never comes. The loser often sees the fd
/// readable and loses the read, so this runs many rounds. Needs Linux 5.12
/// (`RWF_NOWAIT` on eventfds; before, `wait_timeout` documents that the read
/// may wait).
#[test]
fn blocking_fd_shared_by_two_waiters_never_waits_past_the_timeout() {
    const ROUNDS: u64 = 200;
    const WAIT: Duration = Duration::from_millis(5);
    let kernel = util::kernel_version();
    if kernel < (5, 12) {
        println!(
            "blocking_fd_shared_by_two_waiters_never_waits_past_the_timeout: skipped: \
             needs Linux 5.12+ (RWF_NOWAIT on eventfds), this is {}.{}",
            kernel.0, kernel.1
        );
        return;
    }
    must_return(util::TEST_LIMIT, || {
        let efd = Arc::new(eventfd(false));
        let mut got = 0;
        for round in 0..ROUNDS {
            let barrier = Arc::new(Barrier::new(3));
            let waiters: Vec<_> = (0..2)
                .map(|_| {
                    let efd = Arc::clone(&efd);
                    let barrier = Arc::clone(&barrier);
                    thread::spawn(move || {
                        barrier.wait();
                        efd.wait_timeout(WAIT)
                    })
                })
                .collect();
            barrier.wait();
            efd.add(1).expect("add");
            for waiter in waiters {
                if let Some(value) = waiter.join().expect("waiter").expect("wait_timeout") {
                    assert_eq!(value, 1, "round {round}");
                    got += 1;
                }
            }
            // A unit neither waiter saw in time is still there: take it.
            got += efd
                .wait_timeout(Duration::ZERO)
                .expect("drain")
                .unwrap_or(0);
            assert_eq!(
                got,
                round + 1,
                "round {round}: the unit was lost or doubled"
            );
        }
    });
}

extern "C" fn do_nothing(_: nix::libc::c_int) {}

/// A signal handler installed without `SA_RESTART` interrupts `poll(2)`
/// with `EINTR`; the wait goes on with the time left.
#[test]
fn a_signal_during_the_wait_is_retried() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(
        SigHandler::Handler(do_nothing),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler does nothing. No other test in this file uses
    // SIGUSR2.
    let old = unsafe { sigaction(Signal::SIGUSR2, &action) }.expect("install the handler");
    for nonblocking in [true, false] {
        let efd = Arc::new(eventfd(nonblocking));
        let waiter = Arc::clone(&efd);
        let (id_tx, id_rx) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::channel();
        let handle = thread::spawn(move || {
            // SAFETY: pthread_self has no preconditions.
            let pthread = unsafe { nix::libc::pthread_self() };
            id_tx.send((thread_id(), pthread)).expect("send ids");
            done_tx
                .send(waiter.wait_timeout(LIMIT))
                .expect("send result");
        });
        let (tid, pthread) = recv_within(&id_rx, LIMIT);
        for _ in 0..3 {
            util::wait_until_blocked_in(tid, util::Syscall::Poll, efd.as_raw_fd());
            // SAFETY: `pthread` is the waiting thread, alive until joined
            // below (it cannot return before the add).
            let rc =
                unsafe { nix::libc::pthread_kill(pthread, Signal::SIGUSR2 as nix::libc::c_int) };
            assert_eq!(rc, 0, "pthread_kill");
        }
        util::wait_until_blocked_in(tid, util::Syscall::Poll, efd.as_raw_fd());
        assert!(matches!(done_rx.try_recv(), Err(mpsc::TryRecvError::Empty)));
        efd.add(4).expect("add");
        assert_eq!(recv_within(&done_rx, LIMIT).expect("wait_timeout"), Some(4));
        handle.join().expect("waiting thread");
    }
    // SAFETY: restores the action that was there before.
    unsafe { sigaction(Signal::SIGUSR2, &old) }.expect("restore the handler");
}

#[test]
fn a_read_through_the_wait_is_a_read_of_eight_bytes() {
    // The same counter semantics as `read`: after the wait took the value,
    // a plain nonblocking read finds the counter empty.
    let efd = eventfd(true);
    efd.add(11).expect("add");
    assert_eq!(efd.wait_timeout(LIMIT).expect("wait"), Some(11));
    let err = assert_kind(efd.read(), ErrorKind::WouldBlock);
    assert_eq!(err.raw_os_error(), Some(Errno::EAGAIN as i32));
}
