//! Plain syscalls: S8 (`poll(2)`), S9 (blocking read/write), S15 (bad input).

use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags};
use nix::sys::epoll::EpollFlags;

use super::ctx::{bail, ensure, lock, Context, Ctx, Step, Tally};
use super::epoll;
use super::threads::{
    jitter, jobs, join, poll_one, read_once, readable, rounds, run_threads, stream, timeout_ms,
    woke, writer_jobs, Job,
};
use super::watchdog::Watch;
use async_eventfd::{EventFd, MAX_COUNT};

/// S8: `poll(2)` readers while writers add; then POLLOUT at `MAX_COUNT`.
pub(super) fn poll_many_readers(ctx: &Arc<Ctx>) -> Step {
    let per = 20_000 * ctx.scale();
    let (nw, nr) = (ctx.threads(2), ctx.threads(4));
    let efd = EventFd::new().context("eventfd")?;
    let stop = EventFd::new().context("stop eventfd")?;
    let watch = Watch::one(efd.as_fd(), nr, "poll reader");
    let release = || drop(stop.add(1));
    let (w, e, st) = (&watch, &efd, &stop);
    let readers = jobs(nr, |i| {
        Box::new(move || {
            let mut tally = Tally::default();
            loop {
                let mut fds = [e.as_fd(), st.as_fd()].map(|fd| PollFd::new(fd, PollFlags::POLLIN));
                w.sleep(i);
                let res = nix::poll::poll(&mut fds, timeout_ms(ctx.backstop()));
                w.wake(i);
                match res {
                    Err(Errno::EINTR) => continue,
                    res => res.context("S8: poll")?,
                };
                if ctx.stopped() {
                    break;
                }
                let revents = fds[0].revents().unwrap_or(PollFlags::empty());
                if revents.contains(PollFlags::POLLIN) {
                    woke(ctx, w, 0, e, &mut tally)?;
                }
            }
            Ok(tally)
        })
    });
    let writers = writer_jobs(ctx, &efd, nw, per, 1)?;
    run_threads(ctx, &watch, &release, readers, writers)?;
    rounds(ctx, 200 * ctx.scale(), |t, round| {
        pollout_at_max(ctx, &efd, t, round)
    })
}

/// One round of S8's second part: POLLOUT is absent at `MAX_COUNT`, and
/// back (waking a waiter) after a read.
fn pollout_at_max(ctx: &Ctx, efd: &EventFd, tally: &mut Tally, round: u64) -> Step {
    efd.add(MAX_COUNT).context("add(MAX_COUNT)")?;
    tally.add(MAX_COUNT);
    let revents = poll_one(efd, PollFlags::POLLIN | PollFlags::POLLOUT, 0)?;
    ensure!(
        revents == PollFlags::POLLIN,
        "S8: round {round}: at MAX_COUNT poll reports {revents:?}, expected POLLIN only"
    );
    match efd.add(1) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        other => bail!("S8: add(1) at MAX_COUNT gave {other:?}, expected WouldBlock"),
    }
    let (read, res) = thread::scope(|s| {
        let waiter = s.spawn(|| {
            let mut fds = [PollFd::new(efd.as_fd(), PollFlags::POLLOUT)];
            nix::poll::poll(&mut fds, timeout_ms(ctx.liveness()))
        });
        thread::sleep(Duration::from_micros(500));
        let read = read_once(ctx, efd, tally);
        (read, waiter.join().unwrap_or(Err(Errno::EIO)))
    });
    match (read?, res) {
        (Some(MAX_COUNT), Ok(1)) => tally.wake(),
        (read, res) => bail!(
            "S8: round {round}: read {read:?} (expected MAX_COUNT), POLLOUT waiter got {res:?} \
             (expected 1 fd ready within {:?})",
            ctx.liveness()
        ),
    }
    Ok(())
}

/// S9: blocking reads and writes under contention; then writers blocked at
/// `MAX_COUNT`, all released by one read.
pub(super) fn blocking_syscalls(ctx: &Arc<Ctx>) -> Step {
    let per = 10_000 * ctx.scale();
    let (nw, nr) = (ctx.threads(4), ctx.threads(4));
    let efd = EventFd::builder()
        .nonblocking(false)
        .build()
        .context("blocking eventfd")?;
    let watch = Watch::one(efd.as_fd(), nr, "blocked reader");
    // The release adds 1 per call (each wakes one blocked reader); those
    // adds are tallied here.
    let released = AtomicU64::new(0);
    let release = || {
        if efd.add(1).is_ok() {
            released.fetch_add(1, Ordering::SeqCst);
        }
    };
    let (w, e) = (&watch, &efd);
    let readers = jobs(nr, |i| {
        Box::new(move || {
            let mut tally = Tally::default();
            while !ctx.stopped() {
                w.sleep(i);
                let res = e.read();
                w.wake(i);
                let v = match res {
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                    res => res.context("S9: blocking read")?,
                };
                tally.wake();
                tally.read(v);
                ctx.stamp_read(&mut tally);
                w.progress(0);
            }
            Ok(tally)
        })
    });
    let writers = writer_jobs(ctx, &efd, nw, per, 1)?;
    let res = run_threads(ctx, &watch, &release, readers, writers);
    let mut tally = Tally::default();
    tally.add_each(released.load(Ordering::SeqCst), 1);
    // What the release added and no reader took.
    if readable(efd.as_fd())? {
        read_once(ctx, &efd, &mut tally)?;
    }
    ctx.merge(&tally);
    res?;
    rounds(ctx, 100 * ctx.scale(), |t, round| {
        writers_at_max(ctx, &efd, t, round)
    })
}

/// One round of S9's second part: three writers blocked at `MAX_COUNT`,
/// released by one read.
fn writers_at_max(ctx: &Ctx, efd: &EventFd, tally: &mut Tally, round: u64) -> Step {
    const WRITERS: u64 = 3;
    efd.add(MAX_COUNT).context("add(MAX_COUNT)")?;
    tally.add(MAX_COUNT);
    let done = AtomicU64::new(0);
    let first = thread::scope(|s| {
        let wd = s.spawn(|| {
            // Watchdog: if the writers are not all back within 2 T after
            // the read, release them by reading, and fail.
            let mut t = Tally::default();
            let start = std::time::Instant::now();
            while done.load(Ordering::SeqCst) < WRITERS {
                if start.elapsed() > ctx.liveness() * 2 && !ctx.failed() {
                    ctx.fail(format!(
                        "S9: round {round}: {} of {WRITERS} writers blocked at MAX_COUNT did \
                         not return within {:?}",
                        WRITERS - done.load(Ordering::SeqCst),
                        ctx.liveness() * 2
                    ));
                }
                if ctx.failed() {
                    if let Ok(v) = efd.read() {
                        t.read(v);
                    }
                }
                thread::sleep(Duration::from_millis(1));
            }
            t
        });
        let handles: Vec<_> = (0..WRITERS)
            .map(|_| {
                s.spawn(|| {
                    let mut t = Tally::default();
                    let res = efd.add(1).context("S9: blocked add(1)");
                    done.fetch_add(1, Ordering::SeqCst);
                    ctx.settle(res.map(|()| {
                        t.add(1);
                        t
                    }))
                })
            })
            .collect();
        thread::sleep(Duration::from_millis(1));
        let first = efd.read();
        for h in handles {
            tally.merge(&join(ctx, h, "S9 blocked writer"));
        }
        tally.merge(&join(ctx, wd, "S9 watchdog"));
        first
    });
    ctx.proceed()?;
    let first = first.context("S9: read at MAX_COUNT")?;
    tally.read(first);
    ensure!(
        first == MAX_COUNT,
        "S9: round {round}: the read at MAX_COUNT returned {first}, not MAX_COUNT"
    );
    let v = efd.read().context("S9: read")?;
    tally.read(v);
    ensure!(
        v == WRITERS,
        "S9: round {round}: after {WRITERS} released writers read {v}, expected {WRITERS}"
    );
    Ok(())
}

/// S15: a thread making bad calls (`u64::MAX` adds, short buffers, adds at
/// `MAX_COUNT`) among writers and a single epoll reader.
pub(super) fn bad_input_under_load(ctx: &Arc<Ctx>) -> Step {
    let per = 15_000 * ctx.scale();
    let nw = ctx.threads(2);
    let (efd, stop, ep) = epoll::epoll_scenario(EpollFlags::EPOLLIN)?;
    // One reader only: then a wakeup with nothing to read can only come
    // from a write that wrongly woke it.
    let errors = Mutex::new(Vec::<String>::new());
    let watch = Watch::one(efd.as_fd(), 1, "reader");
    let release = || drop(stop.add(1));
    let (w, e, p) = (&watch, &efd, &ep);
    let reader = move || epoll::reader(ctx, w, 0, (p, e), || Ok(()));
    let readers: Vec<Job<'_>> = vec![Box::new(reader)];
    let mut writers = writer_jobs(ctx, &efd, nw, per, 1)?;
    let bad = efd.try_clone().context("try_clone")?;
    let (errs, mut rng) = (&errors, ctx.rng(stream(2, 0)));
    writers.push(Box::new(move || {
        let mut tally = Tally::default();
        let bad_result = |what: &str, got, want| {
            lock(errs).push(format!("{what} gave {got:?}, expected {want:?}"));
        };
        let check = |what: &str, got: io::Result<()>| match got {
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => {}
            other => bad_result(what, other, io::ErrorKind::InvalidInput),
        };
        let sys = |r: nix::Result<usize>| r.map(drop).map_err(io::Error::from);
        let mut buf = [0u8; 4];
        for i in (0..per / 5).take_while(|_| !ctx.stopped()) {
            check("add(u64::MAX)", bad.add(u64::MAX));
            check("a 4-byte write", sys(nix::unistd::write(&bad, &[1u8; 4])));
            check("a 4-byte read", sys(nix::unistd::read(&bad, &mut buf)));
            let raw_max = nix::unistd::write(&bad, &u64::MAX.to_ne_bytes());
            check("a raw write of u64::MAX", sys(raw_max));
            if i % 16 == 0 {
                // At MAX_COUNT: succeeds only on an empty counter, else
                // WouldBlock; either way nothing is lost.
                ctx.stamp_add();
                match bad.add(MAX_COUNT) {
                    Ok(()) => tally.add(MAX_COUNT),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    other => bad_result("add(MAX_COUNT)", other, io::ErrorKind::WouldBlock),
                }
            }
            jitter(&mut rng);
        }
        Ok(tally)
    }));
    let res = run_threads(ctx, &watch, &release, readers, writers);
    let errors = errors.into_inner().unwrap_or_else(|e| e.into_inner());
    if let Some(first) = errors.first() {
        bail!("S15: {first} ({} bad results in all)", errors.len());
    }
    res?;
    let spurious = ctx.totals().spurious;
    ensure!(
        spurious == 0,
        "S15: the single reader had {spurious} wakeups with nothing to read"
    );
    Ok(())
}
