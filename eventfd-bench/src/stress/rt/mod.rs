//! tokio scenarios, by topic: tasks under load ([`load`]: S3's tokio half,
//! S11, S16), wakes one at a time ([`ping`]: S12, S14)
//! and runtime shutdown and drops ([`shutdown`]: S13). This module holds
//! their shared helpers.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::{pin, Pin};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::thread;
use std::time::{Duration, Instant};

use tokio::runtime::{Builder, Runtime};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::ctx::{bail, Context, Ctx, Step, Tally};
use super::threads::join;
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
struct Counted<'a, F: ?Sized> {
    fut: Pin<&'a mut F>,
    tally: &'a mut Tally,
    first: bool,
}

impl<F: Future + ?Sized> Future for Counted<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
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
fn async_fd(rt: &Runtime, semaphore: bool) -> Step<Arc<AsyncEventFd>> {
    let _entered = rt.enter();
    let efd = EventFd::builder()
        .semaphore(semaphore)
        .build()
        .context("eventfd")?;
    let efd = AsyncEventFd::try_from(efd).context("register the AsyncEventFd")?;
    Ok(Arc::new(efd))
}

/// A blocking eventfd and a second fd on it, for a writer thread that waits
/// for the runtime's acknowledgement of each add (S12).
fn ack_pair() -> Step<(EventFd, EventFd)> {
    let ack = EventFd::builder()
        .nonblocking(false)
        .build()
        .context("ack eventfd")?;
    let ack_r = ack.try_clone().context("try_clone")?;
    Ok((ack, ack_r))
}

/// Runs `body` (which drives a runtime) while a watchdog thread watches
/// `watch`; `release` as in [`run_threads`](super::threads::run_threads).
/// A failed body is recorded before the watchdog stops.
fn watched<T>(
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

/// Awaits `fut` for at most T. Fails on timeout, and also when it completes
/// only at or near the deadline: that is a future completed by the timeout
/// re-polling it, a lost wakeup.
async fn within<F: Future>(ctx: &Ctx, what: &str, fut: F) -> Step<F::Output> {
    let limit = ctx.t();
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

/// Spawns `fut`; its failure is recorded as soon as it returns.
fn spawn_step<F>(ctx: &Arc<Ctx>, fut: F) -> JoinHandle<Tally>
where
    F: Future<Output = Step<Tally>> + Send + 'static,
{
    let ctx = Arc::clone(ctx);
    tokio::spawn(async move { ctx.settle(fut.await) })
}

/// Joins tokio tasks, turning panics and cancellations into failures.
async fn join_tasks(ctx: &Ctx, handles: Vec<JoinHandle<Tally>>, what: &str) {
    for h in handles {
        match h.await {
            Ok(t) => ctx.merge(&t),
            Err(e) => ctx.fail(format!("{}: {what} task: {e}", ctx.id())),
        }
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
    mut rng: Rng,
    cancel_one_in: u64,
) -> Step<Tally> {
    let mut tally = Tally::default();
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
        let v = match res {
            None => return Ok(tally),
            Some(None) => continue, // cancelled
            Some(Some(r)) => r.context("read")?,
        };
        tally.read(v);
        ctx.stamp_read(&mut tally);
        probe.progress(0);
        ctx.live.fetch_add(v, Ordering::SeqCst);
        if semaphore && v != 1 {
            bail!("{}: a semaphore read returned {v}", ctx.id());
        }
    }
}

/// Spawns `n` [`reader_task`]s on `efd` (random streams of `site`), each
/// cancelling one read in three.
fn spawn_readers(
    ctx: &Arc<Ctx>,
    efd: &Arc<AsyncEventFd>,
    stop: &watch::Receiver<bool>,
    watch: &Watch<'_>,
    n: usize,
    site: u64,
) -> Vec<JoinHandle<Tally>> {
    (0..n)
        .map(|i| {
            let task = reader_task(
                Arc::clone(ctx),
                Arc::clone(efd),
                stop.clone(),
                watch.probe(),
                ctx.rng(super::threads::stream(site, i)),
                3,
            );
            spawn_step(ctx, task)
        })
        .collect()
}
