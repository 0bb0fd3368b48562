//! `eventfd-bench kernel`: what a wakeup costs when the writer is the
//! kernel; each part is described in its `--help`
//! ([`Command::Kernel`](crate::options::Command::Kernel)).

use std::io;
use std::os::fd::RawFd;
use std::process::ExitCode;
use std::time::Duration;

use async_eventfd::EventFd;
use eventfd_bench::kernel_rigs::{self, RigError};
use serde::Serialize;

use crate::contenders::{Contender, SyncTx};
use crate::options::{KernelArgs, Rig};
use crate::pinning::allowed_cpus;
use crate::rows::{grid, Floor, Row};
use crate::runtime::Flavor;
use crate::table::{flavor, ns, print_json, print_table, ratio};

#[cfg(target_arch = "x86_64")]
mod kvm;
mod uring;

/// The longest one wait for the kernel's signal may take: past it, a
/// wakeup was lost and the measurement fails instead of hanging.
const LIMIT: Duration = Duration::from_secs(10);

pub(crate) fn run(args: &KernelArgs) -> io::Result<ExitCode> {
    // The task rows; each part adds its floor.
    let mut readers = Vec::new();
    let common = args.common.clone().or_contenders(&Contender::KERNEL);
    for (row, ()) in grid(&common, &[()]) {
        match row {
            Row::Task(c, _) if Contender::KERNEL.contains(&c) => readers.push(row),
            Row::Task(c, Flavor::Ct) if !args.common.json => println!(
                "{}: not measured (no reader of its own on an fd the kernel can signal)",
                c.name()
            ),
            _ => {}
        }
    }
    let rig = |rig| args.rig.contains(&rig);
    let doc = Doc {
        command: "kernel",
        pin: args.common.pin.name(),
        rounds: args.rounds,
        cpus: allowed_cpus(),
        uring: rig(Rig::Uring)
            .then(|| part(probe_uring(), || uring::measure(args, &readers)))
            .transpose()?,
        kvm: rig(Rig::Kvm)
            .then(|| kvm_part(args, &readers))
            .transpose()?,
    };
    if args.common.json {
        print_json(&doc)?;
    } else {
        print_doc(args, &doc);
    }
    Ok(ExitCode::SUCCESS)
}

/// What `measure` gives, or why the part was skipped: only a missing
/// facility is a skip; a failure of one that is here is an error.
fn part<T>(
    probe: Result<(), RigError>,
    measure: impl FnOnce() -> io::Result<T>,
) -> io::Result<Part<T>> {
    match probe {
        Err(RigError::Missing(skipped)) => Ok(Part::Skipped { skipped }),
        _ => measure().map(Part::Measured),
    }
}

fn probe_uring() -> Result<(), RigError> {
    let efd = EventFd::new().map_err(|e| RigError::Failed(e.to_string()))?;
    kernel_rigs::uring(&efd, 8).map(drop)
}

/// The KVM table, or why it was skipped.
#[cfg(target_arch = "x86_64")]
fn kvm_part(args: &KernelArgs, readers: &[Row]) -> io::Result<Part<KvmDoc>> {
    let probe = kernel_rigs::guest::Guest::new().map(drop);
    part(probe, || kvm::measure(args, readers))
}

#[cfg(not(target_arch = "x86_64"))]
fn kvm_part(_: &KernelArgs, _: &[Row]) -> io::Result<Part<KvmDoc>> {
    Ok(Part::Skipped {
        skipped: "the guest is x86_64 code".into(),
    })
}

#[derive(Serialize)]
struct Doc {
    command: &'static str,
    pin: &'static str,
    rounds: usize,
    cpus: Vec<usize>,
    /// Absent when `--rig` leaves it out.
    #[serde(skip_serializing_if = "Option::is_none")]
    uring: Option<Part<UringDoc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kvm: Option<Part<KvmDoc>>,
}

/// A part's results, or why it was skipped.
#[derive(Debug, PartialEq, Serialize)]
#[serde(untagged)]
enum Part<T> {
    Measured(T),
    Skipped { skipped: String },
}

#[derive(Serialize)]
struct UringDoc {
    rts_per_round: usize,
    results: Vec<UringRow>,
}

#[derive(Serialize)]
struct UringRow {
    #[serde(rename = "impl")]
    name: &'static str,
    what: &'static str,
    /// `inline` or `io-wq`: where the NOP completed.
    nop: &'static str,
    flavor: Option<&'static str>,
    mean_ns: f64,
    p50_ns: f64,
    p99_ns: f64,
    max_ns: f64,
    p50_vs_crate: Option<f64>,
}

#[derive(Serialize)]
struct KvmDoc {
    rings_per_round: u32,
    results: Vec<KvmRow>,
}

#[derive(Serialize)]
struct KvmRow {
    #[serde(rename = "impl")]
    name: &'static str,
    what: &'static str,
    flavor: Option<&'static str>,
    rings_per_sec: f64,
    /// Reads per ring: 1 when every ring woke the reader, less when
    /// wakeups coalesced rings. `null` for the floor (one read at the end).
    reads_per_ring: Option<f64>,
    rings_per_sec_vs_crate: Option<f64>,
}

/// `readers`, then `floor`: a part's rows.
fn with_floor(readers: &[Row], floor: Floor) -> Vec<Row> {
    readers.iter().copied().chain([Row::Floor(floor)]).collect()
}

/// The receiver's eventfd (every contender of [`Contender::KERNEL`] has one).
fn receiver_fd(sync: &SyncTx) -> io::Result<RawFd> {
    sync.raw_fd()
        .ok_or_else(|| io::Error::other("this implementation has no fd"))
}

fn lost(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("lost wakeup: waited {LIMIT:?} for {what}"),
    )
}

fn print_doc(args: &KernelArgs, doc: &Doc) {
    match &doc.uring {
        Some(Part::Skipped { skipped }) => println!("io_uring: skipped: {skipped}"),
        Some(Part::Measured(u)) => {
            print_table(
                "io_uring round trip: submit a NOP, the kernel signals the eventfd, await it, reap (ns per RT)",
                &u.results,
                &[
                    ("implementation", &|r| r.name.to_string()),
                    ("NOP", &|r| r.nop.to_string()),
                    ("flavor", &|r| flavor(r.flavor)),
                    ("ns/RT", &|r| ns(r.mean_ns)),
                    ("p50", &|r| ns(r.p50_ns)),
                    ("p99", &|r| ns(r.p99_ns)),
                    ("max", &|r| ns(r.max_ns)),
                    ("p50 vs crate", &|r| ratio(r.p50_vs_crate)),
                ],
            );
            println!(
                "NOP inline: completed inside io_uring_enter; io-wq: IOSQE_ASYNC, a kernel thread completes it.\n\
                 {} rounds x {} RTs, interleaved; medians of rounds (max: of all rounds)",
                args.rounds, u.rts_per_round
            );
        }
        None => {}
    }
    match &doc.kvm {
        Some(Part::Skipped { skipped }) => println!("KVM: skipped: {skipped}"),
        Some(Part::Measured(k)) => {
            print_table(
                "KVM doorbell: a vCPU rings an ioeventfd as fast as it can while a task reads",
                &k.results,
                &[
                    ("implementation", &|r| r.name.to_string()),
                    ("flavor", &|r| flavor(r.flavor)),
                    ("rings/s", &|r| ns(r.rings_per_sec)),
                    ("reads/ring", &|r| {
                        r.reads_per_ring.map_or("-".into(), |v| format!("{v:.4}"))
                    }),
                    ("rings/s vs crate", &|r| ratio(r.rings_per_sec_vs_crate)),
                ],
            );
            println!(
                "{} rounds x {} rings, interleaved; medians of rounds; floor: nobody reads until the guest halts",
                args.rounds, k.rings_per_round
            );
        }
        None => {}
    }
    println!("pin={}, CPUs {:?}", args.common.pin.name(), allowed_cpus());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_missing_facility_is_a_skip() {
        let measure = || Ok(7);
        let missing = RigError::Missing("no io_uring".into());
        let skipped = "no io_uring".to_string();
        assert_eq!(
            part(Err(missing), measure).expect("a skip"),
            Part::Skipped { skipped }
        );
        let failed = RigError::Failed("KVM_CREATE_VM: EPERM".into());
        assert_eq!(
            part(Err(failed), measure).expect("measured"),
            Part::Measured(7)
        );
        assert_eq!(part(Ok(()), measure).expect("measured"), Part::Measured(7));
        let error = part(Ok(()), || Err::<u8, _>(io::ErrorKind::TimedOut.into()));
        assert_eq!(error.expect_err("fails").kind(), io::ErrorKind::TimedOut);
    }

    #[test]
    fn a_skipped_part_serializes_with_its_reason() {
        let part: Part<KvmDoc> = Part::Skipped {
            skipped: "/dev/kvm is not usable here".into(),
        };
        let json = serde_json::to_string(&part).expect("serializes");
        assert_eq!(json, r#"{"skipped":"/dev/kvm is not usable here"}"#);
    }
}
