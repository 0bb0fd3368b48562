//! `eventfd-bench`: what a wakeup through `async-eventfd` costs, next to the
//! ways one would otherwise do it, measured in one run so the ratios mean
//! something even on a noisy machine. Also runs the stress scenarios.
//!
//! Run `eventfd-bench --help` for the subcommands.
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]
#![warn(rust_2018_idioms)]

mod impls;
mod report;
mod run;
mod stress_cmd;
mod sys;
mod syscalls;

use std::process::ExitCode;
use std::time::Duration;

use serde_json::{json, Value};

use crate::impls::Impl;
use crate::report::{median, ns, print_table, ratio, Progress, Stats};
use crate::run::{Flavor, Pick, Subject};
use crate::sys::Pin;
use crate::syscalls::Counts;

const HELP: &str = "\
eventfd-bench: what waking a task through an eventfd costs, in one run

USAGE:
    eventfd-bench                      quick tour: 3 s of stress verdicts, then the latency table
    eventfd-bench <COMMAND> [OPTIONS]

COMMANDS:
    latency      Ping-pong between two tasks, each waiting on its own channel: one
                 round trip (RT) = two wakeups. Reports ns per RT (mean), median,
                 p99, p99.9 and max, per implementation and runtime flavor, plus
                 two floors without any task: `write`+`read` of one eventfd in one
                 thread, and two OS threads ping-ponging through blocking eventfds.
    thread-task  Ping-pong between a plain OS thread (blocking eventfd) and a task:
                 the thread wakes the task by writing to the task's eventfd.
    throughput   N writer threads add 1 as fast as they can for --duration; one task
                 reads. Reports adds/s, reads/s, adds per read (coalescing), the
                 runtime's CPU time per add, and checks total read == total added.
    scale        1, 100, 1,000, 10,000 registered receivers, each waited on by a
                 task; a driver wakes one chosen at random and waits for its reply.
                 Reports ns per wake+reply, and the ratio against 1 receiver. Floor:
                 the same syscalls on as many eventfds in one epoll set, one thread,
                 no runtime (what the kernel alone adds as the fds grow cold).
    stress       The stress scenarios S1-S16 with verdicts (see `stress --help`).
    help         This text.

IMPLEMENTATIONS (same run, rounds interleaved, median of rounds):
    async-eventfd   this crate: AsyncEventFd read().await / add(1).await
    tokio-eventfd   tokio-eventfd 0.2.2 (AsyncRead/AsyncWrite of 8 bytes)
    asyncfd-rw      hand-written AsyncFd<EventFd>, READABLE|WRITABLE interest,
                    readiness cleared only on WouldBlock (tokio's idiomatic try_io)
    asyncfd-r       hand-written AsyncFd<EventFd>, READABLE-only interest,
                    readiness cleared after every draining read
    notify          tokio::sync::Notify + an atomic counter (in-process only, no fd)
Ratios (`vs crate`) divide by async-eventfd's number of the same run and flavor.

OPTIONS:
    --json               One JSON document on stdout instead of tables.
    --pin same|cross|none
                         Pin every thread to one CPU (same, the default), the two
                         sides of a ping-pong to two CPUs (cross), or not at all.
                         Unpinned multi-thread timings are bimodal on small VMs.
    --flavor ct|mt|both  Runtime flavor: current_thread, multi_thread with 2 workers
                         (default: both).
    --rounds N           Rounds; implementations alternate within each (default 7;
                         throughput 3, scale 5).
    --rts N              Round trips per implementation per round (default 10000;
                         scale 5000).
    --impl a,b,...       Only these implementations (the crate is always included).
    --syscalls           (latency, thread-task) Count syscalls per RT with
                         `perf stat`, one process per implementation: all syscalls,
                         read, write, epoll_wait, read returning EAGAIN, futex.
    --writers 1,2,4      (throughput) Writer-thread counts (default 1,2,4).
    --duration 200ms     (throughput) Time per measurement (default 200ms).
    --fds 1,100,1000,10000
                         (scale) Receiver counts (default 1,100,1000,10000).
    --pick random|first  (scale) Wake one at random (default), or always the first:
                         the others stay registered but idle, which separates the
                         cost of having many fds from the cost of cold caches.
    -h, --help           This text.

EXAMPLES:
    cargo run --release -p eventfd-bench
    cargo run --release -p eventfd-bench -- latency --syscalls
    cargo run --release -p eventfd-bench -- thread-task --pin same
    cargo run --release -p eventfd-bench -- throughput --json
    cargo run --release -p eventfd-bench -- stress --duration 10s

Exit status: 0 on success, 1 when a measurement fails (or a count is lost),
2 on bad arguments.
";

/// `latency` and `thread-task` defaults.
const LATENCY_ROUNDS: usize = 7;
const LATENCY_RTS: usize = 10_000;

/// Command-line options shared by the subcommands.
#[derive(Clone, Debug)]
struct Opts {
    json: bool,
    pin: Pin,
    flavors: Vec<Flavor>,
    /// `--rounds`; `None`: the subcommand's default.
    rounds: Option<usize>,
    /// `--rts`; `None`: the subcommand's default.
    rts: Option<usize>,
    warmup: usize,
    impls: Vec<Impl>,
    syscalls: bool,
    writers: Vec<usize>,
    duration: Duration,
    fds: Vec<usize>,
    pick: Pick,
    /// Hidden: run one subject once and print nothing (for `perf stat`).
    one: Option<Subject>,
}

impl Default for Opts {
    fn default() -> Opts {
        Opts {
            json: false,
            pin: Pin::Same,
            flavors: vec![Flavor::Ct, Flavor::Mt],
            rounds: None,
            rts: None,
            warmup: 1_000,
            impls: Impl::ALL.to_vec(),
            syscalls: false,
            writers: vec![1, 2, 4],
            duration: Duration::from_millis(200),
            fds: vec![1, 100, 1_000, 10_000],
            pick: Pick::Random,
            one: None,
        }
    }
}

impl Opts {
    /// `--rounds`, or `default` (the subcommand's) when not given.
    fn rounds(&self, default: usize) -> usize {
        self.rounds.unwrap_or(default)
    }

    /// `--rts`, or `default` (the subcommand's) when not given.
    fn rts(&self, default: usize) -> usize {
        self.rts.unwrap_or(default)
    }
}

/// A command-line error: printed with a hint, exit status 2.
struct Usage(String);

fn parse_list<T>(s: &str, what: &str, f: impl Fn(&str) -> Option<T>) -> Result<Vec<T>, Usage> {
    s.split(',')
        .map(|item| f(item.trim()).ok_or_else(|| Usage(format!("invalid {what}: `{item}`"))))
        .collect()
}

fn positive(s: &str) -> Option<usize> {
    s.replace('_', "").parse().ok().filter(|&n| n > 0)
}

fn parse_opts(args: &[String]) -> Result<Opts, Usage> {
    let mut o = Opts::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = |what: &str| -> Result<String, Usage> {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| Usage(format!("{name} needs a value ({what})")))
        };
        let count = |v: String| {
            positive(&v)
                .ok_or_else(|| Usage(format!("{name}: expected a positive integer, got `{v}`")))
        };
        match name {
            "--json" => o.json = true,
            "--syscalls" => o.syscalls = true,
            "--pin" => {
                let v = value("same|cross|none")?;
                o.pin = Pin::parse(&v)
                    .ok_or_else(|| Usage(format!("--pin: expected same|cross|none, got `{v}`")))?;
            }
            "--flavor" => {
                let v = value("ct|mt|both")?;
                o.flavors = Flavor::parse(&v)
                    .ok_or_else(|| Usage(format!("--flavor: expected ct|mt|both, got `{v}`")))?;
            }
            "--rounds" => o.rounds = Some(count(value("a count")?)?),
            "--rts" => o.rts = Some(count(value("a count")?)?),
            "--warmup" => {
                let v = value("a count")?;
                o.warmup = v
                    .replace('_', "")
                    .parse()
                    .map_err(|_| Usage(format!("--warmup: expected an integer, got `{v}`")))?;
            }
            "--impl" => {
                let mut list = parse_list(&value("a list")?, "implementation", Impl::parse)?;
                if !list.contains(&Impl::Crate) {
                    list.insert(0, Impl::Crate);
                }
                o.impls = list;
            }
            "--writers" => o.writers = parse_list(&value("a list")?, "writer count", positive)?,
            "--fds" => o.fds = parse_list(&value("a list")?, "fd count", positive)?,
            "--pick" => {
                let v = value("random|first")?;
                o.pick = Pick::parse(&v)
                    .ok_or_else(|| Usage(format!("--pick: expected random|first, got `{v}`")))?;
            }
            "--duration" => {
                let v = value("a duration like 200ms or 2s")?;
                o.duration = stress_cmd::parse_duration(&v)
                    .map_err(|e| Usage(format!("--duration: {e}")))?;
            }
            "--one" => {
                let v = value("a subject key")?;
                o.one = Some(
                    Subject::parse_key(&v).ok_or_else(|| Usage(format!("--one: unknown `{v}`")))?,
                );
            }
            other => return Err(Usage(format!("unexpected argument `{other}`"))),
        }
    }
    Ok(o)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first() else {
        return tour();
    };
    if command == "stress" {
        return stress_cmd::main(&args[1..]);
    }
    if matches!(command.as_str(), "help" | "-h" | "--help")
        || args.iter().any(|a| a == "--help" || a == "-h")
    {
        print!("{HELP}");
        return ExitCode::SUCCESS;
    }
    let run: fn(&Opts) -> std::io::Result<ExitCode> = match command.as_str() {
        "latency" => |o| latency(o, false),
        "thread-task" => |o| latency(o, true),
        "throughput" => throughput,
        "scale" => scale,
        other => return usage_error(&format!("unknown command `{other}`")),
    };
    match parse_opts(&args[1..]) {
        Ok(opts) => exit_code(run(&opts)),
        Err(Usage(msg)) => usage_error(&msg),
    }
}

/// The exit status of a measurement; an I/O error is printed, status 1.
fn exit_code(result: std::io::Result<ExitCode>) -> ExitCode {
    result.unwrap_or_else(|e| {
        eprintln!("eventfd-bench: {e}");
        ExitCode::FAILURE
    })
}

fn usage_error(msg: &str) -> ExitCode {
    eprintln!("eventfd-bench: error: {msg}\nRun `eventfd-bench --help` for usage.");
    ExitCode::from(2)
}

fn tour() -> ExitCode {
    println!("eventfd-bench tour: stress verdicts (3 s), then the latency table.");
    println!("More: `eventfd-bench --help`.\n");
    let stress_ok = stress_cmd::tour(Duration::from_secs(3));
    let opts = Opts {
        rounds: Some(3),
        rts: Some(3_000),
        warmup: 500,
        ..Opts::default()
    };
    let code = exit_code(latency(&opts, false));
    if stress_ok {
        code
    } else {
        eprintln!("eventfd-bench: a stress scenario FAILED (see above)");
        ExitCode::FAILURE
    }
}

/// Hidden `--one`: run a single subject, print nothing (perf counts us).
fn one(subject: Subject, opts: &Opts) -> std::io::Result<ExitCode> {
    for &flavor in &opts.flavors {
        measure_latency(opts, subject, flavor)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// One `latency` or `thread-task` measurement with the options' pinning,
/// round trips and warm-up.
fn measure_latency(opts: &Opts, subject: Subject, flavor: Flavor) -> std::io::Result<Vec<u64>> {
    run::latency(
        subject,
        flavor,
        opts.pin,
        opts.rts(LATENCY_RTS),
        opts.warmup,
    )
}

/// The rows of a latency table: (subject, flavor or None for the floors).
fn latency_rows(opts: &Opts, thread_task: bool) -> Vec<(Subject, Option<Flavor>)> {
    let mut rows = Vec::new();
    for &flavor in &opts.flavors {
        for &imp in &opts.impls {
            let subject = if thread_task {
                Subject::ThreadTask(imp)
            } else {
                Subject::TaskTask(imp)
            };
            rows.push((subject, Some(flavor)));
        }
    }
    if !thread_task {
        rows.push((Subject::RawFloor, None));
    }
    rows.push((Subject::ThreadFloor, None));
    rows
}

/// Measures each key once per round, for `rounds` rounds; each round starts
/// one key later than the one before, so no key always runs first. Returns
/// each key's results in round order. `label` names a key in the progress line.
fn interleaved<K: Copy, R>(
    keys: &[K],
    rounds: usize,
    label: impl Fn(K) -> String,
    mut measure: impl FnMut(K) -> std::io::Result<R>,
) -> std::io::Result<Vec<Vec<R>>> {
    let mut results: Vec<Vec<R>> = keys.iter().map(|_| Vec::with_capacity(rounds)).collect();
    let mut progress = Progress::new(keys.len() * rounds);
    for round in 0..rounds {
        for k in 0..keys.len() {
            let i = (round + k) % keys.len();
            progress.step(&format!("round {}/{rounds}: {}", round + 1, label(keys[i])));
            results[i].push(measure(keys[i])?);
        }
    }
    progress.finish();
    Ok(results)
}

/// The rows of the `throughput` and `scale` tables: every flavor, count
/// (writers or fds) and implementation.
fn grid(opts: &Opts, counts: &[usize]) -> Vec<(Flavor, usize, Impl)> {
    let mut keys = Vec::new();
    for &flavor in &opts.flavors {
        for &n in counts {
            for &imp in &opts.impls {
                keys.push((flavor, n, imp));
            }
        }
    }
    keys
}

fn latency(opts: &Opts, thread_task: bool) -> std::io::Result<ExitCode> {
    if let Some(subject) = opts.one {
        return one(subject, opts);
    }
    let rows = latency_rows(opts, thread_task);
    let rounds = interleaved(
        &rows,
        opts.rounds(LATENCY_ROUNDS),
        |(subject, flavor)| format!("{} {}", subject.name(), flavor.map_or("", Flavor::name)),
        |(subject, flavor)| {
            measure_latency(opts, subject, flavor.unwrap_or(Flavor::Ct)).map(Stats::of)
        },
    )?;
    let stats: Vec<Stats> = rounds.iter().map(|r| Stats::median_of(r)).collect();
    let counts: Vec<Option<Result<Counts, String>>> = if opts.syscalls {
        let mut p = Progress::new(rows.len());
        let c = rows
            .iter()
            .map(|&(subject, flavor)| {
                p.step(&format!("perf stat: {}", subject.name()));
                Some(syscalls::count(
                    subject,
                    flavor.unwrap_or(Flavor::Ct),
                    opts.pin,
                ))
            })
            .collect();
        p.finish();
        c
    } else {
        vec![None; rows.len()]
    };
    // Every row, floors included, is compared with the crate's row of its
    // flavor (the floors, which have none, with the current-thread one).
    let base = if thread_task {
        Subject::ThreadTask(Impl::Crate)
    } else {
        Subject::TaskTask(Impl::Crate)
    };
    let reference = |flavor: Option<Flavor>| -> f64 {
        let want = (base, Some(flavor.unwrap_or(Flavor::Ct)));
        rows.iter()
            .position(|&r| r == want)
            .map_or(f64::NAN, |j| stats[j].p50)
    };
    let title = if thread_task {
        "thread <-> task ping-pong (a plain OS thread wakes a task; ns per round trip)"
    } else {
        "task <-> task ping-pong (ns per round trip = two wakeups)"
    };
    if opts.json {
        let results: Vec<Value> = rows
            .iter()
            .zip(&stats)
            .zip(&counts)
            .map(|((&(subject, flavor), s), c)| {
                json!({
                    "impl": subject.name(),
                    "key": subject.key(),
                    "what": subject.describe(),
                    "flavor": flavor.map(Flavor::name),
                    "mean_ns": s.mean,
                    "p50_ns": s.p50,
                    "p99_ns": s.p99,
                    "p999_ns": s.p999,
                    "max_ns": s.max,
                    "p50_vs_crate": finite(s.p50 / reference(flavor)),
                    "syscalls_per_rt": c.as_ref().map(|c| match c {
                        Ok(c) => c.to_json(),
                        Err(e) => json!({ "error": e }),
                    }),
                })
            })
            .collect();
        let doc = json!({
            "command": if thread_task { "thread-task" } else { "latency" },
            "pin": opts.pin.name(),
            "rounds": opts.rounds(LATENCY_ROUNDS),
            "rts_per_round": opts.rts(LATENCY_RTS),
            "cpus": sys::allowed_cpus(),
            "results": results,
        });
        println!("{doc:#}");
        return Ok(ExitCode::SUCCESS);
    }
    let mut header = vec![
        "implementation",
        "flavor",
        "ns/RT",
        "p50",
        "p99",
        "p99.9",
        "max",
        "p50 vs crate",
    ];
    if opts.syscalls {
        header.extend(syscalls::columns());
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .zip(&stats)
        .zip(&counts)
        .map(|((&(subject, flavor), s), c)| {
            let mut row = vec![
                subject.name(),
                flavor.map_or("-", Flavor::name).to_string(),
                ns(s.mean),
                ns(s.p50),
                ns(s.p99),
                ns(s.p999),
                ns(s.max),
                ratio(s.p50 / reference(flavor)),
            ];
            match c {
                Some(Ok(c)) => row.extend(c.cells()),
                Some(Err(_)) => row.extend(syscalls::columns().map(|_| "?".to_string())),
                None => {}
            }
            row
        })
        .collect();
    print_table(title, &header, &table);
    println!(
        "pin={}, {} rounds x {} RTs, interleaved; medians of rounds (max: of all rounds); CPUs {:?}",
        opts.pin.name(),
        opts.rounds(LATENCY_ROUNDS),
        opts.rts(LATENCY_RTS),
        sys::allowed_cpus()
    );
    if opts.syscalls {
        if let Some(Some(Err(e))) = counts.iter().find(|c| matches!(c, Some(Err(_)))) {
            println!("syscall counts unavailable: {e}");
        } else {
            println!(
                "syscalls per RT: steady state, (count at {} RTs - count at {} RTs) / {}, one perf process per row",
                syscalls::LONG,
                syscalls::SHORT,
                syscalls::LONG - syscalls::SHORT
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn finite(v: f64) -> Value {
    if v.is_finite() {
        json!(v)
    } else {
        Value::Null
    }
}

fn throughput(opts: &Opts) -> std::io::Result<ExitCode> {
    let keys = grid(opts, &opts.writers);
    let rounds = opts.rounds(3);
    let results = interleaved(
        &keys,
        rounds,
        |(flavor, w, imp)| format!("{} {} writers={w}", imp.name(), flavor.name()),
        |(flavor, w, imp)| run::throughput(imp, flavor, opts.pin, w, opts.duration),
    )?;
    struct Row {
        adds_s: f64,
        reads_s: f64,
        per_read: f64,
        cpu_per_add: f64,
        conserved: bool,
    }
    #[allow(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    let summary: Vec<Row> = results
        .iter()
        .map(|r| Row {
            adds_s: median(r.iter().map(|t| t.adds as f64 / t.elapsed.as_secs_f64())),
            reads_s: median(r.iter().map(|t| t.reads as f64 / t.elapsed.as_secs_f64())),
            per_read: median(r.iter().map(|t| t.adds as f64 / t.reads.max(1) as f64)),
            cpu_per_add: median(
                r.iter()
                    .map(|t| t.reader_cpu.as_nanos() as f64 / t.adds.max(1) as f64),
            ),
            conserved: r.iter().all(|t| t.conserved),
        })
        .collect();
    let reference = |flavor: Flavor, w: usize| {
        keys.iter()
            .position(|&k| k == (flavor, w, Impl::Crate))
            .map_or(f64::NAN, |j| summary[j].cpu_per_add)
    };
    let all_conserved = summary.iter().all(|r| r.conserved);
    if opts.json {
        let rows: Vec<Value> = keys
            .iter()
            .zip(&summary)
            .map(|(&(flavor, w, imp), r)| {
                json!({
                    "impl": imp.name(), "flavor": flavor.name(), "writers": w,
                    "adds_per_s": r.adds_s, "reads_per_s": r.reads_s,
                    "adds_per_read": r.per_read, "reader_cpu_ns_per_add": r.cpu_per_add,
                    "cpu_vs_crate": finite(r.cpu_per_add / reference(flavor, w)),
                    "conserved": r.conserved,
                })
            })
            .collect();
        let doc = json!({
            "command": "throughput", "pin": opts.pin.name(), "rounds": rounds,
            "duration_ms": opts.duration.as_millis(), "results": rows,
        });
        println!("{doc:#}");
    } else {
        let table: Vec<Vec<String>> = keys
            .iter()
            .zip(&summary)
            .map(|(&(flavor, w, imp), r)| {
                vec![
                    imp.name().to_string(),
                    flavor.name().to_string(),
                    w.to_string(),
                    ns(r.adds_s),
                    ns(r.reads_s),
                    format!("{:.1}", r.per_read),
                    format!("{:.1}", r.cpu_per_add),
                    ratio(r.cpu_per_add / reference(flavor, w)),
                    if r.conserved { "yes" } else { "NO" }.to_string(),
                ]
            })
            .collect();
        print_table(
            "throughput: writer threads add 1 in a loop, one task reads",
            &[
                "implementation",
                "flavor",
                "writers",
                "adds/s",
                "reads/s",
                "adds/read",
                "reader ns CPU/add",
                "vs crate",
                "read==added",
            ],
            &table,
        );
        println!(
            "pin={} (writers on side 1), {rounds} rounds x {:?}, interleaved; medians of rounds. \
             Reader CPU = process CPU - writer threads' CPU.",
            opts.pin.name(),
            opts.duration
        );
    }
    if all_conserved {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "eventfd-bench: total read != total added in some run: a count was lost or duplicated"
        );
        Ok(ExitCode::FAILURE)
    }
}

/// A row of the `scale` table, for one receiver count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ScaleRow {
    /// Receivers of an implementation, each waited on by a task.
    Tasks(Flavor, Impl),
    /// The same kernel objects and syscalls without a runtime or a task
    /// ([`run::scale_floor`]).
    Floor,
}

impl ScaleRow {
    fn name(self) -> &'static str {
        match self {
            ScaleRow::Tasks(_, imp) => imp.name(),
            ScaleRow::Floor => "floor: epoll",
        }
    }

    fn flavor(self) -> Option<Flavor> {
        match self {
            ScaleRow::Tasks(flavor, _) => Some(flavor),
            ScaleRow::Floor => None,
        }
    }
}

fn scale(opts: &Opts) -> std::io::Result<ExitCode> {
    sys::raise_nofile_limit();
    let limit = sys::nofile_limit();
    let fds: Vec<usize> = opts
        .fds
        .iter()
        .copied()
        .filter(|&n| {
            let ok = (n as u64).saturating_add(64) <= limit;
            if !ok {
                eprintln!("eventfd-bench: skipping --fds {n}: the open-file limit is {limit}");
            }
            ok
        })
        .collect();
    let mut keys: Vec<(ScaleRow, usize)> = grid(opts, &fds)
        .into_iter()
        .map(|(flavor, n, imp)| (ScaleRow::Tasks(flavor, imp), n))
        .collect();
    keys.extend(fds.iter().map(|&n| (ScaleRow::Floor, n)));
    // Fewer by default than the others: each measurement opens and
    // registers up to 10,000 fds and spawns as many tasks.
    let rounds = opts.rounds(5);
    let rts = opts.rts(5_000);
    let warmup = opts.warmup.min(rts);
    let results = interleaved(
        &keys,
        rounds,
        |(row, n)| {
            let flavor = row.flavor().map_or("", Flavor::name);
            format!("{} {flavor} fds={n}", row.name())
        },
        |(row, n)| {
            match row {
                ScaleRow::Tasks(flavor, imp) => {
                    run::scale(imp, flavor, opts.pin, n, opts.pick, rts, warmup)
                }
                ScaleRow::Floor => run::scale_floor(opts.pin, n, opts.pick, rts, warmup),
            }
            .map(Stats::of)
        },
    )?;
    let stats: Vec<Stats> = results.iter().map(|r| Stats::median_of(r)).collect();
    let find = |k: (ScaleRow, usize)| {
        keys.iter()
            .position(|&x| x == k)
            .map_or(f64::NAN, |j| stats[j].p50)
    };
    let first = fds.first().copied().unwrap_or(1);
    // Each row against its own fewest-fds row, and against the crate's row
    // of its flavor (the floor, which has none, against current-thread).
    let vs_first = |row: ScaleRow, s: &Stats| s.p50 / find((row, first));
    let vs_crate = |row: ScaleRow, n: usize, s: &Stats| {
        let flavor = row.flavor().unwrap_or(Flavor::Ct);
        s.p50 / find((ScaleRow::Tasks(flavor, Impl::Crate), n))
    };
    let title = match opts.pick {
        Pick::Random => {
            "scale: wake one of N registered receivers at random, wait for its reply (ns)"
        }
        Pick::First => "scale: wake the first of N registered receivers, wait for its reply (ns)",
    };
    if opts.json {
        let rows: Vec<Value> = keys
            .iter()
            .zip(&stats)
            .map(|(&(row, n), s)| {
                json!({
                    "impl": row.name(), "flavor": row.flavor().map(Flavor::name), "fds": n,
                    "mean_ns": s.mean, "p50_ns": s.p50, "p99_ns": s.p99, "max_ns": s.max,
                    "p50_vs_fewest_fds": finite(vs_first(row, s)),
                    "p50_vs_crate": finite(vs_crate(row, n, s)),
                })
            })
            .collect();
        let doc = json!({
            "command": "scale", "pin": opts.pin.name(), "pick": opts.pick.name(),
            "rounds": rounds, "rts_per_round": rts, "results": rows,
        });
        println!("{doc:#}");
    } else {
        let table: Vec<Vec<String>> = keys
            .iter()
            .zip(&stats)
            .map(|(&(row, n), s)| {
                vec![
                    row.name().to_string(),
                    row.flavor().map_or("-", Flavor::name).to_string(),
                    ns(n as f64),
                    ns(s.mean),
                    ns(s.p50),
                    ns(s.p99),
                    ratio(vs_first(row, s)),
                    ratio(vs_crate(row, n, s)),
                ]
            })
            .collect();
        print_table(
            title,
            &[
                "implementation",
                "flavor",
                "fds",
                "ns/wake",
                "p50",
                "p99",
                &format!("p50 vs {first} fd"),
                "p50 vs crate",
            ],
            &table,
        );
        println!(
            "pin={}, pick={}, {rounds} rounds x {rts} wakes, interleaved; medians of rounds. \
             The wake is one plain write (notify_one for notify); the reply likewise. \
             floor: epoll = the same six syscalls on the same kind of kernel objects, \
             in one thread (no runtime, no task); its growth is the kernel's.",
            opts.pin.name(),
            opts.pick.name(),
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &[&str]) -> Result<Opts, String> {
        let args: Vec<String> = v.iter().map(|s| s.to_string()).collect();
        parse_opts(&args).map_err(|Usage(msg)| msg)
    }

    #[test]
    fn rounds_and_rts_default_per_subcommand_unless_given() {
        let o = parse(&[]).expect("no arguments");
        assert_eq!((o.rounds(5), o.rts(5_000)), (5, 5_000));
        assert_eq!(o.pick, Pick::Random);
        let o = parse(&["--rounds", "9", "--rts=20_000", "--pick", "first"]).expect("valid");
        assert_eq!((o.rounds(5), o.rts(5_000)), (9, 20_000));
        assert_eq!(o.pick, Pick::First);
    }

    #[test]
    fn bad_values_are_usage_errors() {
        assert_eq!(
            parse(&["--pick", "last"]).map(|_| ()),
            Err("--pick: expected random|first, got `last`".to_string())
        );
        assert_eq!(
            parse(&["--rounds", "0"]).map(|_| ()),
            Err("--rounds: expected a positive integer, got `0`".to_string())
        );
        assert_eq!(
            parse(&["--fds", "10,x"]).map(|_| ()),
            Err("invalid fd count: `x`".to_string())
        );
        assert_eq!(
            parse(&["--rts"]).map(|_| ()),
            Err("--rts needs a value (a count)".to_string())
        );
    }
}
