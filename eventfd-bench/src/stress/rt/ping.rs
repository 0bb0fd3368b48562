//! Wakes that travel from another OS thread to a runtime, one at a time:
//! S12 (current-thread ping-pong) and S14 (a stale readiness guard).

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
use tokio::task::JoinHandle;

use super::{ack_pair, async_fd, counted, current, multi, read_either, watched, within};
use crate::stress::ctx::{bail, ensure, Context, Ctx, Failure, Step, Tally};
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
    let (ack, ack_r) = ack_pair()?;
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
            let w = s.spawn(|| {
                let mut tally = Tally::default();
                let mut ping = || -> Step {
                    for _ in 0..rounds {
                        if ctx.stopped() {
                            break;
                        }
                        sent.store(ctx.now_ns(), Ordering::SeqCst);
                        writer.add(1).context("add")?;
                        tally.add(1);
                        ack_r.read().context("ack read")?;
                    }
                    Ok(())
                };
                ctx.settle(ping().map(|()| tally))
            });
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
                    let Some(res) = res else {
                        break;
                    };
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

/// Registers `efd` with the current runtime, read interest only, as
/// `AsyncEventFd` does, but keeping tokio's readiness guard in our hands.
fn register_raw(efd: EventFd) -> io::Result<AsyncFd<EventFd>> {
    // SAFETY: the `AsyncFd` owns `efd`, whose `OwnedFd` stays open and is
    // never replaced until the `AsyncFd` is dropped.
    let registered = unsafe { AsyncFd::register_with_interest(efd, Interest::READABLE) };
    registered.map_err(|e| e.into_parts().1)
}

/// S14: a readiness guard kept across more than 256 (and 32768) reactor
/// events for its fd, then cleared.
pub(in crate::stress) fn stale_readiness_guard(ctx: &Arc<Ctx>) -> Step {
    let mut counts = vec![257u64; 10 * ctx.scale() as usize];
    counts.push(32_769);
    for events in counts {
        stale_guard(ctx, events)?;
    }
    Ok(())
}

/// One part of S14: `events` reactor events while the guard is kept.
fn stale_guard(ctx: &Arc<Ctx>, events: u64) -> Step {
    ctx.begin();
    let rt = multi(2)?;
    let afd = {
        let _entered = rt.enter();
        register_raw(EventFd::new().context("eventfd")?).context("register")?
    };
    let target = afd.get_ref().try_clone().context("try_clone")?;
    // The ping must go through the reactor (see `pinger`): registered raw,
    // not as an `AsyncEventFd`, whose read may take it before the reactor
    // has dispatched anything.
    let ping = {
        let _entered = rt.enter();
        Arc::new(register_raw(EventFd::new().context("eventfd")?).context("register")?)
    };
    let ping_w = ping.get_ref().try_clone().context("try_clone")?;
    let (ack, ack_r) = ack_pair()?;
    let ack = Arc::new(ack);
    let watch = Watch::one(ping.as_fd(), 0, "task");
    let (stop_tx, stop_rx) = watch::channel(false);
    let release = || {
        ctx.finish();
        stop_tx.send_replace(true);
        drop(ack.add(1));
    };
    let mut tally = Tally::default();
    let res = watched(ctx, &watch, &release, || {
        rt.block_on(async {
            target.add(1).context("add")?;
            tally.add(1);
            let first = within(ctx, "the first readable()", afd.readable()).await?;
            let stale = first.context("S14: the first readable()")?;
            tally.read(afd.get_ref().read().context("S14: read")?);
            // Keep `stale` while the reactor sees `events` events for the fd:
            // each round, one add to it and a ping through the reactor, so
            // the reactor has dispatched the add before the next one.
            let probe = watch.probe();
            let helper = pinger(
                Arc::clone(&ping),
                Arc::clone(&ack),
                stop_rx.clone(),
                probe,
                events,
            );
            let writer = {
                let ctx = Arc::clone(ctx);
                tokio::task::spawn_blocking(move || {
                    let mut tally = Tally::default();
                    for _ in 0..events {
                        if ctx.stopped() {
                            break;
                        }
                        target.add(1).context("add")?;
                        ping_w.add(1).context("ping")?;
                        ack_r.read().context("ack read")?;
                        tally.add(1);
                    }
                    Ok((tally, target))
                })
            };
            let joined = writer.await;
            let (t, target) =
                joined.map_err(|e| Failure::Failed(format!("S14: writer: {e}")))??;
            tally.merge(&t);
            helper
                .await
                .map_err(|e| Failure::Failed(format!("S14: ping task: {e}")))?;
            ctx.proceed()?;
            clear_stale(ctx, &afd, stale, target, events, &mut tally).await
        })
    });
    ctx.finish();
    stop_tx.send_replace(true);
    ctx.merge(&tally);
    drop(afd);
    rt.shutdown_timeout(Duration::from_secs(1));
    res
}

/// The end of one part of S14: clears the guard kept across `events`
/// events (which must not drop the readiness they brought), reads them, and
/// checks that the fd still wakes for `target`'s next add.
async fn clear_stale(
    ctx: &Ctx,
    afd: &AsyncFd<EventFd>,
    mut stale: AsyncFdReadyGuard<'_, EventFd>,
    target: EventFd,
    events: u64,
    tally: &mut Tally,
) -> Step {
    stale.clear_ready();
    drop(stale);
    // The events arrived after the guard was handed out, so its
    // clear must have been a no-op: readable() is ready at once.
    let mut again = pin!(afd.readable());
    let now = poll_fn(|cx| Poll::Ready(again.as_mut().poll(cx))).await;
    let Poll::Ready(Ok(mut guard)) = now else {
        bail!(
            "S14: clearing a guard kept across {events} reactor events dropped live \
             readiness (count left {}): tokio's readiness tick wrapped",
            count_left(afd.as_fd())
        );
    };
    let v = afd.get_ref().read().context("S14: read")?;
    tally.read(v);
    ensure!(v == events, "S14: read {v}, expected {events}");
    guard.clear_ready();
    drop(guard);
    // The fd still wakes.
    let later = thread::spawn(move || {
        thread::sleep(Duration::from_millis(1));
        target.add(1)
    });
    let woke = within(ctx, "readable() after the stale guard", afd.readable()).await;
    match later.join() {
        Ok(Ok(())) => tally.add(1),
        other => bail!("S14: late add: {other:?}"),
    }
    drop(woke?.context("S14: readable() after the stale guard")?);
    tally.read(afd.get_ref().read().context("S14: read")?);
    Ok(())
}

/// S14's ping task: reads each ping through the reactor and acknowledges
/// it, until `events` pings arrived or the round stops.
///
/// Only after the reactor has reported the ping: the writer added to the
/// target before it pinged, so by then the reactor has dispatched that add
/// too, and the next add is an event of its own. A read that took the ping
/// first (as `AsyncEventFd::read` may) would let adds coalesce into fewer
/// events than S14 counts, and the tick could wrap onto the stale guard's.
fn pinger(
    ping: Arc<AsyncFd<EventFd>>,
    ack: Arc<EventFd>,
    mut stop: watch::Receiver<bool>,
    probe: Probe,
    events: u64,
) -> JoinHandle<u64> {
    tokio::spawn(async move {
        let mut got = 0;
        while got < events {
            let guard = tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => return got,
                guard = ping.readable() => guard,
            };
            let Ok(mut guard) = guard else {
                return got;
            };
            let v = match guard.try_io(|inner| inner.get_ref().read()) {
                Ok(Ok(v)) => v,
                Ok(Err(_)) => return got,
                // Readiness without a count: cleared by `try_io`; wait again.
                Err(_would_block) => continue,
            };
            got += v;
            probe.progress(0);
            if ack.add(1).is_err() {
                return got;
            }
        }
        got
    })
}
