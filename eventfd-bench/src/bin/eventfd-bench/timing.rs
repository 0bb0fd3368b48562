//! Clocks: a wall-clock sample in nanoseconds, and CPU time per thread or
//! process.

use std::time::Duration;

use nix::sys::resource::{getrusage, UsageWho};
use nix::sys::time::TimeValLike;

/// `d` in nanoseconds, saturating.
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// CPU time (user + system) of `who` so far; zero if `getrusage` fails.
fn cpu(who: UsageWho) -> Duration {
    getrusage(who).map_or(Duration::ZERO, |u| {
        let us = (u.user_time() + u.system_time()).num_microseconds();
        Duration::from_micros(us.unsigned_abs())
    })
}

/// CPU time (user + system) of the calling thread so far.
pub(crate) fn thread_cpu() -> Duration {
    cpu(UsageWho::RUSAGE_THREAD)
}

/// CPU time (user + system) of the whole process so far.
pub(crate) fn process_cpu() -> Duration {
    cpu(UsageWho::RUSAGE_SELF)
}
