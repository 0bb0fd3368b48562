//! A KVM guest rings a doorbell, a tokio task hears it: the virtio "queue
//! kick" of every Rust VMM, with an [`AsyncEventFd`] as the doorbell. Then
//! the other direction: the task interrupts the guest through an irqfd.
//!
//! ```sh
//! cargo run --example kvm_doorbell --features vmm-sys-util
//! ```
//!
//! Needs `/dev/kvm` (read and write) on x86_64; elsewhere it says it skipped.
//!
//! The guest is a few bytes of real-mode code on one vCPU thread.
//!
//! Part 1: it executes `out dx, al` to port 0x10 `RINGS` times. A
//! `KVM_IOEVENTFD` on that port (kvm-ioctls' `register_ioevent`) makes each
//! `out` add 1 to the doorbell's counter inside the kernel, without leaving
//! the guest. The task reads until it has counted every ring; the rings that
//! land while it is busy coalesce, so it reads far fewer times than the
//! guest rang.
//!
//! Part 2: the guest enables interrupts and halts. An irqfd
//! (`register_irqfd`) on interrupt line 5 turns each add by the task into a
//! guest interrupt, again inside the kernel; the guest's handler rings the
//! doorbell once and halts again. `ROUND_TRIPS` times, each read must be
//! exactly 1.
//!
//! The vCPU thread leaves `KVM_RUN` only where the guest writes a port no
//! eventfd takes (the end of each part). The example exits non-zero if a
//! ring is missing or extra.
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
    use std::time::{Duration, Instant};

    use async_eventfd::{AsyncEventFd, EventFd};
    use kvm_bindings::kvm_userspace_memory_region;
    use kvm_ioctls::{IoEventAddress, Kvm, NoDatamatch, VcpuExit, VcpuFd};
    use tokio::time::timeout;

    type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

    /// Any await that takes longer than this is a lost wakeup: fail.
    const LIMIT: Duration = Duration::from_secs(5);
    /// Part 1: how many times the guest rings on its own.
    const RINGS: u32 = 100_000;
    /// Part 2: interrupts sent, each answered by one ring.
    const ROUND_TRIPS: u32 = 1_000;
    /// The doorbell port (an ioeventfd).
    const DOORBELL: u16 = 0x10;
    /// The interrupt line of the irqfd (the in-kernel PIC's IRQ 5; with the
    /// PIC's vector base at 0 it is real-mode vector 5).
    const IRQ: u32 = 5;
    /// Ports with no eventfd: the guest's `out` there exits to this thread.
    const PART_1_DONE: u16 = 0x98;
    const PART_2_DONE: u16 = 0x99;

    /// Guest memory: the real-mode interrupt table at 0, code at 0x1000, the
    /// stack below 0x2000.
    const CODE: usize = 0x1000;
    const STACK: u64 = 0x1f00;
    /// Real mode; `dx` = doorbell port, `ecx` = rings, `ebx` = round trips.
    ///
    /// ```text
    /// 1000: ee        out dx, al      ; part 1: ring
    /// 1001: 66 49     dec ecx
    /// 1003: 75 fb     jnz 1000
    /// 1005: e6 98     out 0x98, al    ; part 1 done
    /// 1007: fb        sti             ; part 2: wait for interrupts
    /// 1008: f4        hlt
    /// 1009: eb fd     jmp 1008
    /// 100b: ee        out dx, al      ; the IRQ 5 handler: ring back
    /// 100c: b0 20     mov al, 0x20
    /// 100e: e6 20     out 0x20, al    ; end of interrupt, to the PIC
    /// 1010: 66 4b     dec ebx
    /// 1012: 74 01     jz 1015
    /// 1014: cf        iret
    /// 1015: e6 99     out 0x99, al    ; part 2 done
    /// 1017: f4        hlt
    /// ```
    const GUEST: [u8; 24] = [
        0xee, 0x66, 0x49, 0x75, 0xfb, 0xe6, 0x98, 0xfb, 0xf4, 0xeb, 0xfd, 0xee, 0xb0, 0x20, 0xe6,
        0x20, 0x66, 0x4b, 0x74, 0x01, 0xcf, 0xe6, 0x99, 0xf4,
    ];
    const HANDLER: u16 = 0x100b;

    /// Two pages of guest memory, page-aligned as KVM requires.
    #[repr(C, align(4096))]
    struct Memory([u8; 0x2000]);

    #[tokio::main(flavor = "current_thread")]
    pub(crate) async fn main() -> Res<()> {
        let kvm = match Kvm::new() {
            Ok(kvm) => kvm,
            Err(e) => {
                println!("skipped: /dev/kvm is not usable here ({e})");
                return Ok(());
            }
        };
        let mut memory = Memory([0xf4; 0x2000]);
        let vector = 4 * IRQ as usize;
        memory.0[vector..vector + 2].copy_from_slice(&HANDLER.to_le_bytes());
        memory.0[vector + 2..vector + 4].copy_from_slice(&[0, 0]); // segment 0
        memory.0[CODE..CODE + GUEST.len()].copy_from_slice(&GUEST);
        // Never freed, and never touched by Rust again: the guest writes it
        // (its stack) for as long as the VM lives, which may be until exit.
        let memory: *mut Memory = Box::into_raw(Box::new(memory));
        let vm = kvm.create_vm()?;
        // The in-kernel PIC, IOAPIC and local APIC: an irqfd needs them.
        vm.create_irq_chip()?;
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: std::mem::size_of::<Memory>() as u64,
            userspace_addr: memory as u64,
        };
        // SAFETY: the region is a live, page-aligned allocation that is never
        // freed and that no Rust reference points into.
        unsafe { vm.set_user_memory_region(region) }?;

        // The doorbell: a guest `out` to DOORBELL adds 1 to this counter.
        let doorbell = AsyncEventFd::new()?;
        let port = IoEventAddress::Pio(DOORBELL.into());
        vm.register_ioevent(&to_vmm(doorbell.get_ref())?, &port, NoDatamatch)?;
        // The other way: an add to this counter raises the guest's IRQ 5.
        let interrupt = AsyncEventFd::new()?;
        vm.register_irqfd(&to_vmm(interrupt.get_ref())?, IRQ)?;

        let vcpu = vm.create_vcpu(0)?;
        let mut sregs = vcpu.get_sregs()?;
        sregs.cs.base = 0;
        sregs.cs.selector = 0;
        vcpu.set_sregs(&sregs)?;
        let mut regs = vcpu.get_regs()?;
        regs.rip = CODE as u64;
        regs.rsp = STACK;
        regs.rdx = DOORBELL.into();
        regs.rcx = RINGS.into();
        regs.rbx = ROUND_TRIPS.into();
        regs.rflags = 2; // interrupts off until part 2; bit 1 is always set
        vcpu.set_regs(&regs)?;
        let start = Instant::now();
        let guest = std::thread::spawn(move || run(vcpu));

        // Part 1: count every ring.
        let (mut rung, mut reads) = (0, 0);
        while rung < u64::from(RINGS) {
            rung += timeout(LIMIT, doorbell.read()).await??;
            reads += 1;
        }
        println!(
            "part 1: the guest rang {RINGS} times; the task read {rung} in {reads} reads \
             ({:.0} rings per read) in {:.1?}",
            rung as f64 / f64::from(reads),
            start.elapsed()
        );
        if rung != u64::from(RINGS) {
            return Err(format!("part 1: read {rung} rings of {RINGS}").into());
        }

        // Part 2: interrupt, and wait for the ring back.
        let start = Instant::now();
        for round in 0..ROUND_TRIPS {
            interrupt.add(1).await?;
            let rung = timeout(LIMIT, doorbell.read()).await??;
            if rung != 1 {
                return Err(format!("part 2, round {round}: read {rung} rings, not 1").into());
            }
        }
        let elapsed = start.elapsed();
        tokio::task::spawn_blocking(move || guest.join())
            .await?
            .map_err(|_| "the vCPU thread panicked")??;
        println!(
            "part 2: {ROUND_TRIPS} interrupts through the irqfd, each answered by one ring: \
             {:.1?} per round trip",
            elapsed / ROUND_TRIPS
        );
        // The ioeventfd signals inside the `out`: once the guest is done, no
        // ring can still be on its way.
        match doorbell.try_read() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            other => Err(format!("a ring too many: {other:?}").into()),
        }
    }

    /// Runs the vCPU through both parts. An `out` to the doorbell that
    /// reaches user space was missed by the ioeventfd: an error, as is any
    /// exit but the two "done" ports.
    fn run(mut vcpu: VcpuFd) -> Res<()> {
        loop {
            match vcpu.run() {
                Ok(VcpuExit::IoOut(PART_1_DONE, _)) => continue,
                Ok(VcpuExit::IoOut(PART_2_DONE, _)) => return Ok(()),
                Ok(exit) => return Err(format!("unexpected vCPU exit: {exit:?}").into()),
                Err(e) if e.errno() == nix::libc::EINTR => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// A second fd on `efd`'s counter, in the type kvm-ioctls takes (the
    /// crate's `vmm-sys-util` feature hands the dup over as it is).
    fn to_vmm(efd: &EventFd) -> io::Result<vmm_sys_util::eventfd::EventFd> {
        Ok(efd.try_clone()?.into())
    }
}
