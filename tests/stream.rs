//! `impl Stream for AsyncEventFd`: one item per successful read, never
//! ending on its own.

#![cfg(feature = "stream")]

#[macro_use]
mod util;

use std::io::ErrorKind;
use std::sync::Arc;

use async_eventfd::AsyncEventFd;
use futures::{poll, Stream, StreamExt, TryStreamExt};
use tokio_test::{assert_pending, assert_ready};

use util::{finish, new_efd, semaphore_efd, Flavor};

/// The next item, which must come.
async fn next_value(stream: &mut AsyncEventFd) -> u64 {
    finish(stream.next())
        .await
        .expect("the stream ended")
        .expect("the stream yielded an error")
}

both_flavors! {
    async fn yields_each_read() {
        let mut efd = new_efd();
        efd.try_add(3).expect("try_add");
        assert_eq!(next_value(&mut efd).await, 3);
        efd.try_add(4).expect("try_add");
        efd.try_add(5).expect("try_add");
        // Adds between items coalesce, as for read().
        assert_eq!(next_value(&mut efd).await, 9);
    }

    async fn is_pending_when_empty_and_never_ends() {
        let mut efd = new_efd();
        assert_pending!(poll!(efd.next()));
        efd.try_add(1).expect("try_add");
        assert_eq!(next_value(&mut efd).await, 1);
        // Drained: pending again, not `None`.
        assert_pending!(poll!(efd.next()));
        assert_eq!(efd.size_hint(), (usize::MAX, None));
    }

    async fn pending_stream_is_woken_by_an_add_from_a_plain_thread() {
        let efd = new_efd();
        let writer = efd.get_ref().try_clone().expect("try_clone");
        let mut stream = tokio_test::task::spawn(efd);
        assert_pending!(stream.poll_next());
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        assert!(!stream.is_woken(), "woken with nothing to read");
        std::thread::spawn(move || writer.add(6))
            .join()
            .expect("writer thread")
            .expect("add");
        finish(async {
            while !stream.is_woken() {
                tokio::task::yield_now().await;
            }
        })
        .await;
        let item = assert_ready!(stream.poll_next());
        assert_eq!(item.expect("an item").expect("a value"), 6);
    }

    async fn take_ends_after_n_items_and_leaves_the_rest() {
        let mut efd = semaphore_efd(5);
        let items: Vec<u64> = finish(efd.by_ref().take(3).try_collect())
            .await
            .expect("three reads");
        assert_eq!(items, vec![1, 1, 1]);
        assert_eq!(efd.try_read().expect("fourth unit"), 1);
        assert_eq!(efd.try_read().expect("fifth unit"), 1);
        assert_pending!(poll!(efd.next()));
    }

    async fn map_and_take_over_values_from_plain_threads() {
        let mut efd = semaphore_efd(0);
        let writer = efd.get_ref().try_clone().expect("try_clone");
        let thread = std::thread::spawn(move || {
            for _ in 0..10 {
                writer.add(1).expect("add");
            }
        });
        let doubled: Vec<u64> = finish(
            efd.by_ref()
                .map(|item| item.expect("read") * 2)
                .take(10)
                .collect::<Vec<_>>(),
        )
        .await;
        thread.join().expect("writer thread");
        assert_eq!(doubled, vec![2; 10]);
        assert_eq!(efd.try_read().expect_err("drained").kind(), ErrorKind::WouldBlock);
    }

    async fn counter_mode_items_sum_to_the_total_added() {
        const THREADS: u64 = 2;
        const ADDS: u64 = 500;
        let mut efd = new_efd();
        let writers = util::thread_writers(efd.get_ref(), THREADS, ADDS);
        let mut total = 0;
        while total < THREADS * ADDS {
            let n = next_value(&mut efd).await;
            assert!(n >= 1, "an item of 0");
            total += n;
        }
        for writer in writers {
            writer.join().expect("writer thread");
        }
        assert_eq!(total, THREADS * ADDS);
        assert_pending!(poll!(efd.next()));
    }

    async fn stream_and_a_read_task_share_one_fd() {
        // The stream waits through poll_read (one waker slot); a task using
        // read() on the same fd keeps its own waker, so both are served.
        let efd = Arc::new(new_efd());
        let reader = Arc::clone(&efd);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let n = reader.read().await.expect("read");
            tx.send(n).expect("report");
        });
        tokio::task::yield_now().await;
        efd.try_add(2).expect("try_add");
        assert_eq!(finish(rx).await.expect("the reader reports"), 2);
        finish(task).await.expect("reader task");
        let mut efd = Arc::try_unwrap(efd).expect("sole owner");
        efd.try_add(3).expect("try_add");
        assert_eq!(next_value(&mut efd).await, 3);
    }
}

#[test]
fn yields_errors_after_the_runtime_shut_down_and_still_does_not_end() {
    for flavor in [Flavor::CurrentThread, Flavor::MultiThread] {
        let rt = util::runtime(flavor);
        let efd = {
            let _entered = rt.enter();
            new_efd()
        };
        let mut stream = tokio_test::task::spawn(efd);
        assert_pending!(stream.poll_next());
        drop(rt);
        assert!(
            stream.is_woken(),
            "{flavor:?}: shutdown must wake the stream"
        );
        for _ in 0..2 {
            let item = assert_ready!(stream.poll_next()).expect("an item, not the end");
            util::assert_shutdown_error(item);
        }
    }
}

/// After 1,100 items that each found a count, the stream reads before
/// waiting (speculation); after the shutdown, with a count waiting, it must
/// still yield the shutdown error and leave the count.
#[test]
fn warm_stream_with_a_count_waiting_yields_the_shutdown_error() {
    for flavor in [Flavor::CurrentThread, Flavor::MultiThread] {
        let rt = util::runtime(flavor);
        let mut efd = {
            let _entered = rt.enter();
            new_efd()
        };
        rt.block_on(async {
            for _ in 0..1_100 {
                efd.try_add(1).expect("try_add");
                assert_eq!(next_value(&mut efd).await, 1);
            }
        });
        efd.try_add(1).expect("try_add");
        drop(rt);
        let mut stream = tokio_test::task::spawn(efd);
        let item = assert_ready!(stream.poll_next()).expect("an item, not the end");
        util::assert_shutdown_error(item);
        assert_eq!(stream.try_read().expect("the count is still there"), 1);
    }
}

#[test]
fn stream_is_unpin_and_its_item_is_an_io_result() {
    fn assert_stream<S: Stream<Item = std::io::Result<u64>> + Unpin>() {}
    assert_stream::<AsyncEventFd>();
}
