//! S19: two vCPUs of a tiny KVM guest ring ioeventfd doorbells at full
//! speed while tasks read. x86_64 only: elsewhere S19 is a SKIP.

use std::os::fd::AsFd;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use super::{join_thread, stop_readers};
use crate::kernel_rigs::guest::Guest;
use crate::stress::ctx::{ensure, Ctx, Step, Tally};
use crate::stress::rt::{async_fd, drained, spawn_readers, watched_tasks, Flavor, Readers};
use crate::stress::threads::numbered;
use crate::stress::watchdog::Watch;

/// S19: two vCPUs of a tiny guest ring doorbells at full speed, each on its
/// own port with a `KVM_IOEVENTFD` on its own eventfd, while two tasks per
/// eventfd read, on both flavors. Guest rings == sum read, per eventfd.
pub(in crate::stress) fn kvm_ioeventfd_vcpus(ctx: &Arc<Ctx>) -> Step {
    let mut rng = ctx.rng(0);
    let scale = u32::try_from(ctx.scale()).unwrap_or(u32::MAX);
    for (part, flavor) in (0u64..).zip(Flavor::BOTH) {
        // Full speed, and a little different every run.
        let rings = [0, 1].map(|_| 100_000u32.saturating_mul(scale) + rng.below(10_000) as u32);
        vcpus_on(ctx, flavor, rings, part)?;
    }
    Ok(())
}

/// One flavor's part of S19: vCPU `i` rings its doorbell `rings[i]`
/// times.
fn vcpus_on(ctx: &Arc<Ctx>, flavor: Flavor, rings: [u32; 2], part: u64) -> Step {
    const READERS: usize = 2;
    ctx.begin();
    let rt = flavor.runtime()?;
    let guest = Guest::new()?;
    let fds = [async_fd(&rt, false)?, async_fd(&rt, false)?];
    let mut vcpus = Vec::new();
    for (id, (efd, &count)) in (0u16..).zip(fds.iter().zip(&rings)) {
        let port = 0x10 + id;
        guest.doorbell(port, efd.get_ref())?;
        vcpus.push(guest.vcpu(id.into(), port, count)?);
    }
    let watch = Watch::new(numbered(&fds), Vec::new());
    let res = watched_tasks(ctx, &watch, |stop_tx| {
        thread::scope(|s| {
            let running: Vec<_> = vcpus
                .into_iter()
                .map(|vcpu| s.spawn(move || Ok(vcpu.run()?)))
                .collect();
            let res = rt.block_on(async {
                let readers: Vec<_> = (0..)
                    .zip(&fds)
                    .map(|(fd, efd)| {
                        let readers = Readers {
                            n: READERS,
                            fd,
                            site: 30 + 2 * part + fd as u64,
                            cancel_one_in: 0,
                        };
                        spawn_readers(ctx, efd, stop_tx, &watch, readers)
                    })
                    .collect();
                for vcpu in running {
                    join_thread(ctx, vcpu, "a vCPU").await?;
                }
                // Every fd drained before any reader stops: the stop is
                // shared, and a reader stopped early would leave its
                // fd's count to look like a lost wakeup.
                for efd in &fds {
                    drained(ctx, efd.as_fd()).await?;
                }
                let mut read = ctx.totals().reads;
                for ((efd, readers), &count) in fds.iter().zip(readers).zip(&rings) {
                    stop_readers(ctx, efd.get_ref(), stop_tx, readers).await?;
                    let now = ctx.totals().reads;
                    let mut rung = Tally::default();
                    rung.add_each(count.into(), 1);
                    ctx.merge(&rung);
                    ensure!(
                        now - read == u128::from(count),
                        "S19: a vCPU rang {count} times, its eventfd read {}",
                        now - read
                    );
                    read = now;
                }
                Ok(())
            });
            ctx.record(res)
        })
    });
    drop(fds);
    rt.shutdown_timeout(Duration::from_secs(1));
    res
}
