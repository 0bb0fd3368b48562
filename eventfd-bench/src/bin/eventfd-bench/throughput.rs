//! `eventfd-bench throughput`: writer threads add 1 as fast as they can, one
//! task reads; every run checks total read == total added.

use std::io;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use nix::sys::resource::UsageWho::{RUSAGE_SELF, RUSAGE_THREAD};
use serde::Serialize;

use crate::contenders::{dispatch, Chan, Contender, End};
use crate::interleave::interleaved;
use crate::options::ThroughputArgs;
use crate::pinning::Pin;
use crate::rows::{grid, ratio_to, Row};
use crate::runtime::{join, on_runtime, Flavor};
use crate::stats::median;
use crate::table::{finite, flavor, ns, print_json, print_table, ratio};
use crate::timing::cpu;

/// One throughput measurement.
#[derive(Clone, Copy, Debug, Default)]
struct Throughput {
    adds: u64,
    reads: u64,
    elapsed: Duration,
    /// CPU time of the runtime's threads (process minus writer threads).
    reader_cpu: Duration,
    /// Total read == total added (checked exactly).
    conserved: bool,
}

#[derive(Serialize)]
struct Doc {
    command: &'static str,
    pin: &'static str,
    rounds: usize,
    duration_ms: u128,
    results: Vec<DocRow>,
}

/// Medians over the rounds.
#[derive(Serialize)]
struct DocRow {
    #[serde(rename = "impl")]
    name: &'static str,
    flavor: Option<&'static str>,
    writers: usize,
    adds_per_s: f64,
    reads_per_s: f64,
    adds_per_read: f64,
    reader_cpu_ns_per_add: f64,
    cpu_vs_crate: Option<f64>,
    conserved: bool,
}

pub(crate) fn run(args: &ThroughputArgs) -> io::Result<ExitCode> {
    let pin = args.common.pin;
    let keys = grid(&args.common, &args.writers);
    let rounds = args.rounds;
    let results = interleaved(
        &keys,
        rounds,
        |(row, w)| format!("{} writers={w}", row.label()),
        |(row, w)| match row {
            Row::Task(c, flavor) => dispatch!(c, throughput(flavor, pin, w, args.duration)),
            Row::Floor(_) => Err(io::Error::other("throughput has no floor")),
        },
    )?;
    let per_add = |t: &Throughput| t.reader_cpu.as_nanos() as f64 / t.adds.max(1) as f64;
    let cpu_per_add: Vec<f64> = results
        .iter()
        .map(|r| median(r.iter().map(per_add)))
        .collect();
    let cpu = |j: usize| cpu_per_add[j];
    let results: Vec<DocRow> = keys
        .iter()
        .zip(&results)
        .enumerate()
        .map(|(at, (&(row, w), r))| DocRow {
            name: row.name(),
            flavor: row.flavor().map(Flavor::name),
            writers: w,
            adds_per_s: median(r.iter().map(|t| t.adds as f64 / t.elapsed.as_secs_f64())),
            reads_per_s: median(r.iter().map(|t| t.reads as f64 / t.elapsed.as_secs_f64())),
            adds_per_read: median(r.iter().map(|t| t.adds as f64 / t.reads.max(1) as f64)),
            reader_cpu_ns_per_add: cpu_per_add[at],
            cpu_vs_crate: finite(ratio_to(&keys, &(row.baseline(), w), at, cpu)),
            conserved: r.iter().all(|t| t.conserved),
        })
        .collect();
    let all_conserved = results.iter().all(|r| r.conserved);
    if args.common.json {
        print_json(&Doc {
            command: "throughput",
            pin: pin.name(),
            rounds,
            duration_ms: args.duration.as_millis(),
            results,
        })?;
    } else {
        print_table(
            "throughput: writer threads add 1 in a loop, one task reads",
            &results,
            &[
                ("implementation", &|r| r.name.to_string()),
                ("flavor", &|r| flavor(r.flavor)),
                ("writers", &|r| r.writers.to_string()),
                ("adds/s", &|r| ns(r.adds_per_s)),
                ("reads/s", &|r| ns(r.reads_per_s)),
                ("adds/read", &|r| format!("{:.1}", r.adds_per_read)),
                ("reader ns CPU/add", &|r| {
                    format!("{:.1}", r.reader_cpu_ns_per_add)
                }),
                ("vs crate", &|r| ratio(r.cpu_vs_crate)),
                ("read==added", &|r| {
                    if r.conserved { "yes" } else { "NO" }.to_string()
                }),
            ],
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

/// `writers` OS threads add 1 as fast as they can for `duration`; one task
/// reads. Counts are checked exactly afterwards.
fn throughput<E: End>(
    c: Contender,
    flavor: Flavor,
    pin: Pin,
    writers: usize,
    duration: Duration,
) -> io::Result<Throughput> {
    on_runtime(flavor, pin, move || async move {
        let Chan { mut rx, sync, .. } = E::chan(c)?;
        // u64::MAX until the writers are done; then the exact total.
        let target = Arc::new(AtomicU64::new(u64::MAX));
        let reader_target = Arc::clone(&target);
        let reader = tokio::spawn(async move {
            let (mut sum, mut reads) = (0u64, 0u64);
            while sum < reader_target.load(Ordering::Acquire) {
                sum += rx.recv().await?;
                reads += 1;
            }
            Ok::<_, io::Error>((sum, reads, rx))
        });
        let stop = Arc::new(AtomicBool::new(false));
        let start_line = Arc::new(Barrier::new(writers + 1));
        let mut handles = Vec::with_capacity(writers);
        for _ in 0..writers {
            let (stop, sync, start_line) =
                (Arc::clone(&stop), sync.clone(), Arc::clone(&start_line));
            handles.push(std::thread::spawn(move || {
                pin.apply(1);
                start_line.wait();
                let cpu0 = cpu(RUSAGE_THREAD);
                let mut adds = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..64 {
                        sync.fire()?;
                    }
                    adds += 64;
                }
                Ok::<_, io::Error>((adds, cpu(RUSAGE_THREAD).saturating_sub(cpu0)))
            }));
        }
        let cpu0 = cpu(RUSAGE_SELF);
        let begin = Instant::now();
        start_line.wait();
        tokio::time::sleep(duration).await;
        stop.store(true, Ordering::Relaxed);
        let joined = tokio::task::spawn_blocking(move || {
            handles
                .into_iter()
                .map(|h| h.join().map_err(|_| io::Error::other("writer panicked"))?)
                .collect::<io::Result<Vec<(u64, Duration)>>>()
        })
        .await
        .map_err(io::Error::other)??;
        let adds: u64 = joined.iter().map(|(a, _)| a).sum();
        let writer_cpu: Duration = joined.iter().map(|(_, c)| *c).sum();
        // One marker add after the target is set, so a reader already
        // waiting with everything read wakes up and sees the target.
        target.store(adds + 1, Ordering::Release);
        sync.fire()?;
        let (sum, reads, _rx) = join(reader.await)?;
        let elapsed = begin.elapsed();
        let reader_cpu = cpu(RUSAGE_SELF)
            .saturating_sub(cpu0)
            .saturating_sub(writer_cpu);
        Ok(Throughput {
            adds,
            reads: reads.saturating_sub(1),
            elapsed,
            reader_cpu,
            conserved: sum == adds + 1,
        })
    })
}
