//! Two tasks notify each other through two `AsyncEventFd`s: round trips
//! completed and time per round trip, on a `current_thread` and on a
//! `multi_thread` tokio runtime.
//!
//! ```sh
//! cargo run --release --example ping_pong
//! ```
//!
//! The pinger adds 1 to `ping` and waits for `pong`; the ponger waits for
//! `ping` and adds 1 to `pong`. The two strictly alternate, so every read
//! must return exactly 1 (nothing to coalesce); the example checks that, and
//! that both tasks counted the same number of round trips. Each runtime gets
//! about half a second; the whole run takes about a second.
//!
//! A round trip is two `write(2)`s, two `read(2)`s and two passes through
//! tokio's reactor. On a `current_thread` runtime everything happens on one
//! thread. On a `multi_thread` runtime the tasks may run on the same worker
//! or on two, and then each pass also wakes a parked thread; which one wins
//! depends on the machine. The median is the typical round trip; p99 and max
//! show scheduling hiccups (a few long stalls, such as the thread being
//! preempted, can pull the mean above p99). Build with `--release` for
//! meaningful numbers.

use std::error::Error;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_eventfd::AsyncEventFd;
use tokio::runtime::{Builder, Runtime};
use tokio::time::timeout;

/// Timed run per runtime.
const BUDGET: Duration = Duration::from_millis(500);
/// Untimed round trips first, so both tasks are running and caches are warm.
const WARMUP: u64 = 1_000;
/// Any await that takes longer than this is a lost wakeup: fail.
const LIMIT: Duration = Duration::from_secs(5);
/// Added to `ping` instead of 1 to tell the ponger to stop. The counter never
/// holds 2 otherwise, because the pinger waits for each pong.
const STOP: u64 = 2;

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

struct Report {
    round_trips: u64,
    /// Nanoseconds per timed round trip, sorted.
    samples: Vec<u64>,
    elapsed: Duration,
}

fn main() -> Res<()> {
    println!(
        "ping_pong: two tasks, two AsyncEventFds, {} ms per runtime\n",
        BUDGET.as_millis()
    );
    println!(
        "{:<24} {:>12} {:>10} {:>10} {:>10} {:>10}",
        "runtime", "round trips", "mean", "median", "p99", "max"
    );

    let current = Builder::new_current_thread().enable_all().build()?;
    print_row("current_thread", &run(&current)?);

    let workers = 2;
    let multi = Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?;
    print_row(&format!("multi_thread ({workers} workers)"), &run(&multi)?);

    println!("\nevery read returned exactly 1; both tasks counted the same round trips");
    Ok(())
}

fn run(rt: &Runtime) -> Res<Report> {
    rt.block_on(async {
        let ping = Arc::new(AsyncEventFd::new()?);
        let pong = Arc::new(AsyncEventFd::new()?);

        let ponger = tokio::spawn({
            let (ping, pong) = (Arc::clone(&ping), Arc::clone(&pong));
            async move {
                let mut answered = 0u64;
                loop {
                    match timeout(LIMIT, ping.read()).await?? {
                        1 => {
                            pong.add(1).await?;
                            answered += 1;
                        }
                        STOP => return Res::Ok(answered),
                        other => return Err(format!("ponger read {other}, expected 1").into()),
                    }
                }
            }
        });

        let pinger = tokio::spawn(async move {
            let mut samples = Vec::with_capacity(1 << 16);
            let mut round_trips = 0u64;
            let mut started = Instant::now();
            loop {
                if round_trips == WARMUP {
                    started = Instant::now();
                }
                let t0 = Instant::now();
                ping.add(1).await?;
                let got = timeout(LIMIT, pong.read()).await??;
                if got != 1 {
                    return Err(format!("pinger read {got}, expected 1").into());
                }
                round_trips += 1;
                if round_trips > WARMUP {
                    samples.push(u64::try_from(t0.elapsed().as_nanos())?);
                    if started.elapsed() >= BUDGET {
                        break;
                    }
                }
            }
            let elapsed = started.elapsed();
            ping.add(STOP).await?;
            samples.sort_unstable();
            Res::Ok(Report {
                round_trips,
                samples,
                elapsed,
            })
        });

        let report = timeout(BUDGET + LIMIT, pinger).await???;
        let answered = timeout(LIMIT, ponger).await???;
        assert_eq!(
            answered, report.round_trips,
            "the ponger must answer every ping exactly once"
        );
        assert!(report.round_trips > WARMUP, "no timed round trip completed");
        Ok(report)
    })
}

fn print_row(name: &str, report: &Report) {
    let n = report.samples.len() as u64;
    let mean = report.elapsed.as_nanos() as u64 / n;
    let median = report.samples[report.samples.len() / 2];
    let p99 = report.samples[report.samples.len() * 99 / 100];
    let max = report.samples[report.samples.len() - 1];
    println!(
        "{name:<24} {:>12} {:>10} {:>10} {:>10} {:>10}",
        report.round_trips,
        fmt_ns(mean),
        fmt_ns(median),
        fmt_ns(p99),
        fmt_ns(max)
    );
}

fn fmt_ns(ns: u64) -> String {
    if ns < 10_000 {
        format!("{:.2} µs", ns as f64 / 1e3)
    } else if ns < 1_000_000 {
        format!("{:.1} µs", ns as f64 / 1e3)
    } else {
        format!("{:.2} ms", ns as f64 / 1e6)
    }
}
