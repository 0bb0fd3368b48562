//! Wakes one at a time: S12 (a current-thread ping-pong with another OS
//! thread) and S14 (a stale readiness guard, one reactor event per round).

use std::future::{poll_fn, Future};
use std::io;
use std::os::fd::AsFd;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::thread;
use std::time::Duration;

use tokio::io::unix::{AsyncFd, AsyncFdReadyGuard};
use tokio::io::Interest;
use tokio::sync::watch;

use super::{async_fd, counted, current, read_either, watched, watched_tasks};
use crate::baselines::register;
use crate::stress::ctx::{bail, ensure, Context, Ctx, Step, Tally};
use crate::stress::threads::{join, readable};
use crate::stress::watchdog::{count_left, Probe, Watch};
use async_eventfd::EventFd;

/// S12: current-thread runtime, writes only from another OS thread, one
/// add per round acknowledged through a blocking eventfd.
pub(in crate::stress) fn tokio_current_thread_ping_pong(ctx: &Arc<Ctx>) -> Step {
    let rounds = 100_000 * ctx.scale();
    let rt = current()?;
    let efd = async_fd(&rt, false)?;
    let writer = efd.get_ref().try_clone().context("try_clone")?;
    let ack = EventFd::builder()
        .nonblocking(false)
        .build()
        .context("ack eventfd")?;
    let ack_r = ack.try_clone().context("try_clone")?;
    let watch = Watch::one(efd.as_fd(), 1, "the runtime's read");
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let release = || {
        ctx.finish();
        stop_tx.send_replace(true);
        drop(ack.add(1));
    };
    let sent = AtomicU64::new(0);
    let res = watched(ctx, &watch, &release, || {
        thread::scope(|s| {
            let ping = || -> Step<Tally> {
                let mut tally = Tally::default();
                for _ in (0..rounds).take_while(|_| !ctx.stopped()) {
                    sent.store(ctx.now_ns(), Ordering::SeqCst);
                    writer.add(1).context("add")?;
                    tally.add(1);
                    ack_r.read().context("ack read")?;
                }
                Ok(tally)
            };
            let w = s.spawn(move || ctx.settle(ping()));
            let res = ctx.record(rt.block_on(async {
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
                    let Some(res) = res else { break };
                    let v = res.context("S12: read")?;
                    tally.read(v);
                    tally.waited(Duration::from_nanos(
                        ctx.now_ns().saturating_sub(sent.load(Ordering::SeqCst)),
                    ));
                    watch.progress(0);
                    ensure!(v == 1, "S12: round {round}: read {v}, expected 1");
                    ack.add(1).context("ack")?;
                }
                ctx.merge(&tally);
                Ok(())
            }));
            ctx.finish();
            drop(ack.add(1));
            ctx.merge(&join(ctx, w, "S12 writer"));
            res
        })
    });
    // A leftover ack (from the final release) is not part of the count.
    if readable(ack.as_fd())? {
        drop(ack.read());
    }
    res
}

/// S14: a readiness guard kept across exactly 256 and 16,384 reactor events
/// for its fd, then cleared: the clear must be a no-op, and the fd still
/// wakes.
///
/// tokio's `clear_ready` clears only if the fd's readiness tick (one step per
/// reactor event for the fd) still has the guard's value. The tick wraps, so
/// a guard kept across exactly a multiple of its range drops live readiness,
/// a lost wakeup. tokio before 1.54 compared 8 bits (256 events wrap it);
/// 1.54 compares all 15, so 16,384 catches any narrower tick, and a guard
/// kept across 32,768 events still wraps: the limit that remains.
pub(in crate::stress) fn stale_readiness_guard(ctx: &Arc<Ctx>) -> Step {
    for _ in 0..ctx.scale() {
        for events in [256, 16_384] {
            stale_guard(ctx, events)?;
        }
    }
    Ok(())
}

/// One part of S14: a guard kept across exactly `events` reactor events.
///
/// The count is exact by construction, not by timing: each round adds 1 and
/// waits for `readable()`, then clears with that round's own guard, so each
/// round needs an event after the previous clear (only an event sets
/// readiness), and epoll reports each add at most once. Counting adds alone
/// would not do: two adds not yet reported share one epoll edge (issue 18).
fn stale_guard(ctx: &Arc<Ctx>, events: u64) -> Step {
    ctx.begin();
    // One thread adds and turns the reactor: a round costs no thread switch,
    // so 16,384 of them take little time even on a loaded machine.
    let rt = current()?;
    let afd = {
        let _entered = rt.enter();
        // Read interest only, as `AsyncEventFd` registers, but with tokio's
        // readiness guard in our hands.
        register(Interest::READABLE).context("register")?
    };
    let late = afd.get_ref().try_clone().context("try_clone")?;
    let watch = Watch::one(afd.as_fd(), 1, "task");
    let mut tally = Tally::default();
    let res = watched_tasks(ctx, &watch, |stop_tx| {
        rt.block_on(async {
            let mut wait = Wait {
                stop: stop_tx.subscribe(),
                probe: watch.probe(),
            };
            afd.get_ref().add(1).context("add")?;
            tally.add(1);
            let Some(first) = wait.readable(&afd).await else {
                return ctx.proceed();
            };
            let stale = first.context("S14: the first readable()")?;
            tally.read(afd.get_ref().read().context("S14: read")?);
            // The first event's readiness is still set: clear it with a
            // guard of our own, so that round 1 waits for an event too.
            let Some(fresh) = ready_now(&afd).await else {
                bail!("S14: readiness gone before any clear");
            };
            fresh.context("S14: readable()")?.clear_ready();
            if !keep_across(&afd, events, &mut wait, &mut tally).await? {
                return ctx.proceed();
            }
            clear_stale(ctx, &afd, stale, late, &mut wait, events, &mut tally).await
        })
    });
    ctx.finish();
    ctx.merge(&tally);
    drop(afd);
    rt.shutdown_timeout(Duration::from_secs(1));
    res
}

/// How S14 waits: until the round stops, with no timeout of its own. The
/// watchdog fails a wait once the fd has been readable for T with no read,
/// so a writer thread that is slow to run is not taken for a lost wakeup.
struct Wait {
    stop: watch::Receiver<bool>,
    probe: Probe,
}

impl Wait {
    /// `afd.readable()`, or `None` once the round stops.
    async fn readable<'a>(
        &mut self,
        afd: &'a AsyncFd<EventFd>,
    ) -> Option<io::Result<AsyncFdReadyGuard<'a, EventFd>>> {
        self.probe.sleep(0);
        let res = tokio::select! {
            biased;
            _ = self.stop.wait_for(|s| *s) => None,
            guard = afd.readable() => Some(guard),
        };
        self.probe.wake(0);
        res
    }
}

/// The rounds of [`stale_guard`]: `Ok(false)` if the round was stopped. The
/// last event's readiness is left set: the stale clear must not drop it.
async fn keep_across(
    afd: &AsyncFd<EventFd>,
    events: u64,
    wait: &mut Wait,
    tally: &mut Tally,
) -> Step<bool> {
    for round in 1..=events {
        afd.get_ref().add(1).context("S14: add")?;
        tally.add(1);
        let Some(guard) = wait.readable(afd).await else {
            return Ok(false);
        };
        let mut guard = guard.context("S14: readable()")?;
        tally.wake();
        wait.probe.progress(0);
        if round < events {
            guard.clear_ready();
        }
    }
    Ok(true)
}

/// `afd.readable()` polled once: `None` if it would wait.
async fn ready_now(afd: &AsyncFd<EventFd>) -> Option<io::Result<AsyncFdReadyGuard<'_, EventFd>>> {
    let mut ready = pin!(afd.readable());
    match poll_fn(|cx| Poll::Ready(ready.as_mut().poll(cx))).await {
        Poll::Ready(res) => Some(res),
        Poll::Pending => None,
    }
}

/// The end of one part of S14: the stale clear, then a wake by `late`'s add
/// from another thread.
async fn clear_stale(
    ctx: &Ctx,
    afd: &AsyncFd<EventFd>,
    mut stale: AsyncFdReadyGuard<'_, EventFd>,
    late: EventFd,
    wait: &mut Wait,
    events: u64,
    tally: &mut Tally,
) -> Step {
    stale.clear_ready();
    drop(stale);
    // The events arrived after the guard was handed out, so its clear must
    // have been a no-op: readable() is ready at once.
    let Some(again) = ready_now(afd).await else {
        bail!(
            "S14: clearing a guard kept across {events} reactor events dropped live \
             readiness (count left {}): tokio's readiness tick wrapped (tokio >= 1.54 \
             wraps only at 32768)",
            count_left(afd.as_fd())
        );
    };
    let mut guard = again.context("S14: readable()")?;
    let v = afd.get_ref().read().context("S14: read")?;
    tally.read(v);
    ensure!(v == events, "S14: read {v}, expected {events}");
    guard.clear_ready();
    drop(guard);
    let later = thread::spawn(move || {
        thread::sleep(Duration::from_millis(1));
        late.add(1)
    });
    let woke = wait.readable(afd).await;
    match later.join() {
        Ok(Ok(())) => tally.add(1),
        other => bail!("S14: late add: {other:?}"),
    }
    let Some(woke) = woke else {
        return ctx.proceed();
    };
    drop(woke.context("S14: readable() after the stale guard")?);
    tally.read(afd.get_ref().read().context("S14: read")?);
    Ok(())
}
