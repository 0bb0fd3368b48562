//! `eventfd-bench latency`: two tasks ping-pong, each waiting on its own
//! channel; and the table that `thread-task` shares (a [`PingPong`]).

use std::io;
use std::process::ExitCode;

use serde::Serialize;

use crate::impls::Impl;
use crate::options::LatencyArgs;
use crate::report::{finite, ns, print_table, ratio, Progress, Stats};
use crate::rounds::interleaved;
use crate::run::{self, Flavor, Subject};
use crate::sys;
use crate::syscalls::{self, Counts};

/// A ping-pong table: what `latency` and `thread-task` differ in.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PingPong {
    /// The subcommand, for `--json`.
    pub(crate) command: &'static str,
    pub(crate) title: &'static str,
    /// The subject that measures an implementation.
    pub(crate) subject: fn(Impl) -> Subject,
    /// The rows without a task, after the implementations.
    pub(crate) floors: &'static [Subject],
}

/// Two tasks.
pub(crate) const LATENCY: PingPong = PingPong {
    command: "latency",
    title: "task <-> task ping-pong (ns per round trip = two wakeups)",
    subject: Subject::TaskTask,
    floors: &[Subject::RawFloor, Subject::ThreadFloor],
};

/// `eventfd-bench latency`.
pub(crate) fn run(args: &LatencyArgs) -> io::Result<ExitCode> {
    table(args, &LATENCY)
}

/// One measurement of `subject` with the options' pinning, round trips and
/// warm-up.
fn measure(args: &LatencyArgs, subject: Subject, flavor: Flavor) -> io::Result<Vec<u64>> {
    run::latency(subject, flavor, args.common.pin, args.rts, args.warmup)
}

/// Hidden `--one`: run a single subject, print nothing (perf counts us).
fn one(args: &LatencyArgs, subject: Subject) -> io::Result<ExitCode> {
    for flavor in args.common.flavors() {
        measure(args, subject, flavor)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The rows of a table: (subject, flavor or `None` for the floors).
fn rows(args: &LatencyArgs, shape: &PingPong) -> Vec<(Subject, Option<Flavor>)> {
    let impls = args.common.impls();
    let mut rows = Vec::new();
    for flavor in args.common.flavors() {
        for &imp in &impls {
            rows.push(((shape.subject)(imp), Some(flavor)));
        }
    }
    rows.extend(shape.floors.iter().map(|&floor| (floor, None)));
    rows
}

/// The `--json` document.
#[derive(Serialize)]
struct Doc {
    command: &'static str,
    pin: &'static str,
    rounds: usize,
    rts_per_round: usize,
    cpus: Vec<usize>,
    results: Vec<Row>,
}

/// A row of the `--json` document.
#[derive(Serialize)]
struct Row {
    #[serde(rename = "impl")]
    name: String,
    key: String,
    what: &'static str,
    flavor: Option<&'static str>,
    mean_ns: f64,
    p50_ns: f64,
    p99_ns: f64,
    p999_ns: f64,
    max_ns: f64,
    p50_vs_crate: Option<f64>,
    syscalls_per_rt: Option<SyscallsJson>,
}

/// `syscalls_per_rt`: the counts, or why there are none.
#[derive(Serialize)]
#[serde(untagged)]
enum SyscallsJson {
    Counts(Counts),
    Error { error: String },
}

/// Measures `shape`'s rows and prints the table (or `--json`).
pub(crate) fn table(args: &LatencyArgs, shape: &PingPong) -> io::Result<ExitCode> {
    if let Some(subject) = args.one {
        return one(args, subject);
    }
    let pin = args.common.pin;
    let rows = rows(args, shape);
    let rounds = interleaved(
        &rows,
        args.rounds,
        |(subject, flavor)| format!("{} {}", subject.name(), flavor.map_or("", Flavor::name)),
        |(subject, flavor)| measure(args, subject, flavor.unwrap_or(Flavor::Ct)).map(Stats::of),
    )?;
    let stats: Vec<Stats> = rounds.iter().map(|r| Stats::median_of(r)).collect();
    let counts: Vec<Option<Result<Counts, String>>> = if args.syscalls {
        let mut p = Progress::new(rows.len());
        let c = rows
            .iter()
            .map(|&(subject, flavor)| {
                p.step(&format!("perf stat: {}", subject.name()));
                Some(syscalls::count(subject, flavor.unwrap_or(Flavor::Ct), pin))
            })
            .collect();
        p.finish();
        c
    } else {
        vec![None; rows.len()]
    };
    // Every row, floors included, is compared with the crate's row of its
    // flavor (the floors, which have none, with the current-thread one).
    let base = (shape.subject)(Impl::Crate);
    let reference = |flavor: Option<Flavor>| -> f64 {
        let want = (base, Some(flavor.unwrap_or(Flavor::Ct)));
        rows.iter()
            .position(|&r| r == want)
            .map_or(f64::NAN, |j| stats[j].p50)
    };
    if args.common.json {
        let results = rows
            .iter()
            .zip(&stats)
            .zip(counts)
            .map(|((&(subject, flavor), s), c)| Row {
                name: subject.name(),
                key: subject.key(),
                what: subject.describe(),
                flavor: flavor.map(Flavor::name),
                mean_ns: s.mean,
                p50_ns: s.p50,
                p99_ns: s.p99,
                p999_ns: s.p999,
                max_ns: s.max,
                p50_vs_crate: finite(s.p50 / reference(flavor)),
                syscalls_per_rt: c.map(|c| match c {
                    Ok(c) => SyscallsJson::Counts(c),
                    Err(error) => SyscallsJson::Error { error },
                }),
            })
            .collect();
        let doc = Doc {
            command: shape.command,
            pin: pin.name(),
            rounds: args.rounds,
            rts_per_round: args.rts,
            cpus: sys::allowed_cpus(),
            results,
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).map_err(io::Error::other)?
        );
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
    if args.syscalls {
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
    print_table(shape.title, &header, &table);
    println!(
        "pin={}, {} rounds x {} RTs, interleaved; medians of rounds (max: of all rounds); CPUs {:?}",
        pin.name(),
        args.rounds,
        args.rts,
        sys::allowed_cpus()
    );
    if args.syscalls {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syscall_counts_serialize_as_before() {
        let counts = Counts::from_per_rt([6.0, 2.0, 2.0, 1.5, 0.25, 0.0]);
        let json = serde_json::to_string(&SyscallsJson::Counts(counts)).expect("serializes");
        assert_eq!(
            json,
            r#"{"all":6.0,"read":2.0,"write":2.0,"epoll_wait":1.5,"read_eagain":0.25,"futex":0.0}"#
        );
        let error = SyscallsJson::Error {
            error: "no perf".to_string(),
        };
        let json = serde_json::to_string(&error).expect("serializes");
        assert_eq!(json, r#"{"error":"no perf"}"#);
    }
}
