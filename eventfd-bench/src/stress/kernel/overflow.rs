//! S18: overflow storms, kernel signals on a full counter (see
//! [`overflow_storms`]).

use std::future::{poll_fn, Future};
use std::io;
use std::os::fd::AsFd;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use async_eventfd::{EventFd, MAX_COUNT};
use nix::poll::PollFlags;
use tokio::sync::watch;

use super::{added, join_thread, nop, stop_readers, unless_released, uring};
use crate::rng::Rng;
use crate::stress::calibrate::{calibration, process_cpu, QUIET};
use crate::stress::ctx::{bail, ensure, Context, Ctx, Step, Tally};
use crate::stress::rt::{
    async_fd, drained, spawn_readers, watched, watched_tasks, within, Flavor, Readers,
};
use crate::stress::threads::{poll_one, read_once};
use crate::stress::watchdog::{Probe, Watch};

/// An add from a plain thread on the shared (nonblocking) fd: waits for
/// `POLLOUT`; on the overflow, where `poll` returns `POLLERR` at once, it
/// sleeps instead of spinning. Gives up when the round stops.
fn thread_add(ctx: &Ctx, efd: &EventFd, n: u64) -> Step {
    loop {
        match efd.add(n) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            done => return done.context("add from a thread"),
        }
        if ctx.stopped() {
            bail!("S18: an add from a thread was still waiting at the end of the round");
        }
        if poll_one(efd, PollFlags::POLLOUT, 100)?.contains(PollFlags::POLLERR) {
            thread::sleep(Duration::from_millis(1));
        }
    }
}

/// A plain-thread reader: `poll` for `POLLIN` (short timeouts, to see the
/// stop flag), then read.
fn thread_reader(
    ctx: &Ctx,
    efd: &EventFd,
    stop: &watch::Receiver<bool>,
    probe: &Probe,
) -> Step<Tally> {
    let mut tally = Tally::default();
    while !*stop.borrow() {
        poll_one(efd, PollFlags::POLLIN, 10)?;
        if read_once(ctx, efd, &mut tally)?.is_some() {
            probe.progress(0);
        }
    }
    Ok(tally)
}

/// S18: overflow storms, `4 x scale` rounds alternating the flavors. Each
/// round saturates the counter (`MAX_COUNT`, then a kernel signal) and
/// starts adds that must wait (a task through `add`, one through
/// `poll_add`, a plain thread); while they wait the process must stay under
/// a quarter of a core. Then the storm: readers (tasks and a thread) start,
/// a ring keeps signalling, a task keeps adding `MAX_COUNT` so that signals
/// land on a full counter again and again, and small adds come from tasks
/// and a thread. Once the counter is empty, the adds that waited must be
/// done within T.
pub(in crate::stress) fn overflow_storms(ctx: &Arc<Ctx>) -> Step {
    let mut undecided = None;
    for round in 0..4 * ctx.scale() {
        undecided = undecided.or(storm(ctx, Flavor::BOTH[round as usize % 2], round)?);
    }
    if let Some(reason) = undecided {
        ctx.undecided(reason);
    }
    Ok(())
}

/// The least CPU budget of S18's quiet window (see [`quiet_window`]).
const QUIET_CPU: Duration = Duration::from_millis(50);

/// How often the two waiting adds may wake, together, in the quiet window:
/// an honest wait on the overflow wakes about twice per back-off step (2,
/// 4 ... 128 ms: 7 steps in 200 ms), so 2 x 2 x 8 at most.
const HONEST_WAKEUPS: u64 = 32;

/// Judges the quiet window, in which the adds waited on a saturated counter
/// and nothing changed. A spin is wakeups far beyond [`HONEST_WAKEUPS`]
/// (where the machine is fast enough to tell), or a core held for nearly
/// the whole window (a task spinning inside one `poll`). Only where the
/// wakeups cannot tell is the CPU held against 4 x an honest wait: on an
/// emulator an honest window costs several times its calibration (the
/// watchdog's and the other threads' wakeups count too), so that budget
/// alone is no proof of a spin. Returns why the window could not be
/// judged, if it could not.
fn quiet_window(wakeups: u64, cpu: Duration) -> Step<Option<String>> {
    let machine = calibration();
    let wakeups_tell = machine.can_tell_spin(QUIET, HONEST_WAKEUPS);
    ensure!(
        !wakeups_tell || wakeups <= 4 * HONEST_WAKEUPS,
        "S18: spinning: the adds waiting on an overflowed counter woke {wakeups} times in \
         {QUIET:?} while nothing changed (an honest back-off wakes at most {HONEST_WAKEUPS})"
    );
    ensure!(
        cpu < QUIET.mul_f64(0.9),
        "S18: spinning: the process used {cpu:?} of CPU in {QUIET:?} while adds waited on an \
         overflowed counter: a core held for the whole window"
    );
    let budget = QUIET_CPU.max(machine.idle_wait_cpu() * 4);
    if wakeups_tell || (budget < QUIET / 2 && cpu <= budget) {
        return Ok(None);
    }
    Ok(Some(format!(
        "S18: this machine is too slow to tell a spin from an honest back-off (round trip \
         {:?}; the window used {cpu:?} of CPU, an honest wait costs {:?} in {QUIET:?})",
        Duration::from_nanos(machine.round_trip_ns),
        machine.idle_wait_cpu()
    )))
}

/// One round of S18; returns why its quiet window could not be judged, if so.
fn storm(ctx: &Arc<Ctx>, flavor: Flavor, round: u64) -> Step<Option<String>> {
    let mut rng = ctx.rng(round);
    ctx.begin();
    let rt = flavor.runtime()?;
    let efd = async_fd(&rt, false)?;
    let plain = || efd.get_ref().try_clone().context("try_clone");
    let watch = Watch::one(efd.as_fd(), 0, "task");
    let mut tally = Tally::default();
    let res = thread::scope(|s| {
        let res = (|| {
            let mut ring = uring(&*efd, 8)?;
            // Saturate: MAX_COUNT, then one kernel signal (+1) = u64::MAX.
            efd.get_ref().add(MAX_COUNT).context("fill")?;
            tally.add(MAX_COUNT);
            nop(&mut ring)?;
            tally.add(1);
            ensure!(
                poll_one(&*efd, PollFlags::POLLIN, 0)?
                    .contains(PollFlags::POLLIN | PollFlags::POLLERR),
                "S18: a kernel signal at MAX_COUNT did not saturate the counter"
            );

            let values: Vec<u64> = (0..3).map(|_| 1 + rng.below(1000)).collect();
            // Every poll of a waiting add is counted: all but the first
            // are wakeups.
            let polls = Arc::new(AtomicU64::new(0));
            let (a, b, n) = (Arc::clone(&efd), Arc::clone(&efd), [values[0], values[1]]);
            let waiting = [
                rt.spawn(counting(&polls, async move { a.add(n[0]).await })),
                rt.spawn(counting(&polls, poll_fn(move |cx| b.poll_add(cx, n[1])))),
            ];
            let waiting_thread = {
                let (efd, n) = (plain()?, values[2]);
                s.spawn(move || thread_add(ctx, &efd, n))
            };
            values.iter().for_each(|&n| tally.add(n));
            // Watched for its deadline only (the counter stays readable
            // by design): a task spinning inside `poll` would hold it.
            let quiet = Watch::new(Vec::new(), Vec::new());
            let (wakeups, cpu) = watched(ctx, &quiet, &|| ctx.finish(), || {
                rt.block_on(async {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    let (polled, before) = (polls.load(Ordering::Relaxed), process_cpu());
                    tokio::time::sleep(QUIET).await;
                    let wakeups = polls.load(Ordering::Relaxed) - polled;
                    Ok::<_, io::Error>((wakeups, process_cpu()? - before?))
                })
                .context("getrusage")
            })?;
            let undecided = quiet_window(wakeups, cpu)?;
            ensure!(
                !waiting.iter().any(|w| w.is_finished()) && !waiting_thread.is_finished(),
                "S18: an add finished on a saturated counter"
            );

            // The storm, watched: from here on readers wait on the fd.
            watched_tasks(ctx, &watch, |stop_tx| {
                rt.block_on(async {
                    let readers = Readers {
                        n: 2,
                        fd: 0,
                        site: 20 + round,
                        cancel_one_in: 0,
                    };
                    let readers = spawn_readers(ctx, &efd, stop_tx, &watch, readers);
                    let reader_thread = {
                        let (efd, stop, probe) = (plain()?, stop_tx.subscribe(), watch.probe());
                        s.spawn(move || thread_reader(ctx, &efd, &stop, &probe))
                    };
                    let signals = 50 + rng.below(50);
                    let signaller = {
                        let (efd, rng) = (plain()?, Rng::new(rng.next_u64()));
                        s.spawn(move || signal(ctx, &efd, &mut ring, signals, rng))
                    };
                    let add_task = |values: Vec<u64>, yields: bool| {
                        let efd = Arc::clone(&efd);
                        tokio::spawn(async move {
                            for n in values {
                                efd.add(n).await?;
                                if yields {
                                    tokio::task::yield_now().await;
                                }
                            }
                            io::Result::Ok(())
                        })
                    };
                    let fills = 3 + rng.below(3);
                    let filler = add_task(vec![MAX_COUNT; fills as usize], true);
                    let small: Vec<u64> = (0..400).map(|_| 1 + rng.below(1000)).collect();
                    let small_task = add_task(small[..200].to_vec(), false);
                    let small_thread = {
                        let (efd, values) = (plain()?, small[200..].to_vec());
                        s.spawn(move || {
                            values
                                .into_iter()
                                .try_for_each(|n| thread_add(ctx, &efd, n))
                        })
                    };

                    let joined =
                        unless_released(ctx, stop_tx, "the MAX_COUNT adds", filler).await?;
                    added(ctx, "add(MAX_COUNT)", joined)?;
                    let joined =
                        unless_released(ctx, stop_tx, "the small adds", small_task).await?;
                    added(ctx, "add", joined)?;
                    join_thread(ctx, small_thread, "the small thread adds").await?;
                    let ring_fills = join_thread(ctx, signaller, "the io_uring signaller").await?;
                    tally.add_each(fills + ring_fills, MAX_COUNT);
                    small.iter().for_each(|&n| tally.add(n));
                    tally.add_each(signals, 1);

                    drained(ctx, efd.as_fd()).await?;
                    for handle in waiting {
                        let joined =
                            within(ctx, "an add that waited on the overflow", handle).await?;
                        added(ctx, "a waiting add", joined)?;
                    }
                    join_thread(ctx, waiting_thread, "the waiting thread add").await?;
                    drained(ctx, efd.as_fd()).await?;
                    stop_readers(ctx, efd.get_ref(), stop_tx, readers).await?;
                    let read = join_thread(ctx, reader_thread, "the reader thread").await?;
                    ctx.merge(&read);
                    Ok(undecided)
                })
            })
        })();
        // Recorded now: the scope's join waits for the round to stop.
        ctx.record(res)
    });
    ctx.merge(&tally);
    drop(efd);
    rt.shutdown_timeout(Duration::from_secs(1));
    res
}

/// `fut`, each of its polls counted in `polls`.
fn counting<F: Future>(polls: &Arc<AtomicU64>, fut: F) -> impl Future<Output = F::Output> {
    let polls = Arc::clone(polls);
    async move {
        let mut fut = pin!(fut);
        poll_fn(|cx| {
            polls.fetch_add(1, Ordering::Relaxed);
            fut.as_mut().poll(cx)
        })
        .await
    }
}

/// S18's ring thread: `signals` kernel signals, each made below `u64::MAX`
/// (so it adds exactly 1), often right after a fill to `MAX_COUNT` so that
/// it saturates the counter. Returns how many fills succeeded.
fn signal(
    ctx: &Ctx,
    efd: &EventFd,
    ring: &mut io_uring::IoUring,
    signals: u64,
    mut rng: Rng,
) -> Step<u64> {
    let mut fills = 0;
    for _ in 0..signals {
        // Only these signals make u64::MAX: with no POLLERR now, this one
        // lands below it. A u64::MAX left unread is the watchdog's to see.
        while poll_one(efd, PollFlags::POLLIN, 0)?.contains(PollFlags::POLLERR) {
            if ctx.stopped() {
                bail!("S18: u64::MAX was still unread at the end of the round");
            }
            thread::sleep(Duration::from_micros(50));
        }
        // Often, fill first (only an empty counter takes MAX_COUNT), so
        // that the signal finds it full unless a reader came between.
        if rng.one_in(2) {
            match efd.add(MAX_COUNT) {
                Ok(()) => fills += 1,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e).context("add(MAX_COUNT) from the ring thread"),
            }
        }
        nop(ring)?;
        thread::sleep(Duration::from_micros(rng.below(500)));
    }
    Ok(fills)
}
