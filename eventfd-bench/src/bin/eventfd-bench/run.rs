//! The measurements: one function per benchmark shape, generic over the
//! implementation ([`Kind`]). Each runs on fresh threads and a fresh runtime,
//! so pinning and runtime state never leak from one measurement to the next.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_eventfd::EventFd;
use eventfd_bench::rng::Rng;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use tokio::runtime::{Builder, Runtime};

use crate::impls::{dispatch, Chan, Impl, Kind, Rx, Tx};
use crate::sys::{self, Pin};

/// The tokio scheduler flavor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flavor {
    /// `current_thread`: everything on the thread that calls `block_on`.
    Ct,
    /// `multi_thread` with 2 workers.
    Mt,
}

impl Flavor {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Flavor::Ct => "ct",
            Flavor::Mt => "mt",
        }
    }
}

/// What a latency measurement runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Subject {
    /// Two tasks ping-pong, each waiting on its own channel.
    TaskTask(Impl),
    /// A plain OS thread (blocking eventfd) ping-pongs with a task.
    ThreadTask(Impl),
    /// `write` + `read` of one eventfd in one thread: no wakeup at all.
    RawFloor,
    /// Two OS threads ping-pong through blocking eventfds: no runtime.
    ThreadFloor,
}

impl Subject {
    pub(crate) fn name(self) -> String {
        match self {
            Subject::TaskTask(i) => i.name().to_string(),
            Subject::ThreadTask(i) => format!("thread<->{}", i.name()),
            Subject::RawFloor => "floor: write+read".to_string(),
            Subject::ThreadFloor => "floor: 2 threads".to_string(),
        }
    }

    /// What the row measures, in words (for `--json`).
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Subject::TaskTask(i) | Subject::ThreadTask(i) => i.describe(),
            Subject::RawFloor => "write(2) + read(2) of one eventfd in one thread, no wakeup",
            Subject::ThreadFloor => "two OS threads ping-pong through blocking eventfds",
        }
    }

    /// The key used by `--one` (no spaces).
    pub(crate) fn key(self) -> String {
        match self {
            Subject::TaskTask(i) => i.name().to_string(),
            Subject::ThreadTask(i) => format!("thread-{}", i.name()),
            Subject::RawFloor => "raw".to_string(),
            Subject::ThreadFloor => "threads".to_string(),
        }
    }

    pub(crate) fn parse_key(s: &str) -> Option<Subject> {
        match s {
            "raw" => Some(Subject::RawFloor),
            "threads" => Some(Subject::ThreadFloor),
            _ => match s.strip_prefix("thread-") {
                Some(rest) => Impl::parse(rest).map(Subject::ThreadTask),
                None => Impl::parse(s).map(Subject::TaskTask),
            },
        }
    }
}

/// Builds a runtime of `flavor` whose worker threads are pinned as `pin`
/// says (workers alternate between the two sides for `cross`).
pub(crate) fn runtime(flavor: Flavor, pin: Pin) -> io::Result<Runtime> {
    match flavor {
        Flavor::Ct => Builder::new_current_thread().enable_all().build(),
        Flavor::Mt => {
            let next = Arc::new(AtomicUsize::new(0));
            Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .on_thread_start(move || pin.apply(next.fetch_add(1, Ordering::Relaxed)))
                .build()
        }
    }
}

/// Runs `f` on a fresh OS thread pinned to side 0 and returns its result.
pub(crate) fn on_thread<T: Send + 'static>(
    pin: Pin,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    std::thread::spawn(move || {
        pin.apply(0);
        f()
    })
    .join()
    .map_err(|_| io::Error::other("benchmark thread panicked"))?
}

/// Runs the future that `f` makes on a fresh runtime of `flavor`, itself on a
/// fresh thread pinned to side 0 (see [`on_thread`]). The runtime, and with it
/// every task still alive, is gone before the result is returned.
pub(crate) fn on_runtime<T, F>(
    flavor: Flavor,
    pin: Pin,
    f: impl FnOnce() -> F + Send + 'static,
) -> io::Result<T>
where
    T: Send + 'static,
    F: Future<Output = io::Result<T>>,
{
    on_thread(pin, move || {
        let rt = runtime(flavor, pin)?;
        rt.block_on(f())
    })
}

pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

pub(crate) fn join<T>(r: Result<io::Result<T>, tokio::task::JoinError>) -> io::Result<T> {
    r.map_err(io::Error::other)?
}

/// Measures `rts` round trips (after `warmup` more) of `subject`; returns
/// the nanoseconds of each.
pub(crate) fn latency(
    subject: Subject,
    flavor: Flavor,
    pin: Pin,
    rts: usize,
    warmup: usize,
) -> io::Result<Vec<u64>> {
    match subject {
        Subject::TaskTask(i) => dispatch!(i, task_task(flavor, pin, rts, warmup)),
        Subject::ThreadTask(i) => dispatch!(i, thread_task(flavor, pin, rts, warmup)),
        Subject::RawFloor => raw_floor(pin, rts, warmup),
        Subject::ThreadFloor => thread_floor(pin, rts, warmup),
    }
}

fn task_task<K: Kind>(flavor: Flavor, pin: Pin, rts: usize, warmup: usize) -> io::Result<Vec<u64>> {
    on_runtime(flavor, pin, move || async move {
        let Chan {
            rx: mut a_rx,
            tx: mut a_tx,
            ..
        } = K::make()?;
        let Chan {
            rx: mut b_rx,
            tx: mut b_tx,
            ..
        } = K::make()?;
        let total = rts + warmup;
        let b = tokio::spawn(async move {
            for _ in 0..total {
                b_rx.recv().await?;
                a_tx.send().await?;
            }
            Ok::<_, io::Error>(())
        });
        let a = tokio::spawn(async move {
            let mut samples = Vec::with_capacity(rts);
            for i in 0..total {
                let start = Instant::now();
                b_tx.send().await?;
                a_rx.recv().await?;
                if i >= warmup {
                    samples.push(nanos(start.elapsed()));
                }
            }
            Ok::<_, io::Error>(samples)
        });
        let samples = join(a.await)?;
        join(b.await)?;
        Ok(samples)
    })
}

fn thread_task<K: Kind>(
    flavor: Flavor,
    pin: Pin,
    rts: usize,
    warmup: usize,
) -> io::Result<Vec<u64>> {
    on_runtime(flavor, pin, move || async move {
        let Chan {
            rx: mut task_rx,
            sync: to_task,
            ..
        } = K::make()?;
        let thread_efd = EventFd::builder().nonblocking(false).build()?;
        let to_thread = thread_efd.try_clone()?;
        let total = rts + warmup;
        let thread = std::thread::spawn(move || {
            pin.apply(1);
            for _ in 0..total {
                thread_efd.read()?;
                to_task.fire()?;
            }
            Ok::<_, io::Error>(())
        });
        let task = tokio::spawn(async move {
            let mut samples = Vec::with_capacity(rts);
            for i in 0..total {
                let start = Instant::now();
                to_thread.add(1)?;
                task_rx.recv().await?;
                if i >= warmup {
                    samples.push(nanos(start.elapsed()));
                }
            }
            Ok::<_, io::Error>(samples)
        });
        let samples = join(task.await)?;
        thread
            .join()
            .map_err(|_| io::Error::other("thread side panicked"))??;
        Ok(samples)
    })
}

fn raw_floor(pin: Pin, rts: usize, warmup: usize) -> io::Result<Vec<u64>> {
    on_thread(pin, move || {
        let efd = EventFd::new()?;
        let mut samples = Vec::with_capacity(rts);
        for i in 0..rts + warmup {
            let start = Instant::now();
            efd.add(std::hint::black_box(1))?;
            std::hint::black_box(efd.read()?);
            if i >= warmup {
                samples.push(nanos(start.elapsed()));
            }
        }
        Ok(samples)
    })
}

fn thread_floor(pin: Pin, rts: usize, warmup: usize) -> io::Result<Vec<u64>> {
    on_thread(pin, move || {
        let a = EventFd::builder().nonblocking(false).build()?;
        let b = EventFd::builder().nonblocking(false).build()?;
        let (a_w, b_r) = (a.try_clone()?, b.try_clone()?);
        let total = rts + warmup;
        let peer = std::thread::spawn(move || {
            pin.apply(1);
            for _ in 0..total {
                b_r.read()?;
                a_w.add(1)?;
            }
            Ok::<_, io::Error>(())
        });
        let mut samples = Vec::with_capacity(rts);
        for i in 0..total {
            let start = Instant::now();
            b.add(1)?;
            a.read()?;
            if i >= warmup {
                samples.push(nanos(start.elapsed()));
            }
        }
        peer.join()
            .map_err(|_| io::Error::other("peer thread panicked"))??;
        Ok(samples)
    })
}

/// The seed of `scale`'s random choice of receivers.
const SCALE_SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// Which receiver the `scale` driver wakes each time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Pick {
    /// One chosen at random: with many receivers, most of what a wake touches
    /// (task, registration, kernel file and epoll item) is cold in the caches.
    Random,
    /// Always the first: the others are registered but idle, so what grows
    /// with their number is the cost of merely having them.
    First,
}

impl Pick {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Pick::Random => "random",
            Pick::First => "first",
        }
    }

    /// The sequence of receivers to wake, out of `fds`: the same for every
    /// implementation (a fixed seed), so each pays for the same choices.
    fn picker(self, fds: usize) -> impl FnMut() -> usize {
        let mut rng = Rng::new(SCALE_SEED);
        move || match self {
            Pick::Random => usize::try_from(rng.below(fds as u64)).unwrap_or(0),
            Pick::First => 0,
        }
    }
}

/// `fds` receivers of `imp` each wait in a task of its own; a driver wakes
/// one (as `pick` says) and waits for its reply. Returns ns per round trip.
pub(crate) fn scale(
    imp: Impl,
    flavor: Flavor,
    pin: Pin,
    fds: usize,
    pick: Pick,
    rts: usize,
    warmup: usize,
) -> io::Result<Vec<u64>> {
    dispatch!(imp, scale_with(flavor, pin, fds, pick, rts, warmup))
}

fn scale_with<K: Kind>(
    flavor: Flavor,
    pin: Pin,
    fds: usize,
    pick: Pick,
    rts: usize,
    warmup: usize,
) -> io::Result<Vec<u64>> {
    let (samples, _reply_rx) = on_runtime(flavor, pin, move || async move {
        let Chan {
            rx: mut reply_rx,
            sync: reply,
            ..
        } = K::make()?;
        let mut wake = Vec::with_capacity(fds);
        // A waiter that fails leaves its error here and replies anyway, so
        // the driver stops instead of waiting forever for its reply.
        let failure = Arc::new(Mutex::new(None::<io::Error>));
        for _ in 0..fds {
            let Chan { mut rx, sync, .. } = K::make()?;
            wake.push(sync);
            let reply = reply.clone();
            let failure = Arc::clone(&failure);
            tokio::spawn(async move {
                let e = loop {
                    if let Err(e) = rx.recv().await {
                        break e;
                    }
                    if let Err(e) = reply.fire() {
                        break e;
                    }
                };
                *failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(e);
                // Best effort: if the reply fd itself failed, so does this.
                drop(reply.fire());
            });
        }
        let driver = tokio::spawn(async move {
            let mut next = pick.picker(fds);
            let mut samples = Vec::with_capacity(rts);
            for i in 0..rts + warmup {
                let pick = next();
                let start = Instant::now();
                wake[pick].fire()?;
                reply_rx.recv().await?;
                let elapsed = start.elapsed();
                if let Some(e) = failure
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take()
                {
                    return Err(e);
                }
                if i >= warmup {
                    samples.push(nanos(elapsed));
                }
            }
            Ok::<_, io::Error>((samples, reply_rx))
        });
        let (samples, reply_rx) = join(driver.await)?;
        // The waiting tasks still use the reply fd: keep it open until they
        // are cancelled (`on_runtime` drops the runtime before it returns).
        Ok((samples, reply_rx))
    })?;
    Ok(samples)
}

/// The kernel's part of a `scale` round trip, with no runtime and no task:
/// one thread, `fds` eventfds plus a reply eventfd in one level-triggered
/// epoll set. A round trip writes the chosen eventfd, takes its event from
/// `epoll_wait` and reads it, then does the same with the reply eventfd:
/// the six syscalls of a task's round trip, on the same kernel objects.
pub(crate) fn scale_floor(
    pin: Pin,
    fds: usize,
    pick: Pick,
    rts: usize,
    warmup: usize,
) -> io::Result<Vec<u64>> {
    on_thread(pin, move || {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let efds = (0..fds)
            .map(|_| EventFd::new())
            .collect::<io::Result<Vec<_>>>()?;
        let reply = EventFd::new()?;
        for (token, efd) in (0u64..).zip(efds.iter().chain([&reply])) {
            epoll.add(efd, EpollEvent::new(EpollFlags::EPOLLIN, token))?;
        }
        let mut events = [EpollEvent::empty()];
        // Waits for the one ready fd, which must be `efd` (token `token`),
        // and takes its count.
        let mut take = |efd: &EventFd, token: usize| -> io::Result<()> {
            let n = epoll.wait(&mut events, EpollTimeout::NONE)?;
            if n != 1 || events[0].data() != token as u64 {
                return Err(io::Error::other(format!(
                    "epoll floor: expected token {token}, got {n} event(s), token {}",
                    events[0].data()
                )));
            }
            efd.read().map(drop)
        };
        let mut next = pick.picker(fds);
        let mut samples = Vec::with_capacity(rts);
        for i in 0..rts + warmup {
            let pick = next();
            let efd = efds
                .get(pick)
                .ok_or_else(|| io::Error::other("epoll floor: no receivers"))?;
            let start = Instant::now();
            efd.add(1)?;
            take(efd, pick)?;
            reply.add(1)?;
            take(&reply, fds)?;
            if i >= warmup {
                samples.push(nanos(start.elapsed()));
            }
        }
        Ok(samples)
    })
}

/// One throughput measurement.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Throughput {
    pub(crate) adds: u64,
    pub(crate) reads: u64,
    pub(crate) elapsed: Duration,
    /// CPU time of the runtime's threads (process minus writer threads).
    pub(crate) reader_cpu: Duration,
    /// Total read == total added (checked exactly).
    pub(crate) conserved: bool,
}

/// `writers` OS threads add 1 as fast as they can for `duration`; one task
/// reads. Counts are checked exactly afterwards.
pub(crate) fn throughput(
    imp: Impl,
    flavor: Flavor,
    pin: Pin,
    writers: usize,
    duration: Duration,
) -> io::Result<Throughput> {
    dispatch!(imp, throughput_with(flavor, pin, writers, duration))
}

fn throughput_with<K: Kind>(
    flavor: Flavor,
    pin: Pin,
    writers: usize,
    duration: Duration,
) -> io::Result<Throughput> {
    on_runtime(flavor, pin, move || async move {
        let Chan { mut rx, sync, .. } = K::make()?;
        // u64::MAX until the writers are done; then the exact total.
        let target = Arc::new(AtomicU64::new(u64::MAX));
        let reader_target = Arc::clone(&target);
        let reader = tokio::spawn(async move {
            let (mut sum, mut reads) = (0u64, 0u64);
            while sum < reader_target.load(Ordering::Acquire) {
                sum += rx.recv().await?;
                reads += 1;
            }
            Ok::<_, io::Error>((sum, reads, rx))
        });
        let stop = Arc::new(AtomicBool::new(false));
        let start_line = Arc::new(Barrier::new(writers + 1));
        let mut handles = Vec::with_capacity(writers);
        for _ in 0..writers {
            let (stop, sync, start_line) =
                (Arc::clone(&stop), sync.clone(), Arc::clone(&start_line));
            handles.push(std::thread::spawn(move || {
                pin.apply(1);
                start_line.wait();
                let cpu0 = sys::thread_cpu();
                let mut adds = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..64 {
                        sync.fire()?;
                    }
                    adds += 64;
                }
                Ok::<_, io::Error>((adds, sys::thread_cpu().saturating_sub(cpu0)))
            }));
        }
        let cpu0 = sys::process_cpu();
        let begin = Instant::now();
        start_line.wait();
        tokio::time::sleep(duration).await;
        stop.store(true, Ordering::Relaxed);
        let joined = tokio::task::spawn_blocking(move || {
            handles
                .into_iter()
                .map(|h| h.join().map_err(|_| io::Error::other("writer panicked"))?)
                .collect::<io::Result<Vec<(u64, Duration)>>>()
        })
        .await
        .map_err(io::Error::other)??;
        let adds: u64 = joined.iter().map(|(a, _)| a).sum();
        let writer_cpu: Duration = joined.iter().map(|(_, c)| *c).sum();
        // One marker add after the target is set, so a reader already
        // waiting with everything read wakes up and sees the target.
        target.store(adds + 1, Ordering::Release);
        sync.fire()?;
        let (sum, reads, _rx) = join(reader.await)?;
        let elapsed = begin.elapsed();
        let reader_cpu = sys::process_cpu()
            .saturating_sub(cpu0)
            .saturating_sub(writer_cpu);
        Ok(Throughput {
            adds,
            reads: reads.saturating_sub(1),
            elapsed,
            reader_cpu,
            conserved: sum == adds + 1,
        })
    })
}
