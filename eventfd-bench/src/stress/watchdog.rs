//! The watchdog of the liveness check (see [the engine](super)): a thread
//! that fails the scenario when a watched fd stays readable for T while no
//! read makes progress and its waiters sleep (a lost wakeup).

use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};

use super::ctx::{ns_since, Ctx, Tally};

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
            a.store(ns_since(self.epoch), Ordering::Relaxed);
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

/// Waiters on threads mark progress and sleep on the `Watch` itself.
impl std::ops::Deref for Watch<'_> {
    type Target = Probe;

    fn deref(&self) -> &Probe {
        &self.probe
    }
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

    pub(super) fn finish(&self) {
        self.done.store(true, Ordering::SeqCst);
    }

    /// The watchdog loop; `release` unblocks every waiter and writer of the
    /// round (called after a failure or at the deadline, and repeatedly
    /// until the round ends).
    pub(super) fn run(&self, ctx: &Ctx, release: &dyn Fn()) {
        let start = Instant::now();
        let interval = Duration::from_millis(if self.fds.len() > 64 { 20 } else { 2 });
        let mut clock = AwakeClock::new(interval);
        let mut since: Vec<Option<(Duration, u64)>> = vec![None; self.fds.len()];
        // Per-fd readers: when any of them last made progress (see `per_fd`).
        let (mut total, mut moved) = (0, Duration::ZERO);
        let mut released: Option<Instant> = None;
        let mut longest = Tally::default();
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
                let pause = if released.is_some() { 20 } else { 1 };
                thread::sleep(Duration::from_millis(pause));
                continue;
            }
            // Timeout 0: the watchdog never joins a wait queue it watches.
            let mut pollfds: Vec<PollFd<'_>> = self
                .fds
                .iter()
                .map(|fd| PollFd::new(*fd, PollFlags::POLLIN))
                .collect();
            if nix::poll::poll(&mut pollfds, PollTimeout::ZERO).is_ok() {
                let now = clock.tick();
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
                            longest.waited(pending);
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
        ctx.merge(&longest);
    }

    fn sleepers(&self) -> String {
        if self.waiter_names.is_empty() {
            return String::new();
        }
        let now = ns_since(self.probe.epoch);
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

/// How much longer than its interval the watchdog may sleep before the gap
/// counts as starvation rather than pending time.
const STARVED: Duration = Duration::from_millis(50);

/// The clock of pending time: time since the watchdog started, less the gaps
/// in which it was starved of the CPU. A process that is not scheduled cannot
/// wake, so that time says the machine is busy, not that a wakeup was lost.
struct AwakeClock {
    last: Instant,
    awake: Duration,
    interval: Duration,
}

impl AwakeClock {
    fn new(interval: Duration) -> AwakeClock {
        AwakeClock {
            last: Instant::now(),
            awake: Duration::ZERO,
            interval,
        }
    }

    fn tick(&mut self) -> Duration {
        let now = Instant::now();
        let gap = now - self.last;
        self.last = now;
        self.awake += if gap > self.interval + STARVED {
            self.interval
        } else {
            gap
        };
        self.awake
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
    info.unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("eventfd-count:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .map_or_else(|| "?".to_string(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_starved_gap_adds_one_interval_and_a_short_one_adds_itself() {
        let interval = Duration::from_millis(2);
        let mut clock = AwakeClock::new(interval);
        // A stop far longer than the interval (SIGSTOP, a starved CPU).
        thread::sleep(interval + STARVED + Duration::from_millis(100));
        assert_eq!(clock.tick(), interval);
        // A gap within the slack counts whole (or, if this machine was
        // starved here too, as one interval): never more than the slack.
        thread::sleep(Duration::from_millis(5));
        let awake = clock.tick();
        assert!(
            awake > interval && awake <= interval + interval + STARVED,
            "{awake:?}"
        );
    }
}
