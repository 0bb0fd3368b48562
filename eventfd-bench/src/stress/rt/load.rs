//! tokio tasks under load: S3's tokio half (semaphore mode), S11 (add
//! tasks, thread writers and cancelled reads), S16 (10,000 fds).

use std::os::fd::AsFd;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use tokio::sync::watch;

use super::{
    async_fd, counted, join_tasks, marked, multi, read_either, spawn_readers, spawn_step,
    wait_live, watched_tasks, Readers,
};
use crate::stress::ctx::{ensure, Context, Ctx, Step, Tally};
use crate::stress::threads::numbered;
use crate::stress::threads::{join, stream, writer_jobs};
use crate::stress::watchdog::{Probe, Watch};
use async_eventfd::AsyncEventFd;

/// S3, tokio half: a semaphore `AsyncEventFd` (read-only, edge-triggered
/// registration), M reader tasks, rounds of one add of N.
pub(in crate::stress) fn semaphore_tasks(ctx: &Arc<Ctx>) -> Step {
    let n = 200u64;
    let rounds = 100 * ctx.scale();
    let m = ctx.threads(4);
    ctx.begin();
    let rt = multi(2)?;
    let efd = async_fd(&rt, true)?;
    let watch = Watch::one(efd.as_fd(), 0, "task");
    let before = ctx.totals();
    let res = watched_tasks(ctx, &watch, |stop_tx| {
        rt.block_on(async {
            let readers = spawn_readers(
                ctx,
                &efd,
                stop_tx,
                &watch,
                Readers {
                    n: m,
                    fd: 0,
                    site: 1,
                    cancel_one_in: 3,
                },
            );
            let mut tally = Tally::default();
            for round in 1..=rounds {
                ctx.stamp_add();
                efd.get_ref().add(n).context("add(N)")?;
                tally.add(n);
                if !wait_live(ctx, round * n).await {
                    break;
                }
            }
            ctx.merge(&tally);
            stop_tx.send_replace(true);
            join_tasks(ctx, readers, "S3 reader").await;
            ctx.proceed()
        })
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    res?;
    let t = ctx.totals();
    let reads = t.read_calls - before.read_calls;
    let adds = t.add_calls - before.add_calls;
    ensure!(
        reads == adds * n,
        "S3 (tokio): {reads} reads for {} units added, expected one read of 1 per unit",
        adds * n
    );
    Ok(())
}

/// S11: add tasks, plain-thread writers and cancelled read tasks on
/// multi-thread runtimes of 2, 4 and 8 workers, counter and semaphore mode.
pub(in crate::stress) fn tokio_multi_thread_cancellation(ctx: &Arc<Ctx>) -> Step {
    let per = 3000 * ctx.scale();
    let workers = ctx.cfg.threads.map_or(vec![2, 4, 8], |t| vec![t.max(1)]);
    let parts = workers.into_iter().flat_map(|w| [(w, false), (w, true)]);
    for (part, (workers, semaphore)) in (0u64..).zip(parts) {
        cancellation(ctx, workers, semaphore, per, part)?;
    }
    Ok(())
}

/// One part of S11 (its random streams numbered after `part`).
fn cancellation(ctx: &Arc<Ctx>, workers: usize, semaphore: bool, per: u64, part: u64) -> Step {
    const TASK_WRITERS: usize = 4;
    const THREAD_WRITERS: usize = 2;
    const READERS: usize = 4;
    let site = part * 3;
    ctx.begin();
    let rt = multi(workers)?;
    let efd = async_fd(&rt, semaphore)?;
    let writers = writer_jobs(ctx, efd.get_ref(), THREAD_WRITERS, per, site + 1)?;
    let watch = Watch::one(efd.as_fd(), 0, "task");
    let expected = (TASK_WRITERS + THREAD_WRITERS) as u64 * per;
    let res = watched_tasks(ctx, &watch, |stop_tx| {
        thread::scope(|s| {
            let threads: Vec<_> = writers
                .into_iter()
                .map(|job| s.spawn(move || ctx.settle(job())))
                .collect();
            rt.block_on(async {
                let readers = Readers {
                    n: READERS,
                    fd: 0,
                    site: site + 2,
                    cancel_one_in: 3,
                };
                let readers = spawn_readers(ctx, &efd, stop_tx, &watch, readers);
                let adders: Vec<_> = (0..TASK_WRITERS)
                    .map(|i| {
                        let (ctx2, efd) = (Arc::clone(ctx), Arc::clone(&efd));
                        let mut rng = ctx.rng(stream(site + 3, i));
                        spawn_step(ctx, async move {
                            let mut tally = Tally::default();
                            for _ in (0..per).take_while(|_| !ctx2.stopped()) {
                                ctx2.stamp_add();
                                efd.add(1).await.context("S11: add task")?;
                                tally.add(1);
                                if rng.one_in(8) {
                                    tokio::task::yield_now().await;
                                }
                            }
                            Ok(tally)
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
            ctx.proceed()
        })
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    res
}

/// S16: 10,000 `AsyncEventFd`s, a reader task each, writer threads adding
/// round-robin.
pub(in crate::stress) fn ten_thousand_fds(ctx: &Arc<Ctx>) -> Step {
    const FDS: usize = 10_000;
    let k = 10 * ctx.scale();
    let nw = ctx.threads(2);
    let rt = multi(2)?;
    let all = (0..FDS)
        .map(|_| async_fd(&rt, false))
        .collect::<Step<Vec<_>>>()?;
    let fds = &all;
    let watch = Watch::per_fd(numbered(fds));
    let res = watched_tasks(ctx, &watch, |stop_tx| {
        thread::scope(|s| {
            let writers: Vec<_> = (0..nw)
                .map(|j| {
                    s.spawn(move || {
                        let mut tally = Tally::default();
                        let mine = (0..k).flat_map(|_| fds.iter().skip(j).step_by(nw));
                        for efd in mine.take_while(|_| !ctx.stopped()) {
                            match efd.get_ref().add(1).context("add") {
                                Ok(()) => tally.add(1),
                                Err(f) => return ctx.settle(Err(f)),
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
                        let task =
                            share_reader(Arc::clone(efd), i, k, stop_tx.subscribe(), watch.probe());
                        spawn_step(ctx, task)
                    })
                    .collect();
                join_tasks(ctx, readers, "S16 reader").await;
            });
            for w in writers {
                ctx.merge(&join(ctx, w, "S16 writer"));
            }
            ctx.proceed()
        })
    });
    drop(watch);
    drop(all);
    rt.shutdown_timeout(Duration::from_secs(1));
    res
}

/// S16's reader of fd `i`: reads its share of `k` units (or until the round
/// stops), through `read()` and `poll_read` in turn.
async fn share_reader(
    efd: Arc<AsyncEventFd>,
    i: usize,
    k: u64,
    mut stop: watch::Receiver<bool>,
    probe: Probe,
) -> Step<Tally> {
    let mut tally = Tally::default();
    let mut got = 0;
    while got < k {
        let mut read = read_either(&efd, i as u64 + got);
        let r = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            r = marked(counted(read.as_mut(), &mut tally), &probe, i) => r,
        };
        let v = r.context("S16: read")?;
        tally.read(v);
        probe.progress(i);
        got += v;
    }
    ensure!(
        got <= k,
        "S16: reader {i} got {got}, more than its share {k}"
    );
    Ok(tally)
}
