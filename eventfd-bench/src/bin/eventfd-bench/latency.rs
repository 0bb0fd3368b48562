//! `eventfd-bench latency`: two tasks ping-pong, each waiting on its own
//! channel; and the ping-pong table that `thread-task` shares ([`PingPong`]),
//! with the floors of both.

use std::io;
use std::process::ExitCode;

use async_eventfd::EventFd;
use clap::ValueEnum;
use serde::Serialize;

use crate::contenders::{dispatch, Contender, End};
use crate::interleave::interleaved;
use crate::options::LatencyArgs;
use crate::pinning::{allowed_cpus, Pin};
use crate::rows::{grid, ratio_to, Floor, Row};
use crate::runtime::{join, on_runtime, on_thread, Flavor};
use crate::stats::Stats;
use crate::syscall_count::{self, Counts};
use crate::table::{finite, flavor, ns, print_json, print_table, ratio, Column, Progress};
use crate::thread_task::THREAD_TASK;
use crate::timing::{time_each, Rts};

/// A ping-pong table: what `latency` and `thread-task` differ in.
#[derive(Debug)]
pub(crate) struct PingPong {
    pub(crate) command: &'static str,
    pub(crate) title: &'static str,
    /// What a contender's row name and `--one` key start with.
    pub(crate) name_prefix: &'static str,
    pub(crate) key_prefix: &'static str,
    /// The round trips of a contender's row, in ns.
    pub(crate) task: fn(Contender, Flavor, Pin, Rts) -> io::Result<Vec<u64>>,
    /// The rows without a task, after the contenders.
    pub(crate) floors: &'static [Floor],
}

pub(crate) static LATENCY: PingPong = PingPong {
    command: "latency",
    title: "task <-> task ping-pong (ns per round trip = two wakeups)",
    name_prefix: "",
    key_prefix: "",
    task: |c, flavor, pin, n| dispatch!(c, task_task(flavor, pin, n)),
    floors: &[Floor::WriteRead, Floor::Threads],
};

/// The `--one` keys of the floors.
const FLOOR_KEYS: [(Floor, &str); 2] = [(Floor::WriteRead, "raw"), (Floor::Threads, "threads")];

impl PingPong {
    /// The row's first column (`impl` in `--json`).
    fn name(&self, row: Row) -> String {
        match row {
            Row::Task(..) => format!("{}{}", self.name_prefix, row.name()),
            Row::Floor(_) => row.name().to_string(),
        }
    }

    /// The row's `--one` key (no spaces); see [`parse_key`].
    pub(crate) fn key(&self, row: Row) -> String {
        match row {
            Row::Task(c, _) => format!("{}{}", self.key_prefix, c.name()),
            Row::Floor(floor) => FLOOR_KEYS
                .iter()
                .find(|(f, _)| *f == floor)
                .map_or(row.name(), |(_, key)| key)
                .to_string(),
        }
    }

    fn measure(&self, row: Row, pin: Pin, n: Rts) -> io::Result<Vec<u64>> {
        match row {
            Row::Task(c, flavor) => (self.task)(c, flavor, pin, n),
            Row::Floor(Floor::WriteRead) => raw_floor(pin, n),
            Row::Floor(Floor::Threads) => thread_floor(pin, n),
            Row::Floor(_) => Err(io::Error::other(format!(
                "{} is not a ping-pong",
                row.name()
            ))),
        }
    }
}

/// The table and row of a `--one` key ([`PingPong::key`]); a task row on
/// current-thread, which [`one`] replaces with each `--flavor`.
pub(crate) fn parse_key(key: &str) -> Option<(&'static PingPong, Row)> {
    if let Some(&(floor, _)) = FLOOR_KEYS.iter().find(|(_, k)| *k == key) {
        return Some((&LATENCY, Row::Floor(floor)));
    }
    // No contender's name starts with another table's prefix.
    [&THREAD_TASK, &LATENCY].into_iter().find_map(|shape| {
        let name = key.strip_prefix(shape.key_prefix)?;
        let c = Contender::from_str(name, false).ok()?;
        Some((shape, Row::Task(c, Flavor::Ct)))
    })
}

pub(crate) fn run(args: &LatencyArgs) -> io::Result<ExitCode> {
    table(args, &LATENCY)
}

/// Hidden `--one`: run a single row, print nothing (perf counts us).
fn one(args: &LatencyArgs, shape: &PingPong, row: Row) -> io::Result<ExitCode> {
    for flavor in args.common.flavors() {
        let row = match row {
            Row::Task(c, _) => Row::Task(c, flavor),
            floor => floor,
        };
        shape.measure(row, args.common.pin, Rts::new(args.rts, args.warmup))?;
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
struct Doc {
    command: &'static str,
    pin: &'static str,
    rounds: usize,
    rts_per_round: usize,
    cpus: Vec<usize>,
    results: Vec<DocRow>,
}

#[derive(Serialize)]
struct DocRow {
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

/// The syscall counts, or why there are none.
#[derive(Serialize)]
#[serde(untagged)]
enum SyscallsJson {
    Counts(Counts),
    Error { error: String },
}

/// Measures `shape`'s rows and prints the table (or `--json`).
pub(crate) fn table(args: &LatencyArgs, shape: &PingPong) -> io::Result<ExitCode> {
    if let Some((shape, row)) = args.one {
        return one(args, shape, row);
    }
    let (pin, rts, n) = (args.common.pin, args.rts, Rts::new(args.rts, args.warmup));
    let tasks = grid(&args.common, &[()]).into_iter().map(|(row, ())| row);
    let floors = shape.floors.iter().map(|&floor| Row::Floor(floor));
    let rows: Vec<Row> = tasks.chain(floors).collect();
    let rounds = interleaved(
        &rows,
        args.rounds,
        |row| shape.name(row) + " " + row.flavor().map_or("", Flavor::name),
        |row| shape.measure(row, pin, n).map(Stats::of),
    )?;
    let stats: Vec<Stats> = rounds.iter().map(|r| Stats::median_of(r)).collect();
    let mut progress = args.syscalls.then(|| Progress::new(rows.len()));
    let results: Vec<DocRow> = rows
        .iter()
        .zip(&stats)
        .enumerate()
        .map(|(at, (&row, s))| DocRow {
            name: shape.name(row),
            key: shape.key(row),
            what: row.describe(),
            flavor: row.flavor().map(Flavor::name),
            mean_ns: s.mean,
            p50_ns: s.p50,
            p99_ns: s.p99,
            p999_ns: s.p999,
            max_ns: s.max,
            p50_vs_crate: finite(ratio_to(&rows, &row.baseline(), at, |j| stats[j].p50)),
            syscalls_per_rt: progress.as_mut().map(|p| {
                p.step(&format!("perf stat: {}", shape.name(row)));
                match syscall_count::count(shape, row, pin) {
                    Ok(c) => SyscallsJson::Counts(c),
                    Err(error) => SyscallsJson::Error { error },
                }
            }),
        })
        .collect();
    if let Some(p) = progress {
        p.finish();
    }
    if args.common.json {
        print_json(&Doc {
            command: shape.command,
            pin: pin.name(),
            rounds: args.rounds,
            rts_per_round: rts,
            cpus: allowed_cpus(),
            results,
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    let cell = |i: usize| {
        move |r: &DocRow| match &r.syscalls_per_rt {
            Some(SyscallsJson::Counts(c)) => c.cells()[i].clone(),
            _ => "?".to_string(),
        }
    };
    let syscalls: Vec<_> = syscall_count::columns()
        .enumerate()
        .map(|(i, h)| (h, cell(i)))
        .collect();
    let mut columns: Vec<Column<'_, DocRow>> = vec![
        ("implementation", &|r| r.name.clone()),
        ("flavor", &|r| flavor(r.flavor)),
        ("ns/RT", &|r| ns(r.mean_ns)),
        ("p50", &|r| ns(r.p50_ns)),
        ("p99", &|r| ns(r.p99_ns)),
        ("p99.9", &|r| ns(r.p999_ns)),
        ("max", &|r| ns(r.max_ns)),
        ("p50 vs crate", &|r| ratio(r.p50_vs_crate)),
    ];
    if args.syscalls {
        columns.extend(syscalls.iter().map(|(h, cell)| (*h, cell as _)));
    }
    print_table(shape.title, &results, &columns);
    println!(
        "pin={}, {} rounds x {} RTs, interleaved; medians of rounds (max: of all rounds); CPUs {:?}",
        pin.name(),
        args.rounds,
        rts,
        allowed_cpus()
    );
    if args.syscalls {
        let error = results.iter().find_map(|r| match &r.syscalls_per_rt {
            Some(SyscallsJson::Error { error }) => Some(error),
            _ => None,
        });
        if let Some(e) = error {
            println!("syscall counts unavailable: {e}");
        } else {
            println!(
                "syscalls per RT: steady state, (count at {} RTs - count at {} RTs) / {}, one perf process per row",
                syscall_count::LONG,
                syscall_count::SHORT,
                syscall_count::LONG - syscall_count::SHORT
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn task_task<E: End>(c: Contender, flavor: Flavor, pin: Pin, n: Rts) -> io::Result<Vec<u64>> {
    on_runtime(flavor, pin, move || async move {
        let (a, b) = (E::chan(c)?, E::chan(c)?);
        let (mut a_rx, mut a_tx, mut b_rx, mut b_tx) = (a.rx, a.tx, b.rx, b.tx);
        let b = tokio::spawn(async move {
            for _ in 0..n.rts + n.warmup {
                b_rx.recv().await?;
                a_tx.send().await?;
            }
            Ok::<_, io::Error>(())
        });
        let a = tokio::spawn(async move {
            Ok::<_, io::Error>(time_each!(n, {
                b_tx.send().await?;
                a_rx.recv().await?;
            }))
        });
        let samples = join(a.await)?;
        join(b.await)?;
        Ok(samples)
    })
}

fn raw_floor(pin: Pin, n: Rts) -> io::Result<Vec<u64>> {
    on_thread(pin, move || {
        let efd = EventFd::new()?;
        Ok(time_each!(n, {
            efd.add(std::hint::black_box(1))?;
            std::hint::black_box(efd.read()?);
        }))
    })
}

fn thread_floor(pin: Pin, n: Rts) -> io::Result<Vec<u64>> {
    on_thread(pin, move || {
        let a = EventFd::builder().nonblocking(false).build()?;
        let b = EventFd::builder().nonblocking(false).build()?;
        let (a_w, b_r) = (a.try_clone()?, b.try_clone()?);
        let peer = std::thread::spawn(move || {
            pin.apply(1);
            for _ in 0..n.rts + n.warmup {
                b_r.read()?;
                a_w.add(1)?;
            }
            Ok::<_, io::Error>(())
        });
        let samples = time_each!(n, {
            b.add(1)?;
            a.read()?;
        });
        peer.join()
            .map_err(|_| io::Error::other("peer thread panicked"))??;
        Ok(samples)
    })
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

    #[test]
    fn every_key_parses_back_to_its_table_and_row() {
        for shape in [&LATENCY, &THREAD_TASK] {
            let tasks = Contender::THREAD_TASK.map(|c| Row::Task(c, Flavor::Ct));
            let floors = shape.floors.iter().map(|&f| Row::Floor(f));
            for row in tasks.into_iter().chain(floors) {
                let key = shape.key(row);
                assert!(!key.contains(' '), "{key:?}");
                let (parsed, back) = parse_key(&key).expect("a key parses");
                assert_eq!(back, row, "{key}");
                if let Row::Task(..) = row {
                    assert_eq!(parsed.command, shape.command, "{key}");
                }
            }
        }
        let notifier = Row::Task(Contender::Notifier, Flavor::Mt);
        assert_eq!(THREAD_TASK.key(notifier), "thread-notifier");
        assert_eq!(THREAD_TASK.name(notifier), "thread<->notifier");
        assert_eq!(LATENCY.key(Row::Floor(Floor::WriteRead)), "raw");
        assert_eq!(parse_key("bogus").map(|(_, row)| row), None);
    }
}
