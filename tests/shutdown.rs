//! `AsyncEventFd` after its runtime shut down: pending and later calls end
//! with an error that holds a `RuntimeShutdown` (never a hang), on every path;
//! the fd and its counter stay usable without the runtime.

#![cfg(feature = "tokio")]

#[macro_use]
mod util;

use std::future::poll_fn;
use std::os::fd::AsRawFd;
use std::pin::pin;
use std::sync::Arc;

use async_eventfd::{AsyncEventFd, MAX_COUNT};
use futures::poll;
use tokio_test::{assert_pending, assert_ready};

use util::{assert_shutdown_error, finish, new_efd, Flavor};

/// Makes an `AsyncEventFd` registered with a runtime of `flavor`, and that
/// runtime.
fn efd_on(flavor: Flavor) -> (tokio::runtime::Runtime, Arc<AsyncEventFd>) {
    let rt = util::runtime(flavor);
    let efd = {
        let _entered = rt.enter();
        Arc::new(new_efd())
    };
    (rt, efd)
}

/// Shuts a runtime down from a plain thread (a runtime may not be dropped
/// from inside another runtime).
fn shut_down(rt: tokio::runtime::Runtime) {
    std::thread::spawn(move || drop(rt))
        .join()
        .expect("drop the runtime");
}

#[test]
fn pending_read_is_woken_with_an_error_when_the_runtime_shuts_down() {
    for flavor in [Flavor::CurrentThread, Flavor::MultiThread] {
        let (rt, efd) = efd_on(flavor);
        let mut read = tokio_test::task::spawn(efd.read());
        assert_pending!(read.poll());
        drop(rt);
        assert!(
            read.is_woken(),
            "{flavor:?}: shutdown must wake the waiting read"
        );
        assert_shutdown_error(assert_ready!(read.poll()));
    }
}

#[test]
fn read_and_add_after_the_runtime_shut_down_are_errors() {
    for flavor in [Flavor::CurrentThread, Flavor::MultiThread] {
        let (rt, efd) = efd_on(flavor);
        drop(rt);
        let mut read = tokio_test::task::spawn(efd.read());
        assert_shutdown_error(assert_ready!(read.poll()));
        // Even with a count waiting: the fd belongs to a dead reactor.
        efd.try_add(1)
            .expect("try_add still works: it is one syscall");
        let mut add = tokio_test::task::spawn(efd.add(1));
        assert_shutdown_error(assert_ready!(add.poll()));
        let mut poll_add = tokio_test::task::spawn(poll_fn(|cx| efd.poll_add(cx, 1)));
        assert_shutdown_error(assert_ready!(poll_add.poll()));
        let mut poll_read = tokio_test::task::spawn(poll_fn(|cx| efd.poll_read(cx)));
        assert_shutdown_error(assert_ready!(poll_read.poll()));
        assert_eq!(efd.try_read().expect("try_read"), 1);
    }
}

#[test]
fn add_and_reads_that_worked_before_the_shutdown_fail_after_it() {
    for flavor in [Flavor::CurrentThread, Flavor::MultiThread] {
        let (rt, efd) = efd_on(flavor);
        // Warm every path while the runtime lives: the adds have checked the
        // runtime once, and 64 reads in a row that find a count make `read`
        // try the syscall before waiting.
        rt.block_on(async {
            for i in 1..=64 {
                finish(efd.add(i)).await.expect("add");
                assert_eq!(finish(efd.read()).await.expect("read"), i);
            }
            finish(poll_fn(|cx| efd.poll_add(cx, 5)))
                .await
                .expect("poll_add");
            assert_eq!(
                finish(poll_fn(|cx| efd.poll_read(cx)))
                    .await
                    .expect("poll_read"),
                5
            );
        });
        shut_down(rt);
        efd.try_add(1).expect("try_add: one syscall, no runtime");
        let mut add = tokio_test::task::spawn(efd.add(1));
        assert_shutdown_error(assert_ready!(add.poll()));
        let mut poll_add = tokio_test::task::spawn(poll_fn(|cx| efd.poll_add(cx, 1)));
        assert_shutdown_error(assert_ready!(poll_add.poll()));
        // With a count waiting, a speculative read would find it: it must
        // fail all the same.
        let mut read = tokio_test::task::spawn(efd.read());
        assert_shutdown_error(assert_ready!(read.poll()));
        let mut poll_read = tokio_test::task::spawn(poll_fn(|cx| efd.poll_read(cx)));
        assert_shutdown_error(assert_ready!(poll_read.poll()));
        assert_eq!(efd.try_read().expect("only try_add added"), 1);
    }
}

#[test]
fn pending_add_on_a_full_counter_is_woken_with_an_error_when_the_runtime_shuts_down() {
    for flavor in [Flavor::CurrentThread, Flavor::MultiThread] {
        let (rt, efd) = efd_on(flavor);
        efd.try_add(MAX_COUNT).expect("fill");
        let mut add = {
            let _entered = rt.enter();
            let mut add = tokio_test::task::spawn(efd.add(1));
            assert_pending!(add.poll());
            add
        };
        let mut poll_add = {
            let _entered = rt.enter();
            let mut poll_add = tokio_test::task::spawn(poll_fn(|cx| efd.poll_add(cx, 1)));
            assert_pending!(poll_add.poll());
            poll_add
        };
        drop(rt);
        assert!(
            add.is_woken(),
            "{flavor:?}: shutdown must wake the waiting add"
        );
        assert_shutdown_error(assert_ready!(add.poll()));
        assert!(
            poll_add.is_woken(),
            "{flavor:?}: shutdown must wake poll_add"
        );
        assert_shutdown_error(assert_ready!(poll_add.poll()));
        assert_eq!(efd.try_read().expect("nothing was added"), MAX_COUNT);
    }
}

#[test]
fn read_awaited_on_another_runtime_fails_when_the_fd_runtime_shuts_down() {
    for flavor in [Flavor::CurrentThread, Flavor::MultiThread] {
        let (home, efd) = efd_on(flavor);
        util::must_return(util::TEST_LIMIT, move || {
            let other = util::runtime(Flavor::CurrentThread);
            other.block_on(async move {
                let mut read = pin!(efd.read());
                assert_pending!(poll!(&mut read));
                shut_down(home);
                assert_shutdown_error(finish(read).await);
            });
        });
    }
}

#[test]
fn drop_after_the_runtime_shut_down_does_not_panic() {
    for flavor in [Flavor::CurrentThread, Flavor::MultiThread] {
        let (rt, efd) = efd_on(flavor);
        let clone = efd.get_ref().try_clone().expect("try_clone");
        efd.try_add(2).expect("try_add");
        drop(rt);
        drop(efd);
        assert_eq!(clone.read().expect("read the clone"), 2);
    }
}

#[test]
fn into_inner_after_the_runtime_shut_down_keeps_the_counter() {
    for flavor in [Flavor::CurrentThread, Flavor::MultiThread] {
        let (rt, efd) = efd_on(flavor);
        efd.try_add(3).expect("try_add");
        drop(rt);
        let efd = Arc::try_unwrap(efd).expect("sole owner");
        let raw = efd.as_raw_fd();
        let inner = efd.into_inner();
        assert_eq!(inner.as_raw_fd(), raw);
        assert_eq!(inner.read().expect("read"), 3);
    }
}

#[test]
fn warm_read_after_the_runtime_shut_down_is_an_error() {
    for flavor in [Flavor::CurrentThread, Flavor::MultiThread] {
        let (rt, efd) = efd_on(flavor);
        rt.block_on(util::warm_up(&efd));
        efd.try_add(1).expect("try_add");
        drop(rt);
        let mut read = tokio_test::task::spawn(efd.read());
        assert_shutdown_error(assert_ready!(read.poll()));
        assert_eq!(efd.try_read().expect("the count is still there"), 1);
    }
}
