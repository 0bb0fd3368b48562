//! The command line: one clap struct per subcommand, the typed values they
//! take, and the generated `--help`. clap exits with status 2 on a bad
//! argument and 0 after `--help`.

use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use eventfd_bench::stress::{self, Scenario, SCENARIOS};

use crate::contenders::Contender;
use crate::latency::{self, PingPong};
use crate::pinning::Pin;
use crate::rows::Row;
use crate::runtime::Flavor;

const AFTER_HELP: &str = "\
With no command: the tour, a stress verdict per scenario, then the latency table.
In the tables, `vs crate` divides by async-eventfd's number of the same run and
flavor. `eventfd-bench <COMMAND> --help` lists a command's options.

Examples:
    cargo run --release -p eventfd-bench
    cargo run --release -p eventfd-bench -- latency --syscalls
    cargo run --release -p eventfd-bench -- thread-task --pin same
    cargo run --release -p eventfd-bench -- throughput --json
    cargo run --release -p eventfd-bench -- kernel --rig uring
    cargo run --release -p eventfd-bench -- stress --duration 10s
    cargo install --path eventfd-bench && eventfd-bench stress --duration 1m

Exit status: 0 on success, 1 when a measurement fails (or a count is lost, or
a stress scenario fails), 2 on bad arguments.";

/// What waking a task through an eventfd costs, in one run.
///
/// Measures async-eventfd next to the ways one would otherwise wake a task
/// (same run, rounds interleaved, median of rounds), and runs the stress
/// scenarios with a verdict each.
#[derive(Debug, Parser)]
#[command(name = "eventfd-bench", version, after_help = AFTER_HELP)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
}

/// The subcommands; none is the tour.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Ping-pong between two tasks, each waiting on its own channel.
    ///
    /// One round trip (RT) = two wakeups. Reports ns per RT (mean), median,
    /// p99, p99.9 and max, per implementation and runtime flavor, plus two
    /// floors without any task: `write`+`read` of one eventfd in one thread,
    /// and two OS threads ping-ponging through blocking eventfds.
    Latency(LatencyArgs),
    /// Ping-pong between a plain OS thread (blocking eventfd) and a task.
    ///
    /// The thread wakes the task by writing to the task's eventfd.
    ThreadTask(LatencyArgs),
    /// N writer threads add 1 as fast as they can; one task reads.
    ///
    /// Reports adds/s, reads/s, adds per read (coalescing), the runtime's CPU
    /// time per add, and checks total read == total added.
    Throughput(ThroughputArgs),
    /// Wake one of N registered receivers, each waited on by a task.
    ///
    /// 1, 100, 1,000, 10,000 receivers; a driver wakes one and waits for its
    /// reply. Reports ns per wake+reply, and the ratio against the fewest
    /// receivers. Floor: the same syscalls on as many eventfds in one epoll
    /// set, one thread, no runtime (what the kernel alone adds as the fds
    /// grow cold).
    Scale(ScaleArgs),
    /// The kernel as the writer: io_uring completions and KVM doorbells.
    ///
    /// io_uring: a task submits a NOP, the kernel signals the ring's
    /// registered eventfd on completion, the task awaits it and reaps; ns
    /// per round trip, with the NOP completed inside the submit and by an
    /// io-wq kernel thread. KVM: a guest vCPU rings an ioeventfd doorbell as
    /// fast as it can while a task reads; rings/s and reads per ring
    /// (coalescing). Floors: a plain thread with a blocking read; the guest
    /// with nobody reading. A part is skipped, with the reason, where io_uring
    /// or /dev/kvm is missing.
    Kernel(KernelArgs),
    /// The stress scenarios with a verdict each: no layer loses a wakeup or
    /// a count.
    ///
    /// Every scenario checks conservation (the sum read equals the sum added,
    /// exactly) and liveness (no count stays pending for T while nobody
    /// wakes). A row gives add and read calls, the sum read, wakeups,
    /// spurious wakeups (woke and found nothing), the longest wait while a
    /// count was pending, and PASS, FAIL, SKIP (io_uring or /dev/kvm missing)
    /// or INCONCLUSIVE (no check failed, but the machine was too slow to
    /// decide). Exit status 1 if a scenario failed or the open fds grew,
    /// else 0.
    Stress(StressArgs),
}

/// The options of every measurement.
#[derive(Clone, Debug, Args)]
pub(crate) struct Common {
    /// One JSON document on stdout instead of tables.
    #[arg(long)]
    pub(crate) json: bool,
    /// Where threads run while measuring. Unpinned multi-thread timings are
    /// bimodal on small VMs.
    #[arg(long, value_enum, value_name = "WHERE", default_value_t = Pin::Same)]
    pub(crate) pin: Pin,
    /// Runtime flavor.
    #[arg(long, value_enum, value_name = "FLAVOR", default_value_t = Flavors::Both)]
    flavor: Flavors,
    /// Only these implementations, comma-separated (async-eventfd is always
    /// included) [default: all].
    #[arg(long = "impl", value_name = "IMPL,...")]
    #[arg(value_enum, value_delimiter = ',')]
    contenders: Vec<Contender>,
}

impl Common {
    /// The runtime flavors to measure, in table order.
    pub(crate) fn flavors(&self) -> Vec<Flavor> {
        match self.flavor {
            Flavors::Ct => vec![Flavor::Ct],
            Flavors::Mt => vec![Flavor::Mt],
            Flavors::Both => vec![Flavor::Ct, Flavor::Mt],
        }
    }

    /// These contenders when `--impl` names none (instead of [`Contender::ALL`]).
    pub(crate) fn or_contenders(mut self, default: &[Contender]) -> Common {
        if self.contenders.is_empty() {
            self.contenders = default.to_vec();
        }
        self
    }

    /// The contenders to measure: the crate first when `--impl` leaves it
    /// out, since every ratio divides by its number.
    pub(crate) fn contenders(&self) -> Vec<Contender> {
        if self.contenders.is_empty() {
            return Contender::ALL.to_vec();
        }
        let mut list = self.contenders.clone();
        if !list.contains(&Contender::Crate) {
            list.insert(0, Contender::Crate);
        }
        list
    }
}

/// `--flavor`: which runtime flavors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Flavors {
    /// current_thread.
    Ct,
    /// multi_thread with 2 workers.
    Mt,
    /// Both, one after the other.
    Both,
}

/// `--pick`: which receiver the `scale` driver wakes each time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Pick {
    /// One chosen at random: with many receivers, most of what a wake touches
    /// (task, registration, kernel file and epoll item) is cold in the caches.
    Random,
    /// Always the first: the others are registered but idle, so what grows
    /// with their number is the cost of merely having them.
    First,
}

impl Pick {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Pick::Random => "random",
            Pick::First => "first",
        }
    }
}

/// `--rig`: a kernel writer of `kernel`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Rig {
    /// io_uring NOP completions signal the eventfd.
    Uring,
    /// A KVM guest rings an ioeventfd doorbell.
    Kvm,
}

/// The options of `latency` and `thread-task`.
#[derive(Clone, Debug, Args)]
pub(crate) struct LatencyArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Rounds; the implementations alternate within each.
    #[arg(long, value_name = "N", default_value_t = 7, value_parser = positive)]
    pub(crate) rounds: usize,
    /// Round trips per implementation per round.
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = positive)]
    pub(crate) rts: usize,
    /// Round trips before the measured ones.
    #[arg(long, value_name = "N", default_value_t = 1_000, value_parser = count, hide = true)]
    pub(crate) warmup: usize,
    /// Count syscalls per RT with `perf stat`, one process per
    /// implementation: all syscalls, read, write, epoll_wait, read returning
    /// EAGAIN, futex.
    #[arg(long)]
    pub(crate) syscalls: bool,
    /// Run this one row once per `--flavor` and print nothing (what
    /// `--syscalls` has `perf stat` count).
    #[arg(long, value_name = "KEY", value_parser = one, hide = true)]
    pub(crate) one: Option<(&'static PingPong, Row)>,
}

#[derive(Clone, Debug, Args)]
pub(crate) struct ThroughputArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Rounds; the implementations alternate within each.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = positive)]
    pub(crate) rounds: usize,
    /// Writer-thread counts, comma-separated.
    #[arg(long, value_name = "N,...", value_delimiter = ',')]
    #[arg(value_parser = positive, default_values_t = [1, 2, 4])]
    pub(crate) writers: Vec<usize>,
    /// Time per measurement (e.g. 200ms, 2s).
    #[arg(long, value_name = "D", default_value = "200ms", value_parser = duration)]
    pub(crate) duration: Duration,
}

#[derive(Clone, Debug, Args)]
pub(crate) struct ScaleArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Rounds; the implementations alternate within each (fewer than the
    /// others: each measurement opens and registers up to 10,000 fds and
    /// spawns as many tasks).
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = positive)]
    pub(crate) rounds: usize,
    /// Wakes per implementation per round.
    #[arg(long, value_name = "N", default_value_t = 5_000, value_parser = positive)]
    pub(crate) rts: usize,
    /// Wakes before the measured ones (at most --rts).
    #[arg(long, value_name = "N", default_value_t = 1_000, value_parser = count, hide = true)]
    pub(crate) warmup: usize,
    /// Receiver counts, comma-separated.
    #[arg(long, value_name = "N,...", value_delimiter = ',')]
    #[arg(value_parser = positive, default_values_t = [1, 100, 1_000, 10_000])]
    pub(crate) fds: Vec<usize>,
    /// Which receiver the driver wakes each time.
    #[arg(long, value_enum, value_name = "WHICH", default_value_t = Pick::Random)]
    pub(crate) pick: Pick,
}

#[derive(Clone, Debug, Args)]
pub(crate) struct KernelArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Rounds; the implementations alternate within each.
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = positive)]
    pub(crate) rounds: usize,
    /// io_uring round trips per implementation per round.
    #[arg(long, value_name = "N", default_value_t = 5_000, value_parser = positive)]
    pub(crate) rts: usize,
    /// io_uring round trips before the measured ones.
    #[arg(long, value_name = "N", default_value_t = 500, value_parser = count, hide = true)]
    pub(crate) warmup: usize,
    /// Doorbell rings per implementation per round (at most 2^32 - 1).
    #[arg(long, value_name = "N", default_value_t = 100_000, value_parser = rings)]
    pub(crate) rings: u32,
    /// Which kernel writers, comma-separated.
    #[arg(long, value_enum, value_name = "RIG,...", value_delimiter = ',')]
    #[arg(default_values_t = [Rig::Uring, Rig::Kvm])]
    pub(crate) rig: Vec<Rig>,
}

#[derive(Clone, Debug, Args)]
pub(crate) struct StressArgs {
    /// Run for about D in all (e.g. 10s, 500ms, 5m, 1h): passes of the
    /// selected scenarios, one round each, until D has passed or a pass
    /// failed (passes are whole; each takes the next seed); the open fds
    /// must not grow from the first pass to the last [default: one pass].
    #[arg(long, value_name = "D", value_parser = duration)]
    pub(crate) duration: Option<Duration>,
    /// Sample the process's open fds and RSS (between scenarios) at most
    /// this often, and at the start and end of the run.
    #[arg(long, value_name = "D", value_parser = duration, default_value = "60s")]
    pub(crate) sample_every: Duration,
    /// Run only this scenario (S1, s1 or 1); repeat the option or give a
    /// comma-separated list for several [default: all].
    #[arg(long = "scenario", value_name = "ID", value_delimiter = ',', value_parser = scenario)]
    pub(crate) scenarios: Vec<&'static Scenario>,
    /// Writer/reader threads (and tokio workers) where a scenario has a
    /// choice, 1 to 1024; more than the cores oversubscribes.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub(crate) threads: Option<u16>,
    /// Multiply each round's work by N [default: $EVENTFD_STRESS_SCALE,
    /// else 1].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) scale: Option<u32>,
    /// T: the longest a count may stay pending with no waiter woken before
    /// it counts as a lost wakeup [default: 2s].
    #[arg(long, value_name = "D", value_parser = duration)]
    pub(crate) liveness: Option<Duration>,
    /// Replay the random choices of the run that printed this seed
    /// [default: $EVENTFD_STRESS_SEED, else a fresh one].
    #[arg(long, value_name = "N")]
    pub(crate) seed: Option<u64>,
    /// Print a JSON array instead of the table: one scenario a line, then a
    /// last line `{"summary": {...}}` with the counts and the fd/RSS samples.
    #[arg(long)]
    pub(crate) json: bool,
}

impl StressArgs {
    /// The scenarios asked for, each once, in the order given; all when none
    /// was named.
    pub(crate) fn selected(&self) -> Vec<&'static Scenario> {
        if self.scenarios.is_empty() {
            return SCENARIOS.iter().collect();
        }
        let mut seen = std::collections::HashSet::new();
        self.scenarios
            .iter()
            .copied()
            .filter(|s| seen.insert(s.id))
            .collect()
    }
}

/// The command with the parts of its help that are known only at run time.
fn command() -> clap::Command {
    let mut scenarios = String::from("Scenarios:\n");
    for s in &SCENARIOS {
        scenarios.push_str(&format!(
            "    {:<4} {}\n         {}\n         checks: {}\n",
            s.id, s.name, s.topology, s.checks
        ));
    }
    Cli::command().mut_subcommand("stress", |c| c.after_long_help(scenarios))
}

/// Parses `args` (the program name first).
pub(crate) fn try_parse_from<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let mut cmd = command();
    let matches = cmd.try_get_matches_from_mut(args)?;
    Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut cmd))
}

/// Parses the process's arguments; on `--help` or a bad argument, prints
/// and exits (status 0 or 2).
pub(crate) fn parse() -> Cli {
    try_parse_from(std::env::args_os()).unwrap_or_else(|e| e.exit())
}

/// The command that `args` (without the program name) spell; for the
/// tour's fixed presets, which a test parses.
///
/// # Panics
///
/// If `args` is not a valid command line: a bug in the preset.
pub(crate) fn preset(args: &[&str]) -> Command {
    let argv = std::iter::once("eventfd-bench").chain(args.iter().copied());
    match try_parse_from(argv) {
        Ok(Cli { command: Some(c) }) => c,
        other => panic!("bad preset {args:?}: {other:?}"),
    }
}

/// A count with optional `_` separators: `20_000`.
fn count(s: &str) -> Result<usize, String> {
    s.replace('_', "")
        .parse()
        .map_err(|_| "expected a non-negative integer".to_string())
}

/// A positive count with optional `_` separators.
fn positive(s: &str) -> Result<usize, String> {
    match count(s) {
        Ok(n) if n > 0 => Ok(n),
        _ => Err("expected a positive integer".to_string()),
    }
}

/// A positive ring count that fits the guest's 32-bit counter.
fn rings(s: &str) -> Result<u32, String> {
    positive(s)
        .and_then(|n| u32::try_from(n).map_err(|_| "expected at most 4294967295".to_string()))
}

/// `10s`, `500ms`, `2m`, `1h`, `1.5s`, or a plain number of seconds.
pub(crate) fn duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let end = s.find(|c: char| !(c.is_ascii_digit() || c == '.'));
    let (num, unit) = s.split_at(end.unwrap_or(s.len()));
    let value: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (expected e.g. 10s, 500ms, 5m)"))?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "" | "s" | "sec" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "invalid duration unit in {s:?} (use ms, s, m or h)"
            ))
        }
    };
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("invalid duration {s:?} (must be positive)"))
}

fn scenario(id: &str) -> Result<&'static Scenario, String> {
    stress::scenario(id).ok_or_else(|| {
        let first = SCENARIOS.first().map_or("", |s| s.id);
        let last = SCENARIOS.last().map_or("", |s| s.id);
        format!("unknown scenario {id:?} (expected {first} to {last})")
    })
}

fn one(key: &str) -> Result<(&'static PingPong, Row), String> {
    latency::parse_key(key).ok_or_else(|| format!("unknown subject {key:?}"))
}

#[cfg(test)]
mod tests;
