//! tokio scenarios, by topic: tasks under load ([`load`]: S3's tokio half,
//! S11, S16), wakes one at a time ([`ping`]: S12, S14)
//! and runtime shutdown and drops ([`shutdown`]: S13). This module holds
//! what they share with each other and with the kernel scenarios (S17-S19):
//! the runtimes, the reader tasks, the watched body.

use std::future::{poll_fn, Future};
use std::io;
use std::os::fd::BorrowedFd;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context as TaskContext, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

use tokio::runtime::{Builder, Runtime};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::ctx::{bail, Context, Ctx, Step, Tally};
use super::threads::{join, readable};
use super::watchdog::{Probe, Watch};
use crate::rng::Rng;
use async_eventfd::{AsyncEventFd, EventFd};

mod load;
mod ping;
mod shutdown;

pub(super) use load::{semaphore_tasks, ten_thousand_fds, tokio_multi_thread_cancellation};
pub(super) use ping::{stale_readiness_guard, tokio_current_thread_ping_pong};
pub(super) use shutdown::runtime_shutdown_and_drop;

/// Counts the polls of a read future: every poll after the first is a
/// wakeup; one that stays `Pending` is a spurious wakeup.
fn counted<'a, F: Future + ?Sized>(
    mut fut: Pin<&'a mut F>,
    tally: &'a mut Tally,
) -> impl Future<Output = F::Output> + 'a {
    let mut first = true;
    poll_fn(move |cx| {
        let woken = !std::mem::take(&mut first);
        if woken {
            tally.wake();
        }
        let res = fut.as_mut().poll(cx);
        if woken && res.is_pending() {
            tally.spurious();
        }
        res
    })
}

/// Marks waiter `i` of `probe` asleep while `fut` waits, and awake as soon
/// as its waker is called: a task woken but not yet run (on a slow or busy
/// machine) is not asleep.
fn marked<F: Future + Unpin>(
    mut fut: F,
    probe: &Probe,
    i: usize,
) -> impl Future<Output = F::Output> {
    let probe = probe.clone();
    poll_fn(move |cx| {
        // Asleep before the poll: a wake during it marks the task awake.
        probe.sleep(i);
        let inner = cx.waker().clone();
        let waker = Waker::from(Arc::new(MarkWake {
            inner,
            probe: probe.clone(),
            i,
        }));
        let res = Pin::new(&mut fut).poll(&mut TaskContext::from_waker(&waker));
        if res.is_ready() {
            probe.wake(i);
        }
        res
    })
}

/// The waker of a [`marked`] future.
struct MarkWake {
    inner: Waker,
    probe: Probe,
    i: usize,
}

impl Wake for MarkWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.probe.wake(self.i);
        self.inner.wake_by_ref();
    }
}

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

/// The two runtime flavors the kernel scenarios run each part on.
#[derive(Debug, Clone, Copy)]
pub(super) enum Flavor {
    CurrentThread,
    MultiThread,
}

impl Flavor {
    pub(super) const BOTH: [Flavor; 2] = [Flavor::CurrentThread, Flavor::MultiThread];

    /// A runtime of this flavor (two workers for the multi-thread one).
    pub(super) fn runtime(self) -> Step<Runtime> {
        match self {
            Flavor::CurrentThread => current(),
            Flavor::MultiThread => multi(2),
        }
    }
}

fn multi(workers: usize) -> Step<Runtime> {
    Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .context("build a multi-thread runtime")
}

fn current() -> Step<Runtime> {
    Builder::new_current_thread()
        .enable_all()
        .build()
        .context("build a current-thread runtime")
}

/// Makes an `AsyncEventFd` registered with `rt`.
pub(super) fn async_fd(rt: &Runtime, semaphore: bool) -> Step<Arc<AsyncEventFd>> {
    let _entered = rt.enter();
    let efd = EventFd::builder()
        .semaphore(semaphore)
        .build()
        .context("eventfd")?;
    let efd = AsyncEventFd::try_from(efd).context("register the AsyncEventFd")?;
    Ok(Arc::new(efd))
}

/// Runs `body` (which drives a runtime) while a watchdog thread watches
/// `watch`; `release` as in [`run_threads`](super::threads::run_threads).
/// A failed body is recorded before the watchdog stops.
pub(super) fn watched<T>(
    ctx: &Ctx,
    watch: &Watch<'_>,
    release: &(dyn Fn() + Sync),
    body: impl FnOnce() -> Step<T>,
) -> Step<T> {
    thread::scope(|s| {
        let wd = s.spawn(|| watch.run(ctx, release));
        let res = ctx.record(body());
        watch.finish();
        join(ctx, wd, "the watchdog");
        res
    })
}

/// [`watched`] for a body whose tasks stop on a channel: the release ends
/// the round and sends `true` on it.
pub(super) fn watched_tasks<T>(
    ctx: &Ctx,
    watch: &Watch<'_>,
    body: impl FnOnce(&watch::Sender<bool>) -> Step<T>,
) -> Step<T> {
    let (stop, _) = watch::channel(false);
    let release = || {
        ctx.finish();
        stop.send_replace(true);
    };
    watched(ctx, watch, &release, || body(&stop))
}

/// Awaits `fut` for at most T times this machine's slowness against the
/// reference (a lost wakeup never finishes, so only the wait to call it
/// grows). Fails on timeout, and when `fut` completes only near the
/// deadline: completed by the timeout re-polling it, a lost wakeup.
pub(super) async fn within<F: Future>(ctx: &Ctx, what: &str, fut: F) -> Step<F::Output> {
    let limit = ctx
        .liveness()
        .mul_f64(crate::stress::calibration().slowness);
    let start = Instant::now();
    let res = tokio::time::timeout(limit, fut).await;
    let elapsed = start.elapsed();
    match res {
        Ok(v) if elapsed < limit.mul_f64(0.9) => Ok(v),
        Ok(_) => bail!(
            "{}: {what} completed only at the deadline ({elapsed:?} of {limit:?}): a lost wakeup",
            ctx.id()
        ),
        Err(_) => bail!("{}: {what} did not complete within {limit:?}", ctx.id()),
    }
}

/// Waits (in async code) until `ctx.live` reaches `target` or the round
/// stops.
async fn wait_live(ctx: &Ctx, target: u64) -> bool {
    while ctx.live.load(Ordering::SeqCst) < target {
        if ctx.stopped() {
            return false;
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    true
}

/// Waits (in async code) until `fd` is no longer readable, or the round
/// stops (how fast the readers empty it is the watchdog's to judge).
pub(super) async fn drained(ctx: &Ctx, fd: BorrowedFd<'_>) -> Step {
    while !ctx.stopped() && readable(fd)? {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

/// Spawns `fut`; its failure is recorded as soon as it returns.
fn spawn_step<F>(ctx: &Arc<Ctx>, fut: F) -> JoinHandle<Tally>
where
    F: Future<Output = Step<Tally>> + Send + 'static,
{
    let ctx = Arc::clone(ctx);
    tokio::spawn(async move { ctx.settle(fut.await) })
}

/// Joins tokio tasks, turning panics and cancellations into failures.
pub(super) async fn join_tasks(ctx: &Ctx, handles: Vec<JoinHandle<Tally>>, what: &str) {
    for h in handles {
        match h.await {
            Ok(t) => ctx.merge(&t),
            Err(e) => ctx.fail(format!("{}: {what} task: {e}", ctx.id())),
        }
    }
}

/// Which readers [`spawn_readers`] starts: `n` tasks reading watched fd
/// `fd`, with the random streams of call site `site`, each read cancelled
/// one in `cancel_one_in` (0: never) by a short timer.
#[derive(Clone, Copy)]
pub(super) struct Readers {
    pub(super) n: usize,
    pub(super) fd: usize,
    pub(super) site: u64,
    pub(super) cancel_one_in: u64,
}

/// A reader task: reads until told to stop (reader 0 through `poll_read`,
/// whose one waker slot allows one such reader per fd; the others through
/// `read`), some reads cancelled by a short timer in `select!`. The timer
/// branch is polled first (`biased`), so a read is never completed by the
/// timer's own wakeup: a lost waker cannot be hidden that way.
async fn reader_task(
    ctx: Arc<Ctx>,
    efd: Arc<AsyncEventFd>,
    mut stop: watch::Receiver<bool>,
    probe: Probe,
    (index, mut rng): (usize, Rng),
    readers: Readers,
) -> Step<Tally> {
    let mut tally = Tally::default();
    let semaphore = efd.get_ref().is_semaphore();
    loop {
        let cancel = readers.cancel_one_in > 0 && rng.one_in(readers.cancel_one_in);
        let after = Duration::from_micros(if cancel { rng.below(200) } else { 0 });
        let mut read = read_either(&efd, u64::from(index == 0));
        let mut read_tally = Tally::default();
        let res = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => None,
            // In a block: select! builds a disabled branch's future too, and
            // most reads are not cancelled.
            _ = async { tokio::time::sleep(after).await }, if cancel => Some(None),
            r = counted(read.as_mut(), &mut read_tally) => Some(Some(r)),
        };
        tally.merge(&read_tally);
        let v = match res {
            None => return Ok(tally),
            Some(None) => continue, // cancelled
            Some(Some(r)) => r.context("read")?,
        };
        tally.read(v);
        ctx.stamp_read(&mut tally);
        probe.progress(readers.fd);
        ctx.live.fetch_add(v, Ordering::SeqCst);
        if semaphore && v != 1 {
            bail!("{}: a semaphore read returned {v}", ctx.id());
        }
    }
}

/// Spawns the [`Readers`] of `efd`.
pub(super) fn spawn_readers(
    ctx: &Arc<Ctx>,
    efd: &Arc<AsyncEventFd>,
    stop: &watch::Sender<bool>,
    watch: &Watch<'_>,
    readers: Readers,
) -> Vec<JoinHandle<Tally>> {
    (0..readers.n)
        .map(|i| {
            let rng = ctx.rng(super::threads::stream(readers.site, i));
            let (efd, stop, probe) = (Arc::clone(efd), stop.subscribe(), watch.probe());
            let task = reader_task(Arc::clone(ctx), efd, stop, probe, (i, rng), readers);
            spawn_step(ctx, task)
        })
        .collect()
}
