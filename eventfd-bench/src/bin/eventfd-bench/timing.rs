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

/// The loop of every latency measurement: runs `$round_trip` (a block,
/// which may `.await` and `?`) `$warmup` times, then `$rts` times more,
/// timed; evaluates to the nanoseconds of each timed one. A macro, so the
/// round trip stays inline in the caller's loop (async or not), exactly as
/// if written there.
macro_rules! time_each {
    ($rts:expr, $warmup:expr, $round_trip:block) => {{
        let (rts, warmup) = ($rts, $warmup);
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
