//! The few raw OS services the benchmarks need: CPU pinning, per-thread CPU
//! time, and writes to an fd that another owner keeps open.

use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::time::Duration;

use nix::libc;

/// Where threads run while a benchmark measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Pin {
    /// Every thread of the measurement on one CPU.
    Same,
    /// The two sides of a ping-pong on two different CPUs.
    Cross,
    /// No pinning: the kernel decides (bimodal on small VMs).
    None,
}

impl Pin {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Pin::Same => "same",
            Pin::Cross => "cross",
            Pin::None => "none",
        }
    }

    /// The CPU for side `side` (0 or 1) of a measurement, if pinned.
    fn cpu(self, side: usize) -> Option<usize> {
        let cpus = allowed_cpus();
        let first = *cpus.first()?;
        match self {
            Pin::None => None,
            Pin::Same => Some(first),
            Pin::Cross => Some(cpus.get(side % 2).copied().unwrap_or(first)),
        }
    }

    /// Pins the calling thread to the CPU of `side`; a no-op for `none`.
    pub(crate) fn apply(self, side: usize) {
        if let Some(cpu) = self.cpu(side) {
            if let Err(e) = pin_current_thread(cpu) {
                eprintln!("eventfd-bench: cannot pin to CPU {cpu}: {e}");
            }
        }
    }
}

/// The CPUs this process may run on, in order.
pub(crate) fn allowed_cpus() -> Vec<usize> {
    // SAFETY: `cpu_set_t` is a plain bit array; all-zero is a valid value.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable `cpu_set_t` of the size passed.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return vec![0];
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE, so inside `set`.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// `sched_setaffinity(0, {cpu})` for the calling thread.
fn pin_current_thread(cpu: usize) -> io::Result<()> {
    // SAFETY: all-zero is a valid (empty) `cpu_set_t`.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` comes from `allowed_cpus`, below CPU_SETSIZE.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid `cpu_set_t` of the size passed; pid 0 is the
    // calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn rusage(who: libc::c_int) -> Duration {
    // SAFETY: all-zero is a valid `rusage`.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable `rusage`; `who` is RUSAGE_SELF or
    // RUSAGE_THREAD, which cannot fail.
    let rc = unsafe { libc::getrusage(who, &mut ru) };
    if rc != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.unsigned_abs())
            + Duration::from_micros(t.tv_usec.unsigned_abs())
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// CPU time (user + system) of the calling thread so far.
pub(crate) fn thread_cpu() -> Duration {
    rusage(libc::RUSAGE_THREAD)
}

/// CPU time (user + system) of the whole process so far.
pub(crate) fn process_cpu() -> Duration {
    rusage(libc::RUSAGE_SELF)
}

/// Adds 1 to the eventfd `fd` with one `write(2)`.
///
/// The caller guarantees that `fd` is an open eventfd for the whole call
/// (it belongs to an object that outlives every writer).
pub(crate) fn add_raw(fd: RawFd) -> io::Result<()> {
    // SAFETY: the caller keeps `fd` open for the duration of this call (see
    // above); the borrow does not outlive it.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let n = nix::unistd::write(fd, &1u64.to_ne_bytes()).map_err(io::Error::from)?;
    if n == 8 {
        Ok(())
    } else {
        Err(io::ErrorKind::WriteZero.into())
    }
}

/// The open-file limits, if `getrlimit` answers.
fn nofile() -> Option<libc::rlimit> {
    // SAFETY: all-zero is a valid `rlimit`.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: `lim` is a valid, writable `rlimit`.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    (rc == 0).then_some(lim)
}

/// Raises the soft open-file limit to the hard one (the `scale` benchmark
/// opens 10,000 eventfds and more).
pub(crate) fn raise_nofile_limit() {
    if let Some(mut lim) = nofile().filter(|l| l.rlim_cur < l.rlim_max) {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: `lim` is a valid `rlimit` whose soft limit is not above its
        // hard one.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    }
}

/// The soft open-file limit.
pub(crate) fn nofile_limit() -> u64 {
    nofile().map_or(1024, |l| l.rlim_cur)
}
