//! S18: overflow storms. Kernel signals (io_uring NOP completions) land on
//! a full counter again and again, saturating it to `u64::MAX`, while tasks
//! and threads add and read; adds that wait on the overflow must not spin.

use std::future::poll_fn;
use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use async_eventfd::{AsyncEventFd, EventFd, MAX_COUNT};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::resource::{getrusage, UsageWho};
use tokio::sync::watch;

use super::{
    drained_by_readers, fail, io_fail, join, nop, peek, reader, ring_for, runtime, settle,
    stop_readers, watched, within, Checked, Summary, Tally, DEADLINE, FLAVORS,
};
use crate::rng::Rng;
use crate::stress::ctx::{Ctx, Step};

/// The process's CPU time so far, user and system, every thread.
fn process_cpu() -> Checked<Duration> {
    let usage = getrusage(UsageWho::RUSAGE_SELF).map_err(|e| io_fail("getrusage")(e.into()))?;
    let time = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec().unsigned_abs())
            + Duration::from_micros(t.tv_usec().unsigned_abs())
    };
    Ok(time(usage.user_time()) + time(usage.system_time()))
}

/// An add from a plain thread on the shared (nonblocking) fd: waits for
/// `POLLOUT`; on the overflow, where `poll` returns `POLLERR` at once, it
/// sleeps instead of spinning.
fn thread_add(efd: &EventFd, n: u64) -> Checked<()> {
    let start = Instant::now();
    loop {
        match efd.add(n) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            done => return done.map_err(io_fail("add from a thread")),
        }
        if start.elapsed() > DEADLINE {
            return fail("an add from a thread waited past the deadline");
        }
        let mut fds = [PollFd::new(efd.as_fd(), PollFlags::POLLOUT)];
        poll(&mut fds, PollTimeout::from(100u16)).map_err(|e| io_fail("poll")(e.into()))?;
        if fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLERR))
        {
            thread::sleep(Duration::from_millis(1));
        }
    }
}

/// A plain-thread reader: `poll` for `POLLIN` (short timeouts, to see the
/// stop flag), then read.
fn thread_reader(efd: EventFd, stop: watch::Receiver<bool>) -> Checked<Tally> {
    let mut tally = Tally::default();
    while !*stop.borrow() {
        let mut fds = [PollFd::new(efd.as_fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::from(10u16)).map_err(|e| io_fail("poll")(e.into()))?;
        match efd.read() {
            Ok(value) => tally.take(value),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(io_fail("read from a thread")(e)),
        }
    }
    Ok(tally)
}

/// S18: overflow storms. Each round saturates the counter (`MAX_COUNT`,
/// then a kernel signal) and starts adds that must wait (a task through
/// `add`, one through `poll_add`, a plain thread); while they wait the
/// process must stay under a quarter of a core. Then the storm: readers
/// (tasks and a thread) start, a ring keeps signalling, a task keeps adding
/// `MAX_COUNT` so that signals land on a full counter again and again, and
/// small adds come from tasks and a thread. Rounds alternate the flavors.
pub(in crate::stress) fn overflow_storms(ctx: &Arc<Ctx>) -> Step {
    let rounds = 4 * ctx.scale();
    let mut summary = Summary::default();
    let run = (0..rounds).try_for_each(|round| {
        let flavor = FLAVORS[round as usize % 2];
        let (rng, t) = (ctx.rng(round), ctx.t());
        let part = watched(&format!("round {round} on {flavor:?}"), move || {
            let mut part = Summary::default();
            runtime(flavor)?.block_on(s18_round(rng, t, &mut part))?;
            Ok(part)
        })?;
        summary.merge(part);
        Ok(())
    });
    summary.detail = format!(
        "{rounds} rounds, {} reads of u64::MAX, {} kernel signals",
        summary.saturated_reads, summary.kernel_signals
    );
    settle(ctx, run.map(|()| summary))
}

/// The quiet window of an S18 round, and the CPU the process may use in it.
const QUIET: Duration = Duration::from_millis(200);
const QUIET_CPU: Duration = Duration::from_millis(50);

async fn s18_round(mut rng: Rng, t: Duration, summary: &mut Summary) -> Checked<()> {
    let efd = Arc::new(AsyncEventFd::new().map_err(io_fail("AsyncEventFd::new"))?);
    let mut ring = ring_for(&*efd)?;
    let plain = || efd.get_ref().try_clone().map_err(io_fail("try_clone"));

    // Saturate: MAX_COUNT, then one kernel signal (+1) = u64::MAX.
    efd.try_add(MAX_COUNT).map_err(io_fail("fill"))?;
    nop(&mut ring)?;
    summary.counts.added += u128::from(MAX_COUNT);
    summary.counts.add_calls += 1;
    summary.signalled(1);
    if peek(&*efd)? != (true, true) {
        return fail("a kernel signal at MAX_COUNT did not saturate the counter");
    }

    // Adds that must wait through the overflow.
    let values: Vec<u64> = (0..3).map(|_| 1 + rng.below(1000)).collect();
    let waiting = vec![
        tokio::spawn({
            let efd = Arc::clone(&efd);
            let n = values[0];
            async move { efd.add(n).await }
        }),
        tokio::spawn({
            let efd = Arc::clone(&efd);
            let n = values[1];
            async move { poll_fn(|cx| efd.poll_add(cx, n)).await }
        }),
    ];
    let waiting_thread = {
        let efd = plain()?;
        let n = values[2];
        thread::spawn(move || thread_add(&efd, n))
    };
    summary.counts.added += values.iter().map(|&v| u128::from(v)).sum::<u128>();
    summary.counts.add_calls += values.len() as u64;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let before = process_cpu()?;
    tokio::time::sleep(QUIET).await;
    let cpu = process_cpu()? - before;
    if cpu > QUIET_CPU {
        return fail(format!(
            "spinning: the process used {cpu:?} of CPU in {QUIET:?} while adds waited on an overflowed counter"
        ));
    }
    if waiting.iter().any(|w| w.is_finished()) || waiting_thread.is_finished() {
        return fail("an add finished on a saturated counter");
    }

    // The storm.
    let (stop, stopped) = watch::channel(false);
    let readers: Vec<_> = (0..2)
        .map(|i| tokio::spawn(reader(Arc::clone(&efd), i, stopped.clone())))
        .collect();
    let reader_thread = {
        let efd = plain()?;
        let stopped = stopped.clone();
        thread::spawn(move || thread_reader(efd, stopped))
    };
    let signals = 50 + rng.below(50);
    let signaller = {
        let efd = plain()?;
        let mut rng = Rng::new(rng.next_u64());
        thread::spawn(move || -> Checked<(u64, u64)> {
            let mut fills = 0;
            for _ in 0..signals {
                // Only these signals make u64::MAX: with no POLLERR now, this
                // one lands below it and adds exactly 1.
                let start = Instant::now();
                while peek(&efd)?.1 {
                    if start.elapsed() > t {
                        return fail("lost wakeup: u64::MAX stayed unread with readers waiting");
                    }
                    thread::sleep(Duration::from_micros(50));
                }
                // Often, fill first (only an empty counter takes MAX_COUNT), so
                // that the signal finds it full unless a reader came between.
                if rng.one_in(2) {
                    match efd.add(MAX_COUNT) {
                        Ok(()) => fills += 1,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(io_fail("add(MAX_COUNT) from the ring thread")(e)),
                    }
                }
                nop(&mut ring)?;
                thread::sleep(Duration::from_micros(rng.below(500)));
            }
            Ok((signals, fills))
        })
    };
    let fills = 3 + rng.below(3);
    let filler = tokio::spawn({
        let efd = Arc::clone(&efd);
        async move {
            for _ in 0..fills {
                efd.add(MAX_COUNT).await?;
                tokio::task::yield_now().await;
            }
            io::Result::Ok(())
        }
    });
    let small: Vec<u64> = (0..400).map(|_| 1 + rng.below(1000)).collect();
    let small_task = tokio::spawn({
        let efd = Arc::clone(&efd);
        let values = small[..200].to_vec();
        async move {
            for n in values {
                efd.add(n).await?;
            }
            io::Result::Ok(())
        }
    });
    let small_thread = {
        let efd = plain()?;
        let values = small[200..].to_vec();
        thread::spawn(move || values.into_iter().try_for_each(|n| thread_add(&efd, n)))
    };

    for handle in waiting {
        within(DEADLINE, "a waiting add", handle)
            .await?
            .or_else(|_| fail("a waiting add panicked"))?
            .map_err(io_fail("a waiting add"))?;
    }
    join("the waiting thread add", waiting_thread).await?;
    within(DEADLINE, "the MAX_COUNT adds", filler)
        .await?
        .or_else(|_| fail("the filler panicked"))?
        .map_err(io_fail("add(MAX_COUNT)"))?;
    within(DEADLINE, "the small adds", small_task)
        .await?
        .or_else(|_| fail("the small adder panicked"))?
        .map_err(io_fail("add"))?;
    join("the small thread adds", small_thread).await?;
    let (signalled, ring_fills) = join("the io_uring signaller", signaller).await?;
    summary.counts.added += u128::from(fills + ring_fills) * u128::from(MAX_COUNT)
        + small.iter().map(|&v| u128::from(v)).sum::<u128>();
    summary.counts.add_calls += fills + ring_fills + small.len() as u64;
    summary.signalled(signalled);

    drained_by_readers(&efd, 3, t, summary).await?;
    stop_readers(&efd, &stop, readers, summary).await?;
    join("the reader thread", reader_thread)
        .await?
        .add_to(summary);
    Ok(())
}
