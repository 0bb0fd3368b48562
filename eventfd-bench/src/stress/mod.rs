//! The stress-scenario engine: proof, on the machine it runs on, that no layer
//! (kernel epoll, `poll(2)`, blocking syscalls, mio, tokio, this crate's own
//! readiness handling) loses a wakeup or a count.
//!
//! Sixteen scenarios, `S1` to `S16` (see [`SCENARIOS`]), each drive one
//! topology of writers and waiters over eventfds and check:
//!
//! - **conservation**: the sum of every value read equals the sum of every
//!   value added, exactly;
//! - **liveness**: while a counter is non-zero, some waiter wakes within
//!   [`Config::liveness`] (2 s by default). A watchdog thread samples every
//!   watched fd with `poll(2)` (timeout 0, so it never joins a wait queue); an
//!   fd that stays readable for that long while no read makes progress is a
//!   lost wakeup, reported with the scenario, the count left and the waiters
//!   asleep at that moment. Waiters never wake on a short timeout (except in
//!   S7, whose subject is the timeout), so a lost wakeup cannot be hidden by
//!   a re-poll; async reads cancelled by a timer never let the timer's own
//!   wakeup complete them (`select!` is `biased` with the timer first);
//! - **work**: every round makes at least one add, so no check passes on
//!   an empty run;
//! - scenario-specific properties (each write produces its own edge, a re-arm
//!   with a count reports at once, a stale readiness guard does not clear live
//!   readiness, ...).
//!
//! Wakeups and spurious wakeups (a waiter woke, or a read future was polled
//! again, and found nothing) are counted; so is the longest wait while a
//! count was pending. Every scenario has a hard deadline as well, so nothing
//! hangs: threads blocked in syscalls are released (by writing to or reading
//! from the fds they wait on) and the run fails with a clear message.
//!
//! The same engine backs the `stress` test target and `eventfd-bench stress`.
//!
//! # Examples
//!
//! ```
//! use eventfd_bench::stress::{self, Config};
//!
//! let report = stress::run("S3", &Config::default());
//! assert!(report.passed(), "{report}");
//! assert_eq!(report.adds, report.reads);
//! ```
//!
//! # Errors
//!
//! Nothing here returns an error: a failed check, an I/O error or a hang is a
//! [`Report`] whose [`failure`](Report::failure) says what went wrong.

use std::fmt;
use std::io;
use std::os::fd::BorrowedFd;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};

mod epoll;
mod mio_src;
mod rt;
mod sys;

/// One stress scenario: its id, a short name and what it checks.
///
/// # Examples
///
/// ```
/// let s3 = eventfd_bench::stress::scenario("s3").expect("S3 exists");
/// assert_eq!(s3.id, "S3");
/// println!("{}: {}", s3.name, s3.topology);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scenario {
    /// `"S1"` to `"S16"`.
    pub id: &'static str,
    /// A short name, snake case, naming the topology.
    pub name: &'static str,
    /// The topology: who waits, who writes, through which layer.
    pub topology: &'static str,
    /// What the scenario checks beyond conservation and liveness.
    pub checks: &'static str,
}

/// The sixteen scenarios, in order.
///
/// # Examples
///
/// ```
/// let ids: Vec<&str> = eventfd_bench::stress::SCENARIOS.iter().map(|s| s.id).collect();
/// assert_eq!(ids.len(), 16);
/// assert_eq!(ids[0], "S1");
/// ```
pub const SCENARIOS: [Scenario; 16] = [
    Scenario {
        id: "S1",
        name: "level_triggered_epoll",
        topology: "level-triggered epoll: N writer threads add 1, R reader threads in epoll_wait on one epfd drain to WouldBlock",
        checks: "after draining, epoll_wait(0) reports nothing",
    },
    Scenario {
        id: "S2",
        name: "edge_triggered_epoll",
        topology: "edge-triggered epoll (EPOLLET): ping-pong with an ack, and two writes with no read between",
        checks: "each write produces its own edge; a single reader sees no spurious wakeup",
    },
    Scenario {
        id: "S3",
        name: "semaphore_edge_triggered",
        topology: "semaphore mode, read-only edge-triggered registration (mio Polls and tokio tasks): one add of N, M consumers",
        checks: "exactly N reads of 1; no count stranded after a read that left a count",
    },
    Scenario {
        id: "S4",
        name: "epoll_oneshot_rearm",
        topology: "EPOLLONESHOT: wait, drain, re-arm with EPOLL_CTL_MOD, writes landing between drain and re-arm",
        checks: "a re-arm with count > 0 reports at once",
    },
    Scenario {
        id: "S5",
        name: "epoll_exclusive",
        topology: "EPOLLEXCLUSIVE: M threads, each with its own epoll instance on the same eventfd",
        checks: "some waiter wakes for every write; no count stranded",
    },
    Scenario {
        id: "S6",
        name: "many_fds_many_sleepers",
        topology: "10 edge-triggered eventfds on one epfd, 10 threads in epoll_wait(maxevents = 1), all written at once",
        checks: "all wake within T, every round; each fd read exactly once per round",
    },
    Scenario {
        id: "S7",
        name: "timeout_boundary",
        topology: "a writer writes just before (or just after) a waiter's epoll_wait timeout expires",
        checks: "the event reaches some waiter every round",
    },
    Scenario {
        id: "S8",
        name: "poll_many_readers",
        topology: "poll(2) with R reader threads; POLLOUT at MAX_COUNT",
        checks: "POLLOUT absent at MAX_COUNT, and a POLLOUT waiter wakes after a read",
    },
    Scenario {
        id: "S9",
        name: "blocking_syscalls",
        topology: "blocking read/write syscalls under contention, blocked writers at MAX_COUNT released by a reader",
        checks: "every blocked call returns",
    },
    Scenario {
        id: "S10",
        name: "mio_source_churn",
        topology: "EventFd as a mio Source, with reregister/deregister churn during writes",
        checks: "no event for a deregistered or replaced token; a re-registration with a count reports it",
    },
    Scenario {
        id: "S11",
        name: "tokio_multi_thread_cancellation",
        topology: "tokio multi-thread runtime (2, 4, 8 workers): add tasks, plain-thread writers through try_clone, read tasks (counter and semaphore mode) cancelled at random by select!",
        checks: "conservation under cancellation",
    },
    Scenario {
        id: "S12",
        name: "tokio_current_thread_ping_pong",
        topology: "tokio current-thread runtime; writes only from another OS thread (eventfd -> epoll -> parked driver); ping-pong",
        checks: "every round's wake arrives; each read takes exactly that round's add",
    },
    Scenario {
        id: "S13",
        name: "runtime_shutdown_and_drop",
        topology: "runtime shutdown with pending read/add, Arc clones dropped while others wait, last drop",
        checks: "pending and later read/add return errors; dropping a clone never hangs the others; the last drop closes the fd",
    },
    Scenario {
        id: "S14",
        name: "stale_readiness_guard",
        topology: "a tokio readiness guard kept across more than 256 (and 32768) reactor events, then cleared",
        checks: "clearing the stale guard does not drop live readiness; the fd still wakes (tokio >= 1.54, 15-bit readiness tick)",
    },
    Scenario {
        id: "S15",
        name: "bad_input_under_load",
        topology: "u64::MAX adds, short buffers and adds at MAX_COUNT while writers and an epoll reader run",
        checks: "exact errors (InvalidInput, EINVAL, WouldBlock); conservation; no spurious wakeup for the single reader",
    },
    Scenario {
        id: "S16",
        name: "ten_thousand_fds",
        topology: "10,000 AsyncEventFds in one runtime, a reader task each, writer threads adding round-robin",
        checks: "every reader gets its exact share",
    },
];

/// Looks a scenario up by id, case-insensitively: `"S3"`, `"s3"` and `"3"`
/// all find S3.
///
/// # Examples
///
/// ```
/// use eventfd_bench::stress::scenario;
/// assert_eq!(scenario("16").map(|s| s.id), Some("S16"));
/// assert_eq!(scenario("S17"), None);
/// ```
///
/// # Errors
///
/// None: an unknown id gives `None`.
pub fn scenario(id: &str) -> Option<&'static Scenario> {
    let id = id.trim();
    let number = id
        .strip_prefix('S')
        .or_else(|| id.strip_prefix('s'))
        .unwrap_or(id);
    SCENARIOS.iter().find(|s| &s.id[1..] == number)
}

/// How hard and how long to stress.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use eventfd_bench::stress::Config;
///
/// let config = Config {
///     threads: Some(8),
///     ..Config::default()
/// };
/// assert_eq!(config.scale, 1);
/// assert_eq!(config.liveness, Duration::from_secs(2));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Multiplies the work of one round (1 = the default, seconds long for
    /// the whole suite). 0 is treated as 1.
    pub scale: u32,
    /// With `Some(d)`, rounds repeat until `d` has passed (at least one
    /// round); with `None`, one round.
    pub duration: Option<Duration>,
    /// Overrides the number of writer and reader threads (and tokio worker
    /// threads) where a scenario has a choice; `None` keeps each scenario's
    /// own numbers. More threads than cores oversubscribes the machine.
    pub threads: Option<usize>,
    /// T: the longest a count may stay pending with no waiter woken.
    pub liveness: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            scale: 1,
            duration: None,
            threads: None,
            liveness: Duration::from_secs(2),
        }
    }
}

impl Config {
    /// The default configuration with `scale` taken from the
    /// `EVENTFD_STRESS_SCALE` environment variable (default 1), and
    /// `threads` from `EVENTFD_STRESS_THREADS` (default: each scenario's
    /// own numbers), e.g. 8 to oversubscribe a 2-core machine.
    ///
    /// # Examples
    ///
    /// ```
    /// let config = eventfd_bench::stress::Config::from_env();
    /// assert!(config.scale >= 1);
    /// ```
    ///
    /// # Errors
    ///
    /// None: a missing, empty, zero or unparsable variable gives scale 1
    /// (or no thread override).
    pub fn from_env() -> Config {
        fn positive(name: &str) -> Option<u32> {
            std::env::var(name)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
                .filter(|&s| s > 0)
        }
        Config {
            scale: positive("EVENTFD_STRESS_SCALE").unwrap_or(1),
            threads: positive("EVENTFD_STRESS_THREADS").map(|t| t.min(1024) as usize),
            ..Config::default()
        }
    }

    fn scale(&self) -> u64 {
        u64::from(self.scale.max(1))
    }
}

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
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The scenario id, `"S1"` to `"S16"` (or the unknown id asked for).
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
    /// `None` if every check passed; otherwise the first failure.
    pub failure: Option<String>,
}

impl Report {
    /// Returns whether every check passed.
    ///
    /// # Examples
    ///
    /// ```
    /// let report = eventfd_bench::stress::run("S99", &Default::default());
    /// assert!(!report.passed());
    /// ```
    ///
    /// # Errors
    ///
    /// None.
    pub fn passed(&self) -> bool {
        self.failure.is_none()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {} rounds, adds {} ({} calls), reads {} ({} calls), wakeups {}, spurious {}, \
             longest pending wait {:?}, {:?}: ",
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
        )?;
        match &self.failure {
            None => write!(f, "PASS"),
            Some(msg) => write!(f, "FAIL: {msg}"),
        }
    }
}

/// Runs one scenario by id (as [`scenario`] parses it).
///
/// # Examples
///
/// ```
/// use eventfd_bench::stress::{run, Config};
///
/// let report = run("s3", &Config::default());
/// assert!(report.passed(), "{report}");
/// // S3 is semaphore mode: every read returned exactly 1.
/// assert_eq!(report.reads, u128::from(report.read_calls));
/// ```
///
/// # Errors
///
/// None: an unknown id, a failed check, an I/O error, a panic or a hang all
/// give a report whose `failure` says so.
pub fn run(id: &str, config: &Config) -> Report {
    let Some(sc) = scenario(id) else {
        return Report {
            id: id.to_string(),
            name: String::new(),
            rounds: 0,
            adds: 0,
            reads: 0,
            add_calls: 0,
            read_calls: 0,
            wakeups: 0,
            spurious: 0,
            max_pending_wait: Duration::ZERO,
            elapsed: Duration::ZERO,
            failure: Some(format!("unknown scenario {id:?} (expected S1 to S16)")),
        };
    };
    let ctx = Arc::new(Ctx::new(sc, config.clone()));
    let start = Instant::now();
    let mut rounds = 0;
    loop {
        ctx.stop.store(false, Ordering::SeqCst);
        ctx.live.store(0, Ordering::SeqCst);
        ctx.stamp.store(0, Ordering::SeqCst);
        let add_calls = ctx.totals().add_calls;
        let round = panic::catch_unwind(AssertUnwindSafe(|| run_round(&ctx)));
        if let Err(payload) = round {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".to_string());
            ctx.fail(format!("panicked: {msg}"));
        }
        rounds += 1;
        ctx.check_conservation();
        if ctx.totals().add_calls == add_calls && !ctx.failed() {
            ctx.fail(format!(
                "{}: round {rounds} added nothing, so it checked nothing",
                sc.id
            ));
        }
        if ctx.failed() {
            break;
        }
        match config.duration {
            Some(d) if start.elapsed() < d => {}
            _ => break,
        }
    }
    let totals = ctx.totals();
    let failure = ctx.failure();
    Report {
        id: sc.id.to_string(),
        name: sc.name.to_string(),
        rounds,
        adds: totals.added,
        reads: totals.read,
        add_calls: totals.add_calls,
        read_calls: totals.read_calls,
        wakeups: totals.wakeups,
        spurious: totals.spurious,
        max_pending_wait: totals.max_wait.max(Duration::from_nanos(
            ctx.max_pending_ns.load(Ordering::Relaxed),
        )),
        elapsed: start.elapsed(),
        failure,
    }
}

/// Runs every scenario in order, calling `progress` before each one.
///
/// # Examples
///
/// ```no_run
/// use eventfd_bench::stress::{run_all, Config};
///
/// let reports = run_all(&Config::default(), |s| eprintln!("running {}", s.id));
/// assert!(reports.iter().all(|r| r.passed()));
/// ```
///
/// # Errors
///
/// None: see [`run`].
pub fn run_all(config: &Config, mut progress: impl FnMut(&Scenario)) -> Vec<Report> {
    SCENARIOS
        .iter()
        .map(|sc| {
            progress(sc);
            run(sc.id, config)
        })
        .collect()
}

fn run_round(ctx: &Arc<Ctx>) {
    match ctx.scenario.id {
        "S1" => epoll::s1(ctx),
        "S2" => epoll::s2(ctx),
        "S3" => {
            mio_src::s3(ctx);
            if !ctx.failed() {
                rt::s3(ctx);
            }
        }
        "S4" => epoll::s4(ctx),
        "S5" => epoll::s5(ctx),
        "S6" => epoll::s6(ctx),
        "S7" => epoll::s7(ctx),
        "S8" => sys::s8(ctx),
        "S9" => sys::s9(ctx),
        "S10" => mio_src::s10(ctx),
        "S11" => rt::s11(ctx),
        "S12" => rt::s12(ctx),
        "S13" => rt::s13(ctx),
        "S14" => rt::s14(ctx),
        "S15" => sys::s15(ctx),
        "S16" => rt::s16(ctx),
        other => ctx.fail(format!("no engine for {other}")),
    }
}

// ---------------------------------------------------------------------------
// Shared machinery.

/// What one thread or task did; merged into the scenario's totals.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    added: u128,
    read: u128,
    add_calls: u64,
    read_calls: u64,
    wakeups: u64,
    spurious: u64,
    max_wait: Duration,
}

impl Tally {
    fn add(&mut self, n: u64) {
        self.added += u128::from(n);
        self.add_calls += 1;
    }

    fn read(&mut self, n: u64) {
        self.read += u128::from(n);
        self.read_calls += 1;
    }

    fn wake(&mut self) {
        self.wakeups += 1;
    }

    fn spurious(&mut self) {
        self.spurious += 1;
    }

    fn waited(&mut self, d: Duration) {
        self.max_wait = self.max_wait.max(d);
    }

    fn merge(&mut self, other: &Tally) {
        self.added += other.added;
        self.read += other.read;
        self.add_calls += other.add_calls;
        self.read_calls += other.read_calls;
        self.wakeups += other.wakeups;
        self.spurious += other.spurious;
        self.max_wait = self.max_wait.max(other.max_wait);
    }
}

/// One scenario run: configuration, totals, the first failure, the stop flag.
struct Ctx {
    scenario: &'static Scenario,
    cfg: Config,
    /// Set at the end of a round (normal or not): waiters exit when they see it.
    stop: AtomicBool,
    failure: Mutex<Option<String>>,
    totals: Mutex<Tally>,
    /// Progress of the current round: units read (where values are small).
    live: AtomicU64,
    /// When the oldest unread add was made (ns since `epoch`, 0 = none):
    /// writers stamp before adding, readers take it after reading.
    stamp: AtomicU64,
    max_pending_ns: AtomicU64,
    epoch: Instant,
}

impl Ctx {
    fn new(scenario: &'static Scenario, cfg: Config) -> Ctx {
        Ctx {
            scenario,
            cfg,
            stop: AtomicBool::new(false),
            failure: Mutex::new(None),
            totals: Mutex::new(Tally::default()),
            live: AtomicU64::new(0),
            stamp: AtomicU64::new(0),
            max_pending_ns: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    fn scale(&self) -> u64 {
        self.cfg.scale()
    }

    /// `default` threads, or the configured override.
    fn threads(&self, default: usize) -> usize {
        self.cfg.threads.unwrap_or(default).max(1)
    }

    fn t(&self) -> Duration {
        self.cfg.liveness
    }

    /// How long a waiter blocks before it checks for the end of the round by
    /// itself (it is normally released sooner through a stop fd). Longer than
    /// T, so a lost wakeup is caught by the watchdog before any re-poll.
    fn backstop(&self) -> Duration {
        self.t() * 3
    }

    /// The hard deadline of one round.
    fn deadline(&self) -> Duration {
        Duration::from_secs(60) * u32::try_from(self.scale()).unwrap_or(u32::MAX).min(1000)
            + self.t() * 4
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn finish(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Starts a part of a round that has waiters of its own: clears the
    /// stop flag (unless the scenario already failed) and the progress count.
    fn begin(&self) {
        if !self.failed() {
            self.stop.store(false, Ordering::SeqCst);
        }
        self.live.store(0, Ordering::SeqCst);
    }

    /// Records the first failure (later ones are dropped) and stops the round.
    fn fail(&self, msg: impl Into<String>) {
        let mut failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        if failure.is_none() {
            *failure = Some(msg.into());
        }
        drop(failure);
        self.finish();
    }

    fn failed(&self) -> bool {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Unwraps an I/O result, failing the scenario with `what` on error.
    fn ok<T>(&self, res: io::Result<T>, what: &str) -> Option<T> {
        match res {
            Ok(v) => Some(v),
            Err(e) => {
                self.fail(format!("{what}: {e} ({:?})", e.kind()));
                None
            }
        }
    }

    fn merge(&self, tally: &Tally) {
        self.totals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .merge(tally);
    }

    fn totals(&self) -> Tally {
        *self.totals.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check_conservation(&self) {
        let t = self.totals();
        if t.added != t.read && !self.failed() {
            self.fail(format!(
                "conservation: added {} but read {} ({} {})",
                t.added,
                t.read,
                t.added.abs_diff(t.read),
                if t.added > t.read {
                    "lost or stranded"
                } else {
                    "read twice"
                }
            ));
        }
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// A writer calls this just before an add: stamps the start of a pending
    /// period if none is open.
    fn stamp_add(&self) {
        if self.stamp.load(Ordering::Relaxed) == 0 {
            let _ =
                self.stamp
                    .compare_exchange(0, self.now_ns(), Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    /// A reader calls this just after a successful read: closes the pending
    /// period and records its length.
    fn stamp_read(&self, tally: &mut Tally) {
        let since = self.stamp.swap(0, Ordering::AcqRel);
        if since != 0 {
            tally.waited(Duration::from_nanos(self.now_ns().saturating_sub(since)));
        }
    }

    fn note_pending(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.max_pending_ns.fetch_max(ns, Ordering::Relaxed);
    }

    /// Waits until `live` reaches `target`; false if the round stopped first.
    fn wait_live(&self, target: u64) -> bool {
        let mut spins = 0u32;
        loop {
            if self.live.load(Ordering::SeqCst) >= target {
                return true;
            }
            if self.stopped() {
                return self.live.load(Ordering::SeqCst) >= target;
            }
            spins += 1;
            if spins < 64 {
                thread::yield_now();
            } else {
                thread::sleep(Duration::from_micros(100));
            }
        }
    }

    fn id(&self) -> &'static str {
        self.scenario.id
    }
}

/// Joins a scoped thread, turning a panic into a failure.
fn join<T: Default>(ctx: &Ctx, handle: thread::ScopedJoinHandle<'_, T>, what: &str) -> T {
    match handle.join() {
        Ok(v) => v,
        Err(_) => {
            ctx.fail(format!("{what} panicked"));
            T::default()
        }
    }
}

/// The parts of a [`Watch`] that waiters update: shareable with tokio tasks.
#[derive(Clone)]
struct Probe {
    progress: Arc<[AtomicU64]>,
    /// ns since `epoch` at which each waiter went to sleep; 0 = awake.
    asleep: Arc<[AtomicU64]>,
    epoch: Instant,
}

impl Probe {
    fn progress(&self, fd: usize) {
        if let Some(p) = self.progress.get(fd) {
            p.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn sleep(&self, waiter: usize) {
        if let Some(a) = self.asleep.get(waiter) {
            let ns = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
            a.store(ns.max(1), Ordering::Relaxed);
        }
    }

    fn wake(&self, waiter: usize) {
        if let Some(a) = self.asleep.get(waiter) {
            a.store(0, Ordering::Relaxed);
        }
    }
}

/// The watchdog's view of a round: the fds that must not stay readable while
/// nobody reads them, and the waiters that may be asleep.
struct Watch<'a> {
    fds: Vec<BorrowedFd<'a>>,
    fd_names: Vec<String>,
    waiter_names: Vec<String>,
    probe: Probe,
    done: AtomicBool,
}

impl<'a> Watch<'a> {
    fn new(fds: Vec<(BorrowedFd<'a>, String)>, waiter_names: Vec<String>) -> Watch<'a> {
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
            done: AtomicBool::new(false),
        }
    }

    fn one(fd: BorrowedFd<'a>, waiters: usize, waiter: &str) -> Watch<'a> {
        Watch::new(
            vec![(fd, "the eventfd".to_string())],
            (0..waiters).map(|i| format!("{waiter} {i}")).collect(),
        )
    }

    fn probe(&self) -> Probe {
        self.probe.clone()
    }

    fn progress(&self, fd: usize) {
        self.probe.progress(fd);
    }

    fn sleep(&self, waiter: usize) {
        self.probe.sleep(waiter);
    }

    fn wake(&self, waiter: usize) {
        self.probe.wake(waiter);
    }

    fn finish(&self) {
        self.done.store(true, Ordering::SeqCst);
    }

    /// The watchdog loop; `release` unblocks every waiter and writer of the
    /// round (called after a failure or at the deadline, and repeatedly
    /// until the round ends).
    fn run(&self, ctx: &Ctx, release: &dyn Fn()) {
        let start = Instant::now();
        let interval = if self.fds.len() > 64 {
            Duration::from_millis(20)
        } else {
            Duration::from_millis(2)
        };
        let mut since: Vec<Option<(Instant, u64)>> = vec![None; self.fds.len()];
        let mut released = false;
        while !self.done.load(Ordering::SeqCst) {
            if start.elapsed() > ctx.deadline() && !ctx.failed() {
                ctx.fail(format!(
                    "{}: the round did not finish within its deadline of {:?}{}",
                    ctx.id(),
                    ctx.deadline(),
                    self.sleepers()
                ));
            }
            if ctx.stopped() {
                if ctx.failed() {
                    release();
                    released = true;
                }
                thread::sleep(Duration::from_millis(if released { 20 } else { 1 }));
                continue;
            }
            let mut pollfds: Vec<PollFd<'_>> = self
                .fds
                .iter()
                .map(|fd| PollFd::new(*fd, PollFlags::POLLIN))
                .collect();
            if nix::poll::poll(&mut pollfds, PollTimeout::ZERO).is_ok() {
                let now = Instant::now();
                for (i, pfd) in pollfds.iter().enumerate() {
                    let readable = pfd.revents().is_some_and(|r| r.contains(PollFlags::POLLIN));
                    let progress = self.probe.progress[i].load(Ordering::Relaxed);
                    if !readable {
                        since[i] = None;
                        continue;
                    }
                    match since[i] {
                        Some((t0, p)) if p == progress => {
                            let pending = now - t0;
                            ctx.note_pending(pending);
                            if pending >= ctx.t() {
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

/// The counter of an eventfd, read from `/proc/self/fdinfo` without
/// consuming it (`?` if unavailable).
fn count_left(fd: BorrowedFd<'_>) -> String {
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

/// Whether `fd` is readable now (poll with timeout 0).
fn readable(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let mut p = [PollFd::new(fd, PollFlags::POLLIN)];
    nix::poll::poll(&mut p, PollTimeout::ZERO).map_err(io::Error::from)?;
    Ok(p[0]
        .revents()
        .is_some_and(|r| r.contains(PollFlags::POLLIN)))
}

fn timeout_ms(d: Duration) -> PollTimeout {
    PollTimeout::try_from(d).unwrap_or(PollTimeout::MAX)
}

/// A cheap xorshift64* generator: randomness for schedules, not secrets.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Rng((seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ u64::from(nanos)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-ish in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// True with probability 1/n.
    fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    /// Occasionally yields or sleeps briefly, so that waiters fall asleep
    /// between writes.
    fn jitter(&mut self) {
        match self.below(16) {
            0 => thread::sleep(Duration::from_micros(self.below(100))),
            1..=4 => thread::yield_now(),
            _ => {}
        }
    }
}

/// A writer thread's loop: `per` adds of 1 through its own dup.
fn writer_loop(ctx: &Ctx, efd: &async_eventfd::EventFd, per: u64, seed: u64) -> Tally {
    let mut tally = Tally::default();
    let mut rng = Rng::new(seed);
    for _ in 0..per {
        if ctx.stopped() {
            break;
        }
        ctx.stamp_add();
        loop {
            match efd.add(1) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && !ctx.stopped() => {
                    thread::yield_now();
                }
                Err(e) => {
                    ctx.fail(format!("{}: writer add(1): {e}", ctx.id()));
                    return tally;
                }
            }
        }
        tally.add(1);
        rng.jitter();
    }
    tally
}

/// `n` writer jobs, each running [`writer_loop`] on its own dup of `efd`
/// (seeds from `seed`). A failed dup fails the scenario and ends the list.
fn writer_jobs<'env>(
    ctx: &'env Ctx,
    efd: &async_eventfd::EventFd,
    n: usize,
    per: u64,
    seed: u64,
) -> Vec<Job<'env>> {
    let mut jobs: Vec<Job<'env>> = Vec::new();
    for w in 0..n {
        let Some(dup) = ctx.ok(efd.try_clone(), "try_clone for a writer") else {
            break;
        };
        jobs.push(Box::new(move || {
            writer_loop(ctx, &dup, per, seed + w as u64)
        }));
    }
    jobs
}

/// Reads once; `Some(v)` on success, `None` on `WouldBlock`, fails the
/// scenario on other errors.
fn read_once(ctx: &Ctx, efd: &async_eventfd::EventFd, tally: &mut Tally) -> Option<u64> {
    match efd.read() {
        Ok(v) => {
            tally.read(v);
            ctx.stamp_read(tally);
            ctx.live.fetch_add(v, Ordering::SeqCst);
            Some(v)
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
        Err(e) => {
            ctx.fail(format!("{}: read: {e}", ctx.id()));
            None
        }
    }
}

/// Reads until `WouldBlock`, marking progress on the watched fd `fd`;
/// returns whether anything was read.
fn drain(
    ctx: &Ctx,
    watch: &Watch<'_>,
    fd: usize,
    efd: &async_eventfd::EventFd,
    tally: &mut Tally,
) -> bool {
    let mut any = false;
    while read_once(ctx, efd, tally).is_some() {
        watch.progress(fd);
        any = true;
    }
    any
}

/// A waiter or writer body, run on a scoped thread.
type Job<'env> = Box<dyn FnOnce() -> Tally + Send + 'env>;

/// The common shape of the thread scenarios: a watchdog, waiters and
/// writers (or a driver that paces the round). Joins the writers, waits
/// until every watched fd is drained, ends the round, releases the waiters
/// (calling `release` until they have all returned) and merges every tally.
fn run_threads<'env>(
    ctx: &'env Ctx,
    watch: &'env Watch<'env>,
    release: &'env (dyn Fn() + Sync),
    waiters: Vec<Job<'env>>,
    writers: Vec<Job<'env>>,
) {
    thread::scope(|s| {
        let wd = s.spawn(|| watch.run(ctx, release));
        let waiters: Vec<_> = waiters.into_iter().map(|job| s.spawn(job)).collect();
        let writers: Vec<_> = writers.into_iter().map(|job| s.spawn(job)).collect();
        for w in writers {
            ctx.merge(&join(ctx, w, "a writer"));
        }
        for &fd in &watch.fds {
            wait_drained(ctx, fd);
        }
        ctx.finish();
        while !waiters.iter().all(|h| h.is_finished()) {
            release();
            thread::sleep(Duration::from_millis(1));
        }
        for w in waiters {
            ctx.merge(&join(ctx, w, "a waiter"));
        }
        watch.finish();
        join(ctx, wd, "the watchdog");
    });
}

/// After the last add: waits until `efd` is no longer readable (every count
/// read), or the round stopped.
fn wait_drained(ctx: &Ctx, efd: BorrowedFd<'_>) {
    let mut spins = 0u32;
    while !ctx.stopped() {
        match readable(efd) {
            Ok(false) => return,
            Ok(true) => {}
            Err(e) => {
                ctx.fail(format!("{}: poll for drained: {e}", ctx.id()));
                return;
            }
        }
        spins += 1;
        if spins < 64 {
            thread::yield_now();
        } else {
            thread::sleep(Duration::from_micros(100));
        }
    }
}
