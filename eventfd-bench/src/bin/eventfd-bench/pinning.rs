//! Where the threads of a measurement run: `--pin` and CPU affinity.

use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

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
        let Some(cpu) = self.cpu(side) else { return };
        let mut set = CpuSet::new();
        // Pid 0 is the calling thread.
        let pinned = set
            .set(cpu)
            .and_then(|()| sched_setaffinity(Pid::from_raw(0), &set));
        if let Err(e) = pinned {
            eprintln!("eventfd-bench: cannot pin to CPU {cpu}: {e}");
        }
    }
}

/// The CPUs this process may run on, in order.
pub(crate) fn allowed_cpus() -> Vec<usize> {
    match sched_getaffinity(Pid::from_raw(0)) {
        Ok(set) => (0..CpuSet::count())
            .filter(|&cpu| set.is_set(cpu) == Ok(true))
            .collect(),
        Err(_) => vec![0],
    }
}
