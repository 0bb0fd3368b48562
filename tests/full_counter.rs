//! Adds on a full counter: they wait (cancel safe) and finish after a read
//! through any fd. A read through the same `AsyncEventFd` (`read`,
//! `try_read`, `poll_read`, the `Stream`) wakes a waiting add itself, without
//! the reactor and without a back-off sleep, also in the kernel's overflow
//! state (a kernel signal on a counter at `MAX_COUNT` makes it `u64::MAX`;
//! here an io_uring completion is that signal). A read through another fd
//! still ends the wait, after a back-off.
//!
//! The last test prints how long a waiting add takes after each kind of read
//! (measured, not asserted).

#![cfg(feature = "stream")]

#[macro_use]
mod util;

use std::future::{poll_fn, Future};
use std::io::{self, ErrorKind};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use async_eventfd::{AsyncEventFd, MAX_COUNT};
use futures::{poll, Stream};
use io_uring::{opcode, IoUring};
use tokio_test::{assert_pending, assert_ready};

use util::tasks::{assert_empty, assert_not_woken, settle_pending, until_woken};
use util::{assert_kind, assert_shutdown_error, finish, new_efd, Flavor};

/// A waker that records that it was woken.
#[derive(Default)]
struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Flag {
    /// Whether it was woken since the last call.
    fn take(&self) -> bool {
        self.0.swap(false, Ordering::SeqCst)
    }
}

/// Fills the counter to `MAX_COUNT`; with a ring, the kernel then signals it
/// once more (one NOP completion), which takes it to `u64::MAX`.
fn fill(efd: &AsyncEventFd, ring: Option<&mut IoUring>) {
    efd.try_add(MAX_COUNT).expect("fill to MAX_COUNT");
    if let Some(ring) = ring {
        let nop = opcode::Nop::new().build().user_data(7);
        // SAFETY: a NOP refers to no memory, so nothing has to outlive it.
        unsafe { ring.submission().push(&nop) }.expect("the submission queue has room");
        ring.submit_and_wait(1).expect("io_uring_enter");
        let reaped = ring
            .completion()
            .map(|cqe| cqe.result())
            .collect::<Vec<_>>();
        assert_eq!(reaped, [0], "one NOP completed");
    }
    assert_kind(efd.try_add(1), ErrorKind::WouldBlock);
}

/// What the counter holds once full: `u64::MAX` in the overflow state.
fn full_value(overflow: bool) -> u64 {
    if overflow {
        u64::MAX
    } else {
        MAX_COUNT
    }
}

/// The value the waiting add adds, told apart from the full counter.
const WAITING_ADD: u64 = 5;

/// How long an add in the overflow state is kept waiting before the read, so
/// that its back-off has grown to sleeps of 64 ms and more: a wake that came
/// from the sleep, not from the read, could not go unnoticed.
const BACKOFF_WARM_UP: Duration = Duration::from_millis(150);

/// How the read that makes room is made, through the waiting add's own
/// `AsyncEventFd`.
#[derive(Debug, Clone, Copy)]
enum Reader {
    Read,
    TryRead,
    PollRead,
    Stream,
}

/// Reads through `efd` without waiting, as `reader` says (not `Read`,
/// which needs the runtime, nor `Stream`, which needs `&mut`).
fn read_now(efd: &AsyncEventFd, reader: Reader) -> io::Result<u64> {
    let mut cx = Context::from_waker(Waker::noop());
    match reader {
        Reader::TryRead => efd.try_read(),
        Reader::PollRead => match efd.poll_read(&mut cx) {
            Poll::Ready(result) => result,
            Poll::Pending => panic!("poll_read is pending on a full counter"),
        },
        Reader::Read | Reader::Stream => unreachable!("{reader:?} is read by the caller"),
    }
}

/// Polls `poll_add` (one waiting add) whenever `flag` says it was woken, for
/// [`BACKOFF_WARM_UP`], and then once more right after its next wake: a
/// back-off sleep of 64 ms or more has just begun.
fn wait_into_a_long_backoff(flag: &Flag, mut poll_add: impl FnMut() -> Poll<io::Result<()>>) {
    let start = Instant::now();
    let mut last_poll = start;
    while start.elapsed() < BACKOFF_WARM_UP || !flag.take() {
        if flag.take() {
            assert!(
                poll_add().is_pending(),
                "the add finished on a full counter"
            );
            last_poll = Instant::now();
        }
        assert!(
            last_poll.elapsed() < util::LIMIT,
            "the waiting add was not woken again within {:?}: no back-off",
            util::LIMIT
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        poll_add().is_pending(),
        "the add finished on a full counter"
    );
}

/// One waiting add (`add().await`, polled by hand) on a full counter, and a
/// read through the same `AsyncEventFd`: the read itself wakes the add.
///
/// On a current-thread runtime the reactor runs only inside `block_on`, so
/// in `TryRead`/`PollRead` nothing but the read can wake the add; on a
/// multi-thread runtime in the overflow state, the add is first kept
/// waiting until its back-off sleeps are long.
fn waiting_add_is_woken_by_a_read(flavor: Flavor, overflow: bool, reader: Reader, test: &str) {
    let rt = util::runtime(flavor);
    let mut efd = AsyncEventFd::new_in(rt.handle()).expect("new_in");
    let mut ring = None;
    if overflow {
        let Some(made) = util::kernel::ring_for(&efd, 4, test) else {
            return;
        };
        ring = Some(made);
    }
    fill(&efd, ring.as_mut());
    let flag = Arc::new(Flag::default());
    let waker = Waker::from(Arc::clone(&flag));
    let mut cx = Context::from_waker(&waker);
    // A turn of the reactor, so that the fd is known to be readable.
    let settle = || rt.block_on(async { tokio::time::sleep(Duration::from_millis(5)).await });
    if let Reader::Stream = reader {
        // The stream needs `&mut`, so the add is a `poll_add` between polls.
        assert!(efd.poll_add(&mut cx, WAITING_ADD).is_pending());
        settle();
        if overflow {
            wait_into_a_long_backoff(&flag, || efd.poll_add(&mut cx, WAITING_ADD));
        }
        flag.take();
        let item = match Pin::new(&mut efd).poll_next(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(Some(item)) => item,
            other => panic!("the stream gave {other:?} on a full counter"),
        };
        assert_eq!(item.expect("read"), full_value(overflow));
        assert!(
            flag.take(),
            "{test}: the read did not wake the waiting poll_add"
        );
        assert!(matches!(
            efd.poll_add(&mut cx, WAITING_ADD),
            Poll::Ready(Ok(()))
        ));
    } else {
        let efd = &efd;
        let mut add = pin!(efd.add(WAITING_ADD));
        assert!(add.as_mut().poll(&mut cx).is_pending());
        settle();
        if overflow {
            wait_into_a_long_backoff(&flag, || add.as_mut().poll(&mut cx));
        }
        flag.take();
        let value = match reader {
            Reader::Read => rt.block_on(efd.read()),
            _ => read_now(efd, reader),
        };
        assert_eq!(value.expect("read"), full_value(overflow));
        assert!(flag.take(), "{test}: the read did not wake the waiting add");
        assert!(matches!(add.as_mut().poll(&mut cx), Poll::Ready(Ok(()))));
    }
    assert_eq!(efd.try_read().expect("the add landed"), WAITING_ADD);
    assert_kind(efd.try_read(), ErrorKind::WouldBlock);
}

macro_rules! woken_by_a_read {
    ($($name:ident: $flavor:ident, $overflow:expr, $reader:ident;)*) => {
        $(
            #[test]
            fn $name() {
                util::must_return(util::TEST_LIMIT, || {
                    waiting_add_is_woken_by_a_read(
                        Flavor::$flavor,
                        $overflow,
                        Reader::$reader,
                        stringify!($name),
                    )
                });
            }
        )*
    };
}

woken_by_a_read! {
    full_counter_add_is_woken_by_read: CurrentThread, false, Read;
    full_counter_add_is_woken_by_try_read: CurrentThread, false, TryRead;
    full_counter_add_is_woken_by_poll_read: CurrentThread, false, PollRead;
    full_counter_poll_add_is_woken_by_the_stream: CurrentThread, false, Stream;
    overflow_add_is_woken_by_read: MultiThread, true, Read;
    overflow_add_is_woken_by_try_read: MultiThread, true, TryRead;
    overflow_add_is_woken_by_poll_read: MultiThread, true, PollRead;
    overflow_poll_add_is_woken_by_the_stream: MultiThread, true, Stream;
}

// ----- a full counter, read through any fd -----

both_flavors! {
    async fn add_on_a_full_counter_is_pending_then_finishes_after_a_read() {
        let efd = new_efd();
        efd.try_add(MAX_COUNT).expect("fill");
        let mut add = pin!(efd.add(1));
        assert_pending!(poll!(&mut add));
        assert_pending!(poll!(&mut add));
        assert_eq!(efd.try_read().expect("read makes room"), MAX_COUNT);
        finish(add).await.expect("add");
        assert_eq!(efd.try_read().expect("try_read"), 1);
    }

    async fn add_on_a_full_counter_resumes_after_a_read_on_a_plain_thread() {
        let efd = new_efd();
        efd.try_add(MAX_COUNT - 1).expect("nearly fill");
        let reader = efd.get_ref().try_clone().expect("try_clone");
        let mut add = tokio_test::task::spawn(efd.add(2));
        assert_pending!(add.poll());
        // The counter has room for 1, so the fd is writable (EPOLLOUT) and the
        // write registration may wake the add once; it must wait again.
        settle_pending(&mut add, "add(2) with room for 1").await;
        let read = std::thread::spawn(move || reader.read())
            .join()
            .expect("reader thread")
            .expect("read");
        assert_eq!(read, MAX_COUNT - 1);
        until_woken(&add).await;
        assert_ready!(add.poll()).expect("add");
        assert_eq!(efd.try_read().expect("try_read"), 2);
    }

    async fn add_on_a_full_counter_resumes_after_a_read_from_another_task() {
        let efd = Arc::new(new_efd());
        efd.try_add(MAX_COUNT).expect("fill");
        let adder = Arc::clone(&efd);
        let add = tokio::spawn(async move { adder.add(7).await });
        // Let the adder start waiting (not required for correctness).
        tokio::task::yield_now().await;
        assert_eq!(finish(efd.read()).await.expect("read"), MAX_COUNT);
        finish(add).await.expect("join").expect("add");
        assert_eq!(finish(efd.read()).await.expect("read"), 7);
    }

    async fn several_waiting_adds_all_finish_after_one_read() {
        let efd = Arc::new(new_efd());
        efd.try_add(MAX_COUNT).expect("fill");
        let mut adds = Vec::new();
        for n in [1u64, 2, 3] {
            let mut add = tokio_test::task::spawn({
                let efd = Arc::clone(&efd);
                async move { efd.add(n).await }
            });
            assert_pending!(add.poll());
            adds.push(add);
        }
        assert_eq!(efd.try_read().expect("read makes room"), MAX_COUNT);
        for add in &mut adds {
            finish(add).await.expect("add");
        }
        assert_eq!(efd.try_read().expect("try_read"), 6);
    }

    async fn poll_add_on_a_full_counter_is_pending_then_finishes_after_a_read() {
        let efd = new_efd();
        efd.try_add(MAX_COUNT).expect("fill");
        let mut add = tokio_test::task::spawn(poll_fn(|cx| efd.poll_add(cx, 3)));
        assert_pending!(add.poll());
        assert_not_woken(&add, "woken with nothing to do").await;
        assert_eq!(efd.try_read().expect("read makes room"), MAX_COUNT);
        until_woken(&add).await;
        assert_ready!(add.poll()).expect("poll_add");
        assert_eq!(efd.try_read().expect("try_read"), 3);
        // The next poll_add is immediate again.
        finish(poll_fn(|cx| efd.poll_add(cx, 4))).await.expect("poll_add");
        assert_eq!(efd.try_read().expect("try_read"), 4);
    }

    async fn cancelled_pending_add_adds_nothing() {
        let efd = new_efd();
        efd.try_add(MAX_COUNT).expect("fill");
        {
            let mut add = pin!(efd.add(1));
            assert_pending!(poll!(&mut add));
        }
        assert_eq!(efd.try_read().expect("try_read"), MAX_COUNT);
        assert_empty(&efd);
        // And the fd still works for adds that wait.
        efd.try_add(MAX_COUNT).expect("fill again");
        let mut add = pin!(efd.add(2));
        assert_pending!(poll!(&mut add));
        assert_eq!(efd.try_read().expect("try_read"), MAX_COUNT);
        finish(add).await.expect("add");
        assert_eq!(efd.try_read().expect("try_read"), 2);
    }
}

// ----- the overflow state -----

both_flavors! {
    /// Several adds wait on an overflowed counter; one read through the same
    /// `AsyncEventFd` lets all of them finish, and every unit is accounted
    /// for.
    async fn several_waiting_adds_all_finish_after_one_read_in_the_overflow_state() {
        let efd = Arc::new(util::new_efd());
        let test = "several_waiting_adds_all_finish_after_one_read_in_the_overflow_state";
        let Some(mut ring) = util::kernel::ring_for(&*efd, 4, test) else {
            return;
        };
        fill(&efd, Some(&mut ring));
        let adders: Vec<_> = (1..=3u64)
            .map(|n| {
                let efd = Arc::clone(&efd);
                tokio::spawn(async move { efd.add(n).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(adders.iter().all(|adder| !adder.is_finished()));
        assert_eq!(finish(efd.read()).await.expect("read"), u64::MAX);
        for adder in adders {
            finish(adder).await.expect("the adder task").expect("add");
        }
        assert_eq!(efd.try_read().expect("every add landed"), 6);
    }

    /// Room made through another fd on the counter (no wake from this
    /// `AsyncEventFd`) still ends the wait, through the back-off.
    async fn overflow_add_finishes_after_a_read_through_another_fd() {
        let efd = Arc::new(util::new_efd());
        let test = "overflow_add_finishes_after_a_read_through_another_fd";
        let Some(mut ring) = util::kernel::ring_for(&*efd, 4, test) else {
            return;
        };
        fill(&efd, Some(&mut ring));
        let other = efd.get_ref().try_clone().expect("try_clone");
        let adder = {
            let efd = Arc::clone(&efd);
            tokio::spawn(async move { poll_fn(|cx| efd.poll_add(cx, WAITING_ADD)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!adder.is_finished());
        assert_eq!(other.read().expect("read through another fd"), u64::MAX);
        finish(adder).await.expect("the adder task").expect("poll_add");
        assert_eq!(efd.try_read().expect("the add landed"), WAITING_ADD);
    }
}

/// An add waiting in the overflow state (asleep in its back-off) fails with
/// the shutdown error when the runtime shuts down.
#[test]
fn overflow_add_fails_with_the_shutdown_error_when_the_runtime_shuts_down() {
    let test = "overflow_add_fails_with_the_shutdown_error_when_the_runtime_shuts_down";
    for flavor in [Flavor::CurrentThread, Flavor::MultiThread] {
        let rt = util::runtime(flavor);
        let efd = AsyncEventFd::new_in(rt.handle()).expect("new_in");
        let Some(mut ring) = util::kernel::ring_for(&efd, 4, test) else {
            return;
        };
        fill(&efd, Some(&mut ring));
        let flag = Arc::new(Flag::default());
        let waker = Waker::from(Arc::clone(&flag));
        let mut cx = Context::from_waker(&waker);
        let mut add = pin!(efd.add(WAITING_ADD));
        assert!(add.as_mut().poll(&mut cx).is_pending());
        assert!(efd.poll_add(&mut cx, WAITING_ADD).is_pending());
        // Drive the reactor so that both waits see the overflow and sleep.
        rt.block_on(async { tokio::time::sleep(Duration::from_millis(20)).await });
        assert!(add.as_mut().poll(&mut cx).is_pending());
        assert!(efd.poll_add(&mut cx, WAITING_ADD).is_pending());
        util::must_return(util::TEST_LIMIT, move || drop(rt));
        let deadline = Instant::now() + util::LIMIT;
        let (mut add_done, mut poll_add_done) = (None, None);
        while add_done.is_none() || poll_add_done.is_none() {
            assert!(
                Instant::now() < deadline,
                "{flavor:?}: the waits never ended"
            );
            if add_done.is_none() {
                if let Poll::Ready(result) = add.as_mut().poll(&mut cx) {
                    add_done = Some(result);
                }
            }
            if poll_add_done.is_none() {
                if let Poll::Ready(result) = efd.poll_add(&mut cx, WAITING_ADD) {
                    poll_add_done = Some(result);
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_shutdown_error(add_done.expect("add"));
        assert_shutdown_error(poll_add_done.expect("poll_add"));
        assert_eq!(efd.try_read().expect("nothing was added"), u64::MAX);
    }
}

// ----- how long a waiting add takes after the read (printed) -----

/// The median of `samples`.
fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Rounds per measurement.
const ROUNDS: u32 = 11;

/// Saturates the counter, starts an add (`poll_add` if `poll`) as a task,
/// waits `pause` (into its back-off), reads through `efd` itself or through
/// another fd, and returns how long after the read the add finished.
async fn one_round(
    efd: &Arc<AsyncEventFd>,
    ring: &mut IoUring,
    poll: bool,
    same_fd: bool,
    pause: Duration,
) -> Duration {
    fill(efd, Some(ring));
    let adder = {
        let efd = Arc::clone(efd);
        tokio::spawn(async move {
            if poll {
                poll_fn(|cx| efd.poll_add(cx, WAITING_ADD)).await
            } else {
                efd.add(WAITING_ADD).await
            }
            .expect("the waiting add");
            Instant::now()
        })
    };
    tokio::time::sleep(pause).await;
    assert!(!adder.is_finished(), "the add finished on a full counter");
    let read_at = Instant::now();
    let value = if same_fd {
        finish(efd.read()).await.expect("read")
    } else {
        efd.get_ref().read().expect("read through another fd")
    };
    assert_eq!(value, u64::MAX);
    let done_at = finish(adder).await.expect("the adder task");
    assert_eq!(efd.try_read().expect("the add landed"), WAITING_ADD);
    done_at.saturating_duration_since(read_at)
}

/// Prints the median time from the read that makes room to the end of a
/// waiting add, on an overflowed counter, for reads through the same
/// `AsyncEventFd` and through another fd (`--nocapture` shows it).
#[test]
fn prints_how_long_a_waiting_add_takes_after_the_read() {
    let test = "prints_how_long_a_waiting_add_takes_after_the_read";
    util::run_isolated(Flavor::MultiThread, move || async move {
        let efd = Arc::new(util::new_efd());
        let Some(mut ring) = util::kernel::ring_for(&*efd, 4, test) else {
            return;
        };
        for poll in [false, true] {
            for same_fd in [true, false] {
                let mut delays = Vec::new();
                for round in 0..ROUNDS {
                    // Pauses of 10 to 210 ms land in different back-off sleeps.
                    let pause = Duration::from_millis(10 + u64::from(round * 20));
                    delays.push(one_round(&efd, &mut ring, poll, same_fd, pause).await);
                }
                println!(
                    "{test}: {} on an overflowed counter, read through {}: median {:?} \
                     after the read ({ROUNDS} rounds)",
                    if poll { "poll_add" } else { "add" },
                    if same_fd {
                        "the same AsyncEventFd"
                    } else {
                        "another fd"
                    },
                    median(&mut delays),
                );
            }
        }
    });
}
