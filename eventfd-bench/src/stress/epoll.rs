//! Raw epoll scenarios: S1, S2, S4, S5, S6, S7.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

use super::{drain, run_threads, timeout_ms, writer_jobs, Ctx, Job, Rng, Tally, Watch};
use async_eventfd::EventFd;

/// The token of the data eventfd (of fd `i`: `DATA + i`).
const DATA: u64 = 1;
/// The token of the stop eventfd: registered level-triggered and never read,
/// so once written it wakes every waiter of the epfd.
const STOP: u64 = u64::MAX;

fn epoll_with(ctx: &Ctx, fds: &[(BorrowedFd<'_>, EpollFlags, u64)]) -> Option<Epoll> {
    let ep = ctx.ok(
        Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(io::Error::from),
        "epoll_create1",
    )?;
    for (fd, flags, token) in fds {
        ctx.ok(
            ep.add(fd, EpollEvent::new(*flags, *token))
                .map_err(io::Error::from),
            "epoll_ctl(ADD)",
        )?;
    }
    Some(ep)
}

/// An epoll instance watching `efd` with `flags` (token `DATA`) and the
/// scenario's stop fd, level-triggered (token `STOP`).
fn epoll_on(ctx: &Ctx, efd: &EventFd, flags: EpollFlags, stop: &EventFd) -> Option<Epoll> {
    epoll_with(
        ctx,
        &[
            (efd.as_fd(), flags, DATA),
            (stop.as_fd(), EpollFlags::EPOLLIN, STOP),
        ],
    )
}

/// A fresh data eventfd and stop eventfd, and an [`epoll_on`] instance
/// watching both (the data fd with `flags`).
pub(super) fn epoll_scenario(ctx: &Ctx, flags: EpollFlags) -> Option<(EventFd, EventFd, Epoll)> {
    let efd = ctx.ok(EventFd::new(), "eventfd")?;
    let stop = ctx.ok(EventFd::new(), "stop eventfd")?;
    let ep = epoll_on(ctx, &efd, flags, &stop)?;
    Some((efd, stop, ep))
}

/// Waits on `ep` (no short timeout: the watchdog judges liveness). Returns
/// the number of events, or `None` when the waiter should exit.
fn wait(
    ctx: &Ctx,
    watch: &Watch<'_>,
    waiter: usize,
    ep: &Epoll,
    events: &mut [EpollEvent],
) -> Option<usize> {
    loop {
        watch.sleep(waiter);
        let res = ep.wait(events, timeout_ms(ctx.backstop()));
        watch.wake(waiter);
        match res {
            Err(Errno::EINTR) => {}
            Err(e) => {
                ctx.fail(format!("{}: epoll_wait: {e}", ctx.id()));
                return None;
            }
            Ok(n) => {
                if ctx.stopped() {
                    return None;
                }
                if n > 0 {
                    return Some(n);
                }
            }
        }
    }
}

/// A reader thread: waits on `ep`, drains `efd` on each data event.
pub(super) fn reader(
    ctx: &Ctx,
    watch: &Watch<'_>,
    waiter: usize,
    ep: &Epoll,
    efd: &EventFd,
) -> Tally {
    let mut tally = Tally::default();
    let mut events = [EpollEvent::empty(); 4];
    while let Some(n) = wait(ctx, watch, waiter, ep, &mut events) {
        for ev in &events[..n] {
            if ev.data() == DATA {
                tally.wake();
                if !drain(ctx, watch, 0, efd, &mut tally) {
                    tally.spurious();
                }
            }
        }
    }
    tally
}

/// `epoll_wait(0)` on `ep`: whether it reports `token`.
fn reports(ctx: &Ctx, ep: &Epoll, token: u64, timeout: EpollTimeout) -> Option<bool> {
    let mut events = [EpollEvent::empty(); 8];
    loop {
        match ep.wait(&mut events, timeout) {
            Err(Errno::EINTR) => {}
            Err(e) => {
                ctx.fail(format!("{}: epoll_wait: {e}", ctx.id()));
                return None;
            }
            Ok(n) => return Some(events[..n].iter().any(|e| e.data() == token)),
        }
    }
}

pub(super) fn s1(ctx: &Ctx) {
    let per = 20_000 * ctx.scale();
    let (nw, nr) = (ctx.threads(4), ctx.threads(4));
    let Some((efd, stop, ep)) = epoll_scenario(ctx, EpollFlags::EPOLLIN) else {
        return;
    };
    let watch = Watch::one(efd.as_fd(), nr, "reader");
    let release = || drop(stop.add(1));
    let (w, e, p) = (&watch, &efd, &ep);
    let readers: Vec<Job<'_>> = (0..nr)
        .map(|i| Box::new(move || reader(ctx, w, i, p, e)) as Job<'_>)
        .collect();
    let writers = writer_jobs(ctx, &efd, nw, per, 1);
    run_threads(ctx, &watch, &release, readers, writers);
    if ctx.failed() {
        return;
    }
    // Quiescent: after draining, epoll_wait(0) reports nothing; and one
    // reader alone sees each add, drains it, and then nothing.
    let mut tally = Tally::default();
    for round in 0..2000 * ctx.scale() {
        if reports(ctx, &ep, DATA, EpollTimeout::ZERO) != Some(false) {
            ctx.fail(format!(
                "S1: after draining (round {round}), epoll_wait(0) still reports the eventfd \
                 (count left {})",
                super::count_left(efd.as_fd())
            ));
            break;
        }
        if ctx.ok(efd.add(1), "add").is_none() {
            break;
        }
        tally.add(1);
        if reports(ctx, &ep, DATA, timeout_ms(ctx.t())) != Some(true) {
            ctx.fail(format!(
                "S1: a lone add was not reported within {:?}",
                ctx.t()
            ));
            break;
        }
        tally.wake();
        if !drain(ctx, &watch, 0, &efd, &mut tally) {
            tally.spurious();
        }
    }
    ctx.merge(&tally);
}

pub(super) fn s2(ctx: &Ctx) {
    let rounds = 20_000 * ctx.scale();
    let Some(efd) = ctx.ok(EventFd::new(), "eventfd") else {
        return;
    };
    let Some(ack) = ctx.ok(EventFd::new(), "ack eventfd") else {
        return;
    };
    let Some(stop) = ctx.ok(EventFd::new(), "stop eventfd") else {
        return;
    };
    let et = EpollFlags::EPOLLIN | EpollFlags::EPOLLET;
    let Some(ep) = epoll_on(ctx, &efd, et, &stop) else {
        return;
    };
    let Some(ack_ep) = epoll_on(ctx, &ack, et, &stop) else {
        return;
    };
    let watch = Watch::new(
        vec![
            (efd.as_fd(), "the eventfd".to_string()),
            (ack.as_fd(), "the ack eventfd".to_string()),
        ],
        vec![
            "reader".to_string(),
            "writer (waiting for its ack)".to_string(),
        ],
    );
    // ns since the epoch of the current round's add.
    let sent = AtomicU64::new(0);
    let release = || drop(stop.add(1));
    let (w, sent, efd, ack) = (&watch, &sent, &efd, &ack);
    let (ep, ack_ep) = (&ep, &ack_ep);
    // Reader: phase 1, one edge and one read of exactly 1 per round, then
    // ack. Phase 2: an edge, no read, a second edge, then a read of 2.
    let reader: Job<'_> = Box::new(move || {
        let mut tally = Tally::default();
        let mut events = [EpollEvent::empty(); 4];
        for round in 0..rounds * 2 {
            let Some(n) = wait(ctx, w, 0, ep, &mut events) else {
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
            if phase2 && !second_edge {
                // First edge of a pair: do not read; ask for the second write.
            } else {
                let want = if phase2 { 2 } else { 1 };
                match efd.read() {
                    Ok(v) => {
                        tally.read(v);
                        w.progress(0);
                        if v != want {
                            ctx.fail(format!(
                                "S2: round {round}: read {v}, expected {want} (an edge \
                                 went missing or a count was left)"
                            ));
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        tally.spurious();
                        ctx.fail(format!("S2: round {round}: an edge with nothing to read"));
                        break;
                    }
                    Err(e) => {
                        ctx.fail(format!("S2: read: {e}"));
                        break;
                    }
                }
            }
            if ctx.ok(ack.add(1), "ack").is_none() {
                break;
            }
        }
        tally
    });
    let writer: Job<'_> = Box::new(move || {
        let mut tally = Tally::default();
        let mut events = [EpollEvent::empty(); 4];
        for _ in 0..rounds * 2 {
            sent.store(ctx.now_ns(), Ordering::SeqCst);
            if ctx.ok(efd.add(1), "add").is_none() {
                break;
            }
            tally.add(1);
            // Wait for the ack through edge-triggered epoll too.
            let Some(_) = wait(ctx, w, 1, ack_ep, &mut events) else {
                break;
            };
            match ack.read() {
                Ok(1) => w.progress(1),
                Ok(v) => {
                    ctx.fail(format!("S2: ack read {v}, expected 1"));
                    break;
                }
                Err(e) => {
                    ctx.fail(format!("S2: ack read: {e}"));
                    break;
                }
            }
        }
        tally
    });
    run_threads(ctx, &watch, &release, vec![reader], vec![writer]);
    let t = ctx.totals();
    if t.spurious != 0 && !ctx.failed() {
        ctx.fail(format!(
            "S2: {} spurious wakeups for a single reader",
            t.spurious
        ));
    }
}

pub(super) fn s4(ctx: &Ctx) {
    let per = 15_000 * ctx.scale();
    let (nw, nr) = (ctx.threads(2), ctx.threads(2));
    let oneshot = EpollFlags::EPOLLIN | EpollFlags::EPOLLONESHOT;
    let Some((efd, stop, ep)) = epoll_scenario(ctx, oneshot) else {
        return;
    };
    let watch = Watch::one(efd.as_fd(), nr, "waiter");
    let release = || drop(stop.add(1));
    let (w, e, p) = (&watch, &efd, &ep);
    let waiters: Vec<Job<'_>> = (0..nr)
        .map(|i| {
            Box::new(move || {
                let mut tally = Tally::default();
                let mut rng = Rng::new(100 + i as u64);
                let mut events = [EpollEvent::empty(); 4];
                while let Some(n) = wait(ctx, w, i, p, &mut events) {
                    if !events[..n].iter().any(|ev| ev.data() == DATA) {
                        continue;
                    }
                    tally.wake();
                    if !drain(ctx, w, 0, e, &mut tally) {
                        tally.spurious();
                    }
                    // Let writes land between the drain and the re-arm.
                    rng.jitter();
                    let mut ev = EpollEvent::new(oneshot, DATA);
                    if ctx
                        .ok(
                            p.modify(e, &mut ev).map_err(io::Error::from),
                            "EPOLL_CTL_MOD",
                        )
                        .is_none()
                    {
                        break;
                    }
                }
                tally
            }) as Job<'_>
        })
        .collect();
    let writers = writer_jobs(ctx, &efd, nw, per, 1);
    run_threads(ctx, &watch, &release, waiters, writers);
    if ctx.failed() {
        return;
    }
    // Deterministic: a write between the drain and the re-arm must be
    // reported at once by the re-arm.
    let mut tally = Tally::default();
    let mut ev = EpollEvent::new(oneshot, DATA);
    for round in 0..3000 * ctx.scale() {
        // Re-arm (the last event, if any, disarmed it), add, see it, drain.
        if ctx
            .ok(
                ep.modify(&efd, &mut ev).map_err(io::Error::from),
                "EPOLL_CTL_MOD",
            )
            .is_none()
            || ctx.ok(efd.add(1), "add").is_none()
        {
            break;
        }
        tally.add(1);
        if reports(ctx, &ep, DATA, timeout_ms(ctx.t())) != Some(true) {
            ctx.fail(format!("S4: round {round}: an armed ONESHOT missed an add"));
            break;
        }
        tally.wake();
        drain(ctx, &watch, 0, &efd, &mut tally);
        // Disarmed now. A write lands before the re-arm...
        if ctx.ok(efd.add(1), "add").is_none() {
            break;
        }
        tally.add(1);
        if reports(ctx, &ep, DATA, EpollTimeout::ZERO) != Some(false) {
            ctx.fail(format!(
                "S4: round {round}: a disarmed ONESHOT reported an event"
            ));
            break;
        }
        // ...so the re-arm must report at once.
        if ctx
            .ok(
                ep.modify(&efd, &mut ev).map_err(io::Error::from),
                "EPOLL_CTL_MOD",
            )
            .is_none()
        {
            break;
        }
        if reports(ctx, &ep, DATA, EpollTimeout::ZERO) != Some(true) {
            ctx.fail(format!(
                "S4: round {round}: re-arm with count {} did not report at once",
                super::count_left(efd.as_fd())
            ));
            break;
        }
        tally.wake();
        drain(ctx, &watch, 0, &efd, &mut tally);
    }
    ctx.merge(&tally);
}

pub(super) fn s5(ctx: &Ctx) {
    let per = 20_000 * ctx.scale();
    let (nw, nr) = (ctx.threads(2), ctx.threads(4));
    let Some(efd) = ctx.ok(EventFd::new(), "eventfd") else {
        return;
    };
    let Some(stop) = ctx.ok(EventFd::new(), "stop eventfd") else {
        return;
    };
    let exclusive = EpollFlags::EPOLLIN | EpollFlags::EPOLLEXCLUSIVE;
    let mut eps = Vec::new();
    for _ in 0..nr {
        let Some(ep) = epoll_on(ctx, &efd, exclusive, &stop) else {
            return;
        };
        eps.push(ep);
    }
    let watch = Watch::one(efd.as_fd(), nr, "exclusive waiter");
    let release = || drop(stop.add(1));
    let (w, e) = (&watch, &efd);
    let waiters: Vec<Job<'_>> = eps
        .iter()
        .enumerate()
        .map(|(i, ep)| Box::new(move || reader(ctx, w, i, ep, e)) as Job<'_>)
        .collect();
    let writers = writer_jobs(ctx, &efd, nw, per, 1);
    run_threads(ctx, &watch, &release, waiters, writers);
}

pub(super) fn s6(ctx: &Ctx) {
    const FDS: usize = 10;
    let rounds = 3000 * ctx.scale();
    let nt = ctx.threads(FDS).max(FDS);
    let mut fds = Vec::new();
    for _ in 0..FDS {
        let Some(efd) = ctx.ok(EventFd::new(), "eventfd") else {
            return;
        };
        fds.push(efd);
    }
    let Some(stop) = ctx.ok(EventFd::new(), "stop eventfd") else {
        return;
    };
    let et = EpollFlags::EPOLLIN | EpollFlags::EPOLLET;
    let mut regs: Vec<(BorrowedFd<'_>, EpollFlags, u64)> = fds
        .iter()
        .enumerate()
        .map(|(i, f)| (f.as_fd(), et, DATA + i as u64))
        .collect();
    regs.push((stop.as_fd(), EpollFlags::EPOLLIN, STOP));
    let Some(ep) = epoll_with(ctx, &regs) else {
        return;
    };
    let watch = Watch::new(
        fds.iter()
            .enumerate()
            .map(|(i, f)| (f.as_fd(), format!("eventfd {i}")))
            .collect(),
        (0..nt).map(|i| format!("sleeper {i}")).collect(),
    );
    let release = || drop(stop.add(1));
    let (w, p, f) = (&watch, &ep, &fds);
    let sleepers: Vec<Job<'_>> = (0..nt)
        .map(|i| {
            Box::new(move || {
                let mut tally = Tally::default();
                let mut events = [EpollEvent::empty(); 1];
                while let Some(_n) = wait(ctx, w, i, p, &mut events) {
                    let token = events[0].data();
                    if token == STOP {
                        continue;
                    }
                    let idx = (token - DATA) as usize;
                    tally.wake();
                    match f[idx].read() {
                        Ok(v) => {
                            tally.read(v);
                            ctx.stamp_read(&mut tally);
                            w.progress(idx);
                            ctx.live.fetch_add(v, Ordering::SeqCst);
                            if v != 1 {
                                ctx.fail(format!(
                                    "S6: eventfd {idx} read {v}, expected 1 per round"
                                ));
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => tally.spurious(),
                        Err(e) => ctx.fail(format!("S6: read: {e}")),
                    }
                }
                tally
            }) as Job<'_>
        })
        .collect();
    // The driver: each round adds 1 to every fd at once, then waits until
    // all ten were read.
    let driver: Job<'_> = Box::new(move || {
        let mut tally = Tally::default();
        for round in 1..=rounds {
            ctx.stamp_add();
            for efd in f {
                if ctx.ok(efd.add(1), "add").is_none() {
                    break;
                }
                tally.add(1);
            }
            if !ctx.wait_live(round * FDS as u64) {
                break;
            }
        }
        tally
    });
    run_threads(ctx, &watch, &release, sleepers, vec![driver]);
}

pub(super) fn s7(ctx: &Ctx) {
    let rounds = 1000 * ctx.scale();
    let nr = ctx.threads(2);
    let Some((efd, stop, ep)) = epoll_scenario(ctx, EpollFlags::EPOLLIN) else {
        return;
    };
    let watch = Watch::one(efd.as_fd(), nr, "waiter");
    let release = || drop(stop.add(1));
    // When a waiter last entered epoll_wait (ns since the epoch) and with
    // which timeout (µs); how many waits timed out.
    let (armed, armed_timeout, timeouts) =
        (&AtomicU64::new(0), &AtomicU64::new(0), &AtomicU64::new(0));
    let (w, p, e) = (&watch, &ep, &efd);
    let waiters: Vec<Job<'_>> = (0..nr)
        .map(|i| {
            Box::new(move || {
                let mut tally = Tally::default();
                let mut rng = Rng::new(700 + i as u64);
                let mut events = [EpollEvent::empty(); 4];
                while !ctx.stopped() {
                    let t_us = 1000 + rng.below(2000);
                    armed_timeout.store(t_us, Ordering::SeqCst);
                    armed.store(ctx.now_ns(), Ordering::SeqCst);
                    w.sleep(i);
                    let res = p.wait(&mut events, timeout_ms(Duration::from_micros(t_us)));
                    w.wake(i);
                    let n = match res {
                        Ok(n) => n,
                        Err(Errno::EINTR) => continue,
                        Err(err) => {
                            ctx.fail(format!("S7: epoll_wait: {err}"));
                            break;
                        }
                    };
                    if n == 0 {
                        timeouts.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    if events[..n].iter().any(|ev| ev.data() == DATA) {
                        tally.wake();
                        if !drain(ctx, w, 0, e, &mut tally) {
                            tally.spurious();
                        }
                    }
                }
                tally
            }) as Job<'_>
        })
        .collect();
    let writer: Job<'_> = Box::new(move || {
        let mut tally = Tally::default();
        let mut rng = Rng::new(7);
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
            if ctx.ok(e.add(1), "add").is_none() {
                break;
            }
            tally.add(1);
            if !ctx.wait_live(round) {
                break;
            }
        }
        tally
    });
    run_threads(ctx, &watch, &release, waiters, vec![writer]);
    // The writes aim at the waits' deadlines: if no wait ever timed out,
    // no write landed at the boundary and the round tested nothing.
    if timeouts.load(Ordering::Relaxed) == 0 && !ctx.failed() {
        ctx.fail(format!(
            "S7: no epoll_wait timed out in {rounds} rounds, so no write met a timeout \
             boundary"
        ));
    }
}
