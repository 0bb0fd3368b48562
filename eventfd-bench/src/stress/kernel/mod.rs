//! Stress scenarios whose writer is the kernel: S17 (io_uring completions,
//! here), S18 (overflow storms; `overflow.rs`) and S19 (KVM ioeventfd
//! doorbells; `kvm.rs`).
//!
//! Each part runs on a runtime of each [`Flavor`] with the reader tasks of
//! [`rt`](super::rt), under the [watchdog](super::watchdog); the kernel's
//! writers run on scoped threads that stop with the round, so none outlives
//! its scenario. A kernel signal is an add call of 1. Where io_uring or
//! `/dev/kvm` is missing, the rig's error is the SKIP.
//!
//! Accounting: `eventfd_signal` adds `min(1, u64::MAX - count)`. Every kernel
//! signal here is made below `u64::MAX` (S18 checks `POLLERR`, which the
//! kernel reports exactly at `u64::MAX`, before each one), so each adds
//! exactly 1, and a read of `u64::MAX` is `MAX_COUNT` plus that 1: the sums
//! stay exact.

use std::future::Future;
use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::thread::{self, ScopedJoinHandle};
use std::time::Duration;

use async_eventfd::EventFd;
use io_uring::IoUring;
use tokio::sync::watch;

use super::ctx::{bail, ensure, Context, Ctx, Failure, Step, Tally};
use super::rt::{async_fd, drained, join_tasks, spawn_readers, watched_tasks, Flavor, Readers};
use super::threads::read_once;
use super::watchdog::Watch;
use crate::kernel_rigs::{push_nop, reap, uring, RigError};
use crate::rng::Rng;

#[cfg(target_arch = "x86_64")]
mod kvm;
mod overflow;

#[cfg(target_arch = "x86_64")]
pub(super) use kvm::kvm_ioeventfd_vcpus;
pub(super) use overflow::overflow_storms;

/// S19 where the guest is not x86 code: a SKIP, with the reason.
#[cfg(not(target_arch = "x86_64"))]
pub(super) fn kvm_ioeventfd_vcpus(_: &Arc<Ctx>) -> Step {
    Err(Failure::Missing("the S19 guest is x86_64 code".to_string()))
}

/// Awaits a scoped thread without blocking the runtime.
async fn join_thread<T>(ctx: &Ctx, handle: ScopedJoinHandle<'_, Step<T>>, what: &str) -> Step<T> {
    while !handle.is_finished() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    match handle.join() {
        Ok(result) => result,
        Err(_) => bail!("{}: {what} panicked", ctx.id()),
    }
}

/// Awaits `fut` (a task's handle) unless the round is released first (the
/// watchdog failed it): then the round is over, and so is this wait.
async fn unless_released<F: Future>(
    ctx: &Ctx,
    stop: &watch::Sender<bool>,
    what: &str,
    fut: F,
) -> Step<F::Output> {
    let mut stop = stop.subscribe();
    tokio::select! {
        biased;
        out = fut => Ok(out),
        _ = stop.wait_for(|s| *s) => bail!("{}: {what} was still pending at the end of the round", ctx.id()),
    }
}

/// An add task's result: it must have run, and added.
fn added(ctx: &Ctx, what: &str, joined: Result<io::Result<()>, tokio::task::JoinError>) -> Step {
    match joined {
        Ok(res) => res.context(what),
        Err(e) => bail!("{}: {what}: {e}", ctx.id()),
    }
}

/// Stops the readers, merges what they read, and reads what they left (a
/// count that landed after they stopped is read here, not lost).
async fn stop_readers(
    ctx: &Ctx,
    efd: &EventFd,
    stop: &watch::Sender<bool>,
    readers: Vec<tokio::task::JoinHandle<Tally>>,
) -> Step {
    stop.send_replace(true);
    join_tasks(ctx, readers, "reader").await;
    let mut left = Tally::default();
    while read_once(ctx, efd, &mut left)?.is_some() {}
    ctx.merge(&left);
    Ok(())
}

impl From<RigError> for Failure {
    fn from(e: RigError) -> Failure {
        match e {
            RigError::Missing(reason) => Failure::Missing(reason),
            RigError::Failed(msg) => Failure::Failed(msg),
        }
    }
}

/// Completes one NOP (one `io_uring_enter`, so exactly one kernel signal)
/// and reaps the whole completion queue.
fn nop(ring: &mut IoUring) -> Step {
    push_nop(ring, false)?;
    ring.submit_and_wait(1).context("io_uring_enter")?;
    let reaped = reap(ring)?;
    ensure!(reaped == 1, "one NOP submitted, {reaped} reaped");
    Ok(())
}

/// S17: `rings` io_uring rings, one thread each, all with the same eventfd
/// registered, complete NOPs one per submit (in bursts with random pauses)
/// while tokio readers read, on both flavors. Completions == sum read.
pub(super) fn io_uring_rings(ctx: &Arc<Ctx>) -> Step {
    let parts = [(Flavor::CurrentThread, 2), (Flavor::MultiThread, 3)];
    for (i, (flavor, readers)) in (0u64..).zip(parts) {
        rings_on(ctx, flavor, ctx.threads(readers), i)?;
    }
    Ok(())
}

/// One flavor's part of S17 (its random streams numbered after `part`).
fn rings_on(ctx: &Arc<Ctx>, flavor: Flavor, readers: usize, part: u64) -> Step {
    const RINGS: u64 = 3;
    let per_ring = 20_000 * ctx.scale();
    let seed = ctx.rng(part).next_u64();
    ctx.begin();
    let rt = flavor.runtime()?;
    let efd = async_fd(&rt, false)?;
    let rings = (0..RINGS)
        .map(|_| Ok(uring(&*efd, 8)?))
        .collect::<Step<Vec<_>>>()?;
    let watch = Watch::one(efd.as_fd(), 0, "task");
    let res = watched_tasks(ctx, &watch, |stop_tx| {
        thread::scope(|s| {
            let writers: Vec<_> = (0..)
                .zip(rings)
                .map(|(r, mut ring)| {
                    let mut rng = Rng::stream(seed, r);
                    s.spawn(move || {
                        let mut done = 0;
                        while done < per_ring && !ctx.stopped() {
                            let burst = (1 + rng.below(200)).min(per_ring - done);
                            for _ in 0..burst {
                                nop(&mut ring)?;
                            }
                            done += burst;
                            thread::sleep(Duration::from_micros(rng.below(300)));
                        }
                        Ok(done)
                    })
                })
                .collect();
            let res = rt.block_on(async {
                let readers = Readers {
                    n: readers,
                    fd: 0,
                    site: 10 + part,
                    cancel_one_in: 0,
                };
                let reading = spawn_readers(ctx, &efd, stop_tx, &watch, readers);
                let mut tally = Tally::default();
                for writer in writers {
                    tally.add_each(join_thread(ctx, writer, "an io_uring thread").await?, 1);
                }
                ctx.merge(&tally);
                ensure!(tally.add_calls > 0, "S17: the kernel never signalled");
                drained(ctx, efd.as_fd()).await?;
                stop_readers(ctx, efd.get_ref(), stop_tx, reading).await
            });
            // Recorded now: the scope's join waits for the round to stop.
            ctx.record(res)
        })
    });
    drop(efd);
    rt.shutdown_timeout(Duration::from_secs(1));
    res
}
