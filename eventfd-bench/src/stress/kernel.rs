//! Stress scenarios whose writer is the kernel: S17 (io_uring completions),
//! S18 (overflow storms: kernel signals saturate the counter to `u64::MAX`)
//! and S19 (KVM ioeventfd doorbells rung by two vCPUs).
//!
//! NOT YET WIRED into the engine's table: each scenario is a plain function
//! `(seed, scale) -> Outcome`, so that the coordinator can call it from the
//! engine after its refactor (add `mod kernel;` to `stress/mod.rs` and a row
//! per scenario; a [`Outcome::Skipped`] is the SKIP verdict, with its reason).
//! Until then `eventfd-bench/tests/kernel_scenarios.rs` compiles and runs
//! this file as a module of its own (it provides `crate::rng`).
//! Run the scenarios one at a time: S18 bounds the CPU time of the whole
//! process (`getrusage`) while adds wait, so nothing else may run beside it.
//!
//! Accounting, as the kernel defines it: `eventfd_signal` adds
//! `min(1, u64::MAX - count)`. Every kernel signal here is made while the
//! counter is below `u64::MAX` (S18 checks `POLLERR`, which the kernel
//! reports exactly at `u64::MAX`, before each one), so each adds exactly 1,
//! and a read of `u64::MAX` is `MAX_COUNT` plus that 1: the sums stay exact.

use std::future::{poll_fn, Future};
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use async_eventfd::{AsyncEventFd, EventFd, MAX_COUNT};
use io_uring::{opcode, IoUring};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::resource::{getrusage, UsageWho};
use tokio::runtime::Runtime;
use tokio::sync::watch;

use crate::rng::Rng;

/// T: the longest a count may stay pending with readers waiting.
const LIVENESS: Duration = Duration::from_secs(2);
/// The most any one wait in a scenario may take before it fails.
const DEADLINE: Duration = Duration::from_secs(60);
/// The most one runtime's part of a scenario may take (see [`watched`]).
const PART_LIMIT: Duration = Duration::from_secs(90);

/// What a kernel scenario found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Every check passed.
    Passed(Summary),
    /// The facility is missing (io_uring disabled, no `/dev/kvm`): nothing
    /// was checked.
    Skipped(String),
    /// The first failed check.
    Failed(String),
}

/// The counts of a passed run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Summary {
    /// Every unit added: by user space, and by the kernel (1 per signal).
    pub(crate) added: u128,
    /// Every unit read. Equal to `added`.
    pub(crate) read: u128,
    /// Kernel signals (completions or guest rings) among `added`.
    pub(crate) kernel_signals: u64,
    /// Successful reads.
    pub(crate) read_calls: u64,
    /// Reads that returned `u64::MAX`: the counter was saturated.
    pub(crate) saturated_reads: u64,
    /// What the scenario did, for the report.
    pub(crate) detail: String,
}

impl Summary {
    fn merge(&mut self, part: Summary) {
        self.added += part.added;
        self.read += part.read;
        self.kernel_signals += part.kernel_signals;
        self.read_calls += part.read_calls;
        self.saturated_reads += part.saturated_reads;
    }
}

type Checked<T> = Result<T, Outcome>;

/// Runs `part` (a runtime and what it runs) on a thread of its own and
/// fails if it does not return within [`PART_LIMIT`]. A task that spins
/// never yields, so no timer inside its runtime can end it; this can. The
/// stuck thread is left behind (nothing can stop it), but the run goes on.
fn watched(
    what: &str,
    part: impl FnOnce() -> Checked<Summary> + Send + 'static,
) -> Checked<Summary> {
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        // The receiver is gone only if the part already timed out.
        drop(tx.send(part()));
    });
    match rx.recv_timeout(PART_LIMIT) {
        Ok(result) => result,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => fail(format!(
            "{what}: hung for {PART_LIMIT:?} (a task spinning, or a lost wakeup)"
        )),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => fail(format!("{what}: panicked")),
    }
}

fn fail<T>(message: impl Into<String>) -> Checked<T> {
    Err(Outcome::Failed(message.into()))
}

fn io_fail(what: &str) -> impl FnOnce(io::Error) -> Outcome + '_ {
    move |e| Outcome::Failed(format!("{what}: {e}"))
}

fn finish(run: Checked<Summary>) -> Outcome {
    match run {
        Ok(summary) if summary.added == summary.read => Outcome::Passed(summary),
        Ok(summary) => Outcome::Failed(format!(
            "conservation: added {} but read {} ({})",
            summary.added, summary.read, summary.detail
        )),
        Err(outcome) => outcome,
    }
}

/// The two runtime flavors every scenario runs on.
#[derive(Debug, Clone, Copy)]
enum Flavor {
    CurrentThread,
    MultiThread,
}

const FLAVORS: [Flavor; 2] = [Flavor::CurrentThread, Flavor::MultiThread];

fn runtime(flavor: Flavor) -> Checked<Runtime> {
    let mut builder = match flavor {
        Flavor::CurrentThread => tokio::runtime::Builder::new_current_thread(),
        Flavor::MultiThread => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(2);
            builder
        }
    };
    builder
        .enable_all()
        .build()
        .map_err(io_fail("build a runtime"))
}

/// Awaits `fut` for at most `limit`, failing with `what` after that.
async fn within<F: Future>(limit: Duration, what: &str, fut: F) -> Checked<F::Output> {
    tokio::time::timeout(limit, fut)
        .await
        .or_else(|_| fail(format!("{what}: not done within {limit:?}")))
}

/// Joins a plain thread without blocking a runtime thread.
async fn join<T: Send + 'static>(what: &str, handle: thread::JoinHandle<Checked<T>>) -> Checked<T> {
    let joined = within(
        DEADLINE,
        what,
        tokio::task::spawn_blocking(move || handle.join()),
    )
    .await?;
    match joined {
        Ok(Ok(result)) => result,
        _ => fail(format!("{what}: the thread panicked")),
    }
}

/// What one reader read.
#[derive(Debug, Default)]
struct Tally {
    sum: u128,
    calls: u64,
    saturated: u64,
}

impl Tally {
    fn take(&mut self, value: u64) {
        self.sum += u128::from(value);
        self.calls += 1;
        self.saturated += u64::from(value == u64::MAX);
    }

    fn add_to(self, summary: &mut Summary) {
        summary.read += self.sum;
        summary.read_calls += self.calls;
        summary.saturated_reads += self.saturated;
    }
}

/// Reads `efd` until `stop` is set. Reader 0 waits through `poll_read` (one
/// slot: only one such reader per fd), the others through `read`. Cancel
/// safe: stopping loses nothing.
async fn reader(
    efd: Arc<AsyncEventFd>,
    index: usize,
    mut stop: watch::Receiver<bool>,
) -> Checked<Tally> {
    let mut tally = Tally::default();
    loop {
        let read = async {
            if index == 0 {
                poll_fn(|cx| efd.poll_read(cx)).await
            } else {
                efd.read().await
            }
        };
        tokio::select! {
            biased;
            _ = stop.wait_for(|stopped| *stopped) => return Ok(tally),
            value = read => tally.take(value.map_err(io_fail("read"))?),
        }
    }
}

/// Whether `fd` is readable, and whether the kernel reports the overflow
/// (`POLLERR`: the counter is `u64::MAX`), without waiting.
fn peek(fd: &impl AsFd) -> Checked<(bool, bool)> {
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::ZERO).map_err(|e| io_fail("poll")(e.into()))?;
    let revents = fds[0].revents().unwrap_or(PollFlags::empty());
    Ok((
        revents.contains(PollFlags::POLLIN),
        revents.contains(PollFlags::POLLERR),
    ))
}

/// Liveness at the end of a run: once the writers are done, the readers
/// still waiting must empty the counter within [`LIVENESS`].
async fn drained_by_readers(efd: &AsyncEventFd, readers: usize) -> Checked<()> {
    let start = Instant::now();
    while peek(efd)?.0 {
        if start.elapsed() > LIVENESS {
            return fail(format!(
                "lost wakeup: a count stayed pending for {LIVENESS:?} with {readers} readers waiting"
            ));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

/// Stops the readers and adds up what they read, plus anything a reader
/// left (a count that landed after the check is read here, not lost).
async fn stop_readers(
    efd: &AsyncEventFd,
    stop: &watch::Sender<bool>,
    readers: Vec<tokio::task::JoinHandle<Checked<Tally>>>,
    summary: &mut Summary,
) -> Checked<()> {
    stop.send_replace(true);
    for handle in readers {
        within(LIVENESS, "a reader to stop", handle)
            .await?
            .or_else(|_| fail("a reader task panicked"))??
            .add_to(summary);
    }
    let mut left = Tally::default();
    loop {
        match efd.try_read() {
            Ok(value) => left.take(value),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(io_fail("try_read")(e)),
        }
    }
    left.add_to(summary);
    Ok(())
}

/// An io_uring ring with `efd` registered, or the SKIP where io_uring is
/// missing.
fn ring_for(efd: &impl AsRawFd) -> Checked<IoUring> {
    let ring = IoUring::new(8)
        .map_err(|e| Outcome::Skipped(format!("io_uring is not available here ({e})")))?;
    ring.submitter()
        .register_eventfd(efd.as_raw_fd())
        .map_err(io_fail("IORING_REGISTER_EVENTFD"))?;
    Ok(ring)
}

/// Completes one NOP (one `io_uring_enter`, so exactly one kernel signal)
/// and reaps the whole completion queue.
fn nop(ring: &mut IoUring) -> Checked<()> {
    let entry = opcode::Nop::new().build();
    // SAFETY: a NOP refers to no memory, so nothing has to outlive it.
    unsafe { ring.submission().push(&entry) }.or_else(|_| fail("the submission queue is full"))?;
    ring.submit_and_wait(1).map_err(io_fail("io_uring_enter"))?;
    let mut reaped = 0;
    for cqe in ring.completion() {
        if cqe.result() < 0 {
            return fail(format!("a NOP failed: {}", cqe.result()));
        }
        reaped += 1;
    }
    if reaped != 1 {
        return fail(format!("one NOP submitted, {reaped} reaped"));
    }
    Ok(())
}

/// S17: `rings` io_uring rings, one thread each, all with the same eventfd
/// registered, complete NOPs one per submit (in bursts with random pauses)
/// while tokio readers read, on both flavors. Completions == sum read.
pub(crate) fn s17(seed: u64, scale: u32) -> Outcome {
    const RINGS: u64 = 3;
    let per_ring = 20_000 * u64::from(scale.max(1));
    let mut summary = Summary::default();
    let run = FLAVORS.iter().enumerate().try_for_each(|(i, &flavor)| {
        let readers = match flavor {
            Flavor::CurrentThread => 2,
            Flavor::MultiThread => 3,
        };
        let part = watched(&format!("S17 on {flavor:?}"), move || {
            let mut part = Summary::default();
            let seed = seed ^ i as u64;
            runtime(flavor)?.block_on(s17_one(seed, RINGS, per_ring, readers, &mut part))?;
            Ok(part)
        })?;
        summary.merge(part);
        Ok(())
    });
    summary.detail = format!(
        "{RINGS} rings x {per_ring} NOPs on each flavor, read in {} reads",
        summary.read_calls
    );
    finish(run.map(|()| summary))
}

async fn s17_one(
    seed: u64,
    rings: u64,
    per_ring: u64,
    readers: usize,
    summary: &mut Summary,
) -> Checked<()> {
    let efd = Arc::new(AsyncEventFd::new().map_err(io_fail("AsyncEventFd::new"))?);
    let (stop, stopped) = watch::channel(false);
    let reading: Vec<_> = (0..readers)
        .map(|i| tokio::spawn(reader(Arc::clone(&efd), i, stopped.clone())))
        .collect();
    let mut writers = Vec::new();
    for r in 0..rings {
        let mut ring = ring_for(&*efd)?;
        let mut rng = Rng::stream(seed, r);
        writers.push(thread::spawn(move || -> Checked<u64> {
            let mut done = 0;
            while done < per_ring {
                let burst = (1 + rng.below(200)).min(per_ring - done);
                for _ in 0..burst {
                    nop(&mut ring)?;
                }
                done += burst;
                thread::sleep(Duration::from_micros(rng.below(300)));
            }
            Ok(done)
        }));
    }
    for writer in writers {
        let completed = join("an io_uring thread", writer).await?;
        summary.added += u128::from(completed);
        summary.kernel_signals += completed;
    }
    drained_by_readers(&efd, readers).await?;
    stop_readers(&efd, &stop, reading, summary).await
}

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
pub(crate) fn s18(seed: u64, scale: u32) -> Outcome {
    let rounds = 4 * u64::from(scale.max(1));
    let mut summary = Summary::default();
    let run = (0..rounds).try_for_each(|round| {
        let flavor = FLAVORS[round as usize % 2];
        let part = watched(&format!("S18 round {round} on {flavor:?}"), move || {
            let mut part = Summary::default();
            runtime(flavor)?.block_on(s18_round(Rng::stream(seed, round), &mut part))?;
            Ok(part)
        })?;
        summary.merge(part);
        Ok(())
    });
    summary.detail = format!(
        "{rounds} rounds, {} reads of u64::MAX, {} kernel signals",
        summary.saturated_reads, summary.kernel_signals
    );
    finish(run.map(|()| summary))
}

/// The quiet window of an S18 round, and the CPU the process may use in it.
const QUIET: Duration = Duration::from_millis(200);
const QUIET_CPU: Duration = Duration::from_millis(50);

async fn s18_round(mut rng: Rng, summary: &mut Summary) -> Checked<()> {
    let efd = Arc::new(AsyncEventFd::new().map_err(io_fail("AsyncEventFd::new"))?);
    let mut ring = ring_for(&*efd)?;
    let plain = || efd.get_ref().try_clone().map_err(io_fail("try_clone"));

    // Saturate: MAX_COUNT, then one kernel signal (+1) = u64::MAX.
    efd.try_add(MAX_COUNT).map_err(io_fail("fill"))?;
    nop(&mut ring)?;
    summary.added += u128::from(MAX_COUNT) + 1;
    summary.kernel_signals += 1;
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
    summary.added += values.iter().map(|&v| u128::from(v)).sum::<u128>();
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
                    if start.elapsed() > LIVENESS {
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
    summary.added += u128::from(fills + ring_fills) * u128::from(MAX_COUNT)
        + small.iter().map(|&v| u128::from(v)).sum::<u128>()
        + u128::from(signalled);
    summary.kernel_signals += signalled;

    drained_by_readers(&efd, 3).await?;
    stop_readers(&efd, &stop, readers, summary).await?;
    join("the reader thread", reader_thread)
        .await?
        .add_to(summary);
    Ok(())
}

/// S19: two vCPUs of a tiny guest ring doorbells at full speed, each on its
/// own port with a `KVM_IOEVENTFD` on its own eventfd, while two tasks per
/// eventfd read, on both flavors. Guest rings == sum read, per eventfd.
#[cfg(target_arch = "x86_64")]
pub(crate) fn s19(seed: u64, scale: u32) -> Outcome {
    let mut summary = Summary::default();
    let mut rng = Rng::new(seed);
    let mut rung = Vec::new();
    let run = FLAVORS.iter().try_for_each(|&flavor| {
        // Full speed, and a little different every run.
        let rings = [0, 1].map(|_| 100_000 * scale.max(1) + rng.below(10_000) as u32);
        rung.extend(rings);
        let part = watched(&format!("S19 on {flavor:?}"), move || {
            let mut part = Summary::default();
            runtime(flavor)?.block_on(s19_one(rings, &mut part))?;
            Ok(part)
        })?;
        summary.merge(part);
        Ok(())
    });
    summary.detail = format!(
        "two vCPUs rang {rung:?} times (current-thread, then multi-thread), read in {} reads",
        summary.read_calls
    );
    finish(run.map(|()| summary))
}

/// S19 where the guest is not x86 code: a SKIP, with the reason.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn s19(_seed: u64, _scale: u32) -> Outcome {
    Outcome::Skipped("the S19 guest is x86_64 code".into())
}

#[cfg(target_arch = "x86_64")]
async fn s19_one(rings: [u32; 2], summary: &mut Summary) -> Checked<()> {
    const READERS: usize = 2;
    let guest = guest::Guest::new()?;
    let mut fds = Vec::new();
    let mut vcpus = Vec::new();
    for (id, &count) in rings.iter().enumerate() {
        let efd = Arc::new(AsyncEventFd::new().map_err(io_fail("AsyncEventFd::new"))?);
        let port = 0x10 + id as u16;
        guest.doorbell(port, efd.get_ref())?;
        let vcpu = guest.vcpu(id as u64, port, count)?;
        fds.push(efd);
        vcpus.push(vcpu);
    }
    let (stop, stopped) = watch::channel(false);
    let readers: Vec<Vec<_>> = fds
        .iter()
        .map(|efd| {
            (0..READERS)
                .map(|i| tokio::spawn(reader(Arc::clone(efd), i, stopped.clone())))
                .collect()
        })
        .collect();
    let running: Vec<_> = vcpus
        .into_iter()
        .map(|vcpu| thread::spawn(move || vcpu.run()))
        .collect();
    for vcpu in running {
        join("a vCPU", vcpu).await?;
    }
    for ((efd, readers), &count) in fds.iter().zip(readers).zip(&rings) {
        drained_by_readers(efd, READERS).await?;
        let mut one = Summary::default();
        stop_readers(efd, &stop, readers, &mut one).await?;
        if one.read != u128::from(count) {
            return fail(format!(
                "a vCPU rang {count} times, its eventfd read {}",
                one.read
            ));
        }
        summary.added += u128::from(count);
        summary.kernel_signals += u64::from(count);
        summary.read += one.read;
        summary.read_calls += one.read_calls;
    }
    Ok(())
}

/// A tiny KVM guest: real-mode code that rings a port and halts.
#[cfg(target_arch = "x86_64")]
mod guest {
    use std::io;
    use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
    use std::sync::Arc;

    use async_eventfd::EventFd;
    use kvm_bindings::kvm_userspace_memory_region;
    use kvm_ioctls::{IoEventAddress, Kvm, NoDatamatch, VcpuExit, VcpuFd, VmFd};

    use super::{fail, io_fail, Checked, Outcome};

    /// Where the guest's code sits in guest-physical memory.
    const CODE_ADDR: u64 = 0x1000;

    /// Real mode, `dx` = port, `ecx` = rings (at least 1):
    ///
    /// ```text
    /// 0: ee        out dx, al
    /// 1: 66 49     dec ecx
    /// 3: 75 fb     jnz 0
    /// 5: f4        hlt
    /// ```
    const DOORBELL_LOOP: [u8; 6] = [0xee, 0x66, 0x49, 0x75, 0xfb, 0xf4];

    /// One page of guest memory, page-aligned as KVM requires.
    #[repr(C, align(4096))]
    pub(super) struct Page([u8; 4096]);

    pub(super) struct Guest {
        vm: VmFd,
        _kvm: Kvm,
        memory: Arc<Page>,
    }

    pub(super) struct Vcpu {
        // Field order is drop order: the vCPU's fd (which keeps the VM alive)
        // closes before its share of the memory the VM maps is let go.
        fd: VcpuFd,
        port: u16,
        _memory: Arc<Page>,
    }

    fn kvm_fail(what: &str) -> impl FnOnce(kvm_ioctls::Error) -> Outcome + '_ {
        move |e| io_fail(what)(io::Error::from_raw_os_error(e.errno()))
    }

    impl Guest {
        /// A VM with the doorbell loop in memory, or the SKIP where
        /// `/dev/kvm` is missing or unusable.
        pub(super) fn new() -> Checked<Guest> {
            let kvm = Kvm::new()
                .map_err(|e| Outcome::Skipped(format!("/dev/kvm is not usable here ({e})")))?;
            let vm = kvm.create_vm().map_err(kvm_fail("KVM_CREATE_VM"))?;
            let mut page = Page([0xf4; 4096]);
            page.0[..DOORBELL_LOOP.len()].copy_from_slice(&DOORBELL_LOOP);
            let memory = Arc::new(page);
            let region = kvm_userspace_memory_region {
                slot: 0,
                flags: 0,
                guest_phys_addr: CODE_ADDR,
                memory_size: std::mem::size_of::<Page>() as u64,
                userspace_addr: memory.0.as_ptr() as u64,
            };
            // SAFETY: the region is one live, page-aligned page, freed only
            // when the last of `Guest` and its `Vcpu`s is dropped: after every
            // fd that keeps the VM alive has closed (each closes its fd before
            // letting go of the page). The guest only reads it.
            unsafe { vm.set_user_memory_region(region) }
                .map_err(kvm_fail("KVM_SET_USER_MEMORY_REGION"))?;
            Ok(Guest {
                vm,
                _kvm: kvm,
                memory,
            })
        }

        /// A `KVM_IOEVENTFD` on `port`: a guest `out` there adds 1 to `efd`'s
        /// counter inside the kernel, with no exit to user space.
        pub(super) fn doorbell(&self, port: u16, efd: &EventFd) -> Checked<()> {
            let vmm = to_vmm(efd).map_err(io_fail("dup the eventfd"))?;
            self.vm
                .register_ioevent(&vmm, &IoEventAddress::Pio(port.into()), NoDatamatch)
                .map_err(kvm_fail("KVM_IOEVENTFD"))
        }

        /// vCPU `id`, set to ring `port` `rings` times (at least 1) and halt.
        pub(super) fn vcpu(&self, id: u64, port: u16, rings: u32) -> Checked<Vcpu> {
            let fd = self
                .vm
                .create_vcpu(id)
                .map_err(kvm_fail("KVM_CREATE_VCPU"))?;
            let mut sregs = fd.get_sregs().map_err(kvm_fail("KVM_GET_SREGS"))?;
            sregs.cs.base = 0;
            sregs.cs.selector = 0;
            fd.set_sregs(&sregs).map_err(kvm_fail("KVM_SET_SREGS"))?;
            let mut regs = fd.get_regs().map_err(kvm_fail("KVM_GET_REGS"))?;
            regs.rip = CODE_ADDR;
            regs.rdx = port.into();
            regs.rcx = rings.max(1).into();
            regs.rflags = 2;
            fd.set_regs(&regs).map_err(kvm_fail("KVM_SET_REGS"))?;
            Ok(Vcpu {
                fd,
                port,
                _memory: Arc::clone(&self.memory),
            })
        }
    }

    impl Vcpu {
        /// Runs the guest to its `hlt`. An `out` that reaches user space was
        /// missed by the ioeventfd: a failure, as is any other exit.
        pub(super) fn run(mut self) -> Checked<()> {
            loop {
                match self.fd.run() {
                    Ok(VcpuExit::Hlt) => return Ok(()),
                    Ok(VcpuExit::IoOut(port, _)) if port == self.port => {
                        return fail(format!(
                            "an out to {port:#x} exited to user space: no ioeventfd took it"
                        ));
                    }
                    Ok(exit) => return fail(format!("unexpected vCPU exit: {exit:?}")),
                    Err(e) if e.errno() == nix::libc::EINTR => continue,
                    Err(e) => return Err(kvm_fail("KVM_RUN")(e)),
                }
            }
        }
    }

    /// A second fd on `efd`'s counter, in the type kvm-ioctls takes. The one
    /// place that converts; with the crate's `vmm-sys-util` feature this is
    /// `Ok(efd.try_clone()?.into())`.
    fn to_vmm(efd: &EventFd) -> io::Result<vmm_sys_util::eventfd::EventFd> {
        let fd: OwnedFd = efd.try_clone()?.into();
        // SAFETY: `into_raw_fd` gives up ownership of a fresh, open eventfd
        // (the dup made just above); the returned `EventFd` now owns it.
        Ok(unsafe { vmm_sys_util::eventfd::EventFd::from_raw_fd(fd.into_raw_fd()) })
    }
}
