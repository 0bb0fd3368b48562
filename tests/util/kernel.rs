//! The kernel as the writer: an io_uring ring with the eventfd registered
//! (`IORING_REGISTER_EVENTFD`) and a tiny KVM guest ringing a doorbell port
//! that has a `KVM_IOEVENTFD` on it. Each returns `None` after printing one
//! line saying why, where the machine lacks the facility: the caller then
//! returns without having checked anything. Since a test that returns early
//! still counts as passed, a run that must check a facility says so:
//! `EVENTFD_REQUIRE_IO_URING=1` and `EVENTFD_REQUIRE_KVM=1` turn its absence
//! into a failure (CI sets them where the machine has the facility).

use std::os::fd::AsRawFd;

use io_uring::{opcode, IoUring};

/// A ring of `entries` with `efd` registered as its completion eventfd, or
/// `None` (after printing why) where io_uring is missing or disabled.
pub fn ring_for(efd: &impl AsRawFd, entries: u32, test: &str) -> Option<IoUring> {
    let ring = match IoUring::new(entries) {
        Ok(ring) => ring,
        Err(e) => {
            missing(test, "io_uring is not available here", &e, IO_URING);
            return None;
        }
    };
    ring.submitter()
        .register_eventfd(efd.as_raw_fd())
        .expect("IORING_REGISTER_EVENTFD");
    Some(ring)
}

/// The variable that makes a missing io_uring a failure.
pub const IO_URING: &str = "EVENTFD_REQUIRE_IO_URING";
/// The variable that makes a missing or unusable `/dev/kvm` a failure.
pub const KVM: &str = "EVENTFD_REQUIRE_KVM";

/// Whether this run must check the facility that `var` names (`var=1`).
pub fn required(var: &str) -> bool {
    std::env::var_os(var).is_some_and(|v| v == "1")
}

/// Says in one line that `test` skipped because `what` (`e`), or fails it
/// where `var` requires the facility.
fn missing(test: &str, what: &str, e: &dyn std::fmt::Display, var: &str) {
    assert!(
        !required(var),
        "{test}: {what} ({e}), and {var}=1 requires it"
    );
    println!("{test}: skipped: {what} ({e})");
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
/// counter, through the crate's `vmm-sys-util` conversion.
#[cfg(all(target_arch = "x86_64", feature = "vmm-sys-util"))]
pub fn vmm_eventfd(
    efd: &async_eventfd::EventFd,
) -> std::io::Result<vmm_sys_util::eventfd::EventFd> {
    Ok(efd.try_clone()?.into())
}

/// A tiny KVM guest (x86 real mode) that rings a doorbell port, and
/// answers interrupts from an irqfd by ringing it once each.
#[cfg(all(target_arch = "x86_64", feature = "vmm-sys-util"))]
pub mod kvm {
    use std::io;
    use std::sync::Arc;

    use async_eventfd::EventFd;
    use kvm_bindings::kvm_userspace_memory_region;
    use kvm_ioctls::{IoEventAddress, Kvm, NoDatamatch, VcpuExit, VcpuFd, VmFd};

    /// The interrupt line of [`Guest::interrupt`]: the in-kernel PIC's IRQ 5,
    /// real-mode vector 5 (the PIC's vector base is 0).
    const IRQ: u32 = 5;
    /// Ports with no eventfd: the guest's `out` there exits to user space.
    const RINGS_DONE: u16 = 0x98;
    const INTERRUPTS_DONE: u16 = 0x99;
    /// Guest memory: the interrupt table at 0, code at 0x1000, the stack
    /// below 0x2000.
    const CODE: usize = 0x1000;
    const STACK: u64 = 0x1f00;
    /// Real mode; `dx` = doorbell port, `ecx` = rings, `ebx` = interrupts.
    ///
    /// ```text
    /// 1000: ee        out dx, al      ; ring
    /// 1001: 66 49     dec ecx
    /// 1003: 75 fb     jnz 1000
    /// 1005: e6 98     out 0x98, al    ; rings done
    /// 1007: fb        sti             ; then wait for interrupts
    /// 1008: f4        hlt
    /// 1009: eb fd     jmp 1008
    /// 100b: ee        out dx, al      ; the IRQ 5 handler: ring back
    /// 100c: b0 20     mov al, 0x20
    /// 100e: e6 20     out 0x20, al    ; end of interrupt, to the PIC
    /// 1010: 66 4b     dec ebx
    /// 1012: 74 01     jz 1015
    /// 1014: cf        iret
    /// 1015: e6 99     out 0x99, al    ; interrupts done
    /// 1017: f4        hlt
    /// ```
    const PROGRAM: [u8; 24] = [
        0xee, 0x66, 0x49, 0x75, 0xfb, 0xe6, 0x98, 0xfb, 0xf4, 0xeb, 0xfd, 0xee, 0xb0, 0x20, 0xe6,
        0x20, 0x66, 0x4b, 0x74, 0x01, 0xcf, 0xe6, 0x99, 0xf4,
    ];
    const HANDLER: u16 = 0x100b;

    /// Two pages of guest memory, page-aligned as KVM requires.
    #[repr(C, align(4096))]
    struct Memory([u8; 0x2000]);

    /// A VM with the program loaded and the in-kernel interrupt controller.
    pub struct Guest {
        // Field order is drop order: the VM's fd closes before this share of
        // the memory it maps is let go.
        vm: VmFd,
        _kvm: Kvm,
        memory: Arc<GuestMemory>,
    }

    /// One vCPU set to ring `port` `rings` times, then answer `interrupts`
    /// interrupts with one ring each.
    pub struct Vcpu {
        // As for `Guest`: the vCPU's fd (which keeps the VM alive) closes
        // first.
        fd: VcpuFd,
        port: u16,
        interrupts: u32,
        _memory: Arc<GuestMemory>,
    }

    /// The guest's memory, freed when the last of the `Guest` and its
    /// `Vcpu`s is dropped: by then every fd that keeps the VM (and so its
    /// mapping of this memory) alive has closed. Rust never makes a
    /// reference into it: the guest writes it (its stack).
    struct GuestMemory(*mut Memory);

    // SAFETY: the pointer is only freed (once, on drop); no Rust code reads
    // or writes through it, so no thread can race another through it.
    unsafe impl Send for GuestMemory {}
    // SAFETY: as for `Send`.
    unsafe impl Sync for GuestMemory {}

    impl Drop for GuestMemory {
        fn drop(&mut self) {
            // SAFETY: made by `Box::into_raw` in `Guest::new`, freed only here.
            drop(unsafe { Box::from_raw(self.0) });
        }
    }

    impl Guest {
        /// A VM with the program in its memory, or `None` (after printing
        /// why) where `/dev/kvm` is missing or unusable.
        pub fn new(test: &str) -> Option<Guest> {
            let kvm = match Kvm::new() {
                Ok(kvm) => kvm,
                Err(e) => {
                    super::missing(test, "/dev/kvm is not usable here", &e, super::KVM);
                    return None;
                }
            };
            // Under an emulator (qemu-user) /dev/kvm opens but makes no VM.
            let vm = match kvm.create_vm() {
                Ok(vm) => vm,
                Err(e) => {
                    super::missing(test, "/dev/kvm makes no VM here", &e, super::KVM);
                    return None;
                }
            };
            vm.create_irq_chip().expect("KVM_CREATE_IRQCHIP");
            let mut memory = Memory([0xf4; 0x2000]);
            let vector = 4 * IRQ as usize;
            memory.0[vector..vector + 2].copy_from_slice(&HANDLER.to_le_bytes());
            memory.0[vector + 2..vector + 4].copy_from_slice(&[0, 0]);
            memory.0[CODE..CODE + PROGRAM.len()].copy_from_slice(&PROGRAM);
            let memory = Arc::new(GuestMemory(Box::into_raw(Box::new(memory))));
            let region = kvm_userspace_memory_region {
                slot: 0,
                flags: 0,
                guest_phys_addr: 0,
                memory_size: std::mem::size_of::<Memory>() as u64,
                userspace_addr: memory.0 as u64,
            };
            // SAFETY: the region is a live, page-aligned allocation that no
            // Rust reference points into, freed only after the VM is gone
            // (see `GuestMemory`).
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

        /// Puts an irqfd on the guest's interrupt line: an add to `efd`'s
        /// counter raises the guest interrupt, inside the kernel.
        pub fn interrupt(&self, efd: &EventFd) -> io::Result<()> {
            let vmm = super::vmm_eventfd(efd)?;
            self.vm
                .register_irqfd(&vmm, IRQ)
                .map_err(|e| io::Error::from_raw_os_error(e.errno()))
        }

        /// vCPU `id`, ready to ring `port` `rings` times (at least 1), then
        /// to answer `interrupts` interrupts.
        pub fn vcpu(&self, id: u64, port: u16, rings: u32, interrupts: u32) -> Vcpu {
            assert!(rings >= 1, "the loop rings at least once");
            let fd = self.vm.create_vcpu(id).expect("KVM_CREATE_VCPU");
            let mut sregs = fd.get_sregs().expect("KVM_GET_SREGS");
            sregs.cs.base = 0;
            sregs.cs.selector = 0;
            fd.set_sregs(&sregs).expect("KVM_SET_SREGS");
            let mut regs = fd.get_regs().expect("KVM_GET_REGS");
            regs.rip = CODE as u64;
            regs.rsp = STACK;
            regs.rdx = port.into();
            regs.rcx = rings.into();
            regs.rbx = interrupts.into();
            regs.rflags = 2; // interrupts off until the rings are done
            fd.set_regs(&regs).expect("KVM_SET_REGS");
            Vcpu {
                fd,
                port,
                interrupts,
                _memory: Arc::clone(&self.memory),
            }
        }
    }

    impl Vcpu {
        /// Runs the guest through its rings and, if any were asked for, its
        /// interrupts. Every `out` to the doorbell should be taken by the
        /// ioeventfd in the kernel; one that exits to user space instead is
        /// an error, as is any other exit.
        pub fn run(mut self) -> Result<(), String> {
            loop {
                match self.fd.run() {
                    Ok(VcpuExit::IoOut(RINGS_DONE, _)) if self.interrupts == 0 => return Ok(()),
                    Ok(VcpuExit::IoOut(RINGS_DONE, _)) => continue,
                    Ok(VcpuExit::IoOut(INTERRUPTS_DONE, _)) => return Ok(()),
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
