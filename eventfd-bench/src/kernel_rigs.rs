//! Kernel writers, set up once for the stress scenarios S17-S19 and for
//! `eventfd-bench kernel`: an io_uring ring that signals an eventfd on every
//! completion ([`uring`]), and a tiny KVM guest whose vCPU rings an
//! ioeventfd doorbell ([`guest`]).
//!
//! Where the facility is missing (io_uring disabled, no `/dev/kvm`), setup
//! gives [`RigError::Missing`] with the reason, so a caller can skip rather
//! than fail.

use std::fmt;
use std::io;
use std::os::fd::AsRawFd;

use io_uring::{opcode, squeue, IoUring};

/// Why a rig could not be set up or run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RigError {
    /// The facility is missing here: skip, with this reason.
    Missing(String),
    /// The facility is here, and a step failed.
    Failed(String),
}

impl fmt::Display for RigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RigError::Missing(reason) => write!(f, "skipped: {reason}"),
            RigError::Failed(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for RigError {}

impl From<RigError> for io::Error {
    fn from(e: RigError) -> io::Error {
        io::Error::other(e)
    }
}

/// `what: e`, as a failure.
fn failed(what: &str) -> impl FnOnce(io::Error) -> RigError + '_ {
    move |e| RigError::Failed(format!("{what}: {e}"))
}

/// An io_uring ring of `entries` entries with `efd` registered
/// (`IORING_REGISTER_EVENTFD`): the kernel signals it once per completion.
///
/// # Errors
///
/// [`RigError::Missing`] where io_uring is not available; a failed
/// registration.
pub fn uring(efd: &impl AsRawFd, entries: u32) -> Result<IoUring, RigError> {
    let ring = IoUring::new(entries)
        .map_err(|e| RigError::Missing(format!("io_uring is not available here ({e})")))?;
    ring.submitter()
        .register_eventfd(efd.as_raw_fd())
        .map_err(failed("IORING_REGISTER_EVENTFD"))?;
    Ok(ring)
}

/// Queues one NOP. With `async_worker`, the NOP carries `IOSQE_ASYNC`: an
/// io-wq kernel thread completes it (and signals the eventfd) after the
/// submit returns; without, it completes inside the `io_uring_enter` that
/// submits it.
///
/// # Errors
///
/// The submission queue is full.
pub fn push_nop(ring: &mut IoUring, async_worker: bool) -> Result<(), RigError> {
    let mut entry = opcode::Nop::new().build();
    if async_worker {
        entry = entry.flags(squeue::Flags::ASYNC);
    }
    // SAFETY: a NOP refers to no memory, so nothing has to outlive it.
    unsafe { ring.submission().push(&entry) }
        .map_err(|_| RigError::Failed("the submission queue is full".into()))
}

/// Reaps the whole completion queue; returns how many completions it held.
///
/// # Errors
///
/// A completion with an error result.
pub fn reap(ring: &mut IoUring) -> Result<u64, RigError> {
    let mut reaped = 0;
    for cqe in ring.completion() {
        if cqe.result() < 0 {
            return Err(RigError::Failed(format!(
                "a NOP failed: {}",
                io::Error::from_raw_os_error(-cqe.result())
            )));
        }
        reaped += 1;
    }
    Ok(reaped)
}

/// A tiny KVM guest: real-mode code that rings a port and halts.
#[cfg(target_arch = "x86_64")]
pub mod guest {
    use std::io;
    use std::sync::Arc;

    use async_eventfd::EventFd;
    use kvm_bindings::kvm_userspace_memory_region;
    use kvm_ioctls::{IoEventAddress, Kvm, NoDatamatch, VcpuExit, VcpuFd, VmFd};

    use super::{failed, RigError};

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
    struct Page([u8; 4096]);

    /// A VM with the doorbell loop in its memory.
    #[allow(missing_debug_implementations, reason = "kvm-ioctls fds")]
    pub struct Guest {
        vm: VmFd,
        _kvm: Kvm,
        memory: Arc<Page>,
    }

    /// A vCPU of a [`Guest`], set to ring its port a number of times.
    #[allow(missing_debug_implementations, reason = "kvm-ioctls fds")]
    pub struct Vcpu {
        // Field order is drop order: the vCPU's fd (which keeps the VM alive)
        // closes before its share of the memory the VM maps is let go.
        fd: VcpuFd,
        port: u16,
        _memory: Arc<Page>,
    }

    fn kvm_fail(what: &str) -> impl FnOnce(kvm_ioctls::Error) -> RigError + '_ {
        move |e| failed(what)(io::Error::from_raw_os_error(e.errno()))
    }

    impl Guest {
        /// A VM with the doorbell loop in memory.
        ///
        /// # Errors
        ///
        /// [`RigError::Missing`] where `/dev/kvm` is missing or unusable; a
        /// failed KVM ioctl.
        pub fn new() -> Result<Guest, RigError> {
            let kvm = Kvm::new()
                .map_err(|e| RigError::Missing(format!("/dev/kvm is not usable here ({e})")))?;
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
        ///
        /// # Errors
        ///
        /// The `dup(2)` of `efd` or the ioctl failed.
        pub fn doorbell(&self, port: u16, efd: &EventFd) -> Result<(), RigError> {
            // The crate's `vmm-sys-util` feature hands the dup over as it is.
            let dup = efd.try_clone().map_err(failed("dup the eventfd"))?;
            let vmm = vmm_sys_util::eventfd::EventFd::from(dup);
            self.vm
                .register_ioevent(&vmm, &IoEventAddress::Pio(port.into()), NoDatamatch)
                .map_err(kvm_fail("KVM_IOEVENTFD"))
        }

        /// vCPU `id`, set to ring `port` `rings` times (at least 1) and halt.
        ///
        /// # Errors
        ///
        /// A failed KVM ioctl.
        pub fn vcpu(&self, id: u64, port: u16, rings: u32) -> Result<Vcpu, RigError> {
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
        /// Runs the guest to its `hlt`.
        ///
        /// # Errors
        ///
        /// An `out` that reached user space (the ioeventfd missed it), any
        /// other exit, or a failed `KVM_RUN`.
        pub fn run(mut self) -> Result<(), RigError> {
            loop {
                match self.fd.run() {
                    Ok(VcpuExit::Hlt) => return Ok(()),
                    Ok(VcpuExit::IoOut(port, _)) if port == self.port => {
                        return Err(RigError::Failed(format!(
                            "an out to {port:#x} exited to user space: no ioeventfd took it"
                        )));
                    }
                    Ok(exit) => {
                        return Err(RigError::Failed(format!("unexpected vCPU exit: {exit:?}")))
                    }
                    Err(e) if e.errno() == nix::libc::EINTR => continue,
                    Err(e) => return Err(kvm_fail("KVM_RUN")(e)),
                }
            }
        }
    }
}
