//! S19: two vCPUs of a tiny KVM guest ring ioeventfd doorbells at full
//! speed while tasks read.

#[cfg(target_arch = "x86_64")]
use std::sync::Arc;
#[cfg(target_arch = "x86_64")]
use std::thread;
#[cfg(target_arch = "x86_64")]
use std::time::Duration;

#[cfg(target_arch = "x86_64")]
use async_eventfd::AsyncEventFd;
#[cfg(target_arch = "x86_64")]
use tokio::sync::watch;

#[cfg(target_arch = "x86_64")]
use super::{
    drained_by_readers, fail, io_fail, join, reader, runtime, settle, stop_readers, watched,
    Checked, Halt, Summary, FLAVORS,
};
#[cfg(target_arch = "x86_64")]
use crate::kernel_rigs::guest;
use crate::stress::ctx::{Ctx, Step};

/// S19: two vCPUs of a tiny guest ring doorbells at full speed, each on its
/// own port with a `KVM_IOEVENTFD` on its own eventfd, while two tasks per
/// eventfd read, on both flavors. Guest rings == sum read, per eventfd.
#[cfg(target_arch = "x86_64")]
pub(in crate::stress) fn kvm_ioeventfd_vcpus(ctx: &Arc<Ctx>) -> Step {
    let mut summary = Summary::default();
    let mut rng = ctx.rng(0);
    let scale = u32::try_from(ctx.scale()).unwrap_or(u32::MAX);
    let mut rung = Vec::new();
    let run = FLAVORS.iter().try_for_each(|&flavor| {
        // Full speed, and a little different every run.
        let rings = [0, 1].map(|_| 100_000u32.saturating_mul(scale) + rng.below(10_000) as u32);
        rung.extend(rings);
        let t = ctx.t();
        let part = watched(&format!("on {flavor:?}"), move || {
            let mut part = Summary::default();
            runtime(flavor)?.block_on(s19_one(rings, t, &mut part))?;
            Ok(part)
        })?;
        summary.merge(part);
        Ok(())
    });
    summary.detail = format!(
        "two vCPUs rang {rung:?} times (current-thread, then multi-thread), read in {} reads",
        summary.counts.read_calls
    );
    settle(ctx, run.map(|()| summary))
}

/// S19 where the guest is not x86 code: a SKIP, with the reason.
#[cfg(not(target_arch = "x86_64"))]
pub(in crate::stress) fn kvm_ioeventfd_vcpus(ctx: &std::sync::Arc<Ctx>) -> Step {
    ctx.skip("the S19 guest is x86_64 code");
    Ok(())
}

#[cfg(target_arch = "x86_64")]
async fn s19_one(rings: [u32; 2], t: Duration, summary: &mut Summary) -> Checked<()> {
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
        .map(|vcpu| thread::spawn(move || vcpu.run().map_err(Halt::from)))
        .collect();
    for vcpu in running {
        join("a vCPU", vcpu).await?;
    }
    // Every fd drained before any reader stops: the stop is shared, and a
    // reader stopped early would leave its fd's count to look like a lost
    // wakeup.
    for efd in &fds {
        drained_by_readers(efd, READERS, t, summary).await?;
    }
    for ((efd, readers), &count) in fds.iter().zip(readers).zip(&rings) {
        let mut one = Summary::default();
        stop_readers(efd, &stop, readers, &mut one).await?;
        if one.counts.read != u128::from(count) {
            return fail(format!(
                "a vCPU rang {count} times, its eventfd read {}",
                one.counts.read
            ));
        }
        summary.signalled(u64::from(count));
        summary.merge(one);
    }
    Ok(())
}
