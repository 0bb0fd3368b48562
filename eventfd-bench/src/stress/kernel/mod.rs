//! Stress scenarios whose writer is the kernel: S17 (io_uring completions,
//! here), S18 (overflow storms: kernel signals saturate the counter to
//! `u64::MAX`; `overflow.rs`) and S19 (KVM ioeventfd doorbells rung by two
//! vCPUs; `kvm.rs`). This file also holds what they share: readers, the
//! watchdog, the io_uring helpers.
//!
//! NOT YET WIRED into the engine's table: each scenario is a plain function
//! `(seed, scale) -> Outcome`, so that the coordinator can call it from the
//! engine after its refactor (add `mod kernel;` to `stress/mod.rs` and a row
//! per scenario; a [`Outcome::Skipped`] is the SKIP verdict, with its reason).
//! Until then `eventfd-bench/tests/kernel_scenarios.rs` compiles and runs
//! this module on its own (it provides `crate::rng`).
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

use async_eventfd::AsyncEventFd;
use io_uring::{opcode, IoUring};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use tokio::runtime::Runtime;
use tokio::sync::watch;

use crate::rng::Rng;

mod kvm;
mod overflow;

pub(crate) use kvm::s19;
pub(crate) use overflow::s18;

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
    Ok(crate::kernel_rigs::uring(efd, 8)?)
}

/// A rig's missing facility is a SKIP; anything else failed.
impl From<crate::kernel_rigs::RigError> for Outcome {
    fn from(e: crate::kernel_rigs::RigError) -> Outcome {
        match e {
            crate::kernel_rigs::RigError::Missing(reason) => Outcome::Skipped(reason),
            crate::kernel_rigs::RigError::Failed(message) => Outcome::Failed(message),
        }
    }
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
