//! Clocks: a wall-clock sample in nanoseconds, and CPU time per thread or
//! process.

use std::time::Duration;

use nix::sys::resource::{getrusage, UsageWho};
use nix::sys::time::TimeValLike;

/// `d` in nanoseconds, saturating.
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// CPU time (user + system) of `who` (the calling thread or the whole
/// process) so far; zero if `getrusage` fails.
pub(crate) fn cpu(who: UsageWho) -> Duration {
    getrusage(who).map_or(Duration::ZERO, |u| {
        let us = (u.user_time() + u.system_time()).num_microseconds();
        Duration::from_micros(us.unsigned_abs())
    })
}

/// How long a latency measurement runs: `rts` timed round trips after
/// `warmup` untimed ones.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rts {
    pub(crate) rts: usize,
    pub(crate) warmup: usize,
}

impl Rts {
    pub(crate) fn new(rts: usize, warmup: usize) -> Rts {
        Rts { rts, warmup }
    }
}

/// The loop of every latency measurement: runs `$round_trip` (a block,
/// which may `.await` and `?`) as [`Rts`] `$n` says; evaluates to the
/// nanoseconds of each timed one. A macro, so the round trip stays inline
/// in the caller's loop (async or not), exactly as if written there.
macro_rules! time_each {
    ($n:expr, $round_trip:block) => {{
        let $crate::timing::Rts { rts, warmup } = $n;
        let mut samples = Vec::with_capacity(rts);
        for i in 0..rts + warmup {
            let start = std::time::Instant::now();
            $round_trip
            if i >= warmup {
                samples.push($crate::timing::nanos(start.elapsed()));
            }
        }
        samples
    }};
}
pub(crate) use time_each;
