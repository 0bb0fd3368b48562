//! `eventfd-bench scale`: wake one of N registered receivers, each waited on
//! by a task, and wait for its reply; with a floor that makes the same
//! syscalls with no runtime.

use std::io;
use std::process::ExitCode;

use serde::Serialize;

use crate::impls::Impl;
use crate::options::ScaleArgs;
use crate::report::{finite, ns, print_table, ratio, Stats};
use crate::rounds::{grid, interleaved};
use crate::run::{self, Flavor, Pick};
use crate::sys;

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

/// The `--json` document.
#[derive(Serialize)]
struct Doc {
    command: &'static str,
    pin: &'static str,
    pick: &'static str,
    rounds: usize,
    rts_per_round: usize,
    results: Vec<Row>,
}

/// A row of the `--json` document.
#[derive(Serialize)]
struct Row {
    #[serde(rename = "impl")]
    name: &'static str,
    flavor: Option<&'static str>,
    fds: usize,
    mean_ns: f64,
    p50_ns: f64,
    p99_ns: f64,
    max_ns: f64,
    p50_vs_fewest_fds: Option<f64>,
    p50_vs_crate: Option<f64>,
}

/// The receiver counts that fit the open-file limit (raised to the hard
/// one first); the others are skipped with a line on stderr.
fn fitting(fds: &[usize]) -> Vec<usize> {
    sys::raise_nofile_limit();
    let limit = sys::nofile_limit();
    fds.iter()
        .copied()
        .filter(|&n| {
            let ok = (n as u64).saturating_add(64) <= limit;
            if !ok {
                eprintln!("eventfd-bench: skipping --fds {n}: the open-file limit is {limit}");
            }
            ok
        })
        .collect()
}

/// `eventfd-bench scale`.
pub(crate) fn run(args: &ScaleArgs) -> io::Result<ExitCode> {
    let (pin, pick, rounds, rts) = (args.common.pin, args.pick, args.rounds, args.rts);
    let fds = fitting(&args.fds);
    let mut keys: Vec<(ScaleRow, usize)> = grid(&args.common, &fds)
        .into_iter()
        .map(|(flavor, n, imp)| (ScaleRow::Tasks(flavor, imp), n))
        .collect();
    keys.extend(fds.iter().map(|&n| (ScaleRow::Floor, n)));
    let warmup = args.warmup.min(rts);
    let results = interleaved(
        &keys,
        rounds,
        |(row, n)| {
            let flavor = row.flavor().map_or("", Flavor::name);
            format!("{} {flavor} fds={n}", row.name())
        },
        |(row, n)| {
            match row {
                ScaleRow::Tasks(flavor, imp) => run::scale(imp, flavor, pin, n, pick, rts, warmup),
                ScaleRow::Floor => run::scale_floor(pin, n, pick, rts, warmup),
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
    if args.common.json {
        let doc = Doc {
            command: "scale",
            pin: pin.name(),
            pick: pick.name(),
            rounds,
            rts_per_round: rts,
            results: keys
                .iter()
                .zip(&stats)
                .map(|(&(row, n), s)| Row {
                    name: row.name(),
                    flavor: row.flavor().map(Flavor::name),
                    fds: n,
                    mean_ns: s.mean,
                    p50_ns: s.p50,
                    p99_ns: s.p99,
                    max_ns: s.max,
                    p50_vs_fewest_fds: finite(vs_first(row, s)),
                    p50_vs_crate: finite(vs_crate(row, n, s)),
                })
                .collect(),
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).map_err(io::Error::other)?
        );
        return Ok(ExitCode::SUCCESS);
    }
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
    let title = match pick {
        Pick::Random => {
            "scale: wake one of N registered receivers at random, wait for its reply (ns)"
        }
        Pick::First => "scale: wake the first of N registered receivers, wait for its reply (ns)",
    };
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
        pin.name(),
        pick.name(),
    );
    Ok(ExitCode::SUCCESS)
}
