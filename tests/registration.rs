//! Registering an `EventFd` with a runtime: `new_in`, `try_new`,
//! `try_new_in` and `TryNewError`. A failed registration gives the fd back
//! unchanged; the `_in` forms work from threads outside any runtime.

#![cfg(feature = "tokio")]

#[macro_use]
mod util;

use std::error::Error;
use std::io::{self, ErrorKind};
use std::os::fd::AsRawFd;
use std::sync::mpsc;

use async_eventfd::{AsyncEventFd, EventFd, RuntimeShutdown, TryNewError};
use tokio::runtime::{Handle, TryCurrentError};

use util::{assert_shutdown_error, finish, is_nonblocking, Flavor};

/// A blocking counter-mode eventfd holding `initial`.
fn blocking_efd(initial: u32) -> EventFd {
    EventFd::builder()
        .initial(initial)
        .nonblocking(false)
        .build()
        .expect("build a blocking eventfd")
}

/// Checks that `efd` is the fd `raw` handed in, unchanged: still open, still
/// blocking, holding `count`, and that adds and reads still work through it.
#[track_caller]
fn assert_given_back_unchanged(efd: &EventFd, raw: i32, count: u64) {
    assert_eq!(efd.as_raw_fd(), raw, "the same fd");
    assert!(!is_nonblocking(efd), "the blocking flag is restored");
    // A blocking read of a non-zero counter returns at once.
    assert_eq!(efd.read().expect("read the counter"), count);
    efd.add(7).expect("add");
    assert_eq!(efd.read().expect("read the add"), 7);
}

/// A runtime of `flavor` that has shut down, and its handle.
fn shut_down_handle(flavor: Flavor) -> Handle {
    let rt = util::runtime(flavor);
    let handle = rt.handle().clone();
    drop(rt);
    handle
}

/// Runs `f` on a plain thread (no runtime context there) and returns its
/// result.
fn on_plain_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        assert!(
            matches!(Handle::try_current(), Err(e) if e.is_missing_context()),
            "a plain thread has no runtime context"
        );
        tx.send(f()).expect("send the result back");
    });
    util::recv_within(&rx, util::LIMIT)
}

// ----- failures give the fd back -----

#[test]
fn try_new_outside_a_runtime_gives_the_fd_back_unchanged() {
    let efd = blocking_efd(5);
    let raw = efd.as_raw_fd();
    let err = AsyncEventFd::try_new(efd).expect_err("no runtime here");
    let (efd, cause) = err.into_parts();
    assert_eq!(cause.kind(), ErrorKind::Other);
    assert!(
        cause
            .get_ref()
            .and_then(|e| e.downcast_ref::<TryCurrentError>())
            .is_some_and(TryCurrentError::is_missing_context),
        "the cause holds tokio's TryCurrentError: {cause:?}"
    );
    assert_given_back_unchanged(&efd, raw, 5);
}

#[test]
fn try_new_in_on_a_shut_down_runtime_gives_the_fd_back_unchanged() {
    for flavor in [Flavor::CurrentThread, Flavor::MultiThread] {
        let handle = shut_down_handle(flavor);
        let efd = blocking_efd(3);
        let raw = efd.as_raw_fd();
        let (efd, cause) = AsyncEventFd::try_new_in(efd, &handle)
            .expect_err("the runtime is gone")
            .into_parts();
        assert_shutdown_error::<()>(Err(cause));
        assert_given_back_unchanged(&efd, raw, 3);
    }
}

#[test]
fn try_new_in_a_shut_down_runtime_context_gives_the_fd_back_unchanged() {
    let handle = shut_down_handle(Flavor::CurrentThread);
    let _entered = handle.enter();
    let efd = blocking_efd(2);
    let raw = efd.as_raw_fd();
    let (efd, cause) = AsyncEventFd::try_new(efd)
        .expect_err("the runtime is gone")
        .into_parts();
    assert_shutdown_error::<()>(Err(cause));
    assert_given_back_unchanged(&efd, raw, 2);
}

#[test]
fn new_in_and_try_from_on_a_shut_down_runtime_are_shutdown_errors() {
    let handle = shut_down_handle(Flavor::MultiThread);
    assert_shutdown_error(AsyncEventFd::new_in(&handle));
    let _entered = handle.enter();
    assert_shutdown_error(AsyncEventFd::new());
    assert_shutdown_error(AsyncEventFd::try_from(blocking_efd(1)));
}

#[test]
fn try_new_error_converts_into_its_cause() {
    let err = AsyncEventFd::try_new(blocking_efd(0)).expect_err("no runtime here");
    let shown = err.to_string();
    let cause = err.source().expect("a source").to_string();
    assert!(
        shown.contains(&cause),
        "Display names the cause: {shown:?} / {cause:?}"
    );
    let io_err = io::Error::from(err);
    assert_eq!(io_err.kind(), ErrorKind::Other);
    assert!(io_err
        .get_ref()
        .and_then(|e| e.downcast_ref::<TryCurrentError>())
        .is_some());
    // `TryFrom` gives the same error (and closes the fd).
    let via_try_from = AsyncEventFd::try_from(blocking_efd(0)).expect_err("no runtime");
    assert_eq!(via_try_from.kind(), ErrorKind::Other);
    assert_eq!(via_try_from.to_string(), io_err.to_string());
}

#[test]
fn try_new_error_and_runtime_shutdown_are_send_sync_errors() {
    fn assert_error<T: Error + Send + Sync + 'static>() {}
    assert_error::<TryNewError>();
    assert_error::<RuntimeShutdown>();
    let shown = RuntimeShutdown::to_string(&shutdown_cause());
    assert!(shown.contains("shut down"), "{shown}");
}

/// The `RuntimeShutdown` inside a real shutdown error.
fn shutdown_cause() -> RuntimeShutdown {
    let err = AsyncEventFd::new_in(&shut_down_handle(Flavor::CurrentThread))
        .expect_err("the runtime is gone");
    *err.get_ref()
        .and_then(|e| e.downcast_ref::<RuntimeShutdown>())
        .expect("a RuntimeShutdown")
}

// ----- from any thread -----

#[test]
fn new_in_on_a_plain_thread_registers_with_that_runtime() {
    for flavor in [Flavor::CurrentThread, Flavor::MultiThread] {
        let rt = util::runtime(flavor);
        let handle = rt.handle().clone();
        let efd = on_plain_thread(move || AsyncEventFd::new_in(&handle)).expect("new_in");
        assert!(is_nonblocking(&efd));
        let writer = efd.get_ref().try_clone().expect("try_clone");
        util::must_return(util::TEST_LIMIT, move || {
            rt.block_on(async {
                let mut read = tokio_test::task::spawn(efd.read());
                tokio_test::assert_pending!(read.poll());
                std::thread::spawn(move || writer.add(4).expect("add from a thread"));
                assert_eq!(finish(read).await.expect("read"), 4);
                finish(efd.add(2)).await.expect("add");
                assert_eq!(finish(efd.read()).await.expect("read"), 2);
            });
        });
    }
}

#[test]
fn try_new_in_on_a_plain_thread_switches_to_nonblocking_and_keeps_the_mode() {
    for flavor in [Flavor::CurrentThread, Flavor::MultiThread] {
        let rt = util::runtime(flavor);
        let handle = rt.handle().clone();
        let efd = on_plain_thread(move || {
            let efd = EventFd::builder()
                .semaphore(true)
                .initial(2)
                .nonblocking(false)
                .build()
                .expect("build");
            AsyncEventFd::try_new_in(efd, &handle).map_err(io::Error::from)
        })
        .expect("try_new_in");
        assert!(is_nonblocking(&efd));
        assert!(efd.get_ref().is_semaphore());
        util::must_return(util::TEST_LIMIT, move || {
            rt.block_on(async {
                assert_eq!(finish(efd.read()).await.expect("read 1"), 1);
                assert_eq!(finish(efd.read()).await.expect("read 2"), 1);
                util::assert_kind(efd.try_read(), ErrorKind::WouldBlock);
            });
        });
    }
}

/// Inside runtime `a`, `try_new_in(.., b)` registers with `b`: when `b`
/// shuts down, the fd's waiting read fails while `a` runs on.
#[test]
fn try_new_in_registers_with_the_given_runtime_not_the_current_one() {
    let b = util::runtime(Flavor::MultiThread);
    let b_handle = b.handle().clone();
    util::run_isolated(Flavor::CurrentThread, move || async move {
        let efd =
            AsyncEventFd::try_new_in(EventFd::new().expect("new"), &b_handle).expect("try_new_in");
        let mut read = std::pin::pin!(efd.read());
        tokio_test::assert_pending!(futures::poll!(&mut read));
        std::thread::spawn(move || drop(b))
            .join()
            .expect("shut b down");
        assert_shutdown_error(finish(read).await);
    });
}

both_flavors! {
    async fn try_new_inside_a_runtime_registers_and_keeps_the_counter() {
        let efd = blocking_efd(6);
        let raw = efd.as_raw_fd();
        let efd = AsyncEventFd::try_new(efd).expect("try_new");
        assert_eq!(efd.as_raw_fd(), raw);
        assert!(is_nonblocking(&efd));
        assert_eq!(finish(efd.read()).await.expect("read"), 6);
    }
}
