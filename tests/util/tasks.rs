//! Helpers for tests that drive `AsyncEventFd` futures by hand
//! (`tokio_test::task::Spawn`): waiting for a wake, proving that a future is
//! not woken (no busy loop), and an empty counter.

use std::fmt::Debug;
use std::io::{self, ErrorKind};

use async_eventfd::AsyncEventFd;
use tokio_test::{assert_pending, assert_ready};

use super::{assert_kind, finish};

/// Asserts that the counter is empty: `try_read` gives `WouldBlock`.
#[track_caller]
pub fn assert_empty(efd: &AsyncEventFd) {
    assert_kind(efd.try_read(), ErrorKind::WouldBlock);
}

/// Waits (by yielding to the runtime, so its reactor runs) until the mock
/// task has been woken.
pub async fn until_woken<T>(task: &tokio_test::task::Spawn<T>) {
    finish(async {
        while !task.is_woken() {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

/// `read` (a fresh read future on `efd`, whose counter is empty) is pending
/// and not woken, so it waits without spinning; `try_add(add)` then wakes it
/// and it returns `expect`.
pub async fn waits_without_spinning_until_an_add<F>(
    efd: &AsyncEventFd,
    read: F,
    add: u64,
    expect: u64,
) where
    F: std::future::Future<Output = io::Result<u64>>,
{
    let mut read = tokio_test::task::spawn(read);
    assert_pending!(read.poll());
    assert_not_woken(&read, "woken with nothing to read: a busy loop").await;
    efd.try_add(add).expect("try_add");
    until_woken(&read).await;
    assert_eq!(assert_ready!(read.poll()).expect("read"), expect);
}

/// Asserts that the mock task was not woken, also after a few turns of the
/// runtime: tokio defers some wakeups (a task that ran out of its coop
/// budget, as a busy loop does) until the scheduler runs again.
pub async fn assert_not_woken<T>(task: &tokio_test::task::Spawn<T>, what: &str) {
    for _ in 0..3 {
        tokio::task::yield_now().await;
    }
    assert!(!task.is_woken(), "{what}");
}

/// Like [`assert_not_woken`], but allows a bounded number of spurious
/// wakeups, each of which must end in `Pending` again: for futures whose
/// first registration may see a readiness that is not enough for them.
pub async fn settle_pending<T: std::future::Future>(
    task: &mut tokio_test::task::Spawn<T>,
    what: &str,
) where
    T::Output: Debug,
{
    for _ in 0..3 {
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        if !task.is_woken() {
            return;
        }
        assert_pending!(task.poll(), "{what}");
    }
    panic!("{what}: still woken after 3 polls: a busy loop");
}
