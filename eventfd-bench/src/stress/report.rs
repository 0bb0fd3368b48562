//! The outcome of one scenario, as the engine reports it.

use std::fmt;
use std::time::Duration;

/// The outcome of one scenario.
///
/// # Examples
///
/// ```
/// use eventfd_bench::stress::{run, Config};
///
/// let report = run("S13", &Config::default());
/// assert_eq!(report.id, "S13");
/// assert!(report.failure.is_none(), "{report}");
/// println!("replay with EVENTFD_STRESS_SEED={}", report.seed);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The scenario id, `"S1"` to `"S19"` (or the unknown id asked for).
    pub id: String,
    /// The scenario's name.
    pub name: String,
    /// How many rounds ran.
    pub rounds: u64,
    /// The sum of every value added (u128: some scenarios add `MAX_COUNT`).
    pub adds: u128,
    /// The sum of every value read. Equal to `adds` when the scenario passed.
    pub reads: u128,
    /// How many successful add calls (write syscalls or `add` futures).
    pub add_calls: u64,
    /// How many successful read calls.
    pub read_calls: u64,
    /// Wakeups: a waiter returned from `epoll_wait`/`poll`/mio with an event
    /// for a data fd, or a read future was polled again after `Pending`.
    pub wakeups: u64,
    /// Wakeups that found nothing to read (`WouldBlock` at once, or the read
    /// future stayed `Pending`).
    pub spurious: u64,
    /// The longest wait observed while a count was pending (at least: the
    /// watchdog samples every few milliseconds, ping-pong scenarios measure
    /// each round exactly).
    pub max_pending_wait: Duration,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// `None` if every check passed; otherwise the first failure, ending
    /// with the seed and how to replay it (`EVENTFD_STRESS_SEED=<seed>`).
    pub failure: Option<String>,
    /// `Some(reason)` if the scenario could not run here (io_uring disabled,
    /// no `/dev/kvm`): the SKIP verdict. Nothing was checked, so a skipped
    /// scenario has not passed (see [`Report::passed`]); it has not failed
    /// either, unless `failure` is set too.
    pub skipped: Option<String>,
    /// The seed of the run's random choices: [`Config::seed`](super::Config::seed), or the fresh
    /// seed taken when that was `None`.
    pub seed: u64,
    /// The process's open fds of the kinds scenarios make (eventfds, epoll,
    /// io_uring, KVM, sockets: entries of `/proc/self/fd`) just before the
    /// scenario.
    pub fds_before: usize,
    /// The process's open fds after the scenario, its threads joined and its
    /// runtimes dropped. A scenario that passed has `fds_after ==
    /// fds_before`: one that leaves an fd open (or closes one it did not
    /// open) fails. Scenarios of one process run one at a time so that these
    /// figures are theirs alone.
    pub fds_after: usize,
    /// The process's resident set size just before the scenario, in bytes
    /// (`VmRSS`; 0 where `/proc` is unavailable).
    pub rss_before: u64,
    /// The resident set size after the scenario, in bytes. Reported, not
    /// judged: the allocator keeps freed memory, so growth over one run is
    /// not a leak; growth over many rounds of a long run is worth a look.
    pub rss_after: u64,
}

impl Report {
    /// Returns whether the scenario ran and every check passed: the PASS
    /// verdict. A skipped scenario (see [`Report::skipped`]) checked
    /// nothing, so it has not passed; [`Report::failed`] tells a SKIP from
    /// a FAIL.
    ///
    /// # Examples
    ///
    /// ```
    /// let report = eventfd_bench::stress::run("S99", &Default::default());
    /// assert!(!report.passed());
    /// assert!(report.failed());
    /// ```
    pub fn passed(&self) -> bool {
        self.failure.is_none() && self.skipped.is_none()
    }

    /// Returns whether a check failed: the FAIL verdict (which wins over a
    /// SKIP).
    ///
    /// # Examples
    ///
    /// ```
    /// let report = eventfd_bench::stress::run("S13", &Default::default());
    /// assert!(!report.failed(), "{report}");
    /// ```
    pub fn failed(&self) -> bool {
        self.failure.is_some()
    }

    /// The verdict in one word: `"PASS"`, `"FAIL"` or `"SKIP"`.
    ///
    /// # Examples
    ///
    /// ```
    /// let report = eventfd_bench::stress::run("S13", &Default::default());
    /// assert_eq!(report.verdict(), "PASS", "{report}");
    /// ```
    pub fn verdict(&self) -> &'static str {
        match (&self.failure, &self.skipped) {
            (Some(_), _) => "FAIL",
            (None, Some(_)) => "SKIP",
            (None, None) => "PASS",
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MIB: f64 = 1024.0 * 1024.0;
        write!(
            f,
            "{} {}: {} rounds, adds {} ({} calls), reads {} ({} calls), wakeups {}, spurious {}, \
             longest pending wait {:?}, {:?}, fds {} -> {}, RSS {:.1} -> {:.1} MiB, seed {}: ",
            self.id,
            self.name,
            self.rounds,
            self.adds,
            self.add_calls,
            self.reads,
            self.read_calls,
            self.wakeups,
            self.spurious,
            self.max_pending_wait,
            self.elapsed,
            self.fds_before,
            self.fds_after,
            self.rss_before as f64 / MIB,
            self.rss_after as f64 / MIB,
            self.seed,
        )?;
        match (&self.failure, &self.skipped) {
            (Some(msg), _) => write!(f, "FAIL: {msg}"),
            (None, Some(reason)) => write!(f, "SKIP: {reason}"),
            (None, None) => write!(f, "PASS"),
        }
    }
}

/// The replay hint that ends every failure message.
pub(super) fn replay(seed: u64) -> String {
    format!("[seed {seed}; replay with EVENTFD_STRESS_SEED={seed}]")
}
