//! `eventfd-bench throughput`: writer threads add 1 as fast as they can, one
//! task reads; every run checks total read == total added.

use std::io;
use std::process::ExitCode;

use serde::Serialize;

use crate::impls::Impl;
use crate::options::ThroughputArgs;
use crate::report::{finite, median, ns, print_table, ratio};
use crate::rounds::{grid, interleaved};
use crate::run::{self, Flavor};

/// The medians of one table row over the rounds.
struct Summary {
    adds_s: f64,
    reads_s: f64,
    per_read: f64,
    cpu_per_add: f64,
    conserved: bool,
}

/// The `--json` document.
#[derive(Serialize)]
struct Doc {
    command: &'static str,
    pin: &'static str,
    rounds: usize,
    duration_ms: u128,
    results: Vec<Row>,
}

/// A row of the `--json` document.
#[derive(Serialize)]
struct Row {
    #[serde(rename = "impl")]
    name: &'static str,
    flavor: &'static str,
    writers: usize,
    adds_per_s: f64,
    reads_per_s: f64,
    adds_per_read: f64,
    reader_cpu_ns_per_add: f64,
    cpu_vs_crate: Option<f64>,
    conserved: bool,
}

/// `eventfd-bench throughput`.
pub(crate) fn run(args: &ThroughputArgs) -> io::Result<ExitCode> {
    let pin = args.common.pin;
    let keys = grid(&args.common, &args.writers);
    let rounds = args.rounds;
    let results = interleaved(
        &keys,
        rounds,
        |(flavor, w, imp)| format!("{} {} writers={w}", imp.name(), flavor.name()),
        |(flavor, w, imp)| run::throughput(imp, flavor, pin, w, args.duration),
    )?;
    #[allow(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    let summary: Vec<Summary> = results
        .iter()
        .map(|r| Summary {
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
    if args.common.json {
        let doc = Doc {
            command: "throughput",
            pin: pin.name(),
            rounds,
            duration_ms: args.duration.as_millis(),
            results: keys
                .iter()
                .zip(&summary)
                .map(|(&(flavor, w, imp), r)| Row {
                    name: imp.name(),
                    flavor: flavor.name(),
                    writers: w,
                    adds_per_s: r.adds_s,
                    reads_per_s: r.reads_s,
                    adds_per_read: r.per_read,
                    reader_cpu_ns_per_add: r.cpu_per_add,
                    cpu_vs_crate: finite(r.cpu_per_add / reference(flavor, w)),
                    conserved: r.conserved,
                })
                .collect(),
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).map_err(io::Error::other)?
        );
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
            pin.name(),
            args.duration
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
