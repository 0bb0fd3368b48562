//! The stress-scenario engine: proof, on the machine it runs on, that no layer
//! (kernel epoll, `poll(2)`, blocking syscalls, mio, tokio, this crate's own
//! readiness handling) loses a wakeup or a count.
//!
//! Each scenario of [`SCENARIOS`] drives one topology of writers and waiters
//! over eventfds and checks:
//!
//! - **conservation**: the sum of every value read equals the sum of every
//!   value added, exactly, and every round adds something;
//! - **liveness**: while a counter is non-zero, some waiter wakes within
//!   [`Config::liveness`], or a watchdog thread fails the scenario. Waiters
//!   never wake on a short timeout (except in S7, whose subject is the
//!   timeout), so a re-poll cannot hide a lost wakeup;
//! - **no fd left behind** (see [`Report::fds_after`]);
//! - what [`Scenario::checks`] says.
//!
//! A hard deadline per scenario makes sure nothing hangs (see
//! [`Verdict::Inconclusive`]). Every random choice comes from one seed
//! ([`Config::seed`]): a replay makes the same choices, though the kernel may
//! schedule the threads differently.
//!
//! The parts: the scenario table (`scenarios`), the run context (`ctx`), the
//! report (`report`), the watchdog (`watchdog`), thread helpers (`threads`),
//! fd and RSS accounting (`account`), the machine's calibration
//! (`calibrate`), and the scenario bodies by layer (`epoll`,
//! `plain_syscalls`, `mio_src`, `rt`, `kernel`).
//!
//! # Examples
//!
//! ```
//! use eventfd_bench::stress::{self, Config};
//!
//! let report = stress::run("S3", &Config::default());
//! assert!(report.passed(), "{report}");
//! assert_eq!(report.tally.adds, report.tally.reads);
//! assert_eq!(report.fds_after, report.fds_before);
//! ```

use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::rng::Rng;

mod account;
mod calibrate;
mod ctx;
mod epoll;
mod kernel;
mod mio_src;
mod plain_syscalls;
mod report;
mod rt;
mod scenarios;
mod threads;
mod watchdog;

pub use account::{sample, Sample};
pub use calibrate::{calibration, Calibration};
use ctx::Ctx;
use report::replay;
pub use report::{Report, Tally, Verdict};
pub use scenarios::{scenario, Scenario, SCENARIOS};

/// How hard and how long to stress, and with which seed.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use eventfd_bench::stress::Config;
///
/// let config = Config {
///     threads: Some(8),
///     seed: Some(12345),
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
    /// Overrides the number of writer, reader and tokio worker threads where
    /// a scenario has a choice; `None` keeps each scenario's own numbers.
    pub threads: Option<usize>,
    /// T: the longest a count may stay pending with no waiter woken.
    pub liveness: Duration,
    /// The seed of every random choice; `None` takes a fresh one (from the
    /// clock), reported in [`Report::seed`] so that the run can be replayed.
    pub seed: Option<u64>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            scale: 1,
            threads: None,
            liveness: Duration::from_secs(2),
            seed: None,
        }
    }
}

impl Config {
    /// The default configuration with `scale`, `threads` and `seed` taken
    /// from `EVENTFD_STRESS_SCALE`, `EVENTFD_STRESS_THREADS` and
    /// `EVENTFD_STRESS_SEED`. A missing, empty or unparsable variable (or a
    /// zero scale or thread count) keeps the default.
    ///
    /// # Examples
    ///
    /// ```
    /// let config = eventfd_bench::stress::Config::from_env();
    /// assert!(config.scale >= 1);
    /// ```
    pub fn from_env() -> Config {
        Config::from_vars(|name| std::env::var(name).ok())
    }

    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Config {
        let number = |name: &str| var(name).and_then(|s| s.trim().parse::<u64>().ok());
        let positive = |name: &str| number(name).filter(|&n| n > 0);
        Config {
            scale: positive("EVENTFD_STRESS_SCALE")
                .map_or(1, |s| u32::try_from(s).unwrap_or(u32::MAX)),
            threads: positive("EVENTFD_STRESS_THREADS").map(|t| t.min(1024) as usize),
            seed: number("EVENTFD_STRESS_SEED"),
            ..Config::default()
        }
    }
}

/// Runs one round of a scenario by id (as [`scenario`] parses it).
///
/// Scenarios of one process run one at a time, so that the fd and RSS
/// figures of a report are its scenario's alone: a call waits for any other.
/// Nothing here returns an error: an unknown id, a failed check, an I/O
/// error, a panic, a hang or an fd left open is a report whose
/// [`verdict`](Report::verdict) says so.
///
/// # Examples
///
/// ```
/// use eventfd_bench::stress::{run, Config};
///
/// let report = run("s3", &Config::default());
/// assert!(report.passed(), "{report}");
/// // S3 is semaphore mode: every read returned exactly 1.
/// assert_eq!(report.tally.reads, u128::from(report.tally.read_calls));
/// ```
pub fn run(id: &str, config: &Config) -> Report {
    let seed = config.seed.unwrap_or_else(Rng::fresh_seed);
    let Some(sc) = scenario(id) else {
        return Report {
            verdict: Verdict::Fail(format!(
                "unknown scenario {id:?} (expected S1 to S{})",
                SCENARIOS.len()
            )),
            ..Report::new(id, "", seed)
        };
    };
    run_scenario(sc, config, seed)
}

/// Runs `sc` with `seed`, alone in the process, and reports.
fn run_scenario(sc: &'static Scenario, config: &Config, seed: u64) -> Report {
    let _alone = account::exclusive();
    let calibration = calibration();
    let before = account::Usage::now();
    let start = Instant::now();
    let ctx = Arc::new(Ctx::new(sc, config.clone(), seed));
    run_round(&ctx);
    let elapsed = start.elapsed();
    // Every fd of the scenario is closed by now: its bodies own their fds,
    // join their threads and drop their runtimes before they return, also
    // after a failure or a release at the deadline.
    let after = account::Usage::now();
    if after.fds != before.fds && !ctx.failed() {
        ctx.fail_anyway(format!(
            "{}: {} fds open before the scenario, {} after ({})",
            sc.id,
            before.fds.len(),
            after.fds.len(),
            before.diff(&after)
        ));
    }
    let verdict = match (ctx.failure(), ctx.inconclusive(), ctx.skipped()) {
        (Some(msg), _, _) => Verdict::Fail(format!("{msg} {}", replay(seed))),
        (None, Some(reason), _) => Verdict::Inconclusive(format!("{reason} {}", replay(seed))),
        (None, None, Some(reason)) => Verdict::Skip(reason),
        (None, None, None) => Verdict::Pass,
    };
    Report {
        rounds: 1,
        tally: ctx.totals(),
        elapsed,
        verdict,
        fds_before: before.fds.len(),
        fds_after: after.fds.len(),
        rss_before: before.rss,
        rss_after: after.rss,
        calibration,
        ..Report::new(sc.id, sc.name, seed)
    }
}

/// Runs one round of a scenario, turning a panic into a failure, and checks
/// what every round must hold: conservation, and at least one add.
fn run_round(ctx: &Arc<Ctx>) {
    let sc = ctx.scenario;
    ctx.start_round(0);
    match panic::catch_unwind(AssertUnwindSafe(|| (sc.run)(ctx))) {
        Ok(Ok(())) => {}
        Ok(Err(failure)) => ctx.halt(failure),
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".to_string());
            ctx.fail(format!("panicked: {msg}"));
        }
    }
    // A round that skipped, or was released at its deadline, is over
    // before its counts could add up.
    if ctx.skipped().is_some() || ctx.timed_out() {
        return;
    }
    ctx.check_conservation();
    if ctx.totals().add_calls == 0 && !ctx.failed() {
        ctx.fail(format!(
            "{}: the round added nothing, so it checked nothing",
            sc.id
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seeded(seed: u64) -> Config {
        Config {
            seed: Some(seed),
            ..Config::default()
        }
    }

    fn draws(ctx: &Ctx, stream: u64) -> Vec<u64> {
        let mut rng = ctx.rng(stream);
        (0..32).map(|_| rng.next_u64()).collect()
    }

    #[test]
    fn the_same_seed_gives_the_same_streams() {
        let sc = scenario("S4").expect("S4 exists");
        let (a, b, c) = (
            Ctx::new(sc, seeded(12345), 12345),
            Ctx::new(sc, seeded(12345), 12345),
            Ctx::new(sc, seeded(12346), 12346),
        );
        for round in [0, 1, 7] {
            for ctx in [&a, &b, &c] {
                ctx.start_round(round);
            }
            for stream in [
                threads::stream(1, 0),
                threads::stream(1, 1),
                threads::stream(2, 0),
            ] {
                assert_eq!(draws(&a, stream), draws(&b, stream), "round {round}");
                assert_ne!(draws(&a, stream), draws(&c, stream), "round {round}");
            }
            assert_ne!(
                draws(&a, threads::stream(1, 0)),
                draws(&a, threads::stream(1, 1))
            );
        }
        a.start_round(0);
        let first = draws(&a, 5);
        a.start_round(1);
        assert_ne!(first, draws(&a, 5), "rounds take different choices");
    }

    #[test]
    fn a_seed_replays_every_random_choice_of_a_scenario() {
        // Like `run`, one scenario at a time: the other tests of this
        // process check their fds.
        let _alone = account::exclusive();
        let handed = |seed| {
            // S10 takes its churn (reregister, deregister, sleeps) and its
            // writers' jitter from the seed.
            let ctx = Arc::new(Ctx::new(&SCENARIOS[9], seeded(seed), seed));
            run_round(&ctx);
            assert_eq!(ctx.failure(), None);
            let mut handed = ctx.handed.lock().expect("not poisoned").clone();
            handed.sort_unstable();
            handed
        };
        let first = handed(5);
        assert_eq!(first.len(), 3, "two writers and the poller: {first:?}");
        assert_eq!(first, handed(5), "the same seed, the same generators");
        assert_ne!(first, handed(6), "another seed, other generators");
    }

    #[test]
    fn a_report_names_its_seed_and_how_to_replay_it() {
        let report = run("S13", &seeded(987_654_321));
        assert_eq!(report.seed, 987_654_321);
        assert!(report.passed(), "{report}");
        assert!(
            report.to_string().contains("seed 987654321: PASS"),
            "{report}"
        );
        let unseeded = run("S99", &Config::default());
        assert_ne!(unseeded.seed, 0, "a fresh seed is reported");
    }

    /// A scenario of the tests' own, running `run`.
    const fn fake(run: fn(&Arc<Ctx>) -> ctx::Step) -> Scenario {
        Scenario {
            id: "S0",
            name: "fake",
            topology: "",
            checks: "",
            run,
        }
    }

    #[test]
    fn a_failure_names_the_seed_and_the_replay_variable() {
        static FAILS: Scenario = fake(|_| Err(ctx::Failure::Failed("S0: boom".to_string())));
        let report = run_scenario(&FAILS, &Config::default(), 42);
        assert_eq!(
            report.verdict.reason(),
            Some("S0: boom [seed 42; replay with EVENTFD_STRESS_SEED=42]")
        );
        assert!(report
            .to_string()
            .ends_with("seed 42: FAIL: S0: boom [seed 42; replay with EVENTFD_STRESS_SEED=42]"));
    }

    #[test]
    fn a_round_released_at_its_deadline_is_inconclusive_not_failed() {
        static SLOW: Scenario = fake(|ctx| {
            let mut t = Tally::default();
            t.add(1);
            ctx.merge(&t);
            ctx.time_out("S0: ran out its deadline");
            // What the release makes fail is not a fault; nor is the count
            // the round had no time to read.
            ctx::bail!("S0: released")
        });
        let report = run_scenario(&SLOW, &Config::default(), 3);
        assert!(!report.passed() && !report.failed(), "{report}");
        assert_eq!(
            report.verdict,
            Verdict::Inconclusive(
                "S0: ran out its deadline [seed 3; replay with EVENTFD_STRESS_SEED=3]".to_string()
            )
        );
        assert!(report.to_string().ends_with(
            ": INCONCLUSIVE: S0: ran out its deadline [seed 3; replay with EVENTFD_STRESS_SEED=3]"
        ));
    }

    #[test]
    fn a_scenario_that_leaves_an_fd_open_fails() {
        static LEAKS: Scenario = fake(|ctx| {
            let efd = async_eventfd::EventFd::new().expect("eventfd");
            efd.add(1).expect("add");
            ctx.merge(&{
                let mut t = Tally::default();
                t.add(1);
                t.read(efd.read().expect("read"));
                t
            });
            std::mem::forget(efd);
            Ok(())
        });
        let report = run_scenario(&LEAKS, &Config::default(), 7);
        assert_eq!(report.fds_after, report.fds_before + 1, "{report}");
        let Verdict::Fail(failure) = report.verdict else {
            panic!("a leak fails: {report}");
        };
        assert!(
            failure.starts_with(&format!(
                "S0: {} fds open before the scenario, {} after (opened [",
                report.fds_before, report.fds_after
            )),
            "{failure}"
        );
        assert!(
            failure.contains(" -> anon_inode:[eventfd]], closed [])"),
            "{failure}"
        );
        assert!(failure.ends_with("[seed 7; replay with EVENTFD_STRESS_SEED=7]"));
    }

    #[test]
    fn config_reads_scale_threads_and_seed_from_the_environment() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let c = Config::from_vars(vars(&[
            ("EVENTFD_STRESS_SCALE", "20"),
            ("EVENTFD_STRESS_THREADS", "8"),
            ("EVENTFD_STRESS_SEED", " 12345 "),
        ]));
        assert_eq!((c.scale, c.threads, c.seed), (20, Some(8), Some(12345)));
        let c = Config::from_vars(vars(&[("EVENTFD_STRESS_SEED", "0")]));
        assert_eq!((c.scale, c.threads, c.seed), (1, None, Some(0)));
        let c = Config::from_vars(vars(&[
            ("EVENTFD_STRESS_SCALE", "0"),
            ("EVENTFD_STRESS_SEED", "x"),
        ]));
        assert_eq!(c, Config::default());
    }
}
