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
    Checked, Summary, FLAVORS,
};
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
        summary.read_calls
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
        .map(|vcpu| thread::spawn(move || vcpu.run()))
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
        if one.read != u128::from(count) {
            return fail(format!(
                "a vCPU rang {count} times, its eventfd read {}",
                one.read
            ));
        }
        summary.signalled(u64::from(count));
        summary.merge(one);
    }
    Ok(())
}

/// A tiny KVM guest: real-mode code that rings a port and halts.
#[cfg(target_arch = "x86_64")]
mod guest {
    use std::io;
    use std::sync::Arc;

    use async_eventfd::EventFd;
    use kvm_bindings::kvm_userspace_memory_region;
    use kvm_ioctls::{IoEventAddress, Kvm, NoDatamatch, VcpuExit, VcpuFd, VmFd};

    use super::super::{fail, io_fail, Checked, Halt};

    /// Where the guest's code sits in guest-physical memory.
    const CODE_ADDR: u64 = 0x1000;

    /// Real mode, `dx` = port, `ecx` = rings (at least 1):
    ///
    /// ```text
    /// 0: ee        out dx, al
    /// 1: 66 49     dec ecx
    /// 3: 75 fb     jnz 0
    /// 5: f4        hlt
    /// ```
    const DOORBELL_LOOP: [u8; 6] = [0xee, 0x66, 0x49, 0x75, 0xfb, 0xf4];

    /// One page of guest memory, page-aligned as KVM requires.
    #[repr(C, align(4096))]
    pub(super) struct Page([u8; 4096]);

    pub(super) struct Guest {
        vm: VmFd,
        _kvm: Kvm,
        memory: Arc<Page>,
    }

    pub(super) struct Vcpu {
        // Field order is drop order: the vCPU's fd (which keeps the VM alive)
        // closes before its share of the memory the VM maps is let go.
        fd: VcpuFd,
        port: u16,
        _memory: Arc<Page>,
    }

    fn kvm_fail(what: &str) -> impl FnOnce(kvm_ioctls::Error) -> Halt + '_ {
        move |e| io_fail(what)(io::Error::from_raw_os_error(e.errno()))
    }

    impl Guest {
        /// A VM with the doorbell loop in memory, or the SKIP where
        /// `/dev/kvm` is missing or unusable.
        pub(super) fn new() -> Checked<Guest> {
            let kvm =
                Kvm::new().map_err(|e| Halt::Skip(format!("/dev/kvm is not usable here ({e})")))?;
            let vm = kvm.create_vm().map_err(kvm_fail("KVM_CREATE_VM"))?;
            let mut page = Page([0xf4; 4096]);
            page.0[..DOORBELL_LOOP.len()].copy_from_slice(&DOORBELL_LOOP);
            let memory = Arc::new(page);
            let region = kvm_userspace_memory_region {
                slot: 0,
                flags: 0,
                guest_phys_addr: CODE_ADDR,
                memory_size: std::mem::size_of::<Page>() as u64,
                userspace_addr: memory.0.as_ptr() as u64,
            };
            // SAFETY: the region is one live, page-aligned page, freed only
            // when the last of `Guest` and its `Vcpu`s is dropped: after every
            // fd that keeps the VM alive has closed (each closes its fd before
            // letting go of the page). The guest only reads it.
            unsafe { vm.set_user_memory_region(region) }
                .map_err(kvm_fail("KVM_SET_USER_MEMORY_REGION"))?;
            Ok(Guest {
                vm,
                _kvm: kvm,
                memory,
            })
        }

        /// A `KVM_IOEVENTFD` on `port`: a guest `out` there adds 1 to `efd`'s
        /// counter inside the kernel, with no exit to user space.
        pub(super) fn doorbell(&self, port: u16, efd: &EventFd) -> Checked<()> {
            let vmm = to_vmm(efd).map_err(io_fail("dup the eventfd"))?;
            self.vm
                .register_ioevent(&vmm, &IoEventAddress::Pio(port.into()), NoDatamatch)
                .map_err(kvm_fail("KVM_IOEVENTFD"))
        }

        /// vCPU `id`, set to ring `port` `rings` times (at least 1) and halt.
        pub(super) fn vcpu(&self, id: u64, port: u16, rings: u32) -> Checked<Vcpu> {
            let fd = self
                .vm
                .create_vcpu(id)
                .map_err(kvm_fail("KVM_CREATE_VCPU"))?;
            let mut sregs = fd.get_sregs().map_err(kvm_fail("KVM_GET_SREGS"))?;
            sregs.cs.base = 0;
            sregs.cs.selector = 0;
            fd.set_sregs(&sregs).map_err(kvm_fail("KVM_SET_SREGS"))?;
            let mut regs = fd.get_regs().map_err(kvm_fail("KVM_GET_REGS"))?;
            regs.rip = CODE_ADDR;
            regs.rdx = port.into();
            regs.rcx = rings.max(1).into();
            regs.rflags = 2;
            fd.set_regs(&regs).map_err(kvm_fail("KVM_SET_REGS"))?;
            Ok(Vcpu {
                fd,
                port,
                _memory: Arc::clone(&self.memory),
            })
        }
    }

    impl Vcpu {
        /// Runs the guest to its `hlt`. An `out` that reaches user space was
        /// missed by the ioeventfd: a failure, as is any other exit.
        pub(super) fn run(mut self) -> Checked<()> {
            loop {
                match self.fd.run() {
                    Ok(VcpuExit::Hlt) => return Ok(()),
                    Ok(VcpuExit::IoOut(port, _)) if port == self.port => {
                        return fail(format!(
                            "an out to {port:#x} exited to user space: no ioeventfd took it"
                        ));
                    }
                    Ok(exit) => return fail(format!("unexpected vCPU exit: {exit:?}")),
                    Err(e) if e.errno() == nix::libc::EINTR => continue,
                    Err(e) => return Err(kvm_fail("KVM_RUN")(e)),
                }
            }
        }
    }

    /// A second fd on `efd`'s counter, in the type kvm-ioctls takes (the
    /// crate's `vmm-sys-util` feature hands the dup over as it is).
    fn to_vmm(efd: &EventFd) -> io::Result<vmm_sys_util::eventfd::EventFd> {
        Ok(efd.try_clone()?.into())
    }
}
