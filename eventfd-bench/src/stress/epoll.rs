//! Raw epoll scenarios: S1, S2, S4, S5, S6, S7.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

use super::ctx::{bail, ensure, Context, Ctx, Step, Tally};
use super::threads::{
    jitter, jobs, numbered, read_once, rounds, run_threads, stream, timeout_ms, woke, writer_jobs,
    Job,
};
use super::watchdog::{count_left, Watch};
use async_eventfd::EventFd;

/// The token of the data eventfd (of fd `i`: `DATA + i`).
const DATA: u64 = 1;
/// The token of the stop eventfd: registered level-triggered and never read,
/// so once written it wakes every waiter of the epfd.
const STOP: u64 = u64::MAX;

fn epoll_with(fds: &[(BorrowedFd<'_>, EpollFlags, u64)]) -> Step<Epoll> {
    let ep = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).context("epoll_create1")?;
    for (fd, flags, token) in fds {
        ep.add(fd, EpollEvent::new(*flags, *token))
            .context("epoll_ctl(ADD)")?;
    }
    Ok(ep)
}

/// An epoll instance watching `efd` with `flags` (token `DATA`) and `stop`.
fn epoll_on(efd: &EventFd, flags: EpollFlags, stop: &EventFd) -> Step<Epoll> {
    epoll_with(&[
        (efd.as_fd(), flags, DATA),
        (stop.as_fd(), EpollFlags::EPOLLIN, STOP),
    ])
}

/// A fresh data eventfd and stop eventfd, and an [`epoll_on`] on both.
pub(super) fn epoll_scenario(flags: EpollFlags) -> Step<(EventFd, EventFd, Epoll)> {
    let efd = EventFd::new().context("eventfd")?;
    let stop = EventFd::new().context("stop eventfd")?;
    let ep = epoll_on(&efd, flags, &stop)?;
    Ok((efd, stop, ep))
}

/// Waits on `ep` (no short timeout: the watchdog judges liveness). Returns
/// the number of events, or `None` when the waiter should exit.
fn wait(
    ctx: &Ctx,
    watch: &Watch<'_>,
    waiter: usize,
    ep: &Epoll,
    events: &mut [EpollEvent],
) -> Step<Option<usize>> {
    loop {
        watch.sleep(waiter);
        let res = ep.wait(events, timeout_ms(ctx.backstop()));
        watch.wake(waiter);
        match res {
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e).context("epoll_wait"),
            Ok(_) if ctx.stopped() => return Ok(None),
            Ok(0) => {}
            Ok(n) => return Ok(Some(n)),
        }
    }
}

/// A reader thread: waits on `ep`, drains `efd` on each data event, then
/// calls `after`.
pub(super) fn reader(
    ctx: &Ctx,
    watch: &Watch<'_>,
    waiter: usize,
    (ep, efd): (&Epoll, &EventFd),
    mut after: impl FnMut() -> Step,
) -> Step<Tally> {
    let mut tally = Tally::default();
    let mut events = [EpollEvent::empty(); 4];
    while let Some(n) = wait(ctx, watch, waiter, ep, &mut events)? {
        for ev in &events[..n] {
            if ev.data() == DATA {
                woke(ctx, watch, 0, efd, &mut tally)?;
                after()?;
            }
        }
    }
    Ok(tally)
}

/// `epoll_wait` on `ep`: whether it reports `token`.
fn reports(ep: &Epoll, token: u64, timeout: EpollTimeout) -> Step<bool> {
    let mut events = [EpollEvent::empty(); 8];
    loop {
        match ep.wait(&mut events, timeout) {
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e).context("epoll_wait"),
            Ok(n) => return Ok(events[..n].iter().any(|e| e.data() == token)),
        }
    }
}

/// Re-arms a `EPOLLONESHOT` registration of `efd` on `ep`.
fn rearm(ep: &Epoll, efd: &EventFd, flags: EpollFlags) -> Step {
    let mut ev = EpollEvent::new(flags, DATA);
    ep.modify(efd, &mut ev).context("EPOLL_CTL_MOD")
}

/// S1: reader threads share one level-triggered epfd while writers add 1.
pub(super) fn level_triggered_epoll(ctx: &Arc<Ctx>) -> Step {
    let per = 20_000 * ctx.scale();
    let (nw, nr) = (ctx.threads(4), ctx.threads(4));
    let (efd, stop, ep) = epoll_scenario(EpollFlags::EPOLLIN)?;
    let watch = Watch::one(efd.as_fd(), nr, "reader");
    let release = || drop(stop.add(1));
    let (w, e, p) = (&watch, &efd, &ep);
    let readers = jobs(nr, |i| {
        Box::new(move || reader(ctx, w, i, (p, e), || Ok(())))
    });
    let writers = writer_jobs(ctx, &efd, nw, per, 1)?;
    run_threads(ctx, &watch, &release, readers, writers)?;
    // Quiescent: after draining, epoll_wait(0) reports nothing; and one
    // reader alone sees each add, drains it, and then nothing.
    rounds(ctx, 2000 * ctx.scale(), |tally, round| {
        ensure!(
            !reports(&ep, DATA, EpollTimeout::ZERO)?,
            "S1: after draining (round {round}), epoll_wait(0) still reports the eventfd \
             (count left {})",
            count_left(efd.as_fd())
        );
        efd.add(1).context("add")?;
        tally.add(1);
        ensure!(
            reports(&ep, DATA, timeout_ms(ctx.liveness()))?,
            "S1: a lone add was not reported within {:?}",
            ctx.liveness()
        );
        woke(ctx, &watch, 0, &efd, tally)
    })
}

/// S2: a ping-pong through edge-triggered epoll (the writer waits for an
/// ack), then pairs of writes with no read between: one edge per write.
pub(super) fn edge_triggered_epoll(ctx: &Arc<Ctx>) -> Step {
    let rounds = 20_000 * ctx.scale();
    let et = EpollFlags::EPOLLIN | EpollFlags::EPOLLET;
    let (efd, stop, ep) = epoll_scenario(et)?;
    let ack = EventFd::new().context("ack eventfd")?;
    let ack_ep = epoll_on(&ack, et, &stop)?;
    let fds = [
        (efd.as_fd(), "the eventfd"),
        (ack.as_fd(), "the ack eventfd"),
    ];
    let waiters = ["reader", "writer (waiting for its ack)"];
    let watch = Watch::new(
        fds.map(|(fd, name)| (fd, name.to_string())).to_vec(),
        waiters.map(String::from).to_vec(),
    );
    // ns since the epoch of the current round's add.
    let sent = AtomicU64::new(0);
    let release = || drop(stop.add(1));
    let (w, sent, efd, ack, ep, ack_ep) = (&watch, &sent, &efd, &ack, &ep, &ack_ep);
    // Reader: phase 1, one edge and one read of exactly 1 per round, then
    // ack. Phase 2: an edge, no read, a second edge, then a read of 2.
    let reader: Job<'_> = Box::new(move || {
        let mut tally = Tally::default();
        let mut events = [EpollEvent::empty(); 4];
        for round in 0..rounds * 2 {
            let Some(n) = wait(ctx, w, 0, ep, &mut events)? else {
                break;
            };
            if !events[..n].iter().any(|e| e.data() == DATA) {
                continue;
            }
            tally.wake();
            tally.waited(Duration::from_nanos(
                ctx.now_ns().saturating_sub(sent.load(Ordering::SeqCst)),
            ));
            let phase2 = round >= rounds;
            let second_edge = phase2 && (round - rounds) % 2 == 1;
            // The first edge of a pair is not read: it asks for the second.
            if !phase2 || second_edge {
                let want = if phase2 { 2 } else { 1 };
                let v = match efd.read() {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        bail!("S2: round {round}: an edge with nothing to read")
                    }
                    res => res.context("read")?,
                };
                tally.read(v);
                w.progress(0);
                ensure!(
                    v == want,
                    "S2: round {round}: read {v}, expected {want} (an edge went missing or \
                     a count was left)"
                );
            }
            ack.add(1).context("ack")?;
        }
        Ok(tally)
    });
    let writer: Job<'_> = Box::new(move || {
        let mut tally = Tally::default();
        let mut events = [EpollEvent::empty(); 4];
        for _ in 0..rounds * 2 {
            sent.store(ctx.now_ns(), Ordering::SeqCst);
            efd.add(1).context("add")?;
            tally.add(1);
            if wait(ctx, w, 1, ack_ep, &mut events)?.is_none() {
                break;
            }
            let v = ack.read().context("ack read")?;
            ensure!(v == 1, "S2: ack read {v}, expected 1");
            w.progress(1);
        }
        Ok(tally)
    });
    run_threads(ctx, &watch, &release, vec![reader], vec![writer])
}

/// S4: `EPOLLONESHOT` waiters drain and re-arm while writers add; then, one
/// write at a time, a re-arm with a count pending must report at once.
pub(super) fn epoll_oneshot_rearm(ctx: &Arc<Ctx>) -> Step {
    let per = 15_000 * ctx.scale();
    let (nw, nr) = (ctx.threads(2), ctx.threads(2));
    let oneshot = EpollFlags::EPOLLIN | EpollFlags::EPOLLONESHOT;
    let (efd, stop, ep) = epoll_scenario(oneshot)?;
    let watch = Watch::one(efd.as_fd(), nr, "waiter");
    let release = || drop(stop.add(1));
    let (w, e, p) = (&watch, &efd, &ep);
    let waiters = jobs(nr, |i| {
        let mut rng = ctx.rng(stream(2, i));
        // Let writes land between the drain and the re-arm.
        let after = move || {
            jitter(&mut rng);
            rearm(p, e, oneshot)
        };
        Box::new(move || reader(ctx, w, i, (p, e), after))
    });
    let writers = writer_jobs(ctx, &efd, nw, per, 1)?;
    run_threads(ctx, &watch, &release, waiters, writers)?;
    rounds(ctx, 3000 * ctx.scale(), |tally, round| {
        // Re-arm (the last event, if any, disarmed it), add, see it, drain.
        rearm(&ep, &efd, oneshot)?;
        efd.add(1).context("add")?;
        tally.add(1);
        ensure!(
            reports(&ep, DATA, timeout_ms(ctx.liveness()))?,
            "S4: round {round}: an armed ONESHOT missed an add"
        );
        woke(ctx, &watch, 0, &efd, tally)?;
        // Disarmed now. A write lands before the re-arm...
        efd.add(1).context("add")?;
        tally.add(1);
        ensure!(
            !reports(&ep, DATA, EpollTimeout::ZERO)?,
            "S4: round {round}: a disarmed ONESHOT reported an event"
        );
        // ...so the re-arm must report at once.
        rearm(&ep, &efd, oneshot)?;
        ensure!(
            reports(&ep, DATA, EpollTimeout::ZERO)?,
            "S4: round {round}: re-arm with count {} did not report at once",
            count_left(efd.as_fd())
        );
        woke(ctx, &watch, 0, &efd, tally)
    })
}

/// S5: `EPOLLEXCLUSIVE` waiters, each with its own epoll instance on the
/// same eventfd.
pub(super) fn epoll_exclusive(ctx: &Arc<Ctx>) -> Step {
    let per = 20_000 * ctx.scale();
    let (nw, nr) = (ctx.threads(2), ctx.threads(4));
    let efd = EventFd::new().context("eventfd")?;
    let stop = EventFd::new().context("stop eventfd")?;
    let exclusive = EpollFlags::EPOLLIN | EpollFlags::EPOLLEXCLUSIVE;
    let eps = (0..nr)
        .map(|_| epoll_on(&efd, exclusive, &stop))
        .collect::<Step<Vec<_>>>()?;
    let watch = Watch::one(efd.as_fd(), nr, "exclusive waiter");
    let release = || drop(stop.add(1));
    let (w, e, eps) = (&watch, &efd, &eps);
    let waiters = jobs(nr, |i| {
        Box::new(move || reader(ctx, w, i, (&eps[i], e), || Ok(())))
    });
    let writers = writer_jobs(ctx, &efd, nw, per, 1)?;
    run_threads(ctx, &watch, &release, waiters, writers)
}

/// S6: ten edge-triggered eventfds on one epfd, ten sleepers with
/// `maxevents = 1`, all fds written at once every round.
pub(super) fn many_fds_many_sleepers(ctx: &Arc<Ctx>) -> Step {
    const FDS: usize = 10;
    let rounds = 3000 * ctx.scale();
    let nt = ctx.threads(FDS).max(FDS);
    let fds = (0..FDS)
        .map(|_| EventFd::new().context("eventfd"))
        .collect::<Step<Vec<_>>>()?;
    let stop = EventFd::new().context("stop eventfd")?;
    let et = EpollFlags::EPOLLIN | EpollFlags::EPOLLET;
    let mut regs: Vec<_> = (DATA..)
        .zip(&fds)
        .map(|(t, f)| (f.as_fd(), et, t))
        .collect();
    regs.push((stop.as_fd(), EpollFlags::EPOLLIN, STOP));
    let ep = epoll_with(&regs)?;
    let names = (0..nt).map(|i| format!("sleeper {i}")).collect();
    let watch = Watch::new(numbered(&fds), names);
    let release = || drop(stop.add(1));
    let (w, p, f) = (&watch, &ep, &fds);
    let sleepers = jobs(nt, |i| {
        Box::new(move || {
            let mut tally = Tally::default();
            let mut events = [EpollEvent::empty(); 1];
            while wait(ctx, w, i, p, &mut events)?.is_some() {
                let token = events[0].data();
                if token == STOP {
                    continue;
                }
                let idx = (token - DATA) as usize;
                tally.wake();
                let Some(v) = read_once(ctx, &f[idx], &mut tally)? else {
                    tally.spurious();
                    continue;
                };
                w.progress(idx);
                ensure!(v == 1, "S6: eventfd {idx} read {v}, expected 1 per round");
            }
            Ok(tally)
        })
    });
    let driver: Job<'_> = Box::new(move || {
        let mut tally = Tally::default();
        for round in 1..=rounds {
            ctx.stamp_add();
            for efd in f {
                efd.add(1).context("add")?;
                tally.add(1);
            }
            if !ctx.wait_live(round * FDS as u64) {
                break;
            }
        }
        Ok(tally)
    });
    run_threads(ctx, &watch, &release, sleepers, vec![driver])
}

/// S7: a writer aims each add at the deadline of a waiter's
/// `epoll_wait` timeout (1-3 ms, random).
pub(super) fn timeout_boundary(ctx: &Arc<Ctx>) -> Step {
    let rounds = 1000 * ctx.scale();
    let nr = ctx.threads(2);
    let (efd, stop, ep) = epoll_scenario(EpollFlags::EPOLLIN)?;
    let watch = Watch::one(efd.as_fd(), nr, "waiter");
    let release = || drop(stop.add(1));
    // When a waiter last entered epoll_wait (ns since the epoch) and with
    // which timeout (µs); how many waits timed out.
    let (armed, armed_timeout, timeouts) =
        (&AtomicU64::new(0), &AtomicU64::new(0), &AtomicU64::new(0));
    let (w, p, e) = (&watch, &ep, &efd);
    let waiters = jobs(nr, |i| {
        let mut rng = ctx.rng(stream(2, i));
        Box::new(move || {
            let mut tally = Tally::default();
            let mut events = [EpollEvent::empty(); 4];
            while !ctx.stopped() {
                let t_us = 1000 + rng.below(2000);
                armed_timeout.store(t_us, Ordering::SeqCst);
                armed.store(ctx.now_ns(), Ordering::SeqCst);
                w.sleep(i);
                let res = p.wait(&mut events, timeout_ms(Duration::from_micros(t_us)));
                w.wake(i);
                let n = match res {
                    Err(Errno::EINTR) => continue,
                    res => res.context("epoll_wait")?,
                };
                if n == 0 {
                    timeouts.fetch_add(1, Ordering::Relaxed);
                } else if events[..n].iter().any(|ev| ev.data() == DATA) {
                    woke(ctx, w, 0, e, &mut tally)?;
                }
            }
            Ok(tally)
        })
    });
    let mut rng = ctx.rng(stream(3, 0));
    let writer: Job<'_> = Box::new(move || {
        let mut tally = Tally::default();
        for round in 1..=rounds {
            // Aim at the current wait's deadline, give or take 300 µs.
            let start = Instant::now();
            let at = armed.load(Ordering::SeqCst)
                + armed_timeout.load(Ordering::SeqCst) * 1000
                + rng.below(600_000);
            let target = at.saturating_sub(300_000);
            while ctx.now_ns() < target && start.elapsed() < Duration::from_millis(10) {
                std::hint::spin_loop();
                thread::yield_now();
            }
            ctx.stamp_add();
            e.add(1).context("add")?;
            tally.add(1);
            if !ctx.wait_live(round) {
                break;
            }
        }
        Ok(tally)
    });
    run_threads(ctx, &watch, &release, waiters, vec![writer])?;
    // The writes aim at the waits' deadlines: if no wait ever timed out,
    // no write landed at the boundary and the round tested nothing.
    ensure!(
        timeouts.load(Ordering::Relaxed) > 0,
        "S7: no epoll_wait timed out in {rounds} rounds, so no write met a timeout boundary"
    );
    Ok(())
}
