//! The kernel as the writer: an io_uring ring with the eventfd registered
//! (`IORING_REGISTER_EVENTFD`) and a tiny KVM guest ringing a doorbell port
//! that has a `KVM_IOEVENTFD` on it. Each returns `None` after printing one
//! line saying why, where the machine lacks the facility: the caller then
//! returns without claiming a pass for what it did not run.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};

use async_eventfd::EventFd;
use io_uring::{opcode, IoUring};

/// A ring of `entries` with `efd` registered as its completion eventfd, or
/// `None` (after printing why) where io_uring is missing or disabled.
pub fn ring_for(efd: &impl AsRawFd, entries: u32, test: &str) -> Option<IoUring> {
    let ring = match IoUring::new(entries) {
        Ok(ring) => ring,
        Err(e) => {
            println!("{test}: skipped: io_uring is not available here ({e})");
            return None;
        }
    };
    ring.submitter()
        .register_eventfd(efd.as_raw_fd())
        .expect("IORING_REGISTER_EVENTFD");
    Some(ring)
}

/// Completes `n` NOPs, one `io_uring_enter` each, reaping every completion
/// as it goes; returns how many were reaped.
///
/// One NOP per submit posts one CQE per flush, so the kernel signals the
/// eventfd exactly once per NOP (it signals once per flush that posted
/// anything: a batch of NOPs submitted together is one signal).
pub fn complete_nops(ring: &mut IoUring, n: u64) -> u64 {
    let mut reaped = 0;
    for i in 0..n {
        push_nop(ring, i);
        ring.submit_and_wait(1).expect("io_uring_enter");
        reaped += drain(ring);
    }
    reaped
}

/// Queues one NOP tagged `user_data`.
pub fn push_nop(ring: &mut IoUring, user_data: u64) {
    let nop = opcode::Nop::new().build().user_data(user_data);
    // SAFETY: a NOP refers to no memory, so nothing has to outlive it.
    unsafe { ring.submission().push(&nop) }.expect("the submission queue has room");
}

/// Reaps every completion in the queue; returns how many there were.
pub fn drain(ring: &mut IoUring) -> u64 {
    let mut completion = ring.completion();
    completion.sync();
    let mut reaped = 0;
    for cqe in &mut completion {
        assert!(cqe.result() >= 0, "a NOP failed: {}", cqe.result());
        reaped += 1;
    }
    reaped
}

/// Hands KVM (whose API takes `vmm_sys_util`'s type) a second fd on `efd`'s
/// counter. The one place that converts: with the crate's `vmm-sys-util`
/// feature this becomes `Ok(efd.try_clone()?.into())`.
#[cfg(target_arch = "x86_64")]
pub fn vmm_eventfd(efd: &EventFd) -> io::Result<vmm_sys_util::eventfd::EventFd> {
    let fd: OwnedFd = efd.try_clone()?.into();
    // SAFETY: `into_raw_fd` gives up ownership of a fresh, open eventfd (a dup
    // made just above), which the returned `EventFd` now owns and closes.
    Ok(unsafe { vmm_sys_util::eventfd::EventFd::from_raw_fd(fd.into_raw_fd()) })
}

/// A tiny KVM guest (x86 real mode) that rings a doorbell port.
#[cfg(target_arch = "x86_64")]
pub mod kvm {
    use std::io;
    use std::sync::Arc;

    use async_eventfd::EventFd;
    use kvm_bindings::kvm_userspace_memory_region;
    use kvm_ioctls::{IoEventAddress, Kvm, NoDatamatch, VcpuExit, VcpuFd, VmFd};

    /// Where the guest's code sits in guest-physical memory.
    const CODE_ADDR: u64 = 0x1000;

    /// The guest: real mode, `dx` = port, `ecx` = count (at least 1).
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
    struct Page([u8; 4096]);

    /// A VM with the doorbell loop loaded, and its vCPUs to come.
    pub struct Guest {
        vm: VmFd,
        _kvm: Kvm,
        memory: Arc<Page>,
    }

    /// One vCPU set to ring `port` `rings` times and halt.
    pub struct Vcpu {
        // Field order is drop order: the vCPU's fd (which keeps the VM alive)
        // closes before its share of the memory the VM maps is let go.
        fd: VcpuFd,
        port: u16,
        _memory: Arc<Page>,
    }

    impl Guest {
        /// A VM with the doorbell loop in its memory, or `None` (after
        /// printing why) where `/dev/kvm` is missing or unusable.
        pub fn new(test: &str) -> Option<Guest> {
            let kvm = match Kvm::new() {
                Ok(kvm) => kvm,
                Err(e) => {
                    println!("{test}: skipped: /dev/kvm is not usable here ({e})");
                    return None;
                }
            };
            let vm = kvm.create_vm().expect("KVM_CREATE_VM");
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
            unsafe { vm.set_user_memory_region(region) }.expect("KVM_SET_USER_MEMORY_REGION");
            Some(Guest {
                vm,
                _kvm: kvm,
                memory,
            })
        }

        /// Puts a `KVM_IOEVENTFD` on `port`: a guest `out` there adds 1 to
        /// `efd`'s counter inside the kernel, with no exit to user space.
        pub fn doorbell(&self, port: u16, efd: &EventFd) -> io::Result<()> {
            let vmm = super::vmm_eventfd(efd)?;
            self.vm
                .register_ioevent(&vmm, &IoEventAddress::Pio(port.into()), NoDatamatch)
                .map_err(|e| io::Error::from_raw_os_error(e.errno()))
            // KVM holds its own reference on the counter: `vmm` may close.
        }

        /// vCPU `id`, ready to ring `port` `rings` times (at least 1).
        pub fn vcpu(&self, id: u64, port: u16, rings: u32) -> Vcpu {
            assert!(rings >= 1, "the loop rings at least once");
            let fd = self.vm.create_vcpu(id).expect("KVM_CREATE_VCPU");
            let mut sregs = fd.get_sregs().expect("KVM_GET_SREGS");
            sregs.cs.base = 0;
            sregs.cs.selector = 0;
            fd.set_sregs(&sregs).expect("KVM_SET_SREGS");
            let mut regs = fd.get_regs().expect("KVM_GET_REGS");
            regs.rip = CODE_ADDR;
            regs.rdx = port.into();
            regs.rcx = rings.into();
            regs.rflags = 2;
            fd.set_regs(&regs).expect("KVM_SET_REGS");
            Vcpu {
                fd,
                port,
                _memory: Arc::clone(&self.memory),
            }
        }
    }

    impl Vcpu {
        /// Runs the guest until it halts. Every `out` should be taken by the
        /// ioeventfd in the kernel; one that exits to user space instead is
        /// an error, as is any exit but the final `hlt`.
        pub fn run(mut self) -> Result<(), String> {
            loop {
                match self.fd.run() {
                    Ok(VcpuExit::Hlt) => return Ok(()),
                    Ok(VcpuExit::IoOut(port, _)) if port == self.port => {
                        return Err(format!(
                            "an out to {port:#x} exited to user space: no ioeventfd took it"
                        ));
                    }
                    Ok(exit) => return Err(format!("unexpected vCPU exit: {exit:?}")),
                    Err(e) if e.errno() == nix::libc::EINTR => continue,
                    Err(e) => return Err(format!("KVM_RUN: {e}")),
                }
            }
        }
    }
}
