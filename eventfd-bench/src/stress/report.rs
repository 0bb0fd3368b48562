//! What a scenario did ([`Tally`]), and its outcome ([`Report`], [`Verdict`]).

use std::fmt;
use std::time::Duration;

use serde::{Serialize, Serializer};

use super::Calibration;

/// What a thread, a task or a whole scenario did: merged into the
/// scenario's totals, which its [`Report`] holds.
///
/// # Examples
///
/// ```
/// use eventfd_bench::stress::{run, Config};
///
/// let tally = run("S3", &Config::default()).tally;
/// assert_eq!(tally.reads, tally.adds);
/// ```
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// The sum of every value added (u128: some scenarios add `MAX_COUNT`).
    pub adds: u128,
    /// The sum of every value read. Equal to `adds` when the scenario passed.
    pub reads: u128,
    /// How many successful add calls (write syscalls, `add` futures, kernel
    /// signals).
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
    #[serde(rename = "max_pending_wait_us", serialize_with = "micros")]
    pub max_pending_wait: Duration,
}

impl Tally {
    pub(crate) fn add(&mut self, n: u64) {
        self.add_each(1, n);
    }

    /// `calls` adds of `n` each (a kernel signal is an add of 1).
    pub(crate) fn add_each(&mut self, calls: u64, n: u64) {
        self.adds += u128::from(calls) * u128::from(n);
        self.add_calls += calls;
    }

    pub(crate) fn read(&mut self, n: u64) {
        self.reads += u128::from(n);
        self.read_calls += 1;
    }

    pub(crate) fn wake(&mut self) {
        self.wakeups += 1;
    }

    pub(crate) fn spurious(&mut self) {
        self.spurious += 1;
    }

    pub(crate) fn waited(&mut self, d: Duration) {
        self.max_pending_wait = self.max_pending_wait.max(d);
    }

    /// Adds `other` in: the sums and counts add up, the longest wait stays.
    pub(crate) fn merge(&mut self, other: &Tally) {
        self.adds += other.adds;
        self.reads += other.reads;
        self.add_calls += other.add_calls;
        self.read_calls += other.read_calls;
        self.wakeups += other.wakeups;
        self.spurious += other.spurious;
        self.waited(other.max_pending_wait);
    }
}

/// A scenario's verdict. In `--json` it is the keys `passed`, `failure`,
/// `skipped` and `inconclusive` (the message or reason, or null).
///
/// # Examples
///
/// ```
/// use eventfd_bench::stress::Verdict;
///
/// let skip = Verdict::Skip("no /dev/kvm".to_string());
/// assert_eq!(skip.to_string(), "SKIP: no /dev/kvm");
/// assert_eq!((skip.word(), skip.reason()), ("SKIP", Some("no /dev/kvm")));
/// assert_eq!((Verdict::Pass.word(), Verdict::Pass.reason()), ("PASS", None));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Verdict {
    /// The scenario ran and every check passed.
    #[default]
    Pass,
    /// A check failed: the message ends with the seed and how to replay it
    /// (`EVENTFD_STRESS_SEED=<seed>`).
    Fail(String),
    /// The scenario could not run here (io_uring disabled, no `/dev/kvm`):
    /// nothing was checked, so it has not passed; it has not failed either.
    Skip(String),
    /// No check failed, but the round could not decide: it ran out its
    /// deadline while every waiter was woken in time (a slow machine, not
    /// a lost wakeup), or the machine is too slow to tell a spin from an
    /// honest wait. Not a pass.
    Inconclusive(String),
}

impl Verdict {
    /// The verdict in one word: `"PASS"`, `"FAIL"`, `"SKIP"` or
    /// `"INCONCLUSIVE"` (see [`Verdict`] for an example).
    pub fn word(&self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail(_) => "FAIL",
            Verdict::Skip(_) => "SKIP",
            Verdict::Inconclusive(_) => "INCONCLUSIVE",
        }
    }

    /// The failure message or the reason; `None` for a PASS (see
    /// [`Verdict`] for an example).
    pub fn reason(&self) -> Option<&str> {
        match self {
            Verdict::Pass => None,
            Verdict::Fail(why) | Verdict::Skip(why) | Verdict::Inconclusive(why) => Some(why),
        }
    }

    /// How much a verdict weighs when passes are added up: the heaviest wins.
    fn weight(&self) -> u8 {
        match self {
            Verdict::Pass => 0,
            Verdict::Skip(_) => 1,
            Verdict::Inconclusive(_) => 2,
            Verdict::Fail(_) => 3,
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.word())?;
        match self.reason() {
            Some(why) => write!(f, ": {why}"),
            None => Ok(()),
        }
    }
}

impl Serialize for Verdict {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut out = s.serialize_struct("Verdict", 4)?;
        out.serialize_field("passed", &(*self == Verdict::Pass))?;
        let reason = |word: &str| self.reason().filter(|_| self.word() == word);
        out.serialize_field("failure", &reason("FAIL"))?;
        out.serialize_field("skipped", &reason("SKIP"))?;
        out.serialize_field("inconclusive", &reason("INCONCLUSIVE"))?;
        out.end()
    }
}

/// The outcome of one scenario (or of several passes of it, added up with
/// [`Report::add_pass`]). Serialized as one line of `eventfd-bench stress
/// --json`.
///
/// # Examples
///
/// ```
/// use eventfd_bench::stress::{run, Config};
///
/// let report = run("S3", &Config::default());
/// assert_eq!(report.id, "S3");
/// assert!(report.passed(), "{report}");
/// println!("replay with EVENTFD_STRESS_SEED={}", report.seed);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    /// The scenario id, `"S1"` to `"S19"` (or the unknown id asked for).
    pub id: String,
    /// The scenario's name.
    pub name: String,
    /// How many rounds ran.
    pub rounds: u64,
    /// What the scenario did: sums, calls, wakeups, the longest pending wait.
    #[serde(flatten)]
    pub tally: Tally,
    /// Wall time of the run.
    #[serde(rename = "elapsed_ms", serialize_with = "millis")]
    pub elapsed: Duration,
    /// PASS, FAIL, SKIP or INCONCLUSIVE, with the message or the reason.
    #[serde(flatten)]
    pub verdict: Verdict,
    /// The seed of the run's random choices: [`Config::seed`](super::Config::seed)
    /// or a fresh one.
    pub seed: u64,
    /// The process's open fds of the kinds scenarios make (eventfds, epoll,
    /// io_uring, KVM, sockets) just before the scenario.
    pub fds_before: usize,
    /// The same after the scenario, its threads joined and its runtimes
    /// dropped: a scenario that leaves an fd open (or closes one it did not
    /// open) fails.
    pub fds_after: usize,
    /// The process's resident set size just before the scenario, in bytes
    /// (`VmRSS`; 0 where `/proc` is unavailable).
    pub rss_before: u64,
    /// The same after the scenario. Reported, not judged: the allocator keeps
    /// freed memory, so growth over one run is not a leak; growth over many
    /// rounds of a long run is worth a look.
    pub rss_after: u64,
    /// What this machine measured before the first scenario, which the
    /// deadlines and S18's spin checks scale from.
    pub calibration: Calibration,
}

impl Report {
    /// A report of scenario `id` with `seed` before any round.
    pub(super) fn new(id: &str, name: &str, seed: u64) -> Report {
        Report {
            id: id.to_string(),
            name: name.to_string(),
            seed,
            ..Report::default()
        }
    }

    /// Returns whether the verdict is PASS (a SKIP has not passed; see
    /// [`Report::failed`]).
    ///
    /// # Examples
    ///
    /// ```
    /// let report = eventfd_bench::stress::run("S99", &Default::default());
    /// assert!(!report.passed());
    /// assert!(report.failed());
    /// ```
    pub fn passed(&self) -> bool {
        self.verdict == Verdict::Pass
    }

    /// Returns whether a check failed: the FAIL verdict.
    ///
    /// # Examples
    ///
    /// ```
    /// let report = eventfd_bench::stress::run("S3", &Default::default());
    /// assert!(!report.failed(), "{report}");
    /// ```
    pub fn failed(&self) -> bool {
        matches!(self.verdict, Verdict::Fail(_))
    }

    /// Adds a later pass of the same scenario: the counts add up, the first
    /// of the heaviest verdicts stays (a FAIL with its pass's seed), the fds
    /// and RSS span the first pass to the last.
    ///
    /// # Examples
    ///
    /// ```
    /// use eventfd_bench::stress::{run, Config};
    ///
    /// let mut total = run("S3", &Config::default());
    /// let second = run("S3", &Config::default());
    /// let adds = total.tally.adds + second.tally.adds;
    /// total.add_pass(second);
    /// assert_eq!((total.rounds, total.tally.adds), (2, adds));
    /// ```
    pub fn add_pass(&mut self, pass: Report) {
        self.rounds += pass.rounds;
        self.tally.merge(&pass.tally);
        self.elapsed += pass.elapsed;
        if pass.verdict.weight() > self.verdict.weight() {
            self.verdict = pass.verdict;
            self.seed = pass.seed;
        }
        self.fds_after = pass.fds_after;
        self.rss_after = pass.rss_after;
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MIB: f64 = 1024.0 * 1024.0;
        let t = &self.tally;
        write!(
            f,
            "{} {}: {} rounds, adds {} ({} calls), reads {} ({} calls), wakeups {}, spurious {}, \
             longest pending wait {:?}, {:?}, fds {} -> {}, RSS {:.1} -> {:.1} MiB, round trip \
             {:?} ({:.1}x the reference), seed {}: {}",
            self.id,
            self.name,
            self.rounds,
            t.adds,
            t.add_calls,
            t.reads,
            t.read_calls,
            t.wakeups,
            t.spurious,
            t.max_pending_wait,
            self.elapsed,
            self.fds_before,
            self.fds_after,
            self.rss_before as f64 / MIB,
            self.rss_after as f64 / MIB,
            Duration::from_nanos(self.calibration.round_trip_ns),
            self.calibration.slowness,
            self.seed,
            self.verdict,
        )
    }
}

fn micros<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u128(d.as_micros())
}

fn millis<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u128(d.as_millis())
}

/// The replay hint that ends every failure message.
pub(super) fn replay(seed: u64) -> String {
    format!("[seed {seed}; replay with EVENTFD_STRESS_SEED={seed}]")
}
