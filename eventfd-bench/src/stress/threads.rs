//! Thread helpers of the scenarios: the common waiters-and-writers runner,
//! writer loops, draining reads, joins, and the small helpers every layer
//! shares ([`jobs`], [`rounds`], [`numbered`], [`poll_one`]).

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::Ordering;
use std::thread;
use std::time::Duration;

use async_eventfd::EventFd;
use nix::poll::{PollFd, PollFlags, PollTimeout};

use super::ctx::{pause, Context, Ctx, Step, Tally};
use super::watchdog::Watch;
use crate::rng::Rng;

/// A waiter or writer body, run on a scoped thread.
pub(super) type Job<'env> = Box<dyn FnOnce() -> Step<Tally> + Send + 'env>;

/// Joins a scoped thread, turning a panic into a failure.
pub(super) fn join<T: Default>(
    ctx: &Ctx,
    handle: thread::ScopedJoinHandle<'_, T>,
    what: &str,
) -> T {
    handle.join().unwrap_or_else(|_| {
        ctx.fail(format!("{what} panicked"));
        T::default()
    })
}

/// Occasionally yields or sleeps briefly, so that waiters fall asleep
/// between writes.
pub(super) fn jitter(rng: &mut Rng) {
    match rng.below(16) {
        0 => thread::sleep(Duration::from_micros(rng.below(100))),
        1..=4 => thread::yield_now(),
        _ => {}
    }
}

/// `poll(2)`'s timeout for `d` (whole milliseconds, at most `MAX`).
pub(super) fn timeout_ms(d: Duration) -> PollTimeout {
    PollTimeout::try_from(d).unwrap_or(PollTimeout::MAX)
}

/// Whether `fd` is readable now (poll with timeout 0).
pub(super) fn readable(fd: BorrowedFd<'_>) -> Step<bool> {
    Ok(poll_one(&fd, PollFlags::POLLIN, 0)?.contains(PollFlags::POLLIN))
}

/// Runs `n` rounds of `round` on one tally, merged even if a round fails.
pub(super) fn rounds(ctx: &Ctx, n: u64, mut round: impl FnMut(&mut Tally, u64) -> Step) -> Step {
    let mut tally = Tally::default();
    let res = (0..n).try_for_each(|r| round(&mut tally, r));
    ctx.merge(&tally);
    res
}

/// `n` jobs, job `i` made by `job(i)`.
pub(super) fn jobs<'e>(n: usize, job: impl FnMut(usize) -> Job<'e>) -> Vec<Job<'e>> {
    (0..n).map(job).collect()
}

/// `fds` for a [`Watch`], fd `i` named `eventfd i`.
pub(super) fn numbered<F: AsFd>(fds: &[F]) -> Vec<(BorrowedFd<'_>, String)> {
    (0..)
        .zip(fds)
        .map(|(i, f)| (f.as_fd(), format!("eventfd {i}")))
        .collect()
}

/// `poll` on `fd` alone for `events`, with a timeout in ms: its revents
/// (`POLLERR` on an eventfd is the overflow: the counter is `u64::MAX`).
pub(super) fn poll_one(fd: &impl AsFd, events: PollFlags, timeout_ms: u16) -> Step<PollFlags> {
    let mut fds = [PollFd::new(fd.as_fd(), events)];
    nix::poll::poll(&mut fds, PollTimeout::from(timeout_ms)).context("poll")?;
    Ok(fds[0].revents().unwrap_or(PollFlags::empty()))
}

/// A writer thread's loop: `per` adds of 1 through its own dup.
fn writer_loop(ctx: &Ctx, efd: &EventFd, per: u64, mut rng: Rng) -> Step<Tally> {
    let mut tally = Tally::default();
    for _ in 0..per {
        if ctx.stopped() {
            break;
        }
        ctx.stamp_add();
        loop {
            match efd.add(1) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && !ctx.stopped() => {
                    thread::yield_now();
                }
                res => res.context("writer add(1)")?,
            }
        }
        tally.add(1);
        jitter(&mut rng);
    }
    Ok(tally)
}

/// The random stream of thread (or task) `i` of call site `site`: distinct
/// for up to 65,536 threads per site.
pub(super) fn stream(site: u64, i: usize) -> u64 {
    (site << 16) | (i as u64 & 0xffff)
}

/// `n` writer jobs of [`writer_loop`], each on its own dup of `efd`, writer
/// `w` with the random stream `stream(site, w)`.
pub(super) fn writer_jobs<'env>(
    ctx: &'env Ctx,
    efd: &EventFd,
    n: usize,
    per: u64,
    site: u64,
) -> Step<Vec<Job<'env>>> {
    (0..n)
        .map(|w| {
            let dup = efd.try_clone().context("try_clone for a writer")?;
            let rng = ctx.rng(stream(site, w));
            Ok(Box::new(move || writer_loop(ctx, &dup, per, rng)) as Job<'env>)
        })
        .collect()
}

/// Reads once; `Some(v)` on success, `None` on `WouldBlock`.
pub(super) fn read_once(ctx: &Ctx, efd: &EventFd, tally: &mut Tally) -> Step<Option<u64>> {
    match efd.read() {
        Ok(v) => {
            tally.read(v);
            ctx.stamp_read(tally);
            ctx.live.fetch_add(v, Ordering::SeqCst);
            Ok(Some(v))
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e).context("read"),
    }
}

/// A waiter woke for `efd`: reads until `WouldBlock`, marking progress on
/// the watched fd `fd`; a wakeup that found nothing is spurious.
pub(super) fn woke(
    ctx: &Ctx,
    watch: &Watch<'_>,
    fd: usize,
    efd: &EventFd,
    tally: &mut Tally,
) -> Step {
    tally.wake();
    let mut any = false;
    while read_once(ctx, efd, tally)?.is_some() {
        watch.progress(fd);
        any = true;
    }
    if !any {
        tally.spurious();
    }
    Ok(())
}

/// The common shape of the thread scenarios: a watchdog, waiters and
/// writers (or a driver that paces the round). Joins the writers, waits
/// until every watched fd is drained, ends the round, releases the waiters
/// (calling `release` until they have all returned) and merges every tally.
/// A job that fails is recorded as soon as it returns.
pub(super) fn run_threads<'env>(
    ctx: &'env Ctx,
    watch: &'env Watch<'env>,
    release: &'env (dyn Fn() + Sync),
    waiters: Vec<Job<'env>>,
    writers: Vec<Job<'env>>,
) -> Step {
    thread::scope(|s| {
        let wd = s.spawn(|| watch.run(ctx, release));
        let spawn = |job: Job<'env>| s.spawn(move || ctx.settle(job()));
        let waiters: Vec<_> = waiters.into_iter().map(spawn).collect();
        let writers: Vec<_> = writers.into_iter().map(spawn).collect();
        for w in writers {
            ctx.merge(&join(ctx, w, "a writer"));
        }
        for &fd in &watch.fds {
            let mut spins = 0;
            while !ctx.stopped() && ctx.record(readable(fd)).unwrap_or(false) {
                pause(&mut spins);
            }
        }
        ctx.finish();
        while !waiters.iter().all(|h| h.is_finished()) {
            release();
            thread::sleep(Duration::from_millis(1));
        }
        for w in waiters {
            ctx.merge(&join(ctx, w, "a waiter"));
        }
        watch.finish();
        join(ctx, wd, "the watchdog");
    });
    ctx.proceed()
}
