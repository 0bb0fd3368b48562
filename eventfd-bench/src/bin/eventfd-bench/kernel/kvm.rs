//! `kernel`'s KVM part: a guest vCPU rings an ioeventfd doorbell as fast
//! as it can while a task reads.

use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::time::{Duration, Instant};

use async_eventfd::EventFd;
use eventfd_bench::kernel_rigs;

use super::{lost, receiver_fd, with_floor, KvmDoc, KvmRow, LIMIT};
use crate::contenders::{dispatch, Chan, Contender, End};
use crate::interleave::interleaved;
use crate::options::KernelArgs;
use crate::pinning::Pin;
use crate::rows::{ratio_to, Floor, Row};
use crate::runtime::{join, on_runtime, on_thread, Flavor};
use crate::stats::median;
use crate::table::finite;

/// The guest's doorbell port.
const PORT: u16 = 0x10;

/// One doorbell measurement.
#[derive(Clone, Copy, Debug)]
struct Doorbell {
    /// From the vCPU's start to the read that brought the sum to the rings.
    elapsed: Duration,
    reads: u64,
}

/// The KVM table: every reader, and the guest alone.
pub(super) fn measure(args: &KernelArgs, readers: &[Row]) -> io::Result<KvmDoc> {
    let rows = with_floor(readers, Floor::Guest);
    let (pin, rings) = (args.common.pin, args.rings);
    let rounds = interleaved(
        &rows,
        args.rounds,
        |r| format!("KVM {}", r.label()),
        |r| match r {
            Row::Task(c, flavor) => dispatch!(c, doorbell_task(flavor, pin, rings)),
            Row::Floor(_) => doorbell_floor(pin, rings),
        },
    )?;
    let per_s = |d: &Doorbell| f64::from(rings) / d.elapsed.as_secs_f64();
    let rates: Vec<f64> = rounds
        .iter()
        .map(|ds| median(ds.iter().map(per_s)))
        .collect();
    let results = rows
        .iter()
        .zip(&rounds)
        .enumerate()
        .map(|(at, (&r, ds))| KvmRow {
            name: r.name(),
            what: r.describe(),
            flavor: r.flavor().map(Flavor::name),
            rings_per_sec: rates[at],
            reads_per_ring: r
                .flavor()
                .map(|_| median(ds.iter().map(|d| d.reads as f64 / f64::from(rings)))),
            rings_per_sec_vs_crate: finite(ratio_to(&rows, &r.baseline(), at, |j| rates[j])),
        })
        .collect();
    Ok(KvmDoc {
        rings_per_round: rings,
        results,
    })
}

/// A new fd on the counter of `fd`, an open eventfd.
fn dup_eventfd(fd: RawFd) -> io::Result<EventFd> {
    // SAFETY: `fd` is the receiver's, open for this whole measurement; the
    // borrow ends with this call.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    EventFd::try_from(fd.try_clone_to_owned()?)
}

/// Starts a vCPU that rings `efd` `rings` times, on a thread on side 1;
/// the thread returns when the vCPU started.
fn ring_doorbell(
    efd: &EventFd,
    pin: Pin,
    rings: u32,
) -> io::Result<std::thread::JoinHandle<io::Result<Instant>>> {
    let guest = kernel_rigs::guest::Guest::new()?;
    guest.doorbell(PORT, efd)?;
    let vcpu = guest.vcpu(0, PORT, rings)?;
    Ok(std::thread::spawn(move || {
        pin.apply(1);
        let start = Instant::now();
        vcpu.run()?;
        Ok(start)
    }))
}

fn vcpu_joined(joined: std::thread::Result<io::Result<Instant>>) -> io::Result<Instant> {
    joined.map_err(|_| io::Error::other("the vCPU thread panicked"))?
}

fn doorbell_task<E: End>(
    c: Contender,
    flavor: Flavor,
    pin: Pin,
    rings: u32,
) -> io::Result<Doorbell> {
    on_runtime(flavor, pin, move || async move {
        let Chan { mut rx, sync, .. } = E::chan(c)?;
        let target = u64::from(rings);
        let reader = tokio::spawn(async move {
            let (mut sum, mut reads) = (0u64, 0u64);
            while sum < target {
                sum += tokio::time::timeout(LIMIT, rx.recv())
                    .await
                    .map_err(|_| lost("a doorbell ring"))??;
                reads += 1;
            }
            Ok::<_, io::Error>((sum, reads, Instant::now(), rx))
        });
        let vcpu = ring_doorbell(&dup_eventfd(receiver_fd(&sync)?)?, pin, rings)?;
        let (sum, reads, done, _rx) = join(reader.await)?;
        let start = vcpu_joined(
            tokio::task::spawn_blocking(move || vcpu.join())
                .await
                .map_err(io::Error::other)?,
        )?;
        if sum != target {
            return Err(io::Error::other(format!(
                "the guest rang {target} times, the task read {sum}"
            )));
        }
        Ok(Doorbell {
            elapsed: done.saturating_duration_since(start),
            reads,
        })
    })
}

/// The guest alone: nobody reads while it rings; one read at the end.
fn doorbell_floor(pin: Pin, rings: u32) -> io::Result<Doorbell> {
    on_thread(pin, move || {
        let efd = EventFd::new()?;
        let vcpu = ring_doorbell(&efd, pin, rings)?;
        let start = vcpu_joined(vcpu.join())?;
        let done = Instant::now();
        let sum = efd.read()?;
        if sum != u64::from(rings) {
            return Err(io::Error::other(format!(
                "the guest rang {rings} times, the eventfd holds {sum}"
            )));
        }
        Ok(Doorbell {
            elapsed: done.saturating_duration_since(start),
            reads: 1,
        })
    })
}
