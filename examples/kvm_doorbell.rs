//! A KVM guest rings a doorbell, a tokio task hears it: the virtio "queue
//! kick" of every Rust VMM, with an [`AsyncEventFd`] as the doorbell.
//!
//! ```sh
//! cargo run --example kvm_doorbell
//! ```
//!
//! Needs `/dev/kvm` (read and write) on x86_64; elsewhere it says it skipped.
//!
//! The guest is six bytes of real-mode code on one vCPU thread:
//! `out dx, al` to port 0x10, `RINGS` times, then `hlt`. A `KVM_IOEVENTFD`
//! on that port (kvm-ioctls' `register_ioevent`) makes each `out` add 1 to
//! the eventfd's counter inside the kernel, without leaving the guest: the
//! vCPU thread sees only the final `hlt`. The task reads the counter until it
//! has counted every ring; the rings that land while it is busy coalesce
//! into one read, so it reads far fewer times than the guest rang. The
//! example exits non-zero if a ring is missing.
//!
//! kvm-ioctls takes `vmm_sys_util::eventfd::EventFd`; [`to_vmm`] hands it a
//! second fd on the same counter.

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
fn main() {
    println!("skipped: this example's guest is x86_64 code");
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    doorbell::main()
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod doorbell {
    use std::error::Error;
    use std::io;
    use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use async_eventfd::{AsyncEventFd, EventFd};
    use kvm_bindings::kvm_userspace_memory_region;
    use kvm_ioctls::{IoEventAddress, Kvm, NoDatamatch, VcpuExit, VcpuFd};
    use tokio::time::timeout;

    type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

    /// Any await that takes longer than this is a lost wakeup: fail.
    const LIMIT: Duration = Duration::from_secs(5);
    /// How many times the guest rings.
    const RINGS: u32 = 100_000;
    /// The doorbell port.
    const PORT: u16 = 0x10;
    /// Where the guest's code sits in guest-physical memory.
    const CODE_ADDR: u64 = 0x1000;
    /// Real mode, `dx` = port, `ecx` = rings:
    ///
    /// ```text
    /// 0: ee        out dx, al
    /// 1: 66 49     dec ecx
    /// 3: 75 fb     jnz 0
    /// 5: f4        hlt
    /// ```
    const GUEST: [u8; 6] = [0xee, 0x66, 0x49, 0x75, 0xfb, 0xf4];

    /// One page of guest memory, page-aligned as KVM requires.
    #[repr(C, align(4096))]
    struct Page([u8; 4096]);

    #[tokio::main(flavor = "current_thread")]
    pub(crate) async fn main() -> Res<()> {
        let kvm = match Kvm::new() {
            Ok(kvm) => kvm,
            Err(e) => {
                println!("skipped: /dev/kvm is not usable here ({e})");
                return Ok(());
            }
        };
        let mut page = Page([0xf4; 4096]);
        page.0[..GUEST.len()].copy_from_slice(&GUEST);
        // Declared before `vm`, so dropped after it; shared with the vCPU
        // thread, which lets go of it only after closing its vCPU fd.
        let memory = Arc::new(page);
        let vm = kvm.create_vm()?;
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: CODE_ADDR,
            memory_size: std::mem::size_of::<Page>() as u64,
            userspace_addr: memory.0.as_ptr() as u64,
        };
        // SAFETY: the page stays allocated while any fd that keeps the VM
        // alive is open: `vm` is dropped before `memory` (declared earlier),
        // and the vCPU thread closes its vCPU fd before its clone of `memory`
        // (see `run`). The guest only reads the page.
        unsafe { vm.set_user_memory_region(region) }?;

        // The doorbell: a guest `out` to PORT adds 1 to this counter.
        let doorbell = AsyncEventFd::new()?;
        vm.register_ioevent(
            &to_vmm(doorbell.get_ref())?,
            &IoEventAddress::Pio(PORT.into()),
            NoDatamatch,
        )?;

        let vcpu = vm.create_vcpu(0)?;
        let mut sregs = vcpu.get_sregs()?;
        sregs.cs.base = 0;
        sregs.cs.selector = 0;
        vcpu.set_sregs(&sregs)?;
        let mut regs = vcpu.get_regs()?;
        regs.rip = CODE_ADDR;
        regs.rdx = PORT.into();
        regs.rcx = RINGS.into();
        regs.rflags = 2; // bit 1 is always set
        vcpu.set_regs(&regs)?;
        let start = Instant::now();
        let guest = std::thread::spawn({
            let memory = Arc::clone(&memory);
            move || run(vcpu, memory)
        });

        let (mut rung, mut reads) = (0, 0);
        while rung < u64::from(RINGS) {
            rung += timeout(LIMIT, doorbell.read()).await??;
            reads += 1;
        }
        let elapsed = start.elapsed();
        tokio::task::spawn_blocking(move || guest.join())
            .await?
            .map_err(|_| "the vCPU thread panicked")??;
        // The ioeventfd signals inside the `out`: after the `hlt`, no ring
        // can still be on its way.
        let left = doorbell.try_read().map_err(|e| e.kind());
        println!(
            "the guest rang {RINGS} times; the task read {rung} in {reads} reads \
             ({:.0} rings per read) in {elapsed:.1?}",
            rung as f64 / f64::from(reads)
        );
        if rung != u64::from(RINGS) || left != Err(io::ErrorKind::WouldBlock) {
            return Err(format!("counted {rung} of {RINGS} rings, then {left:?}").into());
        }
        Ok(())
    }

    /// Runs the vCPU until the guest halts. An `out` that reaches user space
    /// was missed by the ioeventfd: an error, as is any other exit.
    fn run(mut vcpu: VcpuFd, memory: Arc<Page>) -> Res<()> {
        let outcome = loop {
            match vcpu.run() {
                Ok(VcpuExit::Hlt) => break Ok(()),
                Ok(exit) => break Err(format!("unexpected vCPU exit: {exit:?}").into()),
                Err(e) if e.errno() == nix::libc::EINTR => continue,
                Err(e) => break Err(e.into()),
            }
        };
        // The vCPU fd keeps the VM, and so its mapping of `memory`, alive.
        drop(vcpu);
        drop(memory);
        outcome
    }

    /// A second fd on `efd`'s counter, in the type kvm-ioctls takes. The one
    /// place that converts; with the crate's `vmm-sys-util` feature this is
    /// `Ok(efd.try_clone()?.into())`.
    fn to_vmm(efd: &EventFd) -> io::Result<vmm_sys_util::eventfd::EventFd> {
        let fd: OwnedFd = efd.try_clone()?.into();
        // SAFETY: `into_raw_fd` gives up ownership of a fresh, open eventfd
        // (the dup made just above); the returned `EventFd` now owns it.
        Ok(unsafe { vmm_sys_util::eventfd::EventFd::from_raw_fd(fd.into_raw_fd()) })
    }
}
