//! S19: two vCPUs of a tiny KVM guest ring ioeventfd doorbells at full
//! speed while tasks read.

#[cfg(target_arch = "x86_64")]
use std::sync::Arc;
#[cfg(target_arch = "x86_64")]
use std::thread;

#[cfg(target_arch = "x86_64")]
use async_eventfd::AsyncEventFd;
#[cfg(target_arch = "x86_64")]
use tokio::sync::watch;

use super::Outcome;
#[cfg(target_arch = "x86_64")]
use super::{
    drained_by_readers, fail, finish, io_fail, join, reader, runtime, stop_readers, watched,
    Checked, Summary, FLAVORS,
};
#[cfg(target_arch = "x86_64")]
use crate::kernel_rigs::guest;
#[cfg(target_arch = "x86_64")]
use crate::rng::Rng;

/// S19: two vCPUs of a tiny guest ring doorbells at full speed, each on its
/// own port with a `KVM_IOEVENTFD` on its own eventfd, while two tasks per
/// eventfd read, on both flavors. Guest rings == sum read, per eventfd.
#[cfg(target_arch = "x86_64")]
pub(crate) fn s19(seed: u64, scale: u32) -> Outcome {
    let mut summary = Summary::default();
    let mut rng = Rng::new(seed);
    let mut rung = Vec::new();
    let run = FLAVORS.iter().try_for_each(|&flavor| {
        // Full speed, and a little different every run.
        let rings = [0, 1].map(|_| 100_000 * scale.max(1) + rng.below(10_000) as u32);
        rung.extend(rings);
        let part = watched(&format!("S19 on {flavor:?}"), move || {
            let mut part = Summary::default();
            runtime(flavor)?.block_on(s19_one(rings, &mut part))?;
            Ok(part)
        })?;
        summary.merge(part);
        Ok(())
    });
    summary.detail = format!(
        "two vCPUs rang {rung:?} times (current-thread, then multi-thread), read in {} reads",
        summary.read_calls
    );
    finish(run.map(|()| summary))
}

/// S19 where the guest is not x86 code: a SKIP, with the reason.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn s19(_seed: u64, _scale: u32) -> Outcome {
    Outcome::Skipped("the S19 guest is x86_64 code".into())
}

#[cfg(target_arch = "x86_64")]
async fn s19_one(rings: [u32; 2], summary: &mut Summary) -> Checked<()> {
    const READERS: usize = 2;
    let guest = guest::Guest::new()?;
    let mut fds = Vec::new();
    let mut vcpus = Vec::new();
    for (id, &count) in rings.iter().enumerate() {
        let efd = Arc::new(AsyncEventFd::new().map_err(io_fail("AsyncEventFd::new"))?);
        let port = 0x10 + id as u16;
        guest.doorbell(port, efd.get_ref())?;
        let vcpu = guest.vcpu(id as u64, port, count)?;
        fds.push(efd);
        vcpus.push(vcpu);
    }
    let (stop, stopped) = watch::channel(false);
    let readers: Vec<Vec<_>> = fds
        .iter()
        .map(|efd| {
            (0..READERS)
                .map(|i| tokio::spawn(reader(Arc::clone(efd), i, stopped.clone())))
                .collect()
        })
        .collect();
    let running: Vec<_> = vcpus
        .into_iter()
        .map(|vcpu| thread::spawn(move || vcpu.run().map_err(Outcome::from)))
        .collect();
    for vcpu in running {
        join("a vCPU", vcpu).await?;
    }
    for ((efd, readers), &count) in fds.iter().zip(readers).zip(&rings) {
        drained_by_readers(efd, READERS).await?;
        let mut one = Summary::default();
        stop_readers(efd, &stop, readers, &mut one).await?;
        if one.read != u128::from(count) {
            return fail(format!(
                "a vCPU rang {count} times, its eventfd read {}",
                one.read
            ));
        }
        summary.added += u128::from(count);
        summary.kernel_signals += u64::from(count);
        summary.read += one.read;
        summary.read_calls += one.read_calls;
    }
    Ok(())
}
