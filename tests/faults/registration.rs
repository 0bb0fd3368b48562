//! `epoll_ctl` failing on registration (`try_new`, `try_new_in`,
//! `TryFrom`), and the `dup` or `epoll_ctl` of a waiting `add` failing.

use std::future::poll_fn;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Instant;

use async_eventfd::{AsyncEventFd, EventFd, MAX_COUNT};
use nix::libc;

use super::util::{self, finish, Flavor};
use super::{
    assert_holds, assert_os_error, exhaust_nofile, fail_syscall, is_open, next_fd, open_fds,
    restore_nofile, Outcome,
};

pub(super) fn registration_fails(errno: i32) -> Outcome {
    let rt = util::runtime(Flavor::CurrentThread);
    let _entered = rt.enter();
    // Every fd below is made on this number (the lowest free one), the only
    // one whose registration the filter makes fail; tokio's own keep working.
    // Each comes with a witness, a dup made before the registration: what
    // the witness adds, only the same open eventfd can read.
    let fd = next_fd();
    let on_filtered_number = move |nonblocking: bool| {
        let efd = EventFd::builder()
            .initial(5)
            .nonblocking(nonblocking)
            .build()
            .expect("eventfd");
        assert_eq!(efd.as_raw_fd(), fd, "not on the filtered fd number");
        let witness = efd.try_clone().expect("try_clone");
        (efd, witness)
    };
    let fds = open_fds();
    let add = u64::try_from(libc::EPOLL_CTL_ADD).expect("EPOLL_CTL_ADD");
    let number = u64::try_from(fd).expect("fd");
    fail_syscall(libc::SYS_epoll_ctl, &[(1, add), (2, number)], errno)?;

    // `try_new` gives the fd back as it was: same number, counter and flag.
    let (efd, witness) = on_filtered_number(true);
    let (efd, err) = AsyncEventFd::try_new(efd)
        .expect_err("registration on the filtered number")
        .into_parts();
    assert_os_error(Err::<(), _>(err), errno);
    assert_given_back(&efd, fd, true);
    assert_eq!(open_fds(), fds + 2, "an fd was leaked or lost");
    // It still counts, and registers once on a number the filter lets pass.
    witness.add(2).expect("add through the witness");
    let moved = efd.try_clone().expect("try_clone");
    drop((efd, witness));
    let registered = AsyncEventFd::try_new(moved).expect("registration elsewhere");
    assert_eq!(rt.block_on(finish(registered.read())).expect("read"), 7);
    registered.try_add(1).expect("try_add");
    assert_eq!(rt.block_on(finish(registered.read())).expect("read"), 1);
    drop(registered);

    // A blocking fd stays blocking (it is switched only once registered),
    // and blocking reads and adds work through it.
    let (efd, witness) = on_filtered_number(false);
    let (efd, err) = AsyncEventFd::try_new(efd)
        .expect_err("registration on the filtered number")
        .into_parts();
    assert_os_error(Err::<(), _>(err), errno);
    assert_given_back(&efd, fd, false);
    assert_eq!(efd.read().expect("blocking read of the 5"), 5);
    witness.add(1).expect("add through the witness");
    assert_eq!(efd.read().expect("blocking read"), 1);
    efd.add(3).expect("blocking add");
    assert_eq!(witness.read().expect("read through the witness"), 3);
    assert!(!efd.is_nonblocking().expect("F_GETFL"));
    drop((efd, witness));

    // `try_new_in` from a plain thread, outside any runtime context.
    let handle = rt.handle().clone();
    let (efd, witness, err) = std::thread::spawn(move || {
        assert!(
            tokio::runtime::Handle::try_current().is_err(),
            "in a runtime"
        );
        let (efd, witness) = on_filtered_number(false);
        let (efd, err) = AsyncEventFd::try_new_in(efd, &handle)
            .expect_err("registration on the filtered number")
            .into_parts();
        (efd, witness, err)
    })
    .join()
    .expect("the plain thread");
    assert_os_error(Err::<(), _>(err), errno);
    assert_given_back(&efd, fd, false);
    witness.add(1).expect("add through the witness");
    assert_holds(&efd, 6);
    drop((efd, witness));

    // `io::Error::from` keeps the kind and OS error, and drops the fd.
    let (efd, witness) = on_filtered_number(true);
    let err = AsyncEventFd::try_new(efd).expect_err("registration");
    assert_os_error(Err::<(), _>(io::Error::from(err)), errno);
    assert!(!is_open(fd), "the fd of a converted error was leaked");
    drop(witness);
    // So does `TryFrom`, which consumes the fd.
    let (efd, witness) = on_filtered_number(true);
    assert_os_error(AsyncEventFd::try_from(efd), errno);
    assert!(!is_open(fd), "the fd of a failed registration was leaked");
    drop(witness);
    assert_eq!(open_fds(), fds);

    // The runtime is unharmed: a new fd (on another number) works.
    let hole = EventFd::new().expect("eventfd on the filtered number");
    assert_eq!(hole.as_raw_fd(), fd);
    rt.block_on(async {
        let efd = AsyncEventFd::new().expect("AsyncEventFd::new");
        let writer = efd.get_ref().try_clone().expect("try_clone");
        std::thread::spawn(move || writer.add(4));
        assert_eq!(finish(efd.read()).await.expect("read"), 4);
    });
    Ok(())
}

/// Asserts that `efd`, given back by a failed registration, is still the
/// open fd `fd`, with its blocking flag unchanged.
#[track_caller]
fn assert_given_back(efd: &EventFd, fd: RawFd, nonblocking: bool) {
    assert_eq!(efd.as_raw_fd(), fd, "another fd came back");
    assert!(is_open(fd), "the fd given back is closed");
    assert_eq!(
        util::is_nonblocking(efd),
        nonblocking,
        "the blocking flag changed"
    );
}

// ---- a waiting add whose dup or registration fails ----------------------------

/// Yields until this process has one fd more than `fds`: the dup that a
/// waiting add registers for `EPOLLOUT`, proving the add is waiting.
async fn until_waiting_add_registered(fds: usize) {
    let start = Instant::now();
    while open_fds() != fds + 1 {
        assert!(
            start.elapsed() < util::LIMIT,
            "the add never waited with a write registration"
        );
        tokio::task::yield_now().await;
    }
}

pub(super) fn dup_fails(flavor: Flavor) -> Outcome {
    util::runtime(flavor).block_on(async {
        let efd = Arc::new(AsyncEventFd::new().expect("AsyncEventFd::new"));
        efd.try_add(MAX_COUNT).expect("fill the counter");
        let fds = open_fds();
        let limits = exhaust_nofile();
        // The counter is full, so `add` waits: its write registration needs a
        // dup of the fd, which the limit refuses.
        assert_os_error(finish(efd.add(1)).await, libc::EMFILE);
        assert_os_error(
            finish(poll_fn(|cx| efd.poll_add(cx, 1))).await,
            libc::EMFILE,
        );
        restore_nofile(limits);
        assert_eq!(open_fds(), fds, "a failed add left an fd open");

        // Nothing was added, and a later waiting add works.
        let adder = Arc::clone(&efd);
        let waiting = tokio::spawn(async move { adder.add(7).await });
        until_waiting_add_registered(fds).await;
        assert_eq!(efd.try_read().expect("read the full counter"), MAX_COUNT);
        finish(waiting)
            .await
            .expect("join")
            .expect("add(7) after the limit rose");
        assert_holds(efd.get_ref(), 7);
    });
    Ok(())
}

pub(super) fn write_registration_fails() -> Outcome {
    let rt = util::runtime(Flavor::CurrentThread);
    let _entered = rt.enter();
    let efd = AsyncEventFd::new().expect("AsyncEventFd::new");
    efd.try_add(MAX_COUNT).expect("fill the counter");
    // The waiting add's dup gets the lowest free number: fail its registration.
    let dup = next_fd();
    let add = u64::try_from(libc::EPOLL_CTL_ADD).expect("EPOLL_CTL_ADD");
    let number = u64::try_from(dup).expect("fd");
    let fds = open_fds();
    fail_syscall(libc::SYS_epoll_ctl, &[(1, add), (2, number)], libc::ENOSPC)?;
    rt.block_on(async {
        assert_os_error(finish(efd.add(1)).await, libc::ENOSPC);
        assert_os_error(
            finish(poll_fn(|cx| efd.poll_add(cx, 1))).await,
            libc::ENOSPC,
        );
    });
    assert!(
        !is_open(dup),
        "the dup of a failed write registration was leaked"
    );
    assert_eq!(open_fds(), fds);

    // Take the filtered number, so the next dup registers; nothing was added.
    let _hole = EventFd::new().expect("eventfd");
    let efd = Arc::new(efd);
    rt.block_on(async {
        let adder = Arc::clone(&efd);
        let waiting = tokio::spawn(async move { adder.add(2).await });
        until_waiting_add_registered(fds + 1).await;
        assert_eq!(efd.try_read().expect("read the full counter"), MAX_COUNT);
        finish(waiting).await.expect("join").expect("add(2)");
    });
    assert_holds(efd.get_ref(), 2);
    Ok(())
}
