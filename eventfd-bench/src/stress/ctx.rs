//! The run context of a scenario ([`Ctx`]), and the `Step` result that
//! scenario bodies return.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

pub(super) use super::report::Tally;
use super::{Config, Scenario};
use crate::rng::Rng;

/// Why a step ended early: a failed check (the message that becomes the
/// FAIL verdict), or a facility missing here (io_uring disabled, no
/// `/dev/kvm`: the SKIP verdict, with this reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Failure {
    Failed(String),
    Missing(String),
}

/// The result of a scenario step.
pub(super) type Step<T = ()> = Result<T, Failure>;

/// Fails the current step with a formatted message.
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::stress::ctx::Failure::Failed(format!($($arg)*)))
    };
}
pub(super) use bail;

/// Fails the current step with a formatted message unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            $crate::stress::ctx::bail!($($arg)*);
        }
    };
}
pub(super) use ensure;

/// `.context("what")` on an I/O (or nix) result: the error becomes the
/// failure "what: error (kind)".
pub(super) trait Context<T> {
    fn context(self, what: &str) -> Step<T>;
}

impl<T, E: Into<io::Error>> Context<T> for Result<T, E> {
    fn context(self, what: &str) -> Step<T> {
        self.map_err(|e| {
            let e: io::Error = e.into();
            Failure::Failed(format!("{what}: {e} ({:?})", e.kind()))
        })
    }
}

/// One scenario run.
pub(super) struct Ctx {
    pub(super) scenario: &'static Scenario,
    pub(super) cfg: Config,
    /// The run's seed: every random choice comes from [`Ctx::rng`].
    seed: u64,
    /// The current round (from 0), mixed into the random streams so that
    /// rounds differ while the run stays a function of the seed.
    round: AtomicU64,
    /// Set at the end of a round (normal or not): waiters exit when they see it.
    stop: AtomicBool,
    /// The first failure, the reason for a SKIP, and for an INCONCLUSIVE.
    failure: Mutex<Option<String>>,
    skipped: Mutex<Option<String>>,
    inconclusive: Mutex<Option<String>>,
    /// The round was released at its deadline (see [`Ctx::fail`]).
    timed_out: AtomicBool,
    totals: Mutex<Tally>,
    /// Progress of the current round: units read (where values are small).
    pub(super) live: AtomicU64,
    /// When the oldest unread add was made (ns since `epoch`, 0 = none):
    /// writers stamp before adding, readers take it after reading.
    stamp: AtomicU64,
    epoch: Instant,
    /// Every stream handed out (its number and first value), so that a test
    /// can compare two runs' random choices.
    #[cfg(test)]
    pub(super) handed: Mutex<Vec<(u64, u64)>>,
}

impl Ctx {
    pub(super) fn new(scenario: &'static Scenario, cfg: Config, seed: u64) -> Ctx {
        Ctx {
            scenario,
            cfg,
            seed,
            round: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            failure: Mutex::new(None),
            skipped: Mutex::new(None),
            inconclusive: Mutex::new(None),
            timed_out: AtomicBool::new(false),
            totals: Mutex::new(Tally::default()),
            live: AtomicU64::new(0),
            stamp: AtomicU64::new(0),
            epoch: Instant::now(),
            #[cfg(test)]
            handed: Mutex::new(Vec::new()),
        }
    }

    /// Resets the per-round state before round `round`.
    pub(super) fn start_round(&self, round: u64) {
        self.round.store(round, Ordering::SeqCst);
        self.stop.store(false, Ordering::SeqCst);
        self.live.store(0, Ordering::SeqCst);
        self.stamp.store(0, Ordering::SeqCst);
    }

    /// The random stream `stream` (see [`stream`](super::threads::stream))
    /// of this round, derived from the run seed.
    pub(super) fn rng(&self, stream: u64) -> Rng {
        let round = self.round.load(Ordering::SeqCst);
        let stream = (round << 32) ^ stream;
        let rng = Rng::stream(self.seed, stream);
        #[cfg(test)]
        lock(&self.handed).push((stream, rng.clone().next_u64()));
        rng
    }

    pub(super) fn scale(&self) -> u64 {
        u64::from(self.cfg.scale.max(1))
    }

    /// `default` threads, or the configured override.
    pub(super) fn threads(&self, default: usize) -> usize {
        self.cfg.threads.unwrap_or(default).max(1)
    }

    /// T (see [`Config::liveness`]).
    pub(super) fn liveness(&self) -> Duration {
        self.cfg.liveness
    }

    /// How long a waiter blocks before it checks for the end of the round by
    /// itself (it is normally released sooner through a stop fd). Longer than
    /// T, so a lost wakeup is caught by the watchdog before any re-poll.
    pub(super) fn backstop(&self) -> Duration {
        self.liveness() * 3
    }

    /// The hard deadline of one round: a minute per unit of scale on a fast
    /// machine, times the [`slowness`](super::Calibration::slowness) of this
    /// one, plus 4 T.
    pub(super) fn deadline(&self) -> Duration {
        let scale = u32::try_from(self.scale()).unwrap_or(u32::MAX).min(1000);
        (Duration::from_secs(60) * scale).mul_f64(super::calibration().slowness)
            + self.liveness() * 4
    }

    pub(super) fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    pub(super) fn finish(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Starts a part of a round that has waiters of its own: clears the
    /// stop flag (unless the scenario already failed) and the progress count.
    pub(super) fn begin(&self) {
        if !self.failed() {
            self.stop.store(false, Ordering::SeqCst);
        }
        self.live.store(0, Ordering::SeqCst);
    }

    /// Records the first failure (later ones are dropped) and stops the
    /// round; after a release at the deadline, failures are the release's
    /// doing, not a fault, and are dropped.
    pub(super) fn fail(&self, msg: impl Into<String>) {
        if self.timed_out.load(Ordering::SeqCst) {
            return;
        }
        lock(&self.failure).get_or_insert_with(|| msg.into());
        self.finish();
    }

    /// Records a failure that no release explains (an fd left open).
    pub(super) fn fail_anyway(&self, msg: impl Into<String>) {
        self.timed_out.store(false, Ordering::SeqCst);
        self.fail(msg);
    }

    pub(super) fn failed(&self) -> bool {
        lock(&self.failure).is_some()
    }

    pub(super) fn failure(&self) -> Option<String> {
        lock(&self.failure).clone()
    }

    /// Records that the scenario cannot run here and stops the round.
    pub(super) fn skip(&self, reason: impl Into<String>) {
        lock(&self.skipped).get_or_insert_with(|| reason.into());
        self.finish();
    }

    /// Records that the round cannot decide: INCONCLUSIVE unless a check fails.
    pub(super) fn undecided(&self, reason: impl Into<String>) {
        lock(&self.inconclusive).get_or_insert_with(|| reason.into());
    }

    /// The round ran out its deadline with no lost wakeup seen.
    pub(super) fn time_out(&self, reason: impl Into<String>) {
        self.undecided(reason);
        self.timed_out.store(true, Ordering::SeqCst);
        self.finish();
    }

    pub(super) fn timed_out(&self) -> bool {
        self.timed_out.load(Ordering::SeqCst)
    }

    pub(super) fn inconclusive(&self) -> Option<String> {
        lock(&self.inconclusive).clone()
    }

    pub(super) fn skipped(&self) -> Option<String> {
        lock(&self.skipped).clone()
    }

    /// `Err` with the recorded failure if another thread (or the watchdog)
    /// already failed the scenario: the next part of a round is pointless.
    pub(super) fn proceed(&self) -> Step {
        match (self.failure(), self.skipped()) {
            (Some(msg), _) => Err(Failure::Failed(msg)),
            (None, Some(reason)) => Err(Failure::Missing(reason)),
            (None, None) if self.timed_out() => {
                Err(Failure::Failed("released at the deadline".to_string()))
            }
            (None, None) => Ok(()),
        }
    }

    /// Whether the scenario failed, skipped or timed out: the round is over
    /// ([`proceed`](Ctx::proceed)'s question, without building its error).
    pub(super) fn halted(&self) -> bool {
        self.failed() || lock(&self.skipped).is_some() || self.timed_out()
    }

    /// Records `failure`: a FAIL, or the SKIP of a missing facility.
    pub(super) fn halt(&self, failure: Failure) {
        match failure {
            Failure::Failed(msg) => self.fail(msg),
            Failure::Missing(reason) => self.skip(reason),
        }
    }

    /// Records a failed step at once, so that the watchdog releases the
    /// other waiters now rather than when the step's caller returns.
    pub(super) fn record<T>(&self, step: Step<T>) -> Step<T> {
        if let Err(f) = &step {
            self.halt(f.clone());
        }
        step
    }

    /// A thread's or task's tally; a failed one is recorded (its partial
    /// tally no longer matters: conservation is checked only on success).
    pub(super) fn settle(&self, step: Step<Tally>) -> Tally {
        self.record(step).unwrap_or_default()
    }

    pub(super) fn merge(&self, tally: &Tally) {
        lock(&self.totals).merge(tally);
    }

    pub(super) fn totals(&self) -> Tally {
        *lock(&self.totals)
    }

    pub(super) fn check_conservation(&self) {
        let t = self.totals();
        if t.adds != t.reads && !self.failed() {
            self.fail(format!(
                "{}: conservation: added {} but read {} ({} {})",
                self.id(),
                t.adds,
                t.reads,
                t.adds.abs_diff(t.reads),
                if t.adds > t.reads {
                    "lost or stranded"
                } else {
                    "read twice"
                }
            ));
        }
    }

    pub(super) fn now_ns(&self) -> u64 {
        ns_since(self.epoch)
    }

    /// Called just before an add: opens a pending period if none is open.
    pub(super) fn stamp_add(&self) {
        if self.stamp.load(Ordering::Relaxed) == 0 {
            let _ =
                self.stamp
                    .compare_exchange(0, self.now_ns(), Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    /// Called just after a read: closes the pending period, noting its length.
    pub(super) fn stamp_read(&self, tally: &mut Tally) {
        let since = self.stamp.swap(0, Ordering::AcqRel);
        if since != 0 {
            tally.waited(Duration::from_nanos(self.now_ns().saturating_sub(since)));
        }
    }

    /// Waits until `live` reaches `target`; false if the round stopped first.
    pub(super) fn wait_live(&self, target: u64) -> bool {
        let mut spins = 0;
        while self.live.load(Ordering::SeqCst) < target {
            if self.stopped() {
                return self.live.load(Ordering::SeqCst) >= target;
            }
            pause(&mut spins);
        }
        true
    }

    pub(super) fn id(&self) -> &'static str {
        self.scenario.id
    }
}

/// ns since `epoch`, at least 1 (0 means "none" in the stamps that hold it).
pub(super) fn ns_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_nanos())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Locks `m`; a panic elsewhere (which the round reports) leaves its value
/// as it was, so it is used as it is.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One step of waiting for another thread: yield for the first 64 spins,
/// then sleep 100 µs each.
pub(super) fn pause(spins: &mut u32) {
    *spins += 1;
    if *spins < 64 {
        thread::yield_now();
    } else {
        thread::sleep(Duration::from_micros(100));
    }
}
