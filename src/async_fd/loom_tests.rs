//! Loom models of the wake protocols: every interleaving (up to a preemption
//! bound) of the production `Protocol` code in `reader.rs`, `writer.rs` and
//! `runtime_watch.rs`, on loom's atomics and `Mutex` (`sync.rs`), over a
//! modelled fd ([`ModelFd`], behind the seam `fd.rs`).
//!
//! Run them (`.ci/exhaustive` does):
//!
//! ```text
//! RUSTFLAGS="--cfg async_eventfd_loom" LOOM_MAX_PREEMPTIONS=3 \
//!     cargo test --release --lib -- --nocapture --test-threads=1 loom_
//! ```
//!
//! The modelled fd is the kernel's counter (a loom `Mutex<u64>` that refuses
//! an add past `MAX_COUNT`, as `eventfd_write` does) and tokio's readiness for
//! it (an edge-triggered flag with a tick, set after the counter's lock is
//! released, so a read can run between an add and its event). Where a model
//! checks `Room`, the add's own `EPOLLOUT` registration never fires and its
//! back-off sleep never ends: then only the protocol under proof can wake it.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use loom::sync::{Arc, Mutex};
use loom::thread;

use super::fd::{Budget, Fd, ReadGuard, Writable};
use super::reader::Speculation;
use super::runtime_watch::{shutdown_error, RuntimeShutdown};
use super::Protocol;
use crate::MAX_COUNT;

/// The preemption bound when `LOOM_MAX_PREEMPTIONS` is not set: every model
/// finishes within seconds of CPU at 3 on a 2-core machine.
const DEFAULT_PREEMPTIONS: usize = 3;

/// Explores `model` and prints how many interleavings that took.
fn explore(name: &str, model: impl Fn() + Sync + Send + 'static) {
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = std::sync::Arc::clone(&runs);
    let mut builder = loom::model::Builder::new();
    let bound = *builder.preemption_bound.get_or_insert(DEFAULT_PREEMPTIONS);
    builder.check(move || {
        counted.fetch_add(1, Ordering::Relaxed);
        model();
    });
    println!(
        "loom: {name}: {} interleavings explored (preemption bound {bound})",
        runs.load(Ordering::Relaxed)
    );
}

// ----- the modelled fd -----

/// What a waiting add's own `EPOLLOUT` registration reports.
#[derive(Clone, Copy, PartialEq)]
enum WriteWait {
    /// Nothing, ever: only `Room` can wake the add.
    Never,
    /// The kernel's overflow state at once; the back-off sleep never ends.
    Overflow,
}

/// tokio's readiness of one registration, as its `ScheduledIo` keeps it.
#[derive(Default)]
struct Readiness {
    shut_down: bool,
    readable: bool,
    /// Bumped by each event, so that a stale guard's `clear_ready` is a
    /// no-op.
    tick: u64,
    /// Wakers of reads waiting for readiness.
    readers: Vec<Waker>,
    /// Wakers parked in the write direction (the runtime watch, waiting adds,
    /// back-off sleeps): only shutdown wakes them.
    writers: Vec<Waker>,
}

struct ModelFd {
    /// The kernel's counter.
    counter: Arc<Mutex<u64>>,
    semaphore: bool,
    readiness: Arc<Mutex<Readiness>>,
    write_wait: WriteWait,
}

fn driver_gone() -> io::Error {
    // As tokio's: kind `Other`, no OS error.
    io::Error::other("A Tokio 1.x context was found, but it is being shutdown.")
}

impl ModelFd {
    fn new(initial: u64, semaphore: bool, write_wait: WriteWait) -> ModelFd {
        ModelFd {
            counter: Arc::new(Mutex::new(initial)),
            semaphore,
            readiness: Arc::new(Mutex::new(Readiness {
                // EPOLL_CTL_ADD reports a counter that is already non-zero.
                readable: initial > 0,
                ..Readiness::default()
            })),
            write_wait,
        }
    }

    /// The reactor's side of a runtime shutdown: every wait ends with an
    /// error.
    fn shut_down(&self) {
        let wakers = {
            let mut readiness = self.readiness.lock().unwrap();
            readiness.shut_down = true;
            let mut wakers = std::mem::take(&mut readiness.readers);
            wakers.append(&mut readiness.writers);
            wakers
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    fn count(&self) -> u64 {
        *self.counter.lock().unwrap()
    }

    /// Parks `cx`'s waker in the write direction, or fails after shutdown.
    fn park_writer(&self, cx: &mut Context<'_>) -> io::Result<()> {
        let mut readiness = self.readiness.lock().unwrap();
        if readiness.shut_down {
            return Err(driver_gone());
        }
        readiness.writers.push(cx.waker().clone());
        Ok(())
    }
}

struct Guard<'a> {
    readiness: &'a Mutex<Readiness>,
    tick: u64,
}

impl ReadGuard for Guard<'_> {
    fn clear_ready(&mut self) {
        let mut readiness = self.readiness.lock().unwrap();
        if readiness.tick == self.tick {
            readiness.readable = false;
        }
    }
}

impl Budget for () {
    fn made_progress(&self) {}
}

impl Fd for ModelFd {
    type ReadGuard<'a> = Guard<'a>;
    type WriteWait = ();
    type Sleep = ();
    type Budget = ();

    fn add(&self, n: u64) -> io::Result<()> {
        if n == u64::MAX {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        {
            let mut counter = self.counter.lock().unwrap();
            if MAX_COUNT - *counter < n {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            *counter += n;
        }
        // EPOLLIN reaches the reactor after the counter's lock.
        let readers = {
            let mut readiness = self.readiness.lock().unwrap();
            readiness.readable = true;
            readiness.tick += 1;
            std::mem::take(&mut readiness.readers)
        };
        readers.into_iter().for_each(Waker::wake);
        Ok(())
    }

    fn read(&self) -> io::Result<u64> {
        let mut counter = self.counter.lock().unwrap();
        if *counter == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let value = if self.semaphore { 1 } else { *counter };
        *counter -= value;
        Ok(value)
    }

    fn readable(&self) -> impl Future<Output = io::Result<Guard<'_>>> {
        poll_fn(|cx| self.poll_read_ready(cx))
    }

    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<Guard<'_>>> {
        let mut readiness = self.readiness.lock().unwrap();
        if readiness.shut_down {
            return Poll::Ready(Err(driver_gone()));
        }
        if readiness.readable {
            return Poll::Ready(Ok(Guard {
                readiness: &self.readiness,
                tick: readiness.tick,
            }));
        }
        readiness.readers.push(cx.waker().clone());
        Poll::Pending
    }

    fn poll_shutdown(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.park_writer(cx) {
            Ok(()) => Poll::Pending,
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn register_writable(&self) -> io::Result<()> {
        if self.readiness.lock().unwrap().shut_down {
            return Err(driver_gone());
        }
        Ok(())
    }

    fn poll_writable(&self, _: &(), cx: &mut Context<'_>) -> Poll<io::Result<Writable>> {
        if let Err(e) = self.park_writer(cx) {
            return Poll::Ready(Err(e));
        }
        match self.write_wait {
            WriteWait::Never => Poll::Pending,
            WriteWait::Overflow => Poll::Ready(Ok(Writable::Overflow)),
        }
    }

    fn sleep(&self, _: Duration) {}

    fn poll_sleep(&self, _: &mut (), cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // A sleep that outlasts the model; the runtime's end ends it.
        match self.park_writer(cx) {
            Ok(()) => Poll::Pending,
            Err(_) => Poll::Ready(Err(shutdown_error())),
        }
    }

    fn poll_proceed(&self, _: &mut Context<'_>) -> Poll<()> {
        Poll::Ready(())
    }
}

fn protocol(initial: u64, semaphore: bool, write_wait: WriteWait) -> Arc<Protocol<ModelFd>> {
    Arc::new(Protocol::new(
        ModelFd::new(initial, semaphore, write_wait),
        semaphore,
    ))
}

/// Nothing is left parked in `Room` or kept by `poll_add`.
fn assert_idle(proto: &Protocol<ModelFd>) {
    assert_eq!(proto.room.parked(), (0, 0), "a waker left parked in Room");
    assert_eq!(
        proto.poll_writer.kept(),
        (false, false),
        "a poll_add wait left behind"
    );
}

fn assert_shutdown(result: io::Result<impl std::fmt::Debug>) {
    let err = result.expect_err("the runtime has shut down");
    assert_eq!(err.kind(), io::ErrorKind::Other);
    assert!(
        err.get_ref()
            .is_some_and(|e| e.downcast_ref::<RuntimeShutdown>().is_some()),
        "not a RuntimeShutdown: {err}"
    );
}

// ----- Room: adds waiting for room, woken by this handle's reads -----

/// An add waiting on a full counter, and a read through the same handle:
/// the add finishes, whatever its own registration does (`write_wait`).
fn one_add_one_read(write_wait: WriteWait) {
    let proto = protocol(MAX_COUNT, false, write_wait);
    let adder = Arc::clone(&proto);
    let add = thread::spawn(move || loom::future::block_on(adder.add(1)));
    assert_eq!(proto.try_read().expect("read"), MAX_COUNT);
    add.join().unwrap().expect("add");
    assert_eq!(proto.fd.count(), 1);
    assert_idle(&proto);
}

#[test]
fn loom_room_an_add_waiting_for_room_ends_with_a_read() {
    explore("room: one waiting add, one read", || {
        one_add_one_read(WriteWait::Never);
    });
}

#[test]
fn loom_room_an_add_waiting_through_two_semaphore_reads() {
    explore("room: one add needing two semaphore reads", || {
        let proto = protocol(MAX_COUNT, true, WriteWait::Never);
        let adder = Arc::clone(&proto);
        let add = thread::spawn(move || loom::future::block_on(adder.add(2)));
        assert_eq!(proto.try_read().expect("first read"), 1);
        assert_eq!(proto.try_read().expect("second read"), 1);
        add.join().unwrap().expect("add");
        assert_eq!(proto.fd.count(), MAX_COUNT);
        assert_idle(&proto);
    });
}

#[test]
fn loom_room_two_waiting_adds_both_finish() {
    explore("room: two waiting adds, two reads", || {
        let proto = protocol(MAX_COUNT, true, WriteWait::Never);
        let adds: Vec<_> = (0..2)
            .map(|_| {
                let adder = Arc::clone(&proto);
                thread::spawn(move || loom::future::block_on(adder.add(1)))
            })
            .collect();
        assert_eq!(proto.try_read().expect("first read"), 1);
        assert_eq!(proto.try_read().expect("second read"), 1);
        for add in adds {
            add.join().unwrap().expect("add");
        }
        assert_eq!(proto.fd.count(), MAX_COUNT);
        assert_idle(&proto);
    });
}

#[test]
fn loom_room_a_waiting_add_dropped_at_any_point() {
    explore("room: a waiting add dropped, another waiting", || {
        let proto = protocol(MAX_COUNT, false, WriteWait::Never);
        let canceller = Arc::clone(&proto);
        // Polled once, then dropped (cancelled): wherever that lands, the
        // other add is still woken and nothing stays parked.
        let cancelled = thread::spawn(move || {
            let mut add = pin!(canceller.add(1));
            add.as_mut()
                .poll(&mut Context::from_waker(Waker::noop()))
                .is_ready()
        });
        let adder = Arc::clone(&proto);
        let add = thread::spawn(move || loom::future::block_on(adder.add(1)));
        assert_eq!(proto.try_read().expect("read"), MAX_COUNT);
        add.join().unwrap().expect("add");
        let cancelled_added = cancelled.join().unwrap();
        assert_eq!(proto.fd.count(), 1 + u64::from(cancelled_added));
        assert_idle(&proto);
    });
}

#[test]
fn loom_room_a_refreshed_waker_is_woken() {
    explore("room: a waiting add polled again with a new waker", || {
        let proto = protocol(MAX_COUNT, false, WriteWait::Never);
        let adder = Arc::clone(&proto);
        let add = thread::spawn(move || {
            let mut add = pin!(adder.add(1));
            // First parked with a waker that wakes nothing; then polled
            // with block_on's, which must replace it.
            match add.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                Poll::Ready(done) => done,
                Poll::Pending => loom::future::block_on(add),
            }
        });
        assert_eq!(proto.try_read().expect("read"), MAX_COUNT);
        add.join().unwrap().expect("add");
        assert_eq!(proto.fd.count(), 1);
        assert_idle(&proto);
    });
}

// ----- the overflow back-off and `poll_add`'s `waiting` flag -----

#[test]
fn loom_backoff_a_read_ends_an_add_in_the_overflow_state() {
    explore("backoff: an add in the overflow back-off, one read", || {
        one_add_one_read(WriteWait::Overflow);
    });
}

#[test]
fn loom_backoff_a_finished_poll_add_ends_an_abandoned_wait() {
    explore(
        "backoff: an abandoned poll_add wait, a later poll_add",
        || {
            let proto = protocol(MAX_COUNT, false, WriteWait::Overflow);
            let abandoner = Arc::clone(&proto);
            // Polled once, then never again (its caller gave up).
            let abandoned = thread::spawn(move || {
                abandoner
                    .poll_add(&mut Context::from_waker(Waker::noop()), 1)
                    .is_ready()
            });
            assert_eq!(proto.try_read().expect("read"), MAX_COUNT);
            let done = proto.poll_add(&mut Context::from_waker(Waker::noop()), 1);
            assert!(matches!(done, Poll::Ready(Ok(()))), "no room after a read");
            let abandoned_added = abandoned.join().unwrap();
            assert_eq!(proto.fd.count(), 1 + u64::from(abandoned_added));
            // Whenever the abandoned poll found the counter full, the later
            // `poll_add` that finished ended its wait (`PollWriter::waiting`).
            assert_idle(&proto);
        },
    );
}

// ----- runtime shutdown -----

#[test]
fn loom_shutdown_ends_a_pending_read_and_a_pending_add() {
    explore("shutdown: a pending read and a pending add", || {
        let empty = protocol(0, false, WriteWait::Never);
        let full = protocol(MAX_COUNT, false, WriteWait::Never);
        let reader = Arc::clone(&empty);
        let read = thread::spawn(move || loom::future::block_on(reader.read()));
        let adder = Arc::clone(&full);
        let add = thread::spawn(move || loom::future::block_on(adder.add(1)));
        empty.fd.shut_down();
        full.fd.shut_down();
        assert_shutdown(read.join().unwrap());
        assert_shutdown(add.join().unwrap());
        assert_eq!(full.fd.count(), MAX_COUNT);
        assert_eq!(empty.fd.count(), 0);
    });
}

#[test]
fn loom_shutdown_is_seen_by_every_later_add() {
    explore("shutdown: the runtime watch against an add", || {
        // The add's first check asks the reactor (a new fd's watch starts
        // woken), so the question races the shutdown.
        let proto = protocol(0, false, WriteWait::Never);
        let adder = Arc::clone(&proto);
        let add = thread::spawn(move || loom::future::block_on(adder.add(1)));
        proto.fd.shut_down();
        let during = add.join().unwrap();
        if during.is_err() {
            assert_shutdown(during);
        }
        assert_shutdown(loom::future::block_on(proto.add(1)));
        // `try_add` needs no runtime.
        proto.fd.add(1).expect("try_add after shutdown");
    });
}

// ----- the read path's speculation state -----

#[test]
fn loom_speculation_concurrent_readers_each_read_or_wait() {
    explore("speculation: two readers, one add of 2 (semaphore)", || {
        let mut proto = Protocol::new(ModelFd::new(0, true, WriteWait::Never), true);
        // One read left to skip, so one reader may skip while the other
        // speculates.
        proto.speculation = Speculation::after(1, 1);
        let proto = Arc::new(proto);
        let reads: Vec<_> = (0..2)
            .map(|_| {
                let reader = Arc::clone(&proto);
                thread::spawn(move || loom::future::block_on(reader.read()))
            })
            .collect();
        proto.fd.add(2).expect("add");
        for read in reads {
            assert_eq!(read.join().unwrap().expect("read"), 1);
        }
        assert_eq!(proto.fd.count(), 0);
    });
}
