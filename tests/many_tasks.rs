//! Many tasks on one `AsyncEventFd` (in an `Arc`): every count reaches
//! exactly one reader, in counter and semaphore mode, with writers on tasks
//! and on plain threads; then the same after enough reads that `read` tries
//! `read(2)` before waiting (see `readiness.rs`).

#![cfg(feature = "tokio")]

#[macro_use]
mod util;

use std::pin::pin;
use std::sync::Arc;

use async_eventfd::AsyncEventFd;
use futures::poll;
use tokio_test::{assert_pending, assert_ready};

use util::tasks::{
    assert_empty, assert_not_woken, until_woken, waits_without_spinning_until_an_add,
};
use util::{finish, new_efd, semaphore_efd};

/// 8 tasks wait on `efd`; each add of 1 must reach exactly one of them, and
/// every one must be woken in turn (a single waker slot would starve all but
/// the last to register).
async fn eight_readers_each_get_one_count(efd: Arc<AsyncEventFd>) {
    const READERS: usize = 8;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut readers = Vec::new();
    for id in 0..READERS {
        let efd = Arc::clone(&efd);
        let tx = tx.clone();
        readers.push(tokio::spawn(async move {
            let n = efd.read().await.expect("read");
            tx.send((id, n)).expect("report");
        }));
    }
    // Let the readers start waiting (not required for correctness).
    tokio::task::yield_now().await;
    let mut seen = vec![0u64; READERS];
    for _ in 0..READERS {
        efd.try_add(1).expect("try_add");
        let (id, n) = finish(rx.recv()).await.expect("a reader reports");
        assert_eq!(n, 1, "reader {id}");
        seen[id] += n;
    }
    assert_eq!(seen, vec![1; READERS]);
    for reader in readers {
        finish(reader).await.expect("reader task");
    }
    assert_empty(&efd);
}

/// 4 tasks each read 25 units of the semaphore `efd`, all added at once
/// (one add, one edge): every read must give exactly 1, none may be lost.
async fn four_semaphore_readers_each_read_ones(efd: Arc<AsyncEventFd>) {
    const READERS: usize = 4;
    const EACH: usize = 25;
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let efd = Arc::clone(&efd);
            tokio::spawn(async move {
                let mut got = Vec::with_capacity(EACH);
                for _ in 0..EACH {
                    got.push(efd.read().await.expect("read"));
                }
                got
            })
        })
        .collect();
    tokio::task::yield_now().await;
    // One add, one edge: every unit must still be read.
    finish(efd.add((READERS * EACH) as u64)).await.expect("add");
    for reader in readers {
        assert_eq!(finish(reader).await.expect("reader task"), vec![1; EACH]);
    }
    assert_empty(&efd);
}

both_flavors! {
    /// Each add of 1 is read by exactly one of 8 waiting readers, and every
    /// reader is woken in turn: a single waker slot would starve all but one.
    async fn eight_tasks_waiting_on_one_arc_each_get_one_count() {
        eight_readers_each_get_one_count(Arc::new(new_efd())).await;
    }

    async fn eight_readers_and_four_writer_threads_conserve_the_total() {
        const READERS: usize = 8;
        const THREADS: u64 = 4;
        const ADDS: u64 = 1_000;
        let efd = Arc::new(new_efd());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let readers: Vec<_> = (0..READERS)
            .map(|_| {
                let efd = Arc::clone(&efd);
                let tx = tx.clone();
                tokio::spawn(async move {
                    loop {
                        let n = efd.read().await.expect("read");
                        // No await between the read and the report: an
                        // aborted reader never holds a count.
                        tx.send(n).expect("report");
                    }
                })
            })
            .collect();
        let writers = util::thread_writers(efd.get_ref(), THREADS, ADDS);
        let mut total = 0;
        while total < THREADS * ADDS {
            let n = finish(rx.recv()).await.expect("a reader reports");
            assert!(n >= 1, "a read returned 0");
            total += n;
        }
        for writer in writers {
            writer.join().expect("writer thread");
        }
        assert_eq!(total, THREADS * ADDS);
        for reader in &readers {
            reader.abort();
        }
        for reader in readers {
            let err = finish(reader).await.expect_err("aborted");
            assert!(err.is_cancelled(), "{err}");
        }
        assert!(
            matches!(rx.try_recv(), Err(tokio::sync::mpsc::error::TryRecvError::Empty)),
            "no count beyond the total"
        );
        assert_empty(&efd);
    }

    async fn semaphore_mode_with_four_readers_gives_exactly_n_reads_of_one() {
        four_semaphore_readers_each_read_ones(Arc::new(semaphore_efd(0))).await;
    }

    async fn semaphore_mode_one_task_reads_every_unit_of_one_add() {
        let efd = semaphore_efd(0);
        efd.try_add(3).expect("try_add");
        for i in 0..3 {
            assert_eq!(finish(efd.read()).await.unwrap_or_else(|e| panic!("read {i}: {e}")), 1);
        }
        let mut read = tokio_test::task::spawn(efd.read());
        assert_pending!(read.poll());
        assert_not_woken(&read, "woken with nothing to do").await;
        efd.try_add(1).expect("try_add");
        until_woken(&read).await;
        assert_eq!(assert_ready!(read.poll()).expect("read"), 1);
    }

    async fn semaphore_mode_initial_units_are_all_read() {
        let efd = semaphore_efd(5);
        for _ in 0..5 {
            assert_eq!(finish(efd.read()).await.expect("read"), 1);
        }
        assert_empty(&efd);
    }

    async fn semaphore_units_from_plain_threads_are_read_one_by_one() {
        const UNITS: u64 = 200;
        let efd = Arc::new(semaphore_efd(0));
        let writer = efd.get_ref().try_clone().expect("try_clone");
        let thread = std::thread::spawn(move || {
            for _ in 0..UNITS {
                writer.add(1).expect("add");
            }
        });
        let mut reads = 0;
        while reads < UNITS {
            assert_eq!(finish(efd.read()).await.expect("read"), 1);
            reads += 1;
        }
        thread.join().expect("writer thread");
        assert_empty(&efd);
    }
}

// ----- after many reads: `read` may try read(2) before waiting -----

both_flavors! {
    async fn warm_read_is_pending_when_empty_and_woken_by_an_add() {
        let efd = new_efd();
        util::warm_up(&efd).await;
        for value in [5u64, 6, 7] {
            waits_without_spinning_until_an_add(&efd, efd.read(), value, value).await;
        }
        assert_empty(&efd);
    }

    async fn warm_semaphore_read_after_the_last_unit_waits_without_spinning() {
        let efd = semaphore_efd(0);
        util::warm_up(&efd).await;
        efd.try_add(3).expect("try_add");
        for _ in 0..3 {
            assert_eq!(finish(efd.read()).await.expect("read"), 1);
        }
        waits_without_spinning_until_an_add(&efd, efd.read(), 2, 1).await;
        assert_eq!(finish(efd.read()).await.expect("read"), 1);
        assert_empty(&efd);
    }

    async fn warm_eight_tasks_waiting_on_one_arc_each_get_one_count() {
        let efd = Arc::new(new_efd());
        util::warm_up(&efd).await;
        eight_readers_each_get_one_count(efd).await;
    }

    async fn warm_semaphore_mode_with_four_readers_gives_exactly_n_reads_of_one() {
        let efd = Arc::new(semaphore_efd(0));
        util::warm_up(&efd).await;
        four_semaphore_readers_each_read_ones(efd).await;
    }

    async fn warm_read_dropped_in_select_loses_nothing() {
        let efd = new_efd();
        util::warm_up(&efd).await;
        for round in 1..=20u64 {
            {
                let mut read = pin!(efd.read());
                assert_pending!(poll!(&mut read));
            }
            efd.try_add(round).expect("try_add");
            assert_eq!(finish(efd.read()).await.expect("read"), round);
        }
    }
}
