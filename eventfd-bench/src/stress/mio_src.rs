//! mio scenarios: S3 (mio half: semaphore mode, edge-triggered Polls) and
//! S10 (`Source` churn).

use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::Duration;

use mio::{Events, Interest, Poll, Token};

use super::{drain, run_threads, writer_jobs, Ctx, Job, Rng, Tally, Watch};
use async_eventfd::EventFd;

const STOP: Token = Token(usize::MAX);

/// A mio poll, with no short timeout (the watchdog judges liveness).
fn poll_once(
    ctx: &Ctx,
    watch: &Watch<'_>,
    waiter: usize,
    poll: &mut Poll,
    events: &mut Events,
) -> bool {
    watch.sleep(waiter);
    let res = poll.poll(events, Some(ctx.backstop()));
    watch.wake(waiter);
    match res {
        Ok(()) => !ctx.stopped(),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => !ctx.stopped(),
        Err(e) => {
            ctx.fail(format!("{}: mio poll: {e}", ctx.id()));
            false
        }
    }
}

/// Reads a semaphore eventfd until `WouldBlock`, failing on any read that
/// is not 1; returns whether anything was read.
fn semaphore_drain(ctx: &Ctx, watch: &Watch<'_>, efd: &EventFd, tally: &mut Tally) -> bool {
    let mut any = false;
    loop {
        match efd.read() {
            Ok(1) => {
                tally.read(1);
                ctx.stamp_read(tally);
                ctx.live.fetch_add(1, Ordering::SeqCst);
                watch.progress(0);
                any = true;
            }
            Ok(v) => {
                tally.read(v);
                ctx.fail(format!("S3 (mio): a semaphore read returned {v}"));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return any,
            Err(e) => {
                ctx.fail(format!("S3 (mio): read: {e}"));
                return any;
            }
        }
    }
}

/// S3, mio half: one semaphore eventfd, M consumers each with its own mio
/// `Poll` (edge-triggered, read-only) on a dup; rounds of one add of N.
pub(super) fn s3(ctx: &Ctx) {
    let n = 200u64;
    let rounds = 100 * ctx.scale();
    let m = ctx.threads(4);
    let Some(efd) = ctx.ok(
        EventFd::builder().semaphore(true).build(),
        "semaphore eventfd",
    ) else {
        return;
    };
    let Some(stop) = ctx.ok(EventFd::new(), "stop eventfd") else {
        return;
    };
    let mut consumers = Vec::new();
    for _ in 0..m {
        let Some(poll) = ctx.ok(Poll::new(), "mio Poll::new") else {
            return;
        };
        let Some(mut dup) = ctx.ok(efd.try_clone(), "try_clone") else {
            return;
        };
        let Some(mut stop_dup) = ctx.ok(stop.try_clone(), "try_clone") else {
            return;
        };
        if ctx
            .ok(
                poll.registry()
                    .register(&mut dup, Token(0), Interest::READABLE),
                "register",
            )
            .is_none()
            || ctx
                .ok(
                    poll.registry()
                        .register(&mut stop_dup, STOP, Interest::READABLE),
                    "register",
                )
                .is_none()
        {
            return;
        }
        consumers.push((poll, dup, stop_dup));
    }
    let watch = Watch::one(efd.as_fd(), m, "mio consumer");
    let release = || drop(stop.add(1));
    let w = &watch;
    let consumers: Vec<Job<'_>> = consumers
        .into_iter()
        .enumerate()
        .map(|(i, (mut poll, dup, _stop_dup))| {
            Box::new(move || {
                let mut tally = Tally::default();
                let mut events = Events::with_capacity(4);
                while poll_once(ctx, w, i, &mut poll, &mut events) {
                    for ev in events.iter() {
                        if ev.token() != Token(0) {
                            continue;
                        }
                        tally.wake();
                        if !semaphore_drain(ctx, w, &dup, &mut tally) {
                            tally.spurious();
                        }
                    }
                }
                tally
            }) as Job<'_>
        })
        .collect();
    let efd = &efd;
    let driver: Job<'_> = Box::new(move || {
        let mut tally = Tally::default();
        for round in 1..=rounds {
            ctx.stamp_add();
            if ctx.ok(efd.add(n), "add(N)").is_none() {
                break;
            }
            tally.add(n);
            if !ctx.wait_live(round * n) {
                break;
            }
        }
        tally
    });
    run_threads(ctx, &watch, &release, consumers, vec![driver]);
    let t = ctx.totals();
    if !ctx.failed() && t.read_calls != t.add_calls * n {
        ctx.fail(format!(
            "S3 (mio): {} reads for {} units added, expected one read per unit",
            t.read_calls, t.added
        ));
    }
}

/// S10: one poller with churn (reregister to a new token, deregister and
/// register again) while writers add.
pub(super) fn s10(ctx: &Ctx) {
    let per = 15_000 * ctx.scale();
    let nw = ctx.threads(2);
    let Some(mut efd) = ctx.ok(EventFd::new(), "eventfd") else {
        return;
    };
    let Some(mut stop) = ctx.ok(EventFd::new(), "stop eventfd") else {
        return;
    };
    let Some(stop_w) = ctx.ok(stop.try_clone(), "try_clone") else {
        return;
    };
    let Some(watched) = ctx.ok(efd.try_clone(), "try_clone") else {
        return;
    };
    let Some(mut poll) = ctx.ok(Poll::new(), "mio Poll::new") else {
        return;
    };
    if ctx
        .ok(
            poll.registry()
                .register(&mut stop, STOP, Interest::READABLE),
            "register stop",
        )
        .is_none()
        || ctx
            .ok(
                poll.registry()
                    .register(&mut efd, Token(1), Interest::READABLE),
                "register",
            )
            .is_none()
    {
        return;
    }
    let writers = writer_jobs(ctx, &efd, nw, per, 1000);
    if ctx.failed() {
        return;
    }
    let watch = Watch::one(watched.as_fd(), 1, "mio poller");
    let release = || drop(stop_w.add(1));
    let w = &watch;
    let poller: Job<'_> = Box::new(move || {
        let mut tally = Tally::default();
        let mut rng = Rng::new(10);
        let mut events = Events::with_capacity(8);
        let mut token = 1usize;
        let mut churns = 0u64;
        while poll_once(ctx, w, 0, &mut poll, &mut events) {
            for ev in events.iter() {
                if ev.token() == STOP {
                    continue;
                }
                if ev.token() != Token(token) {
                    ctx.fail(format!(
                        "S10: event for token {} after churn #{churns}, current token is {token}",
                        ev.token().0
                    ));
                    return tally;
                }
                tally.wake();
                if !drain(ctx, w, 0, &efd, &mut tally) {
                    tally.spurious();
                }
            }
            match rng.below(8) {
                0 => {
                    // Reregister under a new token.
                    token = token % 1_000_000 + 1;
                    churns += 1;
                    let res =
                        poll.registry()
                            .reregister(&mut efd, Token(token), Interest::READABLE);
                    if ctx.ok(res, "reregister").is_none() {
                        return tally;
                    }
                }
                1 => {
                    // Deregister: no event may arrive while out, even as
                    // writes land; then register under a new token.
                    churns += 1;
                    if ctx
                        .ok(poll.registry().deregister(&mut efd), "deregister")
                        .is_none()
                    {
                        return tally;
                    }
                    for _ in 0..2 {
                        if let Err(e) = poll.poll(&mut events, Some(Duration::ZERO)) {
                            ctx.fail(format!("S10: mio poll: {e}"));
                            return tally;
                        }
                        if let Some(ev) = events.iter().find(|e| e.token() != STOP) {
                            ctx.fail(format!(
                                "S10: event for deregistered token {} (churn #{churns})",
                                ev.token().0
                            ));
                            return tally;
                        }
                        thread::sleep(Duration::from_micros(rng.below(50)));
                    }
                    token = token % 1_000_000 + 1;
                    let res = poll
                        .registry()
                        .register(&mut efd, Token(token), Interest::READABLE);
                    if ctx.ok(res, "register again").is_none() {
                        return tally;
                    }
                }
                _ => {}
            }
        }
        tally
    });
    run_threads(ctx, &watch, &release, vec![poller], writers);
}
