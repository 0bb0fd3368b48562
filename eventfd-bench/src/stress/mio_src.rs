//! mio scenarios: S3 (mio half: semaphore mode, edge-triggered Polls) and
//! S10 (`Source` churn).

use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use mio::{Events, Interest, Poll, Token};

use super::ctx::{bail, ensure, Context, Ctx, Step, Tally};
use super::threads::{read_once, run_threads, stream, woke, writer_jobs, Job};
use super::watchdog::Watch;
use async_eventfd::EventFd;

const STOP: Token = Token(usize::MAX);

/// A mio poll, with no short timeout (the watchdog judges liveness).
/// Returns whether the waiter should go on.
fn poll_once(
    ctx: &Ctx,
    watch: &Watch<'_>,
    waiter: usize,
    poll: &mut Poll,
    events: &mut Events,
) -> Step<bool> {
    watch.sleep(waiter);
    let res = poll.poll(events, Some(ctx.backstop()));
    watch.wake(waiter);
    match res {
        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
        res => res.context("mio poll")?,
    }
    Ok(!ctx.stopped())
}

/// Reads a semaphore eventfd until `WouldBlock`, failing on any read that
/// is not 1; returns whether anything was read.
fn semaphore_drain(ctx: &Ctx, watch: &Watch<'_>, efd: &EventFd, tally: &mut Tally) -> Step<bool> {
    let mut any = false;
    while let Some(v) = read_once(ctx, efd, tally)? {
        ensure!(v == 1, "S3 (mio): a semaphore read returned {v}");
        watch.progress(0);
        any = true;
    }
    Ok(any)
}

/// S3, mio half: one semaphore eventfd, M consumers each with its own mio
/// `Poll` (edge-triggered, read-only) on a dup; rounds of one add of N.
pub(super) fn semaphore_consumers(ctx: &Arc<Ctx>) -> Step {
    let n = 200u64;
    let rounds = 100 * ctx.scale();
    let m = ctx.threads(4);
    let efd = EventFd::builder()
        .semaphore(true)
        .build()
        .context("semaphore eventfd")?;
    let stop = EventFd::new().context("stop eventfd")?;
    let watch = Watch::one(efd.as_fd(), m, "mio consumer");
    let release = || drop(stop.add(1));
    let w = &watch;
    let consumers = (0..m)
        .map(|i| {
            let mut poll = Poll::new().context("mio Poll::new")?;
            let mut dup = efd.try_clone().context("try_clone")?;
            let mut stop_dup = stop.try_clone().context("try_clone")?;
            let registry = poll.registry();
            registry
                .register(&mut dup, Token(0), Interest::READABLE)
                .context("register")?;
            registry
                .register(&mut stop_dup, STOP, Interest::READABLE)
                .context("register stop")?;
            Ok(Box::new(move || {
                let mut tally = Tally::default();
                let mut events = Events::with_capacity(4);
                while poll_once(ctx, w, i, &mut poll, &mut events)? {
                    for _ in events.iter().filter(|ev| ev.token() == Token(0)) {
                        tally.wake();
                        if !semaphore_drain(ctx, w, &dup, &mut tally)? {
                            tally.spurious();
                        }
                    }
                }
                Ok(tally)
            }) as Job<'_>)
        })
        .collect::<Step<Vec<_>>>()?;
    let efd = &efd;
    let driver: Job<'_> = Box::new(move || {
        let mut tally = Tally::default();
        for round in 1..=rounds {
            ctx.stamp_add();
            efd.add(n).context("add(N)")?;
            tally.add(n);
            if !ctx.wait_live(round * n) {
                break;
            }
        }
        Ok(tally)
    });
    run_threads(ctx, &watch, &release, consumers, vec![driver])?;
    let t = ctx.totals();
    ensure!(
        t.read_calls == t.add_calls * n,
        "S3 (mio): {} reads for {} units added, expected one read per unit",
        t.read_calls,
        t.adds
    );
    Ok(())
}

/// S10: one poller with churn (reregister to a new token, deregister and
/// register again) while writers add.
pub(super) fn mio_source_churn(ctx: &Arc<Ctx>) -> Step {
    let per = 15_000 * ctx.scale();
    let nw = ctx.threads(2);
    let mut efd = EventFd::new().context("eventfd")?;
    let mut stop = EventFd::new().context("stop eventfd")?;
    let stop_w = stop.try_clone().context("try_clone")?;
    let watched = efd.try_clone().context("try_clone")?;
    let mut poll = Poll::new().context("mio Poll::new")?;
    poll.registry()
        .register(&mut stop, STOP, Interest::READABLE)
        .context("register stop")?;
    poll.registry()
        .register(&mut efd, Token(1), Interest::READABLE)
        .context("register")?;
    let writers = writer_jobs(ctx, &efd, nw, per, 1)?;
    let watch = Watch::one(watched.as_fd(), 1, "mio poller");
    let release = || drop(stop_w.add(1));
    let w = &watch;
    let mut rng = ctx.rng(stream(2, 0));
    let poller: Job<'_> = Box::new(move || {
        let mut tally = Tally::default();
        let mut events = Events::with_capacity(8);
        let mut token = 1usize;
        let mut churns = 0u64;
        while poll_once(ctx, w, 0, &mut poll, &mut events)? {
            for ev in events.iter().filter(|ev| ev.token() != STOP) {
                ensure!(
                    ev.token() == Token(token),
                    "S10: event for token {} after churn #{churns}, current token is {token}",
                    ev.token().0
                );
                woke(ctx, w, 0, &efd, &mut tally)?;
            }
            match rng.below(8) {
                0 => {
                    token = token % 1_000_000 + 1;
                    churns += 1;
                    poll.registry()
                        .reregister(&mut efd, Token(token), Interest::READABLE)
                        .context("reregister")?;
                }
                1 => {
                    // Deregister: no event may arrive while out, even as
                    // writes land; then register under a new token.
                    churns += 1;
                    poll.registry().deregister(&mut efd).context("deregister")?;
                    for _ in 0..2 {
                        poll.poll(&mut events, Some(Duration::ZERO))
                            .context("S10: mio poll")?;
                        if let Some(ev) = events.iter().find(|e| e.token() != STOP) {
                            bail!(
                                "S10: event for deregistered token {} (churn #{churns})",
                                ev.token().0
                            );
                        }
                        thread::sleep(Duration::from_micros(rng.below(50)));
                    }
                    token = token % 1_000_000 + 1;
                    poll.registry()
                        .register(&mut efd, Token(token), Interest::READABLE)
                        .context("register again")?;
                }
                _ => {}
            }
        }
        Ok(tally)
    });
    run_threads(ctx, &watch, &release, vec![poller], writers)
}
