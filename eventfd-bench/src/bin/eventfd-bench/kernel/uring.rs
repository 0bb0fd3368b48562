//! `kernel`'s io_uring part: a task submits a NOP, the kernel signals the
//! ring's eventfd on completion, the task awaits it and reaps.

use std::io;

use async_eventfd::EventFd;
use eventfd_bench::kernel_rigs;

use super::{lost, receiver_fd, with_floor, UringDoc, UringRow, LIMIT};
use crate::contenders::{dispatch, Chan, Contender, End};
use crate::interleave::interleaved;
use crate::options::KernelArgs;
use crate::pinning::Pin;
use crate::rows::{ratio_to, Floor, Row};
use crate::runtime::{join, on_runtime, on_thread, Flavor};
use crate::stats::Stats;
use crate::table::finite;
use crate::timing::{time_each, Rts};

/// Where an io_uring NOP completes (the table's footnote says).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Nop {
    Inline,
    Worker,
}

impl Nop {
    fn name(self) -> &'static str {
        match self {
            Nop::Inline => "inline",
            Nop::Worker => "io-wq",
        }
    }
}

/// The io_uring table: every reader and the floor, NOP inline then on io-wq.
pub(super) fn measure(args: &KernelArgs, readers: &[Row]) -> io::Result<UringDoc> {
    let rows = with_floor(readers, Floor::Thread);
    let (pin, n) = (args.common.pin, Rts::new(args.rts, args.warmup));
    let mut results = Vec::new();
    for nop in [Nop::Inline, Nop::Worker] {
        let rounds = interleaved(
            &rows,
            args.rounds,
            |r| format!("io_uring {} {}", nop.name(), r.label()),
            |r| {
                match r {
                    Row::Task(c, flavor) => dispatch!(c, uring_task(flavor, pin, nop, n)),
                    Row::Floor(_) => uring_floor(pin, nop, n),
                }
                .map(Stats::of)
            },
        )?;
        let stats: Vec<Stats> = rounds.iter().map(|s| Stats::median_of(s)).collect();
        for (at, (&r, s)) in rows.iter().zip(&stats).enumerate() {
            results.push(UringRow {
                name: r.name(),
                what: r.describe(),
                nop: nop.name(),
                flavor: r.flavor().map(Flavor::name),
                mean_ns: s.mean,
                p50_ns: s.p50,
                p99_ns: s.p99,
                max_ns: s.max,
                p50_vs_crate: finite(ratio_to(&rows, &r.baseline(), at, |j| stats[j].p50)),
            });
        }
    }
    Ok(UringDoc {
        rts_per_round: args.rts,
        results,
    })
}

/// One round trip's checks: one NOP, so the read is 1 and one completion
/// is reaped.
fn one_completion(read: u64, reaped: u64) -> io::Result<()> {
    if (read, reaped) == (1, 1) {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "one NOP per round trip, but read {read} and reaped {reaped}"
        )))
    }
}

fn uring_task<E: End>(
    c: Contender,
    flavor: Flavor,
    pin: Pin,
    nop: Nop,
    n: Rts,
) -> io::Result<Vec<u64>> {
    on_runtime(flavor, pin, move || async move {
        let Chan { mut rx, sync, .. } = E::chan(c)?;
        let mut ring = kernel_rigs::uring(&receiver_fd(&sync)?, 8)?;
        let task = tokio::spawn(async move {
            let samples = time_each!(n, {
                kernel_rigs::push_nop(&mut ring, nop == Nop::Worker)?;
                ring.submit()?;
                let read = tokio::time::timeout(LIMIT, rx.recv())
                    .await
                    .map_err(|_| lost("the NOP's completion"))??;
                one_completion(read, kernel_rigs::reap(&mut ring)?)?;
            });
            // The ring is dropped (and unregistered) before the receiver.
            drop(ring);
            Ok::<_, io::Error>((samples, rx))
        });
        let (samples, _rx) = join(task.await)?;
        Ok(samples)
    })
}

fn uring_floor(pin: Pin, nop: Nop, n: Rts) -> io::Result<Vec<u64>> {
    on_thread(pin, move || {
        let efd = EventFd::builder().nonblocking(false).build()?;
        let mut ring = kernel_rigs::uring(&efd, 8)?;
        Ok(time_each!(n, {
            kernel_rigs::push_nop(&mut ring, nop == Nop::Worker)?;
            ring.submit()?;
            let read = efd.read()?;
            one_completion(read, kernel_rigs::reap(&mut ring)?)?;
        }))
    })
}
