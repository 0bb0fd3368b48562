//! The watchdog: a thread that samples every watched fd with `poll(2)`
//! (timeout 0, so it never joins a wait queue) and fails the scenario when
//! an fd stays readable for T while no read makes progress and its waiters
//! sleep (a lost wakeup). A round that outlives its deadline with no lost
//! wakeup seen is INCONCLUSIVE: the machine was slow.

use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};

use super::ctx::Ctx;

/// The parts of a [`Watch`] that waiters update: shareable with tokio tasks.
#[derive(Clone)]
pub(super) struct Probe {
    progress: Arc<[AtomicU64]>,
    /// ns since `epoch` at which each waiter went to sleep; 0 = awake.
    asleep: Arc<[AtomicU64]>,
    epoch: Instant,
}

impl Probe {
    pub(super) fn progress(&self, fd: usize) {
        if let Some(p) = self.progress.get(fd) {
            p.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(super) fn sleep(&self, waiter: usize) {
        if let Some(a) = self.asleep.get(waiter) {
            let ns = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
            a.store(ns.max(1), Ordering::Relaxed);
        }
    }

    pub(super) fn wake(&self, waiter: usize) {
        if let Some(a) = self.asleep.get(waiter) {
            a.store(0, Ordering::Relaxed);
        }
    }
}

/// The watchdog's view of a round: the fds that must not stay readable while
/// nobody reads them, and the waiters that may be asleep.
pub(super) struct Watch<'a> {
    pub(super) fds: Vec<BorrowedFd<'a>>,
    fd_names: Vec<String>,
    waiter_names: Vec<String>,
    probe: Probe,
    /// Waiter `i` is the one reader of fd `i`: then an fd readable for T
    /// is a lost wakeup only if no reader made progress in that time and its
    /// own was not woken (a woken task yet to run is a busy machine).
    per_fd: bool,
    done: AtomicBool,
}

impl<'a> Watch<'a> {
    pub(super) fn new(fds: Vec<(BorrowedFd<'a>, String)>, waiter_names: Vec<String>) -> Watch<'a> {
        let (fds, fd_names): (Vec<_>, Vec<_>) = fds.into_iter().unzip();
        let progress = fds.iter().map(|_| AtomicU64::new(0)).collect();
        let asleep = waiter_names.iter().map(|_| AtomicU64::new(0)).collect();
        Watch {
            fds,
            fd_names,
            waiter_names,
            probe: Probe {
                progress,
                asleep,
                epoch: Instant::now(),
            },
            per_fd: false,
            done: AtomicBool::new(false),
        }
    }

    /// Fds with one reader each, waiter `i` reading fd `i`.
    pub(super) fn per_fd(fds: Vec<(BorrowedFd<'a>, String)>) -> Watch<'a> {
        let names = fds
            .iter()
            .map(|(_, name)| format!("the reader of {name}"))
            .collect();
        Watch {
            per_fd: true,
            ..Watch::new(fds, names)
        }
    }

    pub(super) fn one(fd: BorrowedFd<'a>, waiters: usize, waiter: &str) -> Watch<'a> {
        Watch::new(
            vec![(fd, "the eventfd".to_string())],
            (0..waiters).map(|i| format!("{waiter} {i}")).collect(),
        )
    }

    pub(super) fn probe(&self) -> Probe {
        self.probe.clone()
    }

    pub(super) fn progress(&self, fd: usize) {
        self.probe.progress(fd);
    }

    pub(super) fn sleep(&self, waiter: usize) {
        self.probe.sleep(waiter);
    }

    pub(super) fn wake(&self, waiter: usize) {
        self.probe.wake(waiter);
    }

    pub(super) fn finish(&self) {
        self.done.store(true, Ordering::SeqCst);
    }

    /// The watchdog loop; `release` unblocks every waiter and writer of the
    /// round (called after a failure or at the deadline, and repeatedly
    /// until the round ends).
    pub(super) fn run(&self, ctx: &Ctx, release: &dyn Fn()) {
        let start = Instant::now();
        let interval = if self.fds.len() > 64 {
            Duration::from_millis(20)
        } else {
            Duration::from_millis(2)
        };
        let mut since: Vec<Option<(Instant, u64)>> = vec![None; self.fds.len()];
        // Per-fd readers: when any of them last made progress (see `per_fd`).
        let (mut total, mut moved) = (0, Instant::now());
        let mut released: Option<Instant> = None;
        while !self.done.load(Ordering::SeqCst) {
            if start.elapsed() > ctx.deadline() && !ctx.halted() {
                ctx.time_out(format!(
                    "{}: the round ran out its deadline of {:?} (scaled to this machine) with \
                     every waiter woken in time{}",
                    ctx.id(),
                    ctx.deadline(),
                    self.sleepers()
                ));
            }
            if ctx.stopped() {
                if ctx.halted() {
                    release();
                    let since = *released.get_or_insert_with(Instant::now);
                    escape_if_stuck(ctx, since.elapsed());
                }
                thread::sleep(Duration::from_millis(if released.is_some() {
                    20
                } else {
                    1
                }));
                continue;
            }
            let mut pollfds: Vec<PollFd<'_>> = self
                .fds
                .iter()
                .map(|fd| PollFd::new(*fd, PollFlags::POLLIN))
                .collect();
            if nix::poll::poll(&mut pollfds, PollTimeout::ZERO).is_ok() {
                let now = Instant::now();
                if self.per_fd {
                    let sum = self
                        .probe
                        .progress
                        .iter()
                        .map(|p| p.load(Ordering::Relaxed))
                        .sum();
                    if sum != total {
                        (total, moved) = (sum, now);
                    }
                }
                for (i, pfd) in pollfds.iter().enumerate() {
                    let readable = pfd.revents().is_some_and(|r| r.contains(PollFlags::POLLIN));
                    let progress = self.probe.progress[i].load(Ordering::Relaxed);
                    if !readable {
                        since[i] = None;
                        continue;
                    }
                    match since[i] {
                        Some((t0, p)) if p == progress => {
                            // With a reader per fd, a busy runtime serves
                            // the fds in turn: a count waits its turn while
                            // the others progress; a lost wakeup shows once
                            // they are done.
                            let from = if self.per_fd { t0.max(moved) } else { t0 };
                            let pending = now - from;
                            ctx.note_pending(pending);
                            let woken =
                                self.per_fd && self.probe.asleep[i].load(Ordering::Relaxed) == 0;
                            if pending >= ctx.liveness() && !woken {
                                ctx.fail(format!(
                                    "{}: lost wakeup: {} stayed readable for {:?} (count left {}) \
                                     with no read{}",
                                    ctx.id(),
                                    self.fd_names[i],
                                    pending,
                                    count_left(self.fds[i]),
                                    self.sleepers()
                                ));
                                break;
                            }
                        }
                        _ => since[i] = Some((now, progress)),
                    }
                }
            }
            thread::sleep(interval);
        }
    }

    fn sleepers(&self) -> String {
        if self.waiter_names.is_empty() {
            return String::new();
        }
        let now = u64::try_from(self.probe.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let mut asleep: Vec<(u64, &str)> = self
            .probe
            .asleep
            .iter()
            .zip(&self.waiter_names)
            .filter_map(|(a, name)| {
                let t = a.load(Ordering::Relaxed);
                (t != 0).then(|| (now.saturating_sub(t), name.as_str()))
            })
            .collect();
        if asleep.is_empty() {
            return "; no waiter was asleep".to_string();
        }
        asleep.sort_unstable_by_key(|a| std::cmp::Reverse(a.0));
        let list: Vec<String> = asleep
            .iter()
            .take(8)
            .map(|(ns, name)| format!("{name} for {:?}", Duration::from_nanos(*ns)))
            .collect();
        format!(
            "; asleep: {}{}",
            list.join(", "),
            if asleep.len() > 8 { ", ..." } else { "" }
        )
    }
}

/// Ends the process when a round released `released` ago still has not
/// ended: a thread that never returns (a task spinning inside `poll`, which
/// no release reaches) would otherwise hang the run, or outlive its
/// scenario and spoil the next one's checks.
fn escape_if_stuck(ctx: &Ctx, released: Duration) {
    let grace = (ctx.liveness() * 4).max(Duration::from_secs(10));
    if released > grace.mul_f64(super::calibration().slowness) {
        eprintln!(
            "{}: FAIL: the round was released {released:?} ago and has not ended (a task that \
             never yields?); {}; ending the process, since nothing else can stop its threads",
            ctx.id(),
            ctx.failure()
                .or_else(|| ctx.inconclusive())
                .unwrap_or_default()
        );
        std::process::exit(1);
    }
}

/// The counter of an eventfd, read from `/proc/self/fdinfo` without
/// consuming it (`?` if unavailable).
pub(super) fn count_left(fd: BorrowedFd<'_>) -> String {
    use std::os::fd::AsRawFd;
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()));
    info.ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("eventfd-count:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .map_or_else(|| "?".to_string(), |v| v.to_string())
}
