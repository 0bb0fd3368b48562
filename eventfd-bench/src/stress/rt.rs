//! tokio scenarios: S3 (tokio half), S11, S12, S13, S14, S16.

use std::future::{poll_fn, Future};
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::thread;
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::runtime::{Builder, Runtime};
use tokio::sync::watch;

use super::{join, Ctx, Probe, Rng, Tally, Watch};
use async_eventfd::{AsyncEventFd, EventFd, MAX_COUNT};

/// Counts the polls of a read future: every poll after the first is a
/// wakeup; one that stays `Pending` is a spurious wakeup.
struct Counted<'a, F: ?Sized> {
    fut: Pin<&'a mut F>,
    tally: &'a mut Tally,
    first: bool,
}

impl<F: Future + ?Sized> Future for Counted<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        let woken = !this.first;
        this.first = false;
        if woken {
            this.tally.wake();
        }
        let res = this.fut.as_mut().poll(cx);
        if woken && res.is_pending() {
            this.tally.spurious();
        }
        res
    }
}

fn counted<'a, F: ?Sized>(fut: Pin<&'a mut F>, tally: &'a mut Tally) -> Counted<'a, F> {
    Counted {
        fut,
        tally,
        first: true,
    }
}

/// A boxed read future.
type ReadFuture<'a> = Pin<Box<dyn Future<Output = io::Result<u64>> + Send + 'a>>;

/// Reads through `read()` on even `n`, through `poll_read` (in a `poll_fn`)
/// on odd `n`: for a single reader per fd, both paths get exercised.
fn read_either(efd: &AsyncEventFd, n: u64) -> ReadFuture<'_> {
    if n % 2 == 0 {
        Box::pin(efd.read())
    } else {
        Box::pin(poll_fn(move |cx| efd.poll_read(cx)))
    }
}

fn multi(ctx: &Ctx, workers: usize) -> Option<Runtime> {
    ctx.ok(
        Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build(),
        "build a multi-thread runtime",
    )
}

fn current(ctx: &Ctx) -> Option<Runtime> {
    ctx.ok(
        Builder::new_current_thread().enable_all().build(),
        "build a current-thread runtime",
    )
}

/// Makes an `AsyncEventFd` registered with `rt`.
fn async_fd(ctx: &Ctx, rt: &Runtime, semaphore: bool) -> Option<Arc<AsyncEventFd>> {
    let _entered = rt.enter();
    let efd = ctx.ok(EventFd::builder().semaphore(semaphore).build(), "eventfd")?;
    ctx.ok(AsyncEventFd::try_from(efd), "register the AsyncEventFd")
        .map(Arc::new)
}

/// Awaits `fut` for at most T. Fails (and returns `None`) on timeout, and
/// also when it completes only at or near the deadline: that is a future
/// completed by the timeout re-polling it, a lost wakeup.
async fn within<F: Future>(ctx: &Ctx, what: &str, fut: F) -> Option<F::Output> {
    let limit = ctx.t();
    let start = Instant::now();
    let res = tokio::time::timeout(limit, fut).await;
    let elapsed = start.elapsed();
    match res {
        Ok(v) if elapsed < limit.mul_f64(0.9) => Some(v),
        Ok(_) => {
            ctx.fail(format!(
                "{}: {what} completed only at the deadline ({elapsed:?} of {limit:?}): a lost wakeup",
                ctx.id()
            ));
            None
        }
        Err(_) => {
            ctx.fail(format!(
                "{}: {what} did not complete within {limit:?}",
                ctx.id()
            ));
            None
        }
    }
}

/// Waits (in async code) until `ctx.live` reaches `target` or the round
/// stops.
async fn wait_live(ctx: &Ctx, target: u64) -> bool {
    loop {
        if ctx.live.load(Ordering::SeqCst) >= target {
            return true;
        }
        if ctx.stopped() {
            return false;
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

/// The reader task of S3 and S11: reads until told to stop, each read
/// cancelled at random (1 in `cancel_one_in`) by a short timer in `select!`.
/// The timer branch is polled first (`biased`), so a read is never completed
/// by the timer's own wakeup: a lost waker cannot be hidden that way.
async fn reader_task(
    ctx: Arc<Ctx>,
    efd: Arc<AsyncEventFd>,
    mut stop: watch::Receiver<bool>,
    probe: Probe,
    seed: u64,
    cancel_one_in: u64,
) -> Tally {
    let mut tally = Tally::default();
    let mut rng = Rng::new(seed);
    let semaphore = efd.get_ref().is_semaphore();
    loop {
        let cancel_after = rng
            .one_in(cancel_one_in)
            .then(|| Duration::from_micros(rng.below(200)));
        let read = pin!(efd.read());
        let mut read_tally = Tally::default();
        let res = {
            let read = counted(read, &mut read_tally);
            match cancel_after {
                Some(d) => tokio::select! {
                    biased;
                    _ = stop.wait_for(|s| *s) => None,
                    _ = tokio::time::sleep(d) => Some(None),
                    r = read => Some(Some(r)),
                },
                None => tokio::select! {
                    biased;
                    _ = stop.wait_for(|s| *s) => None,
                    r = read => Some(Some(r)),
                },
            }
        };
        tally.merge(&read_tally);
        match res {
            None => break,
            Some(None) => {} // cancelled
            Some(Some(Ok(v))) => {
                tally.read(v);
                ctx.stamp_read(&mut tally);
                probe.progress(0);
                ctx.live.fetch_add(v, Ordering::SeqCst);
                if semaphore && v != 1 {
                    ctx.fail(format!("{}: a semaphore read returned {v}", ctx.id()));
                }
            }
            Some(Some(Err(e))) => {
                ctx.fail(format!("{}: read: {e}", ctx.id()));
                break;
            }
        }
    }
    tally
}

/// Spawns `n` [`reader_task`]s on `efd` (seeds from `seed`), each
/// cancelling one read in three.
fn spawn_readers(
    ctx: &Arc<Ctx>,
    efd: &Arc<AsyncEventFd>,
    stop: &watch::Receiver<bool>,
    watch: &Watch<'_>,
    n: usize,
    seed: u64,
) -> Vec<tokio::task::JoinHandle<Tally>> {
    (0..n)
        .map(|i| {
            tokio::spawn(reader_task(
                Arc::clone(ctx),
                Arc::clone(efd),
                stop.clone(),
                watch.probe(),
                seed + i as u64,
                3,
            ))
        })
        .collect()
}

/// Joins tokio tasks, turning panics and cancellations into failures.
async fn join_tasks(ctx: &Ctx, handles: Vec<tokio::task::JoinHandle<Tally>>, what: &str) {
    for h in handles {
        match h.await {
            Ok(t) => ctx.merge(&t),
            Err(e) => ctx.fail(format!("{}: {what} task: {e}", ctx.id())),
        }
    }
}

/// S3, tokio half: a semaphore `AsyncEventFd` (read-only, edge-triggered
/// registration), M reader tasks, rounds of one add of N.
pub(super) fn s3(ctx: &Arc<Ctx>) {
    let n = 200u64;
    let rounds = 100 * ctx.scale();
    let m = ctx.threads(4);
    ctx.begin();
    let Some(rt) = multi(ctx, 2) else {
        return;
    };
    let Some(efd) = async_fd(ctx, &rt, true) else {
        return;
    };
    let watch = Watch::one(efd.as_fd(), 0, "task");
    let (stop_tx, stop_rx) = watch::channel(false);
    let release = || {
        ctx.finish();
        stop_tx.send_replace(true);
    };
    let before = ctx.totals();
    thread::scope(|s| {
        let wd = s.spawn(|| watch.run(ctx, &release));
        rt.block_on(async {
            let readers = spawn_readers(ctx, &efd, &stop_rx, &watch, m, 300);
            let mut tally = Tally::default();
            for round in 1..=rounds {
                ctx.stamp_add();
                if ctx.ok(efd.get_ref().add(n), "add(N)").is_none() {
                    break;
                }
                tally.add(n);
                if !wait_live(ctx, round * n).await {
                    break;
                }
            }
            ctx.merge(&tally);
            stop_tx.send_replace(true);
            join_tasks(ctx, readers, "S3 reader").await;
        });
        watch.finish();
        join(ctx, wd, "the watchdog");
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    let t = ctx.totals();
    let (reads, adds) = (
        t.read_calls - before.read_calls,
        t.add_calls - before.add_calls,
    );
    if !ctx.failed() && reads != adds * n {
        ctx.fail(format!(
            "S3 (tokio): {reads} reads for {} units added, expected one read of 1 per unit",
            adds * n
        ));
    }
}

/// S11: add tasks, plain-thread writers and cancelled read tasks on
/// multi-thread runtimes of 2, 4 and 8 workers, counter and semaphore mode.
pub(super) fn s11(ctx: &Arc<Ctx>) {
    let per = 3000 * ctx.scale();
    let workers: Vec<usize> = match ctx.cfg.threads {
        Some(t) => vec![t.max(1)],
        None => vec![2, 4, 8],
    };
    for w in workers {
        for semaphore in [false, true] {
            if ctx.failed() {
                return;
            }
            s11_one(ctx, w, semaphore, per);
        }
    }
}

fn s11_one(ctx: &Arc<Ctx>, workers: usize, semaphore: bool, per: u64) {
    const TASK_WRITERS: usize = 4;
    const THREAD_WRITERS: usize = 2;
    const READERS: usize = 4;
    ctx.begin();
    let Some(rt) = multi(ctx, workers) else {
        return;
    };
    let Some(efd) = async_fd(ctx, &rt, semaphore) else {
        return;
    };
    let writers = super::writer_jobs(ctx, efd.get_ref(), THREAD_WRITERS, per, 1100);
    if ctx.failed() {
        return;
    }
    let watch = Watch::one(efd.as_fd(), 0, "task");
    let (stop_tx, stop_rx) = watch::channel(false);
    let release = || {
        ctx.finish();
        stop_tx.send_replace(true);
    };
    let expected = (TASK_WRITERS + THREAD_WRITERS) as u64 * per;
    thread::scope(|s| {
        let wd = s.spawn(|| watch.run(ctx, &release));
        let threads: Vec<_> = writers.into_iter().map(|job| s.spawn(job)).collect();
        rt.block_on(async {
            let readers = spawn_readers(ctx, &efd, &stop_rx, &watch, READERS, 1200);
            let adders: Vec<_> = (0..TASK_WRITERS)
                .map(|i| {
                    let (ctx, efd) = (Arc::clone(ctx), Arc::clone(&efd));
                    tokio::spawn(async move {
                        let mut tally = Tally::default();
                        let mut rng = Rng::new(1300 + i as u64);
                        for _ in 0..per {
                            if ctx.stopped() {
                                break;
                            }
                            ctx.stamp_add();
                            match efd.add(1).await {
                                Ok(()) => tally.add(1),
                                Err(e) => {
                                    ctx.fail(format!("S11: add task: {e}"));
                                    break;
                                }
                            }
                            if rng.one_in(8) {
                                tokio::task::yield_now().await;
                            }
                        }
                        tally
                    })
                })
                .collect();
            join_tasks(ctx, adders, "S11 add").await;
            wait_live(ctx, expected).await;
            stop_tx.send_replace(true);
            join_tasks(ctx, readers, "S11 reader").await;
        });
        for h in threads {
            ctx.merge(&join(ctx, h, "S11 writer thread"));
        }
        watch.finish();
        join(ctx, wd, "the watchdog");
    });
    rt.shutdown_timeout(Duration::from_secs(1));
}

/// A blocking eventfd and a second fd on it, for a writer thread that waits
/// for the runtime's acknowledgement of each add (S12, S14).
fn ack_pair(ctx: &Ctx) -> Option<(EventFd, EventFd)> {
    let ack = ctx.ok(EventFd::builder().nonblocking(false).build(), "ack eventfd")?;
    let ack_r = ctx.ok(ack.try_clone(), "try_clone")?;
    Some((ack, ack_r))
}

/// S12: current-thread runtime, writes only from another OS thread, one
/// add per round acknowledged through a blocking eventfd.
pub(super) fn s12(ctx: &Arc<Ctx>) {
    let rounds = 100_000 * ctx.scale();
    let Some(rt) = current(ctx) else {
        return;
    };
    let Some(efd) = async_fd(ctx, &rt, false) else {
        return;
    };
    let Some(writer) = ctx.ok(efd.get_ref().try_clone(), "try_clone") else {
        return;
    };
    let Some((ack, ack_r)) = ack_pair(ctx) else {
        return;
    };
    let watch = Watch::one(efd.as_fd(), 1, "the runtime's read");
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let release = || {
        ctx.finish();
        stop_tx.send_replace(true);
        drop(ack.add(1));
    };
    let sent = AtomicU64::new(0);
    thread::scope(|s| {
        let wd = s.spawn(|| watch.run(ctx, &release));
        let w = s.spawn(|| {
            let mut tally = Tally::default();
            for _ in 0..rounds {
                if ctx.stopped() {
                    break;
                }
                sent.store(ctx.now_ns(), Ordering::SeqCst);
                if ctx.ok(writer.add(1), "add").is_none() {
                    break;
                }
                tally.add(1);
                if ctx.ok(ack_r.read(), "ack read").is_none() {
                    break;
                }
            }
            tally
        });
        rt.block_on(async {
            let mut tally = Tally::default();
            for round in 0..rounds {
                let mut read = read_either(&efd, round);
                watch.sleep(0);
                let res = tokio::select! {
                    biased;
                    _ = stop_rx.wait_for(|s| *s) => None,
                    r = counted(read.as_mut(), &mut tally) => Some(r),
                };
                watch.wake(0);
                match res {
                    None => break,
                    Some(Ok(v)) => {
                        tally.read(v);
                        tally.waited(Duration::from_nanos(
                            ctx.now_ns().saturating_sub(sent.load(Ordering::SeqCst)),
                        ));
                        watch.progress(0);
                        if v != 1 {
                            ctx.fail(format!("S12: round {round}: read {v}, expected 1"));
                            break;
                        }
                    }
                    Some(Err(e)) => {
                        ctx.fail(format!("S12: read: {e}"));
                        break;
                    }
                }
                if ctx.ok(ack.add(1), "ack").is_none() {
                    break;
                }
            }
            ctx.merge(&tally);
        });
        ctx.finish();
        drop(ack.add(1));
        ctx.merge(&join(ctx, w, "S12 writer"));
        watch.finish();
        join(ctx, wd, "the watchdog");
    });
    // A leftover ack (from the final release) is not part of the count.
    if let Ok(true) = super::readable(ack.as_fd()) {
        drop(ack.read());
    }
}

/// S13: runtime shutdown with pending read/add; Arc clones dropped while
/// others wait; the last drop closes the fd.
pub(super) fn s13(ctx: &Arc<Ctx>) {
    for round in 0..50 * ctx.scale() {
        if ctx.failed() {
            return;
        }
        s13_one(ctx, round);
    }
}

fn eventfd_id(fd: i32) -> Option<String> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("eventfd-id:"))
        .map(|v| v.trim().to_string())
}

fn s13_one(ctx: &Arc<Ctx>, round: u64) {
    ctx.begin();
    let Some(rt1) = multi(ctx, 2) else {
        return;
    };
    // Clones: three readers on a semaphore fd; one is aborted and one spare
    // clone dropped while they wait; the other two still get one count each.
    let Some(sem) = async_fd(ctx, &rt1, true) else {
        return;
    };
    let Some(writer) = ctx.ok(sem.get_ref().try_clone(), "try_clone") else {
        return;
    };
    let mut tally = Tally::default();
    rt1.block_on(async {
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let efd = Arc::clone(&sem);
                tokio::spawn(async move { efd.read().await })
            })
            .collect();
        let spare = Arc::clone(&sem);
        tokio::time::sleep(Duration::from_millis(1)).await;
        let mut readers = readers.into_iter();
        let Some(aborted) = readers.next() else {
            return;
        };
        aborted.abort();
        drop(spare);
        if ctx.ok(writer.add(2), "add(2)").is_none() {
            return;
        }
        tally.add(2);
        for (i, h) in readers.enumerate() {
            match within(ctx, "a reader after a clone was dropped", h).await {
                Some(Ok(Ok(1))) => tally.read(1),
                Some(other) => {
                    ctx.fail(format!(
                        "S13: round {round}: reader {i} got {other:?}, expected Ok(1)"
                    ));
                }
                None => {}
            }
        }
        match within(ctx, "the aborted reader", aborted).await {
            Some(Err(e)) if e.is_cancelled() => {}
            Some(other) => ctx.fail(format!(
                "S13: round {round}: the aborted reader gave {other:?}, expected a cancellation"
            )),
            None => {}
        }
    });
    drop(sem);
    ctx.merge(&tally);
    if ctx.failed() {
        return;
    }
    // Shutdown: a read pending on an empty fd and an add pending on a full
    // one, both polled from another runtime; rt1 shuts down under them.
    let Some(empty) = async_fd(ctx, &rt1, false) else {
        return;
    };
    let Some(full) = async_fd(ctx, &rt1, false) else {
        return;
    };
    let mut tally = Tally::default();
    if ctx
        .ok(full.get_ref().add(MAX_COUNT), "add(MAX_COUNT)")
        .is_none()
    {
        return;
    }
    tally.add(MAX_COUNT);
    let Some(rt2) = current(ctx) else {
        return;
    };
    let mut rt1 = Some(rt1);
    rt2.block_on(async {
        let mut read = pin!(empty.read());
        let mut add = pin!(full.add(1));
        let first = poll_fn(|cx| {
            Poll::Ready((read.as_mut().poll(cx).is_pending(), add.as_mut().poll(cx).is_pending()))
        })
        .await;
        if first != (true, true) {
            ctx.fail(format!(
                "S13: round {round}: read/add on an empty/full fd pending: {first:?}, expected (true, true)"
            ));
            return;
        }
        if let Some(rt) = rt1.take() {
            rt.shutdown_background();
        }
        match within(ctx, "a read pending at runtime shutdown", read).await {
            Some(Err(_)) => {}
            Some(Ok(v)) => ctx.fail(format!("S13: round {round}: pending read returned {v} after shutdown")),
            None => return,
        }
        match within(ctx, "an add pending at runtime shutdown", add).await {
            Some(Err(_)) => {}
            Some(Ok(())) => ctx.fail(format!("S13: round {round}: pending add succeeded after shutdown")),
            None => return,
        }
        match within(ctx, "a read after runtime shutdown", empty.read()).await {
            Some(Err(_)) => {}
            Some(Ok(v)) => ctx.fail(format!("S13: round {round}: read after shutdown returned {v}")),
            None => return,
        }
        match within(ctx, "an add after runtime shutdown", full.add(1)).await {
            Some(Err(_)) => {}
            Some(Ok(())) => ctx.fail(format!("S13: round {round}: add after shutdown succeeded")),
            None => {}
        }
    });
    drop(rt1);
    match full.get_ref().read() {
        Ok(v) => tally.read(v),
        Err(e) => ctx.fail(format!("S13: reading the full fd after shutdown: {e}")),
    }
    ctx.merge(&tally);
    // The last drop closes the fd (checked by its eventfd-id, as the fd
    // number may be reused at once by another thread).
    let raw = empty.as_raw_fd();
    let id = eventfd_id(raw);
    let clone = Arc::clone(&empty);
    drop(empty);
    if eventfd_id(raw) != id {
        ctx.fail(format!(
            "S13: round {round}: dropping one of two clones closed the fd"
        ));
    }
    drop(clone);
    if id.is_some() && eventfd_id(raw) == id {
        ctx.fail(format!(
            "S13: round {round}: the last drop did not close fd {raw}"
        ));
    }
    drop(full);
    drop(rt2);
}

/// Registers `efd` with the current runtime, read interest only, as
/// `AsyncEventFd` does, but keeping tokio's readiness guard in our hands.
#[allow(
    unsafe_code,
    reason = "S14 needs tokio's raw readiness guard; tokio's registration is unsafe since 1.53.3"
)]
fn register_raw(efd: EventFd) -> io::Result<AsyncFd<EventFd>> {
    // SAFETY: the `AsyncFd` owns `efd`, whose `OwnedFd` stays open and is
    // never replaced until the `AsyncFd` is dropped.
    let registered = unsafe { AsyncFd::register_with_interest(efd, Interest::READABLE) };
    registered.map_err(|e| e.into_parts().1)
}

/// S14: a readiness guard kept across more than 256 (and 32768) reactor
/// events for its fd, then cleared.
pub(super) fn s14(ctx: &Arc<Ctx>) {
    let mut counts = vec![257u64; 10 * ctx.scale() as usize];
    counts.push(32_769);
    for events in counts {
        if ctx.failed() {
            return;
        }
        s14_one(ctx, events);
    }
}

fn s14_one(ctx: &Arc<Ctx>, events: u64) {
    ctx.begin();
    let Some(rt) = multi(ctx, 2) else {
        return;
    };
    let afd = {
        let _entered = rt.enter();
        let Some(efd) = ctx.ok(EventFd::new(), "eventfd") else {
            return;
        };
        let Some(afd) = ctx.ok(register_raw(efd), "register") else {
            return;
        };
        afd
    };
    let Some(target) = ctx.ok(afd.get_ref().try_clone(), "try_clone") else {
        return;
    };
    let Some(ping) = async_fd(ctx, &rt, false) else {
        return;
    };
    let Some(ping_w) = ctx.ok(ping.get_ref().try_clone(), "try_clone") else {
        return;
    };
    let Some((ack, ack_r)) = ack_pair(ctx) else {
        return;
    };
    let ack = Arc::new(ack);
    let watch = Watch::one(ping.as_fd(), 0, "task");
    let (stop_tx, stop_rx) = watch::channel(false);
    let release = || {
        ctx.finish();
        stop_tx.send_replace(true);
        drop(ack.add(1));
    };
    let mut tally = Tally::default();
    thread::scope(|s| {
        let wd = s.spawn(|| watch.run(ctx, &release));
        rt.block_on(async {
            if ctx.ok(target.add(1), "add").is_none() {
                return;
            }
            tally.add(1);
            let Some(Ok(mut stale)) = within(ctx, "the first readable()", afd.readable()).await
            else {
                ctx.fail("S14: the first readable() failed");
                return;
            };
            match afd.get_ref().read() {
                Ok(v) => tally.read(v),
                Err(e) => {
                    ctx.fail(format!("S14: read: {e}"));
                    return;
                }
            }
            // Keep `stale` while the reactor sees `events` events for the fd:
            // each round, one add to it and a ping through the reactor, so
            // the reactor has dispatched the add before the next one.
            let helper = {
                let (ping, ack, mut stop, probe) = (
                    Arc::clone(&ping),
                    Arc::clone(&ack),
                    stop_rx.clone(),
                    watch.probe(),
                );
                tokio::spawn(async move {
                    let mut got = 0;
                    while got < events {
                        let r = tokio::select! {
                            biased;
                            _ = stop.wait_for(|s| *s) => return got,
                            r = ping.read() => r,
                        };
                        match r {
                            Ok(v) => got += v,
                            Err(_) => return got,
                        }
                        probe.progress(0);
                        if ack.add(1).is_err() {
                            return got;
                        }
                    }
                    got
                })
            };
            let writer = {
                let ctx = Arc::clone(ctx);
                tokio::task::spawn_blocking(move || {
                    let mut tally = Tally::default();
                    for _ in 0..events {
                        if ctx.stopped() {
                            break;
                        }
                        if ctx.ok(target.add(1), "add").is_none()
                            || ctx.ok(ping_w.add(1), "ping").is_none()
                            || ctx.ok(ack_r.read(), "ack read").is_none()
                        {
                            break;
                        }
                        tally.add(1);
                    }
                    (tally, target)
                })
            };
            let target = match writer.await {
                Ok((t, target)) => {
                    tally.merge(&t);
                    target
                }
                Err(e) => {
                    ctx.fail(format!("S14: writer: {e}"));
                    return;
                }
            };
            if let Err(e) = helper.await {
                ctx.fail(format!("S14: ping task: {e}"));
                return;
            }
            if ctx.stopped() {
                return;
            }
            stale.clear_ready();
            drop(stale);
            // The events arrived after the guard was handed out, so its
            // clear must have been a no-op: readable() is ready at once.
            let mut again = pin!(afd.readable());
            let now = poll_fn(|cx| Poll::Ready(again.as_mut().poll(cx))).await;
            let Poll::Ready(Ok(mut guard)) = now else {
                ctx.fail(format!(
                    "S14: clearing a guard kept across {events} reactor events dropped live \
                     readiness (count left {}): tokio's readiness tick wrapped",
                    super::count_left(afd.as_fd())
                ));
                return;
            };
            match afd.get_ref().read() {
                Ok(v) => {
                    tally.read(v);
                    if v != events {
                        ctx.fail(format!("S14: read {v}, expected {events}"));
                    }
                }
                Err(e) => {
                    ctx.fail(format!("S14: read: {e}"));
                    return;
                }
            }
            guard.clear_ready();
            drop(guard);
            // The fd still wakes.
            let later = thread::spawn(move || {
                thread::sleep(Duration::from_millis(1));
                target.add(1)
            });
            if within(ctx, "readable() after the stale guard", afd.readable())
                .await
                .is_some()
            {
                match later.join() {
                    Ok(Ok(())) => tally.add(1),
                    other => ctx.fail(format!("S14: late add: {other:?}")),
                }
                match afd.get_ref().read() {
                    Ok(v) => tally.read(v),
                    Err(e) => ctx.fail(format!("S14: read: {e}")),
                }
            }
        });
        ctx.finish();
        stop_tx.send_replace(true);
        watch.finish();
        join(ctx, wd, "the watchdog");
    });
    ctx.merge(&tally);
    drop(afd);
    rt.shutdown_timeout(Duration::from_secs(1));
}

/// S16: 10,000 `AsyncEventFd`s, a reader task each, writer threads adding
/// round-robin.
pub(super) fn s16(ctx: &Arc<Ctx>) {
    const FDS: usize = 10_000;
    let k = 10 * ctx.scale();
    let nw = ctx.threads(2);
    let Some(rt) = multi(ctx, 2) else {
        return;
    };
    let mut fds = Vec::with_capacity(FDS);
    for _ in 0..FDS {
        let Some(efd) = async_fd(ctx, &rt, false) else {
            return;
        };
        fds.push(efd);
    }
    let watch = Watch::new(
        fds.iter()
            .enumerate()
            .map(|(i, f)| (f.as_fd(), format!("eventfd {i}")))
            .collect(),
        Vec::new(),
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let release = || {
        ctx.finish();
        stop_tx.send_replace(true);
    };
    thread::scope(|s| {
        let wd = s.spawn(|| watch.run(ctx, &release));
        let writers: Vec<_> = (0..nw)
            .map(|j| {
                let fds = &fds;
                s.spawn(move || {
                    let mut tally = Tally::default();
                    for _ in 0..k {
                        for efd in fds.iter().skip(j).step_by(nw) {
                            if ctx.stopped() {
                                return tally;
                            }
                            if ctx.ok(efd.get_ref().add(1), "add").is_none() {
                                return tally;
                            }
                            tally.add(1);
                        }
                    }
                    tally
                })
            })
            .collect();
        rt.block_on(async {
            let readers: Vec<_> = fds
                .iter()
                .enumerate()
                .map(|(i, efd)| {
                    let (ctx, efd, mut stop, probe) = (
                        Arc::clone(ctx),
                        Arc::clone(efd),
                        stop_rx.clone(),
                        watch.probe(),
                    );
                    tokio::spawn(async move {
                        let mut tally = Tally::default();
                        let mut got = 0;
                        while got < k {
                            let mut read = read_either(&efd, i as u64 + got);
                            let r = tokio::select! {
                                biased;
                                _ = stop.wait_for(|s| *s) => break,
                                r = counted(read.as_mut(), &mut tally) => r,
                            };
                            match r {
                                Ok(v) => {
                                    tally.read(v);
                                    probe.progress(i);
                                    got += v;
                                }
                                Err(e) => {
                                    ctx.fail(format!("S16: read: {e}"));
                                    break;
                                }
                            }
                        }
                        if got > k {
                            ctx.fail(format!(
                                "S16: reader {i} got {got}, more than its share {k}"
                            ));
                        }
                        tally
                    })
                })
                .collect();
            join_tasks(ctx, readers, "S16 reader").await;
        });
        for w in writers {
            ctx.merge(&join(ctx, w, "S16 writer"));
        }
        watch.finish();
        join(ctx, wd, "the watchdog");
    });
    drop(fds);
    rt.shutdown_timeout(Duration::from_secs(1));
}
