//! Plain syscalls: S8 (`poll(2)`), S9 (blocking read/write), S15 (bad input).

use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::epoll::EpollFlags;

use super::{
    drain, epoll, join, read_once, readable, run_threads, timeout_ms, writer_jobs, Ctx, Job, Rng,
    Tally, Watch,
};
use async_eventfd::{EventFd, MAX_COUNT};

pub(super) fn s8(ctx: &Ctx) {
    let per = 20_000 * ctx.scale();
    let (nw, nr) = (ctx.threads(2), ctx.threads(4));
    let Some(efd) = ctx.ok(EventFd::new(), "eventfd") else {
        return;
    };
    let Some(stop) = ctx.ok(EventFd::new(), "stop eventfd") else {
        return;
    };
    let watch = Watch::one(efd.as_fd(), nr, "poll reader");
    let release = || drop(stop.add(1));
    let (w, e, st) = (&watch, &efd, &stop);
    let readers: Vec<Job<'_>> = (0..nr)
        .map(|i| {
            Box::new(move || {
                let mut tally = Tally::default();
                loop {
                    let mut fds = [
                        PollFd::new(e.as_fd(), PollFlags::POLLIN),
                        PollFd::new(st.as_fd(), PollFlags::POLLIN),
                    ];
                    w.sleep(i);
                    let res = nix::poll::poll(&mut fds, timeout_ms(ctx.backstop()));
                    w.wake(i);
                    match res {
                        Ok(_) => {}
                        Err(Errno::EINTR) => continue,
                        Err(err) => {
                            ctx.fail(format!("S8: poll: {err}"));
                            break;
                        }
                    }
                    if ctx.stopped() {
                        break;
                    }
                    if fds[0]
                        .revents()
                        .is_some_and(|r| r.contains(PollFlags::POLLIN))
                    {
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
    let writers = writer_jobs(ctx, &efd, nw, per, 50);
    run_threads(ctx, &watch, &release, readers, writers);
    if ctx.failed() {
        return;
    }
    // POLLOUT at MAX_COUNT: absent while full, back (and waking a waiter)
    // after a read.
    let mut tally = Tally::default();
    for round in 0..200 * ctx.scale() {
        if ctx.ok(efd.add(MAX_COUNT), "add(MAX_COUNT)").is_none() {
            break;
        }
        tally.add(MAX_COUNT);
        let mut fds = [PollFd::new(
            efd.as_fd(),
            PollFlags::POLLIN | PollFlags::POLLOUT,
        )];
        if ctx
            .ok(
                nix::poll::poll(&mut fds, PollTimeout::ZERO).map_err(io::Error::from),
                "poll",
            )
            .is_none()
        {
            break;
        }
        let revents = fds[0].revents().unwrap_or(PollFlags::empty());
        if revents != PollFlags::POLLIN {
            ctx.fail(format!(
                "S8: round {round}: at MAX_COUNT poll reports {revents:?}, expected POLLIN only"
            ));
            break;
        }
        match efd.add(1) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            other => {
                ctx.fail(format!(
                    "S8: add(1) at MAX_COUNT gave {other:?}, expected WouldBlock"
                ));
                break;
            }
        }
        let woke = thread::scope(|s| {
            let waiter = s.spawn(|| {
                let start = Instant::now();
                let mut fds = [PollFd::new(efd.as_fd(), PollFlags::POLLOUT)];
                let res = nix::poll::poll(&mut fds, timeout_ms(ctx.t()));
                (res, start.elapsed())
            });
            thread::sleep(Duration::from_micros(500));
            let read = read_once(ctx, &efd, &mut tally);
            let (res, _elapsed) = match waiter.join() {
                Ok(v) => v,
                Err(_) => (Err(Errno::EIO), Duration::ZERO),
            };
            (read, res)
        });
        match woke {
            (Some(MAX_COUNT), Ok(1)) => tally.wake(),
            (read, res) => {
                ctx.fail(format!(
                    "S8: round {round}: read {read:?} (expected MAX_COUNT), POLLOUT waiter \
                     got {res:?} (expected 1 fd ready within {:?})",
                    ctx.t()
                ));
                break;
            }
        }
    }
    ctx.merge(&tally);
}

pub(super) fn s9(ctx: &Ctx) {
    let per = 10_000 * ctx.scale();
    let (nw, nr) = (ctx.threads(4), ctx.threads(4));
    let Some(efd) = ctx.ok(
        EventFd::builder().nonblocking(false).build(),
        "blocking eventfd",
    ) else {
        return;
    };
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
    let readers: Vec<Job<'_>> = (0..nr)
        .map(|i| {
            Box::new(move || {
                let mut tally = Tally::default();
                loop {
                    w.sleep(i);
                    let res = e.read();
                    w.wake(i);
                    match res {
                        Ok(v) => {
                            tally.wake();
                            tally.read(v);
                            ctx.stamp_read(&mut tally);
                            w.progress(0);
                        }
                        Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                        Err(err) => {
                            ctx.fail(format!("S9: blocking read: {err}"));
                            break;
                        }
                    }
                    if ctx.stopped() {
                        break;
                    }
                }
                tally
            }) as Job<'_>
        })
        .collect();
    let writers = writer_jobs(ctx, &efd, nw, per, 50);
    run_threads(ctx, &watch, &release, readers, writers);
    let mut tally = Tally::default();
    for _ in 0..released.load(Ordering::SeqCst) {
        tally.add(1);
    }
    // What the release added and no reader took.
    if let Ok(true) = readable(efd.as_fd()) {
        read_once(ctx, &efd, &mut tally);
    }
    ctx.merge(&tally);
    if ctx.failed() {
        return;
    }
    // Blocked writers at MAX_COUNT, released by one read.
    let mut tally = Tally::default();
    for round in 0..100 * ctx.scale() {
        if ctx.ok(efd.add(MAX_COUNT), "add(MAX_COUNT)").is_none() {
            break;
        }
        tally.add(MAX_COUNT);
        let writers = 3;
        let done = AtomicU64::new(0);
        let ok = thread::scope(|s| {
            let wd = s.spawn(|| {
                // Watchdog: if the writers are not all back within T after
                // the read, release them by reading, and fail.
                let start = Instant::now();
                while done.load(Ordering::SeqCst) < writers {
                    if start.elapsed() > ctx.t() * 2 {
                        ctx.fail(format!(
                            "S9: round {round}: {} of {writers} writers blocked at MAX_COUNT \
                             did not return within {:?}",
                            writers - done.load(Ordering::SeqCst),
                            ctx.t() * 2
                        ));
                        let mut t = Tally::default();
                        while done.load(Ordering::SeqCst) < writers {
                            if let Ok(v) = efd.read() {
                                t.read(v);
                            }
                            thread::sleep(Duration::from_millis(1));
                        }
                        return t;
                    }
                    thread::sleep(Duration::from_millis(1));
                }
                Tally::default()
            });
            let handles: Vec<_> = (0..writers)
                .map(|_| {
                    let (efd, done) = (&efd, &done);
                    s.spawn(move || {
                        let mut t = Tally::default();
                        match efd.add(1) {
                            Ok(()) => t.add(1),
                            Err(e) => ctx.fail(format!("S9: blocked add(1): {e}")),
                        }
                        done.fetch_add(1, Ordering::SeqCst);
                        t
                    })
                })
                .collect();
            thread::sleep(Duration::from_millis(1));
            let first = efd.read();
            for h in handles {
                tally.merge(&join(ctx, h, "S9 blocked writer"));
            }
            tally.merge(&join(ctx, wd, "S9 watchdog"));
            match first {
                Ok(v) => {
                    tally.read(v);
                    v == MAX_COUNT
                }
                Err(e) => {
                    ctx.fail(format!("S9: read at MAX_COUNT: {e}"));
                    false
                }
            }
        });
        if ctx.failed() {
            break;
        }
        if !ok {
            ctx.fail(format!(
                "S9: round {round}: the read at MAX_COUNT did not return MAX_COUNT"
            ));
            break;
        }
        match efd.read() {
            Ok(3) => tally.read(3),
            Ok(v) => {
                tally.read(v);
                ctx.fail(format!(
                    "S9: round {round}: after 3 released writers read {v}, expected 3"
                ));
                break;
            }
            Err(e) => {
                ctx.fail(format!("S9: read: {e}"));
                break;
            }
        }
    }
    ctx.merge(&tally);
}

pub(super) fn s15(ctx: &Ctx) {
    let per = 15_000 * ctx.scale();
    let nw = ctx.threads(2);
    let Some((efd, stop, ep)) = epoll::epoll_scenario(ctx, EpollFlags::EPOLLIN) else {
        return;
    };
    // One reader only: then a wakeup with nothing to read can only come
    // from a write that wrongly woke it.
    let errors = Mutex::new(Vec::<String>::new());
    let errs = &errors;
    let watch = Watch::one(efd.as_fd(), 1, "reader");
    let release = || drop(stop.add(1));
    let (w, e, p) = (&watch, &efd, &ep);
    let readers: Vec<Job<'_>> = vec![Box::new(move || epoll::reader(ctx, w, 0, p, e))];
    let mut writers = writer_jobs(ctx, &efd, nw, per, 50);
    let Some(bad) = ctx.ok(efd.try_clone(), "try_clone") else {
        return;
    };
    writers.push(Box::new(move || {
        let mut tally = Tally::default();
        let mut rng = Rng::new(15);
        for i in 0..per / 5 {
            if ctx.stopped() {
                break;
            }
            let check = |what: &str, got: io::Result<()>, want: io::ErrorKind| match got {
                Err(e) if e.kind() == want => {}
                other => errs
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(format!("{what} gave {other:?}, expected {want:?}")),
            };
            check(
                "add(u64::MAX)",
                bad.add(u64::MAX),
                io::ErrorKind::InvalidInput,
            );
            let short_write = nix::unistd::write(&bad, &[1u8; 4]);
            check(
                "a 4-byte write",
                short_write.map(drop).map_err(io::Error::from),
                io::ErrorKind::InvalidInput,
            );
            let mut buf = [0u8; 4];
            let short_read = nix::unistd::read(&bad, &mut buf);
            check(
                "a 4-byte read",
                short_read.map(drop).map_err(io::Error::from),
                io::ErrorKind::InvalidInput,
            );
            let raw_max = nix::unistd::write(&bad, &u64::MAX.to_ne_bytes());
            check(
                "a raw write of u64::MAX",
                raw_max.map(drop).map_err(io::Error::from),
                io::ErrorKind::InvalidInput,
            );
            if i % 16 == 0 {
                // At MAX_COUNT: succeeds only on an empty counter, else
                // WouldBlock; either way nothing is lost.
                ctx.stamp_add();
                match bad.add(MAX_COUNT) {
                    Ok(()) => tally.add(MAX_COUNT),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => errs
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(format!("add(MAX_COUNT) gave {e}")),
                }
            }
            rng.jitter();
        }
        tally
    }));
    run_threads(ctx, &watch, &release, readers, writers);
    let errors = errors.into_inner().unwrap_or_else(|e| e.into_inner());
    if let Some(first) = errors.first() {
        ctx.fail(format!(
            "S15: {first} ({} bad results in all)",
            errors.len()
        ));
    }
    let t = ctx.totals();
    if t.spurious != 0 && !ctx.failed() {
        ctx.fail(format!(
            "S15: the single reader had {} wakeups with nothing to read",
            t.spurious
        ));
    }
}
