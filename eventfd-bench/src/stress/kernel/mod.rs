//! Stress scenarios whose writer is the kernel: S17 (io_uring completions,
//! here), S18 (overflow storms: kernel signals saturate the counter to
//! `u64::MAX`; `overflow.rs`) and S19 (KVM ioeventfd doorbells rung by two
//! vCPUs; `kvm.rs`). This file also holds what they share: readers, the
//! watchdog, the io_uring helpers.
//!
//! Each scenario is one round of the engine: its seed streams come from
//! [`Ctx::rng`], its work is multiplied by the scale, and its counts land in
//! the engine's totals (a kernel signal is an add call of 1; a read future
//! polled again is a wakeup, spurious if it stayed pending). Internally a
//! step ends early with a [`Halt`]: [`Halt::Skip`] where io_uring or
//! `/dev/kvm` is missing (the SKIP verdict, with its reason), else
//! [`Halt::Fail`]. Liveness is checked at the end of each part rather than
//! by the engine's watchdog: once the writers are done, the waiting readers
//! must empty the counter within T ([`Ctx::t`]); a part that hangs fails
//! after [`PART_LIMIT`]. S18 bounds the CPU time of the whole process
//! (`getrusage`) while adds wait: the engine runs one scenario at a time,
//! so nothing else runs beside it.
//!
//! Accounting, as the kernel defines it: `eventfd_signal` adds
//! `min(1, u64::MAX - count)`. Every kernel signal here is made while the
//! counter is below `u64::MAX` (S18 checks `POLLERR`, which the kernel
//! reports exactly at `u64::MAX`, before each one), so each adds exactly 1,
//! and a read of `u64::MAX` is `MAX_COUNT` plus that 1: the sums stay exact.

use std::future::{poll_fn, Future};
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::pin::pin;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use async_eventfd::AsyncEventFd;
use io_uring::{opcode, IoUring};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use tokio::runtime::Runtime;
use tokio::sync::watch;

use super::ctx::{Ctx, Failure, Step, Tally as Counts};
use crate::rng::Rng;

mod kvm;
mod overflow;

pub(super) use kvm::kvm_ioeventfd_vcpus;
pub(super) use overflow::overflow_storms;

/// The longest a reader may take to stop once told to.
const READER_STOP: Duration = Duration::from_secs(2);
/// The most any one wait in a scenario may take before it fails.
const DEADLINE: Duration = Duration::from_secs(60);
/// The most one runtime's part of a scenario may take (see [`watched`]).
const PART_LIMIT: Duration = Duration::from_secs(90);

/// Why a kernel scenario's step ended early.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Halt {
    /// The facility is missing (io_uring disabled, no `/dev/kvm`): nothing
    /// was checked.
    Skip(String),
    /// The first failed check.
    Fail(String),
}

/// The counts of a kernel scenario's round.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Summary {
    /// The engine's counters: `added` is every unit added, by user space and
    /// by the kernel (1 per signal); `add_calls` the successful adds, user
    /// space's plus the kernel signals; `max_wait` the longest a count stayed
    /// pending once the writers were done.
    counts: Counts,
    /// Kernel signals (completions or guest rings) among `counts.added`.
    kernel_signals: u64,
    /// Reads that returned `u64::MAX`: the counter was saturated.
    saturated_reads: u64,
    /// What the scenario did, for a failure message.
    detail: String,
}

impl Summary {
    fn merge(&mut self, part: Summary) {
        self.counts.merge(&part.counts);
        self.kernel_signals += part.kernel_signals;
        self.saturated_reads += part.saturated_reads;
    }

    /// A kernel signal: the kernel added 1.
    fn signalled(&mut self, signals: u64) {
        self.counts.add_calls += signals;
        self.counts.added += u128::from(signals);
        self.kernel_signals += signals;
    }
}

type Checked<T> = Result<T, Halt>;

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
        Ok(Err(Halt::Fail(msg))) => fail(format!("{what}: {msg}")),
        Ok(result) => result,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => fail(format!(
            "{what}: hung for {PART_LIMIT:?} (a task spinning, or a lost wakeup)"
        )),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => fail(format!("{what}: panicked")),
    }
}

fn fail<T>(message: impl Into<String>) -> Checked<T> {
    Err(Halt::Fail(message.into()))
}

fn io_fail(what: &str) -> impl FnOnce(io::Error) -> Halt + '_ {
    move |e| Halt::Fail(format!("{what}: {e}"))
}

/// Hands a round's result to the engine: its counts join the totals (whose
/// conservation the engine checks), a SKIP is recorded with its reason, a
/// failure fails the step.
fn settle(ctx: &Ctx, run: Checked<Summary>) -> Step {
    let id = ctx.id();
    let s = match run {
        Ok(s) => s,
        Err(Halt::Skip(reason)) => {
            ctx.skip(reason);
            return Ok(());
        }
        Err(Halt::Fail(msg)) => return Err(Failure(format!("{id}: {msg}"))),
    };
    // Into the totals even when a check below fails: the report shows them.
    ctx.merge(&s.counts);
    if s.counts.added != s.counts.read {
        return Err(Failure(format!(
            "{id}: conservation: added {} but read {} ({} {}; {})",
            s.counts.added,
            s.counts.read,
            s.counts.added.abs_diff(s.counts.read),
            if s.counts.added > s.counts.read {
                "lost or stranded"
            } else {
                "read twice"
            },
            s.detail
        )));
    }
    if s.kernel_signals == 0 {
        return Err(Failure(format!(
            "{id}: the kernel never signalled ({})",
            s.detail
        )));
    }
    Ok(())
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

/// What one reader read, and how often its read future was polled again.
#[derive(Debug, Default)]
struct Tally {
    sum: u128,
    calls: u64,
    saturated: u64,
    wakeups: u64,
    spurious: u64,
}

impl Tally {
    fn take(&mut self, value: u64) {
        self.sum += u128::from(value);
        self.calls += 1;
        self.saturated += u64::from(value == u64::MAX);
    }

    /// A read future polled `polls` times: every poll after the first is
    /// a wakeup, spurious unless it completed the read.
    fn polled(&mut self, polls: u64, completed: bool) {
        let again = polls.saturating_sub(1);
        self.wakeups += again;
        self.spurious += again.saturating_sub(u64::from(completed));
    }

    fn add_to(self, summary: &mut Summary) {
        summary.counts.read += self.sum;
        summary.counts.read_calls += self.calls;
        summary.saturated_reads += self.saturated;
        summary.counts.wakeups += self.wakeups;
        summary.counts.spurious += self.spurious;
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
        let mut read = pin!(async {
            if index == 0 {
                poll_fn(|cx| efd.poll_read(cx)).await
            } else {
                efd.read().await
            }
        });
        let mut polls = 0;
        let counted = poll_fn(|cx| {
            polls += 1;
            read.as_mut().poll(cx)
        });
        let value = tokio::select! {
            biased;
            _ = stop.wait_for(|stopped| *stopped) => None,
            value = counted => Some(value),
        };
        tally.polled(polls, value.is_some());
        match value {
            Some(value) => tally.take(value.map_err(io_fail("read"))?),
            None => return Ok(tally),
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
/// still waiting must empty the counter within `t` ([`Ctx::t`]). How long
/// that took (checked every millisecond) is a pending wait for the report.
async fn drained_by_readers(
    efd: &AsyncEventFd,
    readers: usize,
    t: Duration,
    summary: &mut Summary,
) -> Checked<()> {
    let start = Instant::now();
    while peek(efd)?.0 {
        summary.counts.max_wait = summary.counts.max_wait.max(start.elapsed());
        if start.elapsed() > t {
            return fail(format!(
                "lost wakeup: a count stayed pending for {t:?} with {readers} readers waiting"
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
        within(READER_STOP, "a reader to stop", handle)
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
impl From<crate::kernel_rigs::RigError> for Halt {
    fn from(e: crate::kernel_rigs::RigError) -> Halt {
        match e {
            crate::kernel_rigs::RigError::Missing(reason) => Halt::Skip(reason),
            crate::kernel_rigs::RigError::Failed(message) => Halt::Fail(message),
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
pub(super) fn io_uring_rings(ctx: &Arc<Ctx>) -> Step {
    const RINGS: u64 = 3;
    let per_ring = 20_000 * ctx.scale();
    let mut summary = Summary::default();
    let run = FLAVORS.iter().enumerate().try_for_each(|(i, &flavor)| {
        let readers = match flavor {
            Flavor::CurrentThread => ctx.threads(2),
            Flavor::MultiThread => ctx.threads(3),
        };
        // The rings' pauses, a stream per flavor.
        let seed = ctx.rng(i as u64).next_u64();
        let t = ctx.t();
        let part = watched(&format!("on {flavor:?}"), move || {
            let mut part = Summary::default();
            runtime(flavor)?.block_on(s17_one(seed, RINGS, per_ring, readers, t, &mut part))?;
            Ok(part)
        })?;
        summary.merge(part);
        Ok(())
    });
    summary.detail = format!(
        "{RINGS} rings x {per_ring} NOPs on each flavor, read in {} reads",
        summary.counts.read_calls
    );
    settle(ctx, run.map(|()| summary))
}

async fn s17_one(
    seed: u64,
    rings: u64,
    per_ring: u64,
    readers: usize,
    t: Duration,
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
        summary.signalled(completed);
    }
    drained_by_readers(&efd, readers, t, summary).await?;
    stop_readers(&efd, &stop, reading, summary).await
}
