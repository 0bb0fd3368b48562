//! `AsyncEventFd`: the tokio layer, on both runtime flavors.
//!
//! Each async test runs on a fresh runtime on a watched thread
//! (`util::run_isolated`), so a busy loop or a lost wakeup fails the test
//! instead of hanging the run; every await that must finish goes through
//! `util::finish`, which also fails when only the timeout's own re-poll
//! completed it. "Pending" is proven by polling once, never by sleeping.

#![cfg(feature = "tokio")]

#[macro_use]
mod util;

use std::fmt::Debug;
use std::future::poll_fn;
use std::io::ErrorKind;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::pin::pin;
use std::sync::Arc;

use async_eventfd::{AsyncEventFd, EventFd, MAX_COUNT};
use futures::poll;
use nix::errno::Errno;
use tokio_test::{assert_pending, assert_ready};

use util::tasks::{
    assert_empty, assert_not_woken, until_woken, waits_without_spinning_until_an_add,
};
use util::{assert_kind, finish, is_cloexec, is_nonblocking, new_efd, semaphore_efd, Flavor};

// ----- construction -----

#[test]
fn new_outside_a_runtime_is_an_other_error_not_a_panic() {
    let err = assert_kind(AsyncEventFd::new(), ErrorKind::Other);
    assert!(
        err.get_ref().is_some(),
        "the error keeps tokio's as its source"
    );
}

#[test]
fn try_from_outside_a_runtime_is_an_other_error_not_a_panic() {
    let efd = EventFd::new().expect("EventFd::new");
    assert_kind(AsyncEventFd::try_from(efd), ErrorKind::Other);
}

both_flavors! {
    async fn new_is_nonblocking_close_on_exec_counter_mode() {
        let efd = new_efd();
        assert!(is_nonblocking(&efd));
        assert!(is_cloexec(&efd));
        assert!(!efd.get_ref().is_semaphore());
        assert_empty(&efd);
    }

    async fn try_from_switches_a_blocking_eventfd_and_its_dups_to_nonblocking() {
        let blocking = EventFd::builder()
            .nonblocking(false)
            .build()
            .expect("build blocking");
        let dup = blocking.try_clone().expect("try_clone");
        assert!(!is_nonblocking(&dup));
        let efd = AsyncEventFd::try_from(blocking).expect("register");
        assert!(is_nonblocking(&efd));
        assert!(efd.get_ref().is_nonblocking().expect("is_nonblocking"));
        // The flag lives on the open file description, so the dup follows.
        assert!(is_nonblocking(&dup));
        assert_kind(dup.read(), ErrorKind::WouldBlock);
    }

    async fn try_from_keeps_nonblocking_semaphore_and_counter() {
        let efd = semaphore_efd(2);
        assert!(efd.get_ref().is_semaphore());
        assert!(is_nonblocking(&efd));
        assert_eq!(finish(efd.read()).await.expect("read 1"), 1);
        assert_eq!(finish(efd.read()).await.expect("read 2"), 1);
        assert_empty(&efd);
    }

    /// A semaphore eventfd made elsewhere (here by nix directly) and adopted
    /// through `OwnedFd`: `read().await` must get every unit. The mode comes
    /// from `/proc/self/fdinfo` (or is unknown, and treated as a semaphore,
    /// before Linux 6.2); were it misread as counter mode, readiness would be
    /// cleared after each read and the second read would hang.
    async fn adopted_semaphore_eventfd_reads_every_unit() {
        use nix::sys::eventfd::EfdFlags;
        let foreign = nix::sys::eventfd::EventFd::from_value_and_flags(
            3,
            EfdFlags::EFD_SEMAPHORE | EfdFlags::EFD_NONBLOCK,
        )
        .expect("nix eventfd");
        let adopted = EventFd::try_from(OwnedFd::from(foreign)).expect("adopt");
        let efd = AsyncEventFd::try_from(adopted).expect("register");
        for i in 0..3 {
            assert_eq!(
                finish(efd.read()).await.unwrap_or_else(|e| panic!("read {i}: {e}")),
                1
            );
        }
        assert_empty(&efd);
    }

    async fn as_fd_and_as_raw_fd_match_get_ref() {
        let efd = new_efd();
        assert_eq!(efd.as_raw_fd(), efd.get_ref().as_raw_fd());
        assert_eq!(efd.as_fd().as_raw_fd(), efd.get_ref().as_raw_fd());
    }
}

// ----- basic reads and adds -----

both_flavors! {
    async fn read_after_two_adds_returns_sum() {
        let efd = new_efd();
        finish(efd.add(2)).await.expect("add 2");
        finish(efd.add(3)).await.expect("add 3");
        assert_eq!(finish(efd.read()).await.expect("read"), 5);
        assert_empty(&efd);
    }

    async fn read_is_pending_while_empty_then_returns_the_add() {
        let efd = new_efd();
        let mut read = pin!(efd.read());
        assert_pending!(poll!(&mut read));
        assert_pending!(poll!(&mut read));
        efd.try_add(4).expect("try_add");
        assert_eq!(finish(read).await.expect("read"), 4);
        assert_empty(&efd);
    }

    async fn waiting_read_is_woken_by_an_add_and_reads_it() {
        let efd = new_efd();
        let mut read = tokio_test::task::spawn(efd.read());
        assert_pending!(read.poll());
        assert_not_woken(&read, "woken with nothing to do").await;
        finish(efd.add(6)).await.expect("add");
        until_woken(&read).await;
        assert_eq!(assert_ready!(read.poll()).expect("read"), 6);
    }

    async fn read_is_woken_by_an_add_from_another_task() {
        let efd = Arc::new(new_efd());
        let writer = Arc::clone(&efd);
        let task = tokio::spawn(async move {
            tokio::task::yield_now().await;
            writer.add(8).await
        });
        assert_eq!(finish(efd.read()).await.expect("read"), 8);
        finish(task).await.expect("join").expect("add");
    }

    async fn writes_from_plain_threads_via_get_ref_try_clone_are_all_read() {
        const THREADS: u64 = 4;
        const ADDS: u64 = 500;
        let efd = new_efd();
        let writers = util::thread_writers(efd.get_ref(), THREADS, ADDS);
        let mut total = 0;
        while total < THREADS * ADDS {
            let n = finish(efd.read()).await.expect("read");
            assert!(n >= 1, "a read returned 0");
            total += n;
        }
        for writer in writers {
            writer.join().expect("writer thread");
        }
        assert_eq!(total, THREADS * ADDS);
        assert_empty(&efd);
    }

    async fn try_read_and_try_add_never_wait() {
        let efd = new_efd();
        let err = assert_kind(efd.try_read(), ErrorKind::WouldBlock);
        assert_eq!(err.raw_os_error(), Some(Errno::EAGAIN as i32));
        efd.try_add(3).expect("try_add 3");
        efd.try_add(0).expect("try_add 0");
        assert_eq!(efd.try_read().expect("try_read"), 3);
        efd.try_add(MAX_COUNT).expect("fill");
        let err = assert_kind(efd.try_add(1), ErrorKind::WouldBlock);
        assert_eq!(err.raw_os_error(), Some(Errno::EAGAIN as i32));
        assert_eq!(efd.try_read().expect("try_read full"), MAX_COUNT);
        assert_empty(&efd);
    }

    async fn add_u64_max_is_invalid_input_on_every_tier_and_adds_nothing() {
        let efd = new_efd();
        efd.try_add(5).expect("try_add");
        let err = assert_kind(finish(efd.add(u64::MAX)).await, ErrorKind::InvalidInput);
        assert_eq!(err.raw_os_error(), Some(Errno::EINVAL as i32));
        let err = assert_kind(efd.try_add(u64::MAX), ErrorKind::InvalidInput);
        assert_eq!(err.raw_os_error(), Some(Errno::EINVAL as i32));
        let err = assert_kind(
            finish(poll_fn(|cx| efd.poll_add(cx, u64::MAX))).await,
            ErrorKind::InvalidInput,
        );
        assert_eq!(err.raw_os_error(), Some(Errno::EINVAL as i32));
        assert_eq!(efd.try_read().expect("try_read"), 5);
    }

    async fn add_u64_max_on_a_full_counter_fails_instead_of_waiting() {
        let efd = new_efd();
        efd.try_add(MAX_COUNT).expect("fill");
        assert_kind(finish(efd.add(u64::MAX)).await, ErrorKind::InvalidInput);
        assert_eq!(efd.try_read().expect("try_read"), MAX_COUNT);
    }

    async fn poll_read_is_pending_while_empty_then_ready_with_the_value() {
        let efd = new_efd();
        let mut read = tokio_test::task::spawn(poll_fn(|cx| efd.poll_read(cx)));
        assert_pending!(read.poll());
        efd.try_add(9).expect("try_add");
        until_woken(&read).await;
        assert_eq!(assert_ready!(read.poll()).expect("poll_read"), 9);
        assert_empty(&efd);
        // And again: the readiness was re-armed.
        let mut again = tokio_test::task::spawn(poll_fn(|cx| efd.poll_read(cx)));
        assert_pending!(again.poll());
        efd.try_add(1).expect("try_add");
        until_woken(&again).await;
        assert_eq!(assert_ready!(again.poll()).expect("poll_read"), 1);
    }

    async fn poll_read_in_semaphore_mode_takes_one_per_poll() {
        let efd = semaphore_efd(3);
        for _ in 0..3 {
            assert_eq!(finish(poll_fn(|cx| efd.poll_read(cx))).await.expect("poll_read"), 1);
        }
        let mut read = tokio_test::task::spawn(poll_fn(|cx| efd.poll_read(cx)));
        assert_pending!(read.poll());
        assert_not_woken(&read, "an empty counter must not wake the reader").await;
        efd.try_add(1).expect("try_add");
        until_woken(&read).await;
        assert_eq!(assert_ready!(read.poll()).expect("poll_read"), 1);
    }

    async fn poll_add_adds_at_once_when_there_is_room() {
        let efd = new_efd();
        finish(poll_fn(|cx| efd.poll_add(cx, 2))).await.expect("poll_add");
        assert_eq!(efd.try_read().expect("try_read"), 2);
    }
}

// ----- readiness that is stale must be cleared (no busy loop) -----

both_flavors! {
    /// Semaphore mode keeps readiness after a successful read; the read that
    /// then finds the counter empty must clear it and wait, not spin.
    async fn read_after_the_last_semaphore_unit_waits_without_spinning() {
        let efd = semaphore_efd(1);
        assert_eq!(finish(efd.read()).await.expect("read"), 1);
        waits_without_spinning_until_an_add(&efd, efd.read(), 2, 1).await;
    }

    /// A count taken by `try_read` leaves tokio's readiness set; the next
    /// `read` must see `WouldBlock`, clear it, and wait for a real add.
    async fn read_after_try_read_drained_waits_without_spinning() {
        let efd = new_efd();
        {
            let mut first = tokio_test::task::spawn(efd.read());
            assert_pending!(first.poll());
            efd.try_add(2).expect("try_add");
            until_woken(&first).await;
            // Dropped without being polled again: the reactor's readiness
            // stays set while try_read takes the count.
        }
        assert_eq!(efd.try_read().expect("try_read"), 2);
        waits_without_spinning_until_an_add(&efd, efd.read(), 3, 3).await;
    }

    async fn poll_read_after_try_read_drained_waits_without_spinning() {
        let efd = new_efd();
        {
            let mut first = tokio_test::task::spawn(poll_fn(|cx| efd.poll_read(cx)));
            assert_pending!(first.poll());
            efd.try_add(2).expect("try_add");
            until_woken(&first).await;
        }
        assert_eq!(efd.try_read().expect("try_read"), 2);
        waits_without_spinning_until_an_add(&efd, poll_fn(|cx| efd.poll_read(cx)), 3, 3).await;
    }
}

// ----- cancel safety -----

both_flavors! {
    async fn read_dropped_before_an_add_loses_nothing() {
        let efd = new_efd();
        {
            let mut read = pin!(efd.read());
            assert_pending!(poll!(&mut read));
        }
        efd.try_add(5).expect("try_add");
        assert_eq!(finish(efd.read()).await.expect("read"), 5);
    }

    async fn read_woken_then_dropped_loses_nothing() {
        let efd = new_efd();
        let mut read = tokio_test::task::spawn(efd.read());
        assert_pending!(read.poll());
        efd.try_add(5).expect("try_add");
        until_woken(&read).await;
        drop(read);
        // The wakeup went to a future that is gone; the count and the
        // readiness must still be there for the next reader.
        assert_eq!(finish(efd.read()).await.expect("read"), 5);
    }

    async fn select_cancelled_reads_lose_nothing() {
        const TOTAL: u64 = 2_000;
        let efd = new_efd();
        let writer = efd.get_ref().try_clone().expect("try_clone");
        let thread = std::thread::spawn(move || {
            for i in 0..TOTAL {
                writer.add(1).expect("add");
                if i % 64 == 0 {
                    std::thread::yield_now();
                }
            }
        });
        let mut total = 0;
        let mut cancelled = 0u64;
        finish(async {
            while total < TOTAL {
                tokio::select! {
                    biased;
                    n = efd.read() => total += n.expect("read"),
                    () = tokio::task::yield_now() => cancelled += 1,
                }
            }
        })
        .await;
        thread.join().expect("writer thread");
        assert_eq!(total, TOTAL);
        assert_empty(&efd);
        // Not asserted (timing-dependent), only shown: how many reads were cancelled.
        println!("{cancelled} reads cancelled by select!");
    }

    async fn select_that_picks_another_branch_leaves_the_count() {
        let efd = new_efd();
        for round in 1..=50u64 {
            efd.try_add(round).expect("try_add");
            // The other branch is always ready and listed first: the read is
            // created and dropped without ever being polled to completion.
            tokio::select! {
                biased;
                () = std::future::ready(()) => {}
                n = efd.read() => panic!("the read branch won: {n:?}"),
            }
            assert_eq!(finish(efd.read()).await.expect("read"), round);
        }
    }
}

// ----- into_inner and drop -----

both_flavors! {
    async fn into_inner_keeps_the_fd_and_the_counter() {
        let efd = new_efd();
        finish(efd.add(12)).await.expect("add");
        let raw = efd.as_raw_fd();
        let inner = efd.into_inner();
        assert_eq!(inner.as_raw_fd(), raw);
        assert!(inner.is_nonblocking().expect("is_nonblocking"));
        assert!(is_cloexec(&inner));
        assert_eq!(inner.read().expect("read"), 12);
        // Deregistered: the same fd registers again with the same runtime
        // (epoll would refuse a second registration of a registered fd).
        let again = AsyncEventFd::try_from(inner).expect("register again");
        assert_eq!(again.as_raw_fd(), raw);
        again.try_add(1).expect("try_add");
        assert_eq!(finish(again.read()).await.expect("read"), 1);
    }

    async fn into_inner_of_a_semaphore_keeps_the_mode() {
        let efd = semaphore_efd(2);
        let inner = efd.into_inner();
        assert!(inner.is_semaphore());
        assert_eq!(inner.read().expect("read"), 1);
        assert_eq!(inner.read().expect("read"), 1);
    }

    async fn drop_inside_the_runtime_leaves_clones_working() {
        let efd = new_efd();
        let clone = efd.get_ref().try_clone().expect("try_clone");
        finish(efd.add(3)).await.expect("add");
        drop(efd);
        assert_eq!(clone.read().expect("read the clone"), 3);
    }

    async fn drop_on_a_thread_outside_the_runtime_context() {
        let efd = new_efd();
        let clone = efd.get_ref().try_clone().expect("try_clone");
        efd.try_add(4).expect("try_add");
        std::thread::spawn(move || drop(efd))
            .join()
            .expect("drop on a plain thread");
        assert_eq!(clone.read().expect("read the clone"), 4);
        // The runtime still works for a new AsyncEventFd.
        let fresh = new_efd();
        fresh.try_add(1).expect("try_add");
        assert_eq!(finish(fresh.read()).await.expect("read"), 1);
    }
}

#[test]
fn an_owned_fd_round_trip_through_async_keeps_the_counter() {
    util::run_isolated(Flavor::CurrentThread, || async {
        let efd = new_efd();
        efd.try_add(5).expect("try_add");
        let fd: OwnedFd = efd.into_inner().into();
        let adopted = EventFd::try_from(fd).expect("adopt");
        let efd = AsyncEventFd::try_from(adopted).expect("register");
        assert_eq!(finish(efd.read()).await.expect("read"), 5);
    });
}

// ----- traits -----

#[test]
fn async_eventfd_is_send_sync_unpin_debug() {
    fn assert_traits<T: Send + Sync + Unpin + Debug>() {}
    assert_traits::<AsyncEventFd>();
}

#[test]
fn read_and_add_futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    util::run_isolated(Flavor::CurrentThread, || async {
        let efd = new_efd();
        let read = efd.read();
        assert_send(&read);
        let add = efd.add(1);
        assert_send(&add);
    });
}

#[test]
fn debug_names_the_type_and_the_fd() {
    util::run_isolated(Flavor::CurrentThread, || async {
        let efd = new_efd();
        let shown = format!("{efd:?}");
        assert!(shown.starts_with("AsyncEventFd"), "{shown}");
        assert!(shown.contains(&efd.as_raw_fd().to_string()), "{shown}");
    });
}

// ----- the helpers themselves -----

#[test]
#[should_panic(expected = "woken by the timeout")]
fn must_finish_fails_a_future_that_only_the_deadline_repoll_completes() {
    // A lost waker: pending once without arranging a wakeup, ready when
    // polled again, which only `timeout` itself does, at its deadline.
    let mut polled = false;
    let lost_waker = poll_fn(move |_| {
        if polled {
            std::task::Poll::Ready(())
        } else {
            polled = true;
            std::task::Poll::Pending
        }
    });
    util::runtime(Flavor::CurrentThread).block_on(util::must_finish(
        std::time::Duration::from_millis(200),
        lost_waker,
    ));
}

#[test]
#[should_panic(expected = "did not finish")]
fn must_finish_fails_a_future_that_never_finishes() {
    util::runtime(Flavor::CurrentThread).block_on(util::must_finish(
        std::time::Duration::from_millis(50),
        std::future::pending::<()>(),
    ));
}
