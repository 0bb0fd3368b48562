//! How fast this machine is, measured once per process, so that what a
//! verdict allows scales with the machine instead of assuming a fast one.

use std::io;
use std::os::fd::AsFd;
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use async_eventfd::{EventFd, MAX_COUNT};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::resource::{getrusage, UsageWho};
use nix::sys::time::TimeValLike;
use serde::Serialize;

/// One eventfd round trip between two threads on a fast, idle machine.
/// Slower machines (a loaded host, an emulator) scale from it.
const REFERENCE_ROUND_TRIP: Duration = Duration::from_micros(20);

/// S18's quiet window, over which [`Calibration::idle_wait_cpu`] is measured.
pub(super) const QUIET: Duration = Duration::from_millis(200);

/// What this machine measured; reported with every scenario (`calibration`
/// in `--json`).
///
/// # Examples
///
/// ```
/// let c = eventfd_bench::stress::calibration();
/// assert!(c.slowness >= 1.0);
/// assert!(c.round_trip_ns > 0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Calibration {
    /// One eventfd round trip between two threads (a blocking read woken
    /// by the other thread's add, and back), in ns: the median of batches.
    pub round_trip_ns: u64,
    /// How many times slower than the reference round trip (20 µs), at
    /// least 1: the round deadline is multiplied by it.
    pub slowness: f64,
    /// The process's CPU time, in µs, over 200 ms of an honest wait on a
    /// saturated counter: what waiting costs here when nothing spins, which
    /// S18's spin checks are judged against.
    pub idle_wait_cpu_us: u64,
}

impl Calibration {
    pub(super) fn idle_wait_cpu(&self) -> Duration {
        Duration::from_micros(self.idle_wait_cpu_us)
    }

    /// How many wakeups a task that spins could make in `window` here (one
    /// wakeup costs about a round trip), so whether a spin can be told from
    /// an honest wait that wakes `honest` times.
    pub(super) fn can_tell_spin(&self, window: Duration, honest: u64) -> bool {
        let spin = window.as_nanos() / u128::from(self.round_trip_ns.max(1));
        spin >= 10 * u128::from(honest.max(1))
    }
}

/// The process's calibration, measured on first use (about 0.5 s).
///
/// # Examples
///
/// ```
/// let c = eventfd_bench::stress::calibration();
/// println!("round trip {} ns, {:.1}x the reference", c.round_trip_ns, c.slowness);
/// ```
pub fn calibration() -> Calibration {
    static CALIBRATION: OnceLock<Calibration> = OnceLock::new();
    *CALIBRATION.get_or_init(|| {
        let round_trip = round_trip().unwrap_or(REFERENCE_ROUND_TRIP);
        let ratio = round_trip.as_secs_f64() / REFERENCE_ROUND_TRIP.as_secs_f64();
        Calibration {
            round_trip_ns: u64::try_from(round_trip.as_nanos()).unwrap_or(u64::MAX),
            slowness: ratio.max(1.0),
            idle_wait_cpu_us: idle_wait_cpu()
                .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
        }
    })
}

/// The median over 5 batches of 200 round trips between two threads.
fn round_trip() -> io::Result<Duration> {
    let blocking = || EventFd::builder().nonblocking(false).build();
    let (ping, pong) = (blocking()?, blocking()?);
    const TRIPS: u32 = 200;
    let mut batches = thread::scope(|s| {
        let echo = s.spawn(|| -> io::Result<()> {
            for _ in 0..5 * TRIPS {
                ping.read()?;
                pong.add(1)?;
            }
            Ok(())
        });
        let batches = (0..5)
            .map(|_| {
                let start = Instant::now();
                for _ in 0..TRIPS {
                    ping.add(1)?;
                    pong.read()?;
                }
                Ok(start.elapsed() / TRIPS)
            })
            .collect::<io::Result<Vec<Duration>>>();
        echo.join()
            .map_err(|_| io::Error::other("echo panicked"))??;
        batches
    })?;
    batches.sort_unstable();
    Ok(batches[2])
}

/// The process's CPU time (user and system, every thread).
pub(super) fn process_cpu() -> io::Result<Duration> {
    let usage = getrusage(UsageWho::RUSAGE_SELF)?;
    let us = (usage.user_time() + usage.system_time()).num_microseconds();
    Ok(Duration::from_micros(us.unsigned_abs()))
}

/// The CPU of [`QUIET`] spent waiting, honestly, on a saturated counter.
fn idle_wait_cpu() -> io::Result<Duration> {
    let efd = EventFd::new()?;
    efd.add(MAX_COUNT)?;
    let before = process_cpu()?;
    let start = Instant::now();
    while start.elapsed() < QUIET {
        // At u64::MAX (which only a kernel writer makes) `poll` returns
        // `POLLERR` at once: timeout 0 here costs the same.
        let mut fds = [PollFd::new(efd.as_fd(), PollFlags::POLLOUT)];
        poll(&mut fds, PollTimeout::ZERO)?;
        thread::sleep(Duration::from_millis(1));
    }
    Ok(process_cpu()? - before)
}
