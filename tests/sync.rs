//! `EventFd`: the synchronous core, checked against eventfd(2) semantics
//! (the cases of LTP's eventfd01-06) and the API contract.

mod util;

use std::fmt::Debug;
use std::io::{ErrorKind, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::thread;

use async_eventfd::{EventFd, EventFdBuilder, MAX_COUNT};
use nix::errno::Errno;

use util::{
    assert_kind, is_cloexec, is_nonblocking, recv_within, thread_id, wait_until_blocked_in, Syscall,
};

fn nonblocking() -> EventFd {
    EventFd::new().expect("EventFd::new")
}

fn blocking() -> EventFd {
    EventFd::builder()
        .nonblocking(false)
        .build()
        .expect("build a blocking eventfd")
}

#[track_caller]
fn assert_empty(efd: &EventFd) {
    let err = assert_kind(efd.read(), ErrorKind::WouldBlock);
    assert_eq!(err.raw_os_error(), Some(Errno::EAGAIN as i32));
}

// ----- counter semantics (LTP eventfd01) -----

#[test]
fn max_count_is_u64_max_minus_one() {
    assert_eq!(MAX_COUNT, u64::MAX - 1);
    assert_eq!(MAX_COUNT, 0xffff_ffff_ffff_fffe);
}

#[test]
fn read_of_empty_nonblocking_counter_is_would_block_with_eagain() {
    let efd = nonblocking();
    assert_empty(&efd);
    // A failed read changes nothing.
    efd.add(2).expect("add");
    assert_eq!(efd.read().expect("read"), 2);
}

#[test]
fn read_after_two_adds_returns_sum() {
    let efd = nonblocking();
    efd.add(2).expect("add 2");
    efd.add(40).expect("add 40");
    assert_eq!(efd.read().expect("read"), 42);
}

#[test]
fn read_resets_counter_to_zero() {
    let efd = nonblocking();
    efd.add(7).expect("add");
    assert_eq!(efd.read().expect("first read"), 7);
    assert_empty(&efd);
    efd.add(1).expect("add after reset");
    assert_eq!(efd.read().expect("read after reset"), 1);
}

#[test]
fn initial_value_is_read_back() {
    let efd = EventFd::builder()
        .initial(5)
        .build()
        .expect("build with initial");
    assert_eq!(efd.read().expect("read"), 5);
    assert_empty(&efd);
}

#[test]
fn initial_value_can_be_u32_max_and_adds_on_top() {
    let efd = EventFd::builder()
        .initial(u32::MAX)
        .build()
        .expect("build with initial u32::MAX");
    efd.add(1).expect("add");
    assert_eq!(efd.read().expect("read"), u64::from(u32::MAX) + 1);
}

#[test]
fn semaphore_read_returns_one_per_unit_then_would_block() {
    let efd = EventFd::builder()
        .semaphore(true)
        .initial(3)
        .build()
        .expect("build semaphore");
    assert!(efd.is_semaphore());
    for i in 0..3 {
        assert_eq!(efd.read().unwrap_or_else(|e| panic!("read {i}: {e}")), 1);
    }
    assert_empty(&efd);
}

#[test]
fn semaphore_read_after_adds_decrements_by_one() {
    let efd = EventFd::builder()
        .semaphore(true)
        .build()
        .expect("build semaphore");
    efd.add(2).expect("add 2");
    assert_eq!(efd.read().expect("read 1"), 1);
    efd.add(3).expect("add 3");
    for _ in 0..4 {
        assert_eq!(efd.read().expect("read"), 1);
    }
    assert_empty(&efd);
}

#[test]
fn counter_mode_is_the_default() {
    let efd = nonblocking();
    assert!(!efd.is_semaphore());
    let built = EventFd::builder().build().expect("build");
    assert!(!built.is_semaphore());
    built.add(3).expect("add");
    assert_eq!(built.read().expect("read"), 3);
}

// ----- the top of the counter (LTP eventfd01 write tests) -----

#[test]
fn add_of_max_count_fits_then_add_one_would_block() {
    let efd = nonblocking();
    efd.add(MAX_COUNT).expect("add MAX_COUNT");
    let err = assert_kind(efd.add(1), ErrorKind::WouldBlock);
    assert_eq!(err.raw_os_error(), Some(Errno::EAGAIN as i32));
    // The failed add left the counter alone.
    assert_eq!(efd.read().expect("read"), MAX_COUNT);
    assert_empty(&efd);
}

#[test]
fn adds_that_sum_to_max_count_fit_and_one_more_would_block() {
    let efd = nonblocking();
    efd.add(MAX_COUNT - 1).expect("add MAX_COUNT - 1");
    efd.add(1).expect("add the last unit");
    assert_kind(efd.add(1), ErrorKind::WouldBlock);
    assert_kind(efd.add(MAX_COUNT), ErrorKind::WouldBlock);
    assert_eq!(efd.read().expect("read"), MAX_COUNT);
}

#[test]
fn add_that_would_pass_max_count_would_block_and_adds_nothing() {
    let efd = nonblocking();
    efd.add(10).expect("add 10");
    assert_kind(efd.add(MAX_COUNT - 9), ErrorKind::WouldBlock);
    efd.add(MAX_COUNT - 10).expect("the largest add that fits");
    assert_eq!(efd.read().expect("read"), MAX_COUNT);
}

#[test]
fn add_zero_changes_nothing() {
    let efd = nonblocking();
    efd.add(0).expect("add(0) on empty");
    assert_empty(&efd);
    efd.add(4).expect("add 4");
    efd.add(0).expect("add(0) on 4");
    assert_eq!(efd.read().expect("read"), 4);
}

#[test]
fn add_zero_succeeds_on_a_full_counter() {
    let efd = nonblocking();
    efd.add(MAX_COUNT).expect("fill");
    efd.add(0).expect("add(0) at MAX_COUNT");
    assert_eq!(efd.read().expect("read"), MAX_COUNT);
}

#[test]
fn add_u64_max_is_invalid_input_with_einval_and_counter_unchanged() {
    let efd = nonblocking();
    efd.add(5).expect("add 5");
    let err = assert_kind(efd.add(u64::MAX), ErrorKind::InvalidInput);
    assert_eq!(err.raw_os_error(), Some(Errno::EINVAL as i32));
    assert_eq!(efd.read().expect("read"), 5);
    // On an empty counter too.
    assert_kind(efd.add(u64::MAX), ErrorKind::InvalidInput);
    assert_empty(&efd);
}

#[test]
fn add_u64_max_on_a_full_blocking_counter_fails_at_once() {
    // A blocking write(2) that does not fit would wait forever; u64::MAX must
    // be refused instead.
    let efd = blocking();
    efd.add(MAX_COUNT).expect("fill");
    let err = assert_kind(efd.add(u64::MAX), ErrorKind::InvalidInput);
    assert_eq!(err.raw_os_error(), Some(Errno::EINVAL as i32));
    assert_eq!(efd.read().expect("read"), MAX_COUNT);
}

#[test]
fn semaphore_mode_holds_max_count_too() {
    let efd = EventFd::builder()
        .semaphore(true)
        .build()
        .expect("build semaphore");
    efd.add(MAX_COUNT).expect("fill");
    assert_kind(efd.add(1), ErrorKind::WouldBlock);
    assert_eq!(efd.read().expect("read"), 1);
    efd.add(1).expect("one unit of room after one read");
    assert_kind(efd.add(1), ErrorKind::WouldBlock);
}

// ----- blocking mode (LTP eventfd01/02 blocking cases) -----

#[test]
fn blocking_read_waits_until_another_thread_adds() {
    let efd = Arc::new(blocking());
    let reader = Arc::clone(&efd);
    let (tid_tx, tid_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    let handle = thread::spawn(move || {
        tid_tx.send(thread_id()).expect("send tid");
        done_tx.send(reader.read()).expect("send result");
    });
    let tid = recv_within(&tid_rx, util::LIMIT);
    wait_until_blocked_in(tid, Syscall::Read, efd.as_raw_fd());
    assert!(matches!(done_rx.try_recv(), Err(mpsc::TryRecvError::Empty)));

    efd.add(9).expect("add from the main thread");
    let value = recv_within(&done_rx, util::LIMIT).expect("the blocked read");
    assert_eq!(value, 9);
    handle.join().expect("reader thread");
    // The reader took everything.
    assert!(!is_nonblocking(&*efd));
    util::set_nonblocking(&*efd, true);
    assert_empty(&efd);
}

#[test]
fn blocking_read_wakes_for_an_add_through_a_clone_on_another_thread() {
    let efd = blocking();
    let writer = efd.try_clone().expect("try_clone");
    let (tid_tx, tid_rx) = mpsc::channel();
    let reader_fd = efd.as_raw_fd();
    let handle = thread::spawn(move || {
        tid_tx.send(thread_id()).expect("send tid");
        efd.read()
    });
    let tid = recv_within(&tid_rx, util::LIMIT);
    wait_until_blocked_in(tid, Syscall::Read, reader_fd);
    writer.add(3).expect("add through the clone");
    assert_eq!(
        handle.join().expect("reader thread").expect("blocked read"),
        3
    );
}

#[test]
fn blocking_add_at_max_count_waits_until_another_thread_reads() {
    let efd = Arc::new(blocking());
    efd.add(MAX_COUNT).expect("fill");
    let writer = Arc::clone(&efd);
    let (tid_tx, tid_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    let handle = thread::spawn(move || {
        tid_tx.send(thread_id()).expect("send tid");
        done_tx.send(writer.add(2)).expect("send result");
    });
    let tid = recv_within(&tid_rx, util::LIMIT);
    wait_until_blocked_in(tid, Syscall::Write, efd.as_raw_fd());
    assert!(matches!(done_rx.try_recv(), Err(mpsc::TryRecvError::Empty)));

    assert_eq!(efd.read().expect("read makes room"), MAX_COUNT);
    recv_within(&done_rx, util::LIMIT).expect("the blocked add");
    handle.join().expect("writer thread");
    assert_eq!(efd.read().expect("read the late add"), 2);
}

#[test]
fn blocking_semaphore_read_waits_then_takes_one() {
    let efd = Arc::new(
        EventFd::builder()
            .semaphore(true)
            .nonblocking(false)
            .build()
            .expect("build blocking semaphore"),
    );
    let reader = Arc::clone(&efd);
    let (tid_tx, tid_rx) = mpsc::channel();
    let handle = thread::spawn(move || {
        tid_tx.send(thread_id()).expect("send tid");
        reader.read()
    });
    let tid = recv_within(&tid_rx, util::LIMIT);
    wait_until_blocked_in(tid, Syscall::Read, efd.as_raw_fd());
    efd.add(2).expect("add 2");
    assert_eq!(handle.join().expect("reader").expect("blocked read"), 1);
    // One unit is left, readable without blocking.
    assert_eq!(efd.read().expect("second read"), 1);
}

// ----- flags as fcntl sees them (LTP eventfd03/05-style checks) -----

#[test]
fn new_is_nonblocking_and_close_on_exec() {
    let efd = nonblocking();
    assert!(is_nonblocking(&efd));
    assert!(is_cloexec(&efd));
    assert!(efd.is_nonblocking().expect("is_nonblocking"));
}

#[test]
fn builder_defaults_are_nonblocking_close_on_exec_counter_zero() {
    let efd = EventFd::builder().build().expect("build");
    assert!(is_nonblocking(&efd));
    assert!(is_cloexec(&efd));
    assert!(!efd.is_semaphore());
    assert_empty(&efd);
}

#[test]
fn builder_flag_combinations_match_fcntl() {
    for semaphore in [false, true] {
        for nonblocking in [false, true] {
            for cloexec in [false, true] {
                let efd = EventFd::builder()
                    .semaphore(semaphore)
                    .nonblocking(nonblocking)
                    .cloexec(cloexec)
                    .build()
                    .expect("build");
                let case =
                    format!("semaphore={semaphore} nonblocking={nonblocking} cloexec={cloexec}");
                assert_eq!(is_nonblocking(&efd), nonblocking, "{case}");
                assert_eq!(
                    efd.is_nonblocking().expect("is_nonblocking"),
                    nonblocking,
                    "{case}"
                );
                assert_eq!(is_cloexec(&efd), cloexec, "{case}");
                assert_eq!(efd.is_semaphore(), semaphore, "{case}");
            }
        }
    }
}

#[test]
fn try_clone_keeps_close_on_exec_and_shares_nonblocking() {
    for nonblocking in [false, true] {
        for cloexec in [false, true] {
            let efd = EventFd::builder()
                .nonblocking(nonblocking)
                .cloexec(cloexec)
                .build()
                .expect("build");
            let clone = efd.try_clone().expect("try_clone");
            let case = format!("nonblocking={nonblocking} cloexec={cloexec}");
            assert_ne!(clone.as_raw_fd(), efd.as_raw_fd(), "{case}");
            assert_eq!(is_cloexec(&clone), cloexec, "{case}");
            assert_eq!(is_nonblocking(&clone), nonblocking, "{case}");
        }
    }
}

#[test]
fn nonblocking_flag_is_shared_by_clones() {
    let efd = blocking();
    let clone = efd.try_clone().expect("try_clone");
    util::set_nonblocking(&clone, true);
    // One open file description: the original sees the change.
    assert!(is_nonblocking(&efd));
    assert!(efd.is_nonblocking().expect("is_nonblocking"));
    assert_empty(&efd);
}

#[test]
fn try_clone_keeps_semaphore_mode() {
    let efd = EventFd::builder()
        .semaphore(true)
        .initial(2)
        .build()
        .expect("build");
    let clone = efd.try_clone().expect("try_clone");
    assert!(clone.is_semaphore());
    assert_eq!(clone.read().expect("read through clone"), 1);
    assert_eq!(efd.read().expect("read through original"), 1);
    assert_empty(&clone);
}

// ----- clones and fd ownership -----

#[test]
fn clones_share_one_counter() {
    let efd = nonblocking();
    let clone = efd.try_clone().expect("try_clone");
    let clone_of_clone = clone.try_clone().expect("try_clone of clone");
    efd.add(1).expect("add via original");
    clone.add(2).expect("add via clone");
    clone_of_clone.add(4).expect("add via clone of clone");
    assert_eq!(clone.read().expect("read via clone"), 7);
    assert_empty(&efd);
    assert_empty(&clone_of_clone);
}

#[test]
fn clone_outlives_the_original() {
    let efd = nonblocking();
    let clone = efd.try_clone().expect("try_clone");
    efd.add(6).expect("add");
    drop(efd);
    assert_eq!(clone.read().expect("read after the original is dropped"), 6);
}

#[test]
fn as_fd_and_as_raw_fd_name_the_same_fd() {
    let efd = nonblocking();
    assert_eq!(efd.as_fd().as_raw_fd(), efd.as_raw_fd());
}

#[test]
fn into_owned_fd_keeps_the_fd_open_and_the_counter() {
    let efd = nonblocking();
    efd.add(11).expect("add");
    let raw = efd.as_raw_fd();
    let fd: OwnedFd = efd.into();
    assert_eq!(fd.as_raw_fd(), raw);
    // Still open: fcntl works, and the counter is there to read by hand.
    assert!(is_nonblocking(&fd));
    assert!(is_cloexec(&fd));
    let mut buf = [0u8; 8];
    let n = nix::unistd::read(&fd, &mut buf).expect("read(2) on the handed-over fd");
    assert_eq!(n, 8);
    assert_eq!(u64::from_ne_bytes(buf), 11);
}

#[test]
fn owned_fd_round_trip_keeps_counter() {
    let efd = nonblocking();
    efd.add(3).expect("add");
    let fd: OwnedFd = efd.into();
    let back = EventFd::try_from(fd).expect("adopt it back");
    assert_eq!(back.read().expect("read"), 3);
}

// ----- adopting foreign fds -----

#[test]
fn try_from_owned_fd_adopts_a_counter_mode_eventfd() {
    // Made by nix directly, as a C library or another process would.
    let foreign = nix::sys::eventfd::EventFd::from_value_and_flags(
        4,
        nix::sys::eventfd::EfdFlags::EFD_NONBLOCK,
    )
    .expect("nix eventfd");
    let fd: OwnedFd = foreign.into();
    let raw = fd.as_raw_fd();
    let efd = EventFd::try_from(fd).expect("adopt");
    assert_eq!(efd.as_raw_fd(), raw);
    assert!(!efd.is_semaphore());
    assert!(efd.is_nonblocking().expect("is_nonblocking"));
    // The adopted fd keeps its flags: no close-on-exec was asked for.
    assert!(!is_cloexec(&efd));
    assert_eq!(efd.read().expect("read"), 4);
    assert_empty(&efd);
}

#[test]
fn try_from_owned_fd_detects_semaphore_mode() {
    let foreign = nix::sys::eventfd::EventFd::from_value_and_flags(
        2,
        nix::sys::eventfd::EfdFlags::EFD_SEMAPHORE | nix::sys::eventfd::EfdFlags::EFD_NONBLOCK,
    )
    .expect("nix eventfd");
    let fd: OwnedFd = foreign.into();
    let told = util::fdinfo_tells_mode(&fd);
    let efd = EventFd::try_from(fd).expect("adopt");
    // Linux 6.2+ tells the mode; before, it is unknown and counter mode is
    // reported.
    assert_eq!(efd.is_semaphore(), told);
    // The kernel's mode rules the reads either way.
    assert_eq!(efd.read().expect("read 1"), 1);
    assert_eq!(efd.read().expect("read 2"), 1);
    assert_empty(&efd);
}

#[test]
fn try_from_owned_fd_detects_blocking_and_nonblocking() {
    for nonblocking in [false, true] {
        for semaphore in [false, true] {
            let original = EventFd::builder()
                .nonblocking(nonblocking)
                .semaphore(semaphore)
                .initial(1)
                .build()
                .expect("build");
            let fd: OwnedFd = original.into();
            let told = util::fdinfo_tells_mode(&fd);
            let efd = EventFd::try_from(fd).expect("adopt");
            let case = format!("nonblocking={nonblocking} semaphore={semaphore} told={told}");
            assert_eq!(
                efd.is_nonblocking().expect("is_nonblocking"),
                nonblocking,
                "{case}"
            );
            assert_eq!(is_nonblocking(&efd), nonblocking, "{case}");
            // An unknown mode (before Linux 6.2) is reported as counter mode.
            assert_eq!(efd.is_semaphore(), semaphore && told, "{case}");
            assert_eq!(efd.read().expect("read"), 1, "{case}");
        }
    }
}

#[test]
fn try_from_a_pipe_is_invalid_input() {
    let (read_end, write_end) = nix::unistd::pipe().expect("pipe");
    let err = assert_kind(EventFd::try_from(read_end), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("not an eventfd"), "{err}");
    assert_kind(EventFd::try_from(write_end), ErrorKind::InvalidInput);
}

#[test]
fn try_from_a_regular_file_is_invalid_input() {
    let path = std::env::temp_dir().join(format!(
        "async-eventfd-sync-test-{}-{}",
        std::process::id(),
        thread_id()
    ));
    let mut file = std::fs::File::create(&path).expect("create a temp file");
    file.write_all(&1u64.to_ne_bytes())
        .expect("write the temp file");
    std::fs::remove_file(&path).expect("remove the temp file");
    assert_kind(
        EventFd::try_from(OwnedFd::from(file)),
        ErrorKind::InvalidInput,
    );
}

#[test]
fn try_from_dev_null_is_invalid_input() {
    let file = std::fs::File::open("/dev/null").expect("open /dev/null");
    assert_kind(
        EventFd::try_from(OwnedFd::from(file)),
        ErrorKind::InvalidInput,
    );
}

#[test]
fn try_from_another_anon_inode_is_invalid_input() {
    // An epoll fd is an anon inode too ("anon_inode:[eventpoll]").
    let epoll = nix::sys::epoll::Epoll::new(nix::sys::epoll::EpollCreateFlags::EPOLL_CLOEXEC)
        .expect("epoll_create1");
    assert_kind(EventFd::try_from(epoll.0), ErrorKind::InvalidInput);
}

#[test]
fn try_from_a_socket_is_invalid_input() {
    let (a, b) = nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::Stream,
        None,
        nix::sys::socket::SockFlag::empty(),
    )
    .expect("socketpair");
    assert_kind(EventFd::try_from(a), ErrorKind::InvalidInput);
    drop(b);
}

// ----- the 8-byte rule (LTP eventfd01 "read/write with short buffer") -----

#[test]
fn kernel_refuses_reads_and_writes_shorter_than_eight_bytes() {
    let efd = nonblocking();
    efd.add(1).expect("add");
    let mut short = [0u8; 4];
    assert_eq!(nix::unistd::read(&efd, &mut short), Err(Errno::EINVAL));
    assert_eq!(
        nix::unistd::write(efd.as_fd(), &1u32.to_ne_bytes()),
        Err(Errno::EINVAL)
    );
    // Neither touched the counter.
    assert_eq!(efd.read().expect("read"), 1);
}

#[test]
fn kernel_moves_exactly_eight_bytes_from_a_longer_buffer() {
    let efd = nonblocking();
    efd.add(0x0102_0304).expect("add");
    let mut long = [0xffu8; 16];
    assert_eq!(nix::unistd::read(&efd, &mut long), Ok(8));
    assert_eq!(
        u64::from_ne_bytes(long[..8].try_into().expect("8 bytes")),
        0x0102_0304
    );
    assert_eq!(long[8..], [0xffu8; 8]);
}

#[test]
fn a_raw_write_of_u64_max_is_einval_like_add() {
    let efd = nonblocking();
    assert_eq!(
        nix::unistd::write(efd.as_fd(), &u64::MAX.to_ne_bytes()),
        Err(Errno::EINVAL)
    );
    let err = assert_kind(efd.add(u64::MAX), ErrorKind::InvalidInput);
    assert_eq!(err.raw_os_error(), Some(Errno::EINVAL as i32));
}

// ----- signals -----

static SIGNAL_EFD: OnceLock<EventFd> = OnceLock::new();
static SIGNAL_ADD_FAILED: AtomicBool = AtomicBool::new(false);

extern "C" fn add_one_from_a_handler(_: nix::libc::c_int) {
    if let Some(efd) = SIGNAL_EFD.get() {
        match efd.add(1) {
            Ok(()) => {}
            Err(_) => SIGNAL_ADD_FAILED.store(true, Ordering::SeqCst),
        }
    }
}

extern "C" fn do_nothing(_: nix::libc::c_int) {}

#[test]
fn add_works_from_a_signal_handler() {
    use nix::sys::signal::{raise, sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let efd = SIGNAL_EFD.get_or_init(nonblocking);
    let action = SigAction::new(
        SigHandler::Handler(add_one_from_a_handler),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SAFETY: the handler loads a `OnceLock` and calls `EventFd::add`, one
    // write(2): both async-signal-safe. No other test uses SIGUSR1.
    let old = unsafe { sigaction(Signal::SIGUSR1, &action) }.expect("install the handler");
    // raise(3) runs the handler on this thread before it returns.
    raise(Signal::SIGUSR1).expect("raise 1");
    raise(Signal::SIGUSR1).expect("raise 2");
    // SAFETY: restores the action that was there before.
    unsafe { sigaction(Signal::SIGUSR1, &old) }.expect("restore the handler");
    assert!(
        !SIGNAL_ADD_FAILED.load(Ordering::SeqCst),
        "add failed in the handler"
    );
    assert_eq!(efd.read().expect("read"), 2);
}

#[test]
fn blocking_read_interrupted_by_a_signal_is_interrupted_with_eintr() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let efd = Arc::new(blocking());
    // No SA_RESTART: the blocked read(2) returns EINTR.
    let action = SigAction::new(
        SigHandler::Handler(do_nothing),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler does nothing. No other test uses SIGUSR2.
    let old = unsafe { sigaction(Signal::SIGUSR2, &action) }.expect("install the handler");
    let reader = Arc::clone(&efd);
    let (id_tx, id_rx) = mpsc::channel();
    let handle = thread::spawn(move || {
        // SAFETY: pthread_self has no preconditions.
        let pthread = unsafe { nix::libc::pthread_self() };
        id_tx.send((thread_id(), pthread)).expect("send ids");
        reader.read()
    });
    let (tid, pthread) = recv_within(&id_rx, util::LIMIT);
    wait_until_blocked_in(tid, Syscall::Read, efd.as_raw_fd());
    // SAFETY: `pthread` is the reader thread, still alive: it is blocked in
    // read(2) and is joined only below.
    let rc = unsafe { nix::libc::pthread_kill(pthread, Signal::SIGUSR2 as nix::libc::c_int) };
    assert_eq!(rc, 0, "pthread_kill");
    let err = assert_kind(
        handle.join().expect("reader thread"),
        ErrorKind::Interrupted,
    );
    assert_eq!(err.raw_os_error(), Some(Errno::EINTR as i32));
    // SAFETY: restores the action that was there before.
    unsafe { sigaction(Signal::SIGUSR2, &old) }.expect("restore the handler");
    // The interrupted read took nothing.
    efd.add(1).expect("add");
    assert_eq!(efd.read().expect("read"), 1);
}

// ----- traits -----

#[test]
fn eventfd_and_builder_are_send_sync_debug() {
    fn assert_send_sync_debug<T: Send + Sync + Debug>() {}
    assert_send_sync_debug::<EventFd>();
    assert_send_sync_debug::<EventFdBuilder>();
}

#[test]
fn debug_names_the_type_fd_and_mode() {
    let efd = EventFd::builder().semaphore(true).build().expect("build");
    let shown = format!("{efd:?}");
    assert!(shown.starts_with("EventFd"), "{shown}");
    assert!(shown.contains(&efd.as_raw_fd().to_string()), "{shown}");
    assert!(shown.contains("semaphore: true"), "{shown}");
}

#[test]
fn shared_through_arc_by_many_threads_conserves_the_total() {
    const THREADS: u64 = 4;
    const ADDS: u64 = 1_000;
    let efd = Arc::new(nonblocking());
    let writers: Vec<_> = (0..THREADS)
        .map(|_| {
            let efd = Arc::clone(&efd);
            thread::spawn(move || {
                for _ in 0..ADDS {
                    efd.add(1).expect("add from a writer thread");
                }
            })
        })
        .collect();
    let start = std::time::Instant::now();
    let mut total = 0;
    while total < THREADS * ADDS {
        assert!(
            start.elapsed() < util::LIMIT,
            "only {total} read within {:?}",
            util::LIMIT
        );
        match efd.read() {
            Ok(n) => total += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::yield_now(),
            Err(e) => panic!("read failed: {e}"),
        }
    }
    for writer in writers {
        writer.join().expect("writer thread");
    }
    assert_eq!(total, THREADS * ADDS);
    assert_empty(&efd);
}
