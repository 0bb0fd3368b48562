//! A row of a table, the one model every table uses: a contender on a
//! runtime flavor, or a floor (the same work with no runtime); and the
//! comparison of a row with its baseline.

use crate::contenders::Contender;
use crate::options::Common;
use crate::runtime::Flavor;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Row {
    Task(Contender, Flavor),
    /// Flavor `-` (`null` in `--json`): what the threads and the kernel
    /// alone cost.
    Floor(Floor),
}

/// The floors, one per kind of work ([`Row::describe`] says which).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Floor {
    WriteRead,
    Threads,
    Epoll,
    Thread,
    #[cfg_attr(
        not(target_arch = "x86_64"),
        allow(dead_code, reason = "the KVM rig is x86_64 only")
    )]
    Guest,
}

impl Row {
    /// The first column (`impl` in `--json`).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Row::Task(c, _) => c.name(),
            Row::Floor(Floor::WriteRead) => "floor: write+read",
            Row::Floor(Floor::Threads) => "floor: 2 threads",
            Row::Floor(Floor::Epoll) => "floor: epoll",
            Row::Floor(Floor::Thread) => "floor: plain thread",
            Row::Floor(Floor::Guest) => "floor: guest alone",
        }
    }

    /// What the row measures, in words (`what` in `--json`).
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Row::Task(c, _) => c.describe(),
            Row::Floor(Floor::WriteRead) => {
                "write(2) + read(2) of one eventfd in one thread, no wakeup"
            }
            Row::Floor(Floor::Threads) => "two OS threads ping-pong through blocking eventfds",
            Row::Floor(Floor::Epoll) => {
                "one thread: the same syscalls on eventfds in one epoll set, no runtime"
            }
            Row::Floor(Floor::Thread) => {
                "a plain thread: blocking read(2) of the eventfd, no runtime"
            }
            Row::Floor(Floor::Guest) => {
                "the guest alone: nobody reads until it halts, then one read"
            }
        }
    }

    pub(crate) fn flavor(self) -> Option<Flavor> {
        match self {
            Row::Task(_, flavor) => Some(flavor),
            Row::Floor(_) => None,
        }
    }

    /// The row in the progress line: its name and flavor.
    pub(crate) fn label(self) -> String {
        format!("{} {}", self.name(), self.flavor().map_or("", Flavor::name))
    }

    /// The row this one is compared with (`vs crate`): the crate's of the
    /// same flavor; a floor's is the current-thread one.
    pub(crate) fn baseline(self) -> Row {
        Row::Task(Contender::Crate, self.flavor().unwrap_or(Flavor::Ct))
    }
}

/// The task rows of `common`'s contenders, for every flavor and count, in
/// table order (flavor, then count, then contender).
pub(crate) fn grid<N: Copy>(common: &Common, counts: &[N]) -> Vec<(Row, N)> {
    let contenders = common.contenders();
    let mut rows = Vec::new();
    for flavor in common.flavors() {
        for &n in counts {
            rows.extend(contenders.iter().map(|&c| (Row::Task(c, flavor), n)));
        }
    }
    rows
}

/// `value(at) / value(j)` where `keys[j] == base`; NaN (`-`, `null`) when
/// `base` was not measured.
pub(crate) fn ratio_to<K: PartialEq>(
    keys: &[K],
    base: &K,
    at: usize,
    value: impl Fn(usize) -> f64,
) -> f64 {
    keys.iter()
        .position(|k| k == base)
        .map_or(f64::NAN, |j| value(at) / value(j))
}
